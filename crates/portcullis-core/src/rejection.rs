//! The one place that turns an auth failure into a response.
//!
//! Every layer describes a refusal as a [`Rejection`]; a
//! [`RenderRejection`] turns it into a response. The default,
//! [`ProblemJson`], writes RFC 9457 `application/problem+json` bodies, or a
//! gRPC status for `application/grpc` requests, so tonic clients see
//! `UNAUTHENTICATED` rather than an HTTP error they cannot read.
//!
//! | kind | HTTP | gRPC |
//! |---|---|---|
//! | [`Unauthenticated`](RejectionKind::Unauthenticated) | 401 | 16 `UNAUTHENTICATED` |
//! | [`Forbidden`](RejectionKind::Forbidden) | 403 | 7 `PERMISSION_DENIED` |
//! | [`Unavailable`](RejectionKind::Unavailable) | 503 + `Retry-After` (default [`DEFAULT_RETRY_AFTER`]) | 14 `UNAVAILABLE` |
//! | [`BadRequest`](RejectionKind::BadRequest) | 400 | 3 `INVALID_ARGUMENT` |
//! | [`NotFound`](RejectionKind::NotFound) | 404 | 5 `NOT_FOUND` |
//! | [`PayloadTooLarge`](RejectionKind::PayloadTooLarge) | 413 | 8 `RESOURCE_EXHAUSTED` |
//! | [`TooManyRequests`](RejectionKind::TooManyRequests) | 429 + `Retry-After` (when set) | 8 `RESOURCE_EXHAUSTED` |
//! | [`Internal`](RejectionKind::Internal) | 500 | 13 `INTERNAL` |
//!
//! Every kind has a constructor that takes the client-facing detail and
//! nothing else; the rest is added with `with_*` builders.
//!
//! ```
//! use std::time::Duration;
//! use portcullis_core::rejection::{ProblemJson, Rejection, RenderRejection};
//!
//! let rejection = Rejection::unauthenticated("authentication required");
//! let response = ProblemJson.render(&rejection, false);
//! assert_eq!(response.status(), 401);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//!
//! let busy = Rejection::unavailable("the store is busy").with_retry_after(Duration::from_secs(5));
//! assert_eq!(ProblemJson.render(&busy, false).headers()["retry-after"], "5");
//! // Without a hint, a 503 still tells the client when to come back.
//! let busy = Rejection::unavailable("the store is busy");
//! assert_eq!(ProblemJson.render(&busy, false).headers()["retry-after"], "1");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// The `Retry-After` an [`Unavailable`](RejectionKind::Unavailable)
/// rejection answers when none was set with
/// [`Rejection::with_retry_after`]: one second, long enough that a client
/// retrying at once does not hammer a store that is coming back, short
/// enough for a blip.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The class of a refusal; decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// Missing or bad credentials (401).
    Unauthenticated,
    /// Valid credentials that may not do this, or a CSRF refusal (403).
    Forbidden,
    /// A store or key source is unavailable: try again (503).
    Unavailable,
    /// Malformed input (400).
    BadRequest,
    /// The addressed resource does not exist for this caller (404).
    NotFound,
    /// Input larger than the configured limit (413).
    PayloadTooLarge,
    /// Too many attempts: come back after the `Retry-After` delay (429).
    TooManyRequests,
    /// A fault on the server's side (500).
    Internal,
}

impl RejectionKind {
    /// The HTTP status for this kind.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code for this kind.
    #[must_use]
    pub const fn grpc_code(self) -> u8 {
        match self {
            Self::Unauthenticated => 16,
            Self::Forbidden => 7,
            Self::Unavailable => 14,
            Self::BadRequest => 3,
            Self::NotFound => 5,
            Self::PayloadTooLarge | Self::TooManyRequests => 8,
            Self::Internal => 13,
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Self::Unauthenticated => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::Unavailable => "Service Unavailable",
            Self::BadRequest => "Bad Request",
            Self::NotFound => "Not Found",
            Self::PayloadTooLarge => "Content Too Large",
            Self::TooManyRequests => "Too Many Requests",
            Self::Internal => "Internal Server Error",
        }
    }
}

