//! Template: a JSON API with bearer JWTs.
//!
//! Run it with `cargo run -p jwt-api` (listens on `127.0.0.1:$PORT`,
//! default 3001). With `REDIS_URL` set (for example
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run -p jwt-api`) revocations
//! live in Redis and reach every instance on that Redis within
//! milliseconds (each instance still checks tokens without a Redis call);
//! unset, they are per process. With `DATABASE_URL` set (`postgres://...`:
//! pushed to every instance by `LISTEN/NOTIFY`; `sqlite://jwt-api.db`: one
//! durable node) revocations live in that database (tables created at
//! start). See this crate's README for the contract,
//! the environment variables and running several instances.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{
    Claims, JwksResponse, JwtIssuer, JwtLayer, RequireClaimsLayer, SigningKey, TokenResponse,
};
use portcullis::redis::{RedisConfig, RedisRevocationStore};
use portcullis_sql::{Database, DatabaseUrl};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

/// Demo users and their roles. A real app checks a slow password hash.
const USERS: &[(&str, &str, &[&str])] =
    &[("alice", "wonderland", &["admin"]), ("bob", "builder", &[])];

#[derive(Clone)]
struct AppState {
    issuer: JwtIssuer,
    revocations: Arc<dyn RevocationStore>,
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail});
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn login(State(app): State<AppState>, Json(creds): Json<Credentials>) -> Response {
    let user = USERS.iter().find(|(u, p, _)| {
        *u == creds.username && bool::from(p.as_bytes().ct_eq(creds.password.as_bytes()))
    });
    let Some((name, _, roles)) = user else {
        return problem(StatusCode::UNAUTHORIZED, "bad credentials");
    };
    match app.issuer.token(*name).roles(roles.iter().copied()).mint() {
        Ok(t) => Json(TokenResponse::new(&t)).into_response(),
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "could not issue a token"),
    }
}

async fn me(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "user": claims.subject() }))
}

async fn admin(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "admin": claims.subject() }))
}

#[derive(Deserialize)]
struct Revoke {
    user: String,
}

async fn revoke(State(app): State<AppState>, Json(body): Json<Revoke>) -> Response {
    match app.revocations.revoke_user(&body.user).await {
        Ok(version) => Json(json!({"revoked": body.user, "version": version})).into_response(),
        Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "revocation store unavailable",
        ),
    }
}

fn signing_key() -> Result<SigningKey, String> {
    let kid = std::env::var("JWT_KID").unwrap_or_else(|_| "jwt-api-1".into());
    match std::env::var_os("JWT_KEY_FILE") {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("cannot read JWT_KEY_FILE: {e}"))?;
            SigningKey::from_pkcs8_pem_detect(&kid, &pem).map_err(|e| format!("JWT_KEY_FILE: {e}"))
        }
        None => {
            SigningKey::generate(&kid, portcullis::jwt::Algorithm::ES256).map_err(|e| e.to_string())
        }
    }
}

/// The revocation store: PostgreSQL or SQLite when `DATABASE_URL` is set,
/// Redis when `REDIS_URL` is set (keys under `$REDIS_KEY_PREFIX`, default
/// `jwt-api`), this process' memory otherwise.
async fn revocations() -> Result<Arc<dyn RevocationStore>, String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let url = DatabaseUrl::new(url).map_err(|e| e.to_string())?;
        let db = Database::connect(&url).map_err(|e| e.to_string())?;
        db.migrate()
            .await
            .map_err(|e| format!("DATABASE_URL ({url}): {e}"))?;
        // Fail closed: not serving until this instance's view holds the
        // revocations already made.
        let store = db
            .revocation_store(Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("revocations: in {url}, pushed to this instance as they happen");
        return Ok(store);
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("revocations: in memory (set REDIS_URL to share them between instances)");
        return Ok(Arc::new(MemoryRevocationStore::new()));
    };
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "jwt-api".into());
    let backend = RedisConfig::new(url)
        .key_prefix(prefix)
        .build()
        .map_err(|e| format!("REDIS_URL: {e}"))?;
    let store = RedisRevocationStore::new(backend).map_err(|e| e.to_string())?;
    // Fail closed: until its first snapshot has loaded, this instance's
    // view misses the revocations made elsewhere and would accept those
    // tokens. Later outages are fine: the view keeps what it has.
    if !store.wait_synced(Duration::from_secs(10)).await {
        return Err(format!(
            "Redis ({:?}) did not answer within 10 s; not serving without the revocations made by other instances",
            store.backend()
        ));
    }
    eprintln!(
        "revocations: in Redis ({:?}), pushed to this instance as they happen",
        store.backend()
    );
    Ok(Arc::new(store))
}

/// The app on `revocations`; `port` only sets the default issuer.
fn app(port: u16, revocations: Arc<dyn RevocationStore>) -> Result<Router, String> {
    let iss = std::env::var("JWT_ISSUER").unwrap_or_else(|_| format!("http://127.0.0.1:{port}"));
    let aud = std::env::var("JWT_AUDIENCE").unwrap_or_else(|_| "jwt-api".into());
    let issuer = JwtIssuer::builder(signing_key()?)
        .issuer(&iss)
        .audience(&aud)
        .revocation(revocations.view())
        .build()
        .map_err(|e| e.to_string())?;
    let jwt = JwtLayer::builder(issuer.keys())
        .issuer(&iss)
        .audience(&aud)
        .revocation(revocations.view())
        .build()
        .map_err(|e| e.to_string())?;
    let jwks_issuer = issuer.clone();
    let state = AppState {
        issuer,
        revocations,
    };
    let protected = Router::new()
        .route("/admin", get(admin))
        .route("/admin/revoke", post(revoke))
        .route_layer(RequireClaimsLayer::role("admin"))
        .route("/me", get(me))
        .layer(jwt);
    Ok(Router::new()
        .route("/login", post(login))
        .route(
            "/.well-known/jwks.json",
            get(move || async move { JwksResponse::from(&jwks_issuer) }),
        )
        .merge(protected)
        .with_state(state))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let router = app(port, revocations().await?)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "jwt-api listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    axum::serve(listener, router)
        .await
        .map_err(|e| e.to_string())
}
