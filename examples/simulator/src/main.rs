//! The portcullis simulator: sessions, JWT, JWT with pushed revocation and
//! the hybrid pattern side by side, on the real layers, with a page that
//! walks the seeds' "try it yourself" scenarios.
//!
//! Run it with `cargo run --release -p simulator` and open the URL it
//! prints (`127.0.0.1:$PORT`, default 8000; `PORT=0` picks a free port).
//!
//! - `REDIS_URL=redis://127.0.0.1:6379/`: sessions (the session strategy and
//!   the scale-out lesson's shared store) live in Redis under the key
//!   prefix `portcullis-simulator`. Refresh families and JWT revocations
//!   stay in memory: their Redis stores are not written yet.
//! - `PORTCULLIS_INSECURE_DEV_COOKIES=1`: cookies without `Secure` and
//!   without their `__Host-`/`__Secure-` prefix, for browsers that refuse
//!   `Secure` cookies over plain http on 127.0.0.1 (Safari; the page warns
//!   when it detects one). Chromium treats 127.0.0.1 and localhost as
//!   secure contexts and keeps the library's defaults, which are used
//!   unless this is set.
//!
//! See this crate's README for the HTTP API the page uses.

mod app;
mod ops;
mod scale;
mod strategy;
mod users;

use std::sync::Arc;

use portcullis::redis::RedisConfig;

use crate::strategy::{BuildError, Settings};

async fn settings() -> Result<Settings, BuildError> {
    let insecure_dev_cookies = std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES")
        .is_some_and(|v| !v.is_empty() && v != "0");
    if insecure_dev_cookies {
        eprintln!(
            "cookies: insecure development mode (no Secure flag, no __Host-/__Secure- prefix)"
        );
    }
    let redis = match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        None => {
            eprintln!("sessions: in memory (set REDIS_URL to keep them in Redis)");
            None
        }
        Some(url) => {
            let backend = RedisConfig::new(url)
                .key_prefix("portcullis-simulator")
                .build()?;
            // The store connects lazily; this only tells the operator early.
            match backend.ping().await {
                Ok(()) => eprintln!("sessions: in Redis"),
                Err(e) => eprintln!(
                    "sessions: in Redis, which does not answer yet ({e}); \
                     session requests get 503 until it does"
                ),
            }
            eprintln!(
                "refresh families and JWT revocations: in memory (no Redis store for them yet)"
            );
            Some(backend)
        }
    };
    Ok(Settings {
        insecure_dev_cookies,
        redis,
    })
}

#[tokio::main]
async fn main() -> Result<(), BuildError> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 8000,
    };
    let app = app::app(&Arc::new(settings().await?))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("simulator listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
