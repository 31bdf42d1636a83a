//! Sender-constrained refresh tokens (RFC 9449 §5) over HTTP, on every
//! refresh store (memory, a real redis-server, a real PostgreSQL, SQLite):
//! a login with a DPoP proof binds its family to the proof's key, stored
//! with the family; its access tokens carry `cnf.jkt` and are refused as
//! bearer tokens; a refresh needs a proof by the same key, and a stolen
//! refresh token (cookie or body) without the key is refused without
//! burning the family, so the owner keeps refreshing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::core::{Clock as _, ManualClock};
use portcullis::jwt::dpop::{
    DpopPolicy, DpopVerifier, MemoryReplayCache, ReplayCache, ReplayCacheError, sign_proof,
    thumbprint,
};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::otel::{DECISION_DURATION, ERROR_TYPE, LAYER, RESULT};
use portcullis::refresh::{
    FamilyId, MemoryRefreshStore, RefreshConfig, RefreshLayer, RefreshStore, Refresher, Transport,
};
use portcullis_redis::{RedisConfig, RedisRefreshStore};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use portcullis_sql::{PgConfig, PgRefreshStore, SqliteConfig, SqliteRefreshStore};
use portcullis_tests::otel::Metrics;
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::refresh_app::{COOKIE, events_bus};
use portcullis_tests::{TestServer, client, cookie_value, set_cookies};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// The public origin clients use: every proof's `htu` starts with it
/// (never read from `Host`: the test server listens on 127.0.0.1).
const ORIGIN: &str = "https://app.test";
const ISS: &str = "https://app.test";
const AUD: &str = "app";
const TIMEOUT: Duration = Duration::from_secs(5);

struct App {
    server: TestServer,
    clock: Arc<ManualClock>,
    store: Arc<dyn RefreshStore>,
    metrics: Metrics,
    refresher: Refresher,
    verifier: DpopVerifier,
}

/// The hybrid pattern with DPoP: the refresher binds per `policy`; the
/// API's `JwtLayer` accepts bearer and DPoP tokens (so a bound token sent
/// as bearer is refused for its binding, not for the scheme).
async fn start(store: Arc<dyn RefreshStore>, policy: DpopPolicy) -> App {
    start_on(store, Some(policy)).await
}

/// [`start`], the refresher without DPoP when `policy` is `None`.
async fn start_on(store: Arc<dyn RefreshStore>, policy: Option<DpopPolicy>) -> App {
    start_full(store, policy, None, false, None).await
}

/// A memory replay cache that answers "unavailable" while `down` is on
/// (a shared replay store's outage).
#[derive(Clone)]
struct SwitchableCache {
    inner: Arc<MemoryReplayCache>,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl ReplayCache for SwitchableCache {
    async fn first_use(&self, id: &[u8; 32], until: u64) -> Result<bool, ReplayCacheError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ReplayCacheError::Unavailable);
        }
        self.inner.first_use(id, until).await
    }
}

/// [`start_on`], the proofs remembered in `cache` when given, the whole
/// app under `Router::nest(prefix, …)` when `nest` is given.
async fn start_full(
    store: Arc<dyn RefreshStore>,
    policy: Option<DpopPolicy>,
    cache: Option<SwitchableCache>,
    nonces: bool,
    nest: Option<&str>,
) -> App {
    let clock = Arc::new(ManualClock::starting_now());
    let metrics = Metrics::new();
    let bus = events_bus(&metrics);
    let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .build()
        .unwrap();
    let revocations = Arc::new(MemoryRevocationStore::with_clock(clock.clone()));
    let mut verifier = DpopVerifier::builder(ORIGIN).clock(clock.clone());
    if let Some(cache) = cache {
        verifier = verifier.replay_cache(cache);
    }
    if nonces {
        verifier = verifier.nonces([9; 32]);
    }
    let verifier = verifier.build().unwrap();
    let jwt = JwtLayer::builder(issuer.keys())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .revocation(revocations.view())
        .dpop(verifier.clone(), DpopPolicy::Accepted)
        .build()
        .unwrap();
    let mut config = RefreshConfig::default()
        .transport(Transport::Either)
        .events(bus);
    if let Some(policy) = policy {
        config = config.dpop(verifier.clone(), policy);
    }
    let refresher = Refresher::builder_arc(store.clone(), issuer, revocations, jwt.clone())
        .config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/api/me",
            get(|c: Claims| async move { axum::Json(json!({ "user": c.subject() })) }),
        )
        .layer(jwt)
        .route("/auth/login/{user}", post(login_handler))
        .with_state(refresher.clone());
    // Nested, the refresh endpoints (no route of the inner router) reach
    // its layers only through an inner fallback.
    let app = match nest {
        Some(prefix) => Router::new().nest(
            prefix,
            app.fallback(|| async { StatusCode::NOT_FOUND })
                .layer(RefreshLayer::new(&refresher)),
        ),
        None => app.layer(RefreshLayer::new(&refresher)),
    };
    App {
        server: TestServer::start(app).await,
        clock,
        store,
        metrics,
        refresher,
        verifier,
    }
}

