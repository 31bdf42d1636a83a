//! JwtLayer features end to end: revocation, the verified-token cache,
//! remote JWKS, issuer key rotation, scopes and roles, optional mode, token
//! sources, gRPC statuses. Real axum servers on real sockets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis::core::{Clock, ManualClock};
use portcullis::jwt::jwks::RemoteJwks;
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{
    Algorithm, JwtIssuer, JwtLayer, JwtLayerBuilder, KeySet, KeySource, SharedKeys, SigningKey,
    Transport, Validation,
};
use portcullis_tests::TestServer;
use portcullis_tests::jwt_app::{AUD, ISS, JwksServer, ServedApp, issuer_builder, layer_builder};
use reqwest::StatusCode;
use serde_json::json;

fn issuer(alg: Algorithm, kid: &str, clock: Arc<ManualClock>) -> JwtIssuer {
    let key = if alg == Algorithm::HS256 {
        SigningKey::hmac(kid, alg, b"0123456789abcdef0123456789abcdef").unwrap()
    } else {
        SigningKey::generate(kid, alg).unwrap()
    };
    issuer_builder(key, &clock).build().unwrap()
}

/// A builder with this suite's issuer, audience and clock, defaults
/// otherwise.
fn builder(keys: impl KeySource, clock: &Arc<ManualClock>) -> JwtLayerBuilder {
    layer_builder(keys, clock, Validation::default())
}

/// The layer with this suite's issuer, audience and clock, defaults
/// otherwise (the verified-token cache on).
fn strict_layer(keys: impl KeySource, clock: &Arc<ManualClock>) -> JwtLayer {
    builder(keys, clock).build().unwrap()
}

#[tokio::test]
async fn revocation_by_jti_session_and_user_version() {
    let clock = Arc::new(ManualClock::starting_now());
    let store = MemoryRevocationStore::with_clock(clock.clone());
    let iss = issuer_builder(SigningKey::generate("k", Algorithm::ES256).unwrap(), &clock)
        .revocation(store.view())
        .build()
        .unwrap();
    let layer = builder(iss.keys(), &clock)
        .revocation(store.view())
        .build()
        .unwrap();
    let f = ServedApp::start(layer).await;

    let a = iss.token("alice").mint().unwrap();
    let b = iss.token("alice").sid("device-2").mint().unwrap();
    let c = iss.token("bob").mint().unwrap();
    for t in [&a, &b, &c] {
        assert_eq!(f.me(&t.token).await, StatusCode::OK, "cached now (ES256)");
    }
    store.revoke_token(&a.jti, a.expires_at).await.unwrap();
    assert_eq!(
        f.me(&a.token).await,
        StatusCode::UNAUTHORIZED,
        "jti revoked, although cached"
    );
    assert_eq!(f.me(&b.token).await, StatusCode::OK);
    store
        .revoke_session("device-2", b.expires_at)
        .await
        .unwrap();
    assert_eq!(
        f.me(&b.token).await,
        StatusCode::UNAUTHORIZED,
        "sid revoked"
    );
    let c2 = iss.token("bob").sid("d").mint().unwrap();
    store.revoke_user("bob").await.unwrap();
    assert_eq!(
        f.me(&c.token).await,
        StatusCode::UNAUTHORIZED,
        "user version bumped"
    );
    assert_eq!(f.me(&c2.token).await, StatusCode::UNAUTHORIZED);
    let c3 = iss.token("bob").mint().unwrap();
    assert_eq!(
        f.me(&c3.token).await,
        StatusCode::OK,
        "tokens minted after the bump carry the new ver"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 5, "a, b, c, b again, c3");
}

#[tokio::test]
async fn cache_never_serves_past_exp() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::EdDSA, "ed", clock.clone());
    let layer = strict_layer(iss.keys(), &clock);
    let f = ServedApp::start(layer).await;
    let t = iss
        .token("alice")
        .lifetime(Duration::from_secs(60))
        .mint()
        .unwrap();
    assert_eq!(f.me(&t.token).await, StatusCode::OK);
    assert_eq!(
        f.me(&t.token).await,
        StatusCode::OK,
        "served from the cache"
    );
    clock.advance(Duration::from_secs(60 + 5));
    assert_eq!(f.me(&t.token).await, StatusCode::OK, "inside the leeway");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        f.me(&t.token).await,
        StatusCode::UNAUTHORIZED,
        "past exp + leeway: never from the cache"
    );
}

