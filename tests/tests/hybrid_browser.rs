//! The hybrid-spa template in a real headless Chromium (Debian's chromium
//! and chromedriver, driven through thirtyfour): log in through the page,
//! survive a reload by a silent refresh, log out; then a page on a second
//! origin (`localhost:<other port>` vs `127.0.0.1:<app port>`) auto-submits
//! a `text/plain` form whose body is the JSON of the attacker's
//! credentials to the app's login (login CSRF). The victim's browser must
//! end up without a refresh cookie, and the app must not restore a session
//! for the attacker's account.
//!
//! Screenshots of every step: `target/test-output/hybrid-browser/`.

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use portcullis_tests::TestServer;
use portcullis_tests::browser::{ChromeDriver, output_dir, screenshot};
use thirtyfour::prelude::*;

// Generous: the suite runs in parallel on small machines.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const COOKIE: &str = "__Host-refresh";

/// The attacker's site: a page that posts, at once, a `text/plain` form
/// whose single field makes the body `{"username":"bob",
/// "password":"builder","x":"="}` (the attacker's own account).
fn attacker(app_origin: String) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let target = format!("{app_origin}/auth/login");
            async move {
                Html(format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\">\
                     <link rel=\"icon\" href=\"data:,\"><title>You won!</title></head><body>\
                     <h1>Claim your prize</h1>\
                     <form id=\"evil\" method=\"post\" enctype=\"text/plain\" action=\"{target}\">\
                     <input name='{{\"username\":\"bob\",\"password\":\"builder\",\"x\":\"' value='\"}}'>\
                     </form>\
                     <script>document.getElementById('evil').submit();</script>\
                     </body></html>"
                ))
            }
        }),
    )
}

/// Waits until the page body contains `needle`.
async fn wait_for_body(driver: &WebDriver, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        // Reading the page can fail while a navigation is under way.
        if let Ok(body) = driver.source().await {
            if body.contains(needle) {
                return body;
            }
            last = body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {needle:?}; page: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `#id`'s text is `want`.
async fn wait_for_text(driver: &WebDriver, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Ok(el) = driver.find(By::Id(id)).await
            && let Ok(text) = el.text().await
        {
            if text == want {
                return;
            }
            last = text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for #{id} to read {want:?}; it reads {last:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the browser holds the refresh cookie for the app's page.
async fn has_refresh_cookie(driver: &WebDriver) -> bool {
    driver
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .any(|c| c.name == COOKIE)
}

/// Clicks "Who am I?" and returns the answer shown.
async fn who_am_i(driver: &WebDriver) -> String {
    driver
        .execute("document.getElementById('out').textContent = '';", vec![])
        .await
        .unwrap();
    driver
        .find(By::Id("me"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_body(driver, "me: ").await;
    driver
        .find(By::Id("out"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn scenario(dir: &std::path::Path) {
    let router = hybrid_spa::app(hybrid_spa::Stores::memory()).unwrap();
    let app = TestServer::start(router).await;
    let app_origin = format!("http://127.0.0.1:{}", app.addr.port());
    let evil = TestServer::start(attacker(app_origin.clone())).await;
    // Another host name, so another origin and another site.
    let attacker_url = format!("http://localhost:{}/", evil.addr.port());

    let chromedriver = ChromeDriver::start().await;
    let driver = chromedriver.session().await;

    // 1. The page, not logged in.
    driver.goto(format!("{app_origin}/")).await.unwrap();
    wait_for_text(&driver, "status", "Not logged in.").await;
    screenshot(&driver, dir, "01-not-logged-in.png").await;

    // 2. Log in as alice through the page: this browser stores the
    //    __Host- cookie on http://127.0.0.1 (a secure context).
    driver
        .find(By::Id("username"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    driver
        .find(By::Id("password"))
        .await
        .unwrap()
        .send_keys("wonderland")
        .await
        .unwrap();
    driver
        .find(By::Css("#login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&driver, "status", "Logged in.").await;
    assert!(
        has_refresh_cookie(&driver).await,
        "the refresh cookie is set"
    );
    driver.refresh().await.unwrap();
    wait_for_text(&driver, "status", "Session restored by a silent refresh.").await;
    assert!(who_am_i(&driver).await.contains("\"user\": \"alice\""));
    screenshot(&driver, dir, "02-alice-after-reload.png").await;

    // 3. Log out through the page.
    driver
        .find(By::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&driver, "status", "Logged out.").await;
    assert!(!has_refresh_cookie(&driver).await, "logout cleared it");
    screenshot(&driver, dir, "03-logged-out.png").await;

    // 4. The attacker's page auto-submits its text/plain "JSON" login.
    driver.goto(&attacker_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let url = driver.current_url().await.unwrap();
        if url.as_str().starts_with(&app_origin) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the form never landed on the app: {url}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        driver
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/auth/login"),
        "the form landed on the app's login"
    );
    let body = wait_for_body(&driver, "</body>").await;
    assert!(
        !body.contains("access_token"),
        "no token was issued to the attacker's form: {body}"
    );
    screenshot(&driver, dir, "04-attack-landed.png").await;

    // 5. Back on the app: no refresh cookie, no session as bob.
    driver.goto(format!("{app_origin}/")).await.unwrap();
    wait_for_text(&driver, "status", "Not logged in.").await;
    assert!(
        !has_refresh_cookie(&driver).await,
        "the attacker's login left no refresh cookie"
    );
    let me = who_am_i(&driver).await;
    assert!(me.starts_with("me: 401"), "not logged in as bob: {me}");
    screenshot(&driver, dir, "05-still-not-logged-in.png").await;

    driver.quit().await.unwrap();
    drop(chromedriver);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_csrf_in_a_real_browser() {
    let dir = output_dir("hybrid-browser");
    // Bounded, so a hung browser fails the test (and drops chromedriver)
    // instead of hanging the suite.
    tokio::time::timeout(Duration::from_secs(240), scenario(&dir))
        .await
        .expect("the browser scenario finished in time");
    for shot in [
        "01-not-logged-in.png",
        "02-alice-after-reload.png",
        "03-logged-out.png",
        "04-attack-landed.png",
        "05-still-not-logged-in.png",
    ] {
        assert!(dir.join(shot).exists(), "{shot}");
    }
}
