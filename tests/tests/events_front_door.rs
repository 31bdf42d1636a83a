//! The login throttle's events through a real axum server on a real
//! socket: `throttled` (with the request's route, client and trace id),
//! `login_failed` with and without the handler's reason and user id (and
//! for a 401 without a marker), no `login_succeeded` from the throttle,
//! `store_unavailable` for each throttle-store operation on a real
//! redis-server that the test kills (before the handler, and from inside
//! the handler so that the write after it fails), the layer's decisions as
//! a recorder sees them, and its `portcullis.throttle` span; behind a
//! trusted proxy, the client the throttle counted on its events and on the
//! session's login and device. No event carries the account name that was
//! typed, nor the password.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Form, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{Extensions, HeaderMap, StatusCode};
use portcullis_core::events::{
    AuthEvent, AuthEventKind, Decision, EventStream, Events, EventsBuilder, Recorder,
};
use portcullis_redis::{RedisConfig, RedisThrottleStore};
use portcullis_tests::otel::Metrics;
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{TestServer, client};
use portcullis_throttle::{
    Backoff, LoginFailure, LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig,
    ThrottleScope, ThrottleStore,
};
use serde::Deserialize;

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "Tr0ub4dor&3-wrong-guess";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// What users type in the account field: none of it may reach an event.
const TYPED: [&str; 5] = [
    "Alice.Typed@Example.test",
    "nobody-typed-7f3a",
    "locked-typed-91c2",
    "marker-typed-55d0",
    "kill-typed-0e4b",
];

fn route(e: &Extensions) -> Option<Arc<str>> {
    e.get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().into())
}

