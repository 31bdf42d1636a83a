//! `LoginThrottle<S>`: the service [`LoginThrottleLayer`](crate::LoginThrottleLayer)
//! builds, and the decisions it makes (plain functions, tested below).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use portcullis_core::events::{
    AuthEvent, AuthEventKind, Decision, DecisionTimer, EventContext, Events,
};
use portcullis_core::rejection::{Rejection, RenderRejection, is_grpc};
use portcullis_core::request::{BodyReadError, read_limited};
use portcullis_core::{ResponseBody, StoreError, Timestamp};
use tower_service::Service;

use crate::account::{AccountError, encoding, find_account};
use crate::address::ClientIp;
use crate::body::RequestBody;
use crate::config::ThrottleConfig;
use crate::outcome::{LoginFailure, LoginOutcome};
use crate::store::{Backoff, ThrottleKey, ThrottleScope, ThrottleStore};

/// The response future of [`LoginThrottle`]: the inner future for requests
/// the throttle lets through untouched (`GET`, `HEAD`, `OPTIONS`), a boxed
/// one for the rest (they await the store before and after the handler).
pub type ResponseFuture<F, B, E> = portcullis_core::LayerFuture<F, B, E>;

/// What the layer and its services share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn ThrottleStore>,
    pub(crate) config: ThrottleConfig,
    pub(crate) in_flight: InFlight,
}

/// The account counters of the requests now between their check and their
/// record, in this process: one attempt per account (and per account at
/// an address) at a time, so a burst of parallel guesses cannot all pass
/// the check before the first failure is recorded.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: Mutex<HashSet<ThrottleKey>>,
}

