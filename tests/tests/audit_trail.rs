//! The web-app template's audit trail, through its real router on a real
//! socket: "your security activity" (`/account/activity`) lists the
//! logged-in user's own logins, failed logins, logouts and password
//! changes, newest first, with the client address and reason, escaped,
//! and never another user's; the audit file holds the same events as JSON
//! lines, and no password, cookie or token.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::ManualClock;
use portcullis::session::MemoryStore;
use portcullis_tests::{TestServer, client, cookie_value};
use reqwest::StatusCode;
use serde_json::Value;
use web_app::{AppConfig, app};

const SESSION: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";
const NEW_PASSWORD: &str = "plum orchard at dusk, 1987";

async fn start(config: AppConfig) -> TestServer {
    let (router, _) = app(MemoryStore::new(), config).unwrap();
    TestServer::start(router).await
}

fn token_in(body: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).expect("a csrf_token field") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_owned()
}

async fn get(server: &TestServer, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client().get(server.url(path)).header("accept", "text/html");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// A same-origin form `POST`, as a browser sends it.
async fn post(
    server: &TestServer,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(server.url(path))
        .header("sec-fetch-site", "same-origin")
        .header("origin", format!("http://{}", server.addr))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A login through the form: the session's `Cookie` header when it
/// succeeded.
async fn login(server: &TestServer, user: &str, password: &str) -> Option<String> {
    let resp = get(server, "/login", None).await;
    let pre = format!(
        "{PRE_SESSION}={}",
        cookie_value(&resp, PRE_SESSION).unwrap()
    );
    let token = token_in(&resp.text().await.unwrap());
    let form = [
        ("username", user),
        ("password", password),
        ("csrf_token", &token),
    ];
    let resp = post(server, "/login", &pre, &form).await;
    match resp.status() {
        StatusCode::SEE_OTHER => Some(format!(
            "{SESSION}={}",
            cookie_value(&resp, SESSION).unwrap()
        )),
        StatusCode::UNAUTHORIZED => None,
        other => panic!("login answered {other}"),
    }
}

/// The token of the profile page's forms, for `cookie`.
async fn token(server: &TestServer, cookie: &str) -> String {
    let resp = get(server, "/profile", Some(cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    token_in(&resp.text().await.unwrap())
}

async fn logout(server: &TestServer, cookie: &str) {
    let token = token(server, cookie).await;
    let resp = post(server, "/logout", cookie, &[("csrf_token", &token)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

/// The activity page's rows: (event, client, reason), newest first.
async fn activity(server: &TestServer, cookie: &str) -> Vec<(String, String, String)> {
    let resp = get(server, "/account/activity", Some(cookie)).await;
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
    let server = start(AppConfig::default()).await;

    let first = login(&server, "alice", "wonderland").await.unwrap();
    assert!(login(&server, "alice", "not-her-password").await.is_none());
    logout(&server, &first).await;
    // Another user's activity in between, and a name nobody has.
    let bob = login(&server, "bob", "builder").await.unwrap();
    assert!(login(&server, "bob", "not-his-password").await.is_none());
    assert!(login(&server, "mallory", "guess").await.is_none());
    let again = login(&server, "alice", "wonderland").await.unwrap();

    let profile = get(&server, "/profile", Some(&again))
        .await
        .text()
        .await
        .unwrap();
    assert!(profile.contains("href=\"/account/activity\""));
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

    // A password change ends bob's other sessions and shows on his page.
    let other = login(&server, "bob", "builder").await.unwrap();
    let token = token(&server, &bob).await;
    let resp = post(
        &server,
        "/account/password",
        &bob,
        &[("new_password", NEW_PASSWORD), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The change renews the session id.
    let bob = cookie_value(&resp, SESSION).map_or(bob, |v| format!("{SESSION}={v}"));
    let rows = activity(&server, &bob).await;
    assert_eq!(rows[0], row("password_changed", ""));
    assert_eq!(rows.len(), 4);
    assert_eq!(
        get(&server, "/account/activity", Some(&other))
            .await
            .status(),
        StatusCode::SEE_OTHER,
        "the session the password change ended sees nothing"
    );
    assert_eq!(activity(&server, &again).await.len(), 4);
}

#[tokio::test]
async fn the_activity_page_needs_a_login() {
    let server = start(AppConfig::default()).await;
    let cookie = login(&server, "alice", "wonderland").await.unwrap();
    logout(&server, &cookie).await;
    for cookie in [None, Some(cookie.as_str())] {
        let resp = get(&server, "/account/activity", cookie).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/login");
        assert!(!resp.text().await.unwrap().contains("login_succeeded"));
    }
}

#[tokio::test]
async fn the_audit_file_holds_the_audit_events_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut config = AppConfig::default();
    config.audit_log = Some(path.clone());
    let server = start(config).await;

    let cookie = login(&server, "alice", "wonderland").await.unwrap();
    assert!(login(&server, "alice", "not-her-password").await.is_none());
    logout(&server, &cookie).await;

    // The file is written by a thread of its own: wait for its three lines.
    let mut text = String::new();
    for _ in 0..500 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for secret in [
        "wonderland",
        "not-her-password",
        cookie.split('=').nth(1).unwrap(),
    ] {
        assert!(!text.contains(secret));
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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

/// Anyone can add failed logins to an account's page by typing its name
/// with a wrong password. They take at most five of its rows: an
/// intruder's login stays on the owner's page however many wrong
/// passwords follow it.
#[tokio::test]
async fn failed_logins_take_at_most_five_rows_of_the_activity_page() {
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = AppConfig::default();
    config.clock = Some(clock.clone());
    let server = start(config).await;
    assert!(login(&server, "alice", "wonderland").await.is_some());
    for i in 0..30 {
        // Past the throttle's backoff for one account at one address.
        clock.advance(Duration::from_secs(15 * 60 + 1));
        let wrong = format!("wrong-{i}");
        assert!(login(&server, "alice", &wrong).await.is_none(), "{i}");
    }
    clock.advance(Duration::from_secs(15 * 60 + 1));
    let cookie = login(&server, "alice", "wonderland").await.unwrap();
    let failed = row("login_failed", "invalid_credentials");
    let succeeded = row("login_succeeded", "");
    assert_eq!(
        activity(&server, &cookie).await,
        [
            succeeded.clone(),
            failed.clone(),
            failed.clone(),
            failed.clone(),
            failed.clone(),
            failed,
            succeeded,
        ]
    );
}
