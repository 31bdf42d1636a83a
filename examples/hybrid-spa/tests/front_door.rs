//! The front door of the template, through a real server on a manual
//! clock: argon2id logins with one answer for wrong passwords and unknown
//! users, the throttle on the login and on the refresh endpoints, and the
//! password change behind a fresh login, which ends every refresh family
//! and live access token of the user.

use std::sync::Arc;
use std::time::Duration;

use hybrid_spa::{FRESH_FOR, Stores, app_on_clock};
use portcullis::core::ManualClock;
use portcullis_tests::{TestServer, client, cookie_value};
use reqwest::StatusCode;
use serde_json::{Value, json};

const COOKIE: &str = "__Host-refresh";
const NEW_PASSWORD: &str = "plum orchard at dusk, 1987";

struct App {
    server: TestServer,
    clock: Arc<ManualClock>,
}

/// An access token and the refresh token (cookie value) of one login.
struct Pair {
    access: String,
    refresh: String,
}

async fn start() -> App {
    let clock = Arc::new(ManualClock::starting_now());
    let router = app_on_clock(Stores::memory(), clock.clone()).unwrap();
    App {
        server: TestServer::start(router).await,
        clock,
    }
}

impl App {
    async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        client()
            .post(self.server.url("/auth/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap()
    }

    async fn pair(&self, user: &str, password: &str) -> Pair {
        pair(self.login(user, password).await).await
    }

    async fn me(&self, access: &str) -> StatusCode {
        client()
            .get(self.server.url("/api/me"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn refresh(&self, refresh: &str) -> reqwest::Response {
        client()
            .post(self.server.url("/auth/refresh"))
            .header("cookie", format!("{COOKIE}={refresh}"))
            .send()
            .await
            .unwrap()
    }

    async fn change_password(&self, access: &str, new: &str) -> reqwest::Response {
        client()
            .post(self.server.url("/auth/password"))
            .bearer_auth(access)
            .json(&json!({"new_password": new}))
            .send()
            .await
            .unwrap()
    }
}

async fn pair(resp: reqwest::Response) -> Pair {
    assert_eq!(resp.status(), StatusCode::OK);
    let refresh = cookie_value(&resp, COOKIE).expect("refresh cookie");
    let body: Value = resp.json().await.unwrap();
    Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh,
    }
}

/// Status, content type and body of a response.
async fn answer(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, resp.text().await.unwrap())
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = start().await;
    let wrong = answer(app.login("alice", "nope").await).await;
    let unknown = answer(app.login("mallory", "wonderland").await).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.1, "application/problem+json");
    assert_eq!(wrong, unknown);
    let alice = app.pair("alice", "wonderland").await;
    assert_eq!(app.me(&alice.access).await, StatusCode::OK);
}

#[tokio::test]
async fn login_failures_are_throttled_and_the_right_password_works_after_the_wait() {
    let app = start().await;
    for i in 0..5 {
        let resp = app.login("bob", &format!("guess {i}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "free failure {i}");
    }
    let blocked = app.login("bob", "builder").await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        cookie_value(&blocked, COOKIE).is_none(),
        "no login while blocked"
    );
    let wait = retry_after(&blocked);
    assert!(wait >= 1);
    app.clock.advance(Duration::from_secs(wait));
    app.pair("bob", "builder").await;
}

#[tokio::test]
async fn bad_refresh_tokens_are_throttled_per_address() {
    let app = start().await;
    let alice = app.pair("alice", "wonderland").await;
    // 20 free failures per address, then 429 with Retry-After.
    for i in 0..20 {
        let resp = app.refresh(&format!("not-a-token-{i}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "free failure {i}");
    }
    let blocked = app.refresh(&alice.refresh).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&blocked);
    assert!(wait >= 1);
    // One address counter for the login and the refresh endpoints.
    assert_eq!(
        app.login("alice", "wonderland").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.clock.advance(Duration::from_secs(wait));
    let resp = app.refresh(&alice.refresh).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the rightful refresh after the wait"
    );
}

#[tokio::test]
async fn a_password_change_needs_a_fresh_login_and_ends_the_other_devices_tokens() {
    let app = start().await;
    let laptop = app.pair("alice", "wonderland").await;
    let phone = app.pair("alice", "wonderland").await;
    let bob = app.pair("bob", "builder").await;

    // Eleven minutes later the access token is still valid, but the login
    // behind it is too old: RFC 9470's step-up challenge.
    app.clock.advance(FRESH_FOR + Duration::from_secs(60));
    assert_eq!(app.me(&laptop.access).await, StatusCode::OK);
    let resp = app.change_password(&laptop.access, NEW_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{challenge}"
    );
    assert!(challenge.contains(&format!("max_age={}", FRESH_FOR.as_secs())));

    // Step-up is a new login; the policy refuses a short password.
    let laptop = app.pair("alice", "wonderland").await;
    let resp = app.change_password(&laptop.access, "short").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.me(&phone.access).await,
        StatusCode::OK,
        "nothing changed"
    );

    let resp = app.change_password(&laptop.access, NEW_PASSWORD).await;
    let fresh = pair(resp).await;
    // Every other device of alice's is logged out at once: access tokens
    // and refresh tokens alike; this client got a new pair.
    assert_eq!(app.me(&phone.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.refresh(&phone.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(&laptop.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&fresh.access).await, StatusCode::OK);
    assert_eq!(app.refresh(&fresh.refresh).await.status(), StatusCode::OK);
    assert_eq!(app.me(&bob.access).await, StatusCode::OK, "bob untouched");

    assert_eq!(
        app.login("alice", "wonderland").await.status(),
        StatusCode::UNAUTHORIZED,
        "the old password is dead"
    );
    app.pair("alice", NEW_PASSWORD).await;
}
