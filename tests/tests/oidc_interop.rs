//! Interop with panva's `oidc-provider`, a certified OpenID provider run
//! by Node.js on loopback (tests/src/oidc.rs; `tests/oidc/op.mjs`): the
//! tokens it issues go through the layers in a real axum server on a real
//! socket.
//!
//! - RFC 9068 JWT access tokens through `JwtLayer` on its `jwks_uri`;
//! - OIDC discovery from the issuer URL alone, and a document naming
//!   another issuer never used;
//! - two provider instances as two issuers of one `IssuerSet`;
//! - RFC 7662 introspection of opaque tokens, `active: false` after a
//!   revocation at the provider, heard by one layer and refused by every
//!   layer sharing its revocation view; the provider's errors never
//!   cached;
//! - DPoP-bound tokens (RFC 9449) minted with a proof made in Rust and used
//!   with a fresh proof; the bearer use, a replayed proof and another key's
//!   proof refused; DPoP nonces at the provider and at the layer; proofs
//!   made by panva's `jose` (ES256, Ed25519) accepted once;
//! - a client led from a 401's `resource_metadata` (RFC 9728) to the
//!   provider and back with a token for the advertised resource.
//!
//! Needs Node.js >= 20.18 and the package (`npm ci --prefix tests/oidc`;
//! scripts/test installs it); without them every test fails, saying so.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use portcullis::core::ManualClock;
use portcullis::jwt::dpop::{DpopPolicy, DpopVerifier};
use portcullis::jwt::introspect::IntrospectionLayer;
use portcullis::jwt::issuers::{Issuer, IssuerSet};
use portcullis::jwt::jwks::RemoteJwks;
use portcullis::jwt::metadata::ProtectedResourceMetadata;
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
use portcullis::jwt::{Claims, JwtLayer};
use portcullis_tests::oidc::{
    API, APP_CLIENT, DpopKey, OPAQUE_API, OidcProvider, ProviderOptions, RS_CLIENT, jwt_parts,
};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The public origin the DPoP layers answer for (proofs' `htu`): taken
/// from configuration, never from the request's `Host`.
const ORIGIN: &str = "https://api.portcullis.test";

/// `/me` answers the verified claims the handler sees (put the layer
/// under test on top).
fn routes() -> Router {
    Router::new().route(
        "/me",
        get(|c: Claims| async move {
            axum::Json(json!({
                "sub": c.subject(),
                "client_id": c.registered().client_id,
                "iss": c.registered().iss,
                "read": c.has_scope("read"),
            }))
        }),
    )
}

async fn get_me(server: &TestServer, authorization: &str) -> (StatusCode, Value) {
    get_me_with(server, authorization, None).await
}

/// `GET /me` with an `Authorization` value and a `DPoP` proof when given.
async fn get_me_with(
    server: &TestServer,
    authorization: &str,
    proof: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = client()
        .get(server.url("/me"))
        .header("authorization", authorization);
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// An RFC 9068 access token from the provider (ES256, `typ: at+jwt`, the
/// resource indicator as `aud`) verifies through `JwtLayer` on the
/// provider's own `jwks_uri` (`RemoteJwks`, plain http on loopback); a
/// token for another audience and a forged signature are refused.
#[tokio::test]
async fn provider_jwt_access_token_verifies_through_remote_jwks() {
    let op = OidcProvider::shared();
    let discovery = op.discovery().await;
    assert_eq!(discovery["issuer"], op.issuer());
    assert_eq!(discovery["jwks_uri"], op.jwks_uri());

    let token = op.jwt_token(None).await;
    assert_eq!(token.token_type, "Bearer");
    let (header, payload) = jwt_parts(&token.access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(payload["aud"], API);
    assert_eq!(payload["iss"], op.issuer());

    let jwks = RemoteJwks::builder(op.jwks_uri()).build().unwrap();
    jwks.ready().await;
    let layer = JwtLayer::builder(jwks.clone())
        .issuer(op.issuer())
        .audience(API)
        .build()
        .unwrap();
    let server = TestServer::start(routes().layer(layer)).await;

    let (status, body) = get_me(&server, &format!("Bearer {}", token.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sub"], APP_CLIENT.0);
    assert_eq!(body["iss"], op.issuer());
    assert_eq!(body["read"], true);

    // The same token at a layer for another API: refused on `aud`.
    let other = JwtLayer::builder(jwks.clone())
        .issuer(op.issuer())
        .audience("https://other.portcullis.test/")
        .build()
        .unwrap();
    let other = TestServer::start(routes().layer(other)).await;
    let (status, _) = get_me(&other, &format!("Bearer {}", token.access_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // One changed signature byte: refused.
    let mut forged = token.access_token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, _) = get_me(&server, &format!("Bearer {forged}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// OIDC discovery against the provider: a layer configured from the
/// issuer URL alone finds its keys (`/.well-known/openid-configuration`,
/// then `jwks_uri`) on the first token and verifies it. The same provider
/// named by another spelling of its URL (`localhost` for `127.0.0.1`) is
/// another issuer: its document's `issuer` does not match, so the layer
/// has no keys (503) and accepts none of its tokens.
#[tokio::test]
async fn discovery_from_the_issuer_url_alone() {
    let op = OidcProvider::shared();
    let token = op.jwt_token(None).await;
    let layer = JwtLayer::discover(op.issuer())
        .unwrap()
        .audience(API)
        .build()
        .unwrap();
    let server = TestServer::start(routes().layer(layer)).await;
    let (status, body) = get_me(&server, &format!("Bearer {}", token.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["iss"], op.issuer());

    let spelled = op.issuer().replace("127.0.0.1", "localhost");
    let layer = JwtLayer::discover(spelled)
        .unwrap()
        .audience(API)
        .build()
        .unwrap();
    let other = TestServer::start(routes().layer(layer)).await;
    let (status, _) = get_me(&other, &format!("Bearer {}", token.access_token)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a document for another issuer is never used: no keys"
    );
}

/// Two provider instances are two issuers, each with its own key, both
/// named `es1` (so only the token's issuer can pick the right one): one
/// layer trusting both (an `IssuerSet` of two discovered issuers) accepts
/// the tokens of each and tells them apart by `iss`; a layer trusting only
/// the first refuses the second's tokens.
#[tokio::test]
async fn two_providers_are_two_issuers() {
    let (first, second) = (OidcProvider::shared(), OidcProvider::start());
    assert_ne!(first.issuer(), second.issuer());
    let jwks = |op: &OidcProvider| {
        let url = op.jwks_uri();
        async move {
            let v: Value = client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["keys"][0].clone()
        }
    };
    let (k1, k2) = (jwks(first).await, jwks(&second).await);
    assert_eq!(
        (k1["kid"].as_str(), k2["kid"].as_str()),
        (Some("es1"), Some("es1"))
    );
    assert_ne!(k1["x"], k2["x"], "two keys");
    let set = IssuerSet::new([
        Issuer::discover(first.issuer()).unwrap().audience(API),
        Issuer::discover(second.issuer()).unwrap().audience(API),
    ])
    .unwrap();
    let both =
        TestServer::start(routes().layer(JwtLayer::builder_issuers(set).build().unwrap())).await;
    let (t1, t2) = (first.jwt_token(None).await, second.jwt_token(None).await);
    for (op, token) in [(first, &t1), (&second, &t2)] {
        let (status, body) = get_me(&both, &format!("Bearer {}", token.access_token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["iss"], op.issuer());
    }

    let only_first =
        IssuerSet::new([Issuer::discover(first.issuer()).unwrap().audience(API)]).unwrap();
    let one =
        TestServer::start(routes().layer(JwtLayer::builder_issuers(only_first).build().unwrap()))
            .await;
    let (status, _) = get_me(&one, &format!("Bearer {}", t1.access_token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_me(&one, &format!("Bearer {}", t2.access_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an issuer not in the set");
}

/// RFC 7662 against the provider: an opaque token is introspected (HTTP
/// Basic as the resource server's client) and its claims reach the
/// handler; once revoked at the provider, the next introspection (past the
/// cache bound) answers `active: false` and the layer refuses it. A JWT
/// access token, which the provider refuses to introspect (400), is a
/// provider failure: 503, never cached. A DPoP-bound opaque token sent as
/// a bearer token is refused.
#[tokio::test]
async fn introspection_of_opaque_tokens() {
    let op = OidcProvider::shared();
    let clock = Arc::new(ManualClock::starting_now());
    let layer = IntrospectionLayer::builder(op.introspection_endpoint())
        .client_secret_basic(RS_CLIENT.0, RS_CLIENT.1)
        .issuer(op.issuer())
        .audience(OPAQUE_API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = layer.clone();
    let server = TestServer::start(routes().layer(layer)).await;

    let token = op.opaque_token(None).await;
    assert_eq!(token.access_token.split('.').count(), 1, "opaque");
    let bearer = format!("Bearer {}", token.access_token);
    let (status, body) = get_me(&server, &bearer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["client_id"], APP_CLIENT.0);
    assert_eq!(body["iss"], op.issuer());
    assert_eq!(body["read"], true);
    let (status, _) = get_me(&server, &bearer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls.endpoint_calls(), 1, "the active answer is cached");

    op.revoke(&token.access_token).await;
    assert_eq!(op.introspect(&token.access_token).await["active"], false);
    clock.advance(Duration::from_secs(61));
    let (status, _) = get_me(&server, &bearer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at the provider");
    assert_eq!(calls.endpoint_calls(), 2);

    // A DPoP-bound opaque token (the provider says `token_type: DPoP` and
    // `cnf.jkt`) is not a bearer token.
    let bound = op.opaque_token(Some(&DpopKey::generate())).await;
    assert_eq!(bound.token_type, "DPoP");
    assert_eq!(
        op.introspect(&bound.access_token).await["token_type"],
        "DPoP"
    );
    let (status, _) = get_me(&server, &format!("Bearer {}", bound.access_token)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a bound token as a bearer token"
    );
    assert_eq!(calls.endpoint_calls(), 3);

    let jwt = op.jwt_token(None).await;
    let bearer = format!("Bearer {}", jwt.access_token);
    for n in 4..=5 {
        let (status, _) = get_me(&server, &bearer).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "the provider's 400"
        );
        assert_eq!(calls.endpoint_calls(), n, "an error is never cached");
    }
}

/// A DPoP-bound access token from the provider (the proof at its token
/// endpoint made in Rust; `token_type: DPoP`, `cnf.jkt` = the key's RFC
/// 7638 thumbprint) passes `JwtLayer` with a fresh proof by that key; the
/// same token as a bearer token, the same proof replayed, and a proof by
/// another key are refused.
#[tokio::test]
async fn dpop_bound_provider_token_and_its_replays() {
    let op = OidcProvider::shared();
    let key = DpopKey::generate();
    let token = op.jwt_token(Some(&key)).await;
    assert_eq!(token.token_type, "DPoP");
    let (_, payload) = jwt_parts(&token.access_token);
    assert_eq!(
        payload["cnf"]["jkt"],
        key.jkt(),
        "the provider's thumbprint is ours"
    );

    let jwks = RemoteJwks::builder(op.jwks_uri()).build().unwrap();
    jwks.ready().await;
    let verifier = DpopVerifier::builder(ORIGIN).build().unwrap();
    let layer = JwtLayer::builder(jwks)
        .issuer(op.issuer())
        .audience(API)
        .dpop(verifier, DpopPolicy::Accepted)
        .build()
        .unwrap();
    let server = TestServer::start(routes().layer(layer)).await;
    let htu = format!("{ORIGIN}/me");
    let dpop = format!("DPoP {}", token.access_token);

    let proof = key.proof("GET", &htu, Some(&token.access_token));
    let (status, body) = get_me_with(&server, &dpop, Some(&proof)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sub"], APP_CLIENT.0);

    let (status, _) = get_me(&server, &format!("Bearer {}", token.access_token)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a bound token as a bearer token"
    );
    let (status, _) = get_me_with(&server, &dpop, Some(&proof)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a replayed proof");
    let thief = DpopKey::generate();
    let stolen = thief.proof("GET", &htu, Some(&token.access_token));
    let (status, _) = get_me_with(&server, &dpop, Some(&stolen)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a proof by another key");
    let fresh = key.proof("GET", &htu, Some(&token.access_token));
    let (status, _) = get_me_with(&server, &dpop, Some(&fresh)).await;
    assert_eq!(status, StatusCode::OK, "a fresh proof by the key");
}

/// DPoP nonces on both sides: the provider's token endpoint demands one
/// (400 `use_dpop_nonce` with `DPoP-Nonce`; the second proof carries it
/// and gets a bound token), and a `JwtLayer` with server nonces answers a
/// proof without one 401 `use_dpop_nonce` with its `DPoP-Nonce`, then
/// accepts a proof that carries it.
#[tokio::test]
async fn dpop_nonces_at_the_provider_and_at_the_layer() {
    let op = OidcProvider::start_with(&ProviderOptions { dpop_nonce: true });
    let key = DpopKey::generate();
    let resp = client()
        .post(op.token_endpoint())
        .basic_auth(APP_CLIENT.0, Some(APP_CLIENT.1))
        .header("dpop", key.proof("POST", &op.token_endpoint(), None))
        .form(&[("grant_type", "client_credentials"), ("resource", API)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().contains_key("dpop-nonce"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    let token = op.jwt_token(Some(&key)).await;
    assert_eq!(token.token_type, "DPoP");

    let jwks = RemoteJwks::builder(op.jwks_uri()).build().unwrap();
    jwks.ready().await;
    let verifier = DpopVerifier::builder(ORIGIN)
        .nonces([9; 32])
        .build()
        .unwrap();
    let layer = JwtLayer::builder(jwks)
        .issuer(op.issuer())
        .audience(API)
        .dpop(verifier, DpopPolicy::Required)
        .build()
        .unwrap();
    let server = TestServer::start(routes().layer(layer)).await;
    let htu = format!("{ORIGIN}/me");
    let send = |proof: String| {
        client()
            .get(server.url("/me"))
            .header("authorization", format!("DPoP {}", token.access_token))
            .header("dpop", proof)
            .send()
    };
    let resp = send(key.proof("GET", &htu, Some(&token.access_token)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("use_dpop_nonce"), "{challenge}");
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let mut claims = key.claims("GET", &htu, Some(&token.access_token));
    claims["nonce"] = json!(nonce);
    let resp = send(key.sign(&claims)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// An MCP-style client against the real provider, starting from nothing
/// but a 401: the challenge's `resource_metadata` (RFC 9728) leads to the
/// document this API serves, its `authorization_servers` to the provider's
/// discovery document, its `token_endpoint` to a token for the document's
/// `resource` (RFC 8707), which the API accepts.
#[tokio::test]
async fn a_client_finds_its_way_from_the_challenge() {
    let op = OidcProvider::shared();
    let metadata = ProtectedResourceMetadata::builder(API)
        .authorization_server(op.issuer())
        .scopes_supported(["read"])
        .build()
        .unwrap();
    let layer = JwtLayer::discover(op.issuer())
        .unwrap()
        .audience(API)
        .resource_metadata(metadata.url())
        .build()
        .unwrap();
    let server = TestServer::start(
        routes()
            .layer(layer)
            .route_service(&metadata.well_known_path(), metadata.service()),
    )
    .await;

    let resp = client().get(server.url("/me")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge}"));
    assert_eq!(url, metadata.url());
    // The API's public origin is this test server.
    let path = url.strip_prefix("https://api.portcullis.test").unwrap();
    let document: Value = client()
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["resource"], API);
    let issuer = document["authorization_servers"][0].as_str().unwrap();
    assert_eq!(issuer, op.issuer());

    let provider: Value = client()
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token: Value = client()
        .post(provider["token_endpoint"].as_str().unwrap())
        .basic_auth(APP_CLIENT.0, Some(APP_CLIENT.1))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", document["resource"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = token["access_token"].as_str().unwrap();
    let (status, body) = get_me(&server, &format!("Bearer {access_token}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sub"], APP_CLIENT.0);
}

/// A token revoked at the provider, seen `active: false` by one
/// introspection layer once its cached answer ran out, is refused at once
/// by another layer sharing the revocation view, though that layer still
/// holds an active answer for it (and without asking the provider).
#[tokio::test]
async fn a_revocation_heard_by_one_layer_reaches_the_view() {
    let op = OidcProvider::shared();
    let view = MemoryRevocationStore::new().view();
    let layer = |clock: &Arc<ManualClock>| {
        IntrospectionLayer::builder(op.introspection_endpoint())
            .client_secret_basic(RS_CLIENT.0, RS_CLIENT.1)
            .issuer(op.issuer())
            .audience(OPAQUE_API)
            .revocation(view.clone())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (clock_a, clock_b) = (
        Arc::new(ManualClock::starting_now()),
        Arc::new(ManualClock::starting_now()),
    );
    let (a, b) = (layer(&clock_a), layer(&clock_b));
    let (calls_a, calls_b) = (a.clone(), b.clone());
    let server_a = TestServer::start(routes().layer(a)).await;
    let server_b = TestServer::start(routes().layer(b)).await;

    let token = op.opaque_token(None).await;
    let bearer = format!("Bearer {}", token.access_token);
    for server in [&server_a, &server_b] {
        let (status, body) = get_me(server, &bearer).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    op.revoke(&token.access_token).await;
    let (status, _) = get_me(&server_b, &bearer).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "b's cached answer, before anyone heard"
    );

    clock_a.advance(Duration::from_secs(61));
    let (status, _) = get_me(&server_a, &bearer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a asked again: inactive");
    assert_eq!(calls_a.endpoint_calls(), 2);
    let (status, _) = get_me(&server_b, &bearer).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "b refuses it through the view"
    );
    assert_eq!(calls_b.endpoint_calls(), 1, "without asking the provider");
}

/// Proofs made by panva's `jose`, independent of portcullis, for ES256 and
/// for Ed25519 under its RFC 9864 algorithm name (the one `jose` and the
/// provider use): the provider binds the token to the thumbprint `jose`
/// computed, `JwtLayer` accepts the token with `jose`'s proof once and
/// refuses the proof replayed.
#[tokio::test]
async fn dpop_proofs_made_by_jose() {
    let op = OidcProvider::shared();
    let jwks = RemoteJwks::builder(op.jwks_uri()).build().unwrap();
    jwks.ready().await;
    let verifier = DpopVerifier::builder(ORIGIN).build().unwrap();
    let layer = JwtLayer::builder(jwks)
        .issuer(op.issuer())
        .audience(API)
        .dpop(verifier, DpopPolicy::Required)
        .build()
        .unwrap();
    let server = TestServer::start(routes().layer(layer)).await;
    for alg in ["ES256", "Ed25519"] {
        let made = op.jose_dpop(alg, "GET", &format!("{ORIGIN}/me"));
        assert_eq!(made.token_type, "DPoP", "{alg}");
        let (header, payload) = jwt_parts(&made.proof);
        assert_eq!(header["alg"], alg);
        assert!(payload["ath"].is_string());
        let (_, claims) = jwt_parts(&made.access_token);
        assert_eq!(claims["cnf"]["jkt"], made.jkt.as_str(), "{alg}");
        let dpop = format!("DPoP {}", made.access_token);
        let (status, body) = get_me_with(&server, &dpop, Some(&made.proof)).await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
        let (status, _) = get_me_with(&server, &dpop, Some(&made.proof)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{alg}: replayed");
    }
}
