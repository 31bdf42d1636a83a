//! `load inproc <contender> --iters N`: the contender's app called
//! in-process N times (no sockets), for instruction counts under
//! `valgrind --tool=callgrind` (repeatable whatever the machine is doing):
//! run it with two values of N and divide the difference of the totals.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::Flags;

async fn call(app: &axum::Router, req: Request<Body>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("call");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

pub fn run(name: &str, flags: &Flags) {
    let iters: usize = flags.num("iters", 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let contender = crate::apps::CONTENDERS
        .iter()
        .find(|c| c.name == name)
        .expect("unknown contender");
    rt.block_on(async {
        // As `axum::serve` does: handlers become routes once, not per call.
        let app: axum::Router = crate::apps::build(name, flags.get("redis"))
            .await
            .with_state(());
        let (status, headers, body) = call(
            &app,
            Request::post("/login").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, 200);
        let mut cred = None;
        if let Some((_, v)) = headers.iter().find(|(k, _)| k == "set-cookie") {
            cred = Some(("cookie", v.split(';').next().unwrap_or("").to_owned()));
        } else if String::from_utf8_lossy(&body).split('.').count() == 3 {
            cred = Some((
                "authorization",
                format!("Bearer {}", String::from_utf8_lossy(&body)),
            ));
        }
        // The baseline gets a cookie of the same size, so that the
        // difference is the layer's work, not the header's.
        if cred.is_none() {
            cred = Some(("cookie", format!("__Host-session={}", "A".repeat(43))));
        }
        let req = || {
            let mut b = Request::get(contender.path).header("user-agent", "load/1");
            if let Some((k, v)) = &cred {
                b = b.header(*k, v.as_str());
            }
            b.body(Body::empty()).expect("req")
        };
        let t = Instant::now();
        for _ in 0..iters {
            let (status, _, _) = call(&app, req()).await;
            assert_eq!(status, 200);
        }
        #[allow(clippy::cast_precision_loss)]
        let ns = t.elapsed().as_nanos() as f64 / iters as f64;
        eprintln!("{name}: {ns:.0} ns/request in-process ({iters} requests)");
    });
}
