//! Attacks on DPoP (RFC 9449) through `JwtLayer` on a real server, one
//! test each: every proof here is refused, and the handler never runs.
//! `mounts_and_nonces`: `htu` under nested routers and two mounts, the
//! server nonce handed back, and the issuer-set builder's refusals.

mod dpop_support;
#[path = "dpop_attacks/mounts_and_nonces.rs"]
mod mounts_and_nonces;

use std::sync::Arc;
use std::time::Duration;

use dpop_support::{ClientKey, ORIGIN, Rs, b64, challenges, htu, routes};
use portcullis::core::ManualClock;
use portcullis::jwt::dpop::{DpopPolicy, DpopVerifier, MemoryReplayCache};
use portcullis::jwt::{Algorithm, KeySet, SigningKey, Transport, Validation, VerifyingKey};
use portcullis_tests::TestServer;
use portcullis_tests::jwt_app::{
    HS_SECRET, forge, header, hs256, issuer_builder, layer_builder, payload,
};
use serde_json::json;
use sha2::Digest as _;

/// The `DPoP` challenge's error of a refusal (`None`: no such challenge).
fn dpop_error(r: &reqwest::Response) -> Option<String> {
    challenges(r)
        .into_iter()
        .find(|c| c.starts_with("DPoP"))
        .and_then(|c| {
            c.split(", ").find_map(|p| {
                p.strip_prefix("error=\"")
                    .map(|e| e.trim_end_matches('"').to_owned())
            })
        })
}

/// A proof signed by another key than the one the token is bound to: the
/// thumbprint differs from `cnf.jkt`. And a proof that carries the bound
/// key's `jwk` but is signed by another key: the signature fails.
#[tokio::test]
async fn proof_signed_by_another_key_is_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let alice = ClientKey::new(Algorithm::ES256);
    let mallory = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &alice);
    let own_key = mallory.proof("GET", "/me", rs.now(), Some(&token));
    let r = rs.dpop("GET", "/me", &token, &own_key).await;
    assert_eq!(r.status(), 401);
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"));
    let claims = mallory.claims("GET", &htu("/me"), rs.now(), Some(&token));
    let borrowed_jwk = mallory.sign_with(&alice.header(), &claims);
    let r = rs.dpop("GET", "/me", &token, &borrowed_jwk).await;
    assert_eq!(r.status(), 401);
}

/// A proof for another method or URL (path, host, port, scheme) is not
/// valid for this request.
#[tokio::test]
async fn proof_for_another_method_or_url_is_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let cases = [
        ("POST", htu("/me")),
        ("get", htu("/me")),
        ("GET", htu("/admin")),
        ("GET", htu("/me/")),
        ("GET", "https://evil.example.test/me".to_owned()),
        ("GET", "https://api.example.test:8443/me".to_owned()),
        ("GET", "http://api.example.test/me".to_owned()),
        ("GET", "/me".to_owned()),
    ];
    for (htm, url) in cases {
        let claims = key.claims(htm, &url, rs.now(), Some(&token));
        let proof = key.sign_with(&key.header(), &claims);
        let r = rs.dpop("GET", "/me", &token, &proof).await;
        assert_eq!(r.status(), 401, "{htm} {url}");
        assert_eq!(
            dpop_error(&r).as_deref(),
            Some("invalid_dpop_proof"),
            "{htm} {url}"
        );
    }
}

/// A proof is accepted once: replayed (to the same server), it is refused.
#[tokio::test]
async fn replayed_proof_is_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let proof = key.proof("GET", "/me", rs.now(), Some(&token));
    assert_eq!(rs.dpop("GET", "/me", &token, &proof).await.status(), 200);
    let r = rs.dpop("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), 401);
    assert!(challenges(&r)[0].contains("the DPoP proof was used before"));
}