/// Keys claimed in an [`InFlight`], released when dropped (also when the
/// request is abandoned).
pub(crate) struct Claim<'a> {
    in_flight: &'a InFlight,
    keys: Vec<ThrottleKey>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ThrottleKey>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims every key, or none when one is already claimed.
    pub(crate) fn try_claim(&self, keys: Vec<ThrottleKey>) -> Option<Claim<'_>> {
        let mut held = self.lock();
        if keys.iter().any(|k| held.contains(k)) {
            return None;
        }
        held.extend(keys.iter().copied());
        Some(Claim {
            in_flight: self,
            keys,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut held = self.in_flight.lock();
        for k in &self.keys {
            held.remove(k);
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The counters of one request: their keys and backoffs, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counters {
    keys: Vec<ThrottleKey>,
    backoffs: Vec<Backoff>,
}

impl Counters {
    /// The enabled counters for `account` (normalised, `None` when the
    /// request names none) at `ip`.
    pub(crate) fn new(config: &ThrottleConfig, account: Option<&str>, ip: IpAddr) -> Self {
        let mut c = Self {
            keys: Vec::with_capacity(3),
            backoffs: Vec::with_capacity(3),
        };
        if let Some(account) = account {
            if let Some(b) = config.account_at_address {
                c.keys
                    .push(ThrottleKey::for_account_at_address(account, ip));
                c.backoffs.push(b);
            }
            if let Some(b) = config.account {
                c.keys.push(ThrottleKey::for_account(account));
                c.backoffs.push(b);
            }
        }
        if let Some(b) = config.address {
            c.keys.push(ThrottleKey::for_address(ip));
            c.backoffs.push(b);
        }
        c
    }

    /// The indices of the counters, grouped by `forget_after` (one store
    /// call per group; one group with the defaults).
    fn groups(&self) -> Vec<(Duration, Vec<usize>)> {
        let mut groups: Vec<(Duration, Vec<usize>)> = Vec::with_capacity(1);
        for (i, b) in self.backoffs.iter().enumerate() {
            match groups.iter_mut().find(|(f, _)| *f == b.forget_after) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((b.forget_after, vec![i])),
            }
        }
        groups
    }

    fn pick(&self, idx: &[usize]) -> Vec<ThrottleKey> {
        idx.iter().map(|&i| self.keys[i]).collect()
    }

    /// How long the request must wait (the latest `blocked_until` of its
    /// counters, `None` when none is blocked), and whether an account
    /// counter holds failures (a success then has something to reset).
    async fn blocked(
        &self,
        store: &dyn ThrottleStore,
        now: Timestamp,
    ) -> Result<(Option<Duration>, bool), StoreError> {
        let mut until: Option<Timestamp> = None;
        let mut account_failures = false;
        for (forget, idx) in self.groups() {
            let states = store.check(&self.pick(&idx), now, forget).await?;
            for (state, &i) in states.iter().zip(&idx) {
                if let Some(u) = state.blocked_until(&self.backoffs[i], now) {
                    until = until.max(Some(u));
                }
                if state.failures > 0 && self.keys[i].scope() != ThrottleScope::Address {
                    account_failures = true;
                }
            }
        }
        Ok((until.map(|u| u.saturating_since(now)), account_failures))
    }

    async fn record_failure(
        &self,
        store: &dyn ThrottleStore,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for (forget, idx) in self.groups() {
            store.record_failure(&self.pick(&idx), now, forget).await?;
        }
        Ok(())
    }

    /// The account counters (not the address one): one attempt at a time
    /// per key.
    fn exclusive(&self) -> Vec<ThrottleKey> {
        self.keys
            .iter()
            .copied()
            .filter(|k| k.scope() != ThrottleScope::Address)
            .collect()
    }

    /// Resets the account's counters; the address counter stays.
    async fn reset(&self, store: &dyn ThrottleStore) -> Result<(), StoreError> {
        let keys: Vec<ThrottleKey> = self
            .keys
            .iter()
            .copied()
            .filter(|k| k.scope() != ThrottleScope::Address)
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        store.reset(&keys).await
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least one.
pub(crate) fn retry_after(wait: Duration) -> Duration {
    let ms = wait.as_millis();
    let secs = ms.div_ceil(1000).max(1);
    Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX))
}

/// What the handler's response says happened: its [`LoginOutcome`], else
/// a failure when it carries a [`LoginFailure`] or is a 401.
pub(crate) fn outcome_of<B>(response: &Response<B>) -> Option<LoginOutcome> {
    let extensions = response.extensions();
    extensions.get::<LoginOutcome>().copied().or_else(|| {
        (extensions.get::<LoginFailure>().is_some()
            || response.status() == StatusCode::UNAUTHORIZED)
            .then_some(LoginOutcome::Failed)
    })
}

/// The `login_failed` event of a failed attempt: the handler's reason and
/// user id, `invalid_credentials` and no user without a [`LoginFailure`].
fn login_failed<B>(response: &Response<B>, ctx: &EventContext) -> AuthEvent {
    let failure = response.extensions().get::<LoginFailure>();
    let reason = failure.map_or(LoginFailure::INVALID_CREDENTIALS, LoginFailure::reason);
    AuthEvent::new(SOURCE, AuthEventKind::LoginFailed { reason })
        .context(ctx)
        .maybe_user(failure.and_then(LoginFailure::user_id))
}

/// The source and layer name of the throttle's events and decisions.
const SOURCE: &str = "throttle";

/// The layer's span (`portcullis.throttle`) with the `tracing` feature;
/// nothing without it.
#[derive(Clone)]
struct LayerSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl LayerSpan {
    fn new() -> Self {
        Self {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "portcullis.throttle",
                otel.kind = "internal",
                portcullis.decision = tracing::field::Empty,
                error.type = tracing::field::Empty,
                http.route = tracing::field::Empty,
            ),
        }
    }

    #[cfg_attr(not(feature = "tracing"), allow(clippy::unused_self))]
    fn route(&self, _ctx: &EventContext) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            if let Some(route) = _ctx.route.as_deref() {
                self.span.record("http.route", route);
            }
        }
    }

    #[cfg_attr(not(feature = "tracing"), allow(clippy::unused_self))]
    fn decided(&self, _decision: Decision, _reason: Option<&'static str>) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            self.span.record("portcullis.decision", _decision.as_str());
            if let Some(reason) = _reason {
                self.span.record("error.type", reason);
            }
        }
    }

    /// Runs `f` inside the span.
    async fn enter<F: std::future::Future>(&self, f: F) -> F::Output {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument as _;
            f.instrument(self.span.clone()).await
        }
        #[cfg(not(feature = "tracing"))]
        f.await
    }
}

/// What the throttle reports of one counted request: events, the decision
/// (once) and the span.
struct Report<'a> {
    events: &'a Events,
    ctx: EventContext,
    timer: Option<DecisionTimer>,
    span: LayerSpan,
}

