//! The cost of a login to the Redis every user shares, as one user's index
//! grows, and what one user logging in without pause does to everyone
//! else.
//!
//! 1. **Per login, by index size.** One user's index is filled through the
//!    stores to 1 000, 10 000 and 100 000 sessions (and, separately, refresh
//!    families); at each size, 101 more logins, one at a time, each timed
//!    on the server: `SLOWLOG` with a threshold of 0 µs gives the time Redis
//!    spent in each script call. Printed: the median and p99 of the user
//!    index script (`INDEX_ADD`, the one script that touches the index) and
//!    of every script a login runs.
//! 2. **Another user, with and without a flood.** With the flooding user's
//!    indexes at 100 000 entries, another user's session loads and refresh
//!    rotations are timed one at a time (round trip as the application
//!    sees it, default 250 ms timeout) for a few seconds: first alone, then
//!    while eight tasks log the flooding user in without pause (a session
//!    and a refresh family each time). Printed: p50, p99, max and the
//!    calls that failed (a 503 in an application).
//!
//! `cargo bench -p portcullis-benches --bench redis_index` (needs
//! `redis-server`, as the tests do). Redis shares the machine's cores with
//! this process: the flood's own CPU use weighs on the second line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis::core::{OpaqueToken, SharedClock, SystemClock, Timestamp, TokenDigest};
use portcullis::refresh::testing::family;
use portcullis::refresh::{
    DeviceInfo, RefreshStore, RefreshToken, RotateOutcome, Rotation, RotationKey,
};
use portcullis::session::{SessionStore, testing::record};
use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisSessionStore};
use portcullis_tests::redis_harness::RedisServer;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const LOGINS: usize = 101;
const FLOODERS: usize = 8;
const WINDOW: Duration = Duration::from_secs(4);

fn digest() -> TokenDigest {
    OpaqueToken::generate().unwrap().digest()
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// (index script µs, all scripts µs) per login, from `SLOWLOG`.
fn take_login(server: &RedisServer) -> (u64, u64) {
    let mut index = 0;
    let mut all = 0;
    for (us, args) in server.slowlog_take() {
        if !args
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case("evalsha"))
        {
            continue;
        }
        all += us;
        // INDEX_ADD is the one script with two keys.
        if args.get(2).map(String::as_str) == Some("2") {
            index += us;
        }
    }
    (index, all)
}

fn report(what: &str, size: usize, mut samples: Vec<(u64, u64)>) -> u64 {
    let mut index: Vec<u64> = samples.iter().map(|s| s.0).collect();
    samples.sort_by_key(|s| s.1);
    let all: Vec<u64> = samples.iter().map(|s| s.1).collect();
    index.sort_unstable();
    let median = percentile(&index, 50);
    println!(
        "{what:>8} login, {size:>6} entries: index script median {median:>4} µs, p99 {:>4} µs; \
         all scripts median {:>4} µs, p99 {:>4} µs",
        percentile(&index, 99),
        percentile(&all, 50),
        percentile(&all, 99),
    );
    median
}

async fn fill_sessions(store: &RedisSessionStore, clock: &SharedClock, user: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(512);
        left -= batch;
        join_all((0..batch).map(|_| async {
            let rec = record(Some(user), clock.now());
            store.create(&digest(), &rec, None).await.unwrap()
        }))
        .await;
    }
}

async fn fill_families(store: &RedisRefreshStore, user: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(512);
        left -= batch;
        join_all((0..batch).map(|_| async {
            let (fam, _) = family(user, 0);
            store.create(&fam, None).await.unwrap();
        }))
        .await;
    }
}

fn slow_backend(server: &RedisServer) -> RedisConfig {
    // Filling: thousands of calls at once; never time out.
    RedisConfig::new(server.url()).timeout(Duration::from_secs(30))
}

