//! The events of `SessionLayer` (`SessionConfig::events`), through a real
//! server: every kind the layer emits, with its route template, client,
//! trace id, user and device, and never a session cookie in an event's
//! `Debug` or JSON form.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use portcullis::otel::{OPERATION, STORE, event_metric};
use portcullis::session::testing::FaultyStore;
use portcullis::session::{
    AuthMethod, CapPolicy, LoginOptions, MemoryStore, RequireFreshLogin, Session, SessionConfig,
    SessionError, SessionLayer,
};
use portcullis_core::events::{
    AuthEvent, AuthEventKind, Decision, EventStream, Events, EventsBuilder, Recorder, TraceId,
};
use portcullis_core::{ManualClock, OpaqueToken, SharedClock};
use portcullis_tests::otel::Metrics;
use portcullis_tests::session_app::peer_ip;
use portcullis_tests::{TestServer, client, cookie_value};
use serde_json::{Value, json};
use tokio::sync::{Barrier, Notify};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn route(e: &http::Extensions) -> Option<Arc<str>> {
    e.get::<MatchedPath>().map(|m| m.as_str().into())
}

fn traceparent() -> String {
    format!("00-{TRACE}-00f067aa0ba902b7-01")
}

/// The app: every session operation on its own route, the session layer
/// inside the router (`route_layer`) so the route template is known.
struct App {
    server: TestServer,
    /// The layer's clock (the store keeps its own, which never moves).
    clock: Arc<ManualClock>,
    /// Makes every store call fail while on.
    outage: Arc<AtomicBool>,
    /// Told when `/gated-login` is in its handler.
    arrived: Arc<Notify>,
    /// Lets `/gated-login` go on.
    gate: Arc<Notify>,
    /// Every session cookie the server handed out: never in an event.
    secrets: std::sync::Mutex<Vec<String>>,
}

#[derive(Clone)]
struct AppState {
    outage: Arc<AtomicBool>,
    arrived: Arc<Notify>,
    gate: Arc<Notify>,
    /// Holds each `/racing-logout` until two have loaded their session.
    racing: Arc<Barrier>,
}

async fn start(events: Events, config: SessionConfig) -> App {
    let clock = Arc::new(ManualClock::starting_now());
    let store_clock: SharedClock = Arc::new(ManualClock::starting_now());
    let store = FaultyStore::new(MemoryStore::with_clock(store_clock));
    let outage = store.switch();
    let layer_clock: SharedClock = clock.clone();
    let config = config
        .insecure_dev_cookies()
        .clock(layer_clock)
        .client_ip(peer_ip)
        .events(events);
    let layer = SessionLayer::new(store, config).unwrap();
    let state = AppState {
        outage: Arc::clone(&outage),
        arrived: Arc::new(Notify::new()),
        gate: Arc::new(Notify::new()),
        racing: Arc::new(Barrier::new(2)),
    };
    let (arrived, gate) = (Arc::clone(&state.arrived), Arc::clone(&state.gate));
    let app = Router::new()
        .route("/fresh", get(|| async { "fresh enough" }))
        .route_layer(RequireFreshLogin::within(Duration::from_secs(60)))
        .route("/login/{user}", post(login))
        .route("/remembered/{user}", post(login_remembered))
        .route("/gated-login/{user}", post(gated_login))
        .route("/me", get(me))
        .route(
            "/logout",
            post(|s: Session| async move { s.logout().await }),
        )
        .route(
            "/logout-everywhere",
            post(|s: Session| async move { s.logout_everywhere().await.map(|_| ()) }),
        )
        .route(
            "/logout-others",
            post(|s: Session| async move { s.logout_other_sessions().await.map(|_| ()) }),
        )
        .route("/renew", post(|s: Session| async move { s.renew().await }))
        .route(
            "/reauth",
            post(|s: Session| async move { s.reauthenticated([AuthMethod::PASSWORD]).await }),
        )
        .route(
            "/password",
            post(|s: Session| async move { s.password_changed().await.map(|_| ()) }),
        )
        .route("/racing-logout", post(racing_logout))
        .route("/sessions", get(sessions))
        .route("/revoke/{id}", post(revoke))
        .route("/write-then-fail", post(write_then_fail))
        .route_layer(layer)
        .with_state(state);
    App {
        server: TestServer::start(app).await,
        clock,
        outage,
        arrived,
        gate,
        secrets: std::sync::Mutex::default(),
    }
}

