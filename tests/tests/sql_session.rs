//! The public session store conformance suite on `PgSessionStore` (a real
//! PostgreSQL, a fresh database per case) and `SqliteSessionStore` (a real
//! SQLite file per case); plus what only a database can get wrong: two
//! application instances (two pools) racing on one database, the
//! statements each operation costs, hostile user ids and keys, the batched
//! purge, a locked or read-only SQLite file, and a PostgreSQL server that
//! stops, restarts or drops its connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::core::{
    Clock as _, ManualClock, OpaqueToken, SharedClock, StoreErrorKind, TokenDigest,
};
use portcullis::session::testing::{T0, record};
use portcullis::session::{CapPolicy, CreateOutcome, SessionCap, SessionStore, SessionUpdate};
use portcullis_sql::sqlx::postgres::{PgPool, PgPoolOptions};
use portcullis_sql::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use portcullis_sql::sqlx::{self, Connection as _};
use portcullis_sql::{
    PgBackend, PgConfig, PgSessionStore, PurgeConfig, SqliteBackend, SqliteConfig,
    SqliteSessionStore,
};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::Owned;
use serde_json::{Value, json};

/// Generous: these tests check behaviour, not latency (the fault tests
/// use a short bound of their own).
const TIMEOUT: Duration = Duration::from_secs(2);

/// No background purge: tests that count statements or rows purge
/// explicitly.
const NO_PURGE: PurgeConfig = PurgeConfig {
    every: Duration::ZERO,
    batch: 500,
    pause: Duration::ZERO,
};

fn digest() -> TokenDigest {
    OpaqueToken::generate().unwrap().digest()
}

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

async fn pg_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .unwrap()
}

