//! The simulator in a real headless Chromium (Debian's chromium and
//! chromedriver, driven through thirtyfour), against the real binary: each
//! scenario and lesson is run by clicking, and what the page shows is
//! checked (statuses, store operations, the revocation difference, the
//! token-storage reads, the scale-out outcome), with no console errors.
//!
//! Screenshots of every scenario at 1440 px (desktop) and 360 px (phone),
//! full page: `target/test-output/simulator/`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use portcullis_tests::ExampleProcess;
use portcullis_tests::browser::{ChromeDriver, output_dir, screenshot};
use serde_json::Value;
use thirtyfour::prelude::*;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const KINDS: [&str; 4] = ["session", "jwt", "jwt-revocation", "hybrid"];

async fn js(driver: &WebDriver, script: &str) -> Value {
    driver
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
        .json()
        .clone()
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

async fn click(driver: &WebDriver, id: &str) {
    driver
        .query(By::Id(id))
        .wait(WAIT, POLL)
        .first()
        .await
        .unwrap_or_else(|e| panic!("#{id} on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

/// Waits until the run status says `Done: {title}` (and fails at once on
/// `Failed`).
async fn wait_done(driver: &WebDriver, title: &str) {
    let want = format!("Done: {title}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = js(
            driver,
            "return document.getElementById('run-status').textContent",
        )
        .await;
        let status = status.as_str().unwrap_or_default();
        if status == want {
            return;
        }
        assert!(!status.starts_with("Failed"), "{status}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {want:?}; status: {status:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A summary cell: (status, store operations), as the page shows them.
async fn cell(driver: &WebDriver, kind: &str, step: usize) -> (String, String) {
    let id = format!("sum-{kind}-{step}");
    let got = js(
        driver,
        &format!(
            "const td = document.getElementById('{id}');
             if (!td) return null;
             const part = (c) => {{ const e = td.querySelector(c); return e ? e.textContent : ''; }};
             return [part('.cell-status'), part('.cell-ops')];"
        ),
    )
    .await;
    let got = got
        .as_array()
        .unwrap_or_else(|| panic!("#{id} on the page"));
    (
        got[0].as_str().unwrap().to_owned(),
        got[1].as_str().unwrap().to_owned(),
    )
}

/// The entries of a timeline: (action, status, ops, visible text).
async fn timeline(driver: &WebDriver, list: &str) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for li in driver
        .find_all(By::Css(format!("#{list} > li")))
        .await
        .unwrap()
    {
        let attr = |name: &'static str| {
            let li = li.clone();
            async move { li.attr(name).await.unwrap().unwrap_or_default() }
        };
        out.push((
            attr("data-action").await,
            attr("data-status").await,
            attr("data-ops").await,
            li.text().await.unwrap(),
        ));
    }
    out
}

/// Full-page screenshots at 1440 px and 360 px.
async fn shots(driver: &WebDriver, dir: &Path, name: &str) {
    for (width, mobile, suffix) in [(1440, false, "desktop"), (360, true, "phone")] {
        viewport(driver, width, 900, mobile).await;
        let height = js(driver, "return document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap();
        let overflow = js(driver, "return document.documentElement.scrollWidth")
            .await
            .as_u64()
            .unwrap();
        assert!(
            overflow <= u64::from(width),
            "{name}: nothing wider than the {width} px viewport ({overflow} px)"
        );
        viewport(driver, width, u32::try_from(height).unwrap(), mobile).await;
        screenshot(driver, dir, &format!("{name}-{suffix}.png")).await;
    }
    viewport(driver, 1440, 900, false).await;
}

async fn viewport(driver: &WebDriver, width: u32, height: u32, mobile: bool) {
    driver
        .cdp()
        .emulation()
        .set_device_metrics_override(width, height, 1.0, mobile)
        .await
        .unwrap();
}

fn ops_of(s: &str) -> u64 {
    s.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a store-operation count: {s:?}"))
}

async fn basic_flow(driver: &WebDriver, dir: &Path) {
    click(driver, "scenario-basic").await;
    wait_done(driver, "Basic flow").await;
    for kind in KINDS {
        let (status, ops) = cell(driver, kind, 0).await;
        assert_eq!(status, "200", "{kind} logs in");
        let login_ops = ops_of(&ops);
        match kind {
            // csrf token (create) + login (load, create, delete)
            "session" => assert!(login_ops >= 1, "session login touches the store"),
            "hybrid" => assert_eq!(login_ops, 1, "hybrid login creates a family"),
            _ => assert_eq!(login_ops, 0, "{kind} login stores nothing"),
        }
        for step in 1..=3 {
            let (status, ops) = cell(driver, kind, step).await;
            assert_eq!(status, "200", "{kind} request {step}");
            if kind == "session" {
                assert!(ops_of(&ops) >= 1, "a session request loads the session");
            } else {
                assert_eq!(ops_of(&ops), 0, "{kind} request {step} makes no store call");
            }
        }
    }
    // The timelines say the same, request by request.
    let session = timeline(driver, "session-timeline").await;
    let profiles: Vec<_> = session.iter().filter(|e| e.0 == "profile").collect();
    assert_eq!(profiles.len(), 3);
    for (_, status, ops, text) in &profiles {
        assert_eq!((status.as_str(), ops.as_str()), ("200", "1"));
        assert!(text.contains("1 store op (session.load)"), "{text}");
        assert!(
            text.contains("__Host-session"),
            "the cookie was sent: {text}"
        );
        assert!(
            text.contains("looked the session id up in the store"),
            "{text}"
        );
    }
    let jwt = timeline(driver, "jwt-timeline").await;
    for (action, status, ops, text) in jwt.iter().filter(|e| e.0 == "profile") {
        assert_eq!((status.as_str(), ops.as_str()), ("200", "0"), "{action}");
        assert!(text.contains("0 store ops"), "{text}");
        assert!(
            text.contains("Authorization: Bearer <JWT>"),
            "the header was sent: {text}"
        );
    }
    // The decoded JWT is on the page (collapsed; read from the DOM).
    let payload = js(
        driver,
        "return document.querySelector('#jwt-timeline .jwt-payload').textContent",
    )
    .await;
    let payload: Value = serde_json::from_str(payload.as_str().unwrap()).unwrap();
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["iss"], "portcullis-simulator");
    let verdict = text_of(driver, "summary-verdict").await;
    assert!(
        verdict.contains("Session 1, JWT 0, JWT + pushed revocation 0, Hybrid 0"),
        "{verdict}"
    );
    shots(driver, dir, "01-basic-flow").await;
}

async fn revocation_test(driver: &WebDriver, dir: &Path) {
    click(driver, "scenario-revocation").await;
    wait_done(driver, "Revocation test").await;
    let want_after = [
        ("session", "401"),
        ("jwt", "200"),
        ("jwt-revocation", "401"),
        ("hybrid", "401"),
    ];
    for (kind, after) in want_after {
        assert_eq!(cell(driver, kind, 1).await.0, "200", "{kind} before revoke");
        assert_eq!(
            cell(driver, kind, 2).await.0,
            "200",
            "the admin revoked {kind}"
        );
        let (status, ops) = cell(driver, kind, 3).await;
        assert_eq!(status, after, "{kind} after revoke");
        let ops = ops_of(&ops);
        if kind == "session" {
            assert!(ops >= 1, "the session is looked up (and missing)");
        } else {
            assert_eq!(ops, 0, "{kind}: no store call, revoked or not");
        }
    }
    // What revoking cost: a delete in the session store; nothing for the
    // plain JWT; one pushed write; the version, the families and the one
    // family's `sid`.
    assert_eq!(ops_of(&cell(driver, "session", 2).await.1), 1);
    assert_eq!(ops_of(&cell(driver, "jwt", 2).await.1), 0);
    assert_eq!(ops_of(&cell(driver, "jwt-revocation", 2).await.1), 1);
    assert_eq!(ops_of(&cell(driver, "hybrid", 2).await.1), 3);
    let verdict = text_of(driver, "summary-verdict").await;
    assert!(
        verdict.contains(
            "After revocation: Session 401, JWT 200, JWT + pushed revocation 401, Hybrid 401"
        ),
        "{verdict}"
    );
    let last = |list: Vec<(String, String, String, String)>| list.last().unwrap().3.clone();
    let session = last(timeline(driver, "session-timeline").await);
    assert!(
        session.contains("Revoked: the store no longer has this session"),
        "{session}"
    );
    let jwt = last(timeline(driver, "jwt-timeline").await);
    assert!(jwt.contains("Still allowed!"), "{jwt}");
    let pushed = last(timeline(driver, "jwt-revocation-timeline").await);
    assert!(
        pushed.contains("Revoked:") && pushed.contains("no store call"),
        "{pushed}"
    );
    shots(driver, dir, "02-revocation-test").await;
    // The README's picture (docs/images/simulator.png is a copy): the top
    // of the page at 1440 px, the summary and the four panels.
    viewport(driver, 1440, 1150, false).await;
    driver
        .execute("window.scrollTo(0, 0)", Vec::new())
        .await
        .unwrap();
    screenshot(driver, dir, "readme.png").await;
    viewport(driver, 1440, 900, false).await;
}

async fn expiration(driver: &WebDriver, dir: &Path) {
    click(driver, "scenario-expiration").await;
    wait_done(driver, "Expiration").await;
    for kind in KINDS {
        assert_eq!(cell(driver, kind, 1).await.0, "200", "{kind} before expiry");
        assert_eq!(cell(driver, kind, 3).await.0, "401", "{kind} after expiry");
    }
    let (refresh, ops) = cell(driver, "hybrid", 4).await;
    assert_eq!(
        refresh, "200",
        "the refresh token outlives the access token"
    );
    assert_eq!(ops_of(&ops), 1, "one rotation");
    assert_eq!(
        cell(driver, "hybrid", 5).await.0,
        "200",
        "the new access token works"
    );
    assert_eq!(cell(driver, "session", 4).await.0, "—");
    let session = timeline(driver, "session-timeline").await;
    assert!(
        session
            .last()
            .unwrap()
            .3
            .contains("Expired: the session passed its 30-minute idle timeout"),
        "{session:?}"
    );
    let jwt = timeline(driver, "jwt-timeline").await;
    assert!(
        jwt.last()
            .unwrap()
            .3
            .contains("Expired: the token's exp claim is in the past"),
        "{jwt:?}"
    );
    shots(driver, dir, "03-expiration").await;
}

async fn token_storage(driver: &WebDriver, dir: &Path) {
    click(driver, "lesson-storage").await;
    wait_done(driver, "where the client keeps the token").await;
    let ls = text_of(driver, "storage-localstorage").await;
    assert!(
        ls.contains("\"eyJ"),
        "localStorage gave the script the JWT: {ls}"
    );
    let dc = text_of(driver, "storage-document-cookie").await;
    assert!(
        dc.contains("no __Host-session; it is HttpOnly"),
        "document.cookie did not show the session cookie: {dc}"
    );
    let proof = text_of(driver, "storage-proof").await;
    assert!(proof.contains("__Host-session"), "{proof}");
    let replay = text_of(driver, "storage-replay").await;
    assert!(
        replay.contains("200 OK"),
        "the stolen JWT works elsewhere: {replay}"
    );
    // Independently of the page: the browser holds the session cookie, as
    // HttpOnly, and scripts do not see it.
    let cookies = driver.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name == "__Host-session")
        .expect("the browser holds the session cookie");
    assert_eq!(session.http_only, Some(true));
    assert_eq!(session.secure, Some(true));
    let visible = js(driver, "return document.cookie").await;
    assert!(
        !visible.as_str().unwrap().contains("__Host-session"),
        "{visible}"
    );
    assert_eq!(
        js(driver, "return localStorage.getItem('access_token')").await,
        Value::Null,
        "the lesson cleans up"
    );
    shots(driver, dir, "04-token-storage").await;
}

async fn scale_out(driver: &WebDriver, dir: &Path) {
    click(driver, "lesson-scale").await;
    wait_done(driver, "scale-out").await;
    let profile = |list: Vec<(String, String, String, String)>| -> Vec<(String, String)> {
        list.into_iter()
            .filter(|e| e.0 == "profile")
            .map(|e| (e.1, e.3))
            .collect()
    };
    let local = profile(timeline(driver, "scale-session-local-timeline").await);
    let shared = profile(timeline(driver, "scale-session-shared-timeline").await);
    let jwt = profile(timeline(driver, "scale-jwt-timeline").await);
    assert_eq!(local.len(), 2);
    // Logged in on B; A has never seen the session and clears the cookie.
    assert_eq!(local[0].0, "401", "{local:?}");
    assert!(local[0].1.contains("instance A"), "{local:?}");
    assert!(
        local[0].1.contains("has never seen this session"),
        "{local:?}"
    );
    assert_eq!(local[1].0, "401", "the session is lost: {local:?}");
    assert!(local[1].1.contains("instance B"), "{local:?}");
    assert!(local[1].1.contains("got no session cookie"), "{local:?}");
    for (status, text) in shared.iter().chain(&jwt) {
        assert_eq!(status, "200", "{text}");
    }
    assert!(shared[0].1.contains("instance A") && shared[1].1.contains("instance B"));
    assert!(jwt[0].1.contains("instance B") && jwt[1].1.contains("instance A"));
    let verdict = text_of(driver, "scale-verdict").await;
    assert!(
        verdict.contains("Per-instance memory store: 401 on A, 401 on B"),
        "{verdict}"
    );
    shots(driver, dir, "05-scale-out").await;
}

/// Asserts that the console holds no errors but Chromium's own network
/// notices ("Failed to load resource: ... 401") for exactly the requests the
/// page shows as refused in `lists` (refusals are what the scenarios
/// demonstrate; Chromium reports every fetch answered 4xx this way, and a
/// page cannot opt out). Any JavaScript error, `console.error`, failed asset
/// or unexpected refusal fails. Returns the number of refusals.
async fn console_clean(driver: &WebDriver, lists: &[&str]) -> usize {
    let log = driver.browser_log().await.unwrap();
    let shown = js(
        driver,
        &format!(
            "return {lists:?}.flatMap(id => [...document.querySelectorAll(`#${{id}} > li`)])
                .filter(li => Number(li.dataset.status) >= 400)
                .map(li => li.querySelector('.req').textContent.split(' ')[1] + ' ' + li.dataset.status)"
        ),
    )
    .await;
    let mut shown: Vec<String> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut logged = Vec::new();
    for entry in &log {
        let notice = entry
            .message
            .split_once(" - Failed to load resource: the server responded with a status of ")
            .filter(|_| entry.source.as_deref() == Some("network"));
        let Some((url, rest)) = notice else {
            panic!("a console error: {entry:#?}");
        };
        let path = url
            .split_once("//")
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(_, p)| format!("/{p}"))
            .unwrap();
        let status = rest.split(' ').next().unwrap();
        logged.push(format!("{path} {status}"));
    }
    shown.sort();
    logged.sort();
    assert_eq!(
        logged, shown,
        "the console's only entries are the refusals the page shows: {log:#?}"
    );
    logged.len()
}

/// Every control has a name; the scenarios work from the keyboard.
async fn usable(driver: &WebDriver) {
    let unnamed = js(
        driver,
        "return [...document.querySelectorAll('button, input')]
            .filter(e => !(e.getAttribute('aria-label')
                || (e.tagName === 'BUTTON' && e.textContent.trim())
                || (e.id && document.querySelector(`label[for='${e.id}']`))))
            .map(e => e.id || e.outerHTML)",
    )
    .await;
    assert_eq!(unnamed, serde_json::json!([]), "controls without a name");
    driver
        .find(By::Id("password"))
        .await
        .unwrap()
        .focus()
        .await
        .unwrap();
    driver
        .active_element()
        .await
        .unwrap()
        .send_keys(Key::Tab)
        .await
        .unwrap();
    let focused = driver.active_element().await.unwrap().id().await.unwrap();
    assert_eq!(focused.as_deref(), Some("scenario-basic"));
    driver
        .active_element()
        .await
        .unwrap()
        .send_keys(Key::Enter)
        .await
        .unwrap();
    wait_done(driver, "Basic flow").await;
    assert_eq!(cell(driver, "jwt", 3).await.0, "200");
}

async fn scenario(dir: &Path) {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_simulator"), &[]);
    let chromedriver = ChromeDriver::start().await;
    let driver = chromedriver.session().await;
    viewport(&driver, 1440, 900, false).await;
    driver.goto(&app.url).await.unwrap();
    driver
        .query(By::Css("body[data-ready='true']"))
        .wait(WAIT, POLL)
        .first()
        .await
        .expect("the page loaded its settings");
    let note = text_of(&driver, "mode-note").await;
    assert!(note.contains("secure defaults"), "{note}");
    assert!(
        !driver
            .find(By::Id("cookie-warning"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "Chromium keeps Secure cookies on http://127.0.0.1"
    );

    let all = [
        "session-timeline",
        "jwt-timeline",
        "jwt-revocation-timeline",
        "hybrid-timeline",
    ];
    let scale = [
        "scale-session-local-timeline",
        "scale-session-shared-timeline",
        "scale-jwt-timeline",
    ];
    console_clean(&driver, &[]).await;
    basic_flow(&driver, dir).await;
    console_clean(&driver, &all).await;
    revocation_test(&driver, dir).await;
    assert_eq!(
        console_clean(&driver, &all).await,
        3,
        "three 401s after revocation"
    );
    expiration(&driver, dir).await;
    assert_eq!(
        console_clean(&driver, &all).await,
        4,
        "four 401s after expiry"
    );
    token_storage(&driver, dir).await;
    console_clean(&driver, &["session-timeline", "jwt-timeline"]).await;
    scale_out(&driver, dir).await;
    assert_eq!(
        console_clean(&driver, &scale).await,
        2,
        "two 401s: the lost session"
    );
    usable(&driver).await;
    console_clean(&driver, &all).await;

    driver.quit().await.unwrap();
    drop(chromedriver);
    drop(app);
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_in_a_real_browser() {
    let dir = output_dir("simulator");
    // Bounded, so a hung browser fails the test (and drops chromedriver)
    // instead of hanging the suite.
    tokio::time::timeout(Duration::from_secs(300), scenario(&dir))
        .await
        .expect("the browser scenarios finished in time");
    for name in [
        "01-basic-flow",
        "02-revocation-test",
        "03-expiration",
        "04-token-storage",
        "05-scale-out",
    ] {
        for suffix in ["desktop", "phone"] {
            let file = dir.join(format!("{name}-{suffix}.png"));
            assert!(file.exists(), "{}", file.display());
        }
    }
}