async fn login(Path(user): Path<String>, s: Session) -> Result<(), SessionError> {
    s.login(user).await
}

async fn login_remembered(Path(user): Path<String>, s: Session) -> Result<(), SessionError> {
    let options = LoginOptions::new().remember(Duration::from_secs(3600));
    s.login_with(user, options).await
}

/// Says it arrived, waits for the test to open the gate, then logs in.
async fn gated_login(
    State(st): State<AppState>,
    Path(user): Path<String>,
    s: Session,
) -> Result<(), SessionError> {
    st.arrived.notify_one();
    st.gate.notified().await;
    s.login(user).await
}

/// Loads the session, waits until a second `/racing-logout` has loaded
/// it too, then logs out: both find the session, one deletes it.
async fn racing_logout(State(st): State<AppState>, s: Session) -> Result<(), SessionError> {
    s.user_id().await?;
    st.racing.wait().await;
    s.logout().await
}

async fn me(s: Session) -> Result<Json<Value>, SessionError> {
    Ok(Json(json!({ "user": s.user_id().await? })))
}

async fn sessions(s: Session) -> Result<Json<Value>, SessionError> {
    let list = s.active_sessions().await?;
    Ok(Json(json!(
        list.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    )))
}

async fn revoke(Path(id): Path<String>, s: Session) -> Result<Json<bool>, SessionError> {
    Ok(Json(s.revoke_session(&id).await?))
}

/// Loads the session, then the store goes down: the commit's write fails.
async fn write_then_fail(State(st): State<AppState>, s: Session) -> Result<(), SessionError> {
    s.user_id().await?;
    st.outage.store(true, Ordering::SeqCst);
    s.insert("k", 1).await
}

impl App {
    /// `method path` with the session `cookie` and a `traceparent`; the
    /// status and the new session cookie, if any.
    async fn call(
        &self,
        post: bool,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, Option<String>) {
        let url = self.server.url(path);
        let mut req = if post {
            client().post(url)
        } else {
            client().get(url)
        };
        req = req.header("traceparent", traceparent());
        if let Some(c) = cookie {
            req = req.header("cookie", format!("session={c}"));
        }
        let resp = req.send().await.unwrap();
        let set = cookie_value(&resp, "session").filter(|v| !v.is_empty());
        if let Some(v) = &set {
            self.secrets.lock().unwrap().push(v.clone());
        }
        (resp.status(), set)
    }

    async fn login(&self, user: &str) -> String {
        let (status, cookie) = self.call(true, &format!("/login/{user}"), None).await;
        assert_eq!(status, 200);
        cookie.expect("a session cookie")
    }

    /// Checks what every event carries: source, route, client, trace id;
    /// and that no session cookie is in its `Debug` or JSON form.
    fn check(&self, event: &AuthEvent, route: &str) {
        assert_eq!(event.source, "session", "{event:?}");
        assert_eq!(event.route.as_deref(), Some(route), "{event:?}");
        assert_eq!(
            event.client,
            Some(std::net::IpAddr::from([127, 0, 0, 1])),
            "{event:?}"
        );
        assert_eq!(event.trace_id, TraceId::from_hex(TRACE), "{event:?}");
        let debug = format!("{event:?}");
        let json = event.to_json().to_string();
        for secret in self.secrets.lock().unwrap().iter() {
            assert!(!debug.contains(secret.as_str()), "{debug}");
            assert!(!json.contains(secret.as_str()), "{json}");
        }
    }
}

/// Every event waiting on `stream` (the ones a request emitted are there
/// once its response arrived).
fn drain(stream: &mut EventStream) -> Vec<Arc<AuthEvent>> {
    std::iter::from_fn(|| stream.try_recv()).collect()
}

