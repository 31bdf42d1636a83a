//! IntrospectionLayer (RFC 7662) end to end: a real axum server behind the
//! layer, the authorization server's introspection endpoint played by a
//! small axum app on loopback that counts its calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis::core::events::{AuthEventKind, Events};
use portcullis::core::{Clock, ManualClock, SharedClock};
use portcullis::jwt::introspect::{
    IntrospectionConfigError, IntrospectionLayer, IntrospectionLayerBuilder,
};
use portcullis::jwt::revocation::{RevocationStore as _, RevocationView};
use portcullis::jwt::{Claims, RequireClaimsLayer, SigningKey};
use portcullis_redis::{RedisConfig, RedisRevocationStore};
use portcullis_tests::jwt_app::{issuer_builder, layer_builder};
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{TestServer, client, secret_scan};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENT_ID: &str = "rs";
const SECRET: &str = "introspection-client-secret-0123456789";
const ISSUER: &str = "http://127.0.0.1:1/as";
const RESOURCE: &str = "https://api.example/opaque";

/// What the endpoint says about one token.
#[derive(Clone)]
enum Says {
    /// `active: true`, `exp` = now + `ttl`, plus these members.
    Active { ttl: i64, extra: Value },
    /// `active: false`.
    Inactive,
}

/// How the endpoint answers every call, whatever the token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    ServerError,
    UnsupportedTokenType,
    Garbage,
    ActiveAsString,
    Huge,
}

/// The introspection endpoint: answers per token, a failure mode, a gate
/// that holds every call until opened, and a call counter.
#[derive(Clone)]
struct Provider {
    calls: Arc<AtomicUsize>,
    clock: Arc<ManualClock>,
    says: Arc<Mutex<HashMap<String, Says>>>,
    mode: Arc<Mutex<Mode>>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Provider {
    fn say(&self, token: &str, says: Says) {
        secret_scan::register(token);
        self.says.lock().unwrap().insert(token.to_owned(), says);
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn introspect(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    p.calls.fetch_add(1, Ordering::SeqCst);
    let mut gate = p.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let json_ct = [(header::CONTENT_TYPE, "application/json")];
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic(CLIENT_ID, SECRET).as_str())
    {
        let body = json!({"error": "invalid_client"}).to_string();
        return (AxumStatus::UNAUTHORIZED, json_ct, body).into_response();
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    assert_eq!(
        form.get("token_type_hint").map(String::as_str),
        Some("access_token")
    );
    let token = form.get("token").cloned().unwrap_or_default();
    let mode = *p.mode.lock().unwrap();
    match mode {
        Mode::Normal => {}
        Mode::ServerError => return (AxumStatus::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Mode::UnsupportedTokenType => {
            let body = json!({"error": "unsupported_token_type"}).to_string();
            return (AxumStatus::BAD_REQUEST, json_ct, body).into_response();
        }
        Mode::Garbage => return (json_ct, "<html>not json</html>").into_response(),
        Mode::ActiveAsString => return (json_ct, r#"{"active":"true"}"#).into_response(),
        Mode::Huge => {
            let pad = "x".repeat(100 * 1024);
            return (json_ct, json!({"active": true, "pad": pad}).to_string()).into_response();
        }
    }
    let now = i64::try_from(p.clock.now().secs()).unwrap();
    let says = p.says.lock().unwrap().get(&token).cloned();
    let answer = match says {
        Some(Says::Active { ttl, extra }) => {
            let mut a = json!({"active": true, "iat": now, "exp": now + ttl, "iss": ISSUER,
                "aud": RESOURCE, "client_id": "app", "token_type": "Bearer"});
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            a
        }
        Some(Says::Inactive) | None => json!({"active": false}),
    };
    (json_ct, answer.to_string()).into_response()
}

/// A provider on a real socket, and the clock it shares with the layers.
struct Rig {
    provider: Provider,
    server: TestServer,
    clock: Arc<ManualClock>,
}

impl Rig {
    async fn start() -> Self {
        secret_scan::register(SECRET);
        let clock = Arc::new(ManualClock::starting_now());
        let (gate, _) = tokio::sync::watch::channel(true);
        let provider = Provider {
            calls: Arc::new(AtomicUsize::new(0)),
            clock: clock.clone(),
            says: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Normal)),
            gate: Arc::new(gate),
        };
        let app = Router::new()
            .route("/token/introspection", post(introspect))
            .with_state(provider.clone());
        let server = TestServer::start(app).await;
        Self {
            provider,
            server,
            clock,
        }
    }

    /// A builder for this provider's endpoint, with the right client
    /// credentials and the shared clock, and no audience yet.
    fn bare(&self) -> IntrospectionLayerBuilder {
        IntrospectionLayer::builder(self.server.url("/token/introspection"))
            .client_secret_basic(CLIENT_ID, SECRET)
            .clock(self.clock.clone())
    }

    /// [`Rig::bare`] for the audience the provider's answers name.
    fn builder(&self) -> IntrospectionLayerBuilder {
        self.bare().audience(RESOURCE)
    }
}

/// The resource server: `/me` answers the claims as JSON, `/write` needs
/// the `write` scope. `arrived` counts requests before the layer.
async fn serve(layer: IntrospectionLayer, arrived: Arc<AtomicUsize>) -> TestServer {
    let app = Router::new()
        .route("/write", get(|| async { "written" }))
        .route_layer(RequireClaimsLayer::scope("write"))
        .route(
            "/me",
            get(|c: Claims| async move {
                let r = c.registered();
                axum::Json(json!({
                    "sub": r.sub, "client_id": r.client_id, "scope": r.scope, "jti": r.jti,
                }))
            }),
        )
        .layer(layer)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                arrived.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            },
        ));
    TestServer::start(app).await
}

