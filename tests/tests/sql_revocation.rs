//! `PgRevocationStore` and `SqliteRevocationStore` against a real
//! PostgreSQL server and real SQLite files: the revocation conformance
//! suite (on the memory and Redis stores too), two instances on one
//! database with the propagation time measured over 100 revocations, a JWT
//! revoked on one instance refused by the other over HTTP with no database
//! statement per request, the listener cut off and terminated, the server
//! stopped and restarted (503 past the staleness bound, then recovery by
//! itself), awkward user ids, messages that carry only digests and only
//! committed changes, the purge, nothing secret in `Debug`, snapshots read
//! in pages (200,000 users), SQLite revocations whose write fails, and a
//! SQLite file restored from an older copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use portcullis::core::{Clock as _, ManualClock, SharedClock, SystemClock};
use portcullis::jwt::revocation::{RevocationStore, RevocationView};
use portcullis::jwt::revocation_testing::{self, claims};
use portcullis::jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
use portcullis_redis::{RedisConfig, RedisRevocationStore};
use portcullis_sql::sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use portcullis_sql::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
use portcullis_sql::{
    PgBackend, PgConfig, PgRevocationStore, PurgeConfig, SqliteBackend, SqliteConfig,
    SqliteRevocationStore, sqlx,
};
use portcullis_tests::TestServer;
use portcullis_tests::jwt_app::{me, serve_subject};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::RedisServer;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

const ISS: &str = "https://revocation.test";
const AUD: &str = "api";
const SYNC: Duration = Duration::from_secs(10);
/// For the behaviour tests, which check outcomes, not latency (a debug
/// build on two shared cores).
const TIMEOUT: Duration = Duration::from_secs(2);

fn now_secs() -> i64 {
    i64::try_from(SystemClock.now().secs()).unwrap()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn pg_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .unwrap()
}

/// A migrated backend on its own pool (one "instance").
async fn pg_backend(url: &str, timeout: Duration) -> PgBackend {
    pg_backend_with(url, timeout, PurgeConfig::default()).await
}