async fn login_handler(
    State(refresher): State<Refresher>,
    Path(user): Path<String>,
    req: Request,
) -> impl IntoResponse {
    let (parts, _) = req.into_parts();
    refresher.login(user).reply(&parts).await
}

fn key(name: &str) -> SigningKey {
    SigningKey::generate(name, Algorithm::ES256).unwrap()
}

/// The RFC 7638 thumbprint of `key`'s public key.
fn jkt(key: &SigningKey) -> String {
    thumbprint(key.verifying_key().public_jwk().unwrap()).unwrap()
}

/// A fresh proof by `key` for `method` on `ORIGIN` + `path`, at the app's
/// time.
fn proof(app: &App, key: &SigningKey, method: &str, path: &str, access: Option<&str>) -> String {
    let now = app.clock.now().secs();
    sign_proof(key, method, &format!("{ORIGIN}{path}"), now, access, None).unwrap()
}

/// `POST /auth/login/{user}`, with a proof by `key` when given.
async fn login(app: &App, user: &str, key: Option<&SigningKey>, body: bool) -> reqwest::Response {
    let path = format!("/auth/login/{user}");
    let mut req = client().post(app.server.url(&path));
    if let Some(k) = key {
        req = req.header("dpop", proof(app, k, "POST", &path, None));
    }
    if body {
        req = req.header("x-refresh-transport", "body");
    }
    req.send().await.unwrap()
}

/// What a login or refresh answered: the access token, the refresh token
/// (cookie or body) and the body.
struct Pair {
    access: String,
    refresh: String,
    body: Value,
}

async fn pair(resp: reqwest::Response) -> Pair {
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(&resp, COOKIE);
    let body: Value = resp.json().await.unwrap();
    let refresh = cookie
        .or_else(|| body["refresh_token"].as_str().map(str::to_owned))
        .expect("a refresh token");
    Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh,
        body,
    }
}

/// The claims of an access token (not verified: the API does that).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// How a refresh-endpoint request carries its token and proof.
#[derive(Clone, Copy)]
enum Proof<'a> {
    None,
    /// A fresh proof by this key for the request itself.
    By(&'a SigningKey),
    /// A fresh proof by this key for another URL.
    ForPath(&'a SigningKey, &'a str),
    /// This exact proof.
    Exact(&'a str),
}

/// `POST path` with `token` in the cookie (or the JSON body) and `proof`.
async fn post_token(
    app: &App,
    path: &str,
    token: &str,
    in_body: bool,
    proof_of: Proof<'_>,
) -> reqwest::Response {
    let mut req: RequestBuilder = client().post(app.server.url(path));
    req = if in_body {
        req.json(&json!({ "refresh_token": token }))
    } else {
        req.header("cookie", format!("{COOKIE}={token}"))
    };
    let value = match proof_of {
        Proof::None => None,
        Proof::By(k) => Some(proof(app, k, "POST", path, None)),
        Proof::ForPath(k, other) => Some(proof(app, k, "POST", other, None)),
        Proof::Exact(p) => Some(p.to_owned()),
    };
    if let Some(v) = value {
        req = req.header("dpop", v);
    }
    req.send().await.unwrap()
}

/// `GET /api/me` with `access` as `scheme`, and a proof by `key`.
async fn api(app: &App, access: &str, scheme: &str, key: Option<&SigningKey>) -> StatusCode {
    let mut req = client()
        .get(app.server.url("/api/me"))
        .header("authorization", format!("{scheme} {access}"));
    if let Some(k) = key {
        req = req.header("dpop", proof(app, k, "GET", "/api/me", Some(access)));
    }
    req.send().await.unwrap().status()
}

/// The family id of a refresh token (`<family id>.<secret>`).
fn family_of(refresh: &str) -> FamilyId {
    FamilyId::parse(refresh.split('.').next().unwrap()).unwrap()
}

/// Asserts a refusal for a missing or wrong proof: 401, a `DPoP`
/// challenge, and the refresh cookie left alone (the token is still the
/// owner's).
fn assert_proof_refused(resp: &reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("DPoP"), "{what}: {challenge:?}");
    assert!(
        set_cookies(resp).is_empty(),
        "{what}: the cookie is not touched: {:?}",
        set_cookies(resp)
    );
}

