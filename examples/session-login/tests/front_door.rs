//! The front door of the template, through a real server on a manual
//! clock: argon2id logins with one answer for wrong passwords and unknown
//! users, the login throttle, remember-me cookies, the upgrade of an old
//! hash, and the password change behind a fresh login.

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::ManualClock;
use portcullis::session::MemoryStore;
use portcullis_tests::{TestServer, client, cookie_value, set_cookies};
use reqwest::StatusCode;
use serde_json::{Value, json};
use session_login::{FRESH_FOR, Options, REMEMBER_FOR, Users, app};

const COOKIE: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";

struct App {
    server: TestServer,
    clock: Arc<ManualClock>,
    users: Arc<Users>,
}

async fn start() -> App {
    let clock = Arc::new(ManualClock::starting_now());
    let mut options = Options::new(vec![0x5c; 32]);
    options.clock = clock.clone();
    let store = MemoryStore::with_clock(clock.clone());
    let (router, users) = app(Arc::new(store), options).unwrap();
    App {
        server: TestServer::start(router).await,
        clock,
        users,
    }
}

/// `GET /csrf` with `cookie` (a whole `Cookie` header): the token, and the
/// cookie header to send with it.
async fn csrf(app: &App, cookie: Option<&str>) -> (String, String) {
    let mut req = client().get(app.server.url("/csrf"));
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

async fn login_as(app: &App, body: Value) -> reqwest::Response {
    let (token, cookie) = csrf(app, None).await;
    client()
        .post(app.server.url("/login"))
        .header("cookie", cookie)
        .header("x-csrf-token", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn login(app: &App, user: &str, password: &str) -> reqwest::Response {
    login_as(app, json!({"username": user, "password": password})).await
}

/// Logs in: the session cookie (`__Host-session=...`).
async fn session(app: &App, user: &str, password: &str) -> String {
    let resp = login(app, user, password).await;
    assert_eq!(resp.status(), StatusCode::OK, "{user} logs in");
    format!("{COOKIE}={}", cookie_value(&resp, COOKIE).unwrap())
}

/// A `POST` of `body` as the session `cookie`, with a token bound to it.
async fn post(app: &App, path: &str, cookie: &str, body: Value) -> reqwest::Response {
    let (token, _) = csrf(app, Some(cookie)).await;
    client()
        .post(app.server.url(path))
        .header("cookie", cookie)
        .header("x-csrf-token", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn me(app: &App, cookie: &str) -> StatusCode {
    client()
        .get(app.server.url("/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
}

/// Status, content type and body of a response.
async fn answer(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn no_template_user_is_stored_as_a_plain_password() {
    let app = start().await;
    for user in ["alice", "bob"] {
        let phc = app.users.stored_hash(user).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{user}: {phc}");
        assert!(!phc.contains("wonderland") && !phc.contains("builder"));
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = start().await;
    let before = app.users.hashes_computed();
    let wrong = answer(login(&app, "alice", "nope").await).await;
    let after_wrong = app.users.hashes_computed();
    let unknown = answer(login(&app, "mallory", "wonderland").await).await;
    let after_unknown = app.users.hashes_computed();
    // The same cost: one verification each (the unknown user's against the
    // dummy hash).
    assert_eq!(after_wrong - before, 1);
    assert_eq!(after_unknown - after_wrong, 1);
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.1, "application/problem+json");
    assert_eq!(
        wrong, unknown,
        "an unknown user is told what a known one is"
    );
    let resp = login(&app, "alice", "wonderland").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = format!("{COOKIE}={}", cookie_value(&resp, COOKIE).unwrap());
    assert_eq!(me(&app, &cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn failures_are_throttled_with_retry_after_and_the_right_password_works_after_the_wait() {
    let app = start().await;
    for i in 0..5 {
        let resp = login(&app, "alice", &format!("guess {i}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "free failure {i}");
    }
    // Blocked: even the right password is not checked, and an unknown
    // account from here is told the same.
    let blocked = login(&app, "alice", "wonderland").await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(
        blocked.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        cookie_value(&blocked, COOKIE),
        None,
        "no login while blocked"
    );

    app.clock.advance(Duration::from_secs(retry));
    session(&app, "alice", "wonderland").await;
}

#[tokio::test]
async fn the_remember_me_box_gives_a_max_age_cookie_and_unticked_none() {
    let app = start().await;
    let session_cookie = |resp: &reqwest::Response| {
        set_cookies(resp)
            .into_iter()
            .find(|c| c.starts_with(&format!("{COOKIE}=")))
            .unwrap()
    };
    let remembered = login_as(
        &app,
        json!({"username": "alice", "password": "wonderland", "remember": true}),
    )
    .await;
    assert_eq!(remembered.status(), StatusCode::OK);
    let line = session_cookie(&remembered);
    assert!(
        line.contains(&format!("Max-Age={}", REMEMBER_FOR.as_secs())),
        "{line}"
    );
    for body in [
        json!({"username": "alice", "password": "wonderland", "remember": false}),
        json!({"username": "alice", "password": "wonderland"}),
    ] {
        let resp = login_as(&app, body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let line = session_cookie(&resp);
        assert!(!line.to_ascii_lowercase().contains("max-age"), "{line}");
    }
}

#[tokio::test]
async fn an_old_hash_is_upgraded_at_login() {
    let app = start().await;
    assert!(
        app.users
            .stored_hash("bob")
            .unwrap()
            .starts_with("$argon2id$v=19$m=12288,t=3,p=1$")
    );
    session(&app, "bob", "builder").await;
    let upgraded = app.users.stored_hash("bob").unwrap();
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    session(&app, "bob", "builder").await;
    assert_eq!(app.users.stored_hash("bob").unwrap(), upgraded, "once");
}

#[tokio::test]
async fn a_password_change_needs_a_fresh_login_and_logs_out_the_other_devices() {
    let app = start().await;
    let laptop = session(&app, "alice", "wonderland").await;
    let phone = session(&app, "alice", "wonderland").await;
    let bob = session(&app, "bob", "builder").await;
    let new = json!({"new_password": "plum orchard at dusk, 1987"});

    // Twenty minutes later the login is too old for a password change.
    app.clock.advance(2 * FRESH_FOR);
    let resp = post(&app, "/password", &laptop, new.clone()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "login_not_fresh");
    assert_eq!(body["max_age"], FRESH_FOR.as_secs());

    // A wrong password does not make it fresh; the right one does.
    let resp = post(
        &app,
        "/reauth",
        &laptop,
        json!({"username": "alice", "password": "nope"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post(
        &app,
        "/reauth",
        &laptop,
        json!({"username": "alice", "password": "wonderland"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let laptop = format!("{COOKIE}={}", cookie_value(&resp, COOKIE).unwrap());

    // The policy refuses a weak new password: nothing changes.
    let resp = post(&app, "/password", &laptop, json!({"new_password": "short"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(me(&app, &phone).await, StatusCode::OK);

    let resp = post(&app, "/password", &laptop, new).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let laptop = cookie_value(&resp, COOKIE).map_or(laptop, |v| format!("{COOKIE}={v}"));
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ended": 1}));
    assert_eq!(
        me(&app, &phone).await,
        StatusCode::UNAUTHORIZED,
        "logged out"
    );
    assert_eq!(me(&app, &laptop).await, StatusCode::OK, "this device stays");
    assert_eq!(
        me(&app, &bob).await,
        StatusCode::OK,
        "other users untouched"
    );
    let stored = app.users.stored_hash("alice").unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));

    assert_eq!(
        login(&app, "alice", "wonderland").await.status(),
        StatusCode::UNAUTHORIZED,
        "the old password is dead"
    );
    session(&app, "alice", "plum orchard at dusk, 1987").await;
}