/// The one event waiting on `stream`, which must be of `kind`.
fn only(stream: &mut EventStream, kind: &str) -> Arc<AuthEvent> {
    let mut events = drain(stream);
    assert_eq!(events.len(), 1, "{events:?}");
    let event = events.remove(0);
    assert_eq!(event.kind.name(), kind, "{event:?}");
    event
}

/// The events of a test app: counted as OpenTelemetry metrics, with the
/// route template and the client address.
fn events(metrics: &Metrics) -> EventsBuilder {
    metrics.events().client_ip(peer_ip).route(route)
}

/// Every event a test app emitted (a subscriber of its own), against the
/// OpenTelemetry counters.
struct Counted {
    metrics: Metrics,
    all: EventStream,
}

impl Counted {
    fn new(metrics: Metrics, events: &Events) -> Self {
        let all = events.subscribe("all", 256);
        Self { metrics, all }
    }

    /// The events seen so far are exactly `expected` (kind, reason when
    /// the kind has one, how many), and each is counted as its metric.
    fn assert(&mut self, expected: &[(&str, Option<&str>, u64)]) {
        let seen = drain(&mut self.all);
        assert_eq!(self.all.dropped(), 0);
        for (kind, reason, n) in expected {
            let of_kind = seen
                .iter()
                .filter(|e| {
                    e.kind.name() == *kind && (reason.is_none() || e.kind.reason() == *reason)
                })
                .count() as u64;
            assert_eq!(of_kind, *n, "{kind} {reason:?} seen: {seen:?}");
            assert_eq!(
                self.metrics.event_count(kind, *reason),
                *n,
                "{kind} {reason:?} counted"
            );
        }
        for e in &seen {
            assert!(
                expected.iter().any(|(kind, _, _)| e.kind.name() == *kind),
                "not expected: {e:?}"
            );
        }
    }
}

async fn app(config: SessionConfig) -> (App, EventStream, Counted) {
    let metrics = Metrics::new();
    let events = events(&metrics).build();
    let stream = events.subscribe("t", 64);
    let counted = Counted::new(metrics, &events);
    (start(events, config).await, stream, counted)
}

/// `login` and `login_with`: `login_succeeded` with the id the app passed
/// and the new session's public handle, the one the device list shows.
#[tokio::test]
async fn login_and_login_with_emit_login_succeeded() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let event = only(&mut stream, "login_succeeded");
    app.check(&event, "/login/{user}");
    assert_eq!(event.user.as_deref(), Some("alice"));
    let list: Vec<String> = client()
        .get(app.server.url("/sessions"))
        .header("cookie", format!("session={cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(event.device.as_deref(), Some(list[0].as_str()));

    let (status, _) = app.call(true, "/remembered/bob", None).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "login_succeeded");
    app.check(&event, "/remembered/{user}");
    assert_eq!(event.user.as_deref(), Some("bob"));
    assert!(event.kind.is_audit());
    counted.assert(&[("login_succeeded", None, 2)]);
}

/// `logout`: `logout` with the user and the ended session's handle; a
/// logout without a session ends nothing and says nothing.
#[tokio::test]
async fn logout_emits_logout() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let login = only(&mut stream, "login_succeeded");
    let (status, _) = app.call(true, "/logout", Some(&cookie)).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "logout");
    app.check(&event, "/logout");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert_eq!(event.device, login.device);

    let (status, _) = app.call(true, "/logout", None).await;
    assert_eq!(status, 200);
    assert!(drain(&mut stream).is_empty());
    counted.assert(&[("login_succeeded", None, 1), ("logout", None, 1)]);
}

/// Two logouts of one session racing (both loaded it before either
/// deleted it): one session ended, one `logout`.
#[tokio::test]
async fn two_racing_logouts_of_one_session_emit_one_logout() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let login = only(&mut stream, "login_succeeded");
    let (first, second) = tokio::join!(
        app.call(true, "/racing-logout", Some(&cookie)),
        app.call(true, "/racing-logout", Some(&cookie)),
    );
    assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
    let event = only(&mut stream, "logout");
    app.check(&event, "/racing-logout");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert_eq!(event.device, login.device);
    counted.assert(&[("login_succeeded", None, 1), ("logout", None, 1)]);
}

