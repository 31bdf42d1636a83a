//! `CsrfLayer`, the decision function, and the service it builds.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, SET_COOKIE, UPGRADE, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{CookieConfig, ProblemJson, RenderRejection, ResponseBody};
use tower_http::csrf::ProtectionErrorKind;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{FormKind, RequestBody, buffer, find_field, form_kind};
use crate::config::{self, BindingKind, CsrfConfig};
use crate::error::{ConfigError, CsrfError, CsrfErrorKind};
use crate::handle::CsrfHandle;
use crate::origin::HeaderCheck;
use crate::token::MacKey;

/// The token mode, resolved.
pub(crate) enum Mode {
    #[cfg(feature = "session")]
    Session,
    Signed {
        /// The first key signs; all verify.
        keys: Vec<MacKey>,
        binding: BindingKind,
    },
    HeaderCheckOnly,
}

/// The layer's configuration, validated.
pub(crate) struct Shared {
    pub(crate) check: HeaderCheck,
    pub(crate) mode: Mode,
    pub(crate) header_name: HeaderName,
    pub(crate) field_name: Cow<'static, str>,
    pub(crate) max_body: usize,
    pub(crate) exempt: Vec<String>,
    pub(crate) pre_cookie: CookieConfig,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            #[cfg(feature = "session")]
            Mode::Session => "session".to_owned(),
            Mode::Signed { keys, binding } => format!(
                "signed(keys: {} REDACTED, binding: {:?})",
                keys.len(),
                config::SignedBinding(binding.clone())
            ),
            Mode::HeaderCheckOnly => "header-check-only".to_owned(),
        };
        f.debug_struct("CsrfLayer")
            .field("mode", &mode)
            .field("trusted_origins", &self.check.trusted())
            .field("public_origin", &self.check.public_origin())
            .field("site_scheme", &self.check.site_scheme())
            .field("exempt", &self.exempt)
            .field("header_name", &self.header_name)
            .field("field_name", &self.field_name)
            .field("max_body_bytes", &self.max_body)
            .field("pre_session_cookie", &self.pre_cookie.full_name())
            .finish()
    }
}

/// What the layer does with a request, decided from its head alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Hand it on. `vary`: the decision read `Origin`/`Sec-Fetch-Site`.
    Pass { vary: bool },
    /// Refuse it now.
    Reject {
        kind: CsrfErrorKind,
        protection: Option<ProtectionErrorKind>,
        vary: bool,
    },
    /// Verify the token in the header.
    Header(HeaderValue),
    /// Read the form body and verify the token field.
    Form(FormKind),
}

/// `GET`, `HEAD`, `OPTIONS` and `TRACE`: never blocked (but see WebSocket
/// upgrades).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::GET
        && headers.get_all(UPGRADE).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        })
}

impl Shared {
    fn from_config(config: CsrfConfig) -> Result<Self, ConfigError> {
        if let Some(option) = config.signed_only_option {
            return Err(ConfigError::SignedOnly(option));
        }
        let mut check = HeaderCheck::new(&config.trusted_origins, config.public_origin.as_deref())?;
        if config.http_site {
            check = check.insecure_http_site();
        }
        let field_ok = !config.field_name.is_empty()
            && config
                .field_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !field_ok {
            return Err(ConfigError::InvalidFieldName(
                config.field_name.into_owned(),
            ));
        }
        for path in &config.exempt {
            let ok = path.starts_with('/')
                && path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
            if !ok {
                return Err(ConfigError::InvalidExemptPath(path.clone()));
            }
        }
        if config.max_body_bytes == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        let mode = match config.mode {
            #[cfg(feature = "session")]
            config::Mode::Session => Mode::Session,
            config::Mode::Signed { key, binding } => {
                let mut keys = vec![key];
                keys.extend(config.previous_keys);
                if keys.iter().any(|k| k.0.len() < 32) {
                    return Err(ConfigError::KeyTooShort);
                }
                config.pre_session_cookie.validate()?;
                Mode::Signed {
                    keys: keys
                        .iter()
                        .map(|k| MacKey::new(&k.0))
                        .collect::<Option<_>>()
                        .ok_or(ConfigError::KeyTooShort)?,
                    binding: binding.0,
                }
            }
            config::Mode::HeaderCheckOnly => Mode::HeaderCheckOnly,
        };
        Ok(Self {
            check,
            mode,
            header_name: config.header_name,
            field_name: config.field_name,
            max_body: config.max_body_bytes,
            exempt: config.exempt,
            pre_cookie: config.pre_session_cookie,
        })
    }