/// Part 1: per-login server time at each size.
async fn per_login(server: &RedisServer) {
    let clock = SystemClock::shared();
    let sessions =
        RedisSessionStore::with_clock(slow_backend(server).build().unwrap(), clock.clone());
    let families = RedisRefreshStore::new(slow_backend(server).build().unwrap());
    let mut medians = Vec::new();
    let mut filled = 0;
    for size in SIZES {
        fill_sessions(&sessions, &clock, "flood", size - filled).await;
        fill_families(&families, "flood", size - filled).await;
        filled = size;
        server.slowlog_everything(1024);
        let mut s = Vec::new();
        for _ in 0..LOGINS {
            let rec = record(Some("flood"), clock.now());
            let _ = sessions.create(&digest(), &rec, None).await.unwrap();
            s.push(take_login(server));
        }
        let session = report("session", size, s);
        let mut r = Vec::new();
        for _ in 0..LOGINS {
            let (fam, _) = family("flood", 0);
            families.create(&fam, None).await.unwrap();
            r.push(take_login(server));
        }
        let refresh = report("refresh", size, r);
        filled += LOGINS;
        medians.push((session, refresh));
    }
    let ratio = |a: u64, b: u64| b as f64 / a.max(1) as f64;
    println!(
        "index script median, 100k / 1k entries: session {:.2}x, refresh {:.2}x",
        ratio(medians[0].0, medians[2].0),
        ratio(medians[0].1, medians[2].1),
    );
    server.command(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"]);
}

/// Latencies (µs) and failures of `call`, one at a time, for `WINDOW`.
async fn sample<F, Fut>(mut call: F) -> (Vec<u64>, u64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut times = Vec::new();
    let mut failed = 0;
    while started.elapsed() < WINDOW {
        let t = Instant::now();
        if !call().await {
            failed += 1;
        }
        times.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    times.sort_unstable();
    (times, failed)
}

fn print_latency(what: &str, (times, failed): &(Vec<u64>, u64)) {
    println!(
        "{what:<40} p50 {:>6} µs, p99 {:>6} µs, max {:>7} µs, {failed} failed of {}",
        percentile(times, 50),
        percentile(times, 99),
        times[times.len() - 1],
        times.len()
    );
}

/// Part 2: another user's loads and refreshes, without and with a flood.
async fn bystander(server: &RedisServer) {
    let clock = SystemClock::shared();
    // Default timeouts (250 ms): a failure is what an application answers
    // 503 for.
    let config = RedisConfig::new(server.url());
    let sessions = RedisSessionStore::with_clock(config.clone().build().unwrap(), clock.clone());
    let families = RedisRefreshStore::new(config.build().unwrap());

    let bob = digest();
    let rec = record(Some("bob"), clock.now());
    let _ = sessions.create(&bob, &rec, None).await.unwrap();
    let key = RotationKey::generate().unwrap();
    let (fam, first) = family("bob", 0);
    families.create(&fam, None).await.unwrap();
    let token = std::sync::Mutex::new(first);
    let mut now_ms = fam.created_at.millis();
    let mut rotate = || {
        now_ms += 1;
        let current: RefreshToken = token.lock().unwrap().clone();
        let next = current.successor(&key);
        let r = Rotation {
            family: current.family().clone(),
            presented: current.digest(),
            successor: next.digest(),
            now: Timestamp::from_millis(now_ms),
            grace: Duration::from_secs(10),
            idle: Duration::from_secs(3600),
            history_limit: 64,
            device: DeviceInfo::default(),
        };
        let families = &families;
        let token = &token;
        async move {
            match families.rotate(&r).await {
                Ok(RotateOutcome::Rotated(_)) => {
                    *token.lock().unwrap() = next;
                    true
                }
                _ => false,
            }
        }
    };
    let load = || async { sessions.load(&bob).await.is_ok_and(|r| r.is_some()) };

    let quiet_load = sample(load).await;
    let quiet_refresh = sample(&mut rotate).await;

    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (stop, logins) = (Arc::clone(&stop), Arc::clone(&logins));
            let sessions =
                RedisSessionStore::with_clock(slow_backend(server).build().unwrap(), clock.clone());
            let families = RedisRefreshStore::new(slow_backend(server).build().unwrap());
            let clock = clock.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let rec = record(Some("flood"), clock.now());
                    let _ = sessions.create(&digest(), &rec, None).await;
                    let (fam, _) = family("flood", 0);
                    let _ = families.create(&fam, None).await;
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let flood_load = sample(load).await;
    let flood_refresh = sample(&mut rotate).await;
    let flood_logins = logins.load(Ordering::Relaxed);
    let flood_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }

    println!(
        "another user, the flooding user's indexes at 100k entries ({FLOODERS} login loops: \
         {:.0} logins/s during the flood):",
        flood_logins as f64 / flood_secs
    );
    print_latency("  session load, alone", &quiet_load);
    print_latency("  session load, during the flood", &flood_load);
    print_latency("  refresh rotation, alone", &quiet_refresh);
    print_latency("  refresh rotation, during the flood", &flood_refresh);
}

fn main() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        per_login(&server).await;
        bystander(&server).await;
    });
}
