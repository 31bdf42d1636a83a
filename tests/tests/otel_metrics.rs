//! OpenTelemetry metrics of the auth events (`portcullis::otel::OtelRecorder`),
//! through real servers: a session app and a JWT app sharing one `Events`
//! handle whose recorder exports to memory (`portcullis_tests::otel`).
//! Counters by kind and reason, the layers' decision-time histogram with
//! its fine buckets, the store-call histogram through `StoreEvents`, the
//! dropped-events counter and a store gauge, and no high-cardinality
//! attribute anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::StatusCode;
use portcullis::core::store::FaultSwitch;
use portcullis::events::{Events, StoreEvents, matched_path};
use portcullis::jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
use portcullis::otel::{
    DECISION_BUCKETS, DECISION_DURATION, ERROR_TYPE, EVENTS_DROPPED, EVENTS_HANDLE, Gauge, LAYER,
    OPERATION, RESULT, SOURCE, STORE, STORE_BUCKETS, STORE_DURATION,
};
use portcullis::session::store::InstrumentedStore;
use portcullis::session::{MemoryStore, SessionConfig};
use portcullis_tests::jwt_app::{self, AUD, HS_SECRET, ISS};
use portcullis_tests::otel::Metrics;
use portcullis_tests::{TestServer, client, cookie_value, session_app};

/// The session app and the JWT app on real sockets, on one recorder.
struct Stack {
    metrics: Metrics,
    events: Events,
    sessions: TestServer,
    api: TestServer,
    issuer: JwtIssuer,
    /// The session store's records (live or not yet purged).
    store: MemoryStore,
    /// Makes every session-store call fail while on.
    outage: Arc<AtomicBool>,
    http: reqwest::Client,
}

async fn stack() -> Stack {
    let metrics = Metrics::new();
    let events = metrics.events().route(matched_path).build();
    metrics.recorder().watch_events("stack", &events);

    let store = MemoryStore::new();
    let switch = FaultSwitch::new();
    let outage = switch.shared();
    let timed = InstrumentedStore::with_observer(
        store.clone(),
        (switch, StoreEvents::new("memory", events.clone())),
    );
    let config = SessionConfig::default()
        .insecure_dev_cookies()
        .events(events.clone());
    let sessions = TestServer::start(session_app::router(Arc::new(timed), config)).await;

    let key = SigningKey::hmac("k1", Algorithm::HS256, HS_SECRET).unwrap();
    let issuer = JwtIssuer::builder(key)
        .issuer(ISS)
        .audience(AUD)
        .events(events.clone())
        .build()
        .unwrap();
    let layer = JwtLayer::builder_for(&issuer)
        .events(events.clone())
        .build()
        .unwrap();
    let api = TestServer::start(jwt_app::app(layer, Arc::new(AtomicUsize::new(0)))).await;
    Stack {
        metrics,
        events,
        sessions,
        api,
        issuer,
        store,
        outage,
        http: client(),
    }
}

