//! DPoP (RFC 9449) through `JwtLayer` on a real server: bound tokens with
//! proofs by every supported key type, the three policies, server nonces,
//! the challenges (both schemes, `resource_metadata` everywhere), and the
//! route guard that requires DPoP.

mod dpop_support;

use std::time::Duration;

use dpop_support::{ClientKey, METADATA, ORIGIN, Rs, challenges, htu};
use portcullis::jwt::dpop::{DpopPolicy, DpopVerifier, sign_proof};
use portcullis::jwt::{Algorithm, JwtErrorKind, SigningKey};
use serde_json::json;

/// A token bound to the client's key, with a proof by that key, passes
/// for every supported proof algorithm, and the handler sees the proof's
/// key; the next request with a fresh proof passes too (the token comes
/// from the verified-token cache, the proof is checked anew).
#[tokio::test]
async fn bound_token_with_a_proof_passes_for_every_algorithm() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, false).await;
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let key = ClientKey::new(alg);
        let token = rs.bound_token("alice", &key);
        for _ in 0..2 {
            let proof = key.proof("GET", "/me", rs.now(), Some(&token));
            let r = rs.dpop("GET", "/me", &token, &proof).await;
            assert_eq!(r.status(), 200, "{alg}");
            assert_eq!(
                r.text().await.unwrap(),
                format!("alice {}", key.jkt),
                "{alg}"
            );
        }
    }
}

/// `Ed25519`, RFC 9864's fully-specified name, is read as `EdDSA`; the
/// `application/dpop+jwt` form of `typ` is accepted; the scheme name is
/// case-insensitive.
#[tokio::test]
async fn ed25519_alg_name_media_type_typ_and_scheme_case_are_accepted() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, false).await;
    let key = ClientKey::new(Algorithm::EdDSA);
    let token = rs.bound_token("alice", &key);
    let claims = key.claims("GET", &htu("/me"), rs.now(), Some(&token));
    let header = json!({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": key.jwk});
    let r = rs
        .dpop("GET", "/me", &token, &key.sign_with(&header, &claims))
        .await;
    assert_eq!(r.status(), 200);
    let claims = key.claims("GET", &htu("/me"), rs.now(), Some(&token));
    let header = json!({"typ": "application/dpop+jwt", "alg": "EdDSA", "jwk": key.jwk});
    let r = rs
        .dpop("GET", "/me", &token, &key.sign_with(&header, &claims))
        .await;
    assert_eq!(r.status(), 200);
    let proof = key.proof("GET", "/me", rs.now(), Some(&token));
    let r = rs
        .send("GET", "/me", Some(format!("dpop {token}")), &[&proof])
        .await;
    assert_eq!(r.status(), 200);
}

/// `htu` is compared after normalisation (scheme and host case, default
/// port, percent-encoding case) and without query and fragment, against
/// the configured origin, not the `Host` the request was sent to.
#[tokio::test]
async fn htu_is_normalised_and_ignores_query_and_fragment() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    for (claim, path) in [
        ("HTTPS://API.Example.TEST:443/me?x=1#frag", "/me?y=2"),
        ("https://api.example.test/%6De", "/me"),
        ("https://api.example.test/me", "/%6de"),
    ] {
        let claims = key.claims("GET", claim, rs.now(), Some(&token));
        let r = rs
            .dpop("GET", path, &token, &key.sign_with(&key.header(), &claims))
            .await;
        // `/%6de` is routed as written by axum (no route): the proof passed
        // the layer if the answer is not 401.
        assert_ne!(r.status(), 401, "{claim} for {path}");
    }
}

/// Under `Accepted`, bearer tokens still work, and a refusal carries a
/// `Bearer` and a `DPoP` challenge (the error on the scheme used).
#[tokio::test]
async fn accepted_takes_bearer_tokens_and_challenges_both_schemes() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, false).await;
    let token = rs.bearer_token("bob");
    let r = rs.bearer("GET", "/me", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "bob ");
    let algs = r#"algs="ES256 ES384 PS256 RS256 EdDSA Ed25519""#;
    let r = rs.send("GET", "/me", None, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(&r),
        vec!["Bearer".to_owned(), format!("DPoP {algs}")]
    );
    let r = rs.bearer("GET", "/me", "x.y.z").await;
    assert_eq!(
        challenges(&r),
        vec![
            r#"Bearer error="invalid_token""#.to_owned(),
            format!("DPoP {algs}")
        ]
    );
    let key = ClientKey::new(Algorithm::ES256);
    let bound = rs.bound_token("alice", &key);
    let r = rs
        .send("GET", "/me", Some(format!("DPoP {bound}")), &[])
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(&r),
        vec![
            "Bearer".to_owned(),
            format!(
                r#"DPoP {algs}, error="invalid_dpop_proof", error_description="a DPoP proof is required""#
            )
        ]
    );
}

