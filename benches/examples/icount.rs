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
//!
//! The cost of observability: `obs-session {off,on,base}` (a session
//! read) and `obs-jwt {off,on,base}` (an HS256 check, cache on), with
//! events off, on (the `observability` bench's handle: OpenTelemetry
//! recorder on an SDK meter provider, audit drain, client address and
//! route), and without the layer (`benches/icount.sh observability`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use portcullis::events::Events;
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::session::SessionConfig;
use portcullis_benches::jwt_app::Jwt;
use portcullis_benches::observability::{Observability, served};
use portcullis_benches::{call, csrf_app, session_app};

async fn me(claims: Claims) -> String {
    claims.subject().unwrap_or_default().to_owned()
}

/// The JWT app (HS256, as the criterion bench's) and a request with a
/// valid token.
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

/// `n` requests of the observability case `layer` (`session`, `jwt`) with
/// events `mode` (`off`, `on`, `base`: without the layer; or a candidate
/// change, [`Observability::candidate`]: `notrace`,
/// `nocontext`).
async fn observability(layer: &str, mode: &str, n: usize) {
    let obs = match mode {
        "off" | "on" | "base" => Observability::new(),
        candidate => Observability::candidate(candidate),
    };
    let events = if matches!(mode, "off" | "base") {
        Events::default()
    } else {
        obs.events.clone()
    };
    if layer == "session" {
        let apps = session_app::apps_with(SessionConfig::default().events(events)).await;
        let app = if mode == "base" {
            &apps.baseline
        } else {
            &apps.layered
        };
        for _ in 0..n {
            black_box(call(app, served(session_app::request("read", &apps.cookie))).await);
        }
    } else {
        let jwt = Jwt::new();
        let app = if mode == "base" {
            Jwt::baseline()
        } else {
            jwt.layered(events)
        };
        for _ in 0..n {
            black_box(call(&app, served(jwt.request())).await);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (layer, case, n) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    if let Some(layer) = layer.strip_prefix("obs-") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(observability(layer, case, n));
        return;
    }
    let base = layer.ends_with("-base");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match layer.trim_end_matches("-base") {
            "session" => {
                let apps = session_app::apps().await;
                let app = if base { &apps.baseline } else { &apps.layered };
                for _ in 0..n {
                    black_box(call(app, session_app::request(case, &apps.cookie)).await);
                }
            }
            "jwt" => {
                let (app, req) = jwt_case(base, case);
                let auth = req.headers()["authorization"].clone();
                for _ in 0..n {
                    let req = Request::get("/me")
                        .header("authorization", auth.clone())
                        .body(Body::empty())
                        .unwrap();
                    black_box(call(&app, req).await);
                }
            }
            mode => {
                let c = if mode == "csrf-signed" {
                    csrf_app::signed_case().await
                } else {
                    csrf_app::session_case().await
                };
                let app = if base { &c.baseline } else { &c.layered };
                for _ in 0..n {
                    black_box(call(app, csrf_app::request(&c, case)).await);
                }
            }
        }
    });
}
