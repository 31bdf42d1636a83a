//! Session load through `SessionLayer` with `RedisSessionStore`, 32
//! requests at a time, against the floor: 32 bare Redis `GET`s of a value
//! the size of the session record, on the same kind of multiplexed
//! connection, to the same throwaway redis-server, in the same run. A third
//! line goes through a `deadpool-redis` pool (one more round trip per call
//! for its checkout health check); two more decompose the cost: the store's
//! `load` alone, and the layer on the in-process memory store (no Redis).
//!
//! After the criterion groups it prints, from `INFO commandstats`, the
//! Redis commands (each a round trip here) per request, and the layer's
//! throughput as a ratio of the floor.
//!
//! `cargo bench -p portcullis-benches --bench redis_session` (needs
//! `redis-server`, as the tests do).

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use portcullis::core::TokenDigest;
use portcullis::session::{
    CurrentUser, MemoryStore, Session, SessionConfig, SessionLayer, SessionStore as _,
};
use portcullis_benches::call;
use portcullis_redis::deadpool_redis::redis::{self, aio::MultiplexedConnection};
use portcullis_redis::deadpool_redis::{self, Runtime};
use portcullis_redis::{RedisConfig, RedisSessionStore};
use portcullis_tests::redis_harness::{RedisServer, Reply};

const CONCURRENCY: usize = 32;
const FLOOR_KEY: &str = "bench:floor";

/// A router whose `/me` loads the session (the one store call of an
/// authenticated request) and whose `/login` makes a realistic record.
fn app(config: RedisConfig) -> Router {
    routes(
        SessionLayer::new(
            RedisSessionStore::new(config.build().unwrap()),
            SessionConfig::default(),
        )
        .unwrap(),
    )
}

fn routes(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/me",
            get(|CurrentUser(user): CurrentUser| async move { user }),
        )
        .route(
            "/login",
            post(|s: Session| async move {
                s.login("alice@example.com").await.unwrap();
                s.insert("~renew:csrf", "x".repeat(43)).await.unwrap();
                s.insert("theme", "dark").await.unwrap();
                s.insert("cart", vec![1, 2, 3]).await.unwrap();
            }),
        )
        .layer(layer)
}

async fn login(app: &Router) -> String {
    let resp = tower::ServiceExt::oneshot(
        app.clone(),
        Request::post("/login").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

fn me(cookie: &str) -> Request<Body> {
    Request::get("/me")
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap()
}

/// 32 session loads at once through the layer.
async fn layer_batch(app: &Router, cookie: &str) {
    for status in join_all((0..CONCURRENCY).map(|_| call(app, me(cookie)))).await {
        assert_eq!(status, StatusCode::OK);
    }
}

/// 32 `GET`s at once on one multiplexed connection.
async fn floor_batch(conn: &MultiplexedConnection) {
    let gets = (0..CONCURRENCY).map(|_| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("GET")
                .arg(FLOOR_KEY)
                .query_async::<Vec<u8>>(&mut conn)
                .await
                .unwrap()
        }
    });
    black_box(join_all(gets).await);
}

/// The digest of the one session stored.
fn session_digest(redis: &RedisServer) -> TokenDigest {
    let Reply::Array(Some(keys)) = redis.command(&["KEYS", "bench:s:*"]) else {
        panic!("no session key");
    };
    TokenDigest::from_hex(keys[0].text().strip_prefix("bench:s:").unwrap()).unwrap()
}

/// Bytes of the stored session record.
fn record_size(redis: &RedisServer) -> usize {
    let Reply::Array(Some(keys)) = redis.command(&["KEYS", "bench:s:*"]) else {
        panic!("no session key");
    };
    match redis.command(&["GET", &keys[0].text()]) {
        Reply::Bulk(Some(b)) => b.len(),
        other => panic!("GET: {other:?}"),
    }
}