/// `logout_everywhere` and `logout_other_sessions` both emit
/// `logout_everywhere` (the user asked every other device out; the device
/// is the session that asked).
#[tokio::test]
async fn logout_everywhere_and_logout_others_emit_logout_everywhere() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let phone = app.login("alice").await;
    let laptop = app.login("alice").await;
    let laptop_login = drain(&mut stream).pop().unwrap();
    let (status, _) = app.call(true, "/logout-others", Some(&laptop)).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "logout_everywhere");
    app.check(&event, "/logout-others");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert_eq!(event.device, laptop_login.device);
    // The phone's session is gone; the laptop's is not.
    let (status, _) = app.call(true, "/logout-everywhere", Some(&phone)).await;
    assert_eq!(status, 401);
    drain(&mut stream);

    let (status, _) = app.call(true, "/logout-everywhere", Some(&laptop)).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "logout_everywhere");
    app.check(&event, "/logout-everywhere");
    assert_eq!(event.user.as_deref(), Some("alice"));
    counted.assert(&[("login_succeeded", None, 2), ("logout_everywhere", None, 2)]);
}

/// `renew` and `reauthenticated`: `session_renewed`, with the new id's
/// handle.
#[tokio::test]
async fn renew_and_reauthenticated_emit_session_renewed() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let login = only(&mut stream, "login_succeeded");
    let (status, renewed) = app.call(true, "/renew", Some(&cookie)).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "session_renewed");
    app.check(&event, "/renew");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert!(event.device.is_some() && event.device != login.device);

    let (status, _) = app.call(true, "/reauth", renewed.as_deref()).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "session_renewed");
    app.check(&event, "/reauth");
    assert_eq!(event.user.as_deref(), Some("alice"));
    counted.assert(&[("login_succeeded", None, 1), ("session_renewed", None, 2)]);
}

/// The per-user cap: a login past it evicts the oldest session, one
/// `session_evicted` per session, with that session's handle.
#[tokio::test]
async fn the_cap_emits_session_evicted() {
    let config = SessionConfig::default().max_sessions_per_user(1, CapPolicy::EvictOldest);
    let (app, mut stream, mut counted) = app(config).await;
    app.login("alice").await;
    let first = only(&mut stream, "login_succeeded");
    app.login("alice").await;
    let events = drain(&mut stream);
    let kinds: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["session_evicted", "login_succeeded"]);
    let evicted = &events[0];
    app.check(evicted, "/login/{user}");
    assert_eq!(evicted.user.as_deref(), Some("alice"));
    assert_eq!(evicted.device, first.device);
    assert_ne!(events[1].device, first.device);
    counted.assert(&[("login_succeeded", None, 2), ("session_evicted", None, 1)]);
}

/// A session the store still returns but that has expired by the layer's
/// clock (here the store's clock lags): `session_expired`, with its user
/// and handle.
#[tokio::test]
async fn an_expired_session_emits_session_expired() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let login = only(&mut stream, "login_succeeded");
    app.clock.advance(Duration::from_secs(31 * 60));
    let (status, _) = app.call(false, "/me", Some(&cookie)).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "session_expired");
    app.check(&event, "/me");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert_eq!(event.device, login.device);
    counted.assert(&[("login_succeeded", None, 1), ("session_expired", None, 1)]);
}

/// `revoke_session`: `device_revoked` with the revoked session's handle;
/// an id that is not the user's revokes nothing and says nothing.
#[tokio::test]
async fn revoke_session_emits_device_revoked() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let phone = app.login("alice").await;
    let phone_login = drain(&mut stream).pop().unwrap();
    let laptop = app.login("alice").await;
    let handle = phone_login.device.clone().unwrap();
    drain(&mut stream);
    let (status, _) = app
        .call(true, &format!("/revoke/{handle}"), Some(&laptop))
        .await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "device_revoked");
    app.check(&event, "/revoke/{id}");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert_eq!(event.device.as_deref(), Some(&*handle));
    let (status, _) = app.call(false, "/me", Some(&phone)).await;
    assert_eq!(status, 200);
    drain(&mut stream);
    let (status, _) = app
        .call(true, &format!("/revoke/{handle}"), Some(&laptop))
        .await;
    assert_eq!(status, 200);
    assert!(drain(&mut stream).is_empty());
    counted.assert(&[("login_succeeded", None, 2), ("device_revoked", None, 1)]);
}