async fn get_with(server: &TestServer, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn status(server: &TestServer, token: &str) -> StatusCode {
    get_with(server, "/me", token).await.status()
}

fn active(extra: Value) -> Says {
    Says::Active { ttl: 300, extra }
}

#[tokio::test]
async fn an_active_token_passes_with_its_claims_and_route_guards_work_behind_it() {
    let rig = Rig::start().await;
    rig.provider.say(
        "opaque-alice",
        active(json!({"sub": "alice", "scope": "read", "jti": "j-alice"})),
    );
    let layer = rig
        .builder()
        .issuer(ISSUER)
        .audience(RESOURCE)
        .build()
        .unwrap();
    let server = serve(layer, Arc::default()).await;
    let resp = get_with(&server, "/me", "opaque-alice").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sub": "alice", "client_id": "app", "scope": ["read"], "jti": "j-alice"})
    );
    // RequireClaimsLayer reads the same claims: `read` is not `write`.
    let resp = get_with(&server, "/write", "opaque-alice").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // An issuer or audience other than the configured one is refused.
    for layer in [
        rig.builder()
            .issuer("https://other.example")
            .build()
            .unwrap(),
        rig.bare()
            .audience("https://other.example/api")
            .build()
            .unwrap(),
    ] {
        let other = serve(layer, Arc::default()).await;
        assert_eq!(
            status(&other, "opaque-alice").await,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn an_inactive_token_is_a_401_invalid_token() {
    let rig = Rig::start().await;
    rig.provider.say("opaque-revoked", Says::Inactive);
    let events = Events::new();
    let mut stream = events.subscribe("test", 64);
    let layer = rig.builder().events(events).build().unwrap();
    let server = serve(layer, Arc::default()).await;
    let resp = get_with(&server, "/me", "opaque-revoked").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let event = stream.recv().await.unwrap();
    assert_eq!(event.kind, AuthEventKind::JwtRefused { reason: "inactive" });
    // No token at all: 401 without an error code, and no call.
    let resp = client().get(server.url("/me")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(rig.provider.calls(), 1);
}

#[tokio::test]
async fn a_cached_answer_is_served_without_a_call_until_the_bound() {
    let rig = Rig::start().await;
    rig.provider
        .say("opaque-c", active(json!({"sub": "carol"})));
    let layer = rig
        .builder()
        .cache_bound(Duration::from_secs(60))
        .build()
        .unwrap();
    let server = serve(layer.clone(), Arc::default()).await;
    assert_eq!(status(&server, "opaque-c").await, StatusCode::OK);
    assert_eq!(rig.provider.calls(), 1);
    assert_eq!(status(&server, "opaque-c").await, StatusCode::OK);
    assert_eq!(rig.provider.calls(), 1, "the second request is a cache hit");
    rig.clock.advance(Duration::from_secs(59));
    assert_eq!(status(&server, "opaque-c").await, StatusCode::OK);
    assert_eq!(rig.provider.calls(), 1);
    rig.clock.advance(Duration::from_secs(2));
    assert_eq!(status(&server, "opaque-c").await, StatusCode::OK);
    assert_eq!(
        rig.provider.calls(),
        2,
        "past the bound, the endpoint is asked again"
    );
    assert_eq!(layer.endpoint_calls(), 2);
}

#[tokio::test]
async fn a_cached_answer_never_outlives_its_exp() {
    let rig = Rig::start().await;
    // exp = now + 10 s at every call; the cache bound is 60 s.
    rig.provider.say(
        "opaque-short",
        Says::Active {
            ttl: 10,
            extra: json!({"sub": "dave"}),
        },
    );
    let layer = rig
        .builder()
        .cache_bound(Duration::from_secs(60))
        .build()
        .unwrap();
    let server = serve(layer, Arc::default()).await;
    assert_eq!(status(&server, "opaque-short").await, StatusCode::OK);
    rig.clock.advance(Duration::from_secs(9));
    assert_eq!(status(&server, "opaque-short").await, StatusCode::OK);
    assert_eq!(rig.provider.calls(), 1);
    // Past the first answer's exp (within the 5 s leeway, so a stale
    // cached answer would still pass): the endpoint is asked again.
    rig.clock.advance(Duration::from_secs(2));
    assert_eq!(status(&server, "opaque-short").await, StatusCode::OK);
    assert_eq!(
        rig.provider.calls(),
        2,
        "the cached answer ended at its exp"
    );
}

#[tokio::test]
async fn provider_errors_are_503_and_never_cached_as_inactive() {
    let rig = Rig::start().await;
    rig.provider.say("opaque-e", active(json!({"sub": "erin"})));
    let events = Events::new();
    let mut stream = events.subscribe("test", 256);
    let layer = rig
        .builder()
        .inactive_cache_bound(Duration::from_secs(60))
        .retry_after(Duration::from_secs(3))
        .events(events)
        .build()
        .unwrap();
    let server = serve(layer, Arc::default()).await;
    let mut expected_calls = 0;
    for mode in [
        Mode::ServerError,
        Mode::UnsupportedTokenType,
        Mode::Garbage,
        Mode::ActiveAsString,
        Mode::Huge,
    ] {
        rig.provider.set_mode(mode);
        for _ in 0..2 {
            let resp = get_with(&server, "/me", "opaque-e").await;
            expected_calls += 1;
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            assert_eq!(
                rig.provider.calls(),
                expected_calls,
                "a failure is not cached"
            );
            let refused = stream.recv().await.unwrap();
            assert_eq!(
                refused.kind,
                AuthEventKind::JwtRefused {
                    reason: "introspection-unavailable"
                }
            );
            let outage = stream.recv().await.unwrap();
            assert_eq!(
                outage.kind,
                AuthEventKind::StoreUnavailable {
                    store: "introspection",
                    operation: "introspect"
                }
            );
        }
        // The endpoint recovers: the token is active, not a cached "inactive".
        rig.provider.set_mode(Mode::Normal);
        assert_eq!(status(&server, "opaque-e").await, StatusCode::OK);
        expected_calls += 1;
        assert_eq!(rig.provider.calls(), expected_calls);
        // Past the active answer's bound for the next mode.
        rig.clock.advance(Duration::from_secs(61));
    }
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_a_503_within_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            sockets.push(socket);
        }
    });
    let clock = Arc::new(ManualClock::starting_now());
    let layer = IntrospectionLayer::builder(format!("http://{addr}/introspect"))
        .client_secret_basic(CLIENT_ID, SECRET)
        .audience(RESOURCE)
        .clock(clock)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let server = serve(layer, Arc::default()).await;
    let started = Instant::now();
    let resp = get_with(&server, "/me", "opaque-t").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    // Bounded by the configured timeout, not the 5 s default.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Not cached: the next request waits for the endpoint again.
    let resp = get_with(&server, "/me", "opaque-t").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    held.abort();
}

#[tokio::test]
async fn concurrent_requests_with_one_token_make_one_call() {
    let rig = Rig::start().await;
    rig.provider
        .say("opaque-many", active(json!({"sub": "frank"})));
    let arrived = Arc::new(AtomicUsize::new(0));
    let layer = rig.builder().build().unwrap();
    let server = serve(layer, arrived.clone()).await;
    // Hold the endpoint until every request has reached the layer.
    rig.provider.gate.send_replace(false);
    let http = client();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (http, url) = (http.clone(), server.url("/me"));
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth("opaque-many")
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    while arrived.load(Ordering::SeqCst) < 50 || rig.provider.calls() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give any extra call time to reach the endpoint before it opens.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.provider.gate.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(rig.provider.calls(), 1);
}

#[tokio::test]
async fn calls_open_at_once_are_bounded() {
    let rig = Rig::start().await;
    for t in ["opaque-n0", "opaque-n1", "opaque-n2"] {
        rig.provider.say(t, active(json!({"sub": "nina"})));
    }
    let layer = rig.builder().max_concurrent_calls(2).build().unwrap();
    let server = Arc::new(serve(layer, Arc::default()).await);
    rig.provider.gate.send_replace(false);
    let held: Vec<_> = ["opaque-n0", "opaque-n1"]
        .into_iter()
        .map(|t| {
            let server = server.clone();
            tokio::spawn(async move { status(&server, t).await })
        })
        .collect();
    while rig.provider.calls() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two calls hang at the endpoint: a third token is refused at once.
    let third = tokio::time::timeout(Duration::from_secs(5), status(&server, "opaque-n2")).await;
    assert_eq!(third.ok(), Some(StatusCode::SERVICE_UNAVAILABLE));
    rig.provider.gate.send_replace(true);
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    // The calls ended: the third token is asked about now.
    assert_eq!(status(&server, "opaque-n2").await, StatusCode::OK);
    assert_eq!(rig.provider.calls(), 3);
}

#[tokio::test]
async fn inactive_after_active_feeds_the_shared_revocation_view() {
    let rig = Rig::start().await;
    let view = RevocationView::new(rig.clock.clone());
    // A JWT with a jti, and an opaque token the endpoint gives the same jti.
    let issuer = issuer_builder(
        SigningKey::generate("k1", portcullis::jwt::Algorithm::ES256).unwrap(),
        &rig.clock,
    )
    .build()
    .unwrap();
    let jwt = issuer.token("grace").mint().unwrap();
    rig.provider
        .say("opaque-g", active(json!({"sub": "grace", "jti": jwt.jti})));
    // And one without a jti (revoked under its hash).
    rig.provider
        .say("opaque-h", active(json!({"sub": "heidi"})));
    let short = rig
        .builder()
        .cache_bound(Duration::from_secs(10))
        .revocation(view.clone())
        .build()
        .unwrap();
    let long = rig
        .builder()
        .cache_bound(Duration::from_secs(600))
        .revocation(view.clone())
        .build()
        .unwrap();
    let jwt_layer = layer_builder(
        issuer.keys(),
        &rig.clock,
        portcullis::jwt::Validation::default(),
    )
    .revocation(view.clone())
    .build()
    .unwrap();
    let (a, b) = (
        serve(short, Arc::default()).await,
        serve(long, Arc::default()).await,
    );
    let j = portcullis_tests::jwt_app::serve_subject(jwt_layer).await;
    for token in ["opaque-g", "opaque-h"] {
        assert_eq!(status(&a, token).await, StatusCode::OK);
        assert_eq!(status(&b, token).await, StatusCode::OK);
    }
    assert_eq!(
        portcullis_tests::jwt_app::me(&j, &jwt.token).await,
        StatusCode::OK
    );
    assert_eq!(rig.provider.calls(), 4);

    // Revoked at the provider: `b` still serves its cached answers.
    rig.provider.say("opaque-g", Says::Inactive);
    rig.provider.say("opaque-h", Says::Inactive);
    assert_eq!(status(&b, "opaque-g").await, StatusCode::OK);
    assert_eq!(status(&b, "opaque-h").await, StatusCode::OK);
    // `a`'s answers end; it asks, hears "inactive", and feeds the view.
    rig.clock.advance(Duration::from_secs(11));
    assert_eq!(status(&a, "opaque-g").await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&a, "opaque-h").await, StatusCode::UNAUTHORIZED);
    assert_eq!(rig.provider.calls(), 6);
    // Every layer sharing the view refuses at once, without a call.
    assert_eq!(status(&b, "opaque-g").await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&b, "opaque-h").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        portcullis_tests::jwt_app::me(&j, &jwt.token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(rig.provider.calls(), 6);
    assert_eq!(view.len().0, 2);
}

/// Waits (1 s at most) until `server` answers `want` for `token`.
async fn eventually(server: &TestServer, token: &str, want: StatusCode) {
    let start = Instant::now();
    while status(server, token).await != want {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "never {want} for {token}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn inactive_after_active_reaches_other_instances_through_the_store() {
    let redis = RedisServer::start();
    let rig = Rig::start().await;
    let clock: SharedClock = rig.clock.clone();
    let store = || async {
        let s = RedisRevocationStore::builder(RedisConfig::new(redis.url()).build().unwrap())
            .clock(clock.clone())
            .start()
            .unwrap();
        assert!(
            s.wait_synced(Duration::from_secs(5)).await,
            "first snapshot"
        );
        s
    };
    let (store_a, store_b) = (store().await, store().await);
    rig.provider
        .say("opaque-k", active(json!({"sub": "kim", "jti": "j-kim"})));
    rig.provider.say("opaque-l", active(json!({"sub": "lou"})));
    // Two instances, each with its own store and view on one Redis.
    let a = rig
        .builder()
        .cache_bound(Duration::from_secs(10))
        .revocation_store(store_a)
        .build()
        .unwrap();
    let b = rig
        .builder()
        .cache_bound(Duration::from_secs(600))
        .revocation(store_b.view())
        .build()
        .unwrap();
    let (a, b) = (
        serve(a, Arc::default()).await,
        serve(b, Arc::default()).await,
    );
    for token in ["opaque-k", "opaque-l"] {
        assert_eq!(status(&a, token).await, StatusCode::OK);
        assert_eq!(status(&b, token).await, StatusCode::OK);
        rig.provider.say(token, Says::Inactive);
    }
    rig.clock.advance(Duration::from_secs(11));
    for token in ["opaque-k", "opaque-l"] {
        assert_eq!(status(&a, token).await, StatusCode::UNAUTHORIZED);
        // `b` still holds an active answer; the store tells its view.
        eventually(&b, token, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(rig.provider.calls(), 6, "b never asked again");
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_503_not_an_inactive_token() {
    let rig = Rig::start().await;
    rig.provider.say("opaque-w", active(json!({"sub": "ivan"})));
    secret_scan::register("not-the-secret-0123456789");
    let layer = IntrospectionLayer::builder(rig.server.url("/token/introspection"))
        .client_secret_basic(CLIENT_ID, "not-the-secret-0123456789")
        .audience(RESOURCE)
        .clock(rig.clock.clone())
        .build()
        .unwrap();
    let server = serve(layer, Arc::default()).await;
    for calls in 1..=2 {
        assert_eq!(
            status(&server, "opaque-w").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(rig.provider.calls(), calls, "the failure is not cached");
    }
    // The right secret: the same token passes.
    let layer = rig.builder().build().unwrap();
    let server = serve(layer, Arc::default()).await;
    assert_eq!(status(&server, "opaque-w").await, StatusCode::OK);
}

#[tokio::test]
async fn a_sender_constrained_opaque_token_is_refused_as_a_bearer_token() {
    let rig = Rig::start().await;
    rig.provider.say(
        "opaque-dpop",
        active(json!({"sub": "judy", "token_type": "DPoP", "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}})),
    );
    rig.provider.say(
        "opaque-jkt",
        active(
            json!({"sub": "judy", "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}),
        ),
    );
    rig.provider.say(
        "opaque-x5t",
        active(json!({"sub": "judy", "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}})),
    );
    rig.provider.say(
        "opaque-jwk",
        active(json!({"sub": "judy", "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}})),
    );
    rig.provider.say(
        "opaque-refresh",
        active(json!({"sub": "judy", "token_type": "refresh_token"})),
    );
    let layer = rig.builder().build().unwrap();
    let server = serve(layer, Arc::default()).await;
    for token in [
        "opaque-dpop",
        "opaque-jkt",
        "opaque-x5t",
        "opaque-jwk",
        "opaque-refresh",
    ] {
        assert_eq!(
            status(&server, token).await,
            StatusCode::UNAUTHORIZED,
            "{token}"
        );
    }
}

#[test]
fn the_client_secret_is_never_in_debug_output() {
    let builder = IntrospectionLayer::builder("https://as.example/introspect")
        .client_secret_basic(CLIENT_ID, SECRET)
        .audience(RESOURCE);
    let text = format!("{builder:?}");
    assert!(
        !text.contains(SECRET) && text.contains("REDACTED"),
        "{text}"
    );
    let layer = builder.build().unwrap();
    let text = format!("{layer:?}");
    assert!(
        !text.contains(SECRET) && text.contains("REDACTED"),
        "{text}"
    );
    assert!(text.contains("https://as.example/introspect"), "{text}");
}

#[test]
fn unsafe_configurations_are_refused_when_built() {
    let https = || IntrospectionLayer::builder("https://as.example/introspect");
    let cases = [
        (
            IntrospectionLayer::builder("http://as.example/introspect")
                .client_secret_basic(CLIENT_ID, SECRET)
                .audience(RESOURCE),
            IntrospectionConfigError::InsecureUrl,
        ),
        (
            https().client_secret_basic(CLIENT_ID, SECRET),
            IntrospectionConfigError::AudienceNotConfigured,
        ),
        (
            https().audience(RESOURCE),
            IntrospectionConfigError::NoClientAuthentication,
        ),
        (
            https()
                .audience(RESOURCE)
                .client_secret_basic(CLIENT_ID, ""),
            IntrospectionConfigError::BadClientCredentials,
        ),
        (
            https()
                .audience(RESOURCE)
                .client_secret_basic(CLIENT_ID, SECRET)
                .timeout(Duration::ZERO),
            IntrospectionConfigError::ZeroLimit,
        ),
    ];
    for (builder, want) in cases {
        assert_eq!(builder.build().unwrap_err(), want);
    }
    // The weaker choice, spelled out.
    assert!(
        https()
            .client_secret_basic(CLIENT_ID, SECRET)
            .allow_any_audience()
            .build()
            .is_ok()
    );
}
