//! The front door of the template, through a real server on a manual
//! clock: argon2id logins with one page for wrong passwords and unknown
//! users, the login throttle, the remember-me box, the upgrade of an old
//! hash, and the change-password page behind a fresh login.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::ManualClock;
use portcullis::session::MemoryStore;
use portcullis_tests::{TestServer, client, cookie_value, set_cookies};
use reqwest::StatusCode;
use web_app::{AppConfig, AppState, FRESH_FOR, REMEMBER_FOR, app};

const SESSION: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";
const NEW_PASSWORD: &str = "plum orchard at dusk, 1987";

struct App {
    server: TestServer,
    clock: Arc<ManualClock>,
    state: Arc<AppState>,
}

async fn start() -> App {
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = AppConfig::default();
    config.clock = Some(clock.clone());
    let (router, state) = app(MemoryStore::with_clock(clock.clone()), config).unwrap();
    App {
        server: TestServer::start(router).await,
        clock,
        state,
    }
}

fn token_in(body: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).expect("a csrf_token field") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_owned()
}

impl App {
    /// `GET path` as `cookie` (a whole `Cookie` header, if any).
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = client()
            .get(self.server.url(path))
            .header("accept", "text/html");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    /// A same-origin form `POST`, as a browser sends it.
    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        client()
            .post(self.server.url(path))
            .header("sec-fetch-site", "same-origin")
            .header("origin", format!("http://{}", self.server.addr))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The login form, then a login posted with it (`remember`: the box).
    async fn login(&self, user: &str, password: &str, remember: bool) -> reqwest::Response {
        let resp = self.get("/login", None).await;
        let pre = format!(
            "{PRE_SESSION}={}",
            cookie_value(&resp, PRE_SESSION).unwrap()
        );
        let token = token_in(&resp.text().await.unwrap());
        let mut form = vec![
            ("username", user),
            ("password", password),
            ("csrf_token", &token),
        ];
        if remember {
            form.push(("remember", "on"));
        }
        self.post("/login", &pre, &form).await
    }

    /// Logs in: the session's `Cookie` header.
    async fn session(&self, user: &str, password: &str) -> String {
        let resp = self.login(user, password, false).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{user} logs in");
        format!("{SESSION}={}", cookie_value(&resp, SESSION).unwrap())
    }

    /// A token from the page at `path`, rendered for `cookie`.
    async fn token(&self, path: &str, cookie: &str) -> String {
        let resp = self.get(path, Some(cookie)).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        token_in(&resp.text().await.unwrap())
    }

    async fn logged_in(&self, cookie: &str) -> bool {
        self.get("/profile", Some(cookie)).await.status() == StatusCode::OK
    }
}

