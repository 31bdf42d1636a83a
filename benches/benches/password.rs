//! Passwords at the chosen parameters (argon2id, m = 19456 KiB, t = 2,
//! p = 1) through `PasswordHasher`:
//!
//! 1. criterion: one hash, one verification, and two verifications at
//!    once (both cores), as elements per second: hashes per second on this
//!    machine;
//! 2. then, printed: a login flood against a real axum server (32 clients
//!    logging in back to back for a few seconds, while a probe asks a
//!    cheap `/health` route every 10 ms), first with the bounded pool (one
//!    slot per core, a queue long enough that nobody is refused), then
//!    with the same flood unbounded (a slot per client: every login runs
//!    its argon2 at once, as without the bound). For each: login latency
//!    p50/p99, `/health` latency p50/p99, logins per second, the most
//!    hashes in flight, and the process' peak resident memory during the
//!    flood (reset between the two; glibc keeps freed argon2 buffers, so
//!    the bounded run goes first).
//!
//! `cargo bench -p portcullis-benches --bench password`
//! (`PASSWORD_FLOOD_SECS`, default 5, sets the length of each flood).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use portcullis_password::{PasswordHasher, Verification};
use portcullis_tests::TestServer;

const PW: &str = "plum orchard at dusk, 1987";
const CLIENTS: usize = 32;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hasher = PasswordHasher::builder().build().unwrap();
    let stored = rt.block_on(hasher.hash(PW)).unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));

    let mut group = c.benchmark_group("password");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(hasher.rehash(PW).await.unwrap()) });
    });
    group.bench_function("verify", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(hasher.verify(Some(&stored), PW).await.unwrap()) });
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("verify_2_at_once", |b| {
        b.to_async(&rt).iter(|| async {
            let (a, b) = tokio::join!(hasher.verify(Some(&stored), PW), hasher.verify(None, PW));
            black_box((a.unwrap(), b.unwrap()))
        });
    });
    group.finish();

    let secs = std::env::var("PASSWORD_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let bounded = PasswordHasher::builder()
        .max_in_flight(cores)
        .queue_length(CLIENTS)
        .queue_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let unbounded = PasswordHasher::builder()
        .max_in_flight(CLIENTS)
        .queue_length(0)
        .build()
        .unwrap();
    for (name, hasher) in [
        (format!("bounded ({cores} slots)"), bounded),
        (format!("unbounded ({CLIENTS} slots)"), unbounded),
    ] {
        let r = rt.block_on(flood(hasher, &stored, Duration::from_secs(secs)));
        eprintln!(
            "flood of {CLIENTS} logins, {name}: login p50 {:.0} ms, p99 {:.0} ms; /health p50 \
             {:.1} ms, p99 {:.1} ms; {:.0} logins/s, {} refused; at most {} hashes in flight; \
             peak RSS {} MiB",
            ms(percentile(&r.logins, 50)),
            ms(percentile(&r.logins, 99)),
            ms(percentile(&r.health, 50)),
            ms(percentile(&r.health, 99)),
            r.logins.len() as f64 / r.secs,
            r.refused,
            r.peak_in_flight,
            r.peak_rss_kib / 1024,
        );
    }
}

struct Flood {
    logins: Vec<Duration>,
    health: Vec<Duration>,
    refused: usize,
    secs: f64,
    peak_in_flight: usize,
    peak_rss_kib: u64,
}

async fn login(
    State((hasher, stored)): State<(PasswordHasher, Arc<str>)>,
    Json(form): Json<serde_json::Value>,
) -> StatusCode {
    let password = form["password"].as_str().unwrap_or_default();
    match hasher.verify(Some(&stored), password).await {
        Ok(Verification::Verified { .. }) => StatusCode::OK,
        Ok(Verification::Mismatch) => StatusCode::UNAUTHORIZED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn flood(hasher: PasswordHasher, stored: &str, length: Duration) -> Flood {
    let app = Router::new()
        .route("/login", post(login))
        .route("/health", get(|| async { "ok" }))
        .with_state((hasher.clone(), Arc::from(stored)));
    let server = Arc::new(TestServer::start(app).await);
    let client = portcullis_tests::client();
    reset_peak_rss();
    let start = Instant::now();
    let deadline = start + length;
    let logins = (0..CLIENTS).map(|_| {
        let (client, server) = (client.clone(), Arc::clone(&server));
        async move {
            let mut took = Vec::new();
            let mut refused = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = client
                    .post(server.url("/login"))
                    .json(&serde_json::json!({ "password": PW }))
                    .send()
                    .await
                    .unwrap()
                    .status();
                match status {
                    StatusCode::OK => took.push(t.elapsed()),
                    StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                    other => panic!("login answered {other}"),
                }
            }
            (took, refused)
        }
    });
    let probe = {
        let (client, server) = (client.clone(), Arc::clone(&server));
        async move {
            let mut took = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = client.get(server.url("/health")).send().await.unwrap();
                assert_eq!(status.status(), StatusCode::OK);
                took.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            took
        }
    };
    let (per_client, mut health) = tokio::join!(join_all(logins), probe);
    let secs = start.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib();
    let mut logins: Vec<Duration> = Vec::new();
    let mut refused = 0;
    for (took, r) in per_client {
        logins.extend(took);
        refused += r;
    }
    logins.sort_unstable();
    health.sort_unstable();
    Flood {
        logins,
        health,
        refused,
        secs,
        peak_in_flight: hasher.stats().peak_in_flight,
        peak_rss_kib,
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resets `VmHWM` (Linux: writing 5 to `clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

criterion_group!(benches, bench);
criterion_main!(benches);
