//! Template: the hybrid pattern for single-page apps.
//!
//! Run it with `cargo run -p hybrid-spa` (listens on `127.0.0.1:$PORT`,
//! default 3002). With `REDIS_URL` set (for example
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run -p hybrid-spa`) refresh
//! families and revocations live in Redis, shared by every instance on it
//! (which must also share `REFRESH_ROTATION_KEY` and `JWT_KEY_FILE`);
//! unset, in this process' memory. With `DATABASE_URL` set
//! (`postgres://...` for several instances, `sqlite://hybrid-spa.db` for one
//! durable node) they live in that database instead (tables created at
//! start). With `DPOP_PUBLIC_ORIGIN=http://127.0.0.1:3002` access and
//! refresh tokens are bound to a key pair the page makes (DPoP). See this
//! crate's README.

use std::net::SocketAddr;

use hybrid_spa::{app, stores};

#[tokio::main]
async fn main() -> Result<(), String> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3002);
    let router = app(stores().await?)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "hybrid-spa listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string())
}
