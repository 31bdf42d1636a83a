//! CSRF tokens and form bodies, through the public `CsrfLayer` (signed
//! tokens bound to the pre-session cookie): the token in a header
//! (`csrf_token`) and in urlencoded or multipart bodies (`csrf_form`).
//!
//! Setup renders one real token with a GET; the fuzzer then presents it,
//! altered, re-masked with another pad, or replaced, inside requests whose
//! headers and bodies it builds. A small model says which requests must
//! pass: a request passes exactly when its token field is the canonical
//! base64url of some pad followed by the rendered token's raw bytes masked
//! with that pad, and the pre-session cookie is there once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HOST, ORIGIN, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use portcullis_core::cookie::find_cookie;
use portcullis_csrf::{Csrf, CsrfConfig, CsrfError, CsrfHandle, CsrfLayer, SignedBinding};
use tower_layer::Layer as _;
use tower_service::Service;

/// Raw bytes of a signed token: nonce and MAC.
const RAW: usize = 64;
/// Wire length of a signed token: base64url of pad and masked raw bytes.
const WIRE: usize = 171;
/// The body limit the layer is configured with.
pub const MAX_BODY: usize = 4096;
/// The form field the layer reads.
pub const FIELD: &str = "csrf_token";

/// The inner service: renders a token on GET, echoes the body it was
/// handed otherwise (so the harness sees the bytes the layer passed on).
#[derive(Clone, Debug)]
pub struct Echo;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B> Service<Request<B>> for Echo
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(async move {
            let out = if req.method() == Method::GET {
                let handle = req.extensions().get::<CsrfHandle>().cloned();
                let token = handle.expect("CsrfHandle installed").token().await;
                Bytes::from(token.expect("a token renders").as_str().to_owned())
            } else {
                req.into_body().collect().await.expect("body").to_bytes()
            };
            Ok(Response::new(Full::new(out)))
        })
    }
}

/// The layer and the token it rendered.
pub struct Setup {
    service: Csrf<Echo>,
    /// The rendered token.
    pub token: String,
    /// Its raw bytes (unmasked).
    raw: [u8; RAW],
    /// The pre-session cookie as the browser sends it back (`name=value`).
    pub cookie_pair: String,
    cookie_name: String,
    cookie_value: String,
}

/// Builds the shared setup once.
///
/// # Panics
///
/// When the layer does not render a token.
pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = CsrfConfig::signed([42u8; 32], SignedBinding::pre_session_only())
            .max_body_bytes(MAX_BODY);
        let mut service = CsrfLayer::new(config).expect("config").layer(Echo);
        let get = Request::get("https://app.example/form")
            .body(Full::<Bytes>::default())
            .expect("request");
        let resp = crate::block_on(service.call(get)).expect("infallible");
        let set = resp.headers().get(SET_COOKIE).expect("pre-session cookie");
        let cookie_pair = set
            .to_str()
            .expect("ASCII")
            .split(';')
            .next()
            .expect("pair")
            .to_owned();
        let (name, value) = cookie_pair.split_once('=').expect("name=value");
        let (cookie_name, cookie_value) = (name.to_owned(), value.to_owned());
        let body = crate::block_on(resp.into_body().collect())
            .expect("body")
            .to_bytes();
        let token = String::from_utf8(body.to_vec()).expect("token text");
        let raw = unmask(token.as_bytes()).expect("a rendered token unmasks");
        Setup {
            service,
            token,
            raw,
            cookie_pair,
            cookie_name,
            cookie_value,
        }
    })
}

