//! The resource server's configuration, through real servers on real
//! sockets: OpenID Connect discovery (the provider played by a small axum
//! app on loopback serving its discovery document and JWKS), several
//! issuers chosen by `iss` before any key is touched, RFC 9728 protected
//! resource metadata, and RFC 8707 resource indicators as the audience.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use portcullis::core::events::{AuthEventKind, Events};
use portcullis::core::{Clock, ManualClock};
use portcullis::jwt::issuers::{Issuer, IssuerSet};
use portcullis::jwt::jwks::{Discovery, DiscoveryError};
use portcullis::jwt::metadata::ProtectedResourceMetadata;
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis_tests::jwt_app::{P256_PRIVATE, forge, me, serve_subject};
use portcullis_tests::refresh_app::EventLog;
use portcullis_tests::{TestServer, client};
use serde_json::json;

/// An OpenID provider on loopback: its discovery document (whose
/// `issuer` and `jwks_uri` a test may change), its JWKS, each countable
/// and able to fail.
#[derive(Clone, Default)]
struct Provider {
    base: Arc<Mutex<String>>,
    issuer_claimed: Arc<Mutex<Option<String>>>,
    jwks_uri: Arc<Mutex<Option<String>>>,
    jwks: Arc<Mutex<String>>,
    discovery_down: Arc<AtomicBool>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
}

/// A provider and its server (stopped when dropped).
struct Running {
    provider: Provider,
    _server: TestServer,
}

impl std::ops::Deref for Running {
    type Target = Provider;
    fn deref(&self) -> &Provider {
        &self.provider
    }
}

impl Provider {
    async fn start() -> Running {
        let provider = Self::default();
        let (d, j) = (provider.clone(), provider.clone());
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let p = d.clone();
                    async move {
                        p.discovery_hits.fetch_add(1, Ordering::SeqCst);
                        if p.discovery_down.load(Ordering::SeqCst) {
                            return (StatusCode::SERVICE_UNAVAILABLE, String::new());
                        }
                        let base = p.base.lock().unwrap().clone();
                        let doc = json!({
                            "issuer": p.issuer_claimed.lock().unwrap().clone().unwrap_or_else(|| base.clone()),
                            "jwks_uri": p.jwks_uri.lock().unwrap().clone().unwrap_or_else(|| format!("{base}/jwks.json")),
                            "introspection_endpoint": format!("{base}/introspect"),
                            "token_endpoint": format!("{base}/token"),
                            "dpop_signing_alg_values_supported": ["ES256"],
                        });
                        (StatusCode::OK, doc.to_string())
                    }
                }),
            )
            .route(
                "/jwks.json",
                get(move || {
                    let p = j.clone();
                    async move {
                        p.jwks_hits.fetch_add(1, Ordering::SeqCst);
                        p.jwks.lock().unwrap().clone()
                    }
                }),
            );
        let server = TestServer::start(app).await;
        *provider.base.lock().unwrap() = server.url("");
        Running {
            provider,
            _server: server,
        }
    }

    /// The issuer identifier: `http://127.0.0.1:port`.
    fn issuer(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    fn hits(&self) -> usize {
        self.discovery_hits.load(Ordering::SeqCst) + self.jwks_hits.load(Ordering::SeqCst)
    }

    /// A token issuer for this provider signing with `key`, for
    /// `audience`, on `clock`; its JWKS is what the provider serves.
    fn minting(&self, key: SigningKey, audience: &str, clock: &Arc<ManualClock>) -> JwtIssuer {
        let issuer = JwtIssuer::builder(key)
            .issuer(self.issuer())
            .audience(audience)
            .clock(clock.clone())
            .build()
            .unwrap();
        *self.jwks.lock().unwrap() = issuer.jwks_json();
        issuer
    }

    /// Lazy discovery of this provider on `clock`.
    fn discovery(&self, clock: &Arc<ManualClock>) -> Discovery {
        Discovery::builder(self.issuer())
            .clock(clock.clone())
            .build()
            .unwrap()
    }
}

