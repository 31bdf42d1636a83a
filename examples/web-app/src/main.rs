//! Template: a server-rendered app with sessions and CSRF protection.
//!
//! Run it with `cargo run -p web-app` (listens on `127.0.0.1:$PORT`,
//! default 3003). See this crate's README for the contract.
//!
//! Environment:
//! - `PORT`: the port (default 3003).
//! - `PUBLIC_ORIGIN`: the origin users reach the app at behind a proxy
//!   (`https://example.com`); `Origin` is then compared with it, not `Host`.
//! - `PORTCULLIS_INSECURE_DEV_COOKIES=1`: cookies without `Secure` and
//!   `__Host-`, for browsers that refuse secure cookies over plain http.
//! - `CSRF_KEY`: the key that signs CSRF tokens, as hex (at least 64 hex
//!   digits: 32 bytes; `openssl rand -hex 32`). Give every instance the
//!   same one; unset, each process draws its own.
//! - `REDIS_URL` (for example `redis://127.0.0.1:6379/`): sessions and the
//!   login throttle's counters live in Redis, shared by every instance
//!   started on it (keys under `$REDIS_KEY_PREFIX`, default `web-app`);
//!   unset, in this process' memory.
//! - `DATABASE_URL` (`postgres://...`, or `sqlite://web-app.db` for a
//!   durable single node): sessions and the throttle's counters live in
//!   that database (tables created at start); it wins over `REDIS_URL`.
//! - `AUDIT_LOG` (a file path): the audit trail, one JSON object per
//!   audit event appended to that file. It holds user ids and client
//!   addresses: rotate it outside the process (logrotate with
//!   `copytruncate`) and keep it no longer than your retention period.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis::redis::{RedisConfig, RedisSessionStore, RedisThrottleStore};
use portcullis::session::MemoryStore;
use portcullis_sql::{Database, DatabaseUrl};
use web_app::{AppConfig, app};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 3003,
    };
    let csrf_key = match std::env::var("CSRF_KEY") {
        Ok(hex) => Some(from_hex(&hex).ok_or("CSRF_KEY is not hex")?),
        Err(_) => {
            eprintln!(
                "CSRF_KEY unset: a random key; tokens die on restart and other instances refuse them"
            );
            None
        }
    };
    let mut config = AppConfig::default();
    config.public_origin = std::env::var("PUBLIC_ORIGIN").ok();
    config.insecure_dev_cookies = std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES").is_some();
    config.csrf_key = csrf_key;
    config.audit_log = std::env::var_os("AUDIT_LOG")
        .filter(|p| !p.is_empty())
        .map(Into::into);
    let database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let (router, _state) = match (database_url, redis_url) {
        (Some(url), _) => {
            let url = DatabaseUrl::new(url)?;
            let db = Database::connect(&url)?;
            db.migrate()
                .await
                .map_err(|e| format!("DATABASE_URL ({url}): {e}"))?;
            eprintln!("sessions and login throttle: in {url}");
            config.throttle = Some(db.throttle_store());
            app(db.session_store(), config)?
        }
        (None, Some(url)) => {
            let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "web-app".into());
            let backend = RedisConfig::new(url).key_prefix(prefix).build()?;
            // The store connects lazily; this only tells the operator early.
            match backend.ping().await {
                Ok(()) => eprintln!("sessions and login throttle: in Redis ({backend:?})"),
                Err(e) => eprintln!(
                    "sessions and login throttle: in Redis, which does not answer yet ({e}); \
                     requests that need a session get 503 until it does"
                ),
            }
            config.throttle = Some(Arc::new(RedisThrottleStore::new(backend.clone())));
            app(RedisSessionStore::new(backend), config)?
        }
        (None, None) => {
            eprintln!(
                "sessions and login throttle: in memory (set DATABASE_URL or REDIS_URL to share them between instances)"
            );
            app(MemoryStore::new(), config)?
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    eprintln!("web-app listening on http://{addr} (demo users: alice/wonderland, bob/builder)");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// Decodes hex (either case); `None` on an odd length or a non-hex digit.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()
        })
        .collect()
}
