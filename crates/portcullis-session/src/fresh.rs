//! Fresh login ("sudo mode"): [`RequireFreshLogin`], a route layer, and
//! [`FreshLogin`], an extractor (feature `axum`), let a request through
//! only when the logged-in user entered their credentials recently:
//! changing a password, deleting the account, adding a payment method.
//!
//! The age is counted from [`Session::authenticated_at`], set at login and
//! by [`Session::reauthenticated`], never by [`Session::renew`], with the
//! session layer's clock. A login that is too old is refused:
//!
//! - a page (a browser navigation: `GET` or `HEAD` accepting `text/html`):
//!   303 to [`SessionConfig::reauthentication_url`](crate::SessionConfig::reauthentication_url)
//!   with the page's path as `next`, as [`RequireLoginLayer`](crate::RequireLoginLayer)
//!   sends pages to the login form (401 like an API when no URL is
//!   configured);
//! - anything else: 401 problem+json with `"reason": "login_not_fresh"` and
//!   `"max_age"` (seconds), so a client can ask for the password and retry.
//!
//! Without a logged-in user the answer is the login guard's: 401
//! problem+json for APIs, and for pages the redirect to the
//! re-authentication form (put a [`RequireLoginLayer`](crate::RequireLoginLayer)
//! in front to send visitors to the login form instead).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::{get, post}};
//! use portcullis_session::{
//!     AuthMethod, FreshLogin, MemoryStore, RequireFreshLogin, Session, SessionConfig,
//!     SessionError, SessionLayer,
//! };
//!
//! async fn reauth(session: Session) -> Result<&'static str, SessionError> {
//!     // ... verify the password the form sent, through the login throttle ...
//!     session.reauthenticated([AuthMethod::PASSWORD]).await?;
//!     Ok("confirmed")
//! }
//!
//! // The extractor: at most 10 minutes (600 s) since the password was entered.
//! async fn delete_account(fresh: FreshLogin<600>) -> String {
//!     format!("deleting the account of {}", fresh.user)
//! }
//!
//! let config = SessionConfig::default().reauthentication_url("/reauth");
//! let sessions = SessionLayer::new(MemoryStore::new(), config).unwrap();
//! let app: Router = Router::new()
//!     .route("/account/password", get(|| async { "the change password form" }))
//!     // The route layer, inside the session layer.
//!     .route_layer(RequireFreshLogin::within(Duration::from_secs(10 * 60)))
//!     .route("/account/delete", post(delete_account))
//!     .route("/reauth", post(reauth))
//!     .layer(sessions);
//! ```

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use portcullis_core::events::AuthEventKind;
use portcullis_core::future::LayerFuture;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, Rejection, RenderRejection as _, ResponseBody, Timestamp};
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{self, AuthMethod};
use crate::error::{SessionError, SessionErrorKind};
use crate::guard::{is_navigation, redirect, redirect_location};
use crate::session::Session;

/// The `reason` of the 401 answered to a login that is not recent enough.
pub const LOGIN_NOT_FRESH: &str = "login_not_fresh";

/// How old a login may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Recent enough (at most `max_age` old).
    Fresh(Timestamp),
    /// Logged in, but too long ago (or when, is not recorded).
    Stale,
    /// Nobody is logged in.
    Anonymous,
}

/// How far ahead of the clock a login time may be and still count (clock
/// skew between instances); the JWT guard allows the same.
const FUTURE_SKEW: Duration = Duration::from_secs(5);

/// Decides on a session's user and authentication time at `now`.
fn decide(
    user: Option<&str>,
    authenticated_at: Option<Timestamp>,
    now: Timestamp,
    max_age: Duration,
) -> Verdict {
    match (user, authenticated_at) {
        (None, _) => Verdict::Anonymous,
        // A login time ahead of the clock (a clock stepped back, an
        // instance running fast) is not fresh beyond a little skew: it would
        // read as "just now" until the clock caught up.
        (Some(_), Some(at)) if at > now + FUTURE_SKEW => Verdict::Stale,
        (Some(_), Some(at)) if now.saturating_since(at) <= max_age => Verdict::Fresh(at),
        (Some(_), _) => Verdict::Stale,
    }
}

/// A login recent enough, as [`check`] found it (read by the axum
/// extractor).
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
struct Checked {
    user: String,
    authenticated_at: Timestamp,
    methods: Vec<AuthMethod>,
}

