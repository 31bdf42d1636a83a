//! Attacks on the SQL stores and their configuration: connection strings
//! that must never print their password, hostile schema and table names,
//! notifications forged on the revocation channel by any role of the
//! database, instances whose clocks jumped (ahead: purging what the other
//! instances still serve; back: serving what ended long ago), and a
//! revocation whose statement timed out behind a lock (SQLite, and
//! PostgreSQL for comparison). Each runs on real parts: a real PostgreSQL
//! (one shared server, a fresh database per case) and real SQLite files.
//! Every test runs in CI; none is ignored.

use std::time::Duration;

use portcullis::core::{Clock as _, ManualClock, OpaqueToken, SystemClock};
use portcullis::jwt::revocation::RevocationStore as _;
use portcullis::session::SessionStore as _;
use portcullis::session::testing::record;
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::sqlx::sqlite::SqlitePoolOptions;
use portcullis_sql::{
    Database, DatabaseUrl, PgBackend, PgConfig, PgRevocationStore, PgSessionStore, PurgeConfig,
    SqliteConfig,
};
use portcullis_tests::pg_harness::PgServer;
use sha2::{Digest as _, Sha256};

/// Generous: these tests check outcomes, not latency.
const TIMEOUT: Duration = Duration::from_secs(2);

/// No background purge: the tests purge explicitly.
const NO_PURGE: PurgeConfig = PurgeConfig {
    every: Duration::ZERO,
    batch: 500,
    pause: Duration::ZERO,
};

/// A password as an operator would type it.
const PASSWORD: &str = "hunter2";

async fn pg_backend(url: &str) -> PgBackend {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool)
        .timeout(TIMEOUT)
        .purge(NO_PURGE)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every way a configured URL reaches a log: its `Display` and `Debug`,
/// and the error `Database::connect` answers for it.
fn printed(url: &DatabaseUrl) -> Vec<String> {
    let mut out = vec![url.to_string(), format!("{url:?}")];
    if let Err(e) = Database::connect(url) {
        out.push(e.to_string());
        out.push(format!("{e:?}"));
    }
    out
}

// ---------------------------------------------------------------------------
// 1. Connection strings.

/// The redaction that must hold: a password of plain characters in the
/// user-info, in the query, or in both, never prints.
#[tokio::test]
async fn passwords_in_the_user_info_or_the_query_never_print() {
    for raw in [
        format!("postgres://app:{PASSWORD}@db.internal:5432/app"),
        format!("postgresql://app:{PASSWORD}@db.internal/app?sslmode=require"),
        format!("postgres://db.internal/app?user=app&password={PASSWORD}"),
        format!("postgres://app:{PASSWORD}@db.internal/app?password={PASSWORD}"),
        // An `@` in the password: everything up to the last one is hidden.
        format!("postgres://app:{PASSWORD}@x@db.internal/app"),
        // A `#` or a `/` in the password.
        format!("postgres://app:{PASSWORD}#1@db.internal/app"),
        format!("postgres://app:{PASSWORD}/1@db.internal/app"),
        format!("sqlite://auth.db?key={PASSWORD}"),
    ] {
        let url = DatabaseUrl::new(raw.clone()).unwrap();
        for text in printed(&url) {
            assert!(!text.contains(PASSWORD), "{raw:?} printed as {text:?}");
        }
    }
}

/// A password holding a raw `?` (operators paste passwords unencoded) is
/// printed up to that `?`: the redaction cuts the query at the first `?`
/// before it looks for the user-info, finds no `@` left, and keeps the
/// rest as it is (`postgres://app:hunter2?REDACTED`). The template
/// binaries print the URL this way when the database does not answer.
#[tokio::test]
async fn a_password_holding_a_question_mark_never_prints() {
    let raw = format!("postgres://app:{PASSWORD}?x@db.internal/app");
    let url = DatabaseUrl::new(raw).unwrap();
    for text in printed(&url) {
        assert!(!text.contains(PASSWORD), "printed as {text:?}");
    }
}