    const fn tokens(&self) -> bool {
        !matches!(self.mode, Mode::HeaderCheckOnly)
    }

    /// The decision function: what to do with a request, from its method,
    /// target and headers. The query string is never read.
    pub(crate) fn plan(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Plan {
        if self.exempt.iter().any(|p| p == uri.path()) {
            return Plan::Pass { vary: false };
        }
        let cross_origin = |p| Plan::Reject {
            kind: CsrfErrorKind::CrossOrigin,
            protection: Some(p),
            vary: true,
        };
        if is_safe(method) {
            if !is_websocket_upgrade(method, headers) {
                return Plan::Pass { vary: false };
            }
            return match self.check.check(method, uri, headers, true) {
                Ok(()) => Plan::Pass { vary: true },
                Err(p) => cross_origin(p),
            };
        }
        if let Err(p) = self.check.check(method, uri, headers, false) {
            return cross_origin(p);
        }
        // CONNECT is how browsers open WebSockets over HTTP/2: like the
        // HTTP/1.1 upgrade, it cannot carry a token, and the header check
        // has run.
        if !self.tokens() || *method == Method::CONNECT {
            return Plan::Pass { vary: true };
        }
        let mut values = headers.get_all(&self.header_name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => return Plan::Header(v.clone()),
            (Some(_), Some(_)) => {
                return Plan::Reject {
                    kind: CsrfErrorKind::Malformed,
                    protection: None,
                    vary: true,
                };
            }
            _ => {}
        }
        match form_kind(headers) {
            Some(kind) => Plan::Form(kind),
            None => Plan::Reject {
                kind: CsrfErrorKind::Missing,
                protection: None,
                vary: true,
            },
        }
    }
}

/// CSRF protection for every route under it: tower-http's Fetch Metadata /
/// `Origin` check, then a masked token on unsafe requests.
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use axum::response::Html;
/// use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken};
/// use portcullis_session::{MemoryStore, SessionConfig, SessionLayer};
///
/// async fn form(token: CsrfToken) -> Html<String> {
///     Html(format!(
///         "<form method=post action=/profile>{}<button>Save</button></form>",
///         token.hidden_input()
///     ))
/// }
///
/// let csrf = CsrfLayer::new(CsrfConfig::session())?;
/// let sessions = SessionLayer::new(MemoryStore::new(), SessionConfig::default())?;
/// let app: Router = Router::new()
///     .route("/profile", get(form).post(|| async { "saved" }))
///     .layer(csrf)      // inner: runs after the session is installed
///     .layer(sessions); // outer
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ## Relation to `tower_http::csrf::CsrfLayer`
///
/// This layer does not re-implement the header check: it calls tower-http's
/// (see the crate docs for how), and adds what tower-http leaves out:
/// normalised trusted origins, a configured public origin instead of the
/// `Host` fallback, refusal of cross-origin WebSocket upgrades, `Vary`,
/// problem+json refusals with a typed reason, and the token check. Do not
/// stack both layers; this one already runs tower-http's check.
///
/// ## Order of checks
///
/// 1. Exempt path ([`CsrfConfig::exempt`]): passed on untouched.
/// 2. `GET`, `HEAD`, `OPTIONS`, `TRACE`: passed, except a WebSocket upgrade
///    from another origin (403).
/// 3. Any other method: tower-http's check (403 when cross-origin).
/// 4. The token, from the header, else from a urlencoded or multipart form
///    field (the body is buffered up to the limit, 413 beyond), never from
///    the query string or a cookie. Missing, malformed, mismatched or
///    expired: 403.
///
/// All of this happens before the inner service is called: a refused
/// request never reaches the handler.
///
/// The future is a named type; it boxes only when a token must be checked
/// (reading the session or the body is asynchronous).
#[derive(Clone)]
pub struct CsrfLayer<R = ProblemJson> {
    shared: Arc<Shared>,
    renderer: R,
}

impl<R> fmt::Debug for CsrfLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl CsrfLayer {
    /// Validates `config` and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`]: an origin that is not `scheme://host[:port]`, a key
    /// under 32 bytes, an invalid field name, exempt path or cookie, a zero
    /// body limit, or a signed-mode option in another mode.
    pub fn new(config: CsrfConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: Arc::new(Shared::from_config(config)?),
            renderer: ProblemJson,
        })
    }
}

