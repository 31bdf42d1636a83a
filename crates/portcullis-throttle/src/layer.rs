//! `LoginThrottleLayer`: brute-force protection for login and refresh
//! routes.

use std::fmt;
use std::sync::Arc;

use portcullis_core::rejection::{ProblemJson, RenderRejection};
use tower_layer::Layer;

use crate::config::ThrottleConfig;
use crate::service::{LoginThrottle, Shared};
use crate::store::ThrottleStore;

/// Counts failed logins per account and per client address, and answers
/// 429 with `Retry-After` while a counter is blocked; put it on the login
/// route (and the refresh endpoints, the re-authentication form).
///
/// For every request except `GET`, `HEAD` and `OPTIONS` (a login page, a
/// preflight: they pass untouched):
///
/// 1. The client address is found ([`ClientAddress`](crate::ClientAddress))
///    and put into the request's extensions as a [`ClientIp`](crate::ClientIp).
///    No peer address at all is a server set-up error: 500.
/// 2. With an account field (default `username`), the body is read (at most
///    [`max_body`](crate::ThrottleConfigBuilder::max_body), 413 past it),
///    from an urlencoded form or a JSON object (400 for another content
///    type, a body that does not parse, or a field sent twice or not as
///    text), and handed on intact to the handler. The account name is
///    normalised ([`normalize_account`](crate::normalize_account) by
///    default). A request without the field counts on the address only.
/// 3. If any of the request's counters is blocked, the answer is 429
///    problem+json with `Retry-After` (seconds, rounded up), and the
///    handler is **not** called: no password is checked while blocked, so
///    the block cannot reveal a right guess. The answer is the same whether
///    the account exists or not: the throttle never knows.
/// 4. Otherwise the handler runs, and its [`LoginOutcome`](crate::LoginOutcome)
///    is recorded: a failure on every counter, or a reset of the account's
///    counters on success; without a marker a 401 counts as a failure.
///
/// A store error, before or after the handler, answers 503 problem+json
/// (fail closed): never a pass, never a 500.
///
/// Requests that are counted are handled in a boxed future (they await the
/// store before and after the handler).
///
/// One attempt per account at a time: while a request for an account is
/// between its check and its recorded outcome, another request for the
/// same account (from any address) gets the same 429 (`Retry-After: 1`)
/// without reaching the handler, so a burst of parallel guesses cannot all
/// pass the check before the first failure is counted. This holds per
/// process: behind a load balancer, a burst can reach each instance once.
/// Requests without an account (refresh endpoints) are not serialised:
/// many users behind one address refresh at once.
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{Extension, Router, routing::post};
/// use portcullis_throttle::{LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig};
///
/// async fn login(body: String) -> (http::StatusCode, Extension<LoginOutcome>) {
///     // ... check the credentials ...
///     (http::StatusCode::UNAUTHORIZED, Extension(LoginOutcome::Failed))
/// }
///
/// let throttle = LoginThrottleLayer::new(MemoryThrottleStore::new(), ThrottleConfig::default());
/// let app: Router = Router::new().route("/login", post(login).layer(throttle));
/// // Serve with the peer address:
/// // axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
/// # let _ = app;
/// ```
pub struct LoginThrottleLayer<R = ProblemJson> {
    shared: Arc<Shared>,
    renderer: R,
}

impl<R: Clone> Clone for LoginThrottleLayer<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            renderer: self.renderer.clone(),
        }
    }
}

impl<R> fmt::Debug for LoginThrottleLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginThrottleLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl LoginThrottleLayer {
    /// A throttle counting in `store` (an `Arc<S>` works too, to share one
    /// store between the login route and the refresh endpoints).
    #[must_use]
    pub fn new(store: impl ThrottleStore, config: ThrottleConfig) -> Self {
        Self::from_arc(Arc::new(store), config)
    }

    /// A throttle counting in a store already shared as a trait object.
    #[must_use]
    pub fn from_arc(store: Arc<dyn ThrottleStore>, config: ThrottleConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                config,
                in_flight: crate::service::InFlight::default(),
            }),
            renderer: ProblemJson,
        }
    }
}

impl<R> LoginThrottleLayer<R> {
    /// Renders refusals with `renderer` instead of problem+json.
    #[must_use]
    pub fn with_rejection<R2: RenderRejection>(self, renderer: R2) -> LoginThrottleLayer<R2> {
        LoginThrottleLayer {
            shared: self.shared,
            renderer,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ThrottleConfig {
        &self.shared.config
    }
}

impl<S, R: Clone> Layer<S> for LoginThrottleLayer<R> {
    type Service = LoginThrottle<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        LoginThrottle::new(inner, Arc::clone(&self.shared), self.renderer.clone())
    }
}