/// Checks `session` for a login at most `max_age` old; a refusal says how
/// to answer this request (`method`, `headers`, `uri`).
async fn check(
    session: &Session,
    max_age: Duration,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Checked, FreshLoginRejection> {
    let request = session.request();
    let config = &request.ctx().config;
    let st = request.lock().await.map_err(FreshLoginRejection::session)?;
    let user = st.user_id();
    let data = st.data();
    let at = data.and_then(auth::authenticated_at);
    let verdict = decide(user, at, config.clock.now(), max_age);
    let page = || {
        config
            .reauthentication_url
            .as_deref()
            .filter(|_| is_navigation(method, headers))
            .and_then(|url| redirect_location(url, uri))
    };
    let refusal = match verdict {
        Verdict::Fresh(authenticated_at) => {
            return Ok(Checked {
                user: user.unwrap_or_default().to_owned(),
                authenticated_at,
                methods: data.map(auth::auth_methods).unwrap_or_default(),
            });
        }
        Verdict::Stale => {
            portcullis_core::event!(
                debug,
                reason = "login-not-fresh",
                max_age_secs = max_age.as_secs(),
                "login older than the route allows"
            );
            request.emit(
                AuthEventKind::ReauthRequired {
                    reason: "login-not-fresh",
                },
                user,
                st.current_key().as_ref(),
            );
            Refusal::NotFresh { max_age }
        }
        Verdict::Anonymous => {
            portcullis_core::event!(debug, reason = "login-required", "no logged-in user");
            request.emit(
                AuthEventKind::ReauthRequired {
                    reason: "login-required",
                },
                None,
                None,
            );
            Refusal::Session(SessionError::new(SessionErrorKind::NotAuthenticated))
        }
    };
    Err(FreshLoginRejection {
        refusal: page().map_or(refusal, Refusal::Redirect),
    })
}

/// Lets a request through only when the logged-in user entered their
/// credentials at most `max_age` ago; see the [module docs](crate::fresh).
/// Builds [`FreshLoginGuard`]. Install it inside a
/// [`SessionLayer`](crate::SessionLayer), as a route layer on the routes
/// it guards (`Router::route_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct RequireFreshLogin {
    max_age: Duration,
}

impl RequireFreshLogin {
    /// Requires a login (or re-authentication) at most `max_age` old.
    pub const fn within(max_age: Duration) -> Self {
        Self { max_age }
    }

    /// The longest time since the user entered their credentials.
    #[must_use]
    pub const fn max_age(&self) -> Duration {
        self.max_age
    }
}

impl<S> Layer<S> for RequireFreshLogin {
    type Service = FreshLoginGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FreshLoginGuard {
            inner,
            max_age: self.max_age,
        }
    }
}

/// The service built by [`RequireFreshLogin`].
#[derive(Debug, Clone)]
pub struct FreshLoginGuard<S> {
    inner: S,
    max_age: Duration,
}

impl<S> FreshLoginGuard<S> {
    portcullis_core::inner_service_accessors!();
}

/// The response future of [`FreshLoginGuard`]: boxed, since the session is
/// loaded from the store before the inner service is called.
pub type FreshLoginFuture<F, B, E> = LayerFuture<F, B, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FreshLoginGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = FreshLoginFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        let Some(session) = req.extensions().get::<Session>().cloned() else {
            let missing =
                FreshLoginRejection::session(SessionError::new(SessionErrorKind::LayerMissing));
            return LayerFuture::ready(missing.render(grpc).map(ResponseBody::full));
        };
        // The ready service goes into the future; a clone stays (tower's
        // "Be careful when cloning inner services").
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max_age = self.max_age;
        LayerFuture::boxed(Box::pin(async move {
            match check(&session, max_age, req.method(), req.headers(), req.uri()).await {
                Ok(_) => Ok(inner.call(req).await?.map(ResponseBody::inner)),
                Err(refusal) => Ok(refusal.render(grpc).map(ResponseBody::full)),
            }
        }))
    }
}

/// The logged-in user, who entered their credentials at most
/// `MAX_AGE_SECS` seconds ago (feature `axum`). Refuses as
/// [`RequireFreshLogin`] does ([`FreshLoginRejection`]).
///
/// ```
/// use portcullis_session::FreshLogin;
///
/// // At most 5 minutes since the password was entered.
/// async fn export_data(fresh: FreshLogin<300>) -> String {
///     format!("{} authenticated with {:?}", fresh.user, fresh.methods)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FreshLogin<const MAX_AGE_SECS: u64> {
    /// The logged-in user.
    pub user: String,
    /// When they last entered their credentials.
    pub authenticated_at: Timestamp,
    /// How they authenticated (RFC 8176 names).
    pub methods: Vec<AuthMethod>,
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync, const MAX_AGE_SECS: u64> axum_core::extract::FromRequestParts<S>
    for FreshLogin<MAX_AGE_SECS>
{
    type Rejection = FreshLoginRejection;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let session = parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            FreshLoginRejection::session(SessionError::new(SessionErrorKind::LayerMissing))
        })?;
        let max_age = Duration::from_secs(MAX_AGE_SECS);
        let ok = check(&session, max_age, &parts.method, &parts.headers, &parts.uri).await?;
        Ok(Self {
            user: ok.user,
            authenticated_at: ok.authenticated_at,
            methods: ok.methods,
        })
    }
}

/// Why [`RequireFreshLogin`] or [`FreshLogin`] refused a request: a 303 to
/// the re-authentication form, a 401 (`login_not_fresh`, or nobody logged
/// in), or the session's own error (503 when the store is unavailable,
/// 500 without a `SessionLayer`).
pub struct FreshLoginRejection {
    refusal: Refusal,
}