fn peer(e: &Extensions, _: &HeaderMap) -> Option<IpAddr> {
    e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn traceparent() -> String {
    format!("00-{TRACE}-00f067aa0ba902b7-01")
}

/// The events of a test app: counted as OpenTelemetry metrics, with the
/// route and the peer address.
fn events(metrics: &Metrics) -> EventsBuilder {
    metrics.events().route(route).client_ip(peer)
}

#[derive(Deserialize)]
struct Creds {
    username: String,
    password: String,
}

/// The test's handle on the Redis the throttle store uses: the handler
/// kills it when told to (so that the store call after the handler fails).
#[derive(Clone, Default)]
struct App {
    redis: Option<Arc<Mutex<RedisServer>>>,
    kill_in_handler: Arc<AtomicBool>,
}

/// The login handler. Accounts are resolved by the typed name (normalised
/// as the throttle does) to a user id the application owns:
/// `alice.typed@example.test` is `user-1` with the right password, and
/// answers a wrong password with a `LoginFailure` naming `user-1`;
/// `locked-typed-91c2` is `user-2`, locked (`account_locked`, 403);
/// `marker-typed-55d0` gets a bare `LoginOutcome::Failed`; anyone else a
/// 401 without any marker.
async fn login(State(app): State<App>, Form(c): Form<Creds>) -> Response {
    if app.kill_in_handler.swap(false, Ordering::SeqCst) {
        let redis = app.redis.clone().unwrap();
        tokio::task::block_in_place(|| redis.lock().unwrap().kill());
    }
    match (
        c.username.trim().to_lowercase().as_str(),
        c.password.as_str(),
    ) {
        ("alice.typed@example.test", PASSWORD) => {
            (StatusCode::NO_CONTENT, LoginOutcome::Succeeded).into_response()
        }
        ("alice.typed@example.test" | "kill-typed-0e4b", _) => (
            StatusCode::UNAUTHORIZED,
            LoginFailure::invalid_credentials().user("user-1"),
        )
            .into_response(),
        ("locked-typed-91c2", _) => (
            StatusCode::FORBIDDEN,
            LoginOutcome::failed_because("account_locked").user("user-2"),
        )
            .into_response(),
        ("marker-typed-55d0", _) => (StatusCode::OK, LoginOutcome::Failed).into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn serve(
    store: Arc<dyn ThrottleStore>,
    config: portcullis_throttle::ThrottleConfigBuilder,
    events: &Events,
    app: App,
) -> TestServer {
    let config = config.events(events.clone()).build().unwrap();
    let throttle = LoginThrottleLayer::from_arc(store, config);
    TestServer::start(
        Router::new()
            .route("/login", post(login).get(|| async { "the form" }))
            .route_layer(throttle)
            .with_state(app),
    )
    .await
}

async fn post_login(server: &TestServer, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(server.url("/login"))
        .header("traceparent", traceparent())
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn next(stream: &mut EventStream) -> Arc<AuthEvent> {
    tokio::time::timeout(Duration::from_secs(5), stream.recv())
        .await
        .expect("an event within 5 s")
        .expect("the bus is alive")
}

/// The request's context is on the event, and nothing the user typed.
fn check(event: &AuthEvent) {
    assert_eq!(event.source, "throttle");
    assert_eq!(event.route.as_deref(), Some("/login"));
    assert_eq!(event.client, Some(IpAddr::from([127, 0, 0, 1])));
    assert_eq!(
        event.trace_id.map(|t| t.to_string()).as_deref(),
        Some(TRACE)
    );
    let shown = format!("{event:?} {}", event.to_json());
    for secret in TYPED.iter().chain(&[PASSWORD, WRONG]) {
        assert!(
            !shown.to_lowercase().contains(&secret.to_lowercase()),
            "{secret:?} in {shown}"
        );
    }
    assert!(
        !shown.contains("alice"),
        "no form of the typed name: {shown}"
    );
}

/// Each failure is one `login_failed`: with the handler's reason and user
/// id, `invalid_credentials` for a bare marker and for a 401 without one,
/// never the typed name; a success emits nothing here (the session or
/// refresh login emits `login_succeeded`).
#[tokio::test]
async fn login_failed_carries_the_handlers_reason_and_user_never_the_typed_name() {
    let metrics = Metrics::new();
    let events = events(&metrics).build();
    let mut stream = events.subscribe("t", 64);
    let server = serve(
        Arc::new(MemoryThrottleStore::new()),
        ThrottleConfig::builder(),
        &events,
        App::default(),
    )
    .await;

    let cases: [(&str, u16, &str, Option<&str>); 4] = [
        (TYPED[0], 401, "invalid_credentials", Some("user-1")),
        (TYPED[1], 401, "invalid_credentials", None),
        (TYPED[2], 403, "account_locked", Some("user-2")),
        (TYPED[3], 200, "invalid_credentials", None),
    ];
    for (typed, status, reason, user) in cases {
        let r = post_login(&server, typed, WRONG).await;
        assert_eq!(r.status().as_u16(), status, "{typed}");
        let event = next(&mut stream).await;
        assert_eq!(event.kind, AuthEventKind::LoginFailed { reason }, "{typed}");
        assert_eq!(event.kind.reason(), Some(reason));
        assert_eq!(event.user.as_deref(), user, "{typed}");
        check(&event);
    }

    // A success, then a failure: the failure is the next event, so the
    // success emitted none.
    let r = post_login(&server, TYPED[0], PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A page load is not an attempt: nothing either.
    let r = client().get(server.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    post_login(&server, TYPED[1], WRONG).await;
    let event = next(&mut stream).await;
    assert_eq!(event.kind.name(), "login_failed");
    assert_eq!(event.user, None);
    assert!(stream.try_recv().is_none());
    assert_eq!(
        metrics.event_count("login_failed", Some("invalid_credentials")),
        4
    );
    assert_eq!(
        metrics.event_count("login_failed", Some("account_locked")),
        1
    );
    assert_eq!(metrics.event_count("login_succeeded", None), 0);
}

/// A blocked counter answers 429 and emits `throttled` with the
/// `Retry-After` the client was told and the request's context, and the
/// handler does not run.
#[tokio::test]
async fn throttled_carries_retry_after_and_the_context() {
    let metrics = Metrics::new();
    let events = events(&metrics).build();
    let mut stream = events.subscribe("t", 64);
    let strict = Backoff {
        free_failures: 2,
        base: Duration::from_secs(60),
        cap: Duration::from_secs(60),
        forget_after: Duration::from_secs(3600),
    };
    let server = serve(
        Arc::new(MemoryThrottleStore::new()),
        ThrottleConfig::builder().backoff(ThrottleScope::AccountAtAddress, strict),
        &events,
        App::default(),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            post_login(&server, TYPED[0], WRONG).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(next(&mut stream).await.kind.name(), "login_failed");
    }
    let r = post_login(&server, TYPED[0], PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let told: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let event = next(&mut stream).await;
    assert_eq!(
        event.kind,
        AuthEventKind::Throttled {
            retry_after: Duration::from_secs(told)
        }
    );
    assert!((59..=60).contains(&told), "{told}");
    assert_eq!(event.user, None, "the throttle knows no user id");
    assert_eq!(event.to_json()["retry_after_s"], told);
    check(&event);
    assert!(stream.try_recv().is_none(), "the handler did not run");
    assert_eq!(metrics.event_count("throttled", None), 1);
    assert_eq!(metrics.event_count("login_failed", None), 2);
}

/// The throttle store's Redis dies: each store operation that fails is one
/// `store_unavailable` (store `throttle`) and a 503: `check` before the
/// handler, `record` after a failure the handler reported (the handler
/// kills Redis first), `reset` after a success that had failures to
/// forget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_unavailable_names_the_throttle_operation_that_failed() {
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let url = redis.lock().unwrap().url();
    let store = RedisThrottleStore::new(
        RedisConfig::new(url)
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    );
    let metrics = Metrics::new();
    let events = events(&metrics).build();
    let mut stream = events.subscribe("t", 64);
    let app = App {
        redis: Some(Arc::clone(&redis)),
        kill_in_handler: Arc::default(),
    };
    let server = serve(
        Arc::new(store),
        ThrottleConfig::builder(),
        &events,
        app.clone(),
    )
    .await;
    let unavailable = |operation| AuthEventKind::StoreUnavailable {
        store: "throttle",
        operation,
    };

    // record: the check passed, the handler failed the attempt and killed
    // Redis, the failure cannot be written.
    app.kill_in_handler.store(true, Ordering::SeqCst);
    let r = post_login(&server, TYPED[4], WRONG).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let event = next(&mut stream).await;
    assert_eq!(
        event.kind.name(),
        "login_failed",
        "the handler's word first"
    );
    assert_eq!(event.user.as_deref(), Some("user-1"));
    let event = next(&mut stream).await;
    assert_eq!(event.kind, unavailable("record"));
    assert_eq!(event.to_json()["store"], "throttle");
    check(&event);

    // check: Redis is down before the handler.
    let r = post_login(&server, TYPED[0], PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let event = next(&mut stream).await;
    assert_eq!(event.kind, unavailable("check"));
    check(&event);

    // reset: back up (empty), one failure on the account, then the right
    // password while the handler kills Redis.
    tokio::task::block_in_place(|| redis.lock().unwrap().restart());
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    let mut checks = 1;
    for _ in 0..100 {
        status = post_login(&server, TYPED[0], WRONG).await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(next(&mut stream).await.kind, unavailable("check"));
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED, "Redis is back");
    assert_eq!(next(&mut stream).await.kind.name(), "login_failed");
    app.kill_in_handler.store(true, Ordering::SeqCst);
    let r = post_login(&server, TYPED[0], PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let event = next(&mut stream).await;
    assert_eq!(event.kind, unavailable("reset"));
    check(&event);
    assert!(stream.try_recv().is_none());
    assert_eq!(metrics.event_count("store_unavailable", None), checks + 2);
    assert_eq!(metrics.event_count("login_failed", None), 2);
}

/// Decisions as a recorder sees them (every one timed): `none` for a page
/// load, `success` for an attempt let through, `failure` with reason
/// `throttled` for a 429.
#[tokio::test]
async fn decisions_none_success_and_failure() {
    type Seen = Vec<(&'static str, Decision, Option<&'static str>)>;
    #[derive(Debug, Default, Clone)]
    struct Decisions(Arc<Mutex<Seen>>);
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
    let seen = Decisions::default();
    let metrics = Metrics::new();
    let events = events(&metrics).recorder(seen.clone()).build();
    let strict = Backoff {
        free_failures: 1,
        base: Duration::from_secs(60),
        cap: Duration::from_secs(60),
        forget_after: Duration::from_secs(3600),
    };
    let server = serve(
        Arc::new(MemoryThrottleStore::new()),
        ThrottleConfig::builder().backoff(ThrottleScope::AccountAtAddress, strict),
        &events,
        App::default(),
    )
    .await;
    client().get(server.url("/login")).send().await.unwrap();
    post_login(&server, TYPED[1], WRONG).await;
    let r = post_login(&server, TYPED[1], WRONG).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![
            ("throttle", Decision::None, None),
            ("throttle", Decision::Success, None),
            ("throttle", Decision::Failure, Some("throttled")),
        ]
    );
}

/// The layer's span: `portcullis.throttle`, `otel.kind` internal, the
/// route, and the decision with its reason, recorded as it decides.
#[tokio::test]
async fn the_span_records_route_decision_and_reason() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let spans = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(SpanFields(Arc::clone(&spans)));
    let _guard = tracing::subscriber::set_default(subscriber);

    let metrics = Metrics::new();
    let events = events(&metrics).build();
    let _stream = events.subscribe("t", 64);
    let strict = Backoff {
        free_failures: 1,
        base: Duration::from_secs(60),
        cap: Duration::from_secs(60),
        forget_after: Duration::from_secs(3600),
    };
    let server = serve(
        Arc::new(MemoryThrottleStore::new()),
        ThrottleConfig::builder().backoff(ThrottleScope::AccountAtAddress, strict),
        &events,
        App::default(),
    )
    .await;
    post_login(&server, TYPED[1], WRONG).await;
    post_login(&server, TYPED[1], WRONG).await;
    let spans = spans.lock().unwrap().clone();
    let throttle: Vec<_> = spans
        .iter()
        .filter(|(name, _)| name == "portcullis.throttle")
        .map(|(_, fields)| fields.clone())
        .collect();
    assert_eq!(throttle.len(), 2, "one span per request: {spans:?}");
    for fields in &throttle {
        assert!(fields.contains(&("otel.kind".into(), "internal".into())));
        assert!(fields.contains(&("http.route".into(), "/login".into())));
        let shown = format!("{fields:?}");
        assert!(
            !shown.contains(TYPED[1]) && !shown.contains(WRONG),
            "{shown}"
        );
    }
    assert!(throttle[0].contains(&("portcullis.decision".into(), "success".into())));
    assert!(!throttle[0].iter().any(|(k, _)| k == "error.type"));
    assert!(throttle[1].contains(&("portcullis.decision".into(), "failure".into())));
    assert!(throttle[1].contains(&("error.type".into(), "throttled".into())));
}

type Fields = Vec<(String, String)>;

/// Records every span's name and fields (at creation and later records),
/// in creation order.
struct SpanFields(Arc<Mutex<Vec<(String, Fields)>>>);

struct Visit<'a>(&'a mut Fields);

impl tracing::field::Visit for Visit<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().into(), value.into()));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().into(), format!("{value:?}")));
    }
}

