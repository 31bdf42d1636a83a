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
//! 2. **Another user, alone and during floods.** With the flooding user's
//!    indexes at 100 000 entries, another user's session loads and refresh
//!    rotations are timed one at a time (round trip as the application
//!    sees it, default 250 ms timeout) for a few seconds each: first alone,
//!    then while eight tasks, without pause, run one of three floods:
//!    - plain session loads of a third user (the cheapest traffic);
//!    - logins (a session and a refresh family each time), each of a new
//!      user, so every index the login scripts touch holds one entry;
//!    - logins of the user whose indexes hold 100 000 entries.
//!
//!    The two login floods run the same scripts at the same concurrency and
//!    differ only in the size of the index those scripts work on. Redis,
//!    the flood and the timed calls share the machine's cores, so any
//!    flood raises the other user's latency; what the index size costs
//!    that user is the difference between the two login floods. Printed,
//!    per flood, the calls (or logins) per second it achieved, and per
//!    call kind and condition the p50, p99, max and the calls that failed
//!    (a 503 in an application).
//!
//! `cargo bench -p portcullis-benches --bench redis_index` (needs
//! `redis-server`, as the tests do; loopback only, about a minute).

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
        "{what:<56} p50 {:>6} µs, p99 {:>6} µs, max {:>7} µs, {failed} failed of {}",
        percentile(times, 50),
        percentile(times, 99),
        times[times.len() - 1],
        times.len()
    );
}

/// What the eight flooding tasks do, without pause.
#[derive(Clone, Copy)]
enum Flood {
    /// Plain session loads of a third user.
    Loads,
    /// Logins, each of a new user: the indexes the scripts touch hold one
    /// entry.
    TinyIndex,
    /// Logins of the user whose indexes hold 100 000 entries.
    FullIndex,
}

impl Flood {
    fn label(self) -> &'static str {
        match self {
            Self::Loads => "loads of a third user",
            Self::TinyIndex => "logins, 1-entry indexes",
            Self::FullIndex => "logins, 100k-entry indexes",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Loads => "loads",
            Self::TinyIndex | Self::FullIndex => "logins",
        }
    }
}

/// The flooding tasks while they run.
struct Running {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(server: &RedisServer, clock: &SharedClock, flood: Flood, third: TokenDigest) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..FLOODERS)
            .map(|task| {
                let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
                let sessions = RedisSessionStore::with_clock(
                    slow_backend(server).build().unwrap(),
                    clock.clone(),
                );
                let families = RedisRefreshStore::new(slow_backend(server).build().unwrap());
                let clock = clock.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match flood {
                            Flood::Loads => {
                                let _ = sessions.load(&third).await;
                            }
                            Flood::TinyIndex | Flood::FullIndex => {
                                let user = match flood {
                                    Flood::TinyIndex => format!("tiny-{task}-{n}"),
                                    _ => "flood".to_owned(),
                                };
                                let rec = record(Some(&user), clock.now());
                                let _ = sessions.create(&digest(), &rec, None).await;
                                let (fam, _) = family(&user, 0);
                                let _ = families.create(&fam, None).await;
                            }
                        }
                        n += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self { stop, done, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

/// The other user's calls under one condition.
struct Condition {
    flood: Option<Flood>,
    /// Flood operations per second during the timed calls.
    rate: f64,
    load: (Vec<u64>, u64),
    refresh: (Vec<u64>, u64),
}

impl Condition {
    fn name(&self) -> String {
        self.flood
            .map_or_else(|| "alone".to_owned(), |f| format!("flood of {}", f.label()))
    }
}

/// Part 2: another user's loads and refreshes, alone and during floods.
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
    let carol = digest();
    let rec = record(Some("carol"), clock.now());
    let _ = sessions.create(&carol, &rec, None).await.unwrap();
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

    let mut conditions = Vec::new();
    for flood in [
        None,
        Some(Flood::Loads),
        Some(Flood::TinyIndex),
        Some(Flood::FullIndex),
    ] {
        let running = flood.map(|f| Running::start(server, &clock, f, carol));
        if running.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = running
            .as_ref()
            .map_or(0, |r| r.done.load(Ordering::Relaxed));
        let started = Instant::now();
        let load = sample(load).await;
        let refresh = sample(&mut rotate).await;
        let mut rate = 0.0;
        if let Some(r) = running {
            let done = r.done.load(Ordering::Relaxed) - before;
            rate = done as f64 / started.elapsed().as_secs_f64();
            r.stop().await;
        }
        conditions.push(Condition {
            flood,
            rate,
            load,
            refresh,
        });
    }

    println!(
        "another user, the flooding user's indexes at 100k entries; each flood is {FLOODERS} \
         tasks without pause:"
    );
    for c in &conditions {
        if let Some(f) = c.flood {
            println!("  {:<38} {:>6.0} {}/s", c.name(), c.rate, f.unit());
        }
    }
    for (what, pick) in [
        (
            "session load",
            (|c: &Condition| &c.load) as fn(&Condition) -> &(Vec<u64>, u64),
        ),
        ("refresh rotation", |c: &Condition| &c.refresh),
    ] {
        for c in &conditions {
            print_latency(&format!("  {what}, {}", c.name()), pick(c));
        }
    }
    let p99 = |s: &(Vec<u64>, u64)| percentile(&s.0, 99) as f64;
    let (tiny, full) = (&conditions[2], &conditions[3]);
    println!(
        "p99 during the 100k-entry / the 1-entry login flood: session load {:.2}x, \
         refresh rotation {:.2}x; logins/s {:.2}x",
        p99(&full.load) / p99(&tiny.load).max(1.0),
        p99(&full.refresh) / p99(&tiny.refresh).max(1.0),
        full.rate / tiny.rate.max(1.0),
    );
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
