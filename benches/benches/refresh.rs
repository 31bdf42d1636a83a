//! The refresh endpoint (`POST /auth/refresh` through `RefreshLayer`: one
//! rotation, one access token minted) on the memory stores and on Redis
//! (`RedisRefreshStore` + `RedisRevocationStore` on a throwaway
//! redis-server), 16 families refreshing at once; and a bearer request
//! carrying `sid` through `JwtLayer` checking the revocation view (filled
//! through Redis with 10 000 revoked sessions, 10 000 revoked token ids
//! and 1 000 user versions) against the same request with no view, in the
//! same run.
//!
//! After the criterion groups it prints, interleaving the lines in 100 ms
//! slices so that a drifting machine load weighs on all alike: refreshes
//! per second on memory and on Redis, the Redis commands per refresh
//! (`INFO commandstats`), and the bearer request's time with the view as
//! a ratio of the time without it.
//!
//! `cargo bench -p portcullis-benches --bench refresh` (needs
//! `redis-server`, as the tests do). Access tokens are HS256, so that the
//! store's cost is not hidden behind a signature.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::refresh::{
    MemoryRefreshStore, RefreshConfig, RefreshLayer, RefreshStore, Refresher, RotationKey,
};
use portcullis_benches::call;
use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore};
use portcullis_tests::redis_harness::RedisServer;
use tower::ServiceExt as _;

const CONCURRENCY: usize = 16;
const ISS: &str = "https://bench.test";
const AUD: &str = "bench";
const COOKIE: &str = "__Host-refresh";

