//! Headless Chromium driven through chromedriver (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs), with thirtyfour.
//!
//! [`ChromeDriver::start`] spawns `/usr/bin/chromedriver --port=0` in its
//! own process group with a private `TMPDIR`, and reads the port it chose
//! from its first lines of output. Dropping it kills the whole group
//! (chromium outlives chromedriver otherwise) and removes the directory.
//! [`ChromeDriver::session`] opens a headless browser session.
//!
//! A missing chromedriver is an error, never a skipped test.
//!
//! The waits ([`wait_for_body`], [`wait_for_text`]) poll every [`POLL`] for
//! at most [`WAIT`]; [`attacker_site`] serves a page on another origin that
//! auto-submits a form to the app; [`run_bounded`] runs a scenario with a
//! deadline and checks its screenshots.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use thirtyfour::prelude::*;
use thirtyfour::{DesiredCapabilities, LoggingPrefsLogLevel};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::TestServer;

/// The chromedriver binary Debian installs.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver; killed with its browsers when dropped.
#[derive(Debug)]
pub struct ChromeDriver {
    /// `http://127.0.0.1:PORT`, the WebDriver endpoint.
    pub url: String,
    child: Child,
    tmp: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver on a free port.
    ///
    /// # Panics
    ///
    /// When chromedriver is not installed or does not start within 20 s:
    /// browser tests must run, not be skipped.
    pub async fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: run scripts/test (it installs chromium and chromium-driver) \
             or apt-get install chromium chromium-driver"
        );
        let tmp = std::env::temp_dir().join(format!(
            "portcullis-chromedriver-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .env("TMPDIR", &tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                // "ChromeDriver was started successfully on port 12345."
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(port) = digits.parse::<u16>() {
                        return Some(port);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromedriver announced its port");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            tmp,
        }
    }

    /// A headless Chromium session: no sandbox (we may be root), no GPU,
    /// 1280x800, severe console messages logged.
    ///
    /// # Panics
    ///
    /// When the browser does not start.
    pub async fn session(&self) -> WebDriver {
        let mut caps = DesiredCapabilities::chrome();
        for arg in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ] {
            caps.add_arg(arg).unwrap();
        }
        caps.set_browser_log_level(LoggingPrefsLogLevel::Severe)
            .unwrap();
        WebDriver::new(&self.url, caps)
            .await
            .expect("a headless chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // The whole group: chromedriver and every chromium it started
            // (chromium is re-parented to init and keeps running otherwise).
            // SAFETY: kill(2) takes no pointers; -pid names the process
            // group created for this chromedriver by `process_group(0)`.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The folder a test writes its screenshots to:
/// `target/test-output/<name>/` under the workspace, created empty.
///
/// # Panics
///
/// When the folder cannot be created.
pub fn output_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-output")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a PNG screenshot of the page as `<dir>/<file>`.
///
/// # Panics
///
/// When the screenshot cannot be taken or written.
pub async fn screenshot(driver: &WebDriver, dir: &Path, file: &str) {
    let png = driver.screenshot_as_png().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(file), png).expect("write screenshot");
}

/// How long a wait lasts at most. Generous: the suite runs in parallel on
/// small machines.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// Waits until the page source contains `needle`, and returns it.
///
/// # Panics
///
/// When it does not within [`WAIT`]; the message shows the last page read.
pub async fn wait_for_body(driver: &WebDriver, needle: &str) -> String {
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
///
/// # Panics
///
/// When it is not within [`WAIT`]; the message shows the last text read.
pub async fn wait_for_text(driver: &WebDriver, id: &str, want: &str) {
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

/// Clicks the element `by` finds on the current page.
///
/// # Panics
///
/// When there is no such element or the click fails.
pub async fn click(driver: &WebDriver, by: By) {
    driver.find(by).await.unwrap().click().await.unwrap();
}

/// Types `text` into the element `by` finds on the current page.
///
/// # Panics
///
/// When there is no such element or typing fails.
pub async fn type_into(driver: &WebDriver, by: By, text: &str) {
    driver
        .find(by)
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// The app and an attacker's site on two origins: the app on
/// `http://127.0.0.1:<port>`, the attacker on `http://localhost:<other
/// port>` (another host name, so another origin and another site).
#[derive(Debug)]
pub struct TwoSites {
    /// The app's server.
    pub app: TestServer,
    /// `http://127.0.0.1:<port>`.
    pub app_origin: String,
    /// The attacker's server.
    pub evil: TestServer,
    /// `http://localhost:<other port>/`, the attacker's page.
    pub attacker_url: String,
}

impl TwoSites {
    /// Serves `app`, then the router `attacker` builds for the app's origin.
    pub async fn start(app: Router, attacker: impl FnOnce(&str) -> Router) -> Self {
        let app = TestServer::start(app).await;
        let app_origin = format!("http://127.0.0.1:{}", app.addr.port());
        let evil = TestServer::start(attacker(&app_origin)).await;
        let attacker_url = format!("http://localhost:{}/", evil.addr.port());
        Self {
            app,
            app_origin,
            evil,
            attacker_url,
        }
    }
}

/// An attacker's site: `/` is a page that at once submits the form
/// `<form id="evil" method="post"{attrs} action="{app_origin}{path}">{fields}</form>`.
pub fn attacker_site(
    app_origin: &str,
    path: &str,
    attrs: &'static str,
    fields: &'static str,
) -> Router {
    let target = format!("{app_origin}{path}");
    Router::new().route(
        "/",
        get(move || {
            let target = target.clone();
            async move {
                Html(format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\">\
                     <link rel=\"icon\" href=\"data:,\"><title>You won!</title></head><body>\
                     <h1>Claim your prize</h1>\
                     <form id=\"evil\" method=\"post\"{attrs} action=\"{target}\">\
                     {fields}</form>\
                     <script>document.getElementById('evil').submit();</script>\
                     </body></html>"
                ))
            }
        }),
    )
}

/// Runs a browser `scenario` bounded to 240 s, so that a hung browser
/// fails the test (and drops chromedriver) instead of hanging the suite;
/// then checks that every screenshot in `shots` was written to `dir`.
///
/// # Panics
///
/// When the scenario panics or runs out of time, or a screenshot is
/// missing.
pub async fn run_bounded(dir: &Path, shots: &[&str], scenario: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(240), scenario)
        .await
        .expect("the browser scenario finished in time");
    for shot in shots {
        assert!(dir.join(shot).exists(), "{shot}");
    }
}