/// A libpq keyword/value string (`host=... password=...`), a common
/// `DATABASE_URL` mistake, is refused (good), but the refusal carries the
/// whole string, password included: `redact_url` finds neither `://`
/// nor `?` and returns its input. The templates print that error at
/// start.
#[tokio::test]
async fn a_keyword_connection_string_is_refused_without_its_password() {
    for raw in [
        format!("host=db.internal user=app password={PASSWORD} dbname=app"),
        format!("postgres:app:{PASSWORD}@db.internal/app"),
        format!("mysql:app:{PASSWORD}@db.internal/app"),
    ] {
        let texts = match DatabaseUrl::new(raw.clone()) {
            Err(e) => vec![e.to_string(), format!("{e:?}")],
            Ok(url) => printed(&url),
        };
        for text in texts {
            assert!(!text.contains(PASSWORD), "{raw:?} printed as {text:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Names from configuration.

/// Schema and table-prefix values that would end the quoted identifier,
/// change case, exceed PostgreSQL's 63 bytes or smuggle a statement are
/// refused when the backend is built, before any SQL is rendered.
#[tokio::test]
async fn hostile_schema_and_prefix_names_are_refused_at_build() {
    let hostile = [
        "x\"; DROP SCHEMA public CASCADE; --",
        "x\" ",
        "Portcullis",
        "a b",
        "a-b",
        "a.b",
        "é",
        "a\0b",
        "1abc",
        "",
        &"a".repeat(64),
    ];
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://app@127.0.0.1:1/app")
        .unwrap();
    for name in hostile {
        assert!(
            PgConfig::new(pool.clone()).schema(name).build().is_err(),
            "schema {name:?} accepted"
        );
        if !name.is_empty() {
            assert!(
                PgConfig::new(pool.clone())
                    .table_prefix(name)
                    .build()
                    .is_err(),
                "prefix {name:?} accepted"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlitePoolOptions::new()
        .connect_lazy(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("a.db").display()
        ))
        .unwrap();
    for name in hostile.iter().filter(|n| !n.is_empty()) {
        assert!(
            SqliteConfig::new(sqlite.clone())
                .table_prefix(*name)
                .build()
                .is_err(),
            "SQLite prefix {name:?} accepted"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. The revocation channel.

/// `NOTIFY` has no privileges: any role that can connect to the database
/// can send on the stores' channel. Forged messages (garbage, a digest
/// with no row, a well-formed digest of a user nobody revoked, a payload
/// near PostgreSQL's limit) change nothing in the view and do not break
/// the listener: a real revocation made afterwards still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_change_nothing_and_the_listener_keeps_up() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let a = PgRevocationStore::new(&pg_backend(&url).await).unwrap();
    let b = PgRevocationStore::new(&pg_backend(&url).await).unwrap();
    assert!(a.wait_synced(Duration::from_secs(10)).await);
    assert!(b.wait_synced(Duration::from_secs(10)).await);
    let channel = b.channel().replace('\'', "''");
    let alice = hex_sha256(b"alice");
    let forged = [
        "garbage".to_owned(),
        format!("u:{alice}"),
        format!("t:{alice}"),
        format!("s:{alice}"),
        format!("u:{}", alice.to_uppercase()),
        format!("u:{alice}:99"),
        format!("u:{}", "0".repeat(7000)),
        "'); DROP TABLE x; --".replace('\'', "''"),
    ];
    let sql: String = forged
        .iter()
        .map(|p| format!("SELECT pg_notify('{channel}', '{p}');"))
        .collect();
    server.psql(&db, &sql);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while b.messages() < forged.len() as u64 {
        assert!(
            std::time::Instant::now() < until,
            "{} of {}",
            b.messages(),
            forged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = b.view();
    assert!(view.is_ready(), "forged messages made the view stale");
    assert_eq!(view.user_version("alice"), 0);
    assert!(!view.is_session_revoked("alice"));
    assert_eq!(view.len(), (0, 0, 0), "forged messages reached the view");

    a.revoke_user("mallory").await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while b.view().user_version("mallory") == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the real revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// 4. Clocks.

/// Two instances share one database; B's clock has jumped a year ahead (a
/// bad NTP answer, a VM restored with a wrong clock). B's purge deletes
/// every session it judges ended more than 60 s ago by its own clock
/// alone, which is every session A still serves: one bad clock logs out
/// every user of every instance, for good. The revocation stores bound
/// their purge by the earlier of the store's clock and the database's for
/// this reason, and on Redis a key is forgotten only by Redis' own TTL
/// ("what the stores forget never hangs on one instance's clock"); the
/// session store (and the refresh store's background purge,
/// `clock.now() - 60 s`) do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_jumped_ahead_purges_nothing_live() {
    let url = PgServer::shared().fresh_database();
    let now = SystemClock.now();
    let clock_a = std::sync::Arc::new(ManualClock::new(now.millis()));
    let clock_b = std::sync::Arc::new(ManualClock::new(
        (now + Duration::from_secs(365 * 24 * 3600)).millis(),
    ));
    let a = PgSessionStore::with_clock(&pg_backend(&url).await, clock_a);
    let b = PgSessionStore::with_clock(&pg_backend(&url).await, clock_b);
    let key = OpaqueToken::generate().unwrap().digest();
    let rec = record(Some("alice"), now);
    assert!(matches!(
        a.create(&key, &rec, None).await.unwrap(),
        portcullis::session::CreateOutcome::Created { .. }
    ));
    assert!(a.load(&key).await.unwrap().is_some());

    let purged = b.purge_expired().await.unwrap();
    assert!(
        a.load(&key).await.unwrap().is_some(),
        "A's live session was purged by B ({purged} rows)"
    );
}

/// The other way round: the only instance has its clock set back by a
/// day (a VM restored from a snapshot, a forged NTP answer). A session
/// that ended a day ago by every other clock (the database's included) is
/// still in the table when no purge has run since it ended (the
/// background purge starts only from writes, at most once a minute by
/// default: a quiet night leaves every session that ended in it), and
/// only an instance's purge by its own clock ever deletes a row; this
/// instance's clock says it is live, so it is served again, and its purge
/// keeps it. On Redis the key would be gone 60 s after its end, counted by
/// Redis itself, whatever the instance's clock says ("what the stores
/// forget never hangs on one instance's clock"). The day is simulated by
/// moving the row's deadlines a day back, as if it had been written a
/// day ago by a correct clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_does_not_revive_a_session_that_ended_a_day_ago() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let day = Duration::from_secs(24 * 3600);
    let real = SystemClock.now();
    let clock = std::sync::Arc::new(ManualClock::new(real.millis()));
    let store = PgSessionStore::with_clock(&pg_backend(&url).await, clock.clone());
    let key = OpaqueToken::generate().unwrap().digest();
    assert!(matches!(
        store
            .create(&key, &record(Some("alice"), real), None)
            .await
            .unwrap(),
        portcullis::session::CreateOutcome::Created { .. }
    ));
    // Written a day ago: it ended 23 h ago (idle 10 min, absolute 1 h).
    let shift = day.as_millis();
    server.psql(
        &db,
        &format!(
            "UPDATE portcullis.sessions SET created_at = created_at - {shift}, \
             last_seen = last_seen - {shift}, idle_deadline = idle_deadline - {shift}, \
             absolute_deadline = absolute_deadline - {shift}"
        ),
    );
    assert!(
        store.load(&key).await.unwrap().is_none(),
        "ended by the right clock"
    );
    // The clock is set back a day.
    clock.set(portcullis::core::Timestamp::from_millis(
        real.millis() - u64::try_from(shift).unwrap(),
    ));
    let _ = store.purge_expired().await.unwrap();
    assert!(
        store.load(&key).await.unwrap().is_none(),
        "a session that ended 23 h ago is served again"
    );
}

// ---------------------------------------------------------------------------
// 5. A revocation that times out on SQLite.

/// The SQLite file is locked by another writer (a backup, a second
/// process) for longer than the store's bound but less than the
/// connection's busy timeout. `revoke_token` and `revoke_user` answer
/// "timeout", but their statements are still queued on sqlx's SQLite
/// worker thread, which runs them once the lock is released: the
/// revocations commit to the file. The process's view must hold them all
/// the same (the store gives the view each revocation before it commits),
/// or the file would say "revoked" while the view serves the token and the
/// user's old tokens until the process restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_revocation_that_timed_out_still_reaches_the_view() {
    use portcullis_sql::SqliteRevocationStore;
    use portcullis_sql::sqlx::Connection as _;
    use portcullis_sql::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("auth.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let backend = SqliteConfig::new(SqlitePool::connect_with(options.clone()).await.unwrap())
        .timeout(Duration::from_millis(300))
        .purge(NO_PURGE)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    let store = SqliteRevocationStore::new(&backend).unwrap();
    assert!(store.wait_synced(Duration::from_secs(10)).await);

    let mut holder = portcullis_sql::sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    portcullis_sql::sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let exp = i64::try_from(SystemClock.now().secs()).unwrap() + 3600;
    let err = store.revoke_token("stolen-jti", exp).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = store.revoke_user("mallory").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    portcullis_sql::sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .unwrap();

    // The queued statements run once the lock is gone.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (tokens, users): (i64, i64) = portcullis_sql::sqlx::query_as(
            "SELECT (SELECT count(*) FROM portcullis_revoked_tokens), \
                    (SELECT count(*) FROM portcullis_revoked_users)",
        )
        .fetch_one(&mut holder)
        .await
        .unwrap();
        if tokens == 1 && users == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the timed-out revocations never committed ({tokens}, {users})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = store.view();
    assert_eq!(
        (view.len().0, view.user_version("mallory")),
        (1, 1),
        "committed to the file, absent from the view that checks every JWT"
    );
}

/// The same on PostgreSQL is defended: a revocation whose statement waits
/// on a lock past the store's bound answers "timeout"; when the statement
/// had already been sent whole (prepared on that connection before), it
/// still runs once the lock is released, and its `pg_notify` (in the same
/// statement) brings it to every instance's view, this one's included.
/// (On a connection's first use, sqlx waits for the prepare's answer
/// before it sends the execution: a timeout there leaves nothing behind.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_revocation_that_timed_out_still_reaches_the_views() {
    use portcullis_sql::sqlx::Connection as _;

    let url = PgServer::shared().fresh_database();
    // One connection: the warm-up below prepares the statements on it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&url)
        .await
        .unwrap();
    let short = PgConfig::new(pool)
        .timeout(Duration::from_millis(300))
        .purge(NO_PURGE)
        .build()
        .unwrap();
    short.migrate().await.unwrap();
    let a = PgRevocationStore::new(&short).unwrap();
    let b = PgRevocationStore::new(&pg_backend(&url).await).unwrap();
    assert!(a.wait_synced(Duration::from_secs(10)).await);
    assert!(b.wait_synced(Duration::from_secs(10)).await);
    let exp = i64::try_from(SystemClock.now().secs()).unwrap() + 3600;
    a.revoke_token("warm-up", exp).await.unwrap();
    assert_eq!(a.revoke_user("mallory").await.unwrap(), 1);

    let mut holder = portcullis_sql::sqlx::PgConnection::connect(&url)
        .await
        .unwrap();
    portcullis_sql::sqlx::raw_sql(
        "BEGIN; LOCK TABLE portcullis.revoked_tokens, portcullis.revoked_users \
         IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    // The pool's one connection then waits for the answer: one call.
    let err = a.revoke_token("stolen-jti", exp).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    portcullis_sql::sqlx::raw_sql("COMMIT")
        .execute(&mut holder)
        .await
        .unwrap();

    // What the database holds once the queued statements ran...
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tokens: i64 =
            portcullis_sql::sqlx::query_scalar("SELECT count(*) FROM portcullis.revoked_tokens")
                .fetch_one(&mut holder)
                .await
                .unwrap();
        if tokens == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the timed-out revocation never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... every view comes to hold.
    for store in [&a, &b] {
        loop {
            let view = store.view();
            if view.len().0 == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "a view never saw the committed revocation: {:?}",
                view.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