/// The reference decoder: strict base64url (the `base64` crate, which
/// refuses padding and non-canonical bits) of exactly 128 bytes, then
/// `raw = masked XOR pad`.
fn unmask(token: &[u8]) -> Option<[u8; RAW]> {
    if token.len() != WIRE {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (pad, masked) = bytes.split_at_checked(RAW)?;
    if masked.len() != RAW {
        return None;
    }
    let mut raw = [0u8; RAW];
    for ((r, m), p) in raw.iter_mut().zip(masked).zip(pad) {
        *r = m ^ p;
    }
    Some(raw)
}

/// A token to present.
#[derive(Debug, Arbitrary)]
pub enum TokenInput {
    /// The rendered token as it is.
    Rendered,
    /// The rendered token's raw bytes masked with another pad: just as
    /// valid.
    Remasked([u8; RAW]),
    /// The rendered token with bytes replaced, inserted or removed.
    Edited(Vec<Edit>),
    /// Anything.
    Raw(Vec<u8>),
}

/// One change to a token's text.
#[derive(Debug, Arbitrary)]
pub enum Edit {
    /// Replace the byte at a position.
    Set(u8, u8),
    /// Insert a byte.
    Insert(u8, u8),
    /// Remove a byte.
    Remove(u8),
}

impl TokenInput {
    fn bytes(&self, s: &Setup) -> Vec<u8> {
        match self {
            Self::Rendered => s.token.clone().into_bytes(),
            Self::Remasked(pad) => {
                let mut out = pad.to_vec();
                out.extend(s.raw.iter().zip(pad).map(|(r, p)| r ^ p));
                URL_SAFE_NO_PAD.encode(out).into_bytes()
            }
            Self::Edited(edits) => {
                let mut t = s.token.clone().into_bytes();
                for e in edits {
                    match *e {
                        Edit::Set(at, b) => {
                            if let Some(x) = t.get_mut(usize::from(at)) {
                                *x = b;
                            }
                        }
                        Edit::Insert(at, b) => t.insert(usize::from(at).min(t.len()), b),
                        Edit::Remove(at) => {
                            if usize::from(at) < t.len() {
                                t.remove(usize::from(at));
                            }
                        }
                    }
                }
                t
            }
            Self::Raw(b) => b.clone(),
        }
    }
}

/// Request headers around the token.
#[derive(Debug, Arbitrary)]
pub struct Around {
    /// Send the pre-session cookie.
    pre_session: bool,
    /// Other `Cookie` headers (before and after the pre-session pair).
    cookies_before: Option<Vec<u8>>,
    cookies_after: Option<Vec<u8>>,
    /// `Origin` (when set, no `Sec-Fetch-Site: same-origin` is sent).
    origin: Option<Vec<u8>>,
    /// The method: POST, PUT, PATCH or DELETE.
    method: u8,
}

/// The outcome of one request.
struct Outcome {
    status: StatusCode,
    refused: Option<CsrfError>,
    body: Bytes,
}

/// Sends one request; returns the outcome, whether the pre-session
/// cookie is there once (as `find_cookie` reads it), and whether the
/// request is plainly same-origin (`Sec-Fetch-Site: same-origin`, no
/// `Origin`). Other origin headers may pass the origin check or not.
fn send(
    s: &Setup,
    around: &Around,
    build: http::request::Builder,
    body: Vec<u8>,
) -> Option<(Outcome, bool, bool)> {
    let method = match around.method % 4 {
        0 => Method::POST,
        1 => Method::PUT,
        2 => Method::PATCH,
        _ => Method::DELETE,
    };
    let mut req = build
        .method(method)
        .uri("https://app.example/form")
        .header(HOST, "app.example")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let headers = req.headers_mut();
    match &around.origin {
        Some(o) => headers.insert(ORIGIN, HeaderValue::from_bytes(o).ok()?),
        None => headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin")),
    };
    // The Cookie headers: the model's view of the pre-session cookie is
    // `find_cookie`'s (fuzzed on its own).
    let mut cookie_line = Vec::new();
    if let Some(b) = &around.cookies_before {
        cookie_line.extend_from_slice(b);
        cookie_line.extend_from_slice(b"; ");
    }
    if around.pre_session {
        cookie_line.extend_from_slice(s.cookie_pair.as_bytes());
    }
    if let Some(a) = &around.cookies_after {
        cookie_line.extend_from_slice(b"; ");
        cookie_line.extend_from_slice(a);
    }
    if !cookie_line.is_empty() {
        headers.append(COOKIE, HeaderValue::from_bytes(&cookie_line).ok()?);
    }
    let bound = matches!(find_cookie(headers, &s.cookie_name), Ok(Some(v)) if v == s.cookie_value);
    let mut service = s.service.clone();
    let resp = crate::block_on(service.call(req)).expect("infallible");
    let status = resp.status();
    let refused = resp.extensions().get::<CsrfError>().cloned();
    let body = crate::block_on(resp.into_body().collect())
        .expect("body")
        .to_bytes();
    Some((
        Outcome {
            status,
            refused,
            body,
        },
        bound,
        around.origin.is_none(),
    ))
}

/// `csrf_token` input: a token in the `x-csrf-token` header.
#[derive(Debug, Arbitrary)]
pub struct HeaderInput {
    token: TokenInput,
    around: Around,
    body: Vec<u8>,
}

/// Checks one request with the token in a header.
///
/// # Panics
///
/// When the layer's verdict differs from the model's.
pub fn run_header(input: &HeaderInput) {
    let s = setup();
    let token = input.token.bytes(s);
    let Ok(value) = HeaderValue::from_bytes(&token) else {
        return;
    };
    let build = Request::builder().header("x-csrf-token", value);
    let Some((out, bound, same_origin)) = send(s, &input.around, build, input.body.clone()) else {
        return;
    };
    let valid = unmask(&token) == Some(s.raw);
    check(&out, bound, valid, &input.body);
    if bound && valid && same_origin {
        assert!(
            out.refused.is_none(),
            "a valid header token was refused: {:?}",
            out.refused
        );
    }
    if out.refused.is_none() {
        assert_eq!(token.len(), WIRE);
        let text = std::str::from_utf8(&token).expect("ASCII");
        let decoded = URL_SAFE_NO_PAD.decode(text).expect("base64url");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(decoded),
            text,
            "non-canonical token accepted"
        );
    }
}