/// Two instances of a service (two layers on two ports) sharing one
/// replay cache: a proof used at one is refused at the other.
#[tokio::test]
async fn replayed_proof_to_another_instance_sharing_the_cache_is_refused() {
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = issuer_builder(
        SigningKey::generate("as", Algorithm::ES256).unwrap(),
        &clock,
    )
    .build()
    .unwrap();
    let shared = Arc::new(MemoryReplayCache::with_clock(1024, clock.clone()));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dpop = DpopVerifier::builder(ORIGIN)
            .clock(clock.clone())
            .replay_cache(Arc::clone(&shared))
            .build()
            .unwrap();
        let layer = layer_builder(issuer.keys(), &clock, Validation::default())
            .dpop(dpop, DpopPolicy::Required)
            .build()
            .unwrap();
        servers.push(TestServer::start(routes(layer, &clock)).await);
    }
    let key = ClientKey::new(Algorithm::ES256);
    let token = issuer
        .token("alice")
        .dpop_jkt(key.jkt.clone())
        .mint()
        .unwrap()
        .token;
    portcullis_tests::secret_scan::register(&token);
    let now = i64::try_from(portcullis::core::Clock::now(&*clock).secs()).unwrap();
    let proof = key.proof("GET", "/me", now, Some(&token));
    let http = portcullis_tests::client();
    let send = |server: &TestServer| {
        http.get(server.url("/me"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", &proof)
            .send()
    };
    assert_eq!(send(&servers[0]).await.unwrap().status(), 200);
    assert_eq!(send(&servers[1]).await.unwrap().status(), 401);
}

/// With an access token, the proof must name it (`ath`): a proof without
/// `ath`, or with another token's, is refused.
#[tokio::test]
async fn proof_without_ath_or_with_the_wrong_one_is_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let other = rs.bound_token("alice-2", &key);
    let without = key.claims("GET", &htu("/me"), rs.now(), None);
    let wrong = key.claims("GET", &htu("/me"), rs.now(), Some(&other));
    for (what, claims) in [("no ath", without), ("wrong ath", wrong)] {
        let proof = key.sign_with(&key.header(), &claims);
        let r = rs.dpop("GET", "/me", &token, &proof).await;
        assert_eq!(r.status(), 401, "{what}");
        assert!(
            challenges(&r)[0].contains("does not name this access token"),
            "{what}"
        );
    }
}

/// `alg: none` (no signature, or any) and HMAC proofs (a shared secret
/// proves nothing) are refused: with the bound key's `jwk`, and with an
/// `oct` jwk for a token bound to that secret's own thumbprint (as if a
/// token endpoint had bound one), where the binding check alone would not
/// stop them.
#[tokio::test]
async fn alg_none_and_hmac_proofs_are_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let oct = json!({"kty": "oct", "k": b64(HS_SECRET)});
    let oct_jkt = b64(&sha2::Sha256::digest(
        format!(r#"{{"k":"{}","kty":"oct"}}"#, b64(HS_SECRET)).as_bytes(),
    ));
    let oct_token = rs
        .issuer
        .token("alice")
        .dpop_jkt(oct_jkt)
        .mint()
        .unwrap()
        .token;
    portcullis_tests::secret_scan::register(&oct_token);
    let input = |header: serde_json::Value, token: &str| {
        let claims = key.claims("GET", &htu("/me"), rs.now(), Some(token));
        format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    };
    let none = input(
        json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk}),
        &token,
    );
    let hs_oct = input(
        json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": oct}),
        &oct_token,
    );
    let hs_ec = input(
        json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk}),
        &token,
    );
    let cases = [
        (&token, format!("{none}.")),
        (&token, format!("{none}.{}", b64(b"sig"))),
        (
            &oct_token,
            format!("{hs_oct}.{}", b64(&hs256(HS_SECRET, hs_oct.as_bytes()))),
        ),
        (
            &token,
            format!("{hs_ec}.{}", b64(&hs256(HS_SECRET, hs_ec.as_bytes()))),
        ),
    ];
    for (token, proof) in cases {
        let r = rs.dpop("GET", "/me", token, &proof).await;
        assert_eq!(r.status(), 401, "{proof}");
        assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"));
    }
}

/// A proof from the future (beyond the 5 s leeway) or too old (beyond the
/// 60 s maximum age) is refused.
#[tokio::test]
async fn proof_from_the_future_or_too_old_is_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    for (what, iat) in [("future", rs.now() + 6), ("old", rs.now() - 61)] {
        let proof = key.proof("GET", "/me", iat, Some(&token));
        let r = rs.dpop("GET", "/me", &token, &proof).await;
        assert_eq!(r.status(), 401, "{what}");
        assert!(
            challenges(&r)[0].contains("too old or from the future"),
            "{what}"
        );
    }
}

