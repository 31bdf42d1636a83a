//! CSRF hardening, end to end on real servers: anonymous pages of the
//! web-app template create no server state; the `Origin`/`Host` fallback
//! compares the scheme too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis::session::{MemoryStore, SessionStore};
use portcullis_csrf::{CsrfConfig, CsrfLayer};
use portcullis_tests::{TestServer, client, cookie_value};
use reqwest::StatusCode;
use web_app::AppConfig;

#[tokio::test]
async fn cookieless_login_pages_leave_the_store_empty() {
    let store = MemoryStore::new();
    let shared: Arc<dyn SessionStore> = Arc::new(store.clone());
    let (router, _state) = web_app::app(shared, AppConfig::default()).unwrap();
    let server = TestServer::start(router).await;
    let http = client();
    for _ in 0..200 {
        let resp = http.get(server.url("/login")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(cookie_value(&resp, "__Host-session").is_none());
        assert!(cookie_value(&resp, "__Host-csrf").is_some());
        assert!(resp.text().await.unwrap().contains("name=\"csrf_token\""));
    }
    assert!(store.is_empty(), "{} records", store.len());
}

/// A server whose only route counts the POSTs that reached it.
async fn counting_server(config: portcullis_csrf::CsrfConfig) -> (TestServer, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let router = axum::Router::new()
        .route(
            "/act",
            axum::routing::post(move || {
                let seen = Arc::clone(&seen);
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    "done"
                }
            }),
        )
        .layer(CsrfLayer::new(config).unwrap());
    (TestServer::start(router).await, calls)
}

/// A browser without Fetch Metadata posts from `origin` to the server.
async fn post_from(server: &TestServer, origin: &str) -> StatusCode {
    client()
        .post(server.url("/act"))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn an_http_page_of_the_same_host_is_another_origin() {
    let (server, calls) = counting_server(CsrfConfig::origin_check_only()).await;
    let host = server.addr.to_string();
    // Host is 127.0.0.1:port for all three: only the scheme differs.
    assert_eq!(
        post_from(&server, &format!("http://{host}")).await,
        StatusCode::FORBIDDEN,
        "an https site refuses its http twin"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        post_from(&server, &format!("https://{host}")).await,
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (server, calls) =
        counting_server(CsrfConfig::origin_check_only().insecure_http_site()).await;
    let host = server.addr.to_string();
    assert_eq!(
        post_from(&server, &format!("http://{host}")).await,
        StatusCode::OK,
        "a plain-http development site"
    );
    assert_eq!(
        post_from(&server, &format!("https://{host}")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