impl Report<'_> {
    fn decided(&mut self, decision: Decision, reason: Option<&'static str>) {
        self.events
            .decided(self.timer.take(), SOURCE, decision, reason);
        self.span.decided(decision, reason);
    }

    /// A refusal before the handler: `Failure` with the rejection's reason.
    fn refused(&mut self, rejection: Rejection) -> Rejection {
        self.decided(Decision::Failure, Some(rejection.reason()));
        rejection
    }

    /// A 429: the `throttled` event, then the refusal.
    fn throttled(&mut self, wait: Duration) -> Rejection {
        let rejection = throttled(wait);
        let retry_after = retry_after(wait);
        let ctx = &self.ctx;
        self.events
            .emit(|| AuthEvent::new(SOURCE, AuthEventKind::Throttled { retry_after }).context(ctx));
        self.refused(rejection)
    }

    /// A store error answered 503: the `store_unavailable` event.
    fn store_down(&self, operation: &'static str) -> Rejection {
        let ctx = &self.ctx;
        self.events.emit(|| {
            AuthEvent::new(
                SOURCE,
                AuthEventKind::StoreUnavailable {
                    store: "throttle",
                    operation,
                },
            )
            .context(ctx)
        });
        store_down()
    }
}

/// Requests the throttle lets through without counting: they carry no
/// credentials to check (a login page, a CORS preflight).
fn passes_through(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn throttled(wait: Duration) -> Rejection {
    Rejection::too_many_requests("too many failed attempts; try again later")
        .with_reason("throttled")
        .with_retry_after(retry_after(wait))
}

fn store_down() -> Rejection {
    Rejection::unavailable("login attempts cannot be checked right now; try again")
        .with_reason("throttle-store")
}

fn account_rejection(e: AccountError) -> Rejection {
    match e {
        AccountError::ContentType => Rejection::bad_request(
            "a login request must be application/x-www-form-urlencoded or application/json",
        )
        .with_reason("content-type"),
        AccountError::Malformed => {
            Rejection::bad_request("the request body does not parse").with_reason("malformed-body")
        }
        AccountError::Field => {
            Rejection::bad_request("the account field must be sent once, as text")
                .with_reason("account-field")
        }
    }
}

/// Brute-force protection in front of a login or refresh handler; built by
/// [`LoginThrottleLayer`](crate::LoginThrottleLayer).
pub struct LoginThrottle<S, R> {
    inner: S,
    shared: Arc<Shared>,
    renderer: R,
}

impl<S: Clone, R: Clone> Clone for LoginThrottle<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            renderer: self.renderer.clone(),
        }
    }
}

impl<S, R> LoginThrottle<S, R> {
    pub(crate) const fn new(inner: S, shared: Arc<Shared>, renderer: R) -> Self {
        Self {
            inner,
            shared,
            renderer,
        }
    }

    portcullis_core::inner_service_accessors!();
}

impl<S: fmt::Debug, R> fmt::Debug for LoginThrottle<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for LoginThrottle<S, R>
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

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let events = &self.shared.config.events;
        if passes_through(req.method()) {
            events.decided(events.start_decision(), SOURCE, Decision::None, None);
            return ResponseFuture::inner(self.inner.call(req.map(RequestBody::inner)));
        }
        let timer = events.start_decision();
        let span = LayerSpan::new();
        // The ready service goes into the future, its clone stays (tower's
        // "Be careful when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let renderer = self.renderer.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let grpc = is_grpc(req.headers());
            match guard(&shared, inner, req, timer, span).await? {
                Ok(response) => Ok(response.map(ResponseBody::inner)),
                Err(rejection) => Ok(rejection.into_response(&renderer, grpc)),
            }
        }))
    }
}

/// The whole decision for one counted request: `Ok(Err(rejection))` when
/// the throttle answers itself.
async fn guard<S, ReqBody, ResBody>(
    shared: &Shared,
    mut inner: S,
    req: Request<ReqBody>,
    timer: Option<DecisionTimer>,
    span: LayerSpan,
) -> Result<Result<Response<ResBody>, Rejection>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes>,
{
    let config = &shared.config;
    let store = &*shared.store;
    let (parts, body) = req.into_parts();
    let events = &config.events;
    let ctx = if events.enabled() {
        events.context(&parts.extensions, &parts.headers)
    } else {
        EventContext::default()
    };
    span.route(&ctx);
    let mut report = Report {
        events,
        ctx,
        timer,
        span: span.clone(),
    };
    let admitted = span.enter(admit(shared, parts, body, &mut report)).await;
    let (parts, body, counters, claim, account_failures) = match admitted {
        Ok(admitted) => admitted,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let response = inner.call(Request::from_parts(parts, body)).await?;
    let now = config.clock.now();
    let written = match outcome_of(&response) {
        Some(LoginOutcome::Failed) => {
            events.emit(|| login_failed(&response, &report.ctx));
            counters
                .record_failure(store, now)
                .await
                .map_err(|e| (e, "record"))
        }
        // Nothing to forget when the check found the account's counters
        // clean: a first-try login costs the store one call. (A failure
        // another instance records meanwhile stays counted: the throttle
        // errs towards counting.)
        Some(LoginOutcome::Succeeded) if account_failures => {
            counters.reset(store).await.map_err(|e| (e, "reset"))
        }
        Some(LoginOutcome::Succeeded) | None => Ok(()),
    };
    drop(claim);
    if let Err((_e, operation)) = written {
        portcullis_core::event!(warn, reason = "throttle-store", error = %_e, "login throttle store failed after the handler");
        return Ok(Err(report.store_down(operation)));
    }
    Ok(Ok(response))
}

/// What [`admit`] hands on for an attempt let through: the request, its
/// counters, its claim on them, and whether an account counter holds
/// failures.
type Admitted<'a, B> = (
    http::request::Parts,
    RequestBody<B>,
    Counters,
    Claim<'a>,
    bool,
);

