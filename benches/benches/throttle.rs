//! `LoginThrottleLayer`'s cost on an allowed request, as a ratio of the
//! same request through the same route without it, in the same run: on
//! the memory store and on Redis (a throwaway redis-server), for two
//! handlers:
//!
//! - **trivial**: answers 200 at once, without an outcome (a refresh
//!   endpoint, a page): the throttle checks the request's counters only;
//! - **password**: a login that verifies alice's password with
//!   `portcullis-password` (argon2id at OWASP's parameters) and says
//!   `LoginOutcome::Succeeded`: the throttle checks, then resets the
//!   account's counters.
//!
//! Requests are sent one at a time, in process (no HTTP), with the
//! throttle's three default counters (the account at the address, the
//! account, the address). After the criterion groups it prints the median
//! time per request of each line, the lines taking turns request by
//! request so that a drifting machine load weighs on all alike, and its
//! ratio to the same handler without the throttle; then the Redis round
//! trips per request (request/reply exchanges through a counting proxy)
//! and the Redis commands per request (`INFO commandstats`).
//!
//! `cargo bench -p portcullis-benches --bench throttle` (needs
//! `redis-server`, as the tests do).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Form, State};
use axum::routing::post;
use axum::{Extension, Router};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode};
use portcullis_benches::call;
use portcullis_password::{PasswordHasher, Verification};
use portcullis_redis::{RedisConfig, RedisThrottleStore};
use portcullis_tests::redis_harness::{RedisServer, RoundTripProxy};
use portcullis_throttle::{
    LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig, ThrottleStore,
};

const PASSWORD: &str = "plum orchard at dusk, 1987";
const BODY: &str = "username=alice&password=plum+orchard+at+dusk%2C+1987";

/// One line of the comparison.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    None,
    Memory,
    Redis,
}

fn request() -> Request<Body> {
    let mut req = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(BODY))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    req
}

/// `router` behind the throttle on `store` (default counters), or bare.
fn throttled(router: Router, store: Option<Box<dyn ThrottleStore>>) -> Router {
    match store {
        Some(store) => router.route_layer(LoginThrottleLayer::from_arc(
            store.into(),
            ThrottleConfig::default(),
        )),
        None => router,
    }
}

fn trivial() -> Router {
    Router::new().route("/login", post(|_body: String| async { StatusCode::OK }))
}

/// Alice's stored hash and the hasher.
#[derive(Clone)]
struct Users {
    hasher: PasswordHasher,
    alice: String,
}

/// A login route verifying alice's password.
fn password_login(users: Users) -> Router {
    async fn login(
        State(users): State<Users>,
        Form(form): Form<HashMap<String, String>>,
    ) -> (StatusCode, Extension<LoginOutcome>) {
        let user = form.get("username").map(String::as_str);
        let known = (user == Some("alice")).then_some(users.alice.as_str());
        let password = form.get("password").cloned().unwrap_or_default();
        match users.hasher.verify(known, password).await {
            Ok(Verification::Verified { .. }) => {
                (StatusCode::NO_CONTENT, Extension(LoginOutcome::Succeeded))
            }
            _ => (StatusCode::UNAUTHORIZED, Extension(LoginOutcome::Failed)),
        }
    }
    Router::new().route("/login", post(login)).with_state(users)
}

async fn one(app: &Router, want: StatusCode) {
    assert_eq!(call(app, request()).await, want);
}

