//! The login throttle's shared stores against real servers:
//! `RedisThrottleStore` (a redis-server, a three-master Redis Cluster),
//! `PgThrottleStore` (a throwaway PostgreSQL) and `SqliteThrottleStore` (a
//! file).
//!
//! - the public conformance suite on each, the racing case included;
//! - the throttle holding across two instances (two axum servers, each
//!   with its own connection to the same Redis or PostgreSQL): failures on
//!   one block on the other;
//! - Redis or PostgreSQL stopped: 503, and service back once it returns;
//! - what only one backend can get wrong: Redis round trips per request
//!   (a counting proxy and `INFO commandstats`), scripts lost by a
//!   restarted Redis, native expiry, unreadable counters; PostgreSQL
//!   statements per call, requests locking the same rows in opposite
//!   orders; batched and background purges on both databases; no account
//!   name or address stored in clear anywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Form;
use axum::routing::post;
use axum::{Extension, Router};
use portcullis::core::{ManualClock, SharedClock, StoreErrorKind};
use portcullis_redis::{RedisConfig, RedisThrottleStore};
use portcullis_sql::sqlx;
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use portcullis_sql::{
    PgBackend, PgConfig, PgThrottleStore, PurgeConfig, SqliteBackend, SqliteConfig,
    SqliteThrottleStore,
};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::{RedisCluster, RedisServer, Reply, RoundTripProxy};
use portcullis_tests::{TestServer, client};
use portcullis_throttle::testing::{FORGET, at, fresh_key};
use portcullis_throttle::{
    LoginOutcome, LoginThrottleLayer, ThrottleConfig, ThrottleKey, ThrottleScope, ThrottleState,
    ThrottleStore,
};
use reqwest::StatusCode;

/// Generous: these tests check behaviour, not latency, on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The right password of the one account the test apps know.
const RIGHT: &str = "correct horse battery staple";

// ---------------------------------------------------------------------
// Stores.

fn redis_store(url: &str, prefix: &str) -> RedisThrottleStore {
    RedisThrottleStore::new(
        RedisConfig::new(url)
            .key_prefix(prefix)
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    )
}

/// No background purge: the tests that count rows decide when to purge.
fn no_background_purge() -> PurgeConfig {
    PurgeConfig {
        every: Duration::ZERO,
        ..PurgeConfig::default()
    }
}

/// A backend on a pool of its own for `url`, migrated.
async fn pg_backend(url: &str, purge: PurgeConfig, timeout: Duration) -> PgBackend {
    let pool = PgPoolOptions::new()
        .acquire_timeout(timeout)
        .test_before_acquire(false)
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool)
        .timeout(timeout)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// A backend on `dir/auth.db`, migrated.