/// `password_changed`: one `password_changed` event (not a renewal, not a
/// logout everywhere), with the user and the session's new handle.
#[tokio::test]
async fn password_changed_emits_password_changed() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    drain(&mut stream);
    let (status, _) = app.call(true, "/password", Some(&cookie)).await;
    assert_eq!(status, 200);
    let event = only(&mut stream, "password_changed");
    app.check(&event, "/password");
    assert_eq!(event.user.as_deref(), Some("alice"));
    assert!(event.device.is_some());
    counted.assert(&[("login_succeeded", None, 1), ("password_changed", None, 1)]);
}

/// `RequireFreshLogin` refusals: `reauth_required` with `login-not-fresh`
/// for an old login, `login-required` for no login.
#[tokio::test]
async fn fresh_login_refusals_emit_reauth_required() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    drain(&mut stream);
    let (status, _) = app.call(false, "/fresh", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(drain(&mut stream).is_empty());
    app.clock.advance(Duration::from_secs(61));
    let (status, _) = app.call(false, "/fresh", Some(&cookie)).await;
    assert_eq!(status, 401);
    let event = only(&mut stream, "reauth_required");
    app.check(&event, "/fresh");
    assert_eq!(event.kind.reason(), Some("login-not-fresh"));
    assert_eq!(event.user.as_deref(), Some("alice"));

    let (status, _) = app.call(false, "/fresh", None).await;
    assert_eq!(status, 401);
    let event = only(&mut stream, "reauth_required");
    app.check(&event, "/fresh");
    assert_eq!(event.kind.reason(), Some("login-required"));
    assert_eq!(event.user, None);
    counted.assert(&[
        ("login_succeeded", None, 1),
        ("reauth_required", Some("login-not-fresh"), 1),
        ("reauth_required", Some("login-required"), 1),
        ("reauth_required", None, 2),
    ]);
}