async fn pg_backend_with(url: &str, timeout: Duration, purge: PurgeConfig) -> PgBackend {
    let backend = PgConfig::new(pg_pool(url).await)
        .timeout(timeout)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// No purge in the background: only `purge_expired` purges.
const NO_BACKGROUND_PURGE: PurgeConfig = PurgeConfig {
    every: Duration::ZERO,
    batch: 500,
    pause: Duration::from_millis(10),
};

/// A started store whose first snapshot has loaded; pings and reconnects
/// fast.
async fn pg_store(backend: &PgBackend) -> PgRevocationStore {
    let s = PgRevocationStore::builder(backend)
        .ping_interval(Duration::from_millis(200))
        .max_backoff(Duration::from_millis(200))
        .start()
        .unwrap();
    assert!(s.wait_synced(SYNC).await, "first snapshot");
    s
}

/// A store that never pings (so that any statement it sends shows).
async fn quiet_pg_store(backend: &PgBackend) -> PgRevocationStore {
    let s = PgRevocationStore::builder(backend)
        .ping_interval(Duration::from_secs(3600))
        .start()
        .unwrap();
    assert!(s.wait_synced(SYNC).await, "first snapshot");
    s
}

async fn sqlite_backend(file: &std::path::Path) -> SqliteBackend {
    sqlite_backend_with(file, PurgeConfig::default()).await
}

async fn sqlite_backend_with(file: &std::path::Path, purge: PurgeConfig) -> SqliteBackend {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let backend = SqliteConfig::new(SqlitePool::connect_with(options).await.unwrap())
        .timeout(TIMEOUT)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// The next message on `probe` (5 s at most).
async fn next(probe: &mut PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(5), probe.recv())
        .await
        .unwrap()
        .unwrap()
        .payload()
        .to_owned()
}

/// Waits (1 s at most) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(1), "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One app instance: `/me` behind a `JwtLayer` checking `view`.
async fn instance(keys: portcullis::jwt::SharedKeys, view: RevocationView) -> TestServer {
    let jwt = JwtLayer::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .revocation(view)
        .build()
        .unwrap();
    serve_subject(jwt).await
}

fn issuer() -> JwtIssuer {
    JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .lifetime(Duration::from_secs(900))
        .build()
        .unwrap()
}

/// Polls `GET /me` until it answers `want` (within `limit`); returns how
/// long that took.
async fn until(app: &TestServer, token: &str, want: StatusCode, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = me(app, token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {got} after {limit:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. The conformance suite on every store.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory() {
    revocation_testing::run_all(|| async {
        let store = portcullis::jwt::revocation::MemoryRevocationStore::new();
        (store.clone(), store)
    })
    .await;
}

/// Two Redis stores (two subscribers) on one server, a fresh key prefix
/// per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefixes = AtomicU32::new(0);
    revocation_testing::run_all(|| async {
        let prefix = format!("c{}", prefixes.fetch_add(1, Ordering::Relaxed));
        let store = || async {
            let backend = RedisConfig::new(url.clone())
                .key_prefix(prefix.clone())
                .timeout(TIMEOUT)
                .build()
                .unwrap();
            let s = RedisRevocationStore::builder(backend)
                .ping_interval(Duration::from_millis(200))
                .start()
                .unwrap();
            assert!(s.wait_synced(SYNC).await);
            s
        };
        (store().await, store().await)
    })
    .await;
}

/// Two PostgreSQL stores on two pools (two instances) on a fresh database
/// per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres() {
    let server = PgServer::shared();
    revocation_testing::run_all(|| async {
        let url = server.fresh_database();
        let a = pg_store(&pg_backend(&url, TIMEOUT).await).await;
        let b = pg_store(&pg_backend(&url, TIMEOUT).await).await;
        (a, b)
    })
    .await;
}

/// Two SQLite stores on two pools of one file: they share one view. The
/// file is the same for every case (the suite's ids are its own per run),
/// so each case's stores start by loading the earlier cases' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conformance.db");
    revocation_testing::run_all(|| async {
        let a = SqliteRevocationStore::new(&sqlite_backend(&file).await).unwrap();
        let b = SqliteRevocationStore::new(&sqlite_backend(&file).await).unwrap();
        assert!(a.wait_synced(SYNC).await && b.wait_synced(SYNC).await);
        (a, b)
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Scale-out: two instances on one database.

/// Two stores on two pools on one database. A user revoked on A is refused
/// on B; the time from A's `revoke_user` returning to B's view refusing,
/// over 100 revocations, is printed (median and max); every one arrives
/// within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_propagation_over_100_revocations() {
    let url = PgServer::shared().fresh_database();
    let a = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let b = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let vb = b.view();
    let mut times = Vec::new();
    let mut calls = Vec::new();
    for i in 0..100 {
        let user = format!("user-{i}");
        let token = claims(None, None, Some(&user), Some(0));
        assert_eq!(vb.check(&token), None);
        let called = Instant::now();
        assert_eq!(a.revoke_user(&user).await.unwrap(), 1);
        let returned = Instant::now();
        calls.push(returned - called);
        while vb.check(&token).is_none() {
            assert!(
                returned.elapsed() < Duration::from_secs(1),
                "revocation {i} never reached B"
            );
            tokio::task::yield_now().await;
        }
        times.push(returned.elapsed());
    }
    assert_eq!(b.messages(), 100, "every revocation reached B as a message");
    let summary = |mut t: Vec<Duration>| {
        t.sort();
        (t[t.len() / 2], t[t.len() * 99 / 100], t[t.len() - 1])
    };
    let (median, p99, max) = summary(times);
    let (c_median, _, c_max) = summary(calls);
    eprintln!(
        "PostgreSQL revocation propagation, A's revoke_user returned -> B's view refuses, over \
         100 revocations: median {median:?}, p99 {p99:?}, max {max:?} (targets: median < 10 ms, \
         max < 100 ms); revoke_user itself: median {c_median:?}, max {c_max:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. Over HTTP, with no statement per JWT request.

/// Two app servers, each with its own store and pool on one database. A
/// JWT whose user is revoked on A is refused (401) on B; then 50 JWT
/// requests on B and A cost no database statement at all
/// (`pg_stat_statements`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_revoked_on_a_is_refused_on_b_with_no_statement_per_request() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let a = quiet_pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let b = quiet_pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let issuer = issuer();
    let app_a = instance(issuer.keys(), a.view()).await;
    let app_b = instance(issuer.keys(), b.view()).await;
    let alice = issuer.token("alice").mint().unwrap().token;
    let mallory = issuer.token("mallory").mint().unwrap().token;
    assert_eq!(me(&app_b, &mallory).await, StatusCode::OK);

    a.revoke_user("mallory").await.unwrap();
    let took = until(
        &app_b,
        &mallory,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    eprintln!("mallory refused on B {took:?} after A's revoke returned");
    // Both listeners have read the row the message named: no statement
    // of theirs is still to come.
    eventually("both listeners applied the message", || {
        a.messages() == 1 && b.messages() == 1
    })
    .await;

    server.reset_statement_stats(&db);
    for _ in 0..12 {
        assert_eq!(me(&app_b, &alice).await, StatusCode::OK);
        assert_eq!(me(&app_b, &mallory).await, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..13 {
        assert_eq!(me(&app_a, &alice).await, StatusCode::OK);
        assert_eq!(me(&app_a, &mallory).await, StatusCode::UNAUTHORIZED);
    }
    let stats = server.statement_stats(&db);
    eprintln!("50 JWT requests on A and B: statements {stats:?}");
    assert!(stats.is_empty(), "a statement per request: {stats:?}");
}

// ---------------------------------------------------------------------------
// 4. Listener faults.

/// B's listener connects as its own role. The role is barred from logging
/// in and every connection to the database is terminated: B's listener
/// cannot come back, so the revocations A makes meanwhile cannot reach it
/// as messages. Once the role may log in again, B's listener reconnects by
/// itself, and the snapshot it loads brings what it missed; messages flow
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_reconnects_and_its_snapshot_brings_what_it_missed() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let role = format!("b_{db}");
    server.psql(&db, &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
    let url_b = format!("postgres://{role}@127.0.0.1:{}/{db}", server.port());
    let a = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let b = pg_store(&pg_backend(&url_b, TIMEOUT).await).await;
    let vb = b.view();
    let now = now_secs();
    a.revoke_user("before").await.unwrap();
    a.revoke_token("jti-lost", now + 600).await.unwrap();
    eventually("before", || {
        vb.user_version("before") == 1
            && vb
                .check(&claims(Some("jti-lost"), None, None, None))
                .is_some()
    })
    .await;

    let (snapshots, messages) = (b.snapshots(), b.messages());
    server.psql(&db, &format!("ALTER ROLE {role} NOLOGIN"));
    let terminated = server.terminate_connections(&db);
    assert!(
        terminated >= 2,
        "both listeners were connected: {terminated}"
    );
    eventually("B notices", || !b.is_synced()).await;
    // The database loses a row (a restore from an older backup): the
    // snapshot B loads next is merged into its view, never replaces it.
    server.psql(&db, "DELETE FROM portcullis.revoked_tokens");
    a.revoke_user("mallory").await.unwrap();
    a.revoke_token("jti-missed", now + 600).await.unwrap();
    a.revoke_session("sid-missed", now + 600).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vb.user_version("mallory"), 0, "no message reached B");
    assert_eq!(vb.user_version("before"), 1, "the view keeps its state");
    assert!(vb.is_ready(), "within the staleness bound");

    server.psql(&db, &format!("ALTER ROLE {role} LOGIN"));
    assert!(
        b.wait_snapshot(snapshots, SYNC).await,
        "B reconnects by itself"
    );
    assert_eq!(vb.user_version("mallory"), 1);
    assert_eq!(
        vb.check(&claims(Some("jti-missed"), None, None, None)),
        Some("token-revoked")
    );
    assert!(vb.is_session_revoked("sid-missed"));
    assert_eq!(b.messages(), messages, "from the snapshot, not a message");
    assert_eq!(
        vb.check(&claims(Some("jti-lost"), None, None, None)),
        Some("token-revoked"),
        "a revocation the database lost stays in a view that saw it"
    );
    a.revoke_user("later").await.unwrap();
    eventually("later", || vb.user_version("later") == 1).await;
}

/// The listener's connection is its own: on an application pool of one
/// connection, the store syncs and revoke calls still get the pool's
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_takes_no_connection_from_the_application_pool() {
    let url = PgServer::shared().fresh_database();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    backend.migrate().await.unwrap();
    let store = pg_store(&backend).await;
    for i in 0..5 {
        store.revoke_user(&format!("user-{i}")).await.unwrap();
    }
    let other = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    eventually("the other instance", || {
        other.view().user_version("user-4") == 1
    })
    .await;
    assert_eq!(backend.pool().size(), 1);
}

/// B's listener's server process is frozen (`SIGSTOP`): its socket stays
/// open and nothing answers, as on a dead network path. The ping on
/// silence finds it (no answer within the backend's timeout); the listener
/// starts over on a new connection, and its snapshot brings the revocation
/// A made meanwhile (which the frozen connection never delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_listener_connection_is_found_by_the_ping_and_replaced() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let role = format!("f_{db}");
    server.psql(&db, &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
    let url_b = format!("postgres://{role}@127.0.0.1:{}/{db}", server.port());
    let a = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let b = pg_store(&pg_backend(&url_b, Duration::from_millis(500)).await).await;
    let vb = b.view();
    let pid = server.psql(
        &db,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE usename = '{role}' \
             AND application_name = 'portcullis-revocations'"
        ),
    );
    assert!(pid.parse::<u32>().is_ok(), "one listener backend: {pid:?}");
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    let (snapshots, messages) = (b.snapshots(), b.messages());
    signal("-STOP");
    let frozen = Instant::now();
    a.revoke_user("mallory").await.unwrap();
    let found = b.wait_snapshot(snapshots, SYNC).await;
    let took = frozen.elapsed();
    signal("-CONT");
    assert!(found, "the frozen connection was never replaced");
    eprintln!("frozen listener connection replaced and snapshot loaded after {took:?}");
    assert_eq!(vb.user_version("mallory"), 1);
    assert_eq!(b.messages(), messages, "from the snapshot, not a message");
    assert!(!b.is_stale(), "replaced within the staleness bound");
    a.revoke_user("later").await.unwrap();
    eventually("later", || vb.user_version("later") == 1).await;
}

/// The server stops: revoke calls fail fast as unavailable (503
/// upstream), the view goes stale past its bound and JWT requests get 503
/// (fail closed); a store started meanwhile is not ready. The server
/// restarts: the listener reconnects by itself and requests pass again;
/// a user revoked after the restart is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_the_view_goes_stale_then_recovers_by_itself() {
    const STALENESS: Duration = Duration::from_secs(1);
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let backend = pg_backend(&url, Duration::from_millis(300)).await;
    let builder = || {
        PgRevocationStore::builder(&backend)
            .ping_interval(Duration::from_millis(200))
            .max_backoff(Duration::from_millis(200))
            .max_staleness(Some(STALENESS))
    };
    let store = builder().start().unwrap();
    assert!(store.wait_synced(SYNC).await);
    let issuer = issuer();
    let app = instance(issuer.keys(), store.view()).await;
    let alice = issuer.token("alice").mint().unwrap().token;
    let mallory = issuer.token("mallory").mint().unwrap().token;
    assert_eq!(me(&app, &alice).await, StatusCode::OK);

    tokio::task::block_in_place(|| server.stop());
    let took = until(
        &app,
        &alice,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    eprintln!("server stopped: 503 after {took:?} (max_staleness {STALENESS:?})");
    assert!(store.is_stale());
    let started = Instant::now();
    let err = store.revoke_user("bob").await.unwrap_err();
    eprintln!(
        "revoke_user with the server down: {:?} after {:?}",
        err.kind(),
        started.elapsed()
    );
    assert!(err.is_unavailable(), "{err:?}");
    let late = builder().start().unwrap();
    let late_app = instance(issuer.keys(), late.view()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!late.view().is_ready());
    assert_eq!(
        me(&late_app, &alice).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "no snapshot yet: fail closed"
    );

    tokio::task::block_in_place(|| server.restart());
    let took = until(&app, &alice, StatusCode::OK, Duration::from_secs(15)).await;
    eprintln!("server restarted: 200 again after {took:?}");
    assert!(!store.is_stale());
    assert!(
        late.wait_synced(SYNC).await,
        "the late store syncs by itself"
    );
    assert_eq!(me(&late_app, &alice).await, StatusCode::OK);
    store.revoke_user("mallory").await.unwrap();
    until(
        &app,
        &mallory,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    until(
        &late_app,
        &mallory,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
}

/// Dropping the store ends its listener: its connection leaves the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_its_listener() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let listeners = || {
        server.psql(
            &db,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                 AND application_name = 'portcullis-revocations'"
            ),
        )
    };
    let backend = pg_backend(&url, TIMEOUT).await;
    let store = pg_store(&backend).await;
    let clone = store.clone();
    assert_eq!(listeners(), "1");
    drop(store);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(listeners(), "1", "a clone keeps it");
    drop(clone);
    let start = Instant::now();
    while listeners() != "0" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the listener outlived its store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// 5. Awkward ids; what the messages carry.

/// A 10 KB user id with a NUL byte and quotes, and a token id with the
/// same, are stored exactly (bytes), revoked on A and refused exactly on
/// B; an id one byte shorter is not refused. The messages carry only the
/// kind and the SHA-256 of the id, never the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_ids_are_refused_exactly_and_messages_carry_only_digests() {
    let url = PgServer::shared().fresh_database();
    let a_backend = pg_backend(&url, TIMEOUT).await;
    let a = pg_store(&a_backend).await;
    let b = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let mut probe = PgListener::connect(&url).await.unwrap();
    probe.listen(a.channel()).await.unwrap();
    assert_eq!(a.channel(), "portcullis.revocations");

    let user = format!("{}\0'\"; --{}", "u".repeat(10 * 1024), "é");
    let jti = format!("jti\0'\"{}", "j".repeat(9000));
    assert_eq!(a.revoke_user(&user).await.unwrap(), 1);
    a.revoke_token(&jti, now_secs() + 600).await.unwrap();
    assert_eq!(
        next(&mut probe).await,
        format!("u:{}", hex_sha256(user.as_bytes()))
    );
    assert_eq!(
        next(&mut probe).await,
        format!("t:{}", hex_sha256(jti.as_bytes()))
    );

    let vb = b.view();
    eventually("both on B", || {
        vb.user_version(&user) == 1 && vb.check(&claims(Some(&jti), None, None, None)).is_some()
    })
    .await;
    let near = &user[..user.len() - "é".len()];
    assert_eq!(vb.user_version(near), 0);
    assert_eq!(vb.user_version(&user.replace('\0', "")), 0);
    assert_eq!(
        vb.check(&claims(Some(&jti[..jti.len() - 1]), None, None, None)),
        None
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT user_id FROM portcullis.revoked_users")
        .fetch_one(a_backend.pool())
        .await
        .unwrap();
    assert_eq!(stored, user.as_bytes(), "stored exactly");
}

/// A revocation whose statement fails sends no message: the upsert and
/// `pg_notify` are one statement, so one transaction. (A version pushed to
/// the top of `bigint` makes the next bump fail; the next message the
/// channel carries is the next successful revocation's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revocation_sends_no_message() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let a = pg_store(&pg_backend(&url, TIMEOUT).await).await;
    let mut probe = PgListener::connect(&url).await.unwrap();
    probe.listen(a.channel()).await.unwrap();
    assert_eq!(a.revoke_user("top").await.unwrap(), 1);
    let first = probe.recv().await.unwrap();
    assert_eq!(first.payload(), format!("u:{}", hex_sha256(b"top")));

    server.psql(
        &db,
        "UPDATE portcullis.revoked_users SET version = 9223372036854775807",
    );
    let err = a.revoke_user("top").await.unwrap_err();
    eprintln!("the failed bump: {err}");
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(a.revoke_user("next").await.unwrap(), 1);
    let second = tokio::time::timeout(Duration::from_secs(5), probe.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second.payload(),
        format!("u:{}", hex_sha256(b"next")),
        "the failed revocation sent nothing"
    );
}

// ---------------------------------------------------------------------------
// The purge, and secrets.

/// `purge_expired` deletes, in batches, exactly the denylist rows that
/// both this store's clock and the database's put more than
/// `MAX_LEEWAY` + 60 s past their expiry: a store whose clock runs far
/// ahead deletes nothing the database's clock still keeps. User versions
/// are never purged. A revoke call starts the same purge in the
/// background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_only_what_both_clocks_put_past_the_keep_postgres() {
    let url = PgServer::shared().fresh_database();
    let backend = pg_backend_with(&url, TIMEOUT, NO_BACKGROUND_PURGE).await;
    let store = PgRevocationStore::builder(&backend)
        .clock(clock_ahead())
        .start()
        .unwrap();
    assert!(store.wait_synced(SYNC).await);
    let now = now_secs();
    store.revoke_token("live", now + 600).await.unwrap();
    store.revoke_user("user").await.unwrap();
    let insert = |table: &'static str, n: i32, exp: i64| {
        let pool = backend.pool().clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO portcullis.{table} (id_digest, id, expires_at) \
                 SELECT sha256(convert_to(g::text || $2, 'UTF8')), convert_to(g::text, 'UTF8'), $1 \
                 FROM generate_series(1, $3) g"
            )))
            .bind(exp * 1000)
            .bind(format!("{table}{exp}"))
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    insert("revoked_tokens", 1200, now - 400).await;
    insert("revoked_sessions", 30, now - 400).await;
    insert("revoked_tokens", 10, now - 100).await;
    let counts = || {
        let pool = backend.pool().clone();
        async move {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT count(*) FROM portcullis.revoked_tokens UNION ALL \
                 SELECT count(*) FROM portcullis.revoked_sessions UNION ALL \
                 SELECT count(*) FROM portcullis.revoked_users",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter().map(|(n,)| n).collect::<Vec<_>>()
        }
    };
    assert_eq!(store.purge_expired().await.unwrap(), 1230);
    assert_eq!(counts().await, [11, 0, 1]);
    assert_eq!(store.purge_expired().await.unwrap(), 0);

    // In the background of a revoke call (default schedule).
    let background = pg_backend(&url, TIMEOUT).await;
    let store = pg_store(&background).await;
    insert("revoked_sessions", 700, now - 400).await;
    store.revoke_session("s", now + 600).await.unwrap();
    let start = Instant::now();
    while counts().await != [11, 1, 1] {
        assert!(start.elapsed() < SYNC, "no background purge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A clock 10 000 s ahead of the system clock.
fn clock_ahead() -> SharedClock {
    Arc::new(ManualClock::new(
        u64::try_from(now_secs() + 10_000).unwrap() * 1000,
    ))
}

/// The same purge on SQLite (the database's clock is the system clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_only_what_both_clocks_put_past_the_keep_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("purge.db");
    let backend = sqlite_backend_with(&file, NO_BACKGROUND_PURGE).await;
    let store = SqliteRevocationStore::builder(&backend)
        .clock(clock_ahead())
        .start()
        .unwrap();
    assert!(store.wait_synced(SYNC).await);
    let now = now_secs();
    store.revoke_token("live", now + 600).await.unwrap();
    store.revoke_user("user").await.unwrap();
    let next_id = AtomicU32::new(0);
    let insert = |table: &'static str, count: u32, exp: i64| {
        let pool = backend.pool().clone();
        let first = next_id.fetch_add(count, Ordering::Relaxed);
        async move {
            for n in first..first + count {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO portcullis_{table} (id_digest, id, expires_at) VALUES (?1, ?2, ?3)"
                )))
                .bind(Sha256::digest(n.to_be_bytes()).to_vec())
                .bind(n.to_string().into_bytes())
                .bind(exp * 1000)
                .execute(&pool)
                .await
                .unwrap();
            }
        }
    };
    insert("revoked_tokens", 1200, now - 400).await;
    insert("revoked_sessions", 30, now - 400).await;
    insert("revoked_tokens", 10, now - 100).await;
    let counts = || {
        let pool = backend.pool().clone();
        async move {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT count(*) FROM portcullis_revoked_tokens UNION ALL \
                 SELECT count(*) FROM portcullis_revoked_sessions UNION ALL \
                 SELECT count(*) FROM portcullis_revoked_users",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter().map(|(n,)| n).collect::<Vec<_>>()
        }
    };
    assert_eq!(store.purge_expired().await.unwrap(), 1230);
    assert_eq!(counts().await, [11, 0, 1]);
    drop(store);

    // In the background of a revoke call (default schedule).
    let background = sqlite_backend(&file).await;
    let store = SqliteRevocationStore::new(&background).unwrap();
    assert!(store.wait_synced(SYNC).await);
    insert("revoked_sessions", 700, now - 400).await;
    store.revoke_session("s", now + 600).await.unwrap();
    let start = Instant::now();
    while counts().await != [11, 1, 1] {
        assert!(start.elapsed() < SYNC, "no background purge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pool's connect options hold the password (sqlx's `Debug` of them
/// shows it); the store's `Debug` never does, and its listener connects
/// with them all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_never_shows_the_password() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url);
    // Trust authentication ignores the password; the options keep it.
    let secret_url = format!(
        "postgres://portcullis:pw-s3cret@127.0.0.1:{}/{db}",
        server.port()
    );
    let backend = pg_backend(&secret_url, TIMEOUT).await;
    assert!(
        format!("{:?}", backend.pool().connect_options()).contains("pw-s3cret"),
        "the options hold it"
    );
    let store = pg_store(&backend).await;
    let builder = PgRevocationStore::builder(&backend);
    for shown in [format!("{store:?}"), format!("{builder:?}")] {
        assert!(!shown.contains("pw-s3cret"), "{shown}");
    }
    eprintln!("{store:?}");
}

/// The view is refused to layers until the first snapshot: a store on a
/// SQLite file whose tables are missing stays not ready (503) and keeps
/// trying; once the tables exist, it loads them by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_not_ready_until_its_snapshot_loads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late.db");
    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let backend = SqliteConfig::new(SqlitePool::connect_with(options).await.unwrap())
        .build()
        .unwrap();
    let store = SqliteRevocationStore::new(&backend).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.view().is_ready());
    assert!(!store.is_synced());
    backend.migrate().await.unwrap();
    assert!(store.wait_synced(SYNC).await);
    assert!(store.view().is_ready());
}