/// Under `Required`, a bearer token is refused (a `DPoP` challenge only,
/// `invalid_token`), a bound token with its proof passes.
#[tokio::test]
async fn required_refuses_bearer_tokens() {
    let rs = Rs::start(
        DpopPolicy::Required,
        |b| b.algorithms([Algorithm::ES256]),
        false,
    )
    .await;
    let r = rs.bearer("GET", "/me", &rs.bearer_token("bob")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(&r),
        vec![
            r#"DPoP algs="ES256", error="invalid_token", error_description="a DPoP-bound access token and proof are required""#
        ]
    );
    let r = rs.send("GET", "/me", None, &[]).await;
    assert_eq!(challenges(&r), vec![r#"DPoP algs="ES256""#]);
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let proof = key.proof("GET", "/me", rs.now(), Some(&token));
    assert_eq!(rs.dpop("GET", "/me", &token, &proof).await.status(), 200);
}

/// A layer without DPoP does not read the `DPoP` scheme: such a request
/// has no bearer token (401, `Bearer` challenge only).
#[tokio::test]
async fn bearer_policy_does_not_read_the_dpop_scheme() {
    let rs = Rs::start(DpopPolicy::Bearer, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let proof = key.proof("GET", "/me", rs.now(), Some(&token));
    let r = rs.dpop("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenges(&r), vec!["Bearer"]);
    assert_eq!(
        rs.bearer("GET", "/me", &rs.bearer_token("bob"))
            .await
            .status(),
        200
    );
}

/// A token without `cnf.jkt` sent with the `DPoP` scheme is refused: its
/// binding cannot be checked.
#[tokio::test]
async fn unbound_token_with_the_dpop_scheme_is_refused() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, false).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bearer_token("bob");
    let proof = key.proof("GET", "/me", rs.now(), Some(&token));
    let r = rs.dpop("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(&r)[1],
        r#"DPoP algs="ES256 ES384 PS256 RS256 EdDSA Ed25519", error="invalid_token""#
    );
}

/// Server nonces: a proof without one gets `use_dpop_nonce` and a
/// `DPoP-Nonce` header; the retry with it passes; a proof with the
/// previous step's nonce passes and its answer brings the current one; a
/// nonce two steps old is refused the same way with a fresh one.
#[tokio::test]
async fn nonces_are_handed_out_and_required() {
    let rs = Rs::start(DpopPolicy::Required, |b| b.nonces([9; 32]), true).await;
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let proof = key.proof("GET", "/me", rs.now(), Some(&token));
    let r = rs.dpop("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), 401);
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(
        challenges(&r),
        vec![format!(
            r#"DPoP algs="ES256 ES384 PS256 RS256 EdDSA Ed25519", error="use_dpop_nonce", error_description="a DPoP nonce from the server is required", resource_metadata="{METADATA}""#
        )]
    );
    let with_nonce = |token: &str, nonce: &str, iat: i64| {
        let mut c = key.claims("GET", &htu("/me"), iat, Some(token));
        c["nonce"] = json!(nonce);
        key.sign_with(&key.header(), &c)
    };
    let r = rs
        .dpop("GET", "/me", &token, &with_nonce(&token, &nonce, rs.now()))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        !r.headers().contains_key("dpop-nonce"),
        "the nonce is current"
    );
    // The next step: the nonce is the previous one, still accepted, and
    // the answer brings the current one, so an active client never meets
    // a `use_dpop_nonce`.
    let to_next_step = 60 - rs.now().rem_euclid(60);
    rs.clock
        .advance(Duration::from_secs(to_next_step.unsigned_abs()));
    let token = rs.bound_token("alice", &key);
    let r = rs
        .dpop("GET", "/me", &token, &with_nonce(&token, &nonce, rs.now()))
        .await;
    assert_eq!(r.status(), 200);
    let next = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_ne!(next, nonce);
    let r = rs
        .dpop("GET", "/me", &token, &with_nonce(&token, &next, rs.now()))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        !r.headers().contains_key("dpop-nonce"),
        "the nonce is current"
    );
    // A forged nonce, then one two steps old.
    let r = rs
        .dpop(
            "GET",
            "/me",
            &token,
            &with_nonce(&token, "forged", rs.now()),
        )
        .await;
    assert_eq!(r.status(), 401);
    rs.clock.advance(Duration::from_secs(121));
    let token = rs.bound_token("alice", &key);
    let r = rs
        .dpop("GET", "/me", &token, &with_nonce(&token, &nonce, rs.now()))
        .await;
    assert_eq!(r.status(), 401);
    let fresh = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_ne!(fresh, nonce);
    let r = rs
        .dpop("GET", "/me", &token, &with_nonce(&token, &fresh, rs.now()))
        .await;
    assert_eq!(r.status(), 200);
}

/// `resource_metadata` is in every challenge: the layer's (no token, bad
/// token, bad proof, both schemes) and its route guards' (scope, DPoP
/// required, step-up).
#[tokio::test]
async fn resource_metadata_is_in_every_challenge_of_the_layer_and_its_guards() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, true).await;
    let key = ClientKey::new(Algorithm::ES256);
    let bound = rs.bound_token("alice", &key);
    let bearer = rs.bearer_token("bob");
    let stale = key.proof("GET", "/me", rs.now() - 600, Some(&bound));
    let cases = vec![
        ("no token", rs.send("GET", "/me", None, &[]).await, 401),
        ("bad token", rs.bearer("GET", "/me", "a.b.c").await, 401),
        (
            "bad proof",
            rs.dpop("GET", "/me", &bound, &stale).await,
            401,
        ),
        ("scope", rs.bearer("GET", "/admin", &bearer).await, 403),
        ("dpop guard", rs.bearer("POST", "/pay", &bearer).await, 401),
        ("step-up", rs.bearer("POST", "/sudo", &bearer).await, 401),
    ];
    for (what, r, status) in cases {
        assert_eq!(r.status(), status, "{what}");
        let all = challenges(&r);
        assert!(!all.is_empty(), "{what}");
        for c in &all {
            assert!(
                c.ends_with(&format!(r#"resource_metadata="{METADATA}""#)),
                "{what}: {c}"
            );
        }
    }
}

/// The route guard: a bearer token passes the `Accepted` layer but not
/// the guarded route (401, `DPoP` challenge with the error); a bound token
/// with a proof passes both.
#[tokio::test]
async fn require_dpop_guard_refuses_bearer_tokens_on_its_route_only() {
    let rs = Rs::start(DpopPolicy::Accepted, |b| b, false).await;
    let bearer = rs.bearer_token("bob");
    assert_eq!(rs.bearer("GET", "/me", &bearer).await.status(), 200);
    let r = rs.bearer("POST", "/pay", &bearer).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenges(&r),
        vec![
            "Bearer".to_owned(),
            r#"DPoP algs="ES256 ES384 PS256 RS256 EdDSA Ed25519", error="invalid_token", error_description="a DPoP-bound access token and proof are required""#.to_owned()
        ]
    );
    let key = ClientKey::new(Algorithm::ES256);
    let token = rs.bound_token("alice", &key);
    let proof = key.proof("POST", "/pay", rs.now(), Some(&token));
    let r = rs.dpop("POST", "/pay", &token, &proof).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "paid");
}

