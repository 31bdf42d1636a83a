//! Instructions per request of each layer, for callgrind: deterministic
//! where wall-clock benches on a shared machine are not. Runs `n`
//! requests of one case through the same apps as the criterion benches.
//!
//! ```sh
//! cargo build --release -p portcullis-benches --example icount
//! benches/icount.sh session untouched    # instructions/request, layer and baseline
//! ```
//!
//! Cases: `session {untouched,read,write}`, `jwt {cache,nocache}`,
//! `csrf-signed {safe,header,form}`, `csrf-session {safe,header,form}`;
//! a `-base` suffix on the layer (`session-base`) runs the same request
//! without it.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::Request;
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use portcullis_benches::call;
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
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

async fn me(claims: Claims) -> String {
    claims.subject().unwrap_or_default().to_owned()
}

/// The session app, logged in; the request for `case`.
async fn session_case(base: bool, case: &str) -> (Router, Request<Body>) {
    let layer = SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap();
    let app = Router::new()
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
    let resp = app
        .clone()
        .oneshot(Request::post("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let login = resp.headers()["set-cookie"].to_str().unwrap();
    let login = login.split(';').next().unwrap().to_owned();
    let app = if base {
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(|| async { String::from("alice") }))
            .route("/write", post(untouched))
    } else {
        app
    };
    let (method, path) = match case {
        "untouched" => ("GET", "/untouched"),
        "read" => ("GET", "/read"),
        _ => ("POST", "/write"),
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", login)
        .body(Body::empty())
        .unwrap();
    (app, req)
}

/// The JWT app (HS256) and a request with a valid token.
fn jwt_case(base: bool, case: &str) -> (Router, Request<Body>) {
    portcullis::jwt::ensure_crypto_provider();
    let key = SigningKey::hmac("k", Algorithm::HS256, b"0123456789abcdef0123456789abcdef").unwrap();
    let issuer = JwtIssuer::builder(key)
        .issuer("https://bench.test")
        .audience("bench")
        .build()
        .unwrap();
    let token = issuer
        .token("alice")
        .lifetime(std::time::Duration::from_secs(3600))
        .mint()
        .unwrap()
        .token;
    let app = if base {
        Router::new().route("/me", get(|| async { String::from("alice") }))
    } else {
        let jwt = JwtLayer::builder_for(&issuer)
            .cache(if case == "cache" { 10_000 } else { 0 })
            .build()
            .unwrap();
        Router::new().route("/me", get(me)).layer(jwt)
    };
    let req = Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    (app, req)
}

fn routes() -> Router {
    Router::new()
        .route("/page", get(|| async { "page" }))
        .route("/act", axum::routing::post(|| async { "done" }))
}

/// The layered router, plus a route that renders a token (and, in session
/// mode, logs in first so the secret lives in a real session).
fn token_route(router: Router) -> Router {
    router.route(
        "/token",
        get(|token: CsrfToken| async move { token.as_str().to_owned() }),
    )
}

struct Case {
    baseline: Router,
    layered: Router,
    cookie: String,
    token: String,
}

fn cookie_pair(set_cookie: &http::HeaderValue) -> String {
    let s = set_cookie.to_str().unwrap();
    s.split(';').next().unwrap().to_owned()
}

async fn fetch_token(app: &Router, cookie: Option<&str>) -> (String, Vec<String>) {
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

async fn signed_case() -> Case {
    let layer = CsrfLayer::new(CsrfConfig::signed(
        [0x42; 32],
        SignedBinding::pre_session_only(),
    ))
    .unwrap();
    let layered = token_route(routes()).layer(layer);
    let (token, cookies) = fetch_token(&layered, None).await;
    Case {
        baseline: routes(),
        layered,
        cookie: cookies.join("; "),
        token,
    }
}

async fn session_case_csrf() -> Case {
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
        baseline,
        layered,
        cookie,
        token,
    }
}

/// The CSRF app of `mode` and the request for `kind`.
async fn csrf_case(signed: bool, base: bool, kind: &str) -> (Router, Request<Body>) {
    let case = if signed {
        signed_case().await
    } else {
        session_case_csrf().await
    };
    let app = if base { case.baseline } else { case.layered };
    let b = Request::builder()
        .header("cookie", case.cookie.as_str())
        .header("sec-fetch-site", "same-origin")
        .header("origin", "http://app.example")
        .header("host", "app.example");
    let req = match kind {
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
    .unwrap();
    (app, req)
}

/// A copy of `req` (bodies are small and in memory here).
async fn copy(req: &Request<Body>, body: &axum::body::Bytes) -> Request<Body> {
    let mut b = Request::builder().method(req.method()).uri(req.uri());
    for (k, v) in req.headers() {
        b = b.header(k, v);
    }
    b.body(Body::from(body.clone())).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (layer, case, n) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let base = layer.ends_with("-base");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (app, req) = match layer.trim_end_matches("-base") {
            "session" => session_case(base, case).await,
            "jwt" => jwt_case(base, case),
            "csrf-signed" => csrf_case(true, base, case).await,
            _ => csrf_case(false, base, case).await,
        };
        let (parts, body) = req.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let req = Request::from_parts(parts, Body::empty());
        for _ in 0..n {
            black_box(call(&app, copy(&req, &body).await).await);
        }
    });
}