impl Stack {
    /// Logs `user` in; the session cookie.
    async fn login(&self, user: &str) -> String {
        let resp = self
            .http
            .post(self.sessions.url(&format!("/login/{user}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        cookie_value(&resp, "session").unwrap()
    }

    async fn post(&self, path: &str, cookie: &str) -> StatusCode {
        self.http
            .post(self.sessions.url(path))
            .header("cookie", format!("session={cookie}"))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn get(&self, path: &str, cookie: &str) -> StatusCode {
        self.http
            .get(self.sessions.url(path))
            .header("cookie", format!("session={cookie}"))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn api_me(&self, token: &str) -> StatusCode {
        self.http
            .get(self.api.url("/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    fn token(&self, user: &str) -> String {
        self.issuer.token(user).mint().unwrap().token
    }

    /// A token for `user` that expired long ago, signed with the right key.
    fn expired_token(&self, user: &str) -> String {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        jwt_app::forge(
            &jwt_app::header("HS256", Some("k1")).to_string(),
            &jwt_app::payload(user, now - 10_000).to_string(),
            Algorithm::HS256,
            HS_SECRET,
        )
    }
}

/// The attribute keys a metric point may carry: nothing that names a
/// user, a device, a route, a client or a key.
const ALLOWED_KEYS: &[&str] = &[
    SOURCE,
    ERROR_TYPE,
    LAYER,
    RESULT,
    STORE,
    OPERATION,
    EVENTS_HANDLE,
    "portcullis.sign_out.scope",
    "portcullis.identity.sign_in.result",
    "portcullis.revocation.view.state",
    "portcullis.jwt.key.change",
];

#[tokio::test]
async fn every_event_is_counted_by_kind_and_reason_with_low_cardinality_attributes() {
    let s = stack().await;
    let alice = s.login("alice").await;
    let bob = s.login("bob").await;
    assert_eq!(s.post("/logout", &alice).await, StatusCode::OK);
    assert_eq!(s.post("/logout-everywhere", &bob).await, StatusCode::OK);

    assert_eq!(s.api_me("nonsense").await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.api_me("still.not.jwt").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.api_me(&s.expired_token("carol")).await,
        StatusCode::UNAUTHORIZED
    );
    let token = s.token("dave");
    assert_eq!(s.api_me(&token).await, StatusCode::OK);

    let m = &s.metrics;
    assert_eq!(m.event_count("login_succeeded", None), 2);
    assert_eq!(
        m.counter("portcullis.authentication.sign_ins", &[(SOURCE, "session")]),
        2
    );
    assert_eq!(m.event_count("logout", None), 1);
    assert_eq!(m.event_count("logout_everywhere", None), 1);
    // Both logouts are sign-outs; the scope tells them apart.
    assert_eq!(m.counter("portcullis.authentication.sign_outs", &[]), 2);
    assert_eq!(m.event_count("jwt_refused", None), 3);
    assert_eq!(m.event_count("jwt_refused", Some("malformed")), 2);
    assert_eq!(m.event_count("jwt_refused", Some("expired")), 1);
    assert_eq!(m.event_count("csrf_refused", None), 0);

    // No point of any metric carries a user, a route, a token or a client.
    let export = m.export();
    assert!(!export.is_empty());
    for (name, points) in &export {
        for point in points {
            for (key, value) in &point.attributes {
                assert!(
                    ALLOWED_KEYS.contains(&key.as_str()),
                    "{name} carries {key}={value}"
                );
                for secret in [
                    "alice",
                    "bob",
                    "carol",
                    "dave",
                    "/login/{user}",
                    "127.0.0.1",
                ] {
                    assert!(!value.contains(secret), "{name}: {key}={value}");
                }
                for secret in [&alice, &bob, &token] {
                    assert!(!value.contains(secret.as_str()), "{name}: {key}");
                }
            }
        }
    }
}

#[tokio::test]
async fn layer_decisions_land_in_a_seconds_histogram_with_microsecond_buckets() {
    let s = stack().await;
    let token = s.token("alice");
    for _ in 0..3 {
        assert_eq!(s.api_me(&token).await, StatusCode::OK);
    }
    assert_eq!(s.api_me("nonsense").await, StatusCode::UNAUTHORIZED);
    let cookie = s.login("bob").await;
    assert_eq!(s.get("/me", &cookie).await, StatusCode::OK);

    let m = &s.metrics;
    let jwt_ok = [(LAYER, "jwt"), (RESULT, "success")];
    assert_eq!(m.histogram_count(DECISION_DURATION, &jwt_ok), 3);
    let refused = m.points(DECISION_DURATION, &[(LAYER, "jwt"), (RESULT, "failure")]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].attr(ERROR_TYPE), Some("malformed"));
    assert_eq!(refused[0].value, 1.0);
    // Successes carry no error.type.
    for p in m.points(DECISION_DURATION, &[(RESULT, "success")]) {
        assert_eq!(p.attr(ERROR_TYPE), None, "{p:?}");
    }
    // The session layer's own decisions are there too.
    assert!(m.histogram_count(DECISION_DURATION, &[(LAYER, "session")]) >= 2);

    // The export uses the advised boundaries (1 µs .. 0.1 s), not the SDK's
    // millisecond-shaped defaults, and every recorded value is in a bucket.
    assert_eq!(
        m.histogram_bounds(DECISION_DURATION).unwrap(),
        DECISION_BUCKETS.to_vec()
    );
    assert_eq!(DECISION_BUCKETS[0], 0.000_001);
    assert_eq!(DECISION_BUCKETS[DECISION_BUCKETS.len() - 1], 0.1);
    for p in m.points(DECISION_DURATION, &[]) {
        assert_eq!(p.bounds, DECISION_BUCKETS.to_vec());
        assert_eq!(p.buckets.len(), DECISION_BUCKETS.len() + 1);
        #[allow(clippy::cast_precision_loss)]
        let total = p.buckets.iter().sum::<u64>() as f64;
        assert_eq!(total, p.value);
    }
}

#[tokio::test]
async fn store_calls_are_timed_by_store_operation_and_error_kind() {
    let s = stack().await;
    let cookie = s.login("alice").await;
    assert_eq!(s.get("/me", &cookie).await, StatusCode::OK);

    let m = &s.metrics;
    let create = [(STORE, "memory"), (OPERATION, "create")];
    assert_eq!(m.histogram_count(STORE_DURATION, &create), 1);
    assert!(m.histogram_count(STORE_DURATION, &[(STORE, "memory"), (OPERATION, "load")]) >= 1);
    assert_eq!(
        m.histogram_bounds(STORE_DURATION).unwrap(),
        STORE_BUCKETS.to_vec()
    );
    assert!(
        m.points(STORE_DURATION, &[])
            .iter()
            .all(|p| p.attr(ERROR_TYPE).is_none())
    );

    // The store goes down: the failed calls are timed with their error
    // kind, and the layer's 503 is counted as store_unavailable.
    s.outage.store(true, Ordering::SeqCst);
    assert_eq!(s.get("/me", &cookie).await, StatusCode::SERVICE_UNAVAILABLE);
    s.outage.store(false, Ordering::SeqCst);
    let failed = m.points(STORE_DURATION, &[(ERROR_TYPE, "backend")]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].attr(OPERATION), Some("load"));
    assert_eq!(m.event_count("store_unavailable", None), 1);
    assert_eq!(
        m.counter(
            "portcullis.store.unavailable",
            &[(SOURCE, "session"), (STORE, "session"), (OPERATION, "load")]
        ),
        1
    );
}

#[tokio::test]
async fn dropped_events_and_live_sessions_are_observed() {
    let s = stack().await;
    let store = s.store.clone();
    s.metrics
        .recorder()
        .watch_gauge(Gauge::Sessions, "memory", move || store.len() as u64);
    // A subscriber that never reads, with room for one event.
    let _stuck = s.events.subscribe("stuck", 1);

    let alice = s.login("alice").await;
    s.login("bob").await;
    assert_eq!(s.api_me("nonsense").await, StatusCode::UNAUTHORIZED);

    let m = &s.metrics;
    // Three events (two logins, one refusal): the first fit, two dropped.
    assert_eq!(s.events.dropped(), 2);
    assert_eq!(
        m.gauge(EVENTS_DROPPED, &[(EVENTS_HANDLE, "stack")]),
        Some(2.0)
    );
    let active = Gauge::Sessions.name();
    assert_eq!(m.gauge(active, &[(STORE, "memory")]), Some(2.0));
    // The gauge is read at each collection: it follows the store.
    assert_eq!(s.post("/logout", &alice).await, StatusCode::OK);
    assert_eq!(m.gauge(active, &[(STORE, "memory")]), Some(1.0));
    assert_eq!(
        m.gauge(EVENTS_DROPPED, &[(EVENTS_HANDLE, "stack")]),
        Some(3.0)
    );
}