// ---------------------------------------------------------------------------
// 6. Snapshots in pages; SQLite writes that fail; restored backups.

/// 200,000 user versions (never purged), inserted by `psql` with
/// `generate_series`, load in pages of 2,000 rows, each page one statement
/// under the backend's timeout (`pg_stat_statements`: 101 reads of the
/// users' table, the last one empty, where a single statement read it
/// whole): the instance becomes ready, holds every user, and over HTTP
/// refuses the user whose key comes last (the last page) while accepting
/// a token minted at that user's version; messages flow after the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_snapshot_of_200000_users_loads_in_pages() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let backend = pg_backend_with(&url, Duration::from_millis(500), NO_BACKGROUND_PURGE).await;
    server.psql(
        &db,
        "INSERT INTO portcullis.revoked_users (user_digest, user_id, version) \
         SELECT sha256(convert_to('user-' || g, 'UTF8')), convert_to('user-' || g, 'UTF8'), \
                1 + g % 7 \
         FROM generate_series(1, 200000) AS g",
    );
    let last = server.psql(
        &db,
        "SELECT convert_from(user_id, 'UTF8') || ' ' || version \
         FROM portcullis.revoked_users ORDER BY user_digest DESC LIMIT 1",
    );
    let (last_user, last_version) = last.split_once(' ').unwrap();
    let last_version: u64 = last_version.parse().unwrap();

    server.reset_statement_stats(&db);
    let store = PgRevocationStore::builder(&backend)
        .snapshot_page(2_000)
        .max_staleness(None)
        .start()
        .unwrap();
    let start = Instant::now();
    assert!(
        store.wait_synced(Duration::from_secs(60)).await,
        "the snapshot never loaded"
    );
    eprintln!(
        "200,000 users in pages of 2,000: synced {:?} after start ({} snapshot)",
        start.elapsed(),
        store.snapshots()
    );
    let reads: Vec<_> = server
        .statement_stats(&db)
        .into_iter()
        .filter(|(_, q)| q.starts_with("SELECT") && q.contains("revoked_users"))
        .collect();
    assert_eq!(
        reads.iter().map(|(calls, _)| *calls).collect::<Vec<_>>(),
        [101],
        "the users' table read in pages: {reads:?}"
    );
    let view = store.view();
    assert!(view.is_ready());
    assert_eq!(view.len(), (0, 0, 200_000));
    assert_eq!(view.user_version(last_user), last_version);
    assert_eq!(view.user_version("user-200000"), 1 + 200_000 % 7);

    let issuer = issuer();
    let app = instance(issuer.keys(), view).await;
    let old = issuer.token(last_user).mint().unwrap().token;
    let current = issuer
        .token(last_user)
        .ver(last_version)
        .mint()
        .unwrap()
        .token;
    let stranger = issuer.token("user-0").mint().unwrap().token;
    assert_eq!(me(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &current).await, StatusCode::OK);
    assert_eq!(me(&app, &stranger).await, StatusCode::OK);
    // Messages still flow after the pages.
    store.revoke_user("user-0").await.unwrap();
    let app_view = store.view();
    eventually("user-0", || app_view.user_version("user-0") == 1).await;
}

