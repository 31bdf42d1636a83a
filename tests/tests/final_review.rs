//! The claims marks between nested JWT layers, signing-key kids, 503
//! retry hints and the CSRF header fast path, through real servers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post};
use portcullis::core::ManualClock;
use portcullis::jwt::{
    Algorithm, Claims, KeySet, MAX_KID_LEN, OptionalClaims, RequireClaimsLayer, SigningKey,
    Transport, Validation, VerifyingKey,
};
use portcullis::session::{MemoryStore, SessionConfig, SessionLayer};
use portcullis_core::{ProblemJson, Rejection, RenderRejection as _};
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use portcullis_tests::jwt_app::{HS_SECRET, forge, issuer_builder, layer_builder, payload};
use portcullis_tests::{TestServer, client, set_cookies};
use reqwest::StatusCode;

#[derive(serde::Deserialize)]
struct Custom {}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

async fn send(server: &TestServer, path: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let mut req = client().get(server.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

fn hs_key() -> SigningKey {
    SigningKey::hmac("k", Algorithm::HS256, HS_SECRET).unwrap()
}

// ---------------------------------------------------------------------------
// 1. Claims marks and the extractors.

/// A default-type optional layer: 401 / `None` without a token, 500 for
/// another claims type with or without one, claims with one; the same for
/// a layer built with `.claims::<Custom>()`; a `RequireClaimsLayer` in
/// front of the JwtLayer answers 401, never lets a request through.
#[tokio::test]
async fn extractors_keep_401_and_500_apart_for_every_layer_shape() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_builder(hs_key(), &clock).build().unwrap();
    let token = iss.token("alice").mint().unwrap().token;

    let default_layer = layer_builder(iss.keys(), &clock, Validation::default())
        .optional()
        .build()
        .unwrap();
    let custom_layer = layer_builder(iss.keys(), &clock, Validation::default())
        .optional()
        .claims::<Custom>()
        .build()
        .unwrap();
    let default_routes = Router::new()
        .route(
            "/d/claims",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .route(
            "/d/option",
            get(|c: Option<Claims>| async move { if c.is_some() { "some" } else { "none" } }),
        )
        .route(
            "/d/optional",
            get(|OptionalClaims(c): OptionalClaims| async move {
                if c.is_some() { "some" } else { "none" }
            }),
        )
        .route("/d/custom", get(|_: Claims<Custom>| async { "custom" }))
        .route(
            "/d/custom-option",
            get(|_: Option<Claims<Custom>>| async { "custom" }),
        )
        .layer(default_layer);
    let custom_routes = Router::new()
        .route(
            "/c/claims",
            get(|c: Claims<Custom>| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .route(
            "/c/optional",
            get(|OptionalClaims(c): OptionalClaims<Custom>| async move {
                if c.is_some() { "some" } else { "none" }
            }),
        )
        .route("/c/default", get(|_: Claims| async { "default" }))
        .route(
            "/c/default-option",
            get(|_: Option<Claims>| async { "default" }),
        )
        .layer(custom_layer);
    let guarded_layer = layer_builder(iss.keys(), &clock, Validation::default())
        .optional()
        .build()
        .unwrap();
    let front = Router::new()
        .route("/front", get(|_: Claims| async { "front" }))
        .layer(guarded_layer)
        .layer(RequireClaimsLayer::role("admin"));
    let app = default_routes.merge(custom_routes).merge(front);
    let server = TestServer::start(app).await;

    let t = Some(token.as_str());
    let cases: [(&str, Option<&str>, StatusCode, Option<&str>); 18] = [
        ("/d/claims", t, StatusCode::OK, Some("alice")),
        ("/d/claims", None, StatusCode::UNAUTHORIZED, None),
        ("/d/option", t, StatusCode::OK, Some("some")),
        ("/d/option", None, StatusCode::OK, Some("none")),
        ("/d/optional", t, StatusCode::OK, Some("some")),
        ("/d/optional", None, StatusCode::OK, Some("none")),
        ("/d/custom", t, StatusCode::INTERNAL_SERVER_ERROR, None),
        ("/d/custom", None, StatusCode::INTERNAL_SERVER_ERROR, None),
        (
            "/d/custom-option",
            t,
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
        ),
        (
            "/d/custom-option",
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
        ),
        ("/c/claims", t, StatusCode::OK, Some("alice")),
        ("/c/claims", None, StatusCode::UNAUTHORIZED, None),
        ("/c/optional", t, StatusCode::OK, Some("some")),
        ("/c/optional", None, StatusCode::OK, Some("none")),
        ("/c/default", t, StatusCode::INTERNAL_SERVER_ERROR, None),
        ("/c/default", None, StatusCode::INTERNAL_SERVER_ERROR, None),
        (
            "/c/default-option",
            t,
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
        ),
        ("/front", t, StatusCode::UNAUTHORIZED, None),
    ];
    for (path, bearer, want, body) in cases {
        let (status, text) = send(&server, path, bearer).await;
        assert_eq!(status, want, "{path} token={}", bearer.is_some());
        if let Some(b) = body {
            assert_eq!(text, b, "{path}");
        }
        if want == StatusCode::INTERNAL_SERVER_ERROR {
            assert!(text.contains(".claims::<"), "{path}: names the fix: {text}");
        }
    }
    let (status, _) = send(&server, "/front", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Two nested layers on different transports: the outer one verifies a
/// bearer token for audience `api`; the inner, optional one reads a
/// cookie and trusts audience `other` only. A request with the bearer
/// token and no cookie reaches the inner route's `Claims` extractor,
/// which must not accept the outer layer's claims (audience `api`): the
/// layer on its own route saw no token and would refuse that token.
#[tokio::test]
async fn inner_optional_layer_without_a_token_does_not_serve_outer_claims() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_builder(hs_key(), &clock).build().unwrap();
    let token = iss.token("alice").mint().unwrap().token;
    let outer = layer_builder(iss.keys(), &clock, Validation::default())
        .build()
        .unwrap();
    let inner = layer_builder(iss.keys(), &clock, Validation::default())
        .audience("other")
        .transport(Transport::Cookie("__Host-at".into()))
        .optional()
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/inner",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .layer(inner)
        .layer(outer);
    let server = TestServer::start(app).await;
    let (status, body) = send(&server, "/inner", Some(&token)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the inner layer verified nothing; got {body:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Kids.

#[test]
fn signing_key_kids_are_checked_at_every_length_edge() {
    assert!(SigningKey::hmac(&"k".repeat(MAX_KID_LEN), Algorithm::HS256, HS_SECRET).is_ok());
    assert!(SigningKey::hmac(&"k".repeat(MAX_KID_LEN + 1), Algorithm::HS256, HS_SECRET).is_err());
    for bad in ["", " ", "k 1", "k\u{7f}", "k\u{e9}", "k\t"] {
        assert!(
            SigningKey::hmac(bad, Algorithm::HS256, HS_SECRET).is_err(),
            "{bad:?}"
        );
    }
}

/// A token whose header names a kid longer than `MAX_KID_LEN` is refused
/// even where any kid would reach the key (one key without a kid), and
/// also when it is written with JSON escapes that decode to a short-looking
/// raw header.
#[tokio::test]
async fn a_token_kid_past_the_limit_is_refused_before_key_lookup() {
    let clock = Arc::new(ManualClock::starting_now());
    let key = VerifyingKey::hmac(None, Algorithm::HS256, HS_SECRET).unwrap();
    let keys = KeySet::new([key]).unwrap();
    let layer = layer_builder(keys, &clock, Validation::default())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/me",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .layer(layer);
    let server = TestServer::start(app).await;
    let body = payload("alice", now_secs()).to_string();
    let with_kid = |kid: &str| {
        let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#);
        forge(&header, &body, Algorithm::HS256, HS_SECRET)
    };
    let (ok, _) = send(&server, "/me", Some(&with_kid(&"k".repeat(MAX_KID_LEN)))).await;
    assert_eq!(ok, StatusCode::OK);
    let (long, _) = send(
        &server,
        "/me",
        Some(&with_kid(&"k".repeat(MAX_KID_LEN + 1))),
    )
    .await;
    assert_eq!(long, StatusCode::UNAUTHORIZED);
    // Escapes: 129 "\u00e9" decode to 258 bytes.
    let (escaped, _) = send(&server, "/me", Some(&with_kid(&"\\u00e9".repeat(129)))).await;
    assert_eq!(escaped, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------
// 3. Retry-After.

#[test]
fn every_503_carries_retry_after_and_no_other_kind_does_by_default() {
    let retry = |r: &Rejection| {
        ProblemJson
            .render(r, false)
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let grpc_retry = |r: &Rejection| {
        ProblemJson
            .render(r, true)
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let u = Rejection::unavailable("x");
    assert_eq!(retry(&u).as_deref(), Some("1"));
    assert_eq!(grpc_retry(&u).as_deref(), Some("1"));
    let hinted = Rejection::unavailable("x").with_retry_after(Duration::from_secs(9));
    assert_eq!(retry(&hinted).as_deref(), Some("9"));
    let zero = Rejection::unavailable("x").with_retry_after(Duration::from_millis(300));
    assert_eq!(retry(&zero).as_deref(), Some("1"));
    for r in [
        Rejection::unauthenticated("x"),
        Rejection::forbidden("x"),
        Rejection::bad_request("x"),
        Rejection::payload_too_large("x"),
        Rejection::internal("x"),
    ] {
        assert_eq!(retry(&r), None, "{r:?}");
    }
}

/// The JWT layer's token refusals (401, 400, 403) carry no Retry-After.
#[tokio::test]
async fn jwt_refusals_other_than_503_carry_no_retry_after() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_builder(hs_key(), &clock).build().unwrap();
    let token = iss.token("bob").mint().unwrap().token;
    let layer = layer_builder(iss.keys(), &clock, Validation::default())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/admin", get(|| async { "admin" }))
        .route_layer(RequireClaimsLayer::role("admin"))
        .route("/me", get(|| async { "me" }))
        .layer(layer);
    let server = TestServer::start(app).await;
    let http = client();
    for (path, auth, want) in [
        ("/me", None, StatusCode::UNAUTHORIZED),
        (
            "/me",
            Some("Bearer not.a.token".to_owned()),
            StatusCode::UNAUTHORIZED,
        ),
        ("/me", Some("Bearer".to_owned()), StatusCode::BAD_REQUEST),
        (
            "/admin",
            Some(format!("Bearer {token}")),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let mut req = http.get(server.url(path));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), want, "{path} {auth:?}");
        assert!(resp.headers().get("retry-after").is_none(), "{path}");
    }
}

// ---------------------------------------------------------------------------
// 4. CSRF: header token and form token together.

/// The policy: one header value decides alone (the body is not read for a
/// token); two header values are malformed; no header falls back to the
/// form field.
#[tokio::test]
async fn csrf_header_token_decides_alone_when_present() {
    async fn token(token: CsrfToken) -> String {
        token.as_str().to_owned()
    }
    async fn act(body: String) -> String {
        body
    }
    let config = CsrfConfig::signed([0x5a; 32], SignedBinding::session());
    let app = Router::new()
        .route("/token", get(token))
        .route("/act", post(act))
        .layer(CsrfLayer::new(config).unwrap())
        .layer(SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap());
    let server = TestServer::start(app).await;
    let http = client();
    let page = http.get(server.url("/token")).send().await.unwrap();
    let cookie = set_cookies(&page)
        .iter()
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let good = page.text().await.unwrap();
    assert!(!good.is_empty());
    let form = |t: &str| format!("csrf_token={t}&x=1");
    let post = |headers: Vec<&'static str>, header_value: String, body: String| {
        let mut req = http
            .post(server.url("/act"))
            .header("cookie", cookie.clone())
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for name in headers {
            req = req.header(name, header_value.clone());
        }
        req.send()
    };
    // No header, the right form token: passes, the body replayed whole.
    let r = post(vec![], String::new(), form(&good)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), form(&good));
    // Right header, wrong form token: the header decides.
    let r = post(vec!["x-csrf-token"], good.clone(), form("junk"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), form("junk"), "body untouched");
    // Wrong header, right form token: refused (the form is not a fallback).
    let r = post(vec!["x-csrf-token"], "junk".into(), form(&good))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Empty header value, right form token: refused.
    let r = post(vec!["x-csrf-token"], String::new(), form(&good))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The right token twice in the header: malformed.
    let r = post(
        vec!["x-csrf-token", "x-csrf-token"],
        good.clone(),
        form(&good),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
