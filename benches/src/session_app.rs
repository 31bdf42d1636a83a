//! The session benchmarks' apps: handlers that leave the session
//! untouched, read it, or write a key, behind `SessionLayer` on the memory
//! store, and the same routes without the layer.

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::Request;
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use tower::ServiceExt as _;

async fn untouched() -> &'static str {
    "ok"
}

async fn read(session: Session) -> String {
    session
        .get::<String>("user")
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

async fn write(session: Session) -> &'static str {
    let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0);
    let _ = session.insert("n", n + 1).await;
    "ok"
}

/// The apps and a logged-in session's cookie (`name=value`).
pub struct Apps {
    pub layered: Router,
    pub baseline: Router,
    pub cookie: String,
}

/// Builds both apps and logs `alice` in on the layered one.
pub async fn apps() -> Apps {
    apps_with(SessionConfig::default()).await
}

/// [`apps`] with the layer configured by `config`.
pub async fn apps_with(config: SessionConfig) -> Apps {
    let layer = SessionLayer::new(MemoryStore::new(), config).unwrap();
    let layered = Router::new()
        .route("/untouched", get(untouched))
        .route("/read", get(read))
        .route("/write", post(write))
        .route(
            "/login",
            post(|s: Session| async move {
                s.login("alice").await.unwrap();
                s.insert("user", "alice").await.unwrap();
            }),
        )
        .layer(layer);
    let resp = layered
        .clone()
        .oneshot(Request::post("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    let baseline = Router::new()
        .route("/untouched", get(untouched))
        .route("/read", get(|| async { String::from("alice") }))
        .route("/write", post(untouched));
    Apps {
        layered,
        baseline,
        cookie,
    }
}

/// The request of `case` (`untouched`, `read`, `write`) with `cookie`.
pub fn request(case: &str, cookie: &str) -> Request<Body> {
    let (method, path) = match case {
        "untouched" => ("GET", "/untouched"),
        "read" => ("GET", "/read"),
        _ => ("POST", "/write"),
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap()
}
