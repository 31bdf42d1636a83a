//! [`RequireLoginLayer`]: a route layer that lets only logged-in users
//! through. A page (a browser navigation) is redirected to the login URL
//! with the original path as `next`; an API call gets the 401
//! problem+json, as the [`CurrentUser`](crate::CurrentUser) extractor
//! answers.
//!
//! ```
//! use axum::{Router, routing::get};
//! use portcullis_session::{MemoryStore, RequireLoginLayer, SessionConfig, SessionLayer};
//!
//! let sessions = SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap();
//! let app: Router = Router::new()
//!     .route("/account", get(|| async { "your account" }))
//!     // Inside the session layer: the guard reads the request's session.
//!     .route_layer(RequireLoginLayer::redirect_to("/login").unwrap())
//!     .route("/login", get(|| async { "the login form" }))
//!     .layer(sessions);
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{ACCEPT, CACHE_CONTROL, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use portcullis_core::future::LayerFuture;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, ResponseBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{SessionError, SessionErrorKind};
pub use crate::redirect_url::InvalidLoginUrl;
use crate::redirect_url::{check_redirect_url, is_same_site_path};
use crate::session::Session;

/// Builds [`RequireLogin`]: lets requests of a logged-in user through,
/// redirects pages to the login URL (303, with `next=<original path>`) and
/// answers other requests 401. Install it inside a
/// [`SessionLayer`](crate::SessionLayer), as a route layer on the routes
/// it guards; see the [module docs](crate::guard) (`Router::route_layer`).
///
/// A page is a browser navigation: `GET` or `HEAD` accepting `text/html`.
#[derive(Clone)]
#[must_use]
pub struct RequireLoginLayer {
    login_url: Arc<str>,
}

impl fmt::Debug for RequireLoginLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLoginLayer")
            .field("login_url", &self.login_url)
            .finish()
    }
}

impl RequireLoginLayer {
    /// Redirects pages to `login_url`, a path on this site.
    ///
    /// # Errors
    ///
    /// [`InvalidLoginUrl`] when `login_url` is not a same-site path.
    pub fn redirect_to(login_url: impl Into<String>) -> Result<Self, InvalidLoginUrl> {
        let login_url = login_url.into();
        check_redirect_url(&login_url)?;
        Ok(Self {
            login_url: login_url.into(),
        })
    }
}

impl<S> Layer<S> for RequireLoginLayer {
    type Service = RequireLogin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireLogin {
            inner,
            login_url: Arc::clone(&self.login_url),
        }
    }
}

/// The service built by [`RequireLoginLayer`].
#[derive(Clone)]
pub struct RequireLogin<S> {
    inner: S,
    login_url: Arc<str>,
}

impl<S: fmt::Debug> fmt::Debug for RequireLogin<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLogin")
            .field("inner", &self.inner)
            .field("login_url", &self.login_url)
            .finish()
    }
}

impl<S> RequireLogin<S> {
    portcullis_core::inner_service_accessors!();
}

/// The response future of [`RequireLogin`]: boxed, since the session is
/// loaded from the store before the inner service is called.
pub type RequireLoginFuture<F, B, E> = LayerFuture<F, B, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireLogin<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireLoginFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        let Some(session) = req.extensions().get::<Session>().cloned() else {
            let missing = SessionError::new(SessionErrorKind::LayerMissing);
            return LayerFuture::ready(missing.rejection().into_response(&ProblemJson, grpc));
        };
        // The ready service goes into the future; a clone stays (tower's
        // "Be careful when cloning inner services").
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let login_url = Arc::clone(&self.login_url);
        LayerFuture::boxed(Box::pin(async move {
            let refusal = match session.user_id().await {
                Ok(Some(_)) => return Ok(inner.call(req).await?.map(ResponseBody::inner)),
                Ok(None) => refusal(req.method(), req.headers(), req.uri(), &login_url),
                Err(e) => return Ok(e.rejection().into_response(&ProblemJson, grpc)),
            };
            portcullis_core::event!(debug, reason = "login-required", "no logged-in user");
            Ok(match refusal {
                Refusal::Redirect(location) => redirect(location),
                Refusal::Unauthenticated => SessionError::new(SessionErrorKind::NotAuthenticated)
                    .rejection()
                    .into_response(&ProblemJson, grpc),
            })
        }))
    }
}

