//! The web-app template in a real headless Chromium (Debian's chromium and
//! chromedriver, driven through thirtyfour): log in through the form,
//! change the display name, log out; and a page on a second origin
//! (`localhost:<other port>` vs `127.0.0.1:<app port>`) that auto-submits a
//! form to `POST /profile` changes nothing, logged in or not.
//!
//! Screenshots of every step: `target/test-output/csrf-browser/`.

use std::sync::Arc;

use axum::Router;
use portcullis::session::MemoryStore;
use portcullis_tests::browser::{
    ChromeDriver, POLL, TwoSites, WAIT, attacker_site, click, output_dir, run_bounded, screenshot,
    type_into, wait_for_body,
};
use thirtyfour::prelude::*;
use web_app::{AppConfig, AppState};

/// The attacker's site: a page that posts a form to the app at once.
fn attacker(app_origin: &str) -> Router {
    attacker_site(
        app_origin,
        "/profile",
        "",
        "<input name=\"display_name\" value=\"pwned by evil\">",
    )
}

async fn text_of(driver: &WebDriver, id: &str) -> String {
    driver
        .query(By::Id(id))
        .wait(WAIT, POLL)
        .first()
        .await
        .unwrap_or_else(|e| panic!("#{id} on the page: {e}"))
        .text()
        .await
        .unwrap()
}

/// The attacker's page is visited; its form lands on the app, which must
/// refuse it before the handler runs.
async fn attack(
    driver: &WebDriver,
    attacker_url: &str,
    state: &AppState,
    dir: &std::path::Path,
    shot: &str,
) {
    let before = (state.display_name("alice"), state.profile_updates());
    driver.goto(attacker_url).await.unwrap();
    let body = wait_for_body(driver, "cross-site request forgery protection").await;
    assert!(body.contains("403"), "{body}");
    let url = driver.current_url().await.unwrap();
    assert!(
        url.as_str().ends_with("/profile"),
        "the form landed on the app: {url}"
    );
    screenshot(driver, dir, shot).await;
    assert_eq!(
        (state.display_name("alice"), state.profile_updates()),
        before,
        "the display name is unchanged and the handler never ran"
    );
}

async fn scenario(dir: &std::path::Path) {
    let (router, state): (Router, Arc<AppState>) =
        web_app::app(MemoryStore::new(), AppConfig::default()).unwrap();
    let sites = TwoSites::start(router, attacker).await;
    let (app_origin, attacker_url) = (sites.app_origin.as_str(), sites.attacker_url.as_str());

    let chromedriver = ChromeDriver::start().await;
    let driver = chromedriver.session().await;

    // 1. Log in through the form.
    driver.goto(format!("{app_origin}/login")).await.unwrap();
    driver
        .query(By::Id("username"))
        .wait(WAIT, POLL)
        .first()
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    type_into(&driver, By::Id("password"), "wonderland").await;
    screenshot(&driver, dir, "01-login-form.png").await;
    click(&driver, By::Id("login-submit")).await;
    assert_eq!(text_of(&driver, "user").await, "alice");
    assert_eq!(text_of(&driver, "display-name").await, "Alice Liddell");
    assert_eq!(state.logins(), 1);
    screenshot(&driver, dir, "02-profile.png").await;

    // 2. Change the display name through the form.
    type_into(&driver, By::Id("display-name-input"), "Alice the Brave").await;
    click(&driver, By::Id("save")).await;
    // Wait on the new page's markup: an element found on the old page would
    // go stale during the navigation.
    wait_for_body(&driver, "<span id=\"display-name\">Alice the Brave</span>").await;
    assert_eq!(
        state.display_name("alice").as_deref(),
        Some("Alice the Brave")
    );
    assert_eq!(state.profile_updates(), 1);
    screenshot(&driver, dir, "03-display-name-changed.png").await;
    let log = driver.browser_log().await.unwrap();
    assert!(
        log.is_empty(),
        "no console errors on the app's own pages: {log:?}"
    );

    // 3. The attacker's page auto-submits while alice is logged in.
    attack(
        &driver,
        attacker_url,
        &state,
        dir,
        "04-attack-while-logged-in.png",
    )
    .await;
    driver.goto(format!("{app_origin}/profile")).await.unwrap();
    assert_eq!(text_of(&driver, "display-name").await, "Alice the Brave");
    screenshot(&driver, dir, "05-profile-after-attack.png").await;

    // 4. Log out through the form.
    click(&driver, By::Id("logout-submit")).await;
    driver
        .query(By::Id("login"))
        .wait(WAIT, POLL)
        .first()
        .await
        .unwrap();
    assert!(
        driver
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/login")
    );
    screenshot(&driver, dir, "06-logged-out.png").await;

    // 5. And again after logout.
    attack(
        &driver,
        attacker_url,
        &state,
        dir,
        "07-attack-after-logout.png",
    )
    .await;
    assert_eq!(
        state.display_name("alice").as_deref(),
        Some("Alice the Brave")
    );
    assert_eq!(state.profile_updates(), 1);

    driver.quit().await.unwrap();
    drop(chromedriver);
}

#[tokio::test(flavor = "multi_thread")]
async fn csrf_in_a_real_browser() {
    let dir = output_dir("csrf-browser");
    run_bounded(
        &dir,
        &[
            "01-login-form.png",
            "02-profile.png",
            "03-display-name-changed.png",
            "04-attack-while-logged-in.png",
            "05-profile-after-attack.png",
            "06-logged-out.png",
            "07-attack-after-logout.png",
        ],
        scenario(&dir),
    )
    .await;
}
