//! Template: server-side sessions with portcullis, and the front door
//! (hashed passwords, a login throttle, remember-me, a password change
//! behind a fresh login).
//!
//! Run it with `cargo run -p session-login` (listens on
//! `127.0.0.1:$PORT`, default 3000). With `REDIS_URL` set (for example
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run -p session-login`) sessions
//! and the login throttle's counters live in Redis and every instance
//! started on the same Redis shares them; unset, they live in this
//! process' memory. With `DATABASE_URL` set (`postgres://...` for several
//! instances, `sqlite://sessions.db` for a durable single node) they live
//! in that database (its tables are created at start). See this crate's
//! README for the JSON contract and for running several instances.
//!
//! Every `POST` goes through `CsrfLayer` (signed tokens, bound to the
//! session, or before login to the `__Host-csrf` pre-session cookie):
//! `GET /csrf` returns a token, sent back in the `x-csrf-token` header.
//! `CSRF_KEY` (hex, at least 32 bytes: `openssl rand -hex 32`) is the key
//! that signs them; give every instance the same one (unset, each process
//! draws its own).
//!
//! `AUDIT_LOG` (a file path) appends the audit trail to that file, one
//! JSON object per audit event. It holds user ids and client addresses:
//! rotate it outside the process (logrotate with `copytruncate`) and keep
//! it no longer than your retention period. `GET /activity` shows the
//! logged-in user their own last events.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis::redis::{RedisConfig, RedisSessionStore, RedisThrottleStore};
use portcullis::session::{MemoryStore, SessionStore};
use portcullis::throttle::ThrottleStore;
use portcullis_sql::{Database, DatabaseUrl};
use session_login::{Options, app};

/// The session store and the throttle's store: PostgreSQL or SQLite when
/// `DATABASE_URL` is set, Redis when `REDIS_URL` is set (shared by every
/// instance on that Redis; keys under `$REDIS_KEY_PREFIX`, default
/// `session-login`), the in-process memory otherwise.
async fn stores() -> std::io::Result<(Arc<dyn SessionStore>, Option<Arc<dyn ThrottleStore>>)> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let url = DatabaseUrl::new(url).map_err(std::io::Error::other)?;
        let db = Database::connect(&url).map_err(std::io::Error::other)?;
        db.migrate()
            .await
            .map_err(|e| std::io::Error::other(format!("DATABASE_URL ({url}): {e}")))?;
        eprintln!("sessions and login throttle: in {url}");
        return Ok((db.session_store(), Some(db.throttle_store())));
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!(
            "sessions and login throttle: in memory (set REDIS_URL to share them between instances)"
        );
        return Ok((Arc::new(MemoryStore::new()), None));
    };
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "session-login".into());
    let backend = RedisConfig::new(url)
        .key_prefix(prefix)
        .build()
        .map_err(std::io::Error::other)?;
    // The store connects lazily; this only tells the operator early.
    match backend.ping().await {
        Ok(()) => eprintln!("sessions and login throttle: in Redis ({backend:?})"),
        Err(e) => eprintln!(
            "sessions and login throttle: in Redis, which does not answer yet ({e}); \
             requests that need a session get 503 until it does"
        ),
    }
    Ok((
        Arc::new(RedisSessionStore::new(backend.clone())),
        Some(Arc::new(RedisThrottleStore::new(backend))),
    ))
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let (sessions, throttle) = stores().await?;
    let mut options = Options::new(csrf_key()?);
    options.throttle = throttle;
    options.insecure_dev_cookies = std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES").is_some();
    options.audit_log = std::env::var_os("AUDIT_LOG")
        .filter(|p| !p.is_empty())
        .map(Into::into);
    let (router, _users) = app(sessions, options).map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    eprintln!("session-login listening on http://{addr}");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