/// The whole story on `store`: the login binds, the token is bound, the
/// thief without the key gets nothing and burns nothing, the owner keeps
/// refreshing.
async fn a_bound_family_needs_its_key(store: Arc<dyn RefreshStore>) {
    let app = start(store, DpopPolicy::Accepted).await;
    let owner = key("owner");
    let thief = key("thief");

    // The login binds: a DPoP token bound to the owner's key, the family
    // stored with it.
    let first = pair(login(&app, "alice", Some(&owner), false).await).await;
    assert_eq!(first.body["token_type"], "DPoP");
    assert_eq!(payload(&first.access)["cnf"], json!({ "jkt": jkt(&owner) }));
    let stored = app
        .store
        .get(&family_of(&first.refresh), app.clock.now())
        .await
        .unwrap()
        .expect("the family");
    assert_eq!(stored.jkt.as_deref(), Some(jkt(&owner).as_str()));

    // The access token works with the owner's proofs only, never as bearer.
    assert_eq!(
        api(&app, &first.access, "DPoP", Some(&owner)).await,
        StatusCode::OK
    );
    assert_eq!(
        api(&app, &first.access, "Bearer", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api(&app, &first.access, "DPoP", Some(&thief)).await,
        StatusCode::UNAUTHORIZED
    );

    // The refresh cookie stolen: without a proof, with the thief's key,
    // with the owner's proof for another URL, all refused, nothing rotated.
    let stolen = first.refresh.clone();
    for (what, p) in [
        ("no proof", Proof::None),
        ("another key", Proof::By(&thief)),
        ("another URL", Proof::ForPath(&owner, "/auth/logout")),
    ] {
        let resp = post_token(&app, "/auth/refresh", &stolen, false, p).await;
        assert_proof_refused(&resp, what);
    }
    // Nor can the thief end the owner's devices.
    for path in ["/auth/logout", "/auth/logout-everywhere"] {
        let resp = post_token(&app, path, &stolen, false, Proof::By(&thief)).await;
        assert_proof_refused(&resp, path);
    }

    // The owner refreshes with that very token: the family was not burnt.
    let owner_proof = proof(&app, &owner, "POST", "/auth/refresh", None);
    let second = pair(
        post_token(
            &app,
            "/auth/refresh",
            &first.refresh,
            false,
            Proof::Exact(&owner_proof),
        )
        .await,
    )
    .await;
    assert_eq!(second.body["token_type"], "DPoP");
    assert_eq!(
        payload(&second.access)["cnf"],
        json!({ "jkt": jkt(&owner) })
    );
    assert_eq!(
        api(&app, &second.access, "DPoP", Some(&owner)).await,
        StatusCode::OK
    );

    // A captured proof does not work twice, even with the new token.
    let resp = post_token(
        &app,
        "/auth/refresh",
        &second.refresh,
        false,
        Proof::Exact(&owner_proof),
    )
    .await;
    assert_proof_refused(&resp, "a replayed proof");

    // And the owner goes on.
    let third = pair(
        post_token(
            &app,
            "/auth/refresh",
            &second.refresh,
            false,
            Proof::By(&owner),
        )
        .await,
    )
    .await;
    assert_eq!(
        api(&app, &third.access, "DPoP", Some(&owner)).await,
        StatusCode::OK
    );

    // Each refusal is a refresh-layer failure with the proof's reason.
    let reasons: Vec<String> = app
        .metrics
        .points(
            DECISION_DURATION,
            &[(LAYER, "refresh"), (RESULT, "failure")],
        )
        .iter()
        .filter_map(|p| p.attr(ERROR_TYPE).map(str::to_owned))
        .collect();
    for reason in [
        "dpop-missing",
        "dpop-key-mismatch",
        "dpop-htu",
        "dpop-replay",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
}

#[tokio::test]
async fn memory_store_binds_the_family_to_the_login_key() {
    a_bound_family_needs_its_key(Arc::new(MemoryRefreshStore::new())).await;
}

#[tokio::test]
async fn redis_store_binds_the_family_to_the_login_key() {
    let server = RedisServer::start();
    let backend = RedisConfig::new(server.url())
        .key_prefix("dpop")
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    a_bound_family_needs_its_key(Arc::new(RedisRefreshStore::new(backend))).await;
    drop(server);
}

#[tokio::test]
async fn postgres_store_binds_the_family_to_the_login_key() {
    let url = PgServer::shared().fresh_database();
    let pool = PgPoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect(&url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    backend.migrate().await.unwrap();
    a_bound_family_needs_its_key(Arc::new(PgRefreshStore::new(&backend))).await;
}

#[tokio::test]
async fn sqlite_store_binds_the_family_to_the_login_key() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("auth.db"))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect_with(options)
        .await
        .unwrap();
    let backend = SqliteConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    backend.migrate().await.unwrap();
    a_bound_family_needs_its_key(Arc::new(SqliteRefreshStore::new(&backend))).await;
}

#[tokio::test]
async fn a_stolen_body_token_without_the_key_is_refused_and_the_owner_keeps_refreshing() {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Accepted).await;
    let owner = key("owner");
    let thief = key("thief");
    let first = pair(login(&app, "alice", Some(&owner), true).await).await;
    assert!(first.body["refresh_token"].is_string(), "body transport");
    for p in [Proof::None, Proof::By(&thief)] {
        let resp = post_token(&app, "/auth/refresh", &first.refresh, true, p).await;
        assert_proof_refused(&resp, "stolen body token");
    }
    let next = pair(
        post_token(
            &app,
            "/auth/refresh",
            &first.refresh,
            true,
            Proof::By(&owner),
        )
        .await,
    )
    .await;
    assert_eq!(payload(&next.access)["cnf"], json!({ "jkt": jkt(&owner) }));
}