/// `sign_proof` (the Rust client's side) makes proofs the layer accepts.
#[tokio::test]
async fn sign_proof_makes_accepted_proofs() {
    let rs = Rs::start(DpopPolicy::Required, |b| b, false).await;
    let key = SigningKey::generate("client", Algorithm::ES256).unwrap();
    let jwk = serde_json::from_value(
        serde_json::to_value(key.verifying_key().public_jwk().unwrap()).unwrap(),
    )
    .unwrap();
    let jkt = portcullis::jwt::dpop::thumbprint(&jwk).unwrap();
    let token = rs.issuer.token("carol").dpop_jkt(jkt).mint().unwrap().token;
    portcullis_tests::secret_scan::register(&token);
    let iat = u64::try_from(rs.now()).unwrap();
    let proof = sign_proof(
        &key,
        "GET",
        &format!("{ORIGIN}/me"),
        iat,
        Some(&token),
        None,
    )
    .unwrap();
    portcullis_tests::secret_scan::register(&proof);
    assert_eq!(rs.dpop("GET", "/me", &token, &proof).await.status(), 200);
}

/// `JwtLayer::verify_request` reads bearer tokens only, so it refuses a
/// bound one.
#[tokio::test]
async fn verify_request_refuses_a_bound_token() {
    let clock = std::sync::Arc::new(portcullis::core::ManualClock::starting_now());
    let issuer = portcullis_tests::jwt_app::issuer_builder(
        SigningKey::generate("as", Algorithm::ES256).unwrap(),
        &clock,
    )
    .build()
    .unwrap();
    let layer = portcullis_tests::jwt_app::layer_builder(
        issuer.keys(),
        &clock,
        portcullis::jwt::Validation::default(),
    )
    .dpop(
        DpopVerifier::builder(ORIGIN).build().unwrap(),
        DpopPolicy::Accepted,
    )
    .build()
    .unwrap();
    let key = ClientKey::new(Algorithm::ES256);
    let token = issuer
        .token("alice")
        .dpop_jkt(key.jkt.clone())
        .mint()
        .unwrap()
        .token;
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let e = layer.verify_request(&headers).await.unwrap_err();
    assert_eq!(e.kind(), JwtErrorKind::DpopBoundAsBearer);
}