async fn pg_backend(url: &str, purge: PurgeConfig, timeout: Duration) -> PgBackend {
    let backend = PgConfig::new(pg_pool(url).await)
        .timeout(timeout)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// A store on a fresh database of the binary's shared server.
async fn pg_store(clock: SharedClock) -> PgSessionStore {
    let url = PgServer::shared().fresh_database();
    PgSessionStore::with_clock(
        &pg_backend(&url, PurgeConfig::default(), TIMEOUT).await,
        clock,
    )
}

mod postgres {
    portcullis::session::session_store_conformance!(super::pg_store);
}

fn sqlite_options(dir: &tempfile::TempDir) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(dir.path().join("sessions.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
}

async fn sqlite_backend(
    options: SqliteConnectOptions,
    purge: PurgeConfig,
    timeout: Duration,
) -> SqliteBackend {
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let backend = SqliteConfig::new(pool)
        .timeout(timeout)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// A store on a fresh file (the store keeps its directory alive).
async fn sqlite_store(clock: SharedClock) -> Owned<SqliteSessionStore> {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(sqlite_options(&dir), PurgeConfig::default(), TIMEOUT).await;
    Owned::new(
        SqliteSessionStore::with_clock(&backend, clock),
        Arc::new(dir),
    )
}

mod sqlite {
    portcullis::session::session_store_conformance!(super::sqlite_store);
}

fn set(key: &str, value: Value, now: portcullis::core::Timestamp) -> SessionUpdate {
    SessionUpdate {
        set: BTreeMap::from([(key.to_owned(), value)]),
        last_seen: now,
        idle_deadline: now + Duration::from_secs(600),
        ..SessionUpdate::default()
    }
}

/// Two application instances: two pools, two stores, one database.
async fn two_instances(clock: &Arc<ManualClock>) -> (PgSessionStore, PgSessionStore) {
    let url = PgServer::shared().fresh_database();
    let a = pg_backend(&url, NO_PURGE, TIMEOUT).await;
    let b = pg_backend(&url, NO_PURGE, TIMEOUT).await;
    (
        PgSessionStore::with_clock(&a, clock.clone()),
        PgSessionStore::with_clock(&b, clock.clone()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_writing_different_keys_keep_both() {
    let clock = manual_clock();
    let (a, b) = two_instances(&clock).await;
    let k = digest();
    let _ = a
        .create(&k, &record(None, clock.now()), None)
        .await
        .unwrap();
    let now = clock.now();
    for round in 0..100 {
        let (ua, ub) = (
            set(&format!("a{round}"), json!(round), now),
            set(&format!("b{round}"), json!([round]), now),
        );
        let (x, y) = tokio::join!(a.update(&k, &ua), b.update(&k, &ub));
        x.unwrap();
        y.unwrap();
    }
    for store in [&a, &b] {
        let rec = store.load(&k).await.unwrap().unwrap();
        for round in 0..100 {
            assert_eq!(rec.data.get(&format!("a{round}")), Some(&json!(round)));
            assert_eq!(rec.data.get(&format!("b{round}")), Some(&json!([round])));
        }
        assert_eq!(
            rec.data.get("k"),
            Some(&json!("v")),
            "the created key stays"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_an_update_on_another_instance_never_resurrects() {
    let clock = manual_clock();
    let (a, b) = two_instances(&clock).await;
    let now = clock.now();
    let mut updated_first = 0;
    for _ in 0..100 {
        let k = digest();
        let _ = a
            .create(&k, &record(Some("alice"), now), None)
            .await
            .unwrap();
        let change = set("x", json!(1), now);
        let (deleted, updated) = tokio::join!(a.delete(&k), b.update(&k, &change));
        assert!(deleted.unwrap(), "the delete found the live session");
        match updated {
            Ok(()) => updated_first += 1,
            Err(e) => assert_eq!(e.kind(), StoreErrorKind::NotFound),
        }
        assert_eq!(a.load(&k).await.unwrap(), None);
        assert_eq!(b.load(&k).await.unwrap(), None);
        assert!(matches!(
            b.touch(&k, now, now).await.map_err(|e| e.kind()),
            Err(StoreErrorKind::NotFound)
        ));
    }
    assert_eq!(a.count_for_user("alice").await.unwrap(), 0);
    assert_eq!(b.count_for_user("alice").await.unwrap(), 0);
    // Some updates came after the delete (else the race was not one).
    println!("update before delete: {updated_first} of 100");
    assert!(updated_first < 100, "no update met a deleted session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_racing_on_two_instances_never_pass_the_cap() {
    let clock = manual_clock();
    let (a, b) = two_instances(&clock).await;
    let now = clock.now();
    for round in 0..30 {
        let user = format!("user{round}");
        let policy = if round % 2 == 0 {
            CapPolicy::Refuse
        } else {
            CapPolicy::EvictOldest
        };
        let cap = SessionCap {
            max: 3,
            policy,
            replacing: None,
        };
        let logins = (0..10).map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let rec = record(Some(&user), now);
            tokio::spawn(async move { store.create(&digest(), &rec, Some(cap)).await })
        });
        let mut created = 0;
        let mut evicted = 0;
        for login in logins.collect::<Vec<_>>() {
            match login.await.unwrap().unwrap() {
                CreateOutcome::Created { evicted: e } => {
                    created += 1;
                    evicted += e.len();
                }
                CreateOutcome::LimitReached => {}
            }
        }
        assert_eq!(a.count_for_user(&user).await.unwrap(), 3, "{policy:?}");
        match policy {
            CapPolicy::Refuse => assert_eq!(created, 3),
            CapPolicy::EvictOldest => {
                assert_eq!(created, 10);
                assert_eq!(evicted, 7);
            }
        }
    }
}

/// `(calls, query)` of the statements run since `reset`, as a total and
/// the list (for messages).
fn calls(server: &PgServer, db: &str) -> (u64, Vec<(u64, String)>) {
    let stats = server.statement_stats(db);
    (stats.iter().map(|(c, _)| c).sum(), stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_is_one_select_and_each_operation_costs_what_the_docs_say() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let store =
        PgSessionStore::with_clock(&pg_backend(&url, NO_PURGE, TIMEOUT).await, clock.clone());
    let now = clock.now();
    let k = digest();
    let _ = store
        .create(&k, &record(Some("alice"), now), None)
        .await
        .unwrap();

    server.reset_statement_stats(&db);
    for _ in 0..25 {
        assert!(store.load(&k).await.unwrap().is_some());
    }
    let stats = server.statement_stats(&db);
    assert_eq!(stats.len(), 1, "one statement and nothing else: {stats:?}");
    assert_eq!(stats[0].0, 25, "{stats:?}");
    assert!(
        stats[0].1.starts_with("SELECT ") && stats[0].1.contains("id_digest = $1"),
        "{stats:?}"
    );

    let cap = |max, policy| SessionCap {
        max,
        policy,
        replacing: None,
    };
    let user = || record(Some("alice"), clock.now());
    let ops: Vec<(&str, u64)> = vec![
        ("create", 1),
        ("update", 1),
        ("touch", 1),
        ("delete", 1),
        ("list_for_user", 1),
        ("count_for_user", 1),
        ("delete_for_user", 1),
        ("create capped, below the cap", 5),
        ("create capped, evicting", 6),
        ("create capped, refused", 4),
    ];
    for (op, want) in ops {
        let target = digest();
        if op != "create" && !op.starts_with("create capped") {
            let _ = store.create(&target, &user(), None).await.unwrap();
        }
        server.reset_statement_stats(&db);
        match op {
            "create" => {
                let _ = store.create(&target, &user(), None).await.unwrap();
            }
            "update" => store
                .update(&target, &set("a", json!(1), now))
                .await
                .unwrap(),
            "touch" => store.touch(&target, now, now).await.unwrap(),
            "delete" => assert!(store.delete(&target).await.unwrap()),
            "list_for_user" => assert!(!store.list_for_user("alice").await.unwrap().is_empty()),
            "count_for_user" => assert!(store.count_for_user("alice").await.unwrap() > 0),
            "delete_for_user" => {
                assert!(store.delete_for_user("alice", None).await.unwrap() > 0);
            }
            "create capped, below the cap" => {
                let out = store
                    .create(&target, &user(), Some(cap(100, CapPolicy::Refuse)))
                    .await
                    .unwrap();
                assert!(matches!(out, CreateOutcome::Created { .. }));
            }
            "create capped, evicting" => {
                let out = store
                    .create(&target, &user(), Some(cap(1, CapPolicy::EvictOldest)))
                    .await
                    .unwrap();
                assert!(matches!(out, CreateOutcome::Created { evicted } if !evicted.is_empty()));
            }
            "create capped, refused" => {
                let out = store
                    .create(&target, &user(), Some(cap(1, CapPolicy::Refuse)))
                    .await
                    .unwrap();
                assert_eq!(out, CreateOutcome::LimitReached);
            }
            _ => unreachable!(),
        }
        let (total, stats) = calls(server, &db);
        println!("{op}: {total} statements");
        assert_eq!(total, want, "{op}: {stats:?}");
    }
}

/// User ids that a careless store would mangle or execute.
fn hostile_users() -> Vec<String> {
    vec![
        "o'brien \"the\" user".to_owned(),
        "'; DROP TABLE portcullis.sessions; --".to_owned(),
        "\"; DROP TABLE \"portcullis_sessions\"; --".to_owned(),
        "nul\0inside".to_owned(),
        "nul".to_owned(),
        "\0".to_owned(),
        "x".repeat(10 * 1024),
        "日本語 é 🦀 \u{202e}".to_owned(),
        "%00".to_owned(),
        String::new(),
    ]
}

/// Each hostile id gets two sessions, stored and found exactly; keys and
/// values with NUL and quotes round-trip.
async fn hostile_input<S: SessionStore>(store: &S, clock: &Arc<ManualClock>) {
    let users = hostile_users();
    let mut keys = BTreeMap::new();
    for user in &users {
        let mut rec = record(Some(user), clock.now());
        rec.data
            .insert("n\0ul \"key\" %00".to_owned(), json!("v\0al'ue"));
        rec.data.insert(user.clone(), json!({ "user": user }));
        rec.metadata.user_agent = Some(format!("agent\0{user}"));
        let ks = [digest(), digest()];
        for k in &ks {
            let _ = store.create(k, &rec, None).await.unwrap();
            assert_eq!(
                store.load(k).await.unwrap().as_ref(),
                Some(&rec),
                "{user:?}"
            );
        }
        store
            .update(&ks[0], &set("\0", json!("\0"), clock.now()))
            .await
            .unwrap();
        let loaded = store.load(&ks[0]).await.unwrap().unwrap();
        assert_eq!(loaded.data.get("\0"), Some(&json!("\0")));
        assert_eq!(
            loaded.data.get("n\0ul \"key\" %00"),
            Some(&json!("v\0al'ue"))
        );
        keys.insert(user.clone(), ks);
    }
    for user in &users {
        let ks = &keys[user];
        assert_eq!(store.count_for_user(user).await.unwrap(), 2, "{user:?}");
        let listed = store.list_for_user(user).await.unwrap();
        assert_eq!(listed.len(), 2, "{user:?}");
        for (k, rec) in &listed {
            assert!(ks.contains(k));
            assert_eq!(rec.user_id.as_deref(), Some(user.as_str()));
        }
    }
    // "nul" and "nul\0inside" are different users.
    assert_eq!(store.delete_for_user("nul", None).await.unwrap(), 2);
    assert_eq!(store.count_for_user("nul\0inside").await.unwrap(), 2);
    for user in &users[..3] {
        let ks = &keys[user];
        assert_eq!(store.delete_for_user(user, Some(&ks[0])).await.unwrap(), 1);
        assert!(store.load(&ks[0]).await.unwrap().is_some());
        assert!(store.load(&ks[1]).await.unwrap().is_none());
    }
    assert_eq!(store.count_for_user("nul\0inside").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_user_ids_and_keys_are_stored_and_found_exactly_on_postgres() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let store =
        PgSessionStore::with_clock(&pg_backend(&url, NO_PURGE, TIMEOUT).await, clock.clone());
    hostile_input(&store, &clock).await;
    // The table is intact: every session not deleted is still there.
    assert_eq!(
        server.psql(&db, "SELECT count(*) FROM portcullis.sessions"),
        (hostile_users().len() * 2 - 2 - 3).to_string()
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT count(*) FROM portcullis.sessions WHERE user_id = convert_to(repeat('x', 10240), 'UTF8')"
        ),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_user_ids_and_keys_are_stored_and_found_exactly_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let backend = sqlite_backend(sqlite_options(&dir), NO_PURGE, TIMEOUT).await;
    let store = SqliteSessionStore::with_clock(&backend, clock.clone());
    hostile_input(&store, &clock).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM portcullis_sessions")
        .fetch_one(backend.pool())
        .await
        .unwrap();
    assert_eq!(n, i64::try_from(hostile_users().len() * 2 - 2 - 3).unwrap());
}

/// 35 sessions that end, 5 that live; returns the live ones.
async fn expiring_and_live<S: SessionStore>(
    store: &S,
    clock: &Arc<ManualClock>,
) -> Vec<TokenDigest> {
    for i in 0..35 {
        let user = (i % 2 == 0).then_some("alice");
        let _ = store
            .create(&digest(), &record(user, clock.now()), None)
            .await
            .unwrap();
    }
    let mut live = Vec::new();
    for i in 0..5 {
        let k = digest();
        let mut rec = record((i < 3).then_some("alice"), clock.now());
        rec.idle_deadline = rec.absolute_deadline;
        let _ = store.create(&k, &rec, None).await.unwrap();
        live.push(k);
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_expired_rows_in_batches_on_postgres() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let purge = PurgeConfig {
        batch: 10,
        ..NO_PURGE
    };
    let store = PgSessionStore::with_clock(&pg_backend(&url, purge, TIMEOUT).await, clock.clone());
    let live = expiring_and_live(&store, &clock).await;
    let rows = || server.psql(&db, "SELECT count(*) FROM portcullis.sessions");

    // Ended, but within the grace: kept.
    clock.advance(Duration::from_secs(601));
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(rows(), "40");

    clock.advance(Duration::from_secs(60));
    server.reset_statement_stats(&db);
    assert_eq!(store.purge_expired().await.unwrap(), 35);
    let stats = server.statement_stats(&db);
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].0, 4, "batches of 10: 10, 10, 10, 5: {stats:?}");
    assert!(stats[0].1.contains("SKIP LOCKED"), "{stats:?}");
    assert_eq!(rows(), "5");

    assert_eq!(store.count_for_user("alice").await.unwrap(), 3);
    let mut listed: Vec<_> = store
        .list_for_user("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    listed.sort();
    let mut want = live[..3].to_vec();
    want.sort();
    assert_eq!(listed, want);
    for k in &live {
        assert!(store.load(k).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_expired_rows_in_batches_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let purge = PurgeConfig {
        batch: 10,
        ..NO_PURGE
    };
    let backend = sqlite_backend(sqlite_options(&dir), purge, TIMEOUT).await;
    let store = SqliteSessionStore::with_clock(&backend, clock.clone());
    let live = expiring_and_live(&store, &clock).await;
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM portcullis_sessions")
            .fetch_one(backend.pool())
            .await
            .unwrap()
    };
    clock.advance(Duration::from_secs(601));
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(rows().await, 40);
    clock.advance(Duration::from_secs(60));
    assert_eq!(store.purge_expired().await.unwrap(), 35);
    assert_eq!(rows().await, 5);
    assert_eq!(store.count_for_user("alice").await.unwrap(), 3);
    assert_eq!(store.list_for_user("alice").await.unwrap().len(), 3);
    for k in &live {
        assert!(store.load(k).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_starts_the_background_purge() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let purge = PurgeConfig {
        every: Duration::from_millis(1),
        batch: 7,
        pause: Duration::ZERO,
    };
    let store = PgSessionStore::with_clock(&pg_backend(&url, purge, TIMEOUT).await, clock.clone());
    let live = expiring_and_live(&store, &clock).await;
    clock.advance(Duration::from_secs(661));
    // Writes (here deletes that find nothing) start the purge, at most
    // once per `every`; it runs in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(!store.delete(&digest()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rows = server.psql(&db, "SELECT count(*) FROM portcullis.sessions");
        if rows == "5" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background purge never ran: {rows} rows"
        );
    }
    for k in &live {
        assert!(store.load(k).await.unwrap().is_some());
    }
}

/// Every call the layers make, each expected to fail unavailable.
async fn all_unavailable<S: SessionStore>(
    store: &S,
    k: &TokenDigest,
    now: portcullis::core::Timestamp,
    reads: bool,
) {
    let check = |what: &str, e: Option<portcullis::core::StoreError>| {
        let e = e.unwrap_or_else(|| panic!("{what}: succeeded against a failed database"));
        assert!(e.is_unavailable(), "{what}: {e:?}");
    };
    let cap = SessionCap {
        max: 2,
        policy: CapPolicy::EvictOldest,
        replacing: None,
    };
    check(
        "create",
        store
            .create(&digest(), &record(None, now), None)
            .await
            .err(),
    );
    check(
        "create capped",
        store
            .create(&digest(), &record(Some("alice"), now), Some(cap))
            .await
            .err(),
    );
    check(
        "update",
        store.update(k, &set("a", json!(1), now)).await.err(),
    );
    check("touch", store.touch(k, now, now).await.err());
    check("delete", store.delete(k).await.err());
    check(
        "delete_for_user",
        store.delete_for_user("alice", None).await.err(),
    );
    if reads {
        check("load", store.load(k).await.err());
        check("count_for_user", store.count_for_user("alice").await.err());
        check("list_for_user", store.list_for_user("alice").await.err());
    }
}

/// A session of alice's in a fresh SQLite file, journal mode `journal`.
async fn sqlite_with_session(
    dir: &tempfile::TempDir,
    journal: SqliteJournalMode,
    clock: &Arc<ManualClock>,
) -> TokenDigest {
    let backend =
        sqlite_backend(sqlite_options(dir).journal_mode(journal), NO_PURGE, TIMEOUT).await;
    let store = SqliteSessionStore::with_clock(&backend, clock.clone());
    let k = digest();
    let _ = store
        .create(&k, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();
    backend.pool().close().await;
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_unavailable_within_the_bound() {
    let bound = Duration::from_millis(300);
    for journal in [SqliteJournalMode::Wal, SqliteJournalMode::Delete] {
        let dir = tempfile::tempdir().unwrap();
        let clock = manual_clock();
        let k = sqlite_with_session(&dir, journal, &clock).await;
        let backend =
            sqlite_backend(sqlite_options(&dir).journal_mode(journal), NO_PURGE, bound).await;
        let store = SqliteSessionStore::with_clock(&backend, clock.clone());
        // The same without a busy timeout: SQLITE_BUSY itself.
        let eager = sqlite_backend(
            sqlite_options(&dir)
                .journal_mode(journal)
                .busy_timeout(Duration::ZERO),
            NO_PURGE,
            TIMEOUT,
        )
        .await;
        let eager = SqliteSessionStore::with_clock(&eager, clock.clone());
        // Another process's exclusive transaction (sqlx's default busy
        // timeout, 5 s, would make a writer wait past the bound).
        let mut holder =
            sqlx::SqliteConnection::connect_with(&sqlite_options(&dir).journal_mode(journal))
                .await
                .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();

        let started = Instant::now();
        // WAL: readers never wait for a writer; the rollback journal locks
        // them out too.
        let reads_fail = journal == SqliteJournalMode::Delete;
        all_unavailable(&store, &k, clock.now(), reads_fail).await;
        let calls = if reads_fail { 9 } else { 6 };
        println!("{journal:?}: {calls} calls: {:?}", started.elapsed());
        assert!(
            started.elapsed() < bound * calls + Duration::from_secs(3),
            "{journal:?}: {:?} for {calls} calls bounded by {bound:?}",
            started.elapsed()
        );
        if !reads_fail {
            assert!(store.load(&k).await.unwrap().is_some());
        }

        // With no busy timeout, SQLITE_BUSY: a backend error.
        let err = eager
            .update(&k, &set("a", json!(1), clock.now()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Backend, "{journal:?}: {err:?}");

        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        // The store serves again. (The calls that timed out were queued on
        // the connection's worker and may still run now, `delete_for_user`
        // among them, as a statement a client gave up on may still commit
        // on any database: so only a new session is checked.)
        let fresh = digest();
        let _ = store
            .create(&fresh, &record(Some("bob"), clock.now()), None)
            .await
            .unwrap();
        store
            .update(&fresh, &set("a", json!(1), clock.now()))
            .await
            .unwrap();
        assert_eq!(
            store.load(&fresh).await.unwrap().unwrap().data.get("a"),
            Some(&json!(1))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_sqlite_file_is_unavailable_for_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let k = sqlite_with_session(&dir, SqliteJournalMode::Delete, &clock).await;
    let file = dir.path().join("sessions.db");
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&file, perms).unwrap();
    // Root ignores file modes: the connection is opened read-only too, as
    // an application without write access to the file gets it.
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&file)
                .journal_mode(SqliteJournalMode::Delete)
                .read_only(true),
        )
        .await
        .unwrap();
    let backend = SqliteConfig::new(pool)
        .timeout(TIMEOUT)
        .purge(NO_PURGE)
        .build()
        .unwrap();
    let store = SqliteSessionStore::with_clock(&backend, clock.clone());
    assert!(store.load(&k).await.unwrap().is_some(), "reads still work");
    assert_eq!(store.count_for_user("alice").await.unwrap(), 1);
    all_unavailable(&store, &k, clock.now(), false).await;
    let err = store.delete(&k).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Backend, "{err:?}");
    assert!(store.load(&k).await.unwrap().is_some(), "nothing was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_is_unavailable_within_the_bound_and_loses_nothing() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let clock = manual_clock();
    let bound = Duration::from_millis(500);
    let backend = pg_backend(&url, NO_PURGE, bound).await;
    let store = PgSessionStore::with_clock(&backend, clock.clone());
    let keys: Vec<_> = (0..5).map(|_| digest()).collect();
    for k in &keys {
        let _ = store
            .create(k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
    }

    server.stop();
    let started = Instant::now();
    all_unavailable(&store, &keys[0], clock.now(), true).await;
    println!("9 calls against a stopped server: {:?}", started.elapsed());
    assert!(
        started.elapsed() < bound * 9 + Duration::from_secs(3),
        "{:?} for 9 calls bounded by {bound:?}",
        started.elapsed()
    );

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.count_for_user("alice").await {
            Ok(n) => {
                assert_eq!(n, 5, "no session was lost");
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                assert!(
                    Instant::now() < deadline,
                    "still failing after the restart: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for k in &keys {
        assert!(store.load(k).await.unwrap().is_some());
    }
    store
        .update(&keys[0], &set("after", json!(true), clock.now()))
        .await
        .unwrap();
    let _ = store
        .create(&digest(), &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_survived() {
    // With sqlx's default pool (a ping before each checkout) and with the
    // pool the docs recommend (no ping).
    for ping in [true, false] {
        let server = PgServer::shared();
        let url = server.fresh_database();
        let db = PgServer::database_of(&url).to_owned();
        let clock = manual_clock();
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .test_before_acquire(ping)
            .connect(&url)
            .await
            .unwrap();
        let backend = PgConfig::new(pool)
            .timeout(TIMEOUT)
            .purge(NO_PURGE)
            .build()
            .unwrap();
        backend.migrate().await.unwrap();
        let store = PgSessionStore::with_clock(&backend, clock.clone());
        let k = digest();
        let _ = store
            .create(&k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
        for round in 0..5 {
            // Fill the pool with idle connections, then have them all killed.
            let loads = (0..8).map(|_| store.load(&k));
            for loaded in futures_util::future::join_all(loads).await {
                assert!(loaded.unwrap().is_some());
            }
            assert!(server.terminate_connections(&db) > 0, "round {round}");
            let first = store.load(&k).await;
            if let Err(e) = &first {
                assert!(e.is_unavailable(), "{e:?}");
                assert!(
                    store.load(&k).await.unwrap().is_some(),
                    "ping {ping}, round {round}: the call after a failed one works"
                );
            } else {
                assert!(first.unwrap().is_some());
            }
            store
                .update(&k, &set(&format!("r{round}"), json!(round), clock.now()))
                .await
                .unwrap();
        }
        assert_eq!(store.load(&k).await.unwrap().unwrap().data.len(), 6);
    }
}

/// The plan PostgreSQL picks for one of the store's statements, as a
/// generic plan (the one a prepared statement settles on).
/// `pg_stat_statements` shows constants as parameters, and
/// `extract($n FROM ..)` does not parse: it becomes `date_part($n, ..)`,
/// the same call with its field as a parameter.
fn generic_plan(server: &PgServer, db: &str, query: &str) -> String {
    let mut query = query.to_owned();
    for n in 1..=9 {
        query = query.replace(&format!("extract(${n} FROM "), &format!("date_part(${n}, "));
    }
    let params = (1..=9).filter(|n| query.contains(&format!("${n}"))).count();
    let nulls = vec!["NULL"; params].join(", ");
    server.psql(
        db,
        &format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE q AS {query}; \
             EXPLAIN (COSTS OFF) EXECUTE q({nulls})"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_operations_and_the_purge_use_their_indexes() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let store =
        PgSessionStore::with_clock(&pg_backend(&url, NO_PURGE, TIMEOUT).await, clock.clone());
    // 50 000 sessions of 5 000 users, as the store writes them.
    server.psql(
        &db,
        "INSERT INTO portcullis.sessions (id_digest, user_digest, user_id, created_at, \
         last_seen, idle_deadline, absolute_deadline, metadata, data) \
         SELECT sha256(convert_to('s' || i, 'UTF8')), sha256(convert_to('u' || (i % 5000), 'UTF8')), \
         convert_to('u' || (i % 5000), 'UTF8'), 1700000000000, 1700000000000, \
         1700000000000 + i * 100, 1700003600000, '{}', '{}' \
         FROM generate_series(1, 50000) i; ANALYZE portcullis.sessions",
    );
    assert_eq!(store.count_for_user("u7").await.unwrap(), 10);

    server.reset_statement_stats(&db);
    assert_eq!(store.list_for_user("u7").await.unwrap().len(), 10);
    assert_eq!(store.count_for_user("u7").await.unwrap(), 10);
    assert_eq!(store.delete_for_user("u8", None).await.unwrap(), 10);
    let cap = SessionCap {
        max: 3,
        policy: CapPolicy::EvictOldest,
        replacing: None,
    };
    let out = store
        .create(&digest(), &record(Some("u9"), clock.now()), Some(cap))
        .await
        .unwrap();
    assert!(matches!(out, CreateOutcome::Created { evicted } if evicted.len() == 8));
    clock.advance(Duration::from_secs(60 + 1));
    assert!(store.purge_expired().await.unwrap() > 0);

    let stats = server.statement_stats(&db);
    let mut checked = 0;
    for (_, query) in &stats {
        let index = if query.contains("id_digest = ANY($1)") {
            // The cap's eviction: the primary key or the user index.
            "Index Scan"
        } else if query.contains("user_digest = $1") {
            "sessions_user"
        } else if query.contains("expires_at < LEAST($1") {
            "sessions_expiry"
        } else {
            continue;
        };
        let plan = generic_plan(server, &db, query);
        assert!(plan.contains(index), "{query}\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{query}\n{plan}");
        checked += 1;
    }
    // list, count, delete_for_user, the cap's read and its eviction, the
    // purge.
    assert_eq!(checked, 6, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlogged_sessions_survive_a_clean_stop_but_not_a_crash() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let pool = pg_pool(&url).await;
    let logged = PgConfig::new(pool.clone())
        .timeout(TIMEOUT)
        .purge(NO_PURGE)
        .build()
        .unwrap();
    let unlogged = PgConfig::new(pool)
        .schema("fast")
        .unlogged_sessions(true)
        .timeout(TIMEOUT)
        .purge(NO_PURGE)
        .build()
        .unwrap();
    logged.migrate().await.unwrap();
    unlogged.migrate().await.unwrap();
    let persistence = |table: &str| {
        format!("SELECT relpersistence FROM pg_class WHERE oid = '{table}'::regclass")
    };
    assert_eq!(server.psql(&db, &persistence("portcullis.sessions")), "p");
    assert_eq!(server.psql(&db, &persistence("fast.sessions")), "u");
    let logged = PgSessionStore::with_clock(&logged, clock.clone());
    let unlogged = PgSessionStore::with_clock(&unlogged, clock.clone());
    let k = digest();
    for store in [&logged, &unlogged] {
        let _ = store
            .create(&k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
    }

    async fn after_restart(store: &PgSessionStore, k: &TokenDigest) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.load(k).await {
                Ok(found) => return found.is_some(),
                Err(e) => {
                    assert!(e.is_unavailable() && Instant::now() < deadline, "{e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    server.stop();
    server.restart();
    assert!(after_restart(&logged, &k).await);
    assert!(
        after_restart(&unlogged, &k).await,
        "a clean stop keeps unlogged rows"
    );
    server.crash();
    server.restart();
    assert!(after_restart(&logged, &k).await);
    assert!(
        !after_restart(&unlogged, &k).await,
        "a crash empties the unlogged table"
    );
    assert_eq!(unlogged.count_for_user("alice").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_corrupt_for_its_key_only() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let pg = PgSessionStore::with_clock(&pg_backend(&url, NO_PURGE, TIMEOUT).await, clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_backend(sqlite_options(&dir), NO_PURGE, TIMEOUT).await;
    let sqlite = SqliteSessionStore::with_clock(&lite, clock.clone());
    let (good, bad) = (digest(), digest());
    for store in [&pg as &dyn SessionStore, &sqlite] {
        for k in [&good, &bad] {
            let _ = store
                .create(k, &record(Some("alice"), clock.now()), None)
                .await
                .unwrap();
        }
    }
    server.psql(
        &db,
        &format!(
            "UPDATE portcullis.sessions SET data = '{{\"k\": \"{{no json\"}}' \
             WHERE id_digest = '\\x{}'",
            bad.to_hex()
        ),
    );
    sqlx::query(
        "UPDATE portcullis_sessions SET data = '{\"k\": \"{no json\"}' WHERE id_digest = ?",
    )
    .bind(&bad.as_bytes()[..])
    .execute(lite.pool())
    .await
    .unwrap();
    for store in [&pg as &dyn SessionStore, &sqlite] {
        let err = store.load(&bad).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err:?}");
        assert!(store.load(&good).await.unwrap().is_some());
        let listed = store.list_for_user("alice").await.unwrap();
        assert_eq!(listed.len(), 1, "the unreadable session is not listed");
        assert_eq!(listed[0].0, good);
        assert!(store.delete(&bad).await.unwrap(), "it can still be deleted");
        assert_eq!(store.count_for_user("alice").await.unwrap(), 1);
    }
}

/// Create-if-absent: a live holder of the key is a conflict, an expired
/// one (not yet purged) is replaced, with and without a cap.
async fn expired_holder_replaced<S: SessionStore>(store: &S, clock: &Arc<ManualClock>) {
    let cap = SessionCap {
        max: 1,
        policy: CapPolicy::Refuse,
        replacing: None,
    };
    for cap in [None, Some(cap)] {
        let k = digest();
        let _ = store
            .create(&k, &record(Some("old"), clock.now()), cap)
            .await
            .unwrap();
        let live = store
            .create(&k, &record(Some("new"), clock.now()), cap)
            .await;
        assert_eq!(live.unwrap_err().kind(), StoreErrorKind::Conflict);
        clock.advance(Duration::from_secs(601));
        let fresh = record(Some("new"), clock.now());
        assert!(matches!(
            store.create(&k, &fresh, cap).await.unwrap(),
            CreateOutcome::Created { .. }
        ));
        assert_eq!(store.load(&k).await.unwrap(), Some(fresh));
        assert_eq!(store.count_for_user("old").await.unwrap(), 0);
        assert_eq!(store.count_for_user("new").await.unwrap(), 1);
        assert_eq!(store.delete_for_user("new", None).await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holder_of_a_key_is_replaced() {
    let clock = manual_clock();
    let pg = pg_store(clock.clone()).await;
    expired_holder_replaced(&pg, &clock).await;
    let sqlite = sqlite_store(clock.clone()).await;
    expired_holder_replaced(&sqlite, &clock).await;
}

/// PostgreSQL's own `lock_timeout`, set by the application on its pool,
/// answers as a timeout (503), not a backend failure: an update waiting
/// for a row another transaction holds gives up when the server says so,
/// and the row is intact afterwards.
#[tokio::test]
async fn a_server_side_lock_timeout_is_a_timeout() {
    use portcullis_sql::sqlx::postgres::PgConnectOptions;
    use std::str::FromStr as _;

    let clock = manual_clock();
    let url = PgServer::shared().fresh_database();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("lock_timeout", "100ms")]);
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(options)
        .await
        .unwrap();
    let backend = PgConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    backend.migrate().await.unwrap();
    let store = PgSessionStore::with_clock(&backend, clock.clone());
    let k = digest();
    let _ = store
        .create(&k, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();

    // Another client holds every session row.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM portcullis.sessions FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .update(&k, &set("a", json!(1), clock.now()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Timeout, "{err:?}");
    assert!(
        started.elapsed() < TIMEOUT,
        "the server's lock_timeout answered, not the client's bound"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    store
        .update(&k, &set("a", json!(2), clock.now()))
        .await
        .unwrap();
    let got = store.load(&k).await.unwrap().unwrap();
    assert_eq!(got.data.get("a"), Some(&json!(2)));
}

/// An instance whose clock was set back a day meets a session that ended
/// 23 h ago by the database's clock (no purge ran since): `update` and
/// `touch` change nothing (not found, the deadlines stay where they were)
/// and `load` does not serve it, though by the instance's clock it is
/// live. The day is simulated by moving the row's times a day back, as if
/// a correct clock had written it a day ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_neither_updates_nor_touches_a_session_that_ended_a_day_ago() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let real = portcullis::core::SystemClock.now();
    let clock = Arc::new(ManualClock::new(real.millis()));
    let store =
        PgSessionStore::with_clock(&pg_backend(&url, NO_PURGE, TIMEOUT).await, clock.clone());
    let key = digest();
    assert!(matches!(
        store
            .create(&key, &record(Some("alice"), real), None)
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
    let shift = Duration::from_secs(24 * 3600).as_millis();
    server.psql(
        &db,
        &format!(
            "UPDATE portcullis.sessions SET created_at = created_at - {shift}, \
             last_seen = last_seen - {shift}, idle_deadline = idle_deadline - {shift}, \
             absolute_deadline = absolute_deadline - {shift}"
        ),
    );
    let deadlines = "SELECT idle_deadline || ' ' || absolute_deadline FROM portcullis.sessions";
    let before = server.psql(&db, deadlines);
    let back =
        portcullis::core::Timestamp::from_millis(real.millis() - u64::try_from(shift).unwrap());
    clock.set(back + Duration::from_secs(60));

    let err = store
        .update(&key, &set("k", json!("new"), clock.now()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotFound, "updated");
    let err = store
        .touch(&key, clock.now(), clock.now() + Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotFound, "touched");
    assert_eq!(server.psql(&db, deadlines), before, "the row changed");
    assert!(store.load(&key).await.unwrap().is_none(), "served");
}

/// Loads run on the store's own connections (`read_connections`), beside
/// the pool: with the pool's only connection held elsewhere, a load still
/// answers; with `read_connections(0)` it waits for the pool and times out.
/// Both count one statement per load.
#[tokio::test]
async fn loads_use_the_stores_own_connections() {
    let clock = manual_clock();
    let url = PgServer::shared().fresh_database();
    for own in [2, 0] {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(1))
            .test_before_acquire(false)
            .connect(&url)
            .await
            .unwrap();
        let backend = PgConfig::new(pool.clone())
            .timeout(Duration::from_millis(300))
            .read_connections(own)
            .build()
            .unwrap();
        backend.migrate().await.unwrap();
        let store = PgSessionStore::with_clock(&backend, clock.clone());
        let k = digest();
        let _ = store
            .create(&k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
        let held = pool.acquire().await.unwrap();
        let loaded = store.load(&k).await;
        if own > 0 {
            assert!(loaded.unwrap().is_some(), "own connections serve the load");
        } else {
            assert_eq!(
                loaded.unwrap_err().kind(),
                StoreErrorKind::Timeout,
                "through the pool, the load waits for its only connection"
            );
        }
        drop(held);
        assert!(store.load(&k).await.unwrap().is_some());
    }
}

/// Loads that wait for one of the store's own connections share one
/// statement (`id_digest = ANY($1)`), and each still gets exactly its own
/// row: live sessions their record, a session deleted on another instance
/// before the loads began, an expired one and a key never stored nothing.
/// Loads dropped half-way (their request cancelled) leave no other load
/// waiting: the loads they had taken are answered by the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_share_a_statement_and_each_gets_its_own_row() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = manual_clock();
    let backend = PgConfig::new(pg_pool(&url).await)
        .timeout(TIMEOUT)
        .purge(NO_PURGE)
        .read_connections(1)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    let store = PgSessionStore::with_clock(&backend, clock.clone());
    let other =
        PgSessionStore::with_clock(&pg_backend(&url, NO_PURGE, TIMEOUT).await, clock.clone());
    let now = clock.now();

    // 40 live sessions, 5 of them deleted through the other instance, 5
    // that ended before now, and 10 keys never stored.
    let mut expect: Vec<(TokenDigest, Option<String>)> = Vec::new();
    for i in 0..40 {
        let k = digest();
        let user = format!("user-{i}");
        let _ = store
            .create(&k, &record(Some(&user), now), None)
            .await
            .unwrap();
        if i < 5 {
            other.delete(&k).await.unwrap();
            expect.push((k, None));
        } else {
            expect.push((k, Some(user)));
        }
    }
    for _ in 0..5 {
        let k = digest();
        let mut ended = record(Some("ended"), now - Duration::from_secs(7200));
        ended.idle_deadline = now - Duration::from_secs(1);
        let _ = store.create(&k, &ended, None).await;
        expect.push((k, None));
    }
    for _ in 0..10 {
        expect.push((digest(), None));
    }
    let expect = Arc::new(expect);

    server.reset_statement_stats(&db);
    let loads = 400;
    let mut tasks = Vec::new();
    for i in 0..loads {
        let (store, expect) = (store.clone(), Arc::clone(&expect));
        tasks.push(tokio::spawn(async move {
            let (k, want) = &expect[i % expect.len()];
            let got = store.load(k).await.unwrap().and_then(|r| r.user_id);
            assert_eq!(&got, want, "load {i}");
        }));
    }
    // Every fifth load of a second wave is cancelled at a random point.
    let mut cancelled = Vec::new();
    for i in 0..loads / 5 {
        let (store, expect) = (store.clone(), Arc::clone(&expect));
        cancelled.push(tokio::spawn(async move {
            let (k, _) = &expect[i % expect.len()];
            let _ = store.load(k).await;
        }));
    }
    for (i, t) in cancelled.iter().enumerate() {
        if i % 2 == 0 {
            tokio::task::yield_now().await;
        }
        t.abort();
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("every load answered");

    let stats = server.statement_stats(&db);
    let statements: u64 = stats.iter().map(|(n, _)| n).sum();
    assert!(
        stats.iter().any(|(_, q)| q.contains("ANY($1)")),
        "no shared statement ran: {stats:?}"
    );
    assert!(
        statements < loads as u64,
        "{statements} statements for {loads} loads: {stats:?}"
    );
    assert!(
        stats.iter().all(|(_, q)| q.starts_with("SELECT ")),
        "loads only read: {stats:?}"
    );
    // Alone, a load still runs the single-key statement.
    server.reset_statement_stats(&db);
    assert!(store.load(&expect[10].0).await.unwrap().is_some());
    let stats = server.statement_stats(&db);
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert!(stats[0].1.contains("id_digest = $1"), "{stats:?}");
}