#[tokio::test]
async fn an_unbound_login_stays_a_bearer_family_when_dpop_is_only_accepted() {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Accepted).await;
    let first = pair(login(&app, "alice", None, false).await).await;
    assert_eq!(first.body["token_type"], "Bearer");
    assert!(payload(&first.access).get("cnf").is_none());
    assert_eq!(
        api(&app, &first.access, "Bearer", None).await,
        StatusCode::OK
    );
    let next =
        pair(post_token(&app, "/auth/refresh", &first.refresh, false, Proof::None).await).await;
    assert_eq!(next.body["token_type"], "Bearer");
}

#[tokio::test]
async fn dpop_required_refuses_logins_without_a_valid_proof_and_stores_nothing() {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Required).await;
    let owner = key("owner");
    let resp = login(&app, "alice", None, false).await;
    assert_proof_refused(&resp, "no proof");
    // A proof for another URL (here: the refresh endpoint) does not log in.
    let resp = client()
        .post(app.server.url("/auth/login/alice"))
        .header("dpop", proof(&app, &owner, "POST", "/auth/refresh", None))
        .send()
        .await
        .unwrap();
    assert_proof_refused(&resp, "a proof for another URL");
    assert!(
        app.store
            .list_user("alice", app.clock.now())
            .await
            .unwrap()
            .is_empty(),
        "no family started"
    );
    let bound = pair(login(&app, "alice", Some(&owner), false).await).await;
    assert_eq!(bound.body["token_type"], "DPoP");
}

#[tokio::test]
async fn a_family_from_before_dpop_was_required_cannot_refresh() {
    let store: Arc<dyn RefreshStore> = Arc::new(MemoryRefreshStore::new());
    let before = start(store.clone(), DpopPolicy::Accepted).await;
    let old = pair(login(&before, "alice", None, false).await).await;
    let after = start(store, DpopPolicy::Required).await;
    let owner = key("owner");
    let resp = post_token(
        &after,
        "/auth/refresh",
        &old.refresh,
        false,
        Proof::By(&owner),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}=;"))),
        "the dead cookie is cleared: log in again"
    );
}

