//! Template: server-side sessions with portcullis.
//!
//! Run it with `cargo run -p session-login` (listens on
//! `127.0.0.1:$PORT`, default 3000). With `REDIS_URL` set (for example
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run -p session-login`) sessions
//! live in Redis and every instance started on the same Redis shares them;
//! unset, they live in this process' memory. With `DATABASE_URL` set
//! (`postgres://...` for several instances, `sqlite://sessions.db` for a
//! durable single node) sessions live in that database (its tables are
//! created at start). See this crate's README for the JSON contract and for
//! running several instances.
//!
//! Every `POST` goes through `CsrfLayer` (signed tokens, bound to the
//! session, or before login to the `__Host-csrf` pre-session cookie):
//! `GET /csrf` returns a token, sent back in the `x-csrf-token` header.
//! `CSRF_KEY` (hex, at least 32 bytes: `openssl rand -hex 32`) is the key
//! that signs them; give every instance the same one (unset, each process
//! draws its own).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::redis::{RedisConfig, RedisSessionStore};
use portcullis::session::{
    CurrentUser, MemoryStore, Session, SessionConfig, SessionError, SessionLayer, SessionStore,
};
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use portcullis_sql::{Database, DatabaseUrl};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

/// Demo users. A real app checks a slow password hash (argon2) instead.
const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

fn check_password(username: &str, password: &str) -> bool {
    USERS
        .iter()
        .any(|(u, p)| *u == username && bool::from(p.as_bytes().ct_eq(password.as_bytes())))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(session: Session, Json(creds): Json<Credentials>) -> Result<Response, SessionError> {
    if !check_password(&creds.username, &creds.password) {
        let body = json!({"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "bad credentials"});
        return Ok((
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/problem+json")],
            body.to_string(),
        )
            .into_response());
    }
    // Renews the session id: whatever id the browser had before is dead now.
    session.login(creds.username.clone()).await?;
    Ok(Json(json!({ "user": creds.username })).into_response())
}

/// A CSRF token for the `x-csrf-token` header of the next `POST`. Fetch a
/// new one after logging in: tokens are bound to the session.
async fn csrf_token(token: CsrfToken) -> Json<serde_json::Value> {
    Json(json!({ "header": token.header_name().as_str(), "token": token.as_str() }))
}

async fn me(CurrentUser(user): CurrentUser) -> Json<serde_json::Value> {
    Json(json!({ "user": user }))
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_everywhere(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    let ended = session.logout_everywhere().await?;
    Ok(Json(json!({ "ended": ended })))
}

async fn sessions(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    Ok(Json(
        json!({ "sessions": session.active_sessions().await? }),
    ))
}

fn peer_ip(ext: &axum::http::Extensions, _: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The session store: PostgreSQL or SQLite when `DATABASE_URL` is set,
/// Redis when `REDIS_URL` is set (shared by every instance on that Redis;
/// keys under `$REDIS_KEY_PREFIX`, default `session-login`), the in-process
/// memory store otherwise.
async fn store() -> std::io::Result<Arc<dyn SessionStore>> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let url = DatabaseUrl::new(url).map_err(std::io::Error::other)?;
        let db = Database::connect(&url).map_err(std::io::Error::other)?;
        db.migrate()
            .await
            .map_err(|e| std::io::Error::other(format!("DATABASE_URL ({url}): {e}")))?;
        eprintln!("sessions: in {url}");
        return Ok(db.session_store());
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("sessions: in memory (set REDIS_URL to share them between instances)");
        return Ok(Arc::new(MemoryStore::new()));
    };
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "session-login".into());
    let backend = RedisConfig::new(url)
        .key_prefix(prefix)
        .build()
        .map_err(std::io::Error::other)?;
    // The store connects lazily; this only tells the operator early.
    match backend.ping().await {
        Ok(()) => eprintln!("sessions: in Redis ({backend:?})"),
        Err(e) => eprintln!(
            "sessions: in Redis, which does not answer yet ({e}); \
             requests that need a session get 503 until it does"
        ),
    }
    Ok(Arc::new(RedisSessionStore::new(backend)))
}

/// The key that signs CSRF tokens: `CSRF_KEY` (hex), else a random one.
fn csrf_key() -> std::io::Result<Vec<u8>> {
    let invalid = || std::io::Error::other("CSRF_KEY must be hex, at least 64 digits");
    let Ok(hex) = std::env::var("CSRF_KEY") else {
        eprintln!(
            "CSRF_KEY unset: a random key; tokens die on restart and other instances refuse them"
        );
        let key = portcullis::core::OpaqueToken::generate().map_err(std::io::Error::other)?;
        return Ok(key.as_bytes().to_vec());
    };
    let hex = hex.trim();
    if hex.len() < 64 || !hex.len().is_multiple_of(2) {
        return Err(invalid());
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => u8::try_from(hi * 16 + lo).map_err(|_| invalid()),
                _ => Err(invalid()),
            }
        })
        .collect()
}

/// The app, on the given store, its CSRF tokens signed with `csrf_key`.
fn app(store: Arc<dyn SessionStore>, csrf_key: Vec<u8>) -> Router {
    let mut config = SessionConfig::default().client_ip(peer_ip);
    let mut csrf = CsrfConfig::signed(csrf_key, SignedBinding::session());
    if std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES").is_some() {
        config = config.insecure_dev_cookies();
        csrf = csrf.insecure_dev_cookies();
    }
    let layer = SessionLayer::from_arc(store, config).expect("valid session configuration");
    let csrf = CsrfLayer::new(csrf).expect("valid CSRF configuration");
    Router::new()
        .route("/", get(|| async { Html(include_str!("login.html")) }))
        .route("/csrf", get(csrf_token))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/sessions", get(sessions))
        // Inner: the checks run after the session is installed, before any
        // handler.
        .layer(csrf)
        .layer(layer)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let store = store().await?;
    let key = csrf_key()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    eprintln!("session-login listening on http://{addr}");
    axum::serve(
        listener,
        app(store, key).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