/// The decision before the handler: the client address, the account, the
/// counters' check. `Err` is the throttle's own answer.
async fn admit<'a, ReqBody>(
    shared: &'a Shared,
    mut parts: http::request::Parts,
    body: ReqBody,
    report: &mut Report<'_>,
) -> Result<Admitted<'a, ReqBody>, Rejection>
where
    ReqBody: Body<Data = Bytes>,
{
    let config = &shared.config;
    let store = &*shared.store;
    let Some(ip) = config
        .client_address
        .resolve(&parts.extensions, &parts.headers)
    else {
        portcullis_core::event!(
            warn,
            reason = "no-client-address",
            "login throttle: the server gives no peer address"
        );
        return Err(report.refused(
            Rejection::internal("the client address is unavailable")
                .with_reason("no-client-address"),
        ));
    };
    parts.extensions.insert(ClientIp(ip));
    // The events name the client the throttle counts (behind a trusted
    // proxy, not the proxy the context read when the request arrived).
    if report.events.enabled() {
        report.ctx.client = Some(ip);
    }
    let (account, body) = match config.account_field.as_deref() {
        None => (None, RequestBody::inner(body)),
        Some(field) => {
            let enc = match encoding(&parts.headers) {
                Ok(enc) => enc,
                Err(e) => return Err(report.refused(account_rejection(e))),
            };
            let read = match read_limited(body, config.max_body).await {
                Ok(read) => read,
                Err(BodyReadError::TooLarge) => {
                    return Err(report.refused(
                        Rejection::payload_too_large("the login request body is too large")
                            .with_reason("body-too-large"),
                    ));
                }
                Err(_) => {
                    return Err(report.refused(
                        Rejection::bad_request("the request body could not be read")
                            .with_reason("body-unreadable"),
                    ));
                }
            };
            let account = match find_account(enc, &read.data, field) {
                Ok(a) => a.map(|a| (config.normalize)(&a)).filter(|a| !a.is_empty()),
                Err(e) => return Err(report.refused(account_rejection(e))),
            };
            (account, RequestBody::buffered(read.data, read.trailers))
        }
    };
    let counters = Counters::new(config, account.as_deref(), ip);
    // Held until the outcome is recorded: a parallel attempt at the same
    // account waits for nothing and is refused like a blocked one.
    let Some(claim) = shared.in_flight.try_claim(counters.exclusive()) else {
        portcullis_core::event!(
            debug,
            reason = "in-flight",
            "login attempt already in flight"
        );
        return Err(report.throttled(Duration::from_secs(1)));
    };
    let now = config.clock.now();
    match counters.blocked(store, now).await {
        Ok((None, account_failures)) => {
            report.decided(Decision::Success, None);
            Ok((parts, body, counters, claim, account_failures))
        }
        Ok((Some(wait), _)) => {
            portcullis_core::event!(
                debug,
                reason = "throttled",
                wait_ms = wait.as_millis() as u64,
                "login throttled"
            );
            Err(report.throttled(wait))
        }
        Err(_e) => {
            portcullis_core::event!(warn, reason = "throttle-store", error = %_e, "login throttle store failed");
            let rejection = report.store_down("check");
            Err(report.refused(rejection))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_ACCOUNT, DEFAULT_ACCOUNT_AT_ADDRESS, DEFAULT_ADDRESS};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn retry_after_rounds_up() {
        let cases = [
            (0, 1),
            (1, 1),
            (999, 1),
            (1000, 1),
            (1001, 2),
            (899_001, 900),
        ];
        for (ms, secs) in cases {
            assert_eq!(
                retry_after(Duration::from_millis(ms)).as_secs(),
                secs,
                "{ms}"
            );
        }
    }

    #[test]
    fn outcome_table() {
        let with = |status: u16, marker: Option<LoginOutcome>| {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            if let Some(m) = marker {
                r.extensions_mut().insert(m);
            }
            outcome_of(&r)
        };
        assert_eq!(with(401, None), Some(LoginOutcome::Failed));
        assert_eq!(with(200, None), None);
        assert_eq!(with(400, None), None);
        assert_eq!(with(403, None), None);
        assert_eq!(
            with(200, Some(LoginOutcome::Failed)),
            Some(LoginOutcome::Failed)
        );
        assert_eq!(
            with(401, Some(LoginOutcome::Succeeded)),
            Some(LoginOutcome::Succeeded)
        );
        assert_eq!(
            with(303, Some(LoginOutcome::Succeeded)),
            Some(LoginOutcome::Succeeded)
        );
        // A LoginFailure alone marks a failure; a LoginOutcome beside it
        // decides.
        let mut r = Response::new(());
        r.extensions_mut()
            .insert(LoginFailure::new("account_locked"));
        assert_eq!(outcome_of(&r), Some(LoginOutcome::Failed));
        r.extensions_mut().insert(LoginOutcome::Succeeded);
        assert_eq!(outcome_of(&r), Some(LoginOutcome::Succeeded));
    }

    #[test]
    fn login_failed_takes_the_handlers_reason_and_user() {
        let ctx = EventContext::default();
        let mut r = Response::new(());
        let bare = login_failed(&r, &ctx);
        assert_eq!(
            bare.kind,
            AuthEventKind::LoginFailed {
                reason: "invalid_credentials"
            }
        );
        assert_eq!(bare.user, None);
        r.extensions_mut()
            .insert(LoginFailure::new("account_locked").user("user-2"));
        let given = login_failed(&r, &ctx);
        assert_eq!(given.kind.reason(), Some("account_locked"));
        assert_eq!(given.user.as_deref(), Some("user-2"));
        assert_eq!(given.source, "throttle");
    }

    #[test]
    fn counters_per_request() {
        let config = ThrottleConfig::default();
        let a = ip("192.0.2.1");
        let with_account = Counters::new(&config, Some("alice"), a);
        assert_eq!(
            with_account.keys,
            vec![
                ThrottleKey::for_account_at_address("alice", a),
                ThrottleKey::for_account("alice"),
                ThrottleKey::for_address(a),
            ]
        );
        assert_eq!(
            with_account.backoffs,
            vec![DEFAULT_ACCOUNT_AT_ADDRESS, DEFAULT_ACCOUNT, DEFAULT_ADDRESS]
        );
        assert_eq!(with_account.groups().len(), 1, "one store call by default");
        let without = Counters::new(&config, None, a);
        assert_eq!(without.keys, vec![ThrottleKey::for_address(a)]);
        // Keys of different accounts and addresses differ.
        assert_ne!(
            ThrottleKey::for_account_at_address("alice", a),
            ThrottleKey::for_account_at_address("alice", ip("192.0.2.2"))
        );
        assert_ne!(
            ThrottleKey::for_account("alice"),
            ThrottleKey::for_account("bob")
        );
    }

    #[test]
    fn in_flight_claims_are_exclusive_and_released() {
        let f = InFlight::default();
        let a = ThrottleKey::for_account("alice");
        let b = ThrottleKey::for_account("bob");
        let claim = f.try_claim(vec![a]).unwrap();
        assert!(f.try_claim(vec![b, a]).is_none(), "all or nothing");
        assert_eq!(f.len(), 1);
        let other = f.try_claim(vec![b]).unwrap();
        drop(claim);
        assert!(f.try_claim(vec![a]).is_some());
        drop(other);
        assert_eq!(f.len(), 0);
        assert!(f.try_claim(Vec::new()).is_some(), "no keys, no wait");
    }

    #[test]
    fn groups_split_by_forget_after() {
        let long = Backoff {
            forget_after: Duration::from_secs(7200),
            ..DEFAULT_ACCOUNT
        };
        let config = ThrottleConfig::builder()
            .backoff(ThrottleScope::Account, long)
            .build()
            .unwrap();
        let c = Counters::new(&config, Some("alice"), ip("192.0.2.1"));
        assert_eq!(
            c.groups(),
            vec![
                (DEFAULT_ACCOUNT_AT_ADDRESS.forget_after, vec![0, 2]),
                (Duration::from_secs(7200), vec![1]),
            ]
        );
    }
}
