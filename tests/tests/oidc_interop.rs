//! Interop with panva's `oidc-provider`, a certified OpenID provider run
//! by Node.js on loopback (tests/src/oidc.rs; `tests/oidc/op.mjs`): the
//! tokens it issues go through `JwtLayer` in a real axum server on a real
//! socket.
//!
//! Needs Node.js >= 20.18 and the package (`npm ci --prefix tests/oidc`;
//! scripts/test installs it); without them every test fails, saying so.

use axum::Router;
use axum::routing::get;
use portcullis::jwt::jwks::RemoteJwks;
use portcullis::jwt::{Claims, JwtLayer};
use portcullis_tests::oidc::{API, APP_CLIENT, OidcProvider, jwt_parts};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `/me` answers the verified claims the handler sees.
fn app(layer: JwtLayer) -> Router {
    Router::new()
        .route(
            "/me",
            get(|c: Claims| async move {
                axum::Json(json!({
                    "sub": c.subject(),
                    "iss": c.registered().iss,
                    "read": c.has_scope("read"),
                }))
            }),
        )
        .layer(layer)
}

async fn get_me(server: &TestServer, authorization: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(server.url("/me"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
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
    let server = TestServer::start(app(layer)).await;

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
    let other = TestServer::start(app(other)).await;
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