impl<R> CsrfLayer<R> {
    /// Renders refusals with `renderer` instead of problem+json.
    pub fn with_rejection<R2: RenderRejection>(self, renderer: R2) -> CsrfLayer<R2> {
        CsrfLayer {
            shared: self.shared,
            renderer,
        }
    }
}

impl<S, R: Clone> Layer<S> for CsrfLayer<R> {
    type Service = CsrfService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            shared: Arc::clone(&self.shared),
            renderer: self.renderer.clone(),
        }
    }
}

/// The service built by [`CsrfLayer`].
#[derive(Clone)]
pub struct CsrfService<S, R = ProblemJson> {
    inner: S,
    shared: Arc<Shared>,
    renderer: R,
}

impl<S: fmt::Debug, R> fmt::Debug for CsrfService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService")
            .field("inner", &self.inner)
            .field("config", &self.shared)
            .finish()
    }
}

impl<S, R> CsrfService<S, R> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

const VARY_VALUE: HeaderValue = HeaderValue::from_static("Origin, Sec-Fetch-Site");

/// What the response needs once the inner service answered.
struct Post {
    handle: Option<CsrfHandle>,
    vary: bool,
}

impl Post {
    fn apply<B>(self, mut response: Response<B>) -> Response<B> {
        let headers = response.headers_mut();
        if self.vary {
            headers.append(VARY, VARY_VALUE);
        }
        if let Some(handle) = self.handle.filter(CsrfHandle::rendered) {
            if let Some(cookie) = handle.new_pre_session_cookie() {
                headers.append(SET_COOKIE, cookie);
            }
            // A page carrying a token is for this visitor only.
            if !headers.contains_key(CACHE_CONTROL) {
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        response
    }
}

fn refuse<B, R: RenderRejection>(
    renderer: &R,
    error: CsrfError,
    vary: bool,
    grpc: bool,
    path: &str,
) -> Response<ResponseBody<B>> {
    portcullis_core::event!(
        debug,
        reason = error.kind().as_str(),
        path = path,
        "request refused by CSRF protection"
    );
    let _ = path;
    let mut response = error.rejection().into_response(renderer, grpc);
    if vary {
        response.headers_mut().append(VARY, VARY_VALUE);
    }
    response.extensions_mut().insert(error);
    response
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`CsrfService`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Inner {
            #[pin]
            future: F,
            post: Option<Post>,
        },
        Rejected {
            response: Option<Response<ResponseBody<B>>>,
        },
        Checking {
            future: BoxFuture<Result<Response<ResponseBody<B>>, E>>,
        },
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, post } => {
                let response = std::task::ready!(future.poll(cx))?;
                let response = response.map(ResponseBody::inner);
                Poll::Ready(Ok(match post.take() {
                    Some(p) => p.apply(response),
                    None => response,
                }))
            }
            KindProj::Rejected { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled after completion: answer 500 rather than panic.
                None => Poll::Ready(Ok(CsrfError::new(CsrfErrorKind::Random)
                    .rejection()
                    .into_response(&ProblemJson, false))),
            },
            KindProj::Checking { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S, R>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: RenderRejection,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let plan = shared.plan(req.method(), req.uri(), req.headers());
        let handle = shared.tokens().then(|| {
            let h = CsrfHandle::new(Arc::clone(shared), &req);
            req.extensions_mut().insert(h.clone());
            h
        });
        let grpc = is_grpc(req.headers());
        let (token_source, vary) = match plan {
            Plan::Pass { vary } => {
                let future = self.inner.call(req.map(RequestBody::inner));
                return ResponseFuture {
                    kind: Kind::Inner {
                        future,
                        post: Some(Post { handle, vary }),
                    },
                };
            }
            Plan::Reject {
                kind,
                protection,
                vary,
            } => {
                let error = CsrfError::with_protection(kind, protection);
                let response = refuse(&self.renderer, error, vary, grpc, req.uri().path());
                return ResponseFuture {
                    kind: Kind::Rejected {
                        response: Some(response),
                    },
                };
            }
            Plan::Header(value) => (TokenSource::Header(value), true),
            Plan::Form(kind) => (TokenSource::Form(kind), true),
        };
        let Some(handle) = handle else {
            // Unreachable: plans with a token exist only when tokens are on.
            let error = CsrfError::new(CsrfErrorKind::LayerMissing);
            return ResponseFuture {
                kind: Kind::Rejected {
                    response: Some(refuse(&self.renderer, error, vary, grpc, req.uri().path())),
                },
            };
        };
        // The ready service moves into the future and a fresh clone takes
        // its place; see tower's "Be careful when cloning inner services".
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let renderer = self.renderer.clone();
        let max_body = shared.max_body;
        let field = shared.field_name.clone();
        let future = async move {
            let path = req.uri().path().to_owned();
            let checked = match token_source {
                TokenSource::Header(value) => handle
                    .verify(value.as_bytes())
                    .await
                    .map(|()| req.map(RequestBody::inner)),
                TokenSource::Form(kind) => {
                    let (parts, body) = req.into_parts();
                    match buffer(body, max_body).await {
                        Err(k) => Err(CsrfError::new(k)),
                        Ok((bytes, trailers)) => {
                            let verdict = match find_field(&kind, &bytes, &field) {
                                Some(token) => handle.verify(&token).await,
                                None => Err(CsrfError::new(CsrfErrorKind::Missing)),
                            };
                            verdict.map(|()| {
                                Request::from_parts(parts, RequestBody::buffered(bytes, trailers))
                            })
                        }
                    }
                }
            };
            match checked {
                Err(error) => Ok(refuse(&renderer, error, vary, grpc, &path)),
                Ok(req) => {
                    let response = inner.call(req).await?;
                    let post = Post {
                        handle: Some(handle),
                        vary,
                    };
                    Ok(post.apply(response.map(ResponseBody::inner)))
                }
            }
        };
        ResponseFuture {
            kind: Kind::Checking {
                future: Box::pin(future),
            },
        }
    }
}

enum TokenSource {
    Header(HeaderValue),
    Form(FormKind),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(config: CsrfConfig) -> Shared {
        Shared::from_config(config).unwrap()
    }

