//! Redis failures, end to end: two app servers share a real redis-server
//! that the test kills, restarts (empty: no persistence) or freezes
//! (`SIGSTOP`), under load. Requests that need Redis answer 503 within a
//! bounded time (never 500, never a hang, never "logged out"), service
//! resumes by itself, and sessions lost with Redis' data are invalid (401),
//! never someone else's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portcullis::session::SessionConfig;
use portcullis_redis::{DEFAULT_TIMEOUT, RedisConfig};
use portcullis_tests::redis_harness::{Fleet, RedisServer, SESSION_COOKIE};
use portcullis_tests::set_cookies;
use reqwest::StatusCode;

/// Longest any request may take while Redis is down or frozen: the 250 ms
/// default timeout, plus room for a loaded CI machine.
const BOUND: Duration = Duration::from_millis(1000);

async fn fleet(redis: &RedisServer) -> Fleet {
    let url = redis.url();
    // The default timeout: these tests check it.
    Fleet::start(2, || RedisConfig::new(url.clone()), SessionConfig::default).await
}

#[derive(Debug)]
struct Probe {
    started: Instant,
    finished: Instant,
    status: Result<StatusCode, String>,
}

impl Probe {
    fn latency(&self) -> Duration {
        self.finished - self.started
    }
}

/// `workers` clients sending `GET /me` with `cookie` round-robin over the
/// fleet until `stop`.
fn load(
    fleet: &Arc<Fleet>,
    cookie: &str,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Probe>>> {
    (0..workers)
        .map(|w| {
            let fleet = Arc::clone(fleet);
            let stop = Arc::clone(stop);
            let cookie = format!("{SESSION_COOKIE}={cookie}");
            tokio::spawn(async move {
                let mut probes = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::SeqCst) {
                    let app = &fleet.apps[i % fleet.apps.len()];
                    i += 1;
                    let started = Instant::now();
                    let status = fleet
                        .http
                        .get(app.url("/me"))
                        .header("cookie", &cookie)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .map(|r| r.status())
                        .map_err(|e| e.to_string());
                    probes.push(Probe {
                        started,
                        finished: Instant::now(),
                        status,
                    });
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                probes
            })
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_load_gives_503s_then_recovers() {
    let mut redis = RedisServer::start();
    let fleet = Arc::new(fleet(&redis).await);
    let alice = fleet.login(0, "alice").await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&fleet, &alice, 8, &stop);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    tokio::task::block_in_place(|| redis.kill());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| redis.restart());
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let mut probes = Vec::new();
    for w in workers {
        probes.extend(w.await.unwrap());
    }

    for p in &probes {
        let status = p.status.as_ref().expect("no request fails or hangs");
        assert!(
            [
                StatusCode::OK,
                StatusCode::UNAUTHORIZED,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(status),
            "unexpected {status}"
        );
        assert!(p.latency() < BOUND, "a request took {:?}", p.latency());
    }
    let status = |p: &Probe| *p.status.as_ref().unwrap();
    let before: Vec<&Probe> = probes.iter().filter(|p| p.finished < killed).collect();
    assert!(before.len() > 20 && before.iter().all(|p| status(p) == StatusCode::OK));
    // Down: fail closed, never "logged out".
    let down: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.started > killed && p.finished < restarting)
        .collect();
    assert!(down.len() > 20, "{} requests while down", down.len());
    assert!(
        down.iter()
            .all(|p| status(p) == StatusCode::SERVICE_UNAVAILABLE),
        "{:?}",
        down.iter().map(|p| status(p)).collect::<Vec<_>>()
    );
    // Back, empty: the lost session is invalid, never valid again.
    let after: Vec<&Probe> = probes.iter().filter(|p| p.started > restarted).collect();
    assert!(after.iter().all(|p| status(p) != StatusCode::OK));
    let recovered: Vec<&Probe> = after
        .iter()
        .copied()
        .filter(|p| p.started > restarted + Duration::from_millis(300))
        .collect();
    assert!(
        !recovered.is_empty()
            && recovered
                .iter()
                .all(|p| status(p) == StatusCode::UNAUTHORIZED),
        "recovered by itself within 300 ms of the restart"
    );
    let first_401 = after
        .iter()
        .filter(|p| status(p) == StatusCode::UNAUTHORIZED)
        .map(|p| p.finished - restarted)
        .min()
        .unwrap();
    let unavailable: Vec<Duration> = probes
        .iter()
        .filter(|p| status(p) == StatusCode::SERVICE_UNAVAILABLE)
        .map(Probe::latency)
        .collect();
    eprintln!(
        "redis killed: {} requests, {} answered 503 (latency median {:?}, max {:?}); \
         first 401 {:?} after the restart",
        probes.len(),
        unavailable.len(),
        median(unavailable.clone()),
        unavailable.iter().max().unwrap(),
        first_401,
    );
    // And new logins work again.
    let bob = fleet.login(1, "bob").await;
    assert_eq!(
        fleet.me(0, &bob).await,
        (StatusCode::OK, Some("bob".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_redis_times_out_into_503s_and_nobody_is_logged_out() {
    let redis = RedisServer::start();
    let fleet = fleet(&redis).await;
    let alice = fleet.login(0, "alice").await;
    assert_eq!(fleet.me(1, &alice).await.0, StatusCode::OK);

    redis.freeze();
    let mut latencies = Vec::new();
    for i in 0..8 {
        let started = Instant::now();
        let (status, _) = fleet.me(i % 2, &alice).await;
        let latency = started.elapsed();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "request {i}");
        assert!(latency < BOUND, "request {i} took {latency:?}");
        latencies.push(latency);
    }
    // The first request on each instance waits for the timeout (its
    // connection is open but silent); none waits much longer.
    let slowest = *latencies.iter().max().unwrap();
    assert!(
        slowest >= DEFAULT_TIMEOUT,
        "a silent Redis is only detected by the timeout: {latencies:?}"
    );
    let resp = fleet.post(0, "/login/bob", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    redis.thaw();

    // Recovers by itself; the outage logged nobody out.
    let thawed = Instant::now();
    let mut recovered = [false; 2];
    while recovered != [true; 2] {
        for (app, done) in recovered.iter_mut().enumerate() {
            match fleet.me(app, &alice).await {
                (StatusCode::OK, Some(user)) => {
                    assert_eq!(user, "alice");
                    *done = true;
                }
                (StatusCode::SERVICE_UNAVAILABLE, _) => {}
                other => panic!("after the freeze: {other:?}"),
            }
        }
        assert!(thawed.elapsed() < BOUND, "no recovery after the thaw");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "redis frozen: 503 after {:?} (median), {slowest:?} (max); recovered {:?} after the thaw",
        median(latencies),
        thawed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_lost_the_data_invalidates_sessions() {
    let mut redis = RedisServer::start();
    let fleet = fleet(&redis).await;
    let alice = fleet.login(0, "alice").await;
    let bob = fleet.login(1, "bob").await;
    tokio::task::block_in_place(|| redis.restart());
    assert_eq!(redis.dbsize(), 0, "no persistence: the data is gone");

    // Once reconnected (a few ms), the old cookies are refused and cleared.
    let deadline = Instant::now() + BOUND;
    let resp = loop {
        let resp = fleet.get(0, "/me", &alice).await;
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
            break resp;
        }
        assert!(Instant::now() < deadline, "no recovery after the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with(&format!("{SESSION_COOKIE}=;"))),
        "the dead cookie is cleared"
    );
    // Sessions created after the restart never answer to the old ids.
    let carol = fleet.login(1, "carol").await;
    for app in 0..2 {
        assert_eq!(
            fleet.me(app, &carol).await,
            (StatusCode::OK, Some("carol".into()))
        );
        for old in [&alice, &bob] {
            let (status, user) = fleet.me(app, old).await;
            assert_eq!((status, user), (StatusCode::UNAUTHORIZED, None));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_operation_fails_closed_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let fleet = fleet(&redis).await;
    let alice = fleet.login(0, "alice").await;
    tokio::task::block_in_place(|| redis.kill());
    for (method, path) in [
        ("GET", "/me"),
        ("GET", "/get/k"),
        ("POST", "/set/k/v"),
        ("POST", "/login/mallory"),
        ("POST", "/logout"),
        ("POST", "/logout-everywhere"),
        ("GET", "/sessions"),
    ] {
        let started = Instant::now();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = fleet.send(1, method, path, Some(&alice)).await;
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{path} while Redis is down"
        );
        assert!(started.elapsed() < BOUND);
        assert!(
            set_cookies(&resp).is_empty(),
            "{path}: an outage never clears the cookie"
        );
    }
    // Anonymous pages that never touch the session do not need Redis.
    let resp = fleet.send(0, reqwest::Method::GET, "/public", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
}