fn issuer() -> JwtIssuer {
    JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .lifetime(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn jwt(issuer: &JwtIssuer, view: Option<portcullis::jwt::revocation::RevocationView>) -> JwtLayer {
    let b = JwtLayer::builder(issuer.keys()).issuer(ISS).audience(AUD);
    match view {
        Some(v) => b.revocation(v),
        None => b,
    }
    .build()
    .unwrap()
}

/// The hybrid app on `store` and `revocations`, and `CONCURRENCY` logged-in
/// families' refresh tokens.
async fn refresh_app(
    store: Arc<dyn RefreshStore>,
    revocations: Arc<dyn RevocationStore>,
) -> (Router, Mutex<Vec<String>>) {
    let issuer = issuer();
    let layer = jwt(&issuer, Some(revocations.view()));
    let refresher = Refresher::builder_arc(store, issuer, revocations, layer.clone())
        .config(RefreshConfig::default().rotation_key(RotationKey::from_bytes(&[9; 32]).unwrap()))
        .build()
        .unwrap();
    let mut tokens = Vec::new();
    for i in 0..CONCURRENCY {
        let pair = refresher.login(format!("user{i}")).issue().await.unwrap();
        tokens.push(pair.refresh.to_encoded());
    }
    let app = Router::new()
        .route(
            "/api/me",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .layer(layer)
        .layer(RefreshLayer::new(&refresher));
    (app, Mutex::new(tokens))
}

/// One refresh: the rotated token from the response's cookie.
async fn refresh(app: &Router, token: &str) -> String {
    let req = Request::post("/auth/refresh")
        .header("cookie", format!("{COOKIE}={token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let next = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .strip_prefix(&format!("{COOKIE}="))
        .unwrap()
        .to_owned();
    let _ = resp.into_body().collect().await.unwrap();
    next
}

/// Every family refreshes once, all at once.
async fn refresh_batch(app: &Router, tokens: &Mutex<Vec<String>>) {
    let current = tokens.lock().unwrap().clone();
    let next = join_all(current.iter().map(|t| refresh(app, t))).await;
    *tokens.lock().unwrap() = next;
}

fn bearer(token: &str) -> Request<Body> {
    Request::get("/api/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// Runs `batch` back to back for `for_`; returns (batches, seconds).
fn run_for<F: std::future::Future<Output = ()>>(
    rt: &tokio::runtime::Runtime,
    for_: Duration,
    mut batch: impl FnMut() -> F,
) -> (usize, f64) {
    rt.block_on(async {
        let started = Instant::now();
        let mut n = 0usize;
        while started.elapsed() < for_ {
            batch().await;
            n += 1;
        }
        (n, started.elapsed().as_secs_f64())
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let backend = RedisConfig::new(redis.url())
        .key_prefix("bench")
        .build()
        .unwrap();
    let (memory_app, memory_tokens, redis_app, redis_tokens, revocations) = rt.block_on(async {
        let (memory_app, memory_tokens) = refresh_app(
            Arc::new(MemoryRefreshStore::new()),
            Arc::new(MemoryRevocationStore::new()),
        )
        .await;
        let revocations = RedisRevocationStore::new(backend.clone()).unwrap();
        assert!(revocations.wait_synced(Duration::from_secs(5)).await);
        let (redis_app, redis_tokens) = refresh_app(
            Arc::new(RedisRefreshStore::new(backend.clone())),
            Arc::new(revocations.clone()),
        )
        .await;
        (
            memory_app,
            memory_tokens,
            redis_app,
            redis_tokens,
            revocations,
        )
    });
    // Warm up (connections, script caches).
    rt.block_on(async {
        refresh_batch(&memory_app, &memory_tokens).await;
        refresh_batch(&redis_app, &redis_tokens).await;
    });

    let mut group = c.benchmark_group("refresh_endpoint");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function("memory", |b| {
        b.to_async(&rt)
            .iter(|| refresh_batch(&memory_app, &memory_tokens));
    });
    group.bench_function("redis", |b| {
        b.to_async(&rt)
            .iter(|| refresh_batch(&redis_app, &redis_tokens));
    });
    group.finish();

    // The revocation view, filled through Redis (and pushed into this
    // instance's view), then a bearer request carrying sid, jti and ver.
    let issuer = issuer();
    rt.block_on(async {
        let exp = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
            + 3600;
        for chunk in (0..10_000).collect::<Vec<_>>().chunks(500) {
            let sids = chunk.iter().map(|i| {
                let revocations = &revocations;
                async move { revocations.revoke_session(&format!("fam-{i}"), exp).await }
            });
            let jtis = chunk.iter().map(|i| {
                let revocations = &revocations;
                async move { revocations.revoke_token(&format!("jti-{i}"), exp).await }
            });
            for r in join_all(sids).await.into_iter().chain(join_all(jtis).await) {
                r.unwrap();
            }
        }
        for i in 0..1_000 {
            revocations.revoke_user(&format!("user-{i}")).await.unwrap();
        }
    });
    let view = revocations.view();
    assert_eq!(view.len(), (10_000, 10_000, 1_000));
    let me = |layer: JwtLayer| {
        Router::new()
            .route(
                "/api/me",
                get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
            )
            .layer(layer)
    };
    let with_view = me(jwt(&issuer, Some(view)));
    let without_view = me(jwt(&issuer, None));
    let token = issuer
        .token("alice")
        .sid("AAAAAAAAAAAAAAAAAAAAAA")
        .ver(0)
        .mint()
        .unwrap()
        .token;
    rt.block_on(async {
        assert_eq!(call(&with_view, bearer(&token)).await, StatusCode::OK);
        assert_eq!(call(&without_view, bearer(&token)).await, StatusCode::OK);
    });
    let mut group = c.benchmark_group("bearer_with_sid");
    group.bench_function("without_view", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&without_view, bearer(&token)).await) });
    });
    group.bench_function("with_view", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&with_view, bearer(&token)).await) });
    });
    group.finish();

    // Redis commands per refresh, and per bearer request.
    let before = redis.command_stats();
    let batches = 50;
    rt.block_on(async {
        for _ in 0..batches {
            refresh_batch(&redis_app, &redis_tokens).await;
        }
    });
    let delta = redis.command_stats().since(&before);
    let info = redis.command(&["INFO", "commandstats"]).text();
    if let Some(per_call) = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
    {
        eprintln!(
            "redis: {per_call} µs of Redis server time per rotation script (families \
             rotated thousands of times: a full 64-digest history)"
        );
    }
    // Commands a script runs are counted too: the calls sent are the
    // `evalsha`s (one round trip each).
    let refreshes = (batches * CONCURRENCY) as f64;
    eprintln!(
        "redis: {:.2} calls (round trips) per refresh; commands inside: {:?}",
        (delta.total()
            - delta
                .iter()
                .filter(|(c, _)| !matches!(*c, "evalsha" | "evalsha_ro"))
                .map(|(_, n)| n)
                .sum::<u64>()) as f64
            / refreshes,
        delta.iter().collect::<Vec<_>>()
    );
    let before = redis.command_stats();
    rt.block_on(async {
        for _ in 0..1000 {
            call(&with_view, bearer(&token)).await;
        }
    });
    eprintln!(
        "bearer with the view: {} Redis commands in 1000 requests",
        redis.command_stats().since(&before).total()
    );

    // Interleaved throughput and overhead; the order of the lines flips
    // every round, so that what one line leaves behind (connections still
    // busy) does not always weigh on the same next one.
    let slice = Duration::from_millis(100);
    let mut totals = [(0usize, 0f64); 4];
    for round in 0..20 {
        let mut runs: [Option<(usize, f64)>; 4] = [None; 4];
        let mut order = [0, 1, 2, 3];
        if round % 2 == 1 {
            order.reverse();
        }
        for line in order {
            runs[line] = Some(match line {
                0 => run_for(&rt, slice, || refresh_batch(&memory_app, &memory_tokens)),
                1 => run_for(&rt, slice, || refresh_batch(&redis_app, &redis_tokens)),
                2 => run_for(&rt, slice, || async {
                    black_box(call(&without_view, bearer(&token)).await);
                }),
                _ => run_for(&rt, slice, || async {
                    black_box(call(&with_view, bearer(&token)).await);
                }),
            });
        }
        for (total, run) in totals.iter_mut().zip(runs) {
            let (n, secs) = run.unwrap();
            total.0 += n;
            total.1 += secs;
        }
    }
    let [memory, on_redis, bare, viewed] = totals.map(|(n, s)| n as f64 / s);
    let (memory, on_redis) = (memory * CONCURRENCY as f64, on_redis * CONCURRENCY as f64);
    eprintln!(
        "refresh endpoint, {CONCURRENCY} at once: memory {memory:.0}/s, Redis {on_redis:.0}/s \
         ({:.2} of memory)",
        on_redis / memory
    );
    eprintln!(
        "bearer request with sid: {:.2} µs without the view, {:.2} µs with it (10k sids, \
         10k jtis, 1k users): {:.3}x",
        1e6 / bare,
        1e6 / viewed,
        bare / viewed
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