/// The verified-token cache serves a token only while the key source
/// still returns the key that verified it: a key taken out of the set (a
/// compromised key, dropped by the operator) ends its tokens at once, even
/// those the cache has already seen. HMAC tokens are cached too.
#[tokio::test]
async fn removing_a_key_ends_its_cached_tokens_at_once() {
    for alg in [Algorithm::HS256, Algorithm::ES256] {
        let clock = Arc::new(ManualClock::starting_now());
        let old = issuer(alg, "old", clock.clone());
        let new = if alg == Algorithm::HS256 {
            SigningKey::hmac("new", alg, b"fedcba9876543210fedcba9876543210").unwrap()
        } else {
            SigningKey::generate("new", alg).unwrap()
        };
        let keys = SharedKeys::new(
            KeySet::new([
                old.keys().current().iter().next().unwrap().as_ref().clone(),
                new.verifying_key().clone(),
            ])
            .unwrap(),
        );
        let layer = strict_layer(keys.clone(), &clock);
        let f = ServedApp::start(layer).await;
        let t = old.token("alice").mint().unwrap();
        assert_eq!(f.me(&t.token).await, StatusCode::OK, "{alg:?}");
        assert_eq!(f.me(&t.token).await, StatusCode::OK, "{alg:?}: cached");
        // The operator drops the old key.
        keys.replace(KeySet::new([new.verifying_key().clone()]).unwrap());
        assert_eq!(
            f.me(&t.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: a cached token whose key is gone"
        );
        // The same kid now naming another key does not revive it either.
        let other = if alg == Algorithm::HS256 {
            SigningKey::hmac("old", alg, b"a different secret, 32 bytes long").unwrap()
        } else {
            SigningKey::generate("old", alg).unwrap()
        };
        keys.replace(
            KeySet::new([other.verifying_key().clone(), new.verifying_key().clone()]).unwrap(),
        );
        assert_eq!(
            f.me(&t.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: same kid, other key"
        );
    }
}

#[tokio::test]
async fn issuer_rotation_keeps_old_tokens_valid_until_they_expire() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::ES256, "2026-01", clock.clone());
    let layer = builder(iss.keys(), &clock).cache(0).build().unwrap();
    let f = ServedApp::start(layer).await;
    let old = iss.token("alice").mint().unwrap();
    iss.rotate(SigningKey::generate("2026-02", Algorithm::ES256).unwrap())
        .unwrap();
    let new = iss.token("alice").mint().unwrap();
    assert_eq!(
        f.me(&old.token).await,
        StatusCode::OK,
        "retired key still verifies"
    );
    assert_eq!(f.me(&new.token).await, StatusCode::OK);
    let kids: Vec<String> = iss
        .jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, vec!["2026-02", "2026-01"]);
    // Once every old token has expired, the retired key leaves the set.
    clock.advance(Duration::from_secs(15 * 60 + 6));
    iss.rotate(SigningKey::generate("2026-03", Algorithm::ES256).unwrap())
        .unwrap();
    let kids: Vec<String> = iss
        .jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, vec!["2026-03", "2026-02"]);
    assert!(
        iss.rotate(SigningKey::generate("2026-02", Algorithm::ES256).unwrap())
            .is_err(),
        "kid still in use"
    );
}

#[tokio::test]
async fn hmac_keys_are_never_published() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock);
    assert!(iss.jwks().keys.is_empty());
    assert_eq!(iss.jwks_json(), r#"{"keys":[]}"#);
}

#[tokio::test]
async fn roles_and_scopes() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock.clone());
    let layer = strict_layer(iss.keys(), &clock);
    let f = ServedApp::start(layer).await;
    let admin = iss.token("alice").roles(["admin"]).mint().unwrap();
    let user = iss.token("bob").roles(["user"]).mint().unwrap();
    let resp = f.get("/admin", &admin.token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "admin alice");
    let resp = f.get("/admin", &user.token).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"admin\""
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn optional_mode_lets_anonymous_through_but_not_bad_tokens() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock.clone());
    let layer = builder(iss.keys(), &clock).optional().build().unwrap();
    let f = ServedApp::start(layer).await;
    let resp = f.http.get(f.server.url("/me")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "anonymous");
    assert_eq!(f.me("not.a.token").await, StatusCode::UNAUTHORIZED);
    let t = iss.token("alice").mint().unwrap();
    assert_eq!(f.get("/me", &t.token).await.text().await.unwrap(), "alice");
}