/// A snapshot page of zero rows is refused when the store is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_page_of_zero_rows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir.path().join("zero.db")).await;
    let err = SqliteRevocationStore::builder(&backend)
        .snapshot_page(0)
        .start()
        .unwrap_err();
    assert!(
        matches!(err, portcullis_sql::RevocationStartError::SnapshotPage),
        "{err:?}"
    );
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://u@127.0.0.1:1/db")
        .unwrap();
    let pg = PgConfig::new(pool).build().unwrap();
    let err = PgRevocationStore::builder(&pg)
        .snapshot_page(0)
        .start()
        .unwrap_err();
    assert!(
        matches!(err, portcullis_sql::RevocationStartError::SnapshotPage),
        "{err:?}"
    );
}

/// SQLite: every table is read in pages of 1,000 rows along its key, the
/// users an exact multiple of the page (the last page is empty), the
/// others not; expired denylist rows stay out. The view holds every live
/// row, and the user whose key comes last is refused over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_snapshot_loads_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend_with(&dir.path().join("pages.db"), NO_BACKGROUND_PURGE).await;
    let now = now_secs();
    let mut tx = backend.pool().begin().await.unwrap();
    let rows = [
        ("revoked_tokens", 2_500, now + 3600),
        ("revoked_tokens", 10, now - 3600),
        ("revoked_sessions", 1_001, now + 3600),
    ];
    let mut n = 0u32;
    for (table, count, exp) in rows {
        for _ in 0..count {
            n += 1;
            let id = format!("id-{n}");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO portcullis_{table} (id_digest, id, expires_at) VALUES (?1, ?2, ?3)"
            )))
            .bind(Sha256::digest(id.as_bytes()).to_vec())
            .bind(id.into_bytes())
            .bind(exp * 1000)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    for u in 1..=3_000 {
        let user = format!("user-{u}");
        sqlx::query(
            "INSERT INTO portcullis_revoked_users (user_digest, user_id, version) \
             VALUES (?1, ?2, ?3)",
        )
        .bind(Sha256::digest(user.as_bytes()).to_vec())
        .bind(user.into_bytes())
        .bind(1 + u % 5)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let (last_user, last_version): (Vec<u8>, i64) = sqlx::query_as(
        "SELECT user_id, version FROM portcullis_revoked_users \
         ORDER BY user_digest DESC LIMIT 1",
    )
    .fetch_one(backend.pool())
    .await
    .unwrap();
    let last_user = String::from_utf8(last_user).unwrap();

    let store = SqliteRevocationStore::builder(&backend)
        .snapshot_page(1_000)
        .start()
        .unwrap();
    assert!(store.wait_synced(SYNC).await);
    let view = store.view();
    assert_eq!(view.len(), (2_500, 1_001, 3_000));
    assert_eq!(
        view.user_version(&last_user),
        u64::try_from(last_version).unwrap()
    );
    assert_eq!(
        view.check(&claims(Some("id-2500"), None, None, None)),
        Some("token-revoked")
    );
    assert_eq!(view.check(&claims(Some("id-2501"), None, None, None)), None);
    assert!(view.is_session_revoked("id-3511"));

    let issuer = issuer();
    let app = instance(issuer.keys(), view).await;
    let token = issuer.token(&last_user).mint().unwrap().token;
    assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED);
}

