//! Helpers shared by the HTTP-level tests: real servers on real sockets.
#![allow(missing_docs, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

pub mod browser;
pub mod jwt_app;
pub mod oidc;
pub mod otel;
pub mod pg_harness;
pub mod redis_harness;
pub mod refresh_app;
pub mod secret_scan;
pub mod session_app;

/// The README's Rust code blocks, compiled (and run unless `no_run`) as doc
/// tests of this crate, which has axum, tokio and every portcullis feature.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// A server listening on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `app` on `127.0.0.1:0`. When `PORTCULLIS_SCAN_DIR` is set,
    /// installs the secret scan's recorder and serves `app` behind its
    /// ledger ([`secret_scan`]).
    pub async fn start(app: Router) -> Self {
        let app = secret_scan::wrap(app);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client with no cookie jar: tests handle cookies by hand, to see them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("portcullis-tests")
        .build()
        .unwrap()
}

/// `GET url` with `token` as the bearer token, through [`client`]; the
/// answer's JSON body, whatever its status.
///
/// # Panics
///
/// When the request fails or the body is not JSON.
pub async fn get_json_with_bearer(url: String, token: &str) -> serde_json::Value {
    client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `Set-Cookie` headers of a response.
pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The value of cookie `name` set by a response (`None` if not set).
pub fn cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(resp).iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// A running example binary, killed when dropped.
#[derive(Debug)]
pub struct ExampleProcess {
    child: std::process::Child,
    pub url: String,
}

impl ExampleProcess {
    /// Starts `bin` with `PORT=0` and `envs`, and waits (10 s at most) for
    /// the `listening on http://...` line it prints on stderr.
    pub fn start(bin: &str, envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let mut cmd = std::process::Command::new(bin);
        cmd.env("PORT", "0")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("http://") {
                    let url = line[i..].split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches(['.', ',', ')']).to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{bin} did not print its URL"));
        Self { child, url }
    }

    /// `{url}{path}`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }
}

impl Drop for ExampleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