#[tokio::test]
async fn cookie_and_header_sources_never_bearer_or_query() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock.clone());
    let t = iss.token("alice").mint().unwrap();
    let cookie_layer = builder(iss.keys(), &clock)
        .transport(Transport::Cookie("__Host-at".into()))
        .build()
        .unwrap();
    let f = ServedApp::start(cookie_layer).await;
    let resp = f
        .http
        .get(f.server.url("/me"))
        .header("cookie", format!("__Host-at={}", t.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        f.me(&t.token).await,
        StatusCode::UNAUTHORIZED,
        "bearer ignored in cookie mode"
    );
    let dup = format!("__Host-at={0}; __Host-at={0}", t.token);
    let resp = f
        .http
        .get(f.server.url("/me"))
        .header("cookie", dup)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "duplicated cookie");

    let header_layer = builder(iss.keys(), &clock)
        .transport(Transport::Header(http::HeaderName::from_static(
            "x-api-token",
        )))
        .build()
        .unwrap();
    let f = ServedApp::start(header_layer).await;
    let resp = f
        .http
        .get(f.server.url("/me"))
        .header("x-api-token", &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn grpc_requests_get_grpc_statuses() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock.clone());
    let layer = strict_layer(iss.keys(), &clock);
    let f = ServedApp::start(layer).await;
    let resp = f
        .http
        .get(f.server.url("/me"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "gRPC errors travel in grpc-status"
    );
    assert_eq!(resp.headers()["grpc-status"], "16");
    let user = iss.token("bob").mint().unwrap();
    let resp = f
        .http
        .get(f.server.url("/admin"))
        .bearer_auth(&user.token)
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["grpc-status"], "7", "PERMISSION_DENIED");
}

#[tokio::test]
async fn configuration_is_checked_at_build() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock);
    assert!(
        JwtLayer::builder(iss.keys()).audience(AUD).build().is_err(),
        "no issuer configured"
    );
    assert!(
        JwtLayer::builder(iss.keys()).issuer(ISS).build().is_err(),
        "no audience configured"
    );
    assert!(
        JwtLayer::builder(iss.keys())
            .allow_any_issuer()
            .allow_any_audience()
            .build()
            .is_ok()
    );
    assert!(
        RemoteJwks::builder("http://auth.example.com/jwks.json")
            .build()
            .is_err(),
        "https required"
    );
}

// ---- remote JWKS ----

struct Remote {
    jwks: JwksServer,
    _jwks_server: TestServer,
    source: RemoteJwks,
    issuer_a: JwtIssuer,
    clock: Arc<ManualClock>,
}

async fn remote() -> Remote {
    let clock = Arc::new(ManualClock::starting_now());
    let issuer_a = issuer(Algorithm::ES256, "a", clock.clone());
    let jwks = JwksServer::new(issuer_a.jwks_json());
    let server = jwks.start().await;
    let source = RemoteJwks::builder(server.url("/jwks.json"))
        .clock(clock.clone())
        .cooldown(Duration::from_secs(10))
        .retry(Duration::from_millis(50))
        .build()
        .unwrap();
    Remote {
        jwks,
        _jwks_server: server,
        source,
        issuer_a,
        clock,
    }
}

fn layer_for(r: &Remote) -> JwtLayer {
    strict_layer(r.source.clone(), &r.clock)
}

#[tokio::test]
async fn remote_jwks_verifies_and_refreshes_on_a_new_kid() {
    let r = remote().await;
    r.source.ready().await;
    let f = ServedApp::start(layer_for(&r)).await;
    let t = r.issuer_a.token("alice").mint().unwrap();
    assert_eq!(f.me(&t.token).await, StatusCode::OK);
    // The issuer rotates; the endpoint now serves both keys.
    r.issuer_a
        .rotate(SigningKey::generate("b", Algorithm::ES256).unwrap())
        .unwrap();
    *r.jwks.doc.lock().unwrap() = r.issuer_a.jwks_json();
    let t2 = r.issuer_a.token("alice").mint().unwrap();
    r.clock.advance(Duration::from_secs(11));
    assert_eq!(
        f.me(&t2.token).await,
        StatusCode::OK,
        "unknown kid triggers a refresh"
    );
}