/// The index of a span in the list, kept in its extensions.
struct Index(usize);

impl<S> tracing_subscriber::Layer<S> for SpanFields
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Vec::new();
        attrs.record(&mut Visit(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name().into(), fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(spans.len() - 1));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let Some(&Index(i)) = span.extensions().get::<Index>() else {
            return;
        };
        let mut spans = self.0.lock().unwrap();
        values.record(&mut Visit(&mut spans[i].1));
    }
}

/// Behind a proxy the throttle trusts (`X-Forwarded-For`), with the
/// session layer outside the throttle and `portcullis_throttle::client_ip`
/// as the events' and the session's client address: the throttle's
/// `login_failed`, the session's `login_succeeded` and the new device all
/// name the client the throttle counted, never the proxy.
#[tokio::test]
async fn behind_a_trusted_proxy_every_login_event_and_the_device_name_the_client() {
    use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
    use portcullis_throttle::ClientAddress;

    async fn login(session: Session, Form(c): Form<Creds>) -> Response {
        if c.password != PASSWORD {
            return (StatusCode::UNAUTHORIZED, LoginOutcome::Failed).into_response();
        }
        session.login("user-1").await.unwrap();
        let ips: Vec<String> = session
            .active_sessions()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|s| s.ip)
            .collect();
        (LoginOutcome::Succeeded, ips.join(",")).into_response()
    }
    let metrics = Metrics::new();
    let events = metrics
        .events()
        .route(route)
        .client_ip(portcullis_throttle::client_ip)
        .build();
    let mut stream = events.subscribe("t", 64);
    let throttle = LoginThrottleLayer::new(
        MemoryThrottleStore::new(),
        ThrottleConfig::builder()
            .no_account()
            .client_address(ClientAddress::peer().trust_proxy("127.0.0.1").unwrap())
            .events(events.clone())
            .build()
            .unwrap(),
    );
    let sessions = SessionLayer::new(
        MemoryStore::new(),
        SessionConfig::default()
            .insecure_dev_cookies()
            .client_ip(portcullis_throttle::client_ip)
            .events(events.clone()),
    )
    .unwrap();
    let server = TestServer::start(
        Router::new()
            .route("/login", post(login))
            .route_layer(throttle)
            .layer(sessions),
    )
    .await;
    let client_ip: IpAddr = "203.0.113.9".parse().unwrap();
    let attempt = |password: &'static str| {
        client()
            .post(server.url("/login"))
            .header("traceparent", traceparent())
            .header("x-forwarded-for", "203.0.113.9")
            .form(&[("username", "someone"), ("password", password)])
            .send()
    };

    assert_eq!(attempt(WRONG).await.unwrap().status(), 401);
    let failed = next(&mut stream).await;
    assert_eq!(failed.kind.name(), "login_failed", "{failed:?}");
    assert_eq!(failed.client, Some(client_ip), "{failed:?}");

    let resp = attempt(PASSWORD).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "203.0.113.9", "the device");
    let succeeded = next(&mut stream).await;
    assert_eq!(
        succeeded.kind,
        AuthEventKind::LoginSucceeded,
        "{succeeded:?}"
    );
    assert_eq!(succeeded.source, "session", "{succeeded:?}");
    assert_eq!(succeeded.client, Some(client_ip), "{succeeded:?}");
    assert_eq!(succeeded.route.as_deref(), Some("/login"), "{succeeded:?}");
    assert_eq!(
        succeeded.trace_id.map(|t| t.to_string()).as_deref(),
        Some(TRACE)
    );
    for event in [&failed, &succeeded] {
        let shown = format!("{event:?} {}", event.to_json());
        assert!(
            !shown.contains(PASSWORD) && !shown.contains(WRONG),
            "{shown}"
        );
    }
    assert!(stream.try_recv().is_none());
    assert_eq!(metrics.event_count("login_failed", None), 1);
    assert_eq!(metrics.event_count("login_succeeded", None), 1);
}
