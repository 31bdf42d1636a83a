//! `cargo run -p metrics-prometheus`: see the library's documentation.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), String> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3002);
    let app = metrics_prometheus::app()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "metrics-prometheus listening on http://{} (metrics at /metrics)",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let served = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string());
    // The provider lives until the server stops.
    drop(app.provider);
    served
}
