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

use axum::Router;
use portcullis_tests::browser::{
    ChromeDriver, POLL, TwoSites, WAIT, attacker_site, click, output_dir, run_bounded, screenshot,
    type_into, wait_for_body, wait_for_text,
};
use thirtyfour::prelude::*;

const COOKIE: &str = "__Host-refresh";

/// The attacker's site: a page that posts, at once, a `text/plain` form
/// whose single field makes the body `{"username":"bob",
/// "password":"builder","x":"="}` (the attacker's own account).
fn attacker(app_origin: &str) -> Router {
    attacker_site(
        app_origin,
        "/auth/login",
        " enctype=\"text/plain\"",
        r#"<input name='{"username":"bob","password":"builder","x":"' value='"}'>"#,
    )
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
    click(driver, By::Id("me")).await;
    // The answer lands in #out when the fetch completes: poll that element
    // (the page's body may read "me: " before, elsewhere).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = driver
            .find(By::Id("out"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.starts_with("me: ") {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "#out never got an answer: {text:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn scenario(dir: &std::path::Path) {
    let router = hybrid_spa::app(hybrid_spa::Stores::memory()).unwrap();
    let sites = TwoSites::start(router, attacker).await;
    let (app_origin, attacker_url) = (sites.app_origin.as_str(), sites.attacker_url.as_str());

    let chromedriver = ChromeDriver::start().await;
    let driver = chromedriver.session().await;

    // 1. The page, not logged in.
    driver.goto(format!("{app_origin}/")).await.unwrap();
    wait_for_text(&driver, "status", "Not logged in.").await;
    screenshot(&driver, dir, "01-not-logged-in.png").await;

    // 2. Log in as alice through the page: this browser stores the
    //    __Host- cookie on http://127.0.0.1 (a secure context).
    type_into(&driver, By::Id("username"), "alice").await;
    type_into(&driver, By::Id("password"), "wonderland").await;
    click(&driver, By::Css("#login button[type=submit]")).await;
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
    click(&driver, By::Id("logout")).await;
    wait_for_text(&driver, "status", "Logged out.").await;
    assert!(!has_refresh_cookie(&driver).await, "logout cleared it");
    screenshot(&driver, dir, "03-logged-out.png").await;

    // 4. The attacker's page auto-submits its text/plain "JSON" login.
    driver.goto(attacker_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let url = driver.current_url().await.unwrap();
        if url.as_str().starts_with(app_origin) {
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
    run_bounded(
        &dir,
        &[
            "01-not-logged-in.png",
            "02-alice-after-reload.png",
            "03-logged-out.png",
            "04-attack-landed.png",
            "05-still-not-logged-in.png",
        ],
        scenario(&dir),
    )
    .await;
}
