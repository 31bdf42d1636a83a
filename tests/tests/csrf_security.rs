//! CSRF hardening, end to end on real servers: anonymous pages of the
//! web-app template create no server state; the `Origin`/`Host` fallback
//! compares the scheme too.

use std::sync::Arc;

use portcullis::session::{MemoryStore, SessionStore};
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