#[tokio::test]
async fn a_login_with_an_invalid_proof_is_refused_not_issued_unbound() {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Accepted).await;
    let owner = key("owner");
    let resp = client()
        .post(app.server.url("/auth/login/alice"))
        .header(
            "dpop",
            proof(&app, &owner, "GET", "/auth/login/alice", None),
        )
        .send()
        .await
        .unwrap();
    assert_proof_refused(&resp, "a proof for another method");
    assert!(
        app.store
            .list_user("alice", app.clock.now())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_bearer_policy_binds_no_new_family() {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Bearer).await;
    let first = pair(login(&app, "alice", Some(&key("owner")), false).await).await;
    assert_eq!(first.body["token_type"], "Bearer");
    assert!(payload(&first.access).get("cnf").is_none());
}

#[tokio::test]
async fn the_device_endpoints_take_a_bound_caller_with_its_proof_only() {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Accepted).await;
    let owner = key("owner");
    let first = pair(login(&app, "alice", Some(&owner), false).await).await;
    let sessions = |scheme: &'static str, key: Option<SigningKey>| {
        let mut req = client()
            .get(app.server.url("/auth/sessions"))
            .header("authorization", format!("{scheme} {}", first.access));
        if let Some(k) = key {
            req = req.header(
                "dpop",
                proof(&app, &k, "GET", "/auth/sessions", Some(&first.access)),
            );
        }
        req.send()
    };
    let resp = sessions("DPoP", Some(owner.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    for (scheme, k) in [
        ("DPoP", Some(key("thief"))),
        ("DPoP", None),
        ("Bearer", None),
    ] {
        let resp = sessions(scheme, k).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{scheme}");
    }
}

#[tokio::test]
async fn the_refresher_api_without_a_request_binds_with_a_checked_proof_and_refreshes_no_bound_family()
 {
    let app = start(Arc::new(MemoryRefreshStore::new()), DpopPolicy::Required).await;
    let owner = key("owner");
    // Unbound under "required": refused before anything is stored.
    let err = app.refresher.login("alice").issue().await.unwrap_err();
    assert_eq!(err.reason(), "dpop-missing");
    // A proof the application checked at its own login route binds.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "dpop",
        proof(&app, &owner, "POST", "/login", None).parse().unwrap(),
    );
    let checked = app
        .verifier
        .check(
            &http::Method::POST,
            &"/login".parse().unwrap(),
            &headers,
            None,
        )
        .await
        .unwrap();
    let pair = app
        .refresher
        .login("alice")
        .dpop(&checked)
        .issue()
        .await
        .unwrap();
    assert_eq!(pair.access.jkt.as_deref(), Some(jkt(&owner).as_str()));
    assert_eq!(pair.access.to_response().token_type, "DPoP");
    // No request, no proof: a bound family does not refresh here, and
    // nothing rotates (the token still refreshes over HTTP with the key).
    let err = app
        .refresher
        .refresh(&pair.refresh, portcullis::refresh::DeviceInfo::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "dpop-missing");
    let resp = post_token(
        &app,
        "/auth/refresh",
        &pair.refresh.to_encoded(),
        false,
        Proof::By(&owner),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bound_family_refreshed_by_an_instance_without_dpop_mints_nothing() {
    let store: Arc<dyn RefreshStore> = Arc::new(MemoryRefreshStore::new());
    let with = start(store.clone(), DpopPolicy::Accepted).await;
    let owner = key("owner");
    let first = pair(login(&with, "alice", Some(&owner), false).await).await;
    let without = start_on(store, None).await;
    let resp = post_token(
        &without,
        "/auth/refresh",
        &first.refresh,
        false,
        Proof::By(&owner),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
}

#[tokio::test]
async fn a_replay_cache_outage_is_a_503_that_consumes_nothing() {
    let cache = SwitchableCache {
        inner: Arc::new(MemoryReplayCache::new(1024)),
        down: Arc::new(AtomicBool::new(false)),
    };
    let app = start_full(
        Arc::new(MemoryRefreshStore::new()),
        Some(DpopPolicy::Accepted),
        Some(cache.clone()),
        false,
        None,
    )
    .await;
    let owner = key("owner");
    let first = pair(login(&app, "alice", Some(&owner), false).await).await;
    cache.down.store(true, Ordering::SeqCst);
    let resp = post_token(
        &app,
        "/auth/refresh",
        &first.refresh,
        false,
        Proof::By(&owner),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(set_cookies(&resp).is_empty(), "the cookie is kept");
    cache.down.store(false, Ordering::SeqCst);
    let next = pair(
        post_token(
            &app,
            "/auth/refresh",
            &first.refresh,
            false,
            Proof::By(&owner),
        )
        .await,
    )
    .await;
    assert_eq!(next.body["token_type"], "DPoP");
}

#[tokio::test]
async fn server_nonces_are_handed_out_and_required_at_login_and_refresh() {
    let app = start_full(
        Arc::new(MemoryRefreshStore::new()),
        Some(DpopPolicy::Accepted),
        None,
        true,
        None,
    )
    .await;
    let owner = key("owner");
    let signed = |method: &str, path: &str, nonce: Option<&str>| {
        let now = app.clock.now().secs();
        sign_proof(&owner, method, &format!("{ORIGIN}{path}"), now, None, nonce).unwrap()
    };
    // No nonce: 401 use_dpop_nonce, and the nonce to use.
    let resp = client()
        .post(app.server.url("/auth/login/alice"))
        .header("dpop", signed("POST", "/auth/login/alice", None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("use_dpop_nonce"), "{challenge}");
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    // With it: bound.
    let first = pair(
        client()
            .post(app.server.url("/auth/login/alice"))
            .header("dpop", signed("POST", "/auth/login/alice", Some(&nonce)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.body["token_type"], "DPoP");
    // The refresh needs one too; nothing is consumed without it.
    let proof = signed("POST", "/auth/refresh", None);
    let resp = post_token(
        &app,
        "/auth/refresh",
        &first.refresh,
        false,
        Proof::Exact(&proof),
    )
    .await;
    assert_proof_refused(&resp, "a refresh without the nonce");
    assert!(resp.headers().contains_key("dpop-nonce"));
    let proof = signed("POST", "/auth/refresh", Some(&nonce));
    let next = pair(
        post_token(
            &app,
            "/auth/refresh",
            &first.refresh,
            false,
            Proof::Exact(&proof),
        )
        .await,
    )
    .await;
    assert_eq!(next.body["token_type"], "DPoP");
}

/// The whole app under axum's `Router::nest("/v1", …)`: the login, the
/// refresh endpoints and the API check `htu` against the path the client
/// called, prefix included. A proof naming the stripped path (what the
/// nested services see) is refused and consumes nothing; one naming the
/// whole path passes.
#[tokio::test]
async fn under_router_nest_proofs_name_the_path_the_client_called() {
    let app = start_full(
        Arc::new(MemoryRefreshStore::new()),
        Some(DpopPolicy::Accepted),
        None,
        false,
        Some("/v1"),
    )
    .await;
    let owner = key("owner");
    let login_at = |proof_path: &str| {
        client()
            .post(app.server.url("/v1/auth/login/alice"))
            .header("dpop", proof(&app, &owner, "POST", proof_path, None))
            .send()
    };
    let resp = login_at("/auth/login/alice").await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "the stripped path");
    let first = pair(login_at("/v1/auth/login/alice").await.unwrap()).await;
    assert_eq!(first.body["token_type"], "DPoP");
    assert_eq!(payload(&first.access)["cnf"], json!({ "jkt": jkt(&owner) }));

    let resp = post_token(
        &app,
        "/v1/auth/refresh",
        &first.refresh,
        false,
        Proof::ForPath(&owner, "/auth/refresh"),
    )
    .await;
    assert_proof_refused(&resp, "a refresh proof for the stripped path");
    let second = pair(
        post_token(
            &app,
            "/v1/auth/refresh",
            &first.refresh,
            false,
            Proof::By(&owner),
        )
        .await,
    )
    .await;

    let me = |path: &'static str| {
        let req = client()
            .get(app.server.url("/v1/api/me"))
            .header("authorization", format!("DPoP {}", second.access))
            .header(
                "dpop",
                proof(&app, &owner, "GET", path, Some(&second.access)),
            );
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(me("/api/me").await, StatusCode::UNAUTHORIZED);
    assert_eq!(me("/v1/api/me").await, StatusCode::OK);

    let resp = post_token(
        &app,
        "/v1/auth/logout",
        &second.refresh,
        false,
        Proof::ForPath(&owner, "/auth/logout"),
    )
    .await;
    assert_proof_refused(&resp, "a logout proof for the stripped path");
    let resp = post_token(
        &app,
        "/v1/auth/logout",
        &second.refresh,
        false,
        Proof::By(&owner),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = post_token(
        &app,
        "/v1/auth/refresh",
        &second.refresh,
        false,
        Proof::By(&owner),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "logged out");
}