/// A refusal, described once and rendered by a [`RenderRejection`].
///
/// `detail` goes to the client and must not reveal which check failed when
/// that would help an attacker; `reason` is for logs and outer layers (it is
/// attached to the response's extensions) and never holds a secret.
#[derive(Clone)]
#[must_use]
pub struct Rejection {
    kind: RejectionKind,
    detail: Cow<'static, str>,
    reason: &'static str,
    challenge: Option<HeaderValue>,
    retry_after: Option<Duration>,
    headers: HeaderMap,
}

impl Rejection {
    /// A refusal of `kind` with a client-facing `detail`.
    pub fn new(kind: RejectionKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            reason: "",
            challenge: None,
            retry_after: None,
            headers: HeaderMap::new(),
        }
    }

    /// 401.
    pub fn unauthenticated(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::Unauthenticated, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::Forbidden, detail)
    }

    /// 503 with `Retry-After`: the hint set by
    /// [`with_retry_after`](Self::with_retry_after), or
    /// [`DEFAULT_RETRY_AFTER`] without one.
    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::Unavailable, detail)
    }

    /// 400.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::BadRequest, detail)
    }

    /// 413.
    pub fn payload_too_large(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::PayloadTooLarge, detail)
    }

    /// 429; give the delay with
    /// [`with_retry_after`](Self::with_retry_after).
    pub fn too_many_requests(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::TooManyRequests, detail)
    }

    /// 500.
    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::Internal, detail)
    }

    /// Sets the machine-readable reason (for logs and outer layers, never
    /// shown to the client).
    pub const fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// Sets the `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Sets the `Retry-After` hint (whole seconds, at least one). A
    /// rejection of kind [`Unavailable`](RejectionKind::Unavailable)
    /// without it answers [`DEFAULT_RETRY_AFTER`].
    pub const fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a response header (for example a cookie removal).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The class of refusal.
    #[must_use]
    pub const fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The client-facing detail.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The machine-readable reason ("" when none was set).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        self.reason
    }

    /// The `WWW-Authenticate` challenge, if any.
    #[must_use]
    pub const fn challenge(&self) -> Option<&HeaderValue> {
        self.challenge.as_ref()
    }

    /// The `Retry-After` delay the response carries: the hint set by
    /// [`with_retry_after`](Self::with_retry_after), else
    /// [`DEFAULT_RETRY_AFTER`] for an
    /// [`Unavailable`](RejectionKind::Unavailable) rejection, else none.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        match (self.retry_after, self.kind) {
            (Some(after), _) => Some(after),
            (None, RejectionKind::Unavailable) => Some(DEFAULT_RETRY_AFTER),
            (None, _) => None,
        }
    }

    /// Extra response headers.
    #[must_use]
    pub const fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Renders with `renderer` into a layer response, attaching a copy of
    /// the rejection to the response's extensions.
    pub fn into_response<B, R: RenderRejection>(
        self,
        renderer: &R,
        grpc: bool,
    ) -> Response<ResponseBody<B>> {
        let response = renderer.render(&self, grpc);
        let (mut parts, body) = response.into_parts();
        parts.extensions.insert(self);
        Response::from_parts(parts, ResponseBody::full(body))
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.status(),
            self.kind.title(),
            self.detail
        )
    }
}

impl std::error::Error for Rejection {}

/// Whether a request is gRPC (`content-type: application/grpc...`).
#[must_use]
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Turns a [`Rejection`] into a response. Implement it to change how every
/// refusal of a layer looks; the default is [`ProblemJson`].
pub trait RenderRejection: Clone + Send + Sync + 'static {
    /// Renders `rejection`; `grpc` says the request was gRPC.
    fn render(&self, rejection: &Rejection, grpc: bool) -> Response<Bytes>;
}

