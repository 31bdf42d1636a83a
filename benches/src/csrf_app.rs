//! The CSRF benchmarks' apps: a signed-token app (no store) and a
//! session-token app, each with the same router without `CsrfLayer`.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use tower::ServiceExt as _;

pub fn routes() -> Router {
    Router::new()
        .route("/page", get(|| async { "page" }))
        .route("/act", axum::routing::post(|| async { "done" }))
}

/// The layered router, plus a route that renders a token (and, in session
/// mode, logs in first so the secret lives in a real session).
pub fn token_route(router: Router) -> Router {
    router.route(
        "/token",
        get(|token: CsrfToken| async move { token.as_str().to_owned() }),
    )
}

pub struct Case {
    pub name: &'static str,
    pub baseline: Router,
    pub layered: Router,
    pub cookie: String,
    pub token: String,
}

pub fn cookie_pair(set_cookie: &http::HeaderValue) -> String {
    let s = set_cookie.to_str().unwrap();
    s.split(';').next().unwrap().to_owned()
}

pub async fn fetch_token(app: &Router, cookie: Option<&str>) -> (String, Vec<String>) {
    let mut req = Request::get("/token");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(cookie_pair)
        .collect();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), cookies)
}

pub async fn signed_case() -> Case {
    let layer = CsrfLayer::new(CsrfConfig::signed(
        [0x42; 32],
        SignedBinding::pre_session_only(),
    ))
    .unwrap();
    let layered = token_route(routes()).layer(layer);
    let (token, cookies) = fetch_token(&layered, None).await;
    Case {
        name: "signed",
        baseline: routes(),
        layered,
        cookie: cookies.join("; "),
        token,
    }
}

pub async fn session_case() -> Case {
    let store = MemoryStore::new();
    let sessions = SessionLayer::new(store, SessionConfig::default()).unwrap();
    let csrf = CsrfLayer::new(CsrfConfig::session()).unwrap();
    let login = axum::routing::post(|s: Session| async move {
        s.login("alice").await.unwrap();
    });
    let layered = token_route(routes())
        .layer(csrf)
        .route("/login", login)
        .layer(sessions.clone());
    // Log in (the route sits outside CsrfLayer), then render a token.
    let resp = layered
        .clone()
        .oneshot(Request::post("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie = cookie_pair(&resp.headers()["set-cookie"]);
    let (token, _) = fetch_token(&layered, Some(&cookie)).await;
    // The baseline shares the store, so it reads the same session.
    let baseline = routes().layer(sessions);
    Case {
        name: "session",
        baseline,
        layered,
        cookie,
        token,
    }
}

/// A request of `kind` (`safe`, `header`, `form`) that `case`'s layered
/// app accepts: same-origin, with the case's cookie and token.
pub fn request(case: &Case, kind: &str) -> Request<Body> {
    let b = Request::builder()
        .header("cookie", case.cookie.as_str())
        .header("sec-fetch-site", "same-origin")
        .header("origin", "http://app.example")
        .header("host", "app.example");
    match kind {
        "safe" => b.method("GET").uri("/page").body(Body::empty()),
        "header" => b
            .method("POST")
            .uri("/act")
            .header("x-csrf-token", case.token.as_str())
            .body(Body::empty()),
        _ => b
            .method("POST")
            .uri("/act")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "csrf_token={}&display_name=Alice+Liddell",
                case.token
            ))),
    }
    .unwrap()
}
