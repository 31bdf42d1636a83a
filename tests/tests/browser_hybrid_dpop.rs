//! The hybrid-spa template in DPoP mode, in a real headless Chromium: the
//! page makes a non-extractable WebCrypto P-256 key pair at login and signs
//! a proof for every request. The access token and the refresh cookie are
//! then copied out of the browser and replayed from another client (this
//! test, over reqwest): as a bearer token, as a DPoP token with a proof by
//! another key, with no proof, and the refresh cookie without the key or
//! with another key. Every replay is refused, while the page keeps working:
//! it calls the API, survives a reload (the key pair kept in IndexedDB),
//! refreshes with the very refresh token the thief tried, changes the
//! password (the new family bound to the same key) and logs out.
//!
//! Screenshots of every step: `target/test-output/browser-hybrid-dpop/`.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use portcullis::core::SystemClock;
use portcullis::jwt::dpop::sign_proof;
use portcullis::jwt::{Algorithm, SigningKey};
use portcullis_tests::browser::{
    ChromeDriver, POLL, click, output_dir, run_bounded, screenshot, type_into, wait_for_text,
};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;
use thirtyfour::prelude::*;
use tower::ServiceExt as _;

const COOKIE: &str = "__Host-refresh";

/// Serves hybrid-spa in DPoP mode on `http://127.0.0.1:<port>`, that very
/// origin being its public origin (known only once the port is): the
/// server starts in front of an empty slot, the app fills it.
async fn start_dpop_app() -> (TestServer, String) {
    let slot: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let serve = Arc::clone(&slot);
    let front = Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let app = serve.get().expect("the app is in place").clone();
        async move { app.oneshot(req).await }
    }));
    let server = TestServer::start(front).await;
    let origin = format!("http://127.0.0.1:{}", server.addr.port());
    let app =
        hybrid_spa::app_dpop(hybrid_spa::Stores::memory(), SystemClock::shared(), &origin).unwrap();
    assert!(slot.set(app).is_ok());
    (server, origin)
}

