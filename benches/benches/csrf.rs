//! Per-request overhead of `CsrfLayer`: a safe request, an unsafe request
//! with the token in a header, and one with the token in a urlencoded form
//! body; each against the same router without the layer, in one run.
//!
//! - `signed/*`: signed tokens bound to the pre-session cookie, so the
//!   numbers are the layer's own cost (no store).
//! - `session/*`: synchronizer tokens in the portcullis session; baseline
//!   is the same router with `SessionLayer` only, so the difference is what
//!   CSRF adds on top of sessions (the secret's read included).
//!
//! `cargo bench -p portcullis-benches --bench csrf -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use portcullis_benches::call;
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use tower::ServiceExt as _;

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
    name: &'static str,
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
        name: "signed",
        baseline: routes(),
        layered,
        cookie: cookies.join("; "),
        token,
    }
}

async fn session_case() -> Case {
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = rt.block_on(async { vec![signed_case().await, session_case().await] });
    for case in &cases {
        let mut group = c.benchmark_group(format!("csrf/{}", case.name));
        let form = format!("csrf_token={}&display_name=Alice+Liddell", case.token);
        let req = |kind: &str| -> Request<Body> {
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
                    .body(Body::from(form.clone())),
            }
            .unwrap()
        };
        // Sanity: the layered router accepts each request.
        for kind in ["safe", "header", "form"] {
            let status = rt.block_on(call(&case.layered, req(kind)));
            assert_eq!(status, 200, "{} {kind}", case.name);
        }
        for kind in ["safe", "header", "form"] {
            group.bench_function(format!("{kind}/baseline"), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(call(&case.baseline, req(kind)).await) });
            });
            group.bench_function(format!("{kind}/layer"), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(call(&case.layered, req(kind)).await) });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