/// How a request without a logged-in user is refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// A page: 303 to this location.
    Redirect(HeaderValue),
    /// Anything else: 401.
    Unauthenticated,
}

/// Decides how to refuse a request without a logged-in user.
fn refusal(method: &Method, headers: &HeaderMap, uri: &Uri, login_url: &str) -> Refusal {
    if !is_navigation(method, headers) {
        return Refusal::Unauthenticated;
    }
    redirect_location(login_url, uri).map_or(Refusal::Unauthenticated, Refusal::Redirect)
}

/// A page: a browser navigation (`GET` or `HEAD` accepting `text/html`).
pub(crate) fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// `url` with the request's path as `next`, when that is a same-site path.
pub(crate) fn redirect_location(url: &str, uri: &Uri) -> Option<HeaderValue> {
    let mut location = url.to_owned();
    if let Some(next) = uri.path_and_query().map(http::uri::PathAndQuery::as_str) {
        if is_same_site_path(next) {
            location.push(if url.contains('?') { '&' } else { '?' });
            location.push_str("next=");
            percent_encode_into(next, &mut location);
        }
    }
    HeaderValue::try_from(location).ok()
}

/// Percent-encodes all but unreserved characters and `/`.
fn percent_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// A 303 to `location`, never cached.
pub(crate) fn redirect<B>(location: HeaderValue) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_table() {
        let html = "text/html,application/xhtml+xml;q=0.9";
        // (method, accept, uri, login url, expected Location or None for 401)
        type Case = (
            Method,
            Option<&'static str>,
            &'static str,
            &'static str,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (
                Method::GET,
                Some(html),
                "/account",
                "/login",
                Some("/login?next=/account"),
            ),
            (
                Method::HEAD,
                Some("TEXT/HTML"),
                "/a",
                "/login",
                Some("/login?next=/a"),
            ),
            (
                Method::GET,
                Some(html),
                "/a%20b/c?x=1&y=%2F",
                "/login?lang=en",
                Some("/login?lang=en&next=/a%2520b/c%3Fx%3D1%26y%3D%252F"),
            ),
            (
                Method::GET,
                Some("application/json"),
                "/account",
                "/login",
                None,
            ),
            (Method::GET, None, "/account", "/login", None),
            (Method::POST, Some(html), "/account", "/login", None),
            (Method::DELETE, Some(html), "/account", "/login", None),
            // Not a same-site path: no `next`.
            (
                Method::GET,
                Some(html),
                "//evil.example/x",
                "/login",
                Some("/login"),
            ),
        ];
        for (method, accept, uri, login, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(a) = accept {
                headers.insert(ACCEPT, HeaderValue::from_str(a).unwrap());
            }
            let uri: Uri = uri.parse().unwrap_or_else(|_| Uri::from_static("/"));
            let got = refusal(method, &headers, &uri, login);
            let want = want.map_or(Refusal::Unauthenticated, |w| {
                Refusal::Redirect(HeaderValue::from_str(w).unwrap())
            });
            assert_eq!(got, want, "{method} {uri} {accept:?}");
        }
    }

    #[test]
    fn login_url_must_be_a_same_site_path() {
        for ok in ["/login", "/auth/login?x=1"] {
            assert!(RequireLoginLayer::redirect_to(ok).is_ok(), "{ok}");
        }
        for bad in [
            "login",
            "//evil.example/login",
            "/\\evil",
            "https://x/login",
            "/a\nb",
            "",
        ] {
            assert!(RequireLoginLayer::redirect_to(bad).is_err(), "{bad:?}");
        }
    }
}