enum Refusal {
    /// A page: 303 here.
    Redirect(HeaderValue),
    /// Logged in too long ago.
    NotFresh { max_age: Duration },
    /// Nobody logged in, or the session failed.
    Session(SessionError),
}

impl FreshLoginRejection {
    const fn session(e: SessionError) -> Self {
        Self {
            refusal: Refusal::Session(e),
        }
    }

    /// The status of the answer.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match &self.refusal {
            Refusal::Redirect(_) => StatusCode::SEE_OTHER,
            Refusal::NotFresh { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Session(e) => e.rejection().status(),
        }
    }

    /// Whether a user is logged in whose login is too old (as opposed to
    /// nobody logged in, or a failed session).
    #[must_use]
    pub const fn is_not_fresh(&self) -> bool {
        matches!(self.refusal, Refusal::NotFresh { .. })
    }

    /// The answer: a redirect, or problem+json (a gRPC status for gRPC
    /// requests), with the [`Rejection`] in its extensions.
    fn render(&self, grpc: bool) -> Response<Bytes> {
        match &self.refusal {
            Refusal::Redirect(location) => {
                redirect::<Bytes>(location.clone()).map(|_| Bytes::new())
            }
            Refusal::Session(e) => {
                with_rejection(ProblemJson.render(&e.rejection(), grpc), e.rejection())
            }
            Refusal::NotFresh { max_age } => {
                let rejection = Rejection::unauthenticated(
                    "this action needs a recent login: enter your password again",
                )
                .with_reason("login-not-fresh");
                if grpc {
                    return with_rejection(ProblemJson.render(&rejection, true), rejection);
                }
                let body = serde_json::json!({
                    "type": "about:blank",
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": rejection.detail(),
                    "reason": LOGIN_NOT_FRESH,
                    "max_age": max_age.as_secs(),
                });
                let mut r = Response::new(Bytes::from(body.to_string()));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                );
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                with_rejection(r, rejection)
            }
        }
    }
}

fn with_rejection(mut response: Response<Bytes>, rejection: Rejection) -> Response<Bytes> {
    response.extensions_mut().insert(rejection);
    response
}

impl fmt::Debug for FreshLoginRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FreshLoginRejection");
        match &self.refusal {
            Refusal::Redirect(location) => d.field("redirect", location),
            Refusal::NotFresh { max_age } => d.field("not_fresh_max_age", max_age),
            Refusal::Session(e) => d.field("session", e),
        };
        d.finish()
    }
}

impl fmt::Display for FreshLoginRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.refusal {
            Refusal::Redirect(_) => {
                f.write_str("a recent login is required: redirected to re-authenticate")
            }
            Refusal::NotFresh { max_age } => {
                write!(f, "a login at most {} s old is required", max_age.as_secs())
            }
            Refusal::Session(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for FreshLoginRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.refusal {
            Refusal::Session(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for FreshLoginRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.render(false).map(axum_core::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_table() {
        let min = |m: u64| Duration::from_secs(m * 60);
        let t0 = Timestamp::from_secs(1_700_000_000);
        // (user, authenticated at, now, max age, verdict)
        let cases = [
            (Some("a"), Some(t0), t0 + min(20), min(10), Verdict::Stale),
            (
                Some("a"),
                Some(t0),
                t0 + min(10),
                min(10),
                Verdict::Fresh(t0),
            ),
            (
                Some("a"),
                Some(t0),
                t0 + min(5),
                min(10),
                Verdict::Fresh(t0),
            ),
            // A clock a little behind the login's: fresh (skew between
            // instances); a minute behind: not fresh.
            (
                Some("a"),
                Some(t0 + Duration::from_secs(3)),
                t0,
                min(10),
                Verdict::Fresh(t0 + Duration::from_secs(3)),
            ),
            (Some("a"), Some(t0 + min(1)), t0, min(10), Verdict::Stale),
            // Not recorded (a session from before the upgrade): never fresh.
            (Some("a"), None, t0, min(10), Verdict::Stale),
            (None, Some(t0), t0, min(10), Verdict::Anonymous),
            (None, None, t0, min(10), Verdict::Anonymous),
        ];
        for (user, at, now, max_age, want) in cases {
            assert_eq!(
                decide(user, at, now, max_age),
                want,
                "{user:?} {at:?} {now:?}"
            );
        }
    }

    #[test]
    fn not_fresh_body_names_the_reason_and_max_age() {
        let r = FreshLoginRejection {
            refusal: Refusal::NotFresh {
                max_age: Duration::from_secs(600),
            },
        };
        let resp = r.render(false);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(body["reason"], "login_not_fresh");
        assert_eq!(body["max_age"], 600);
        assert_eq!(body["status"], 401);
        assert_eq!(
            resp.extensions().get::<Rejection>().map(Rejection::reason),
            Some("login-not-fresh")
        );
        let grpc = r.render(true);
        assert_eq!(grpc.headers()["grpc-status"], "16");
    }
}