/// RFC 9457 problem details for HTTP, gRPC statuses for gRPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemJson;

impl RenderRejection for ProblemJson {
    fn render(&self, rejection: &Rejection, grpc: bool) -> Response<Bytes> {
        let mut response = if grpc {
            grpc_response(rejection)
        } else {
            let body = serde_json::json!({
                "type": "about:blank",
                "title": rejection.kind.title(),
                "status": rejection.kind.status().as_u16(),
                "detail": rejection.detail(),
            });
            let mut r = Response::new(Bytes::from(body.to_string()));
            *r.status_mut() = rejection.kind.status();
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            r
        };
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = &rejection.challenge {
            headers.insert(WWW_AUTHENTICATE, c.clone());
        }
        if let Some(after) = rejection.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        for (name, value) in &rejection.headers {
            headers.append(name.clone(), value.clone());
        }
        response
    }
}

/// A trailers-only gRPC response: HTTP 200 with `grpc-status` and
/// `grpc-message` in the headers.
fn grpc_response(rejection: &Rejection) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(rejection.kind.grpc_code())),
    );
    let message: String = rejection
        .detail()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .,-_:".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    let message = message.replace(' ', "%20");
    if let Ok(v) = HeaderValue::try_from(message) {
        h.insert("grpc-message", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            (Rejection::unauthenticated("x"), 401, 16),
            (Rejection::forbidden("x"), 403, 7),
            (Rejection::unavailable("x"), 503, 14),
            (Rejection::bad_request("x"), 400, 3),
            (Rejection::new(RejectionKind::NotFound, "x"), 404, 5),
            (Rejection::payload_too_large("x"), 413, 8),
            (Rejection::too_many_requests("x"), 429, 8),
            (Rejection::internal("x"), 500, 13),
        ];
        for (r, http, grpc) in cases {
            let resp = ProblemJson.render(&r, false);
            assert_eq!(resp.status().as_u16(), http);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
            assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
            let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
            assert_eq!(body["status"], http);
            let g = ProblemJson.render(&r, true);
            assert_eq!(g.status(), 200);
            assert_eq!(g.headers()["grpc-status"], grpc.to_string().as_str());
            assert_eq!(g.headers()[CONTENT_TYPE], "application/grpc");
        }
    }

    #[test]
    fn retry_after_table() {
        let secs = Duration::from_secs;
        let cases = [
            (Rejection::unavailable("x"), Some("1")),
            (
                Rejection::unavailable("x").with_retry_after(secs(3)),
                Some("3"),
            ),
            (
                Rejection::unavailable("x").with_retry_after(Duration::ZERO),
                Some("1"),
            ),
            (Rejection::new(RejectionKind::Unavailable, "x"), Some("1")),
            (Rejection::unauthenticated("x"), None),
            (Rejection::internal("x"), None),
            (Rejection::too_many_requests("x"), None),
            (
                Rejection::too_many_requests("x").with_retry_after(secs(900)),
                Some("900"),
            ),
            (
                Rejection::forbidden("x").with_retry_after(secs(7)),
                Some("7"),
            ),
        ];
        for (r, want) in cases {
            let resp = ProblemJson.render(&r, false);
            let got = resp.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap());
            assert_eq!(got, want, "{r:?}");
            assert_eq!(r.retry_after().is_some(), want.is_some(), "{r:?}");
        }
    }

    #[test]
    fn challenge() {
        let r = ProblemJson.render(
            &Rejection::unauthenticated("x").with_challenge(HeaderValue::from_static("Bearer")),
            false,
        );
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn rejection_attached_to_extensions() {
        let r: Response<ResponseBody<http_body_util::Empty<Bytes>>> = Rejection::forbidden("no")
            .with_reason("cross-origin")
            .into_response(&ProblemJson, false);
        assert_eq!(
            r.extensions().get::<Rejection>().unwrap().reason(),
            "cross-origin"
        );
    }

    #[test]
    fn grpc_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
    }
}