/// A SQLite pool whose writers give up on a lock after 50 ms, on `file`,
/// with the store's bound well above that: the write fails (SQLite busy),
/// it does not time out.
async fn sqlite_impatient_backend(file: &std::path::Path) -> (SqliteBackend, SqliteConnectOptions) {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_millis(50));
    let backend = SqliteConfig::new(SqlitePool::connect_with(options.clone()).await.unwrap())
        .timeout(TIMEOUT)
        .purge(NO_BACKGROUND_PURGE)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    (backend, options)
}

/// Another writer holds the SQLite file past the busy timeout: a token and
/// a session revocation fail (the caller gets the error) yet this
/// process refuses them at once, over HTTP; the file never got them
/// (refused early, never admitted). A user revocation that fails changes
/// nothing (the file numbers versions); once the file is free, the calls
/// made again succeed and the file has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_revocation_whose_write_fails_is_still_refused_by_the_process() {
    use sqlx::Connection as _;

    let dir = tempfile::tempdir().unwrap();
    let (backend, options) = sqlite_impatient_backend(&dir.path().join("busy.db")).await;
    let store = SqliteRevocationStore::new(&backend).unwrap();
    assert!(store.wait_synced(SYNC).await);
    let issuer = issuer();
    let app = instance(issuer.keys(), store.view()).await;
    let stolen = issuer.token("alice").mint().unwrap();
    let in_session = issuer.token("bob").sid("sid-1").mint().unwrap();
    let mallory = issuer.token("mallory").mint().unwrap().token;
    for t in [&stolen.token, &in_session.token, &mallory] {
        assert_eq!(me(&app, t).await, StatusCode::OK);
    }

    let mut holder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let err = store
        .revoke_token(&stolen.jti, stolen.expires_at)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = store
        .revoke_session("sid-1", in_session.expires_at)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = store.revoke_user("mallory").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(me(&app, &stolen.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &in_session.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(store.view().user_version("mallory"), 0);
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();

    let count = |table: &'static str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM portcullis_{table}"
        )))
    };
    for table in ["revoked_tokens", "revoked_sessions", "revoked_users"] {
        let n = count(table).fetch_one(&mut holder).await.unwrap();
        assert_eq!(n, 0, "{table}: the failed writes left nothing");
    }
    store
        .revoke_token(&stolen.jti, stolen.expires_at)
        .await
        .unwrap();
    store
        .revoke_session("sid-1", in_session.expires_at)
        .await
        .unwrap();
    assert_eq!(store.revoke_user("mallory").await.unwrap(), 1);
    for table in ["revoked_tokens", "revoked_sessions", "revoked_users"] {
        let n = count(table).fetch_one(&mut holder).await.unwrap();
        assert_eq!(n, 1, "{table}");
    }
    assert_eq!(me(&app, &mallory).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &stolen.token).await, StatusCode::UNAUTHORIZED);
}