    fn signed() -> CsrfConfig {
        CsrfConfig::signed([1u8; 32], crate::SignedBinding::pre_session_only())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    type Pair = (&'static str, &'static str);

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    const SAME: (&str, &str) = ("sec-fetch-site", "same-origin");
    const CROSS: (&str, &str) = ("sec-fetch-site", "cross-site");

    #[test]
    fn decision_table() {
        use CsrfErrorKind as K;
        let shared = layer(
            signed()
                .exempt("/hook")
                .add_trusted_origin("https://partner.example"),
        );
        let pass = |vary| Plan::Pass { vary };
        let reject = |kind, vary| Plan::Reject {
            kind,
            protection: None,
            vary,
        };
        let cross = |p| Plan::Reject {
            kind: K::CrossOrigin,
            protection: Some(p),
            vary: true,
        };
        let token = || Plan::Header(HeaderValue::from_static("t"));
        let cases: Vec<(&str, &str, Vec<Pair>, Plan)> = vec![
            // Safe methods are never blocked, whatever the headers say.
            ("GET", "/", vec![CROSS], pass(false)),
            (
                "HEAD",
                "/",
                vec![CROSS, ("origin", "https://evil.example")],
                pass(false),
            ),
            ("OPTIONS", "/", vec![CROSS], pass(false)),
            ("TRACE", "/", vec![CROSS], pass(false)),
            // ... except a cross-origin WebSocket upgrade.
            (
                "GET",
                "/ws",
                vec![("upgrade", "websocket"), CROSS],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            (
                "GET",
                "/ws",
                vec![
                    ("upgrade", "WebSocket"),
                    ("host", "app.example"),
                    ("origin", "https://evil.example"),
                ],
                cross(ProtectionErrorKind::CrossOriginRequestFromOldBrowser),
            ),
            (
                "GET",
                "/ws",
                vec![("upgrade", "websocket"), SAME],
                pass(true),
            ),
            // Unsafe methods: tower-http's check first.
            (
                "POST",
                "/",
                vec![CROSS, ("x-csrf-token", "t")],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            (
                "POST",
                "/",
                vec![("sec-fetch-site", "same-site"), ("x-csrf-token", "t")],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            (
                "DELETE",
                "/",
                vec![
                    ("host", "app.example"),
                    ("origin", "null"),
                    ("x-csrf-token", "t"),
                ],
                cross(ProtectionErrorKind::CrossOriginRequestFromOldBrowser),
            ),
            (
                "PUT",
                "/",
                vec![
                    ("host", "app.example"),
                    ("origin", "https://app.example.evil.net"),
                ],
                cross(ProtectionErrorKind::CrossOriginRequestFromOldBrowser),
            ),
            (
                "PROPFIND",
                "/",
                vec![CROSS],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            // A trusted origin passes the header check but needs a token.
            (
                "POST",
                "/",
                vec![CROSS, ("origin", "https://partner.example")],
                reject(K::Missing, true),
            ),
            // Then the token: header first.
            (
                "POST",
                "/",
                vec![SAME, ("x-csrf-token", "t"), FORM],
                token(),
            ),
            ("PATCH", "/", vec![("x-csrf-token", "t")], token()),
            (
                "POST",
                "/",
                vec![SAME, ("x-csrf-token", "t"), ("x-csrf-token", "u")],
                reject(K::Malformed, true),
            ),
            // Else a form field.
            (
                "POST",
                "/",
                vec![SAME, FORM],
                Plan::Form(FormKind::UrlEncoded),
            ),
            (
                "POST",
                "/",
                vec![SAME, ("content-type", "multipart/form-data; boundary=b")],
                Plan::Form(FormKind::Multipart("b".into())),
            ),
            // Never the query string, never JSON or text/plain bodies.
            (
                "POST",
                "/?csrf_token=t",
                vec![SAME],
                reject(K::Missing, true),
            ),
            (
                "POST",
                "/",
                vec![SAME, ("content-type", "application/json")],
                reject(K::Missing, true),
            ),
            (
                "POST",
                "/",
                vec![SAME, ("content-type", "text/plain")],
                reject(K::Missing, true),
            ),
            ("POST", "/", vec![], reject(K::Missing, true)),
            // Exempt paths skip both checks; only the exact path.
            ("POST", "/hook", vec![CROSS], pass(false)),
            ("POST", "/hook?x=1", vec![CROSS], pass(false)),
            (
                "POST",
                "/hook/",
                vec![CROSS],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            ("POST", "/hooks", vec![SAME], reject(K::Missing, true)),
        ];
        for (method, uri, h, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let uri: Uri = uri.parse().unwrap();
            let got = shared.plan(&method, &uri, &headers(&h));
            assert_eq!(got, want, "{method} {uri} {h:?}");
        }
    }

    #[test]
    fn header_check_only_needs_no_token() {
        let shared = layer(CsrfConfig::header_check_only());
        let post = Method::POST;
        let uri = Uri::from_static("/");
        assert_eq!(
            shared.plan(&post, &uri, &headers(&[SAME])),
            Plan::Pass { vary: true }
        );
        assert!(matches!(
            shared.plan(&post, &uri, &headers(&[CROSS])),
            Plan::Reject {
                kind: CsrfErrorKind::CrossOrigin,
                ..
            }
        ));
    }

    #[test]
    fn invalid_configurations_are_errors() {
        let cases: Vec<(CsrfConfig, ConfigError)> = vec![
            (
                CsrfConfig::signed([1u8; 31], crate::SignedBinding::pre_session_only()),
                ConfigError::KeyTooShort,
            ),
            (signed().previous_key([0u8; 8]), ConfigError::KeyTooShort),
            (
                signed().field_name("a b"),
                ConfigError::InvalidFieldName("a b".into()),
            ),
            (
                signed().field_name("x\"><script>"),
                ConfigError::InvalidFieldName("x\"><script>".into()),
            ),
            (
                signed().field_name(""),
                ConfigError::InvalidFieldName(String::new()),
            ),
            (
                signed().exempt("hook"),
                ConfigError::InvalidExemptPath("hook".into()),
            ),
            (
                signed().exempt("/hook?x"),
                ConfigError::InvalidExemptPath("/hook?x".into()),
            ),
            (signed().max_body_bytes(0), ConfigError::ZeroBodyLimit),
            (
                CsrfConfig::header_check_only().previous_key([0u8; 32]),
                ConfigError::SignedOnly("previous_key"),
            ),
            (
                signed().pre_session_cookie(CookieConfig::new("x").path("/a")),
                ConfigError::Cookie(portcullis_core::CookieConfigError::HostPrefixConstraints),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(Shared::from_config(config).unwrap_err(), want);
        }
        for bad in [
            "https://example.com/",
            "example.com",
            "https://a@b.example",
            "ftp://x",
        ] {
            let err = Shared::from_config(signed().add_trusted_origin(bad)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidOrigin { .. }),
                "{bad}: {err}"
            );
            let err = Shared::from_config(signed().public_origin(bad)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidOrigin { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn debug_shows_config_but_no_key() {
        let key = [0xABu8; 32];
        let layer = CsrfLayer::new(
            CsrfConfig::signed(key, crate::SignedBinding::cookie("__Host-session"))
                .previous_key([0xCDu8; 32])
                .exempt("/webhooks/pay"),
        )
        .unwrap();
        let dbg = format!("{layer:?}");
        assert!(dbg.contains("/webhooks/pay"), "{dbg}");
        assert!(dbg.contains("REDACTED"), "{dbg}");
        assert!(
            !dbg.contains("171") && !dbg.to_lowercase().contains("abab"),
            "{dbg}"
        );
        assert!(!dbg.contains("[171"), "{dbg}");
    }

    /// Drives the layer as a plain tower service: typed reasons in the
    /// response extensions, tracing events with a reason and never a token,
    /// and the inner service never called on a refusal.
    #[cfg(feature = "tracing")]
    mod service_level {
        use std::convert::Infallible;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        use bytes::Bytes;
        use http::{Request, Response};
        use http_body_util::{BodyExt as _, Full};
        use portcullis_core::Rejection;
        use tower::{Service as _, ServiceExt as _};
        use tracing::field::{Field, Visit};

        use super::*;

        /// Collects every field of every event, as text.
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<String>>>);

        struct Fields<'a>(&'a mut Vec<String>);

        impl Visit for Fields<'_> {
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                self.0.push(format!("{}={value:?}", field.name()));
            }
        }

        impl tracing::Subscriber for Capture {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, event: &tracing::Event<'_>) {
                let mut fields = Vec::new();
                event.record(&mut Fields(&mut fields));
                self.0.lock().unwrap().push(fields.join(" "));
            }
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }

        type Req = Request<RequestBody<Full<Bytes>>>;

        /// Renders a token with the given cookies, then checks it with
        /// others; returns the verdicts.
        fn bound_verdicts(
            binding: crate::SignedBinding,
            render_cookie: &str,
            check_cookies: &[&str],
        ) -> Vec<Result<(), CsrfErrorKind>> {
            let inner = tower::service_fn(|req: Req| async move {
                let token = match req.extensions().get::<CsrfHandle>() {
                    Some(h) => h
                        .token()
                        .await
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    None => String::new(),
                };
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(token))))
            });
            let layer = CsrfLayer::new(CsrfConfig::signed([9u8; 32], binding)).unwrap();
            let mut svc = layer.layer(inner);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let get = Request::get("/").header("cookie", render_cookie);
                let resp = svc
                    .ready()
                    .await
                    .unwrap()
                    .call(get.body(Full::default()).unwrap());
                let resp = resp.await.unwrap();
                assert!(
                    resp.headers().get("set-cookie").is_none(),
                    "bound: no pre-session"
                );
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let token = String::from_utf8(body.to_vec()).unwrap();
                let mut out = Vec::new();
                for cookie in check_cookies {
                    let mut post = Request::post("/").header("x-csrf-token", &token);
                    for c in cookie.split(" | ") {
                        post = post.header("cookie", c);
                    }
                    let resp = svc
                        .ready()
                        .await
                        .unwrap()
                        .call(post.body(Full::default()).unwrap());
                    let resp = resp.await.unwrap();
                    out.push(match resp.extensions().get::<CsrfError>() {
                        None => Ok(()),
                        Some(e) => Err(e.kind()),
                    });
                }
                out
            })
        }

        #[test]
        fn cookie_and_custom_bindings() {
            use CsrfErrorKind as K;
            let got = bound_verdicts(
                crate::SignedBinding::cookie("auth"),
                "auth=alice-jwt",
                &[
                    "auth=alice-jwt",
                    "auth=bob-jwt",
                    "other=1",
                    "auth=alice-jwt | auth=alice-jwt",
                ],
            );
            // Same cookie: ok; another: mismatch; none (and no pre-session
            // cookie): expired; the cookie twice (tossing): refused.
            assert_eq!(
                got,
                vec![Ok(()), Err(K::Mismatch), Err(K::Expired), Err(K::Mismatch)]
            );
            let by_header = crate::SignedBinding::from_fn(|headers, _| {
                headers
                    .get("cookie")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("sid="))
                    .map(|v| v.as_bytes().to_vec())
            });
            let got = bound_verdicts(by_header, "sid=1", &["sid=1", "sid=2"]);
            assert_eq!(got, vec![Ok(()), Err(K::Mismatch)]);
        }

