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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use thirtyfour::prelude::*;
use thirtyfour::{DesiredCapabilities, LoggingPrefsLogLevel};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

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
