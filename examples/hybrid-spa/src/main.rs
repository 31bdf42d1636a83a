//! Template: the hybrid pattern for single-page apps.
//!
//! Run it with `cargo run -p hybrid-spa` (listens on `127.0.0.1:$PORT`,
//! default 3002). See this crate's README.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::refresh::{MemoryRefreshStore, RefreshConfig, Refresher, RotationKey};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

const USERS: &[(&str, &str, &[&str])] = &[("alice", "wonderland", &["admin"]), ("bob", "builder", &[])];
const ISS: &str = "hybrid-spa";
const AUD: &str = "hybrid-spa";

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(State(refresher): State<Refresher>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4096).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
    };
    let Ok(creds) = serde_json::from_slice::<Credentials>(&bytes) else {
        return (StatusCode::BAD_REQUEST, "expected {\"username\",\"password\"}").into_response();
    };
    let user = USERS
        .iter()
        .find(|(u, p, _)| *u == creds.username && bool::from(p.as_bytes().ct_eq(creds.password.as_bytes())));
    let Some((name, _, roles)) = user else {
        let body = json!({"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "bad credentials"});
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string())
            .into_response();
    };
    let mut claims = serde_json::Map::new();
    claims.insert("roles".into(), json!(roles));
    refresher.login_reply(name, claims, &parts.headers, &parts.extensions).await.into_response()
}

async fn me(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "user": claims.subject(), "roles": claims.registered().roles }))
}

fn peer_ip(ext: &axum::http::Extensions, _: &HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn app() -> Result<Router, String> {
    let revocations = Arc::new(MemoryRevocationStore::new());
    let issuer = JwtIssuer::builder(SigningKey::generate(Some("spa-1"), Algorithm::EdDSA).map_err(|e| e.to_string())?)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .map_err(|e| e.to_string())?;
    let jwt = JwtLayer::builder(issuer.keys())
        .issuer(ISS)
        .audience(AUD)
        .revocation(revocations.view())
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = RefreshConfig::default().client_ip(peer_ip);
    if let Ok(key) = std::env::var("REFRESH_ROTATION_KEY") {
        config = config.rotation_key(RotationKey::from_bytes(key.as_bytes()).map_err(|e| e.to_string())?);
    }
    if std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES").is_some() {
        config = config.insecure_dev_cookies();
    }
    let revocations: Arc<dyn RevocationStore> = revocations;
    let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt.clone())
        .config(config)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Router::new()
        .route("/api/me", get(me))
        .layer(jwt)
        .route("/", get(|| async { Html(include_str!("page.html")) }))
        .route("/auth/login", post(login))
        .with_state(refresher.clone())
        .layer(refresher.layer()))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3002);
    let router = app()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    eprintln!("hybrid-spa listening on http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await.map_err(|e| e.to_string())
}
