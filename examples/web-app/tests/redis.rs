//! `REDIS_URL`: two instances of the real binary share sessions (and the
//! session-bound CSRF tokens) through a throwaway redis-server.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{ExampleProcess, client, cookie_value};
use reqwest::StatusCode;

const SESSION: &str = "__Host-session";

/// `GET path`: status, the session cookie set (if any), the body.
async fn get(
    app: &ExampleProcess,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut req = client().get(format!("{}{path}", base(app)));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{SESSION}={c}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let set = cookie_value(&resp, SESSION);
    (status, set, resp.text().await.unwrap())
}

/// A same-origin form `POST`, as a browser sends it.
async fn post(
    app: &ExampleProcess,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", base(app)))
        .header("sec-fetch-site", "same-origin")
        .header("origin", base(app))
        .header("cookie", format!("{SESSION}={cookie}"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// `http://127.0.0.1:<port>` (the line the binary prints goes on after
/// the address).
fn base(app: &ExampleProcess) -> &str {
    app.url.split_whitespace().next().unwrap()
}

fn token_in(body: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).expect("a csrf_token field") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_owned()
}

#[tokio::test]
async fn sessions_and_their_csrf_tokens_are_shared_through_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str())];
    let a = ExampleProcess::start(env!("CARGO_BIN_EXE_web-app"), &env);
    let b = ExampleProcess::start(env!("CARGO_BIN_EXE_web-app"), &env);

    // The login form on A; the login itself on B (same session, same token).
    let (status, anon, body) = get(&a, "/login", None).await;
    assert_eq!(status, StatusCode::OK);
    let anon = anon.expect("the form starts a session");
    let resp = post(
        &b,
        "/login",
        &anon,
        &[
            ("username", "alice"),
            ("password", "wonderland"),
            ("csrf_token", &token_in(&body)),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = cookie_value(&resp, SESSION).expect("a new session id");
    assert!(redis.dbsize() > 0, "the session lives in Redis");

    // Logged in on A too; log out on A, and B refuses the session.
    let (status, _, profile) = get(&a, "/profile", Some(&session)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(profile.contains("Alice Liddell"));
    let resp = post(
        &a,
        "/logout",
        &session,
        &[("csrf_token", &token_in(&profile))],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, _, _) = get(&b, "/profile", Some(&session)).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "B sends the logged-out user to /login"
    );
}