#[tokio::test]
async fn flood_of_random_kids_costs_a_bounded_number_of_fetches() {
    let r = remote().await;
    r.source.ready().await;
    let f = ServedApp::start(layer_for(&r)).await;
    let attacker = SigningKey::generate("x", Algorithm::ES256).unwrap();
    let attacker_pem = portcullis::jwt::generate_pkcs8_pem(Algorithm::ES256).unwrap();
    let _ = attacker;
    let before = r.jwks.hits.load(Ordering::SeqCst);
    r.clock.advance(Duration::from_secs(11));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let header =
                json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("random-{i}")}).to_string();
            let now = i64::try_from(r.clock.now().secs()).unwrap();
            let p = portcullis_tests::jwt_app::payload("alice", now).to_string();
            let token =
                portcullis_tests::jwt_app::forge(&header, &p, Algorithm::ES256, &attacker_pem);
            f.spawn_me(token)
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let fetched = r.jwks.hits.load(Ordering::SeqCst) - before;
    assert!(fetched <= 1, "200 random kids caused {fetched} fetches");
    assert_eq!(f.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn jwks_outage_is_503_before_any_key_and_last_good_set_kept_after() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::ES256, "a", clock.clone());
    let jwks = JwksServer::new(iss.jwks_json());
    jwks.failing.store(true, Ordering::SeqCst);
    let server = jwks.start().await;
    let source = RemoteJwks::builder(server.url("/jwks.json"))
        .clock(clock.clone())
        .retry(Duration::from_millis(50))
        .build()
        .unwrap();
    let layer = strict_layer(source.clone(), &clock);
    let f = ServedApp::start(layer).await;
    let t = iss.token("alice").mint().unwrap();
    // Wait for the first (failing) attempt.
    for _ in 0..100 {
        if source.fetch_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = f.get("/me", &t.token).await;
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no key ever loaded: 503, not 401"
    );
    assert_eq!(resp.headers()["retry-after"], "1");
    // The endpoint recovers; the background retry loads the keys.
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), source.ready())
        .await
        .unwrap();
    assert_eq!(f.me(&t.token).await, StatusCode::OK);
    // It fails again: the last good set stays.
    jwks.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(11));
    let bogus = json!({"alg": "ES256", "typ": "at+jwt", "kid": "unknown"}).to_string();
    let now = i64::try_from(clock.now().secs()).unwrap();
    let pem = portcullis::jwt::generate_pkcs8_pem(Algorithm::ES256).unwrap();
    let unknown = portcullis_tests::jwt_app::forge(
        &bogus,
        &portcullis_tests::jwt_app::payload("a", now).to_string(),
        Algorithm::ES256,
        &pem,
    );
    assert_eq!(
        f.me(&unknown).await,
        StatusCode::UNAUTHORIZED,
        "unknown kid, refresh failed: still 401"
    );
    let t2 = iss.token("alice").mint().unwrap();
    assert_eq!(
        f.me(&t2.token).await,
        StatusCode::OK,
        "known key still verifies"
    );
}

#[tokio::test]
async fn jwks_with_a_symmetric_key_is_refused() {
    let doc = json!({"keys": [{"kty": "oct", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY", "alg": "HS256", "kid": "s"}]});
    assert!(portcullis::jwt::jwks::key_set_from_json(doc.to_string().as_bytes(), None).is_err());
}

#[tokio::test]
async fn a_revocation_view_not_yet_loaded_fails_closed() {
    use portcullis::jwt::revocation::RevocationView;
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "hs", clock.clone());
    let view = RevocationView::pending(clock.clone());
    let layer = builder(iss.keys(), &clock)
        .revocation(view.clone())
        .build()
        .unwrap();
    let f = ServedApp::start(layer).await;
    let t = iss.token("alice").mint().unwrap();
    let resp = f.get("/me", &t.token).await;
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not a pass while revocations are unknown"
    );
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(f.hits.load(Ordering::SeqCst), 0);
    view.mark_ready();
    assert_eq!(f.me(&t.token).await, StatusCode::OK);
}

/// A valid token on a route whose `Claims<T>` the layer cannot answer (no
/// layer there, or a layer decoding another claims type) gets a 500 that
/// names the fix, never a silent 401; an optional layer without a token
/// keeps its 401 and `Option<Claims>` its `None`.
#[tokio::test]
async fn claims_extractor_names_the_wiring_mistake() {
    use axum::Router;
    use axum::routing::get;
    use portcullis::jwt::Claims;

    #[derive(serde::Deserialize)]
    struct Custom {}

    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer(Algorithm::HS256, "k", clock.clone());
    let layer = builder(iss.keys(), &clock).optional().build().unwrap();
    let app = Router::new()
        .route(
            "/me",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .route("/custom", get(|_: Claims<Custom>| async { "custom" }))
        .route(
            "/maybe",
            get(|c: Option<Claims>| async move { if c.is_some() { "some" } else { "none" } }),
        )
        .layer(layer)
        .route("/outside", get(|_: Claims| async { "outside" }));
    let server = TestServer::start(app).await;
    let http = portcullis_tests::client();
    let token = iss.token("alice").mint().unwrap().token;
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(server.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let me = get("/me", Some(&token)).await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.text().await.unwrap(), "alice");

    let custom = get("/custom", Some(&token)).await.unwrap();
    assert_eq!(custom.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        custom.text().await.unwrap().contains(".claims::<"),
        "names the builder call"
    );

    let outside = get("/outside", Some(&token)).await.unwrap();
    assert_eq!(outside.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        outside
            .text()
            .await
            .unwrap()
            .contains("JwtLayer is not installed on this route"),
        "names the missing layer"
    );

    // The optional layer without a token: 401 from `Claims`, `None` from
    // `Option<Claims>`.
    let anonymous = get("/me", None).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let maybe = get("/maybe", None).await.unwrap();
    assert_eq!(maybe.text().await.unwrap(), "none");
    let maybe = get("/maybe", Some(&token)).await.unwrap();
    assert_eq!(maybe.text().await.unwrap(), "some");
}