/// A DPoP-bound token sent as a bearer token (as a thief without the key
/// would) is refused under every policy, from the `Authorization` header
/// and from a cookie.
#[tokio::test]
async fn dpop_bound_token_sent_as_bearer_is_refused() {
    for policy in [
        DpopPolicy::Bearer,
        DpopPolicy::Accepted,
        DpopPolicy::Required,
    ] {
        let rs = Rs::start(policy, |b| b, false).await;
        let key = ClientKey::new(Algorithm::ES256);
        let token = rs.bound_token("alice", &key);
        let r = rs.bearer("GET", "/me", &token).await;
        assert_eq!(r.status(), 401, "{policy:?}");
        assert!(
            challenges(&r).iter().any(|c| c.contains("invalid_token")),
            "{policy:?}"
        );
    }
    // From a cookie.
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = issuer_builder(
        SigningKey::generate("as", Algorithm::ES256).unwrap(),
        &clock,
    )
    .build()
    .unwrap();
    let layer = layer_builder(issuer.keys(), &clock, Validation::default())
        .transport(Transport::Cookie("at".into()))
        .build()
        .unwrap();
    let server = TestServer::start(routes(layer, &clock)).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = issuer
        .token("alice")
        .dpop_jkt(key.jkt.clone())
        .mint()
        .unwrap()
        .token;
    portcullis_tests::secret_scan::register(&token);
    let r = portcullis_tests::client()
        .get(server.url("/me"))
        .header("cookie", format!("at={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// A token bound by another confirmation method (an mTLS certificate's
/// `x5t#S256`, RFC 8705), which this layer cannot check, is refused as a
/// bearer token too.
#[tokio::test]
async fn token_bound_by_another_confirmation_method_is_refused_as_bearer() {
    let clock = Arc::new(ManualClock::starting_now());
    let key = VerifyingKey::hmac(Some("k"), Algorithm::HS256, HS_SECRET).unwrap();
    let layer = layer_builder(KeySet::new([key]).unwrap(), &clock, Validation::default())
        .build()
        .unwrap();
    let server = TestServer::start(routes(layer, &clock)).await;
    let now = i64::try_from(portcullis::core::Clock::now(&*clock).secs()).unwrap();
    let mut claims = payload("alice", now);
    let unbound = forge(
        &header("HS256", Some("k")).to_string(),
        &claims.to_string(),
        Algorithm::HS256,
        HS_SECRET,
    );
    claims["cnf"] = json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"});
    let bound = forge(
        &header("HS256", Some("k")).to_string(),
        &claims.to_string(),
        Algorithm::HS256,
        HS_SECRET,
    );
    let http = portcullis_tests::client();
    for (token, want) in [(unbound, 200), (bound, 401)] {
        portcullis_tests::secret_scan::register(&token);
        let r = http
            .get(server.url("/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
}

/// A proof whose `jwk` carries the private key (`d`) is refused even
/// though its signature verifies: a leaked key proves nothing.
#[tokio::test]
async fn private_key_in_the_proof_jwk_is_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.private_jwk});
    assert!(key.private_jwk.get("d").is_some());
    let claims = key.claims("GET", &htu("/me"), rs.now(), Some(&token));
    let r = rs
        .dpop("GET", "/me", &token, &key.sign_with(&header, &claims))
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"));
}

/// Two `DPoP` headers (two valid proofs) are refused: which one counts
/// would be a guess.
#[tokio::test]
async fn two_dpop_headers_are_refused() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let a = key.proof("GET", "/me", rs.now(), Some(&token));
    let b = key.proof("GET", "/me", rs.now(), Some(&token));
    let r = rs
        .send("GET", "/me", Some(format!("DPoP {token}")), &[&a, &b])
        .await;
    assert_eq!(r.status(), 401);
    assert!(challenges(&r)[0].contains("exactly one DPoP proof is required"));
}

/// A flood of distinct valid proofs against the memory replay cache: the
/// cache never holds more than its capacity (then 503 for new proofs, not
/// forgetting live ones), one key never more than its share (then 429 for
/// that key alone), and room comes back when the proofs' window ends.
#[tokio::test]
async fn flood_of_proofs_keeps_the_memory_replay_cache_bounded() {
    const CAPACITY: usize = 32;
    let clock = Arc::new(ManualClock::starting_now());
    let cache = Arc::new(MemoryReplayCache::with_clock(CAPACITY, clock.clone()));
    let shared = Arc::clone(&cache);
    let rs = Rs::start_on(
        clock,
        DpopPolicy::Required,
        move |b| b.replay_cache(shared),
        false,
    )
    .await;
    // One client: its share (capacity / 16 = 2), then 429.
    let mallory = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("mallory", &mallory);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let proof = mallory.proof("GET", "/me", rs.now(), Some(&token));
        statuses.push(
            rs.dpop("GET", "/me", &token, &proof)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    // Many clients: the cache fills to its capacity, then 503.
    let mut refused = 0;
    for i in 0..CAPACITY {
        let key = ClientKey::new(Algorithm::ES256);
        let token = rs.bound_token(&format!("user{i}"), &key);
        let proof = key.proof("GET", "/me", rs.now(), Some(&token));
        match rs
            .dpop("GET", "/me", &token, &proof)
            .await
            .status()
            .as_u16()
        {
            200 => {}
            503 => refused += 1,
            other => panic!("client {i}: {other}"),
        }
        assert!(cache.len() <= CAPACITY);
    }
    assert_eq!(refused, 2, "the two slots mallory holds");
    assert_eq!(cache.len(), CAPACITY);
    assert!(cache.memory_bytes() <= 4 * CAPACITY * 60 + 2048);
    // The window ends: room again.
    rs.clock.advance(Duration::from_secs(62));
    let token = rs.bound_token("mallory", &mallory);
    let proof = mallory.proof("GET", "/me", rs.now(), Some(&token));
    assert_eq!(rs.dpop("GET", "/me", &token, &proof).await.status(), 200);
}