        #[test]
        fn reasons_are_typed_and_traced_and_tokens_never_logged() {
            let capture = Capture::default();
            let events = Arc::clone(&capture.0);
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&calls);
            let inner = tower::service_fn(move |req: Req| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let token = match req.extensions().get::<CsrfHandle>() {
                        Some(h) => h
                            .token()
                            .await
                            .map(|t| t.as_str().to_owned())
                            .unwrap_or_default(),
                        None => String::new(),
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(token))))
                }
            });
            let layer = CsrfLayer::new(CsrfConfig::signed(
                [3u8; 32],
                crate::SignedBinding::pre_session_only(),
            ))
            .unwrap();
            let mut svc = layer.layer(inner);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            tracing::subscriber::with_default(capture, || {
                rt.block_on(async {
                    // Render a token: the pre-session cookie comes with it.
                    let resp = svc
                        .ready()
                        .await
                        .unwrap()
                        .call(Request::get("/").body(Full::default()).unwrap())
                        .await
                        .unwrap();
                    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
                    let cookie = cookie.split(';').next().unwrap().to_owned();
                    let token = String::from_utf8(
                        resp.into_body()
                            .collect()
                            .await
                            .unwrap()
                            .to_bytes()
                            .to_vec(),
                    )
                    .unwrap();
                    assert_eq!(token.len(), 171);
                    assert_eq!(calls.load(Ordering::SeqCst), 1);

                    let post = |headers: &[(&str, &str)]| {
                        let mut b = Request::post("/act");
                        for (k, v) in headers {
                            b = b.header(*k, *v);
                        }
                        b.body(Full::default()).unwrap()
                    };
                    let cases = [
                        (
                            post(&[
                                ("sec-fetch-site", "cross-site"),
                                ("x-csrf-token", &token),
                                ("cookie", &cookie),
                            ]),
                            CsrfErrorKind::CrossOrigin,
                        ),
                        (
                            post(&[("sec-fetch-site", "same-origin")]),
                            CsrfErrorKind::Missing,
                        ),
                        (
                            post(&[("x-csrf-token", &token[..170]), ("cookie", &cookie)]),
                            CsrfErrorKind::Malformed,
                        ),
                        (
                            post(&[
                                ("x-csrf-token", &token),
                                (
                                    "cookie",
                                    "__Host-csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                ),
                            ]),
                            CsrfErrorKind::Mismatch,
                        ),
                        (post(&[("x-csrf-token", &token)]), CsrfErrorKind::Expired),
                    ];
                    for (req, kind) in cases {
                        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
                        assert_eq!(resp.status(), 403, "{kind:?}");
                        assert_eq!(
                            resp.extensions().get::<CsrfError>().map(CsrfError::kind),
                            Some(kind)
                        );
                        assert_eq!(
                            resp.extensions().get::<Rejection>().map(Rejection::reason),
                            Some(kind.as_str())
                        );
                    }
                    assert_eq!(
                        calls.load(Ordering::SeqCst),
                        1,
                        "no refusal reached the inner service"
                    );
                    // The genuine pair passes.
                    let resp = svc
                        .ready()
                        .await
                        .unwrap()
                        .call(post(&[("x-csrf-token", &token), ("cookie", &cookie)]))
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    assert_eq!(calls.load(Ordering::SeqCst), 2);

                    let events = events.lock().unwrap();
                    for kind in [
                        CsrfErrorKind::CrossOrigin,
                        CsrfErrorKind::Missing,
                        CsrfErrorKind::Malformed,
                        CsrfErrorKind::Mismatch,
                        CsrfErrorKind::Expired,
                    ] {
                        let want = format!("reason=\"{}\"", kind.as_str());
                        assert!(
                            events.iter().any(|e| e.contains(&want)),
                            "{want} in {events:?}"
                        );
                    }
                    let pre = cookie.split('=').nth(1).unwrap();
                    for e in events.iter() {
                        assert!(
                            !e.contains(&token[..40]) && !e.contains(pre),
                            "secret in {e}"
                        );
                    }
                });
            });
        }
    }
}
