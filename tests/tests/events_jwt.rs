//! The JWT layers and the issuer on the event stream, through a real
//! server: every refusal is one `jwt_refused` (or `reauth_required`) event
//! with its reason, route, client and trace id; a revocation view that
//! cannot answer is also `store_unavailable`; key rotation, retirement and
//! login tokens are events; each decision is timed with what it decided;
//! every event is counted as its OpenTelemetry metric; no event carries a
//! token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http::StatusCode;
use portcullis::core::ManualClock;
use portcullis::core::events::{AuthEvent, AuthEventKind, Decision, Recorder};
use portcullis::jwt::revocation::RevocationView;
use portcullis::jwt::{
    Algorithm, Claims, JwtIssuer, JwtLayer, RequireClaimsLayer, RequireFreshAuthLayer, SigningKey,
};
use portcullis::otel::{OPERATION, STORE};
use portcullis_tests::otel::Metrics;
use portcullis_tests::refresh_app::EventLog;
use portcullis_tests::{TestServer, client};

const ISS: &str = "https://events.test";
const AUD: &str = "api";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One timed decision: layer, decision, reason.
type Decided = (&'static str, Decision, Option<&'static str>);

/// Every timed decision.
#[derive(Debug, Clone, Default)]
struct Decisions(Arc<Mutex<Vec<Decided>>>);

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

