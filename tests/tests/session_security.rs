//! Session hardening, end to end on a real server: what a login carries
//! from the previous session, `Clear-Site-Data` on logout, foreign cookies
//! that are not ASCII, the stores' bounds.

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::ManualClock;
use portcullis::session::{FileStore, MemoryStore, SessionConfig, SessionStore};
use portcullis_tests::{TestServer, client, cookie_value, session_app, set_cookies};
use reqwest::StatusCode;
use serde_json::Value;

const COOKIE: &str = "__Host-session";

async fn server(store: Arc<dyn SessionStore>, config: SessionConfig) -> TestServer {
    TestServer::start(session_app::router(store, config)).await
}

async fn post(server: &TestServer, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client().post(server.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{COOKIE}={c}"));
    }
    req.send().await.unwrap()
}

async fn value(server: &TestServer, key: &str, cookie: &str) -> Value {
    client()
        .get(server.url(&format!("/get/{key}")))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["value"]
        .clone()
}

/// Logs in as `user` with `cookie` (if any); returns the new cookie.
async fn login(server: &TestServer, user: &str, cookie: Option<&str>) -> String {
    let resp = post(server, &format!("/login/{user}"), cookie).await;
    assert_eq!(resp.status(), StatusCode::OK);
    cookie_value(&resp, COOKIE).expect("login sets the session cookie")
}