async fn sqlite_backend(dir: &tempfile::TempDir, purge: PurgeConfig) -> SqliteBackend {
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("auth.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect_with(options)
        .await
        .unwrap();
    let backend = SqliteConfig::new(pool)
        .timeout(TIMEOUT)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

// ---------------------------------------------------------------------
// The conformance suite. Its cases use fresh random keys, so one store
// may serve them all.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_conformance() {
    let redis = RedisServer::start();
    let url = redis.url();
    portcullis_throttle::testing::run_all(|| {
        let store = redis_store(&url, "conf");
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conformance() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let backend = || {
        RedisConfig::cluster(urls.clone())
            .key_prefix("conf")
            .timeout(TIMEOUT)
            .build()
            .unwrap()
    };
    portcullis_throttle::testing::run_all(|| {
        let store = RedisThrottleStore::new(backend());
        async move { store }
    })
    .await;

    // A request's counters live in different slots, spread over the
    // nodes, and are still read and written together.
    let store = RedisThrottleStore::new(backend());
    let keys: Vec<ThrottleKey> = (0..30)
        .map(|i| fresh_key(ThrottleScope::ALL[i % 3]))
        .collect();
    let before = cluster.dbsizes();
    let states = store.record_failure(&keys, at(0), FORGET).await.unwrap();
    assert!(states.iter().all(|s| s.failures == 1));
    let grown: Vec<i64> = cluster
        .dbsizes()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(grown.iter().sum::<i64>(), 30);
    assert!(
        grown.iter().all(|&n| n > 0),
        "every node holds some: {grown:?}"
    );
    let slots: std::collections::BTreeSet<i64> = keys
        .iter()
        .map(|k| cluster.keyslot(&store.counter_key(k)))
        .collect();
    assert!(slots.len() > 20, "counters spread over slots: {slots:?}");
    assert_eq!(
        store.check(&keys, at(1), FORGET).await.unwrap(),
        states,
        "read back across slots"
    );
    store.reset(&keys).await.unwrap();
    assert!(
        store
            .check(&keys, at(1), FORGET)
            .await
            .unwrap()
            .iter()
            .all(|s| *s == ThrottleState::default())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    let url = PgServer::shared().fresh_database();
    let backend = pg_backend(&url, no_background_purge(), TIMEOUT).await;
    portcullis_throttle::testing::run_all(|| {
        let store = PgThrottleStore::new(&backend);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir, no_background_purge()).await;
    portcullis_throttle::testing::run_all(|| {
        let store = SqliteThrottleStore::new(&backend);
        async move { store }
    })
    .await;
}

/// `Database::throttle_store` gives the store of the URL's database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_url_gives_the_throttle_store() {
    let dir = tempfile::tempdir().unwrap();
    let url =
        portcullis_sql::DatabaseUrl::new(format!("sqlite://{}", dir.path().join("t.db").display()))
            .unwrap();
    let db = portcullis_sql::Database::connect(&url).unwrap();
    db.migrate().await.unwrap();
    let store = db.throttle_store();
    let k = fresh_key(ThrottleScope::Account);
    store.record_failure(&[k], at(0), FORGET).await.unwrap();
    assert_eq!(
        store.check(&[k], at(1), FORGET).await.unwrap()[0].failures,
        1
    );
}

// ---------------------------------------------------------------------
// Two instances over HTTP.

/// A login route behind the throttle (default counters, `clock`): alice's
/// password is [`RIGHT`], every other attempt fails.
fn login_app(store: Arc<dyn ThrottleStore>, clock: SharedClock) -> Router {
    let config = ThrottleConfig::builder().clock(clock).build().unwrap();
    let throttle = LoginThrottleLayer::from_arc(store, config);
    Router::new().route("/login", post(login).layer(throttle))
}

async fn login(Form(form): Form<HashMap<String, String>>) -> (StatusCode, Extension<LoginOutcome>) {
    let user = form.get("username").map(String::as_str);
    let password = form.get("password").map(String::as_str);
    if user == Some("alice") && password == Some(RIGHT) {
        (StatusCode::NO_CONTENT, Extension(LoginOutcome::Succeeded))
    } else {
        (StatusCode::UNAUTHORIZED, Extension(LoginOutcome::Failed))
    }
}

async fn post_login(server: &TestServer, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(server.url("/login"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

fn retry_after(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

fn is_problem(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"))
}

/// Five wrong passwords on `a` (the strict counter's free failures), then:
/// `b` refuses alice, even with the right password, with the same 429
/// `a` gives; a second later `b` lets the right password in, which resets
/// the account's counters on both.
async fn holds_across(a: &TestServer, b: &TestServer, clock: &ManualClock) {
    for _ in 0..5 {
        assert_eq!(
            post_login(a, "alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let on_b = post_login(b, "alice", RIGHT).await;
    assert_eq!(on_b.status(), StatusCode::TOO_MANY_REQUESTS, "blocked on b");
    assert_eq!(retry_after(&on_b), Some(1));
    assert!(is_problem(&on_b));
    let on_a = post_login(a, "Alice ", "wrong").await;
    assert_eq!(on_a.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&on_a), Some(1));
    assert_eq!(on_a.bytes().await.unwrap(), on_b.bytes().await.unwrap());

    clock.advance(Duration::from_secs(1));
    assert_eq!(
        post_login(b, "alice", RIGHT).await.status(),
        StatusCode::NO_CONTENT,
        "the rightful user gets in once the backoff has passed"
    );
    // The success on b reset the account's counters for a as well.
    for _ in 0..5 {
        assert_eq!(
            post_login(a, "alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post_login(b, "alice", "wrong").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_across_two_instances_on_redis() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(at(0).millis()));
    // Each instance its own backend: its own connection to Redis.
    let a = TestServer::start(login_app(
        Arc::new(redis_store(&redis.url(), "app")),
        clock.clone(),
    ))
    .await;
    let b = TestServer::start(login_app(
        Arc::new(redis_store(&redis.url(), "app")),
        clock.clone(),
    ))
    .await;
    holds_across(&a, &b, &clock).await;
    // Only digests reach Redis.
    let Reply::Array(Some(keys)) = redis.command(&["KEYS", "*"]) else {
        panic!("KEYS");
    };
    assert!(!keys.is_empty());
    for k in keys {
        let k = k.text();
        assert!(
            !k.to_lowercase().contains("alice") && !k.contains("127.0.0.1"),
            "{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_across_two_instances_on_postgres() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let clock = Arc::new(ManualClock::new(at(0).millis()));
    // Each instance its own pool.
    let a_backend = pg_backend(&url, PurgeConfig::default(), TIMEOUT).await;
    let b_backend = pg_backend(&url, PurgeConfig::default(), TIMEOUT).await;
    let a = TestServer::start(login_app(
        Arc::new(PgThrottleStore::new(&a_backend)),
        clock.clone(),
    ))
    .await;
    let b = TestServer::start(login_app(
        Arc::new(PgThrottleStore::new(&b_backend)),
        clock.clone(),
    ))
    .await;
    holds_across(&a, &b, &clock).await;
    let dump = server.psql(
        PgServer::database_of(&url),
        "SELECT scope, encode(key_digest, 'escape') FROM portcullis.throttle_counters",
    );
    assert!(!dump.is_empty());
    assert!(
        !dump.to_lowercase().contains("alice") && !dump.contains("127.0.0.1"),
        "{dump}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_across_two_processes_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at(0).millis()));
    let a_backend = sqlite_backend(&dir, PurgeConfig::default()).await;
    let b_backend = sqlite_backend(&dir, PurgeConfig::default()).await;
    let a = TestServer::start(login_app(
        Arc::new(SqliteThrottleStore::new(&a_backend)),
        clock.clone(),
    ))
    .await;
    let b = TestServer::start(login_app(
        Arc::new(SqliteThrottleStore::new(&b_backend)),
        clock.clone(),
    ))
    .await;
    holds_across(&a, &b, &clock).await;
}

// ---------------------------------------------------------------------
// Outages.

/// Until `deadline`, posts a wrong password until the answer is not 503.
async fn until_served(server: &TestServer, what: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = post_login(server, "bob", "wrong").await;
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
            return resp;
        }
        assert!(Instant::now() < deadline, "{what}: still 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_is_503_and_service_returns() {
    let mut redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(at(0).millis()));
    let store = RedisThrottleStore::new(
        RedisConfig::new(redis.url())
            .key_prefix("app")
            .build() // the default 250 ms timeout
            .unwrap(),
    );
    let app = TestServer::start(login_app(Arc::new(store), clock.clone())).await;
    assert_eq!(
        post_login(&app, "alice", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );

    redis.kill();
    for password in ["wrong", RIGHT] {
        let started = Instant::now();
        let resp = post_login(&app, "alice", password).await;
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "fails closed"
        );
        assert!(is_problem(&resp));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    redis.restart();
    assert_eq!(
        until_served(&app, "Redis restarted").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Counting again (the restarted Redis lost its data and its scripts):
    // five failures free, the sixth attempt refused.
    for _ in 0..5 {
        assert_eq!(
            post_login(&app, "alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post_login(&app, "alice", "wrong").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Frozen: the timeout answers.
    redis.freeze();
    let started = Instant::now();
    let resp = post_login(&app, "carol", "wrong").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    redis.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_is_503_and_counters_survive() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let clock = Arc::new(ManualClock::new(at(0).millis()));
    let backend = pg_backend(&url, no_background_purge(), Duration::from_millis(500)).await;
    let app = TestServer::start(login_app(
        Arc::new(PgThrottleStore::new(&backend)),
        clock.clone(),
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(
            post_login(&app, "alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    server.stop();
    for password in ["wrong", RIGHT] {
        let started = Instant::now();
        let resp = post_login(&app, "alice", password).await;
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "fails closed"
        );
        assert!(is_problem(&resp));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    server.restart();
    assert_eq!(
        until_served(&app, "PostgreSQL restarted").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The counters outlived the outage: alice is still held back.
    let resp = post_login(&app, "alice", RIGHT).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        post_login(&app, "alice", RIGHT).await.status(),
        StatusCode::NO_CONTENT
    );
}

// ---------------------------------------------------------------------
// Redis.

/// A route the throttle guards whose handler says nothing of the outcome
/// (a page, a refresh that succeeded): only the check reaches the store.
fn allowed_app(store: RedisThrottleStore) -> Router {
    let config = ThrottleConfig::default();
    Router::new().route(
        "/login",
        post(|| async { StatusCode::OK }).layer(LoginThrottleLayer::new(store, config)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_allowed_request_is_one_round_trip() {
    let redis = RedisServer::start();
    let proxy = RoundTripProxy::start(redis.port()).await;
    let store = redis_store(&proxy.url(), "app");
    let app = TestServer::start(allowed_app(store.clone())).await;
    // Connect first.
    store.backend().ping().await.unwrap();

    let requests = 100;
    let exchanges = proxy.exchanges();
    let stats = redis.command_stats();
    for i in 0..requests {
        let resp = post_login(&app, &format!("user{i}"), "x").await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let delta = redis.command_stats().since(&stats);
    assert_eq!(
        proxy.exchanges() - exchanges,
        requests,
        "one round trip each"
    );
    // Three counters: the account at the address, the account, the address.
    assert_eq!(delta.calls("hmget"), 3 * requests, "{delta:?}");
    assert_eq!(delta.total(), 3 * requests, "{delta:?}");

    // A failure and a reset are one round trip each too, whatever the
    // number of counters.
    let keys: Vec<ThrottleKey> = ThrottleScope::ALL.iter().map(|&s| fresh_key(s)).collect();
    store.record_failure(&keys, at(0), FORGET).await.unwrap(); // loads the script
    let exchanges = proxy.exchanges();
    let stats = redis.command_stats();
    store.record_failure(&keys, at(1), FORGET).await.unwrap();
    store.reset(&keys).await.unwrap();
    let delta = redis.command_stats().since(&stats);
    assert_eq!(proxy.exchanges() - exchanges, 2);
    assert_eq!(delta.calls("evalsha"), 3, "{delta:?}");
    assert_eq!(delta.calls("del"), 3, "{delta:?}");
}

/// A login that succeeds at the first try costs Redis one round trip (the
/// check found the account's counters clean: nothing to reset); one that
/// succeeds after a failure costs two (the check, then the reset), and the
/// reset does forget the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_first_try_login_is_one_round_trip() {
    let redis = RedisServer::start();
    let proxy = RoundTripProxy::start(redis.port()).await;
    let store = redis_store(&proxy.url(), "app");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let app = TestServer::start(login_app(Arc::new(store.clone()), clock.clone())).await;
    store.backend().ping().await.unwrap();

    let exchanges = proxy.exchanges();
    let resp = post_login(&app, "alice", RIGHT).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(proxy.exchanges() - exchanges, 1, "first-try login");

    assert_eq!(
        post_login(&app, "alice", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let exchanges = proxy.exchanges();
    let stats = redis.command_stats();
    let resp = post_login(&app, "alice", RIGHT).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(proxy.exchanges() - exchanges, 2, "login after a failure");
    assert_eq!(redis.command_stats().since(&stats).calls("del"), 2);
    // Forgotten: four more failures and the fifth attempt still reaches
    // the handler (five are free at one address).
    for _ in 0..4 {
        assert_eq!(
            post_login(&app, "alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post_login(&app, "alice", RIGHT).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_scripts_are_loaded_again_and_counted_once() {
    let redis = RedisServer::start();
    let store = redis_store(&redis.url(), "app");
    let keys = [
        fresh_key(ThrottleScope::Account),
        fresh_key(ThrottleScope::Address),
    ];
    store.record_failure(&keys, at(0), FORGET).await.unwrap();
    let flushed = redis.command(&["SCRIPT", "FLUSH"]);
    assert_eq!(flushed.text(), "OK");
    let states = store.record_failure(&keys, at(1), FORGET).await.unwrap();
    assert_eq!(
        states.iter().map(|s| s.failures).collect::<Vec<_>>(),
        [2, 2],
        "each failure counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counters_expire_by_themselves() {
    let redis = RedisServer::start();
    let store = redis_store(&redis.url(), "app");
    let k = fresh_key(ThrottleScope::AccountAtAddress);
    let forget = Duration::from_secs(600);
    store.record_failure(&[k], at(100), forget).await.unwrap();
    let ttl = |r: Reply| match r {
        Reply::Int(n) => n,
        other => panic!("PTTL: {other:?}"),
    };
    let first = ttl(redis.command(&["PTTL", &store.counter_key(&k)]));
    assert!((590_000..=600_000).contains(&first), "{first}");
    // Each failure sets it again.
    redis.command(&["PEXPIRE", &store.counter_key(&k), "1000"]);
    store.record_failure(&[k], at(160), forget).await.unwrap();
    let second = ttl(redis.command(&["PTTL", &store.counter_key(&k)]));
    assert!((590_000..=600_000).contains(&second), "{second}");
    // Fields as documented.
    let fields = redis.command(&["HGETALL", &store.counter_key(&k)]);
    let Reply::Array(Some(fields)) = fields else {
        panic!("{fields:?}");
    };
    let fields: Vec<String> = fields.iter().map(Reply::text).collect();
    assert_eq!(fields, ["n", "2", "l", &at(160).millis().to_string()]);
    // Gone by itself once expired.
    redis.command(&["PEXPIRE", &store.counter_key(&k), "1"]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        redis.command(&["EXISTS", &store.counter_key(&k)]),
        Reply::Int(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreadable_counters_are_errors_not_panics() {
    let redis = RedisServer::start();
    let store = redis_store(&redis.url(), "app");
    let wrong_type = fresh_key(ThrottleScope::Account);
    let garbage = fresh_key(ThrottleScope::Address);
    redis.command(&["SET", &store.counter_key(&wrong_type), "x"]);
    redis.command(&["HSET", &store.counter_key(&garbage), "n", "many", "l", "-3"]);
    for k in [wrong_type, garbage] {
        let e = store.check(&[k], at(0), FORGET).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e:?}");
    }
    let e = store
        .record_failure(&[wrong_type], at(0), FORGET)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e:?}");
    // Through the layer: 503, never a pass.
    let app = TestServer::start(login_app(
        Arc::new(store.clone()),
        Arc::new(ManualClock::new(at(0).millis())),
    ))
    .await;
    let ip_key = ThrottleKey::for_address("127.0.0.1".parse().unwrap());
    redis.command(&["SET", &store.counter_key(&ip_key), "x"]);
    let resp = post_login(&app, "alice", RIGHT).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// After a restart broke the connection, a check and a reset are sent
/// again on a new connection (the caller sees nothing); a failure is not
/// (sent twice it could count twice): that one call fails, the next works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resends_checks_and_resets_but_not_failures() {
    let mut redis = RedisServer::start();
    let store = redis_store(&redis.url(), "app");
    let k = fresh_key(ThrottleScope::Account);
    store.record_failure(&[k], at(0), FORGET).await.unwrap();

    redis.restart();
    assert_eq!(
        store.check(&[k], at(1), FORGET).await.unwrap(),
        [ThrottleState::default()],
        "resent; the restarted Redis is empty"
    );
    redis.restart();
    store.reset(&[k]).await.unwrap();
    redis.restart();
    let e = store.record_failure(&[k], at(2), FORGET).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let states = store.record_failure(&[k], at(3), FORGET).await.unwrap();
    assert_eq!(states[0].failures, 1, "the failed call left nothing");
}

// ---------------------------------------------------------------------
// SQL.

/// Requests whose counters overlap, sent in opposite orders from many
/// tasks at once, never deadlock and are all counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_overlapping_requests_never_deadlock() {
    let url = PgServer::shared().fresh_database();
    let backend = pg_backend(&url, no_background_purge(), TIMEOUT).await;
    let store = Arc::new(PgThrottleStore::new(&backend));
    let a = fresh_key(ThrottleScope::Account);
    let b = fresh_key(ThrottleScope::AccountAtAddress);
    let c = fresh_key(ThrottleScope::Address);
    let orders = [vec![a, b, c], vec![c, b, a], vec![b, c, a], vec![a, c, b]];
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let keys = orders[i % orders.len()].clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    store.record_failure(&keys, at(0), FORGET).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let states = store.check(&[a, b, c], at(0), FORGET).await.unwrap();
    assert!(states.iter().all(|s| s.failures == 200), "{states:?}");
}

/// One statement per call, whatever the number of counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_statement_per_call() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let backend = pg_backend(&url, no_background_purge(), TIMEOUT).await;
    let store = PgThrottleStore::new(&backend);
    let keys: Vec<ThrottleKey> = ThrottleScope::ALL.iter().map(|&s| fresh_key(s)).collect();
    server.reset_statement_stats(&db);
    for i in 0..10 {
        store.check(&keys, at(i), FORGET).await.unwrap();
        store.record_failure(&keys, at(i), FORGET).await.unwrap();
        store.reset(&keys[..2]).await.unwrap();
    }
    let ours: Vec<(u64, String)> = server
        .statement_stats(&db)
        .into_iter()
        .filter(|(_, q)| q.contains("throttle_counters"))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert!(ours.iter().all(|(calls, _)| *calls == 10), "{ours:?}");
}

/// Forgotten counters are purged in batches, 60 s after they were
/// forgotten in the background, at once by `purge_expired`; live ones
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_purges_forgotten_counters_in_batches() {
    let batches = PurgeConfig {
        every: Duration::ZERO,
        batch: 7,
        pause: Duration::ZERO,
    };
    let url = PgServer::shared().fresh_database();
    let pg = PgThrottleStore::new(&pg_backend(&url, batches, TIMEOUT).await);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteThrottleStore::new(&sqlite_backend(&dir, batches).await);
    let short = Duration::from_secs(10);

    async fn fill(store: &dyn ThrottleStore, short: Duration) -> Vec<ThrottleKey> {
        let old: Vec<ThrottleKey> = (0..30).map(|_| fresh_key(ThrottleScope::Address)).collect();
        for chunk in old.chunks(3) {
            store.record_failure(chunk, at(0), short).await.unwrap();
        }
        let live = fresh_key(ThrottleScope::Account);
        store.record_failure(&[live], at(0), FORGET).await.unwrap();
        vec![live]
    }
    let live = fill(&pg, short).await;
    assert_eq!(
        pg.purge_expired(at(9)).await.unwrap(),
        0,
        "not yet forgotten"
    );
    assert_eq!(pg.purge_expired(at(10)).await.unwrap(), 30);
    assert_eq!(
        pg.check(&live, at(11), FORGET).await.unwrap()[0].failures,
        1
    );
    let live = fill(&sqlite, short).await;
    assert_eq!(sqlite.purge_expired(at(9)).await.unwrap(), 0);
    assert_eq!(sqlite.purge_expired(at(10)).await.unwrap(), 30);
    assert_eq!(
        sqlite.check(&live, at(11), FORGET).await.unwrap()[0].failures,
        1
    );

    // In the background, started by a failure, 60 s after the counters
    // were forgotten (room for other instances' clocks).
    let background = PurgeConfig {
        every: Duration::from_millis(1),
        batch: 7,
        pause: Duration::ZERO,
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir, background).await;
    let store = SqliteThrottleStore::new(&backend);
    let _ = fill(&store, short).await;
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM portcullis_throttle_counters")
            .fetch_one(backend.pool())
            .await
            .unwrap()
    };
    assert_eq!(rows().await, 31);
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .record_failure(&[fresh_key(ThrottleScope::Account)], at(69), FORGET)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rows().await, 32, "forgotten 59 s ago: kept");
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .record_failure(&[fresh_key(ThrottleScope::Account)], at(70), FORGET)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows().await != 3 {
        assert!(Instant::now() < deadline, "{} rows left", rows().await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Each failure stamps its counter with its writer's `now`, as the trait
/// says: a stamp from an instance whose clock runs 48 minutes ahead (which
/// `ThrottleState::blocked_until` ignores) is replaced by the next failure
/// anywhere, so it cannot silence the counter for the other instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_elsewhere_cannot_silence_a_counter() {
    let redis = RedisServer::start();
    let url = PgServer::shared().fresh_database();
    let pg = PgThrottleStore::new(&pg_backend(&url, no_background_purge(), TIMEOUT).await);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteThrottleStore::new(&sqlite_backend(&dir, no_background_purge()).await);
    let stores: [(&str, &dyn ThrottleStore); 3] = [
        ("redis", &redis_store(&redis.url(), "app")),
        ("postgres", &pg),
        ("sqlite", &sqlite),
    ];
    let strict = portcullis_throttle::DEFAULT_ACCOUNT_AT_ADDRESS;
    for (name, store) in stores {
        let k = fresh_key(ThrottleScope::AccountAtAddress);
        for _ in 0..5 {
            store.record_failure(&[k], at(100), FORGET).await.unwrap();
        }
        // One failure on an instance 48 minutes ahead...
        store.record_failure(&[k], at(3000), FORGET).await.unwrap();
        // ...then the next one on a right clock.
        let states = store.record_failure(&[k], at(101), FORGET).await.unwrap();
        assert_eq!(
            states,
            [ThrottleState {
                failures: 7,
                last_failure: Some(at(101))
            }],
            "{name}"
        );
        assert_eq!(
            states[0].blocked_until(&strict, at(101)),
            Some(at(105)),
            "{name}: 7 failures, 5 free: 4 s"
        );
        assert_eq!(
            store.check(&[k], at(102), FORGET).await.unwrap(),
            states,
            "{name}"
        );
    }
}

/// PostgreSQL purges by the earlier of the caller's clock and the
/// database's: an instance whose clock jumped ahead deletes nothing the
/// database's clock still counts. (SQLite, one host's clock, follows the
/// caller.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_never_runs_ahead_of_the_database_clock() {
    let url = PgServer::shared().fresh_database();
    let pg = PgThrottleStore::new(&pg_backend(&url, no_background_purge(), TIMEOUT).await);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteThrottleStore::new(&sqlite_backend(&dir, no_background_purge()).await);
    let now = portcullis::core::Timestamp::from(std::time::SystemTime::now());
    let year = Duration::from_secs(365 * 24 * 3600);
    let k = fresh_key(ThrottleScope::Address);
    for store in [&pg as &dyn ThrottleStore, &sqlite] {
        store
            .record_failure(&[k], now, Duration::from_secs(600))
            .await
            .unwrap();
    }
    assert_eq!(pg.purge_expired(now + year).await.unwrap(), 0);
    assert_eq!(sqlite.purge_expired(now + year).await.unwrap(), 1);
}

/// Unreadable rows are errors, never a pass or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_unreadable_rows_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir, no_background_purge()).await;
    let store = SqliteThrottleStore::new(&backend);
    let k = fresh_key(ThrottleScope::Account);
    store.record_failure(&[k], at(0), FORGET).await.unwrap();
    sqlx::query("UPDATE portcullis_throttle_counters SET last_failure = -1")
        .execute(backend.pool())
        .await
        .unwrap();
    let e = store.check(&[k], at(1), FORGET).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e:?}");
    // The table refuses what the store never writes.
    let refused = sqlx::query("UPDATE portcullis_throttle_counters SET failures = 0")
        .execute(backend.pool())
        .await;
    assert!(refused.is_err());
}
