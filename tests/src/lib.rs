//! Helpers shared by the HTTP-level tests: real servers on real sockets.
#![allow(missing_docs, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

pub mod browser;
pub mod jwt_app;
pub mod redis_harness;
pub mod session_app;

/// A server listening on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `app` on `127.0.0.1:0`.
    pub async fn start(app: Router) -> Self {
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
