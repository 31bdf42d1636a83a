//! Template: the hybrid pattern for single-page apps (the app; `main.rs`
//! serves it).
//!
//! Run it with `cargo run -p hybrid-spa`; see this crate's README.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore};
use portcullis::refresh::{
    MemoryRefreshStore, RefreshConfig, RefreshLayer, RefreshStore, Refresher, RotationKey,
};
use portcullis_sql::{Database, DatabaseUrl};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

const USERS: &[(&str, &str, &[&str])] =
    &[("alice", "wonderland", &["admin"]), ("bob", "builder", &[])];
const ISS: &str = "hybrid-spa";
const AUD: &str = "hybrid-spa";

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// `POST /auth/login`: `Json` insists on `Content-Type: application/json`
/// (415 otherwise), which no cross-site form can send without a CORS
/// preflight; the refresher also refuses a cross-site login that would set
/// the refresh cookie (403), so a form on another site cannot log the
/// visitor into the attacker's account.
async fn login(
    State(refresher): State<Refresher>,
    parts: Parts,
    Json(creds): Json<Credentials>,
) -> Response {
    let user = USERS.iter().find(|(u, p, _)| {
        *u == creds.username && bool::from(p.as_bytes().ct_eq(creds.password.as_bytes()))
    });
    let Some((name, _, roles)) = user else {
        let body = json!({"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "bad credentials"});
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
    };
    refresher
        .login(*name)
        .roles(roles.iter().copied())
        .reply(&parts)
        .await
        .into_response()
}

async fn me(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "user": claims.subject(), "roles": claims.registered().roles }))
}

fn peer_ip(ext: &axum::http::Extensions, _: &HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The access tokens' signing key: `JWT_KEY_FILE` (PKCS#8 PEM; RSA gives
/// RS256, P-256 ES256, Ed25519 EdDSA) with kid `$JWT_KID` (default
/// `spa-1`), or a fresh Ed25519 key.
fn signing_key() -> Result<SigningKey, String> {
    let kid = std::env::var("JWT_KID").unwrap_or_else(|_| "spa-1".into());
    match std::env::var_os("JWT_KEY_FILE") {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("cannot read JWT_KEY_FILE: {e}"))?;
            SigningKey::from_pkcs8_pem_detect(&kid, &pem).map_err(|e| format!("JWT_KEY_FILE: {e}"))
        }
        None => SigningKey::generate(&kid, Algorithm::EdDSA).map_err(|e| e.to_string()),
    }
}

/// Where refresh families and revocations live.
pub struct Stores {
    /// The refresh families.
    pub refresh: Arc<dyn RefreshStore>,
    /// The revocations (the JWT layer checks their view).
    pub revocations: Arc<dyn RevocationStore>,
}

impl Stores {
    /// Both in this process' memory.
    #[must_use]
    pub fn memory() -> Self {
        Self {
            refresh: Arc::new(MemoryRefreshStore::new()),
            revocations: Arc::new(MemoryRevocationStore::new()),
        }
    }
}

/// PostgreSQL or SQLite when `DATABASE_URL` is set, Redis when
/// `REDIS_URL` is set (keys under `$REDIS_KEY_PREFIX`, default
/// `hybrid-spa`), this process' memory otherwise.
///
/// # Errors
///
/// A bad `DATABASE_URL` or `REDIS_URL`, or a store that does not answer
/// within 10 s.
pub async fn stores() -> Result<Stores, String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        warn_unshared("DATABASE_URL");
        let url = DatabaseUrl::new(url).map_err(|e| e.to_string())?;
        let db = Database::connect(&url).map_err(|e| e.to_string())?;
        db.migrate()
            .await
            .map_err(|e| format!("DATABASE_URL ({url}): {e}"))?;
        let revocations = db
            .revocation_store(Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("refresh families and revocations: in {url}");
        return Ok(Stores {
            refresh: db.refresh_store(),
            revocations,
        });
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("refresh families and revocations: in memory (set REDIS_URL to share them)");
        return Ok(Stores::memory());
    };
    warn_unshared("REDIS_URL");
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "hybrid-spa".into());
    let backend = RedisConfig::new(url)
        .key_prefix(prefix)
        .build()
        .map_err(|e| format!("REDIS_URL: {e}"))?;
    let revocations = RedisRevocationStore::new(backend.clone()).map_err(|e| e.to_string())?;
    // Fail closed: until its first snapshot has loaded, this instance's
    // revocation view misses the logouts made elsewhere.
    if !revocations.wait_synced(Duration::from_secs(10)).await {
        return Err(format!(
            "Redis ({backend:?}) did not answer within 10 s; not serving without the revocations made by other instances"
        ));
    }
    eprintln!("refresh families and revocations: in Redis ({backend:?})");
    Ok(Stores {
        refresh: Arc::new(RedisRefreshStore::new(backend)),
        revocations: Arc::new(revocations),
    })
}

/// Instances sharing a store must share the rotation key and the signing
/// key too: says so when `store_var` is set and they are not.
fn warn_unshared(store_var: &str) {
    for shared in ["REFRESH_ROTATION_KEY", "JWT_KEY_FILE"] {
        if std::env::var_os(shared).is_none() {
            eprintln!(
                "warning: {store_var} is set but {shared} is not: instances sharing this store \
                 must share it (set the same value on each), or refreshes and tokens made on \
                 one instance fail on the others"
            );
        }
    }
}

/// The app on `stores`: the page, `POST /auth/login`, `GET /api/me`, and
/// the refresher's endpoints under `/auth`.
///
/// # Errors
///
/// A bad `JWT_KEY_FILE` or `REFRESH_ROTATION_KEY`.
pub fn app(stores: Stores) -> Result<Router, String> {
    let revocations = stores.revocations;
    let issuer = JwtIssuer::builder(signing_key()?)
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
        config = config
            .rotation_key(RotationKey::from_bytes(key.as_bytes()).map_err(|e| e.to_string())?);
    }
    if std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES").is_some() {
        config = config.insecure_dev_cookies();
    }
    let refresher = Refresher::builder_arc(stores.refresh, issuer, revocations, jwt.clone())
        .config(config)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Router::new()
        .route("/api/me", get(me))
        .layer(jwt)
        .route("/", get(|| async { Html(include_str!("page.html")) }))
        .route(
            "/auth/login",
            post(login).layer(DefaultBodyLimit::max(4096)),
        )
        .with_state(refresher.clone())
        .layer(RefreshLayer::new(&refresher)))
}