/// A store failure that becomes a 503: `store_unavailable` with the store
/// role `session` and the operation, when loading and when the commit
/// writes.
#[tokio::test]
async fn store_failures_emit_store_unavailable() {
    let (app, mut stream, mut counted) = app(SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    drain(&mut stream);

    let (status, _) = app.call(true, "/write-then-fail", Some(&cookie)).await;
    assert_eq!(status, 503);
    let event = only(&mut stream, "store_unavailable");
    app.check(&event, "/write-then-fail");
    assert_eq!(
        event.kind,
        AuthEventKind::StoreUnavailable {
            store: "session",
            operation: "update"
        }
    );

    let (status, _) = app.call(false, "/me", Some(&cookie)).await;
    assert_eq!(status, 503);
    let event = only(&mut stream, "store_unavailable");
    app.check(&event, "/me");
    assert_eq!(
        event.kind,
        AuthEventKind::StoreUnavailable {
            store: "session",
            operation: "load"
        }
    );
    app.outage.store(false, Ordering::SeqCst);
    counted.assert(&[("login_succeeded", None, 1), ("store_unavailable", None, 2)]);
    let store_unavailable = |operation: &str| {
        let metric = event_metric("store_unavailable").unwrap().metric;
        counted
            .metrics
            .counter(metric, &[(STORE, "session"), (OPERATION, operation)])
    };
    assert_eq!(store_unavailable("update"), 1);
    assert_eq!(store_unavailable("load"), 1);
}

/// A layer given `Events::default()` emits nothing while nothing listens,
/// and reads no context: a request that arrived before the subscription
/// emits its login afterwards without route, client or trace id.
#[tokio::test]
async fn without_listeners_nothing_is_emitted_and_no_context_is_read() {
    // The secret scan's tap listens to every handle: keep it out of this
    // process, or something would listen.
    portcullis_tests::secret_scan::without_tap();
    let events = Events::builder().client_ip(peer_ip).route(route).build();
    let app = start(events.clone(), SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let (status, _) = app.call(true, "/logout", Some(&cookie)).await;
    assert_eq!(status, 200);

    let gated = tokio::spawn({
        let url = app.server.url("/gated-login/bob");
        async move {
            client()
                .post(url)
                .header("traceparent", traceparent())
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // In its handler: the layer has seen the request while nothing
    // listened.
    app.arrived.notified().await;
    assert!(!events.enabled());
    let mut stream = events.subscribe("late", 64);
    app.gate.notify_one();
    assert_eq!(gated.await.unwrap(), 200);
    // Nothing from the requests before the subscription; the gated login,
    // without the context nobody read.
    let login = only(&mut stream, "login_succeeded");
    assert_eq!(login.user.as_deref(), Some("bob"));
    assert_eq!(login.route, None, "{login:?}");
    assert_eq!(login.client, None, "{login:?}");
    assert_eq!(login.trace_id, None, "{login:?}");

    // From now on, everything.
    let cookie = app.login("carol").await;
    app.check(&only(&mut stream, "login_succeeded"), "/login/{user}");
    let (status, _) = app.call(true, "/logout", Some(&cookie)).await;
    assert_eq!(status, 200);
    app.check(&only(&mut stream, "logout"), "/logout");
}

/// One decision: layer, what it decided, the reason code.
type Decided = (&'static str, Decision, Option<&'static str>);

/// The layer's decisions, as a recorder sees them.
#[derive(Debug, Default, Clone)]
struct Decisions(Arc<std::sync::Mutex<Vec<Decided>>>);

impl Recorder for Decisions {
    fn decision(
        &self,
        layer: &'static str,
        decision: Decision,
        reason: Option<&'static str>,
        _: Duration,
    ) {
        self.0.lock().unwrap().push((layer, decision, reason));
    }
}

/// The decision on the presented session: success when one was loaded,
/// none without a session id, failure with a reason code otherwise.
#[tokio::test]
async fn decisions_say_what_the_request_presented() {
    let decisions = Decisions::default();
    let metrics = Metrics::new();
    let events = events(&metrics).recorder(decisions.clone()).build();
    let mut counted = Counted::new(metrics, &events);
    let app = start(events, SessionConfig::default()).await;
    let cookie = app.login("alice").await;
    let unknown = OpaqueToken::generate().unwrap().to_encoded();
    let take = || std::mem::take(&mut *decisions.0.lock().unwrap());
    take();
    let cases: [(Option<&str>, Decision, Option<&str>, u16); 4] = [
        (None, Decision::None, None, 200),
        (Some(&cookie), Decision::Success, None, 200),
        (
            Some("not-a-session-id"),
            Decision::Failure,
            Some("session-malformed"),
            200,
        ),
        (
            Some(&unknown),
            Decision::Failure,
            Some("session-unknown"),
            200,
        ),
    ];
    for (cookie, decision, reason, status) in cases {
        let (got, _) = app.call(false, "/me", cookie).await;
        assert_eq!(got, status);
        assert_eq!(take(), [("session", decision, reason)], "{cookie:?}");
    }
    app.outage.store(true, Ordering::SeqCst);
    let (got, _) = app.call(false, "/me", Some(&cookie)).await;
    assert_eq!(got, 503);
    assert_eq!(
        take(),
        [(
            "session",
            Decision::Failure,
            Some("session-store-unavailable")
        )]
    );
    app.outage.store(false, Ordering::SeqCst);
    app.clock.advance(Duration::from_secs(31 * 60));
    let (got, _) = app.call(false, "/me", Some(&cookie)).await;
    assert_eq!(got, 200);
    assert_eq!(
        take(),
        [("session", Decision::Failure, Some("session-expired"))]
    );
    counted.assert(&[
        ("login_succeeded", None, 1),
        ("store_unavailable", None, 1),
        ("session_expired", None, 1),
    ]);
}