#[tokio::test]
async fn the_demo_users_are_stored_as_argon2id_hashes() {
    let app = start().await;
    for user in ["alice", "bob"] {
        let phc = app.state.stored_hash(user).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{user}: {phc}");
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_page() {
    let app = start().await;
    let answer = |resp: reqwest::Response| async move {
        let status = resp.status();
        let body = resp.text().await.unwrap();
        // The page differs by its (masked) CSRF token only.
        let token = token_in(&body);
        (status, body.replace(&token, "TOKEN"))
    };
    let before = app.state.hashes_computed();
    let wrong = answer(app.login("alice", "nope", false).await).await;
    let after_wrong = app.state.hashes_computed();
    let unknown = answer(app.login("mallory", "wonderland", false).await).await;
    let after_unknown = app.state.hashes_computed();
    // The same cost: one verification each (the unknown user's against the
    // dummy hash).
    assert_eq!(after_wrong - before, 1);
    assert_eq!(after_unknown - after_wrong, 1);
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
    assert_eq!(app.state.logins(), 0);
    app.session("alice", "wonderland").await;
    assert_eq!(app.state.logins(), 1);
}

#[tokio::test]
async fn failures_are_throttled_with_retry_after_and_the_right_password_works_after_the_wait() {
    let app = start().await;
    for i in 0..5 {
        let resp = app.login("alice", &format!("guess {i}"), false).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "free failure {i}");
    }
    let blocked = app.login("alice", "wonderland", false).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(cookie_value(&blocked, SESSION), None);
    assert_eq!(app.state.logins(), 0, "the handler did not run");

    app.clock.advance(Duration::from_secs(retry));
    app.session("alice", "wonderland").await;
}

#[tokio::test]
async fn the_remember_me_box_gives_a_max_age_cookie_and_unticked_none() {
    let app = start().await;
    let line = |resp: &reqwest::Response| {
        set_cookies(resp)
            .into_iter()
            .find(|c| c.starts_with(&format!("{SESSION}=")))
            .unwrap()
    };
    let remembered = app.login("alice", "wonderland", true).await;
    assert_eq!(remembered.status(), StatusCode::SEE_OTHER);
    let cookie = line(&remembered);
    assert!(
        cookie.contains(&format!("Max-Age={}", REMEMBER_FOR.as_secs())),
        "{cookie}"
    );
    let plain = app.login("alice", "wonderland", false).await;
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    let cookie = line(&plain);
    assert!(!cookie.to_ascii_lowercase().contains("max-age"), "{cookie}");
}

#[tokio::test]
async fn an_old_hash_is_upgraded_at_login() {
    let app = start().await;
    let before = app.state.stored_hash("bob").unwrap();
    assert!(before.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"));
    app.session("bob", "builder").await;
    let after = app.state.stored_hash("bob").unwrap();
    assert!(
        after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{after}"
    );
    app.session("bob", "builder").await;
}

#[tokio::test]
async fn the_password_page_needs_a_fresh_login_and_a_change_logs_out_the_other_devices() {
    let app = start().await;
    let laptop = app.session("alice", "wonderland").await;
    let phone = app.session("alice", "wonderland").await;
    let bob = app.session("bob", "builder").await;

    // Right after the login, the page opens.
    assert_eq!(
        app.get("/account/password", Some(&laptop)).await.status(),
        StatusCode::OK
    );
    // Twenty minutes later it sends the user to enter the password again.
    app.clock.advance(2 * FRESH_FOR);
    let resp = app.get("/account/password", Some(&laptop)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/reauth?next=/account/password");
    // A change posted with a token from before is refused too.
    let token = app.token("/profile", &laptop).await;
    let resp = app
        .post(
            "/account/password",
            &laptop,
            &[("new_password", NEW_PASSWORD), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A wrong password on the re-authentication form keeps it stale.
    let token = app.token("/reauth", &laptop).await;
    let resp = app
        .post(
            "/reauth",
            &laptop,
            &[
                ("username", "alice"),
                ("password", "nope"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .post(
            "/reauth",
            &laptop,
            &[
                ("username", "alice"),
                ("password", "wonderland"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/account/password");
    let laptop = format!("{SESSION}={}", cookie_value(&resp, SESSION).unwrap());

    // The policy refuses a short password.
    let token = app.token("/account/password", &laptop).await;
    let resp = app
        .post(
            "/account/password",
            &laptop,
            &[("new_password", "short"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("at least 15 characters")
    );
    assert!(app.logged_in(&phone).await);

    let resp = app
        .post(
            "/account/password",
            &laptop,
            &[("new_password", NEW_PASSWORD), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let laptop = cookie_value(&resp, SESSION).map_or(laptop, |v| format!("{SESSION}={v}"));
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("<span id=\"ended\">1</span>")
    );
    assert!(
        !app.logged_in(&phone).await,
        "the other device is logged out"
    );
    assert!(app.logged_in(&laptop).await, "this one stays");
    assert!(app.logged_in(&bob).await, "other users untouched");

    let resp = app.login("alice", "wonderland", false).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the old password is dead"
    );
    app.session("alice", NEW_PASSWORD).await;
}
