//! "Your security activity" (`GET /activity`) and the audit file, through
//! the template's real router on a real socket: a user sees their own
//! logins, failed logins, logouts, newest first, with the client address
//! and reason, and never another user's; the audit file holds the same
//! events as JSON lines, and no password.

use std::sync::Arc;
use std::time::Duration;

use portcullis::session::MemoryStore;
use portcullis_tests::{TestServer, client, cookie_value};
use reqwest::StatusCode;
use serde_json::{Value, json};
use session_login::{Options, app};

const COOKIE: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";

async fn start(options: Options) -> TestServer {
    let (router, _) = app(Arc::new(MemoryStore::new()), options).unwrap();
    TestServer::start(router).await
}

/// `GET /csrf` with `cookie`: the token, and the cookie header to send.
async fn csrf(server: &TestServer, cookie: Option<&str>) -> (String, String) {
    let mut req = client().get(server.url("/csrf"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pre = cookie_value(&resp, PRE_SESSION).map(|v| format!("{PRE_SESSION}={v}"));
    let body: Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    (token, pre.or_else(|| cookie.map(str::to_owned)).unwrap())
}

/// A login attempt: the session cookie when it succeeded.
async fn login(server: &TestServer, user: &str, password: &str) -> Option<String> {
    let (token, cookie) = csrf(server, None).await;
    let resp = client()
        .post(server.url("/login"))
        .header("cookie", cookie)
        .header("x-csrf-token", token)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    match resp.status() {
        StatusCode::OK => Some(format!("{COOKIE}={}", cookie_value(&resp, COOKIE).unwrap())),
        StatusCode::UNAUTHORIZED => None,
        other => panic!("login answered {other}"),
    }
}

async fn logout(server: &TestServer, cookie: &str) {
    let (token, _) = csrf(server, Some(cookie)).await;
    let resp = client()
        .post(server.url("/logout"))
        .header("cookie", cookie)
        .header("x-csrf-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

/// The activity page's rows: (event, client, reason), newest first.
async fn activity(server: &TestServer, cookie: &str) -> Vec<(String, String, String)> {
    let resp = client()
        .get(server.url("/activity"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    let cell = |row: &str, class: &str| {
        let start = row.find(&format!("class=\"{class}\">")).unwrap() + class.len() + 9;
        row[start..start + row[start..].find('<').unwrap()].to_owned()
    };
    html.split("<tr><td><time>")
        .skip(1)
        .map(|row| {
            assert!(row[..20].ends_with('Z'), "a UTC time: {row}");
            (cell(row, "event"), cell(row, "client"), cell(row, "reason"))
        })
        .collect()
}

fn row(event: &str, reason: &str) -> (String, String, String) {
    (event.into(), "127.0.0.1".into(), reason.into())
}

#[tokio::test]
async fn the_activity_page_lists_the_users_own_events_newest_first() {
    let server = start(Options::new(vec![0x5c; 32])).await;

    let first = login(&server, "alice", "wonderland").await.unwrap();
    assert!(login(&server, "alice", "not-her-password").await.is_none());
    logout(&server, &first).await;
    // Another user's activity in between.
    let bob = login(&server, "bob", "builder").await.unwrap();
    assert!(login(&server, "bob", "not-his-password").await.is_none());
    // A name nobody has: no account to show it to.
    assert!(login(&server, "mallory", "guess").await.is_none());
    let again = login(&server, "alice", "wonderland").await.unwrap();

    assert_eq!(
        activity(&server, &again).await,
        [
            row("login_succeeded", ""),
            row("logout", ""),
            row("login_failed", "invalid_credentials"),
            row("login_succeeded", ""),
        ]
    );
    assert_eq!(
        activity(&server, &bob).await,
        [
            row("login_failed", "invalid_credentials"),
            row("login_succeeded", ""),
        ]
    );
}

#[tokio::test]
async fn the_activity_page_needs_a_login() {
    let server = start(Options::new(vec![0x5c; 32])).await;
    let cookie = login(&server, "alice", "wonderland").await.unwrap();
    logout(&server, &cookie).await;
    for cookie in [None, Some(cookie.as_str())] {
        let mut req = client().get(server.url("/activity"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(!resp.text().await.unwrap().contains("login_succeeded"));
    }
}

#[tokio::test]
async fn the_audit_file_holds_the_audit_events_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut options = Options::new(vec![0x5c; 32]);
    options.audit_log = Some(path.clone());
    let server = start(options).await;

    let cookie = login(&server, "alice", "wonderland").await.unwrap();
    assert!(login(&server, "alice", "not-her-password").await.is_none());
    logout(&server, &cookie).await;

    // The file is written by a thread of its own: wait for its three lines.
    let mut lines = Vec::new();
    for _ in 0..500 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 3 {
            assert!(!text.contains("wonderland") && !text.contains("not-her-password"));
            assert!(!text.contains(cookie.split('=').nth(1).unwrap()));
            lines = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["user"].as_str().unwrap(),
                l["client"].as_str().unwrap(),
                l["route"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("login_succeeded", "alice", "127.0.0.1", "/login"),
            ("login_failed", "alice", "127.0.0.1", "/login"),
            ("logout", "alice", "127.0.0.1", "/logout"),
        ]
    );
    assert_eq!(lines[1]["reason"], "invalid_credentials");
}

/// The audit file holds personal data: the template creates it readable
/// and writable by the service's account only, whatever the umask lets
/// other files be.
#[cfg(unix)]
#[tokio::test]
async fn the_audit_file_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    // What a file created the ordinary way gets here: the case worth
    // guarding against when others may read it.
    let ordinary = dir.path().join("ordinary");
    std::fs::File::create(&ordinary).unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut options = Options::new(vec![0x5c; 32]);
    options.audit_log = Some(path.clone());
    let server = start(options).await;
    assert!(login(&server, "alice", "not-her-password").await.is_none());
    assert_eq!(
        mode(&path),
        0o600,
        "ordinary files here are {:o}",
        mode(&ordinary)
    );
}