impl Decisions {
    fn take(&self) -> Vec<Decided> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct App {
    server: TestServer,
    issuer: JwtIssuer,
    clock: Arc<ManualClock>,
    log: EventLog,
    metrics: Metrics,
    decisions: Decisions,
}

fn hmac(kid: &str, byte: u8) -> SigningKey {
    SigningKey::hmac(kid, Algorithm::HS256, &[byte; 32]).unwrap()
}

async fn start() -> App {
    let clock = Arc::new(ManualClock::starting_now());
    let decisions = Decisions::default();
    let metrics = Metrics::new();
    let events = metrics
        .events()
        .route(portcullis::events::matched_path)
        .client_ip(|ext, _| {
            ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .recorder(decisions.clone())
        .build();
    let log = EventLog::new(&events);
    let issuer = JwtIssuer::builder(hmac("k1", 1))
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .events(events.clone())
        .build()
        .unwrap();
    let strict = JwtLayer::builder_for(&issuer)
        .events(events.clone())
        .build()
        .unwrap();
    let optional = JwtLayer::builder_for(&issuer)
        .optional()
        .events(events.clone())
        .build()
        .unwrap();
    let pending = JwtLayer::builder_for(&issuer)
        .revocation(RevocationView::pending(clock.clone()))
        .events(events.clone())
        .build()
        .unwrap();
    let me = |c: Claims| async move { c.subject().unwrap_or_default().to_owned() };
    let admin_only = Router::new()
        .route("/admin/{id}", get(|| async { "admin" }))
        .route_layer(RequireClaimsLayer::scope("admin").events(events.clone()));
    let sudo = Router::new()
        .route("/sudo", get(|| async { "sudo" }))
        .route_layer(
            RequireFreshAuthLayer::within(Duration::from_secs(600))
                .clock(clock.clone())
                .events(events.clone()),
        );
    let api = Router::new()
        .route("/me/{id}", get(me))
        .merge(admin_only)
        .merge(sudo)
        .layer(strict);
    let open = Router::new()
        .route(
            "/open",
            get(|c: Option<Claims>| async move {
                c.map(|c| c.subject().unwrap_or_default().to_owned())
                    .unwrap_or_default()
            }),
        )
        .layer(optional);
    let guarded = Router::new().route("/pending", get(me)).layer(pending);
    let admin = Router::new()
        .route(
            "/login/{user}",
            post(
                |State(i): State<JwtIssuer>, Path(u): Path<String>| async move {
                    i.login_token(u).mint().unwrap().token
                },
            ),
        )
        .route(
            "/keys/rotate/{kid}",
            post(
                |State(i): State<JwtIssuer>, Path(kid): Path<String>| async move {
                    i.rotate(hmac(&kid, 2)).unwrap();
                },
            ),
        )
        .route(
            "/keys/retire/{kid}",
            post(
                |State(i): State<JwtIssuer>, Path(kid): Path<String>| async move {
                    i.retire(&kid).unwrap().to_string()
                },
            ),
        )
        .with_state(issuer.clone());
    let app = api.merge(open).merge(guarded).merge(admin);
    App {
        server: TestServer::start(app).await,
        issuer,
        clock,
        log,
        metrics,
        decisions,
    }
}

async fn get_with(app: &App, path: &str, token: Option<&str>) -> StatusCode {
    let mut req = client()
        .get(app.server.url(path))
        .header("traceparent", TRACEPARENT);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().status()
}

/// The kind, user, route, client and trace id of `e` are as expected.
fn assert_context(e: &AuthEvent, route: &str, user: Option<&str>) {
    assert_eq!(e.source, "jwt", "{e:?}");
    assert_eq!(e.route.as_deref(), Some(route), "{e:?}");
    assert_eq!(e.user.as_deref(), user, "{e:?}");
    assert_eq!(e.client, Some("127.0.0.1".parse().unwrap()), "{e:?}");
    assert_eq!(e.trace_id.map(|t| t.to_string()).as_deref(), Some(TRACE));
}

/// No event shows any of `secrets`, nor any part of a token among them.
fn assert_no_secret(events: &[Arc<AuthEvent>], secrets: &[&str]) {
    for e in events {
        let shown = format!("{e:?} {}", e.to_json());
        for secret in secrets {
            for part in std::iter::once(*secret).chain(secret.split('.')) {
                assert!(
                    part.len() < 8 || !shown.contains(part),
                    "a secret in an event: {shown}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_refusal_of_the_jwt_layer_is_one_jwt_refused_event_with_its_context() {
    let app = start().await;
    let good = app.issuer.token("alice").mint().unwrap().token;
    let forged = {
        let other = JwtIssuer::builder(hmac("k1", 9))
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        other.token("mallory").mint().unwrap().token
    };
    let old = app.issuer.token("alice").mint().unwrap().token;
    app.clock.advance(Duration::from_secs(3600));
    let fresh = app.issuer.token("alice").mint().unwrap().token;
    app.decisions.take();

    // (token, status, reason of the event; None = no event)
    let cases: [(Option<&str>, StatusCode, Option<&str>); 5] = [
        (None, StatusCode::UNAUTHORIZED, Some("missing")),
        (
            Some(&forged),
            StatusCode::UNAUTHORIZED,
            Some("bad-signature"),
        ),
        (Some(&old), StatusCode::UNAUTHORIZED, Some("expired")),
        (
            Some("not-a-jwt"),
            StatusCode::UNAUTHORIZED,
            Some("malformed"),
        ),
        (Some(&fresh), StatusCode::OK, None),
    ];
    for (token, status, reason) in cases {
        let before = app.log.all().len();
        assert_eq!(get_with(&app, "/me/7", token).await, status, "{reason:?}");
        let new = app.log.all()[before..].to_vec();
        match reason {
            Some(reason) => {
                assert_eq!(new.len(), 1, "{new:?}");
                assert_eq!(new[0].kind, AuthEventKind::JwtRefused { reason });
                assert_eq!(new[0].kind.reason(), Some(reason));
                assert_context(&new[0], "/me/{id}", None);
            }
            None => assert!(new.is_empty(), "an accepted token emits nothing: {new:?}"),
        }
    }
    assert_eq!(
        app.decisions.take(),
        vec![
            ("jwt", Decision::Failure, Some("missing")),
            ("jwt", Decision::Failure, Some("bad-signature")),
            ("jwt", Decision::Failure, Some("expired")),
            ("jwt", Decision::Failure, Some("malformed")),
            ("jwt", Decision::Success, None),
        ]
    );
    app.log.assert_counted(
        &app.metrics,
        &[
            ("jwt_refused", Some("missing"), 1),
            ("jwt_refused", Some("bad-signature"), 1),
            ("jwt_refused", Some("expired"), 1),
            ("jwt_refused", Some("malformed"), 1),
            ("jwt_refused", None, 4),
        ],
    );
    assert_no_secret(&app.log.all(), &[&good, &forged, &old, &fresh]);
}

#[tokio::test]
async fn an_optional_layer_passes_anonymous_requests_as_decision_none_without_an_event() {
    let app = start().await;
    let token = app.issuer.token("alice").mint().unwrap().token;
    app.decisions.take();
    assert_eq!(get_with(&app, "/open", None).await, StatusCode::OK);
    assert_eq!(get_with(&app, "/open", Some(&token)).await, StatusCode::OK);
    assert_eq!(
        get_with(&app, "/open", Some("a.b.c")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.decisions.take(),
        vec![
            ("jwt", Decision::None, None),
            ("jwt", Decision::Success, None),
            ("jwt", Decision::Failure, Some("malformed")),
        ]
    );
    let events = app.log.all();
    assert_eq!(events.len(), 1, "only the refusal: {events:?}");
    assert_eq!(
        events[0].kind,
        AuthEventKind::JwtRefused {
            reason: "malformed"
        }
    );
    assert_context(&events[0], "/open", None);
    app.log
        .assert_counted(&app.metrics, &[("jwt_refused", Some("malformed"), 1)]);
    assert_no_secret(&events, &[&token]);
}

#[tokio::test]
async fn insufficient_scope_is_jwt_refused_with_the_user() {
    let app = start().await;
    let reader = app
        .issuer
        .token("alice")
        .scope("read")
        .mint()
        .unwrap()
        .token;
    let admin = app
        .issuer
        .token("root")
        .scope("admin")
        .mint()
        .unwrap()
        .token;
    assert_eq!(
        get_with(&app, "/admin/1", Some(&reader)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_with(&app, "/admin/1", Some(&admin)).await,
        StatusCode::OK
    );
    let events = app.log.all();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].kind,
        AuthEventKind::JwtRefused {
            reason: "insufficient-scope"
        }
    );
    assert_context(&events[0], "/admin/{id}", Some("alice"));
    let decisions = app.decisions.take();
    assert!(decisions.contains(&(
        "require_claims",
        Decision::Failure,
        Some("insufficient-scope")
    )));
    assert!(decisions.contains(&("require_claims", Decision::Success, None)));
    app.log.assert_counted(
        &app.metrics,
        &[("jwt_refused", Some("insufficient-scope"), 1)],
    );
    assert_no_secret(&events, &[&reader, &admin]);
}

#[tokio::test]
async fn a_login_too_old_for_the_route_is_reauth_required_with_the_user() {
    let app = start().await;
    let stale = app.issuer.login_token("alice").mint().unwrap().token;
    app.clock.advance(Duration::from_secs(601));
    let fresh = app.issuer.login_token("alice").mint().unwrap().token;
    let before = app.log.all().len();
    assert_eq!(
        get_with(&app, "/sudo", Some(&stale)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_with(&app, "/sudo", Some(&fresh)).await, StatusCode::OK);
    let events = app.log.all()[before..].to_vec();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].kind,
        AuthEventKind::ReauthRequired {
            reason: "insufficient-user-authentication"
        }
    );
    assert_context(&events[0], "/sudo", Some("alice"));
    // Both login tokens are logins of the issuer.
    app.log.assert_counted(
        &app.metrics,
        &[
            ("login_succeeded", None, 2),
            (
                "reauth_required",
                Some("insufficient-user-authentication"),
                1,
            ),
        ],
    );
    assert_no_secret(&app.log.all(), &[&stale, &fresh]);
}

#[tokio::test]
async fn a_revocation_view_not_ready_is_a_503_and_store_unavailable() {
    let app = start().await;
    let token = app.issuer.token("alice").mint().unwrap().token;
    assert_eq!(
        get_with(&app, "/pending", Some(&token)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let events = app.log.all();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            AuthEventKind::JwtRefused {
                reason: "revocation-unavailable"
            },
            AuthEventKind::StoreUnavailable {
                store: "revocation",
                operation: "check"
            },
        ]
    );
    for e in &events {
        assert_context(e, "/pending", None);
    }
    app.log.assert_counted(
        &app.metrics,
        &[
            ("jwt_refused", Some("revocation-unavailable"), 1),
            ("store_unavailable", None, 1),
        ],
    );
    assert_eq!(
        app.metrics.counter(
            "portcullis.store.unavailable",
            &[(STORE, "revocation"), (OPERATION, "check")]
        ),
        1
    );
    assert_no_secret(&events, &[&token]);
}

#[tokio::test]
async fn key_rotation_retirement_and_login_tokens_are_events_of_the_issuer() {
    let app = start().await;
    let post = |path: &str| client().post(app.server.url(path)).send();
    let resp = post("/login/alice").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let login = resp.text().await.unwrap();
    assert_eq!(
        post("/keys/rotate/k2").await.unwrap().status(),
        StatusCode::OK
    );
    let resp = post("/keys/retire/k1").await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "true");
    // Retiring a key already gone is no event.
    let resp = post("/keys/retire/k1").await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "false");
    // A plain token is not a login.
    let plain = app.issuer.token("bob").mint().unwrap().token;

    let events = app.log.all();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            AuthEventKind::LoginSucceeded,
            AuthEventKind::KeyRotated { kid: "k2".into() },
            AuthEventKind::KeyRetired { kid: "k1".into() },
        ]
    );
    assert_eq!(events[0].user.as_deref(), Some("alice"));
    for e in &events {
        assert_eq!(e.source, "jwt");
        // Outside any request: no route, client or trace id.
        assert_eq!(
            (e.route.as_deref(), e.client, e.trace_id),
            (None, None, None)
        );
    }
    assert_eq!(events[1].to_json()["kid"], "k2");
    app.log.assert_counted(
        &app.metrics,
        &[
            ("login_succeeded", None, 1),
            ("key_rotated", None, 1),
            ("key_retired", None, 1),
        ],
    );
    assert_no_secret(&events, &[&login, &plain]);
    // The retired key's token is refused: one more event, reason unknown-key.
    assert_eq!(
        get_with(&app, "/me/1", Some(&login)).await,
        StatusCode::UNAUTHORIZED
    );
    let last = app.log.all().pop().unwrap();
    assert_eq!(
        last.kind,
        AuthEventKind::JwtRefused {
            reason: "unknown-key"
        }
    );
    app.log.assert_counted(
        &app.metrics,
        &[
            ("login_succeeded", None, 1),
            ("key_rotated", None, 1),
            ("key_retired", None, 1),
            ("jwt_refused", Some("unknown-key"), 1),
        ],
    );
}

#[tokio::test]
async fn the_jwt_layer_opens_one_span_per_request_with_its_decision_and_route() {
    let spans = portcullis_tests::refresh_app::SpanCapture::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let app = start().await;
    let good = app.issuer.token("alice").mint().unwrap().token;
    let expired = app.issuer.token("alice").mint().unwrap().token;
    app.clock.advance(Duration::from_secs(3600));
    let good_now = app.issuer.token("alice").mint().unwrap().token;
    assert_eq!(
        get_with(&app, "/me/1", Some(&expired)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&app, "/me/1", Some(&good_now)).await,
        StatusCode::OK
    );
    assert_eq!(get_with(&app, "/open", None).await, StatusCode::OK);
    let jwt = spans.named("portcullis.jwt");
    assert_eq!(jwt.len(), 3, "{jwt:?}");
    let field = |i: usize, name: &str| jwt[i].get(name).map(String::as_str);
    for i in 0..3 {
        assert_eq!(field(i, "otel.kind"), Some("internal"));
    }
    assert_eq!(field(0, "portcullis.decision"), Some("failure"));
    assert_eq!(field(0, "error.type"), Some("expired"));
    assert_eq!(field(0, "http.route"), Some("/me/{id}"));
    assert_eq!(field(1, "portcullis.decision"), Some("success"));
    assert_eq!(field(1, "error.type"), None);
    assert_eq!(field(2, "portcullis.decision"), Some("none"));
    assert_eq!(field(2, "http.route"), Some("/open"));
    app.log
        .assert_counted(&app.metrics, &[("jwt_refused", Some("expired"), 1)]);
    let text = spans.text();
    for token in [&good, &expired, &good_now] {
        for part in token.split('.') {
            assert!(!text.contains(part), "a token in a span");
        }
    }
}

/// How often [`counted_route`] was asked for a request's route.
static ROUTE_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// [`portcullis::events::matched_path`], counting its calls: a read of a
/// request's event context.
fn counted_route(ext: &http::Extensions) -> Option<Arc<str>> {
    ROUTE_READS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    portcullis::events::matched_path(ext)
}

#[tokio::test]
async fn an_accepted_request_reads_no_event_context_a_refused_one_reads_it_once() {
    // The secret scan's tap listens to every handle: it would make this
    // handle read the context of every request.
    portcullis_tests::secret_scan::without_tap();
    // Nor may a subscriber record the layer's span: a live span reads the
    // route for `http.route` (the scan installs one for the process; the
    // test runs on this thread's runtime).
    let _no_spans = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let events = portcullis::core::events::Events::builder()
        .route(counted_route)
        .build();
    let log = EventLog::new(&events);
    let issuer = JwtIssuer::builder(hmac("k1", 1))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let jwt = JwtLayer::builder_for(&issuer)
        .events(events.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/admin/{id}", get(|| async { "admin" }))
        .route_layer(RequireClaimsLayer::scope("admin").events(events.clone()))
        .route_layer(jwt);
    let server = TestServer::start(app).await;
    let admin = issuer.token("alice").scope("admin").mint().unwrap().token;
    let user = issuer.token("bob").mint().unwrap().token;
    let get = |token: String| {
        client()
            .get(server.url("/admin/1"))
            .bearer_auth(token)
            .send()
    };
    let reads = || ROUTE_READS.load(std::sync::atomic::Ordering::SeqCst);

    let before = reads();
    assert_eq!(get(admin.clone()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(reads(), before, "an accepted request reads no context");
    assert!(log.all().is_empty());

    // Refused by the JWT layer, then by the scope guard: each refusal
    // reads the context once, for its event.
    for (token, status, name) in [
        (
            "not-a-jwt".to_owned(),
            StatusCode::UNAUTHORIZED,
            "jwt_refused",
        ),
        (user.clone(), StatusCode::FORBIDDEN, "jwt_refused"),
    ] {
        let before = reads();
        assert_eq!(get(token).await.unwrap().status(), status);
        assert_eq!(reads(), before + 1, "one read per refusal");
        let last = log.all().last().cloned().unwrap();
        assert_eq!(last.kind.name(), name);
        assert_eq!(last.route.as_deref(), Some("/admin/{id}"), "{last:?}");
    }
    assert_eq!(log.all().len(), 2);
    assert_no_secret(&log.all(), &[&admin, &user]);
}
