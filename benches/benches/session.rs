//! Per-request overhead of `SessionLayer` on the memory store: a request
//! that never touches the session, one that reads it, one that writes a
//! key; each against the same router without the layer, in one run.
//!
//! `cargo bench -p portcullis-benches --bench session`

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use portcullis_benches::call;

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

fn routes() -> Router {
    Router::new()
        .route("/untouched", get(untouched))
        .route("/read", get(read))
        .route("/write", post(write))
}

fn baseline() -> Router {
    Router::new()
        .route("/untouched", get(untouched))
        .route("/read", get(|| async { String::from("alice") }))
        .route("/write", post(untouched))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap();
    let with_layer = routes()
        .route(
            "/login",
            post(|s: Session| async move {
                s.login("alice").await.unwrap();
                s.insert("user", "alice").await.unwrap();
            }),
        )
        .layer(layer);
    let login = rt.block_on(async {
        let resp = tower::ServiceExt::oneshot(
            with_layer.clone(),
            Request::post("/login").body(Body::empty()).unwrap(),
        )
        .await
        .unwrap();
        let set = resp.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    });
    let plain = baseline();

    let mut group = c.benchmark_group("session");
    for (name, method, path) in [
        ("untouched", "GET", "/untouched"),
        ("read", "GET", "/read"),
        ("write", "POST", "/write"),
    ] {
        let req = |with_cookie: bool| {
            let mut b = Request::builder().method(method).uri(path);
            if with_cookie {
                b = b.header("cookie", login.as_str());
            }
            b.body(Body::empty()).unwrap()
        };
        group.bench_function(format!("{name}/baseline"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(call(&plain, req(true)).await) });
        });
        group.bench_function(format!("{name}/layer"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(call(&with_layer, req(true)).await) });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