/// A SQLite file restored from an older copy brings back what it held: a
/// process started on it refuses what the copy held, accepts again what
/// was revoked after the copy (lost), and a user revoked again is
/// refused again, numbered above the copy's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_restored_backup_brings_back_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.db");
    let copy = dir.path().join("copy.db");
    let now = now_secs();
    {
        let backend = sqlite_backend(&file).await;
        let store = SqliteRevocationStore::new(&backend).unwrap();
        assert!(store.wait_synced(SYNC).await);
        assert_eq!(store.revoke_user("alice").await.unwrap(), 1);
        store.revoke_token("jti-early", now + 600).await.unwrap();
        sqlx::query("VACUUM INTO ?1")
            .bind(copy.to_str().unwrap())
            .execute(backend.pool())
            .await
            .unwrap();
        assert_eq!(store.revoke_user("alice").await.unwrap(), 2);
        assert_eq!(store.revoke_user("bob").await.unwrap(), 1);
        store.revoke_token("jti-late", now + 600).await.unwrap();
        drop(store);
        backend.pool().close().await;
    }
    for leftover in ["auth.db-wal", "auth.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(leftover));
    }
    std::fs::copy(&copy, &file).unwrap();

    let store = SqliteRevocationStore::new(&sqlite_backend(&file).await).unwrap();
    assert!(store.wait_synced(SYNC).await);
    let view = store.view();
    assert_eq!(
        view.check(&claims(Some("jti-early"), None, None, None)),
        Some("token-revoked")
    );
    assert_eq!(
        view.check(&claims(Some("jti-late"), None, None, None)),
        None,
        "revoked after the copy: lost"
    );
    assert_eq!(view.user_version("alice"), 1, "the copy's version");
    assert_eq!(view.user_version("bob"), 0, "revoked after the copy: lost");
    assert_eq!(store.revoke_user("alice").await.unwrap(), 2);
    assert_eq!(store.revoke_user("bob").await.unwrap(), 1);
    let issuer = issuer();
    let app = instance(issuer.keys(), view).await;
    for user in ["alice", "bob"] {
        let token = issuer.token(user).ver(0).mint().unwrap().token;
        assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED, "{user}");
    }
}