/// Clicks "Who am I?" and returns the answer shown.
async fn who_am_i(driver: &WebDriver) -> String {
    driver
        .execute("document.getElementById('out').textContent = '';", vec![])
        .await
        .unwrap();
    click(driver, By::Id("me")).await;
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

/// A global of the page's script, as a string.
async fn page_value(driver: &WebDriver, name: &str) -> String {
    let ret = driver
        .execute(format!("return {name};"), vec![])
        .await
        .unwrap();
    ret.json().as_str().unwrap_or_default().to_owned()
}

/// The refresh cookie as the browser holds it.
async fn refresh_cookie(driver: &WebDriver) -> Option<String> {
    driver
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == COOKIE)
        .map(|c| c.value)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `GET /api/me` from outside the browser with `authorization` and an
/// optional `DPoP` header.
async fn replay_api(origin: &str, authorization: &str, dpop: Option<String>) -> StatusCode {
    let mut req = client()
        .get(format!("{origin}/api/me"))
        .header("authorization", authorization);
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    req.send().await.unwrap().status()
}

/// `POST /auth/refresh` from outside the browser with the stolen cookie
/// and an optional `DPoP` header.
async fn replay_refresh(origin: &str, cookie: &str, dpop: Option<String>) -> StatusCode {
    let mut req = client()
        .post(format!("{origin}/auth/refresh"))
        .header("cookie", format!("{COOKIE}={cookie}"));
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    req.send().await.unwrap().status()
}

async fn scenario(dir: &std::path::Path) {
    let (_server, origin) = start_dpop_app().await;
    let chromedriver = ChromeDriver::start().await;
    let driver = chromedriver.session().await;

    // 1. Log in through the page: its key pair binds the login.
    driver.goto(format!("{origin}/")).await.unwrap();
    wait_for_text(&driver, "status", "Not logged in.").await;
    type_into(&driver, By::Id("username"), "alice").await;
    type_into(&driver, By::Id("password"), "wonderland").await;
    click(&driver, By::Css("#login button[type=submit]")).await;
    wait_for_text(&driver, "status", "Logged in.").await;
    assert_eq!(page_value(&driver, "tokenType").await, "DPoP");
    let extractable = driver
        .execute("return dpopKey.privateKey.extractable;", vec![])
        .await
        .unwrap();
    assert_eq!(
        extractable.json(),
        &serde_json::json!(false),
        "the private key cannot leave the page"
    );
    assert!(who_am_i(&driver).await.contains("\"user\": \"alice\""));
    screenshot(&driver, dir, "01-logged-in-with-dpop.png").await;

    // 2. The access token copied out of the page, replayed from here.
    let stolen = page_value(&driver, "accessToken").await;
    assert!(stolen.split('.').count() == 3, "a JWT: {stolen:?}");
    let thief = SigningKey::generate("thief", Algorithm::ES256).unwrap();
    let api_url = format!("{origin}/api/me");
    let thief_proof = || sign_proof(&thief, "GET", &api_url, now(), Some(&stolen), None).unwrap();
    assert_eq!(
        replay_api(&origin, &format!("Bearer {stolen}"), None).await,
        StatusCode::UNAUTHORIZED,
        "the token as bearer"
    );
    assert_eq!(
        replay_api(&origin, &format!("DPoP {stolen}"), Some(thief_proof())).await,
        StatusCode::UNAUTHORIZED,
        "the token with a proof by another key"
    );
    assert_eq!(
        replay_api(&origin, &format!("DPoP {stolen}"), None).await,
        StatusCode::UNAUTHORIZED,
        "the token without a proof"
    );

    // 3. The refresh cookie copied out of the browser, replayed from here.
    let cookie = refresh_cookie(&driver).await.expect("the refresh cookie");
    let refresh_url = format!("{origin}/auth/refresh");
    assert_eq!(
        replay_refresh(&origin, &cookie, None).await,
        StatusCode::UNAUTHORIZED,
        "the refresh cookie without a proof"
    );
    let proof = sign_proof(&thief, "POST", &refresh_url, now(), None, None).unwrap();
    assert_eq!(
        replay_refresh(&origin, &cookie, Some(proof)).await,
        StatusCode::UNAUTHORIZED,
        "the refresh cookie with a proof by another key"
    );

    // 4. The page keeps working: the API, then a reload whose silent
    //    refresh presents that same refresh cookie with the page's key.
    assert!(who_am_i(&driver).await.contains("\"user\": \"alice\""));
    driver.refresh().await.unwrap();
    wait_for_text(&driver, "status", "Session restored by a silent refresh.").await;
    assert_eq!(page_value(&driver, "tokenType").await, "DPoP");
    assert!(who_am_i(&driver).await.contains("\"user\": \"alice\""));
    assert_ne!(
        refresh_cookie(&driver).await.as_deref(),
        Some(cookie.as_str()),
        "rotated by the page's refresh"
    );
    screenshot(&driver, dir, "02-page-still-works.png").await;

    // 5. Change the password through the page: the new family is bound to
    //    the key of that request's proof, and survives a reload.
    type_into(
        &driver,
        By::Id("new-password"),
        "quietly violet lantern 7 orchards",
    )
    .await;
    click(&driver, By::Css("#change-password button[type=submit]")).await;
    wait_for_text(
        &driver,
        "status",
        "Password changed; your other devices are logged out.",
    )
    .await;
    assert_eq!(page_value(&driver, "tokenType").await, "DPoP");
    driver.refresh().await.unwrap();
    wait_for_text(&driver, "status", "Session restored by a silent refresh.").await;
    assert!(who_am_i(&driver).await.contains("\"user\": \"alice\""));

    // 6. Log out through the page (with a proof by its key).
    click(&driver, By::Id("logout")).await;
    wait_for_text(&driver, "status", "Logged out.").await;
    assert!(refresh_cookie(&driver).await.is_none(), "logout cleared it");
    screenshot(&driver, dir, "03-logged-out.png").await;

    driver.quit().await.unwrap();
    drop(chromedriver);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_copied_out_of_the_page_is_refused_elsewhere() {
    let dir = output_dir("browser-hybrid-dpop");
    run_bounded(
        &dir,
        &[
            "01-logged-in-with-dpop.png",
            "02-page-still-works.png",
            "03-logged-out.png",
        ],
        scenario(&dir),
    )
    .await;
}
