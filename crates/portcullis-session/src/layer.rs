//! `SessionLayer` and the service it builds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{CACHE_CONTROL, SET_COOKIE, USER_AGENT};
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::cookie::find_cookie;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{OpaqueToken, ProblemJson, ResponseBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{SessionConfig, SessionConfigError, Transport};
use crate::session::{Incoming, Session};
use crate::store::SessionStore;

/// Adds a lazy [`Session`] to every request.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_session::{MemoryStore, Session, SessionConfig, SessionLayer};
///
/// async fn visits(session: Session) -> Result<String, portcullis_session::SessionError> {
///     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
///     session.insert("n", n).await?;
///     Ok(n.to_string())
/// }
///
/// let layer = SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap();
/// let app: Router = Router::new().route("/", get(visits)).layer(layer);
/// ```
///
/// The service's future ([`ResponseFuture`]) polls the inner service's in
/// place and boxes only the store write, when the handler left something to
/// write. When the write fails because the store is unavailable, the
/// handler's response is replaced by a 503 (the change would otherwise be
/// silently lost).
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<LayerShared>,
}

/// What a layer shares with its services and every session it creates.
pub(crate) struct LayerShared {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) config: Arc<SessionConfig>,
    clear_site_data: HeaderValue,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer over `store` with `config`.
    ///
    /// # Errors
    ///
    /// [`SessionConfigError`] when the configuration cannot work (cookie
    /// attributes browsers refuse, zero timeouts, a zero cap).
    pub fn new(
        store: impl SessionStore,
        config: SessionConfig,
    ) -> Result<Self, SessionConfigError> {
        Self::from_arc(Arc::new(store), config)
    }

    /// Like [`SessionLayer::new`] for a store already behind an `Arc`.
    ///
    /// # Errors
    ///
    /// As [`SessionLayer::new`].
    pub fn from_arc(
        store: Arc<dyn SessionStore>,
        config: SessionConfig,
    ) -> Result<Self, SessionConfigError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(LayerShared {
                store,
                config: Arc::new(config),
                clear_site_data: HeaderValue::from_static("\"cookies\""),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service built by [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<LayerShared>,
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> SessionService<S> {
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

const SESSION_HEADER_MAX: usize = 128;

fn incoming<B>(shared: &LayerShared, req: &Request<B>) -> Incoming {
    let config = &*shared.config;
    let raw = match &config.transport {
        Transport::Cookie => match find_cookie(req.headers(), config.cookie.full_name()) {
            Ok(v) => v,
            Err(_) => return Incoming::Invalid,
        },
        Transport::Header(name) => {
            let mut values = req.headers().get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => None,
                (Some(v), None) if v.len() <= SESSION_HEADER_MAX => match v.to_str() {
                    Ok(s) => Some(s),
                    Err(_) => return Incoming::Invalid,
                },
                _ => return Incoming::Invalid,
            }
        }
    };
    match raw {
        None => Incoming::None,
        Some(v) => OpaqueToken::parse(v).map_or(Incoming::Invalid, Incoming::Token),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let config = &shared.config;
        let incoming = incoming(shared, &req);
        let ip = config
            .client_ip
            .and_then(|f| f(req.extensions(), req.headers()));
        let grpc = is_grpc(req.headers());
        let session = Session::new(
            Arc::clone(shared),
            incoming,
            req.headers().get(USER_AGENT).cloned(),
            ip,
        );
        req.extensions_mut().insert(session.clone());
        // The inner service is ready (poll_ready) and is called now: no
        // clone of it per request.
        let future = self.inner.call(req);
        ResponseFuture {
            kind: Kind::Inner {
                future,
                post: Some(Post { session, grpc }),
            },
        }
    }
}

/// What the layer needs once the inner service has answered.
struct Post {
    session: Session,
    grpc: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`SessionService`].
    ///
    /// Polls the inner service's future in place. Only when the handler
    /// left something to write (a changed key, a new id, a logout, an idle
    /// extension, an invalid cookie to clear) does it box the store write;
    /// an untouched or merely read session costs no allocation here.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner {
            #[pin]
            future: F,
            post: Option<Post>,
        },
        Committing {
            future: BoxFuture<Response<ResponseBody<B>>>,
        },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Send + 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Inner { future, post } => {
                    let response = std::task::ready!(future.poll(cx))?;
                    let Some(mut post) = post.take() else {
                        // Polled again after completion: the contract of
                        // `Future` is broken; answer as if untouched.
                        return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                    };
                    // A handler that never used the session, or only read
                    // it with nothing to write back: no commit, no store
                    // call, no headers, no allocation.
                    if post.session.nothing_to_commit() {
                        return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                    }
                    kind.set(Kind::Committing {
                        future: Box::pin(commit(post, response)),
                    });
                }
                KindProj::Committing { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// Writes what the request changed and adds the headers saying so; a 503
/// in place of the handler's response when the store cannot be written.
async fn commit<B>(post: Post, response: Response<B>) -> Response<ResponseBody<B>> {
    let Post { session, grpc } = post;
    let commit = session.commit().await;
    if let Some(err) = commit.error {
        portcullis_core::event!(
            warn,
            reason = "session-write-failed",
            "session store unavailable; answering 503"
        );
        return err.rejection().into_response(&ProblemJson, grpc);
    }
    let mut response = response.map(ResponseBody::inner);
    let shared = session.layer();
    let config = &shared.config;
    let headers = response.headers_mut();
    let wrote = commit.set_token.is_some() || commit.remove;
    match (&config.transport, commit.set_token) {
        (Transport::Cookie, Some(token)) => {
            headers.append(
                SET_COOKIE,
                config
                    .cookie
                    .set_cookie(&token.to_encoded(), Some(config.absolute_timeout)),
            );
        }
        (Transport::Cookie, None) if commit.remove => {
            headers.append(SET_COOKIE, config.cookie.removal_cookie());
        }
        (Transport::Header(name), Some(token)) => {
            if let Ok(v) = HeaderValue::try_from(token.to_encoded()) {
                headers.insert(name.clone(), v);
            }
        }
        _ => {}
    }
    if wrote {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if commit.clear_site_data && config.clear_site_data {
        headers.insert(
            HeaderName::from_static("clear-site-data"),
            shared.clear_site_data.clone(),
        );
    }
    response
}