fn check(out: &Outcome, bound: bool, valid: bool, body: &[u8]) {
    match &out.refused {
        None => {
            assert!(valid, "a forged or altered token passed");
            assert!(bound, "a token passed without its pre-session cookie");
            assert_eq!(out.status, StatusCode::OK);
            assert_eq!(&out.body[..], body, "the inner service got other bytes");
        }
        Some(e) => {
            assert!(
                matches!(out.status.as_u16(), 400 | 403 | 413),
                "status {} for {:?}",
                out.status,
                e.kind()
            );
        }
    }
}

/// `csrf_form` input: the token in a form body.
#[derive(Debug, Arbitrary)]
pub struct FormInput {
    around: Around,
    form: Form,
}

#[derive(Debug, Arbitrary)]
enum Form {
    /// `application/x-www-form-urlencoded` from pairs.
    UrlEncoded {
        pairs: Vec<(Name, Value)>,
        content_type: Option<String>,
    },
    /// `multipart/form-data` from parts.
    Multipart(Multipart),
    /// Any body under any `Content-Type`.
    Raw {
        content_type: Vec<u8>,
        body: Vec<u8>,
    },
}

#[derive(Debug, Arbitrary)]
enum Name {
    Field,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Token(TokenInput),
    Text(String),
}

#[derive(Debug, Arbitrary)]
struct Multipart {
    boundary: String,
    quoted: bool,
    preamble: Option<Vec<u8>>,
    parts: Vec<Part>,
    closed: bool,
    epilogue: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct Part {
    name: Name,
    filename: Option<String>,
    /// Extra header lines before or after `Content-Disposition`.
    before: Option<(String, String)>,
    after: Option<(String, String)>,
    value: Value,
}

impl Name {
    fn text(&self) -> &str {
        match self {
            Self::Field => FIELD,
            Self::Other(s) => s,
        }
    }
}

impl Value {
    fn bytes(&self, s: &Setup) -> Vec<u8> {
        match self {
            Self::Token(t) => t.bytes(s),
            Self::Text(t) => t.clone().into_bytes(),
        }
    }
}

/// A string that goes into a multipart header unchanged and unambiguous.
fn plain(s: &str) -> bool {
    !s.bytes()
        .any(|b| matches!(b, b'"' | b'\\' | b'\r' | b'\n' | b';' | b'='))
}

fn header_line(h: &(String, String)) -> Option<String> {
    let (k, v) = h;
    let ok = !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !k.eq_ignore_ascii_case("content-disposition")
        && !v.contains(['\r', '\n']);
    ok.then(|| format!("{k}: {v}\r\n"))
}

/// What the model says about a body's token field.
enum Model {
    /// The first token field holds these bytes (`None`: there is none).
    Field(Option<Vec<u8>>),
    /// The input falls outside what the model covers.
    Unknown,
}

/// The body, its `Content-Type`, and the model's token field.
fn build_form(form: &Form, s: &Setup) -> (Vec<u8>, Vec<u8>, Model) {
    match form {
        Form::UrlEncoded {
            pairs,
            content_type,
        } => {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            let mut first = None;
            for (n, v) in pairs {
                let value = v.bytes(s);
                let value = crate::text(&value);
                ser.append_pair(n.text(), value);
                if n.text() == FIELD && first.is_none() {
                    first = Some(value.as_bytes().to_vec());
                }
            }
            let ct = content_type
                .clone()
                .unwrap_or_else(|| "application/x-www-form-urlencoded".into());
            let model = if content_type.is_none() {
                Model::Field(first)
            } else {
                Model::Unknown
            };
            (ser.finish().into_bytes(), ct.into_bytes(), model)
        }
        Form::Multipart(m) => {
            let b = &m.boundary;
            let mut model_ok = (1..=70).contains(&b.len())
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
            let ct = if m.quoted {
                format!("multipart/form-data; boundary=\"{b}\"")
            } else {
                format!("multipart/form-data; boundary={b}")
            };
            let delimiter = format!("\r\n--{b}");
            let mut body = Vec::new();
            if let Some(p) = &m.preamble {
                body.extend_from_slice(p);
                body.extend_from_slice(b"\r\n");
                model_ok &= !contains(p, delimiter.as_bytes()) && !p.starts_with(b"--");
            }
            body.extend_from_slice(format!("--{b}").as_bytes());
            let mut first = None;
            for part in &m.parts {
                body.extend_from_slice(b"\r\n");
                let mut head = String::new();
                if let Some(h) = part.before.as_ref().and_then(header_line) {
                    head.push_str(&h);
                }
                let name = part.name.text();
                head.push_str("Content-Disposition: form-data; name=\"");
                head.push_str(name);
                head.push('"');
                if let Some(f) = &part.filename {
                    head.push_str("; filename=\"");
                    head.push_str(f);
                    head.push('"');
                    model_ok &= plain(f);
                }
                head.push_str("\r\n");
                if let Some(h) = part.after.as_ref().and_then(header_line) {
                    head.push_str(&h);
                }
                model_ok &= plain(name);
                body.extend_from_slice(head.as_bytes());
                body.extend_from_slice(b"\r\n");
                let value = part.value.bytes(s);
                model_ok &= !contains(&value, delimiter.as_bytes());
                body.extend_from_slice(&value);
                body.extend_from_slice(delimiter.as_bytes());
                if name == FIELD && part.filename.is_none() && first.is_none() {
                    first = Some(value);
                }
            }
            if m.closed {
                body.extend_from_slice(b"--");
            }
            // Without the close delimiter the last part ends at the last
            // delimiter; whatever follows is not a part the model sees.
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(&m.epilogue);
            model_ok &= !contains(&m.epilogue, delimiter.as_bytes());
            if !m.closed {
                // An unclosed body: the epilogue may open more parts.
                model_ok = false;
            }
            let model = if model_ok {
                Model::Field(first)
            } else {
                Model::Unknown
            };
            (body, ct.into_bytes(), model)
        }
        Form::Raw { content_type, body } => (body.clone(), content_type.clone(), Model::Unknown),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks one request with the token in a form body.
///
/// # Panics
///
/// When the layer's verdict differs from the model's.
pub fn run_form(input: &FormInput) {
    let s = setup();
    let (body, ct, model) = build_form(&input.form, s);
    let Ok(ct) = HeaderValue::from_bytes(&ct) else {
        return;
    };
    let build = Request::builder().header(CONTENT_TYPE, ct);
    let too_large = body.len() > MAX_BODY;
    let Some((out, bound, same_origin)) = send(s, &input.around, build, body.clone()) else {
        return;
    };
    if too_large {
        assert!(out.refused.is_some(), "a body over the limit was read");
    }
    match model {
        Model::Field(field) if !too_large => {
            let valid = field.as_deref().and_then(unmask) == Some(s.raw);
            check(&out, bound, valid, &body);
            if bound && valid && same_origin {
                assert!(
                    out.refused.is_none(),
                    "a valid form token was refused: {:?}",
                    out.refused
                );
            }
        }
        _ => {
            if out.refused.is_none() {
                // Accepted outside the model: some run of 171 bytes of the
                // body is a valid token, and the bytes went on unchanged.
                assert!(bound);
                assert_eq!(&out.body[..], &body[..]);
                let found = body.windows(WIRE).any(|w| unmask(w) == Some(s.raw))
                    || form_urlencoded::parse(&body)
                        .any(|(k, v)| k == FIELD && unmask(v.as_bytes()) == Some(s.raw));
                assert!(found, "accepted a body without a valid token");
            }
        }
    }
}