/// Each app's median time per request: the apps take turns, one request
/// each, `rounds` times, so that a drifting machine load weighs on all
/// alike (this machine's two cores are shared). The first app is measured
/// twice (a second copy of it last): the two lines' ratio is the noise
/// of the measurement.
fn alternating(
    rt: &tokio::runtime::Runtime,
    apps: &[(&Router, StatusCode)],
    rounds: usize,
) -> Vec<f64> {
    let mut times = vec![Vec::with_capacity(rounds); apps.len()];
    rt.block_on(async {
        for round in 0..rounds {
            // Each app takes each place in the turn equally often.
            for i in 0..apps.len() {
                let k = (round + i) % apps.len();
                let (app, want) = apps[k];
                let started = Instant::now();
                one(app, want).await;
                times[k].push(started.elapsed().as_secs_f64());
            }
        }
    });
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

fn micros(secs: f64) -> String {
    format!("{:.1} µs", secs * 1e6)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let redis_store = || {
        RedisThrottleStore::new(
            RedisConfig::new(redis.url())
                .key_prefix("bench")
                .build()
                .unwrap(),
        )
    };
    let hasher = PasswordHasher::builder().build().unwrap();
    let alice = rt.block_on(hasher.hash(PASSWORD)).unwrap();
    let users = Users { hasher, alice };

    let stores = [Store::None, Store::Memory, Store::Redis];
    let store = |s: Store| -> Option<Box<dyn ThrottleStore>> {
        match s {
            Store::None => None,
            Store::Memory => Some(Box::new(MemoryThrottleStore::new())),
            Store::Redis => Some(Box::new(redis_store())),
        }
    };
    let trivial_apps: Vec<Router> = stores
        .iter()
        .map(|&s| throttled(trivial(), store(s)))
        .collect();
    let login_apps: Vec<Router> = stores
        .iter()
        .map(|&s| throttled(password_login(users.clone()), store(s)))
        .collect();
    // Warm up (connections, the script cache, the blocking pool).
    rt.block_on(async {
        for app in &trivial_apps {
            one(app, StatusCode::OK).await;
        }
        for app in &login_apps {
            one(app, StatusCode::NO_CONTENT).await;
        }
    });

    let names = ["bare", "throttle_memory", "throttle_redis"];
    let mut group = c.benchmark_group("throttle_trivial");
    for (name, app) in names.iter().zip(&trivial_apps) {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| one(app, StatusCode::OK));
        });
    }
    group.finish();
    let mut group = c.benchmark_group("throttle_password");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (name, app) in names.iter().zip(&login_apps) {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| one(app, StatusCode::NO_CONTENT));
        });
    }
    group.finish();

    // Ratios to the same handler without the throttle: medians of
    // requests taking turns.
    let trivial_times = alternating(
        &rt,
        &[
            (&trivial_apps[0], StatusCode::OK),
            (&trivial_apps[1], StatusCode::OK),
            (&trivial_apps[2], StatusCode::OK),
            (&trivial_apps[0], StatusCode::OK),
        ],
        20_000,
    );
    let login_times = alternating(
        &rt,
        &[
            (&login_apps[0], StatusCode::NO_CONTENT),
            (&login_apps[1], StatusCode::NO_CONTENT),
            (&login_apps[2], StatusCode::NO_CONTENT),
            (&login_apps[0], StatusCode::NO_CONTENT),
        ],
        150,
    );
    for (what, times) in [("trivial", &trivial_times), ("password", &login_times)] {
        eprintln!(
            "{what} handler, median of requests taking turns: bare {} (again: {:.3}x, the \
             noise); throttle on memory {} ({:.3}x, +{}); throttle on Redis {} ({:.3}x, +{})",
            micros(times[0]),
            times[3] / times[0],
            micros(times[1]),
            times[1] / times[0],
            micros(times[1] - times[0]),
            micros(times[2]),
            times[2] / times[0],
            micros(times[2] - times[0]),
        );
    }

    // Redis round trips and commands per request, through a counting
    // proxy (exchanges) and from Redis' own statistics (commands).
    let proxy = rt.block_on(RoundTripProxy::start(redis.port()));
    let counted = || {
        RedisThrottleStore::new(
            RedisConfig::new(proxy.url())
                .key_prefix("bench")
                .build()
                .unwrap(),
        )
    };
    let counted_apps = [
        (
            "trivial",
            throttled(trivial(), Some(Box::new(counted()))),
            StatusCode::OK,
        ),
        (
            "password",
            throttled(password_login(users), Some(Box::new(counted()))),
            StatusCode::NO_CONTENT,
        ),
    ];
    let requests = 200;
    for (what, app, want) in &counted_apps {
        rt.block_on(one(app, *want));
        let exchanges = proxy.exchanges();
        let before = redis.command_stats();
        rt.block_on(async {
            for _ in 0..requests {
                one(app, *want).await;
            }
        });
        let delta = redis.command_stats().since(&before);
        eprintln!(
            "{what} handler on Redis: {:.2} round trips and {:.2} commands per request ({:?})",
            (proxy.exchanges() - exchanges) as f64 / requests as f64,
            delta.total() as f64 / requests as f64,
            delta.iter().collect::<Vec<_>>(),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