/// Runs `batch` back to back for `for_`; returns (requests, seconds).
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
            n += CONCURRENCY;
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
    let multiplexed = app(RedisConfig::new(redis.url()).key_prefix("bench"));
    let pool = rt.block_on(async {
        deadpool_redis::Config::from_url(redis.url())
            .create_pool(Some(Runtime::Tokio1))
            .unwrap()
    });
    let pooled = app(RedisConfig::from_pool(pool).key_prefix("bench"));
    let cookie = rt.block_on(login(&multiplexed));
    // The layer's own cost, without Redis: the same routes on the memory store.
    let memory = routes(SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap());
    let memory_cookie = rt.block_on(login(&memory));
    let size = record_size(&redis);
    let floor = rt.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("SET")
            .arg(FLOOR_KEY)
            .arg("x".repeat(size))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        conn
    });
    // Warm every connection up.
    rt.block_on(async {
        layer_batch(&multiplexed, &cookie).await;
        layer_batch(&pooled, &cookie).await;
        floor_batch(&floor).await;
    });

    let mut group = c.benchmark_group("redis_session_load");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function("get_floor", |b| {
        b.to_async(&rt).iter(|| floor_batch(&floor));
    });
    group.bench_function("layer", |b| {
        b.to_async(&rt).iter(|| layer_batch(&multiplexed, &cookie));
    });
    group.bench_function("layer_deadpool_pool", |b| {
        b.to_async(&rt).iter(|| layer_batch(&pooled, &cookie));
    });
    // The store alone, without the layer.
    let store = RedisSessionStore::new(
        RedisConfig::new(redis.url())
            .key_prefix("bench")
            .build()
            .unwrap(),
    );
    let digest = session_digest(&redis);
    group.bench_function("store_load", |b| {
        b.to_async(&rt).iter(|| async {
            let loads = (0..CONCURRENCY).map(|_| store.load(&digest));
            for loaded in join_all(loads).await {
                assert!(loaded.unwrap().is_some());
            }
        });
    });
    group.bench_function("layer_memory_store", |b| {
        b.to_async(&rt)
            .iter(|| layer_batch(&memory, &memory_cookie));
    });
    group.finish();

    // Commands per request, from Redis' own counters.
    let batches = 100;
    let requests = (batches * CONCURRENCY) as f64;
    for (name, app) in [("layer", &multiplexed), ("layer_deadpool_pool", &pooled)] {
        let before = redis.command_stats();
        rt.block_on(async {
            for _ in 0..batches {
                layer_batch(app, &cookie).await;
            }
        });
        let delta = redis.command_stats().since(&before);
        let per_request = delta.total() as f64 / requests;
        eprintln!(
            "{name}: {per_request:.2} Redis commands per request ({:?})",
            delta.iter().collect::<Vec<_>>()
        );
    }
    // Throughput ratios, the four lines interleaved in 100 ms slices so
    // that a drifting machine load weighs on all of them alike.
    let slice = Duration::from_millis(100);
    let mut totals = [(0usize, 0f64); 4];
    for _ in 0..20 {
        let runs = [
            run_for(&rt, slice, || floor_batch(&floor)),
            run_for(&rt, slice, || layer_batch(&multiplexed, &cookie)),
            run_for(&rt, slice, || layer_batch(&pooled, &cookie)),
            run_for(&rt, slice, || layer_batch(&memory, &memory_cookie)),
        ];
        for (total, (n, secs)) in totals.iter_mut().zip(runs) {
            total.0 += n;
            total.1 += secs;
        }
    }
    let [floor_rate, layer_rate, pool_rate, memory_rate] = totals.map(|(n, s)| n as f64 / s);
    eprintln!(
        "record {size} bytes, concurrency {CONCURRENCY}: GET floor {floor_rate:.0}/s; \
         layer on Redis {layer_rate:.0}/s ({:.2} of the floor); \
         through a deadpool pool {pool_rate:.0}/s ({:.2}); \
         layer on the memory store (no Redis) {memory_rate:.0}/s",
        layer_rate / floor_rate,
        pool_rate / floor_rate,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