fn es256(kid: &str) -> SigningKey {
    SigningKey::generate(kid, Algorithm::ES256).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_now())
}

/// The reasons of the `jwt_refused` events in `log` so far.
fn refusals(log: &EventLog) -> Vec<&'static str> {
    log.all()
        .iter()
        .filter_map(|e| match e.kind {
            AuthEventKind::JwtRefused { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

/// The issuer URL alone is enough: the first token discovers the provider
/// (document, then its `jwks_uri`), later ones use what was found; the
/// metadata is there for the other layers (the introspection endpoint).
#[tokio::test]
async fn discovery_happy_path() {
    let clock = clock();
    let op = Provider::start().await;
    let minting = op.minting(es256("k1"), "api", &clock);
    let discovery = op.discovery(&clock);
    let layer = JwtLayer::builder_discovery(discovery.clone())
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    assert_eq!(op.hits(), 0, "lazy: nothing fetched before a token");

    let token = minting.token("alice").mint().unwrap().token;
    assert_eq!(me(&rs, &token).await, StatusCode::OK);
    let body = client()
        .get(rs.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "alice");
    assert_eq!(op.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 1);

    let md = discovery.current().expect("discovered");
    assert_eq!(md.issuer(), op.issuer());
    assert_eq!(md.jwks_uri(), format!("{}/jwks.json", op.issuer()));
    assert_eq!(
        md.introspection_endpoint(),
        Some(format!("{}/introspect", op.issuer()).as_str())
    );
    assert_eq!(
        md.string("token_endpoint"),
        Some(format!("{}/token", op.issuer()).as_str())
    );
    assert_eq!(
        md.strings("dpop_signing_alg_values_supported"),
        Some(vec!["ES256"])
    );
    // The eager form finds the same document.
    let fetched = Discovery::fetch(op.issuer()).await.unwrap();
    assert_eq!(
        fetched.introspection_endpoint(),
        md.introspection_endpoint()
    );

    // Another provider's token (same kid, another key) is refused.
    let stranger = JwtIssuer::builder(es256("k1"))
        .issuer(op.issuer())
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    let forged = stranger.token("mallory").mint().unwrap().token;
    assert_eq!(me(&rs, &forged).await, StatusCode::UNAUTHORIZED);
}

/// Concurrent first tokens share one discovery and one key fetch, and all
/// pass.
#[tokio::test]
async fn concurrent_first_tokens_share_one_discovery() {
    let clock = clock();
    let op = Provider::start().await;
    let minting = op.minting(es256("k1"), "api", &clock);
    let layer = JwtLayer::builder_discovery(op.discovery(&clock))
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    let tokens: Vec<String> = (0..8)
        .map(|i| minting.token(format!("user{i}")).mint().unwrap().token)
        .collect();
    let statuses = futures_util::future::join_all(tokens.iter().map(|t| me(&rs, t))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(op.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 1);
}

/// A discovery document naming another issuer than the one configured (a
/// spoofed or misdirected provider) is refused: no key from it is ever
/// used, its `jwks_uri` is never fetched, and tokens get a 503 (the keys
/// are unavailable), not a pass.
#[tokio::test]
async fn discovery_document_naming_another_issuer_is_refused() {
    let clock = clock();
    let op = Provider::start().await;
    let minting = op.minting(es256("k1"), "api", &clock);
    let token = minting.token("alice").mint().unwrap().token;
    for claimed in [
        "https://id.example.com".to_owned(),
        format!("{}/", op.issuer()),
        op.issuer().to_uppercase(),
    ] {
        *op.issuer_claimed.lock().unwrap() = Some(claimed.clone());
        let err = Discovery::fetch(op.issuer()).await.unwrap_err();
        assert!(
            matches!(err, DiscoveryError::IssuerMismatch),
            "{claimed}: {err:?}"
        );

        let layer = JwtLayer::builder_discovery(op.discovery(&clock))
            .audience("api")
            .clock(clock.clone())
            .build()
            .unwrap();
        let rs = serve_subject(layer).await;
        assert_eq!(
            me(&rs, &token).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "{claimed}"
        );
    }
    assert_eq!(
        op.jwks_hits.load(Ordering::SeqCst),
        0,
        "jwks_uri never fetched"
    );
}

/// A `jwks_uri` on plain http to a host that is not loopback is refused
/// (by discovery itself, before any key source exists).
#[tokio::test]
async fn jwks_uri_on_plain_http_is_refused() {
    let clock = clock();
    let op = Provider::start().await;
    let minting = op.minting(es256("k1"), "api", &clock);
    *op.jwks_uri.lock().unwrap() = Some("http://keys.example.com/jwks.json".into());
    let err = Discovery::fetch(op.issuer()).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::InsecureEndpoint("jwks_uri")),
        "{err:?}"
    );
    let discovery = op.discovery(&clock);
    let layer = JwtLayer::builder_discovery(discovery.clone())
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    let token = minting.token("alice").mint().unwrap().token;
    assert_eq!(me(&rs, &token).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(discovery.keys().is_none(), "no key source was started");
    assert!(matches!(
        discovery.metadata().await.unwrap_err(),
        DiscoveryError::CoolingDown
    ));
}

/// The provider down: 503 with `Retry-After` (never 401), no new attempt
/// within the cooldown, then the first token after it discovers and
/// passes.
#[tokio::test]
async fn discovery_endpoint_down_is_503_then_recovers() {
    let clock = clock();
    let op = Provider::start().await;
    let minting = op.minting(es256("k1"), "api", &clock);
    op.discovery_down.store(true, Ordering::SeqCst);
    let layer = JwtLayer::builder_discovery(op.discovery(&clock))
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    let token = minting.token("alice").mint().unwrap().token;

    let res = client()
        .get(rs.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(op.discovery_hits.load(Ordering::SeqCst), 1);

    // Within the cooldown: 503 again, and no new attempt.
    clock.advance(Duration::from_secs(5));
    assert_eq!(me(&rs, &token).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(op.discovery_hits.load(Ordering::SeqCst), 1);

    // Back up, cooldown over: discovered, verified.
    op.discovery_down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(6));
    assert_eq!(me(&rs, &token).await, StatusCode::OK);
    assert_eq!(op.discovery_hits.load(Ordering::SeqCst), 2);
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 1);
}

/// Two providers, each discovered lazily, each with its own keys and its
/// own audience: a token passes only by its own issuer's rules.
#[tokio::test]
async fn several_issuers_each_with_own_keys_and_audiences() {
    let clock = clock();
    let (a, b) = (Provider::start().await, Provider::start().await);
    let (key_a, key_b) = (es256("a1"), es256("b1"));
    let aud_b = "https://rs.example.com/api";
    let mint_a = a.minting(key_a.clone(), "api-a", &clock);
    let mint_b = b.minting(key_b.clone(), aud_b, &clock);
    let set = IssuerSet::new([
        Issuer::from_discovery(a.discovery(&clock)).audience("api-a"),
        Issuer::from_discovery(b.discovery(&clock)).audience(aud_b),
    ])
    .unwrap();
    let events = Events::new();
    let log = EventLog::new(&events);
    let layer = JwtLayer::builder_issuers(set)
        .clock(clock.clone())
        .events(events)
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;

    let ta = mint_a.token("alice").mint().unwrap().token;
    let tb = mint_b.token("bob").mint().unwrap().token;
    assert_eq!(me(&rs, &ta).await, StatusCode::OK);
    assert_eq!(me(&rs, &tb).await, StatusCode::OK);
    // Each issuer's keys fetched once, the cache serving repeats.
    assert_eq!(me(&rs, &ta).await, StatusCode::OK);
    assert_eq!((a.hits(), b.hits()), (2, 2));

    // Each issuer's own key, minting for the other issuer's audience: the
    // audience checked is the token's issuer's.
    let crossed = |key: &SigningKey, iss: String, aud: &str| {
        JwtIssuer::builder(key.clone())
            .issuer(iss)
            .audience(aud)
            .clock(clock.clone())
            .build()
            .unwrap()
            .token("mallory")
            .mint()
            .unwrap()
            .token
    };
    let a_for_b = crossed(&key_a, a.issuer(), aud_b);
    let b_for_a = crossed(&key_b, b.issuer(), "api-a");
    assert_eq!(me(&rs, &a_for_b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&rs, &b_for_a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(refusals(&log), ["bad-audience", "bad-audience"]);
    assert_eq!((a.hits(), b.hits()), (2, 2));
}

/// A token whose `iss` is missing or not in the set is refused (401,
/// `bad-issuer`) before any key is looked up: no provider sees a request,
/// neither the trusted ones nor the one the token came from.
#[tokio::test]
async fn unknown_issuer_is_401_without_any_fetch() {
    let clock = clock();
    let (a, b, evil) = (
        Provider::start().await,
        Provider::start().await,
        Provider::start().await,
    );
    let set = IssuerSet::new([
        Issuer::from_discovery(a.discovery(&clock)).audience("api"),
        Issuer::from_discovery(b.discovery(&clock)).audience("api"),
    ])
    .unwrap();
    let events = Events::new();
    let log = EventLog::new(&events);
    let layer = JwtLayer::builder_issuers(set)
        .clock(clock.clone())
        .events(events)
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;

    let from_evil = evil
        .minting(es256("e1"), "api", &clock)
        .token("mallory")
        .mint()
        .unwrap()
        .token;
    // Without `iss`, and with `iss: null`.
    let now = clock.now().secs() as i64;
    let no_iss = |payload: serde_json::Value| {
        forge(
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": "e1"}).to_string(),
            &payload.to_string(),
            Algorithm::ES256,
            P256_PRIVATE,
        )
    };
    let without = no_iss(json!({"sub": "mallory", "aud": "api", "iat": now, "exp": now + 600}));
    let null =
        no_iss(json!({"iss": null, "sub": "mallory", "aud": "api", "iat": now, "exp": now + 600}));
    let near_miss = JwtIssuer::builder(es256("a1"))
        .issuer(format!("{}/", a.issuer()))
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap()
        .token("mallory")
        .mint()
        .unwrap()
        .token;
    for token in [from_evil, without, null, near_miss] {
        assert_eq!(me(&rs, &token).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refusals(&log), ["bad-issuer"; 4]);
    assert_eq!(
        (a.hits(), b.hits(), evil.hits()),
        (0, 0, 0),
        "no provider was asked anything"
    );
}

/// A token signed with issuer A's key (whose `kid` issuer B's JWKS also
/// lists, for another key) that claims to come from B is checked with B's
/// keys only: refused.
#[tokio::test]
async fn a_token_signed_by_one_issuer_claiming_another_is_refused() {
    let clock = clock();
    let (a, b) = (Provider::start().await, Provider::start().await);
    let key_a = es256("k1");
    let mint_a = a.minting(key_a.clone(), "api", &clock);
    let mint_b = b.minting(es256("k1"), "api", &clock);
    let set = IssuerSet::new([
        Issuer::from_discovery(a.discovery(&clock)).audience("api"),
        Issuer::from_discovery(b.discovery(&clock)).audience("api"),
    ])
    .unwrap();
    let events = Events::new();
    let log = EventLog::new(&events);
    let layer = JwtLayer::builder_issuers(set)
        .clock(clock.clone())
        .events(events)
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    // Both issuers' keys loaded.
    for t in [&mint_a, &mint_b] {
        let token = t.token("alice").mint().unwrap().token;
        assert_eq!(me(&rs, &token).await, StatusCode::OK);
    }

    let claims_b = JwtIssuer::builder(key_a)
        .issuer(b.issuer())
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap()
        .token("mallory")
        .mint()
        .unwrap()
        .token;
    assert_eq!(me(&rs, &claims_b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(refusals(&log), ["bad-signature"]);
}

/// Keys come from the configured issuers' sources only: a token naming
/// another JWKS (`jku`, `x5u`, a `jwks_uri` of a provider not in the set)
/// never makes the layer fetch it.
#[tokio::test]
async fn a_jwks_served_by_an_issuer_not_in_the_set_is_never_fetched() {
    let clock = clock();
    let (a, evil) = (Provider::start().await, Provider::start().await);
    let mint_a = a.minting(es256("a1"), "api", &clock);
    // The attacker publishes the key that signs the forged tokens.
    let evil_key = SigningKey::from_pkcs8_pem("a1", Algorithm::ES256, P256_PRIVATE).unwrap();
    let mint_evil = evil.minting(evil_key, "api", &clock);
    let set =
        IssuerSet::new([Issuer::from_discovery(a.discovery(&clock)).audience("api")]).unwrap();
    let layer = JwtLayer::builder_issuers(set)
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    assert_eq!(
        me(&rs, &mint_a.token("alice").mint().unwrap().token).await,
        StatusCode::OK
    );

    let now = clock.now().secs() as i64;
    let payload =
        json!({"iss": a.issuer(), "sub": "mallory", "aud": "api", "iat": now, "exp": now + 600})
            .to_string();
    let jwks_url = format!("{}/jwks.json", evil.issuer());
    for header in [
        json!({"alg": "ES256", "typ": "at+jwt", "kid": "a1", "jku": jwks_url}),
        json!({"alg": "ES256", "typ": "at+jwt", "kid": "evil", "jku": jwks_url}),
        json!({"alg": "ES256", "typ": "at+jwt", "kid": "a1", "x5u": jwks_url}),
    ] {
        let token = forge(
            &header.to_string(),
            &payload,
            Algorithm::ES256,
            P256_PRIVATE,
        );
        assert_eq!(me(&rs, &token).await, StatusCode::UNAUTHORIZED, "{header}");
    }
    // The attacker's own issuer, with its keys at its discovery endpoint.
    let evil_token = mint_evil.token("mallory").mint().unwrap().token;
    assert_eq!(me(&rs, &evil_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(evil.hits(), 0, "the attacker's server saw no request");
}

/// The verified-token cache stays per issuer: a cached token of issuer A is
/// served only while A's source still returns the key that verified it.
#[tokio::test]
async fn cached_tokens_follow_their_own_issuers_keys() {
    let clock = clock();
    let key = |kid| SigningKey::hmac(kid, Algorithm::HS256, &[9; 32]).unwrap();
    let a = JwtIssuer::builder(key("k"))
        .issuer("https://a.example.com")
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    // B: the same kid and the same secret, so a token of A would verify
    // with B's key too.
    let b = JwtIssuer::builder(key("k"))
        .issuer("https://b.example.com")
        .audience("api")
        .clock(clock.clone())
        .build()
        .unwrap();
    let set = IssuerSet::new([
        Issuer::new("https://a.example.com", a.keys()).audience("api"),
        Issuer::new("https://b.example.com", b.keys()).audience("api"),
    ])
    .unwrap();
    let layer = JwtLayer::builder_issuers(set)
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    let ta = a.token("alice").mint().unwrap().token;
    let tb = b.token("bob").mint().unwrap().token;
    assert_eq!(me(&rs, &ta).await, StatusCode::OK);
    assert_eq!(me(&rs, &tb).await, StatusCode::OK);
    // A retires its key: A's cached token is refused at once; B's key
    // (same kid, same secret) does not keep it alive.
    a.rotate(key("k2")).unwrap();
    assert!(a.retire("k").unwrap());
    assert_eq!(me(&rs, &ta).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&rs, &tb).await, StatusCode::OK);
}

/// RFC 9728: the metadata document at its well-known path (suffixed with
/// the resource's path), byte for byte, readable without a token while the
/// resource itself needs one; `HEAD` answers without a body, other methods
/// get 405.
#[tokio::test]
async fn protected_resource_metadata_is_served_exactly() {
    let clock = clock();
    let op = Provider::start().await;
    let minting = op.minting(es256("k1"), "https://rs.example.com/api", &clock);
    let metadata = ProtectedResourceMetadata::builder("https://rs.example.com/api")
        .authorization_server(op.issuer())
        .scopes_supported(["files:read"])
        .resource_name("Files")
        .dpop_signing_alg_values_supported([Algorithm::ES256])
        .dpop_bound_access_tokens_required(false)
        .build()
        .unwrap();
    let layer = JwtLayer::builder_discovery(op.discovery(&clock))
        .audience(metadata.resource())
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/api",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .layer(layer)
        .route_service(&metadata.well_known_path(), metadata.service());
    let rs = TestServer::start(app).await;

    let want = format!(
        concat!(
            r#"{{"resource":"https://rs.example.com/api","authorization_servers":["{}"],"#,
            r#""scopes_supported":["files:read"],"bearer_methods_supported":["header"],"#,
            r#""resource_name":"Files","dpop_signing_alg_values_supported":["ES256"],"#,
            r#""dpop_bound_access_tokens_required":false}}"#
        ),
        op.issuer()
    );
    assert_eq!(
        metadata.url(),
        "https://rs.example.com/.well-known/oauth-protected-resource/api"
    );
    let res = client()
        .get(rs.url("/.well-known/oauth-protected-resource/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.text().await.unwrap(), want);
    let head = client()
        .head(rs.url("/.well-known/oauth-protected-resource/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let post = client()
        .post(rs.url("/.well-known/oauth-protected-resource/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    // The resource itself: no token, 401; a token for it, 200.
    let anon = client().get(rs.url("/api")).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let token = minting.token("alice").mint().unwrap().token;
    let ok = client()
        .get(rs.url("/api"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

/// RFC 8707: a token requested with `resource=<this resource's URL>`
/// carries that URL as `aud`; configured as the audience it passes, and
/// only that exact string does (no case folding, no trailing slash
/// tolerance, no prefix match).
#[tokio::test]
async fn resource_indicator_is_checked_as_the_exact_audience() {
    let clock = clock();
    let resource = "https://rs.example.com/api";
    let key = SigningKey::generate("k1", Algorithm::ES256).unwrap();
    let mint = |aud: &[&str]| {
        aud.iter()
            .fold(
                JwtIssuer::builder(key.clone())
                    .issuer("https://id.example.com")
                    .clock(clock.clone()),
                |b, a| b.audience(*a),
            )
            .build()
            .unwrap()
    };
    let keys = mint(&[resource]).keys();
    let set =
        IssuerSet::new([Issuer::new("https://id.example.com", keys).audience(resource)]).unwrap();
    let layer = JwtLayer::builder_issuers(set)
        .clock(clock.clone())
        .build()
        .unwrap();
    let rs = serve_subject(layer).await;
    for (aud, want) in [
        (&[resource][..], StatusCode::OK),
        (&["https://other.example.com", resource][..], StatusCode::OK),
        (
            &["https://rs.example.com/api/"][..],
            StatusCode::UNAUTHORIZED,
        ),
        (&["https://rs.example.com"][..], StatusCode::UNAUTHORIZED),
        (
            &["https://RS.example.com/api"][..],
            StatusCode::UNAUTHORIZED,
        ),
        (
            &["https://rs.example.com/api/v2"][..],
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let token = mint(aud).token("alice").mint().unwrap().token;
        assert_eq!(me(&rs, &token).await, want, "{aud:?}");
    }
}