#[tokio::test]
async fn login_as_another_user_starts_from_empty_data() {
    let s = server(Arc::new(MemoryStore::new()), SessionConfig::default()).await;
    let mallory = login(&s, "mallory", None).await;
    let resp = post(&s, "/set/mfa_verified/true", Some(&mallory)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(value(&s, "mfa_verified", &mallory).await, "true");

    // Alice logs in in the same browser: nothing of mallory's comes along.
    let alice = login(&s, "alice", Some(&mallory)).await;
    assert_ne!(alice, mallory);
    assert_eq!(value(&s, "mfa_verified", &alice).await, Value::Null);
}

#[tokio::test]
async fn login_keeps_data_from_anonymous_and_from_the_same_user() {
    let s = server(Arc::new(MemoryStore::new()), SessionConfig::default()).await;
    // Anonymous, then logged in: the cart survives.
    let resp = post(&s, "/set/cart/book", None).await;
    let anonymous = cookie_value(&resp, COOKIE).unwrap();
    let alice = login(&s, "alice", Some(&anonymous)).await;
    assert_eq!(value(&s, "cart", &alice).await, "book");
    // Alice logs in again (re-authentication): still hers.
    let again = login(&s, "alice", Some(&alice)).await;
    assert_ne!(again, alice);
    assert_eq!(value(&s, "cart", &again).await, "book");
}

#[tokio::test]
async fn clear_site_data_is_opt_in() {
    for (config, want) in [
        (SessionConfig::default(), None),
        (
            SessionConfig::default().clear_site_data_on_logout(),
            Some("\"cookies\""),
        ),
    ] {
        let s = server(Arc::new(MemoryStore::new()), config).await;
        for path in ["/logout", "/logout-everywhere"] {
            let cookie = login(&s, "alice", None).await;
            let resp = post(&s, path, Some(&cookie)).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let got = resp
                .headers()
                .get("clear-site-data")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(got.as_deref(), want, "{path}");
            // Either way the session cookie is removed and the id is dead.
            assert!(
                set_cookies(&resp)
                    .iter()
                    .any(|c| c.starts_with(&format!("{COOKIE}=;"))),
                "{path}"
            );
            let me = client()
                .get(s.url("/me"))
                .header("cookie", format!("{COOKIE}={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
    }
}

/// Sends a raw `Cookie` header (bytes that reqwest would send as they are).
async fn me_with_cookie_header(s: &TestServer, header: &[u8]) -> reqwest::Response {
    client()
        .get(s.url("/me"))
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(header).unwrap(),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_foreign_non_ascii_cookie_does_not_log_anyone_out() {
    let s = server(Arc::new(MemoryStore::new()), SessionConfig::default()).await;
    let alice = login(&s, "alice", None).await;
    for header in [
        format!("lang=fran\u{e7}ais; {COOKIE}={alice}"),
        format!("{COOKIE}={alice}; theme=\u{1f319}"),
    ] {
        let resp = me_with_cookie_header(&s, header.as_bytes()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{header}");
        assert!(set_cookies(&resp).is_empty(), "cookie kept: {header}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["user"], "alice");
    }
    // Our own cookie twice is still refused, with a foreign one around.
    let planted = format!("lang=fran\u{e7}ais; {COOKIE}={alice}; {COOKIE}={alice}");
    let resp = me_with_cookie_header(&s, planted.as_bytes()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // And a value of ours that is not ASCII is invalid.
    let bad = format!("{COOKIE}=caf\u{e9}");
    let resp = me_with_cookie_header(&s, bad.as_bytes()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}=;")))
    );
}

async fn me(server: &TestServer, cookie: &str) -> StatusCode {
    client()
        .get(server.url("/me"))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_full_memory_store_refuses_new_sessions_and_keeps_live_ones() {
    let clock = Arc::new(ManualClock::starting_now());
    let store = MemoryStore::with_clock(clock.clone()).max_sessions(10);
    let config = SessionConfig::default().clock(clock.clone());
    let s = server(Arc::new(store.clone()), config).await;
    let alice = login(&s, "alice", None).await;
    // Anonymous sessions fill 90% of the bound, then are refused with 503.
    for i in 0..8 {
        let resp = post(&s, "/set/a/b", None).await;
        assert_eq!(resp.status(), StatusCode::OK, "anonymous {i}");
    }
    assert_eq!(store.len(), 9);
    let resp = post(&s, "/set/a/b", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(cookie_value(&resp, COOKIE).is_none());
    // The last tenth is kept for logins; then logins are refused too.
    let bob = login(&s, "bob", None).await;
    assert_eq!(store.len(), 10);
    let resp = post(&s, "/login/carol", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Nobody was evicted to make room.
    assert_eq!(me(&s, &alice).await, StatusCode::OK);
    assert_eq!(me(&s, &bob).await, StatusCode::OK);
    assert_eq!(store.len(), 10);
    // Expired records make room: the store purges them (by its sweep or,
    // when full, all at once) before it refuses anyone.
    clock.advance(Duration::from_secs(31 * 60));
    let carol = login(&s, "carol", None).await;
    assert_eq!(me(&s, &carol).await, StatusCode::OK);
    for i in 0..8 {
        let resp = post(&s, "/set/a/b", None).await;
        assert_eq!(resp.status(), StatusCode::OK, "anonymous {i} after expiry");
    }
    assert_eq!(store.len(), 9);
    assert_eq!(me(&s, &alice).await, StatusCode::UNAUTHORIZED, "expired");
}

fn session_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("sessions"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count()
}

#[tokio::test]
async fn file_store_purges_expired_files_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = FileStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    let config = SessionConfig::default().clock(clock.clone());
    let s = server(Arc::new(store), config).await;
    for _ in 0..5 {
        assert_eq!(post(&s, "/set/a/b", None).await.status(), StatusCode::OK);
    }
    let alice = login(&s, "alice", None).await;
    assert_eq!(session_files(dir.path()), 6);
    // Past the idle timeout, with nobody calling purge_expired: the next
    // create sweeps (the sweep runs at most once per interval, 60 s).
    clock.advance(Duration::from_secs(31 * 60));
    let bob = login(&s, "bob", None).await;
    assert_eq!(session_files(dir.path()), 1);
    assert_eq!(me(&s, &alice).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&s, &bob).await, StatusCode::OK);
}

/// Create, update and delete each sync the directory (on Unix) and still
/// answer as before; the logout's removal is on disk when it returns.
#[tokio::test]
async fn file_store_create_update_logout_with_directory_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let s = server(Arc::new(store), SessionConfig::default()).await;
    let alice = login(&s, "alice", None).await;
    assert_eq!(
        post(&s, "/set/theme/dark", Some(&alice)).await.status(),
        StatusCode::OK
    );
    assert_eq!(value(&s, "theme", &alice).await, "dark");
    assert_eq!(session_files(dir.path()), 1);
    assert_eq!(
        post(&s, "/logout", Some(&alice)).await.status(),
        StatusCode::OK
    );
    assert_eq!(session_files(dir.path()), 0);
    assert_eq!(me(&s, &alice).await, StatusCode::UNAUTHORIZED);
}
