//! Attacks on `PgSessionStore`'s shared loads (loads waiting for one of
//! the store's own connections answered together by one
//! `id_digest = ANY($1)` statement), on a real PostgreSQL: loads whose
//! statements stall behind a table lock held by another client, loads
//! cancelled half-way (their requests gone), duplicate keys and keys of
//! deleted, expired and never stored sessions in one batch. Each test
//! proves a defence holds; the defects they found first are fixed.
//!
//! The stalls are built, not timed: another connection holds an `ACCESS
//! EXCLUSIVE` lock on the sessions table, so every load statement waits
//! in PostgreSQL until it is released; the test watches
//! `pg_stat_activity` to know which statements are waiting.

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::{Clock as _, ManualClock, OpaqueToken, TokenDigest};
use portcullis::session::SessionStore;
use portcullis::session::testing::{T0, record};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::sqlx::{self, Connection as _, PgConnection};
use portcullis_sql::{PgConfig, PgSessionStore, PurgeConfig};
use portcullis_tests::pg_harness::PgServer;
use tokio::task::JoinHandle;

/// Long enough that no load in these tests times out: the stalls end
/// when the test releases the lock.
const TIMEOUT: Duration = Duration::from_secs(60);

const NO_PURGE: PurgeConfig = PurgeConfig {
    every: Duration::ZERO,
    batch: 500,
    pause: Duration::ZERO,
};

fn digest() -> TokenDigest {
    OpaqueToken::generate().unwrap().digest()
}

struct Setup {
    server: &'static PgServer,
    url: String,
    db: String,
    clock: Arc<ManualClock>,
    /// The store under attack: two connections of its own for loads.
    store: PgSessionStore,
    /// Another application instance on the same database.
    other: PgSessionStore,
}

async fn setup() -> Setup {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let clock = Arc::new(ManualClock::new(T0));
    let backend = |own: usize| {
        let url = url.clone();
        async move {
            let pool = PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .connect(&url)
                .await
                .unwrap();
            let backend = PgConfig::new(pool)
                .timeout(TIMEOUT)
                .purge(NO_PURGE)
                .read_connections(own)
                .build()
                .unwrap();
            backend.migrate().await.unwrap();
            backend
        }
    };
    let store = PgSessionStore::with_clock(&backend(2).await, clock.clone());
    let other = PgSessionStore::with_clock(&backend(0).await, clock.clone());
    Setup {
        server,
        url,
        db,
        clock,
        store,
        other,
    }
}

impl Setup {
    /// A live session of `user`.
    async fn session(&self, user: &str) -> TokenDigest {
        let k = digest();
        let _ = self
            .store
            .create(&k, &record(Some(user), self.clock.now()), None)
            .await
            .unwrap();
        k
    }

    /// Another client takes an `ACCESS EXCLUSIVE` lock on the sessions
    /// table and keeps it until the connection is rolled back.
    async fn lock_table(&self) -> PgConnection {
        let mut holder = PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::query("LOCK TABLE portcullis.sessions IN ACCESS EXCLUSIVE MODE")
            .execute(&mut holder)
            .await
            .unwrap();
        holder
    }

    /// Statements waiting for a lock whose text contains `needle`.
    fn waiting(&self, needle: &str) -> u32 {
        self.server
            .psql(
                &self.db,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock' \
                     AND query LIKE '%{needle}%'"
                ),
            )
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits (10 s at most) until at least `n` statements containing
    /// `needle` wait for the lock.
    async fn until_waiting(&self, needle: &str, n: u32) {
        for _ in 0..500 {
            if self.waiting(needle) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{n} statements with {needle:?} never waited for the lock");
    }

    /// A load of `k` in its own task (a request), answering its user.
    fn load(&self, k: TokenDigest) -> JoinHandle<Option<String>> {
        let store = self.store.clone();
        tokio::spawn(async move { store.load(&k).await.unwrap().and_then(|r| r.user_id) })
    }
}

/// Lets the tasks just spawned reach the store and queue for a connection
/// (in spawn order) before the next step. The test's assertions never
/// depend on this being long enough: a slow machine only makes batches
/// smaller.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// User plus system CPU time this process has used, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux ABI in use.
    Duration::from_millis(ticks * 10)
}

/// The loads of one batch whose statement stalls, with a connection of the
/// store free and nobody else waiting, must wait for their answer, not
/// spin. (A load whose key another load's batch had taken once polled the
/// free connection, found the queue empty, put the connection back and
/// looped at once, for as long as the batch's statement took: a core burnt
/// per such load while PostgreSQL is slow, a lock, a checkpoint, a network
/// stall, up to the store's timeout, starving every other request of the
/// process exactly when the database is under pressure.)
///
/// Built with two connections: loads 0 and 1 stall alone on both; loads
/// 2, 3 and 4 queue. Load 0's request is cancelled: load 2 takes its
/// connection and a share of two (itself and load 3), which stalls too.
/// Load 4's request is cancelled while it queues, then load 1's: load 3,
/// whose answer is due from load 2's stalled statement, gets the free
/// connection and an empty queue. Over the next second the process must
/// stay nearly idle, as it is (the control) while both connections stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waiting_on_a_stalled_batch_does_not_spin() {
    let s = setup().await;
    let keys = [
        s.session("u0").await,
        s.session("u1").await,
        s.session("u2").await,
        s.session("u3").await,
        s.session("u4").await,
    ];
    let mut holder = s.lock_table().await;
    let t0 = s.load(keys[0]);
    s.until_waiting("id_digest = $1", 1).await;
    let t1 = s.load(keys[1]);
    s.until_waiting("id_digest = $1", 2).await;
    let t2 = s.load(keys[2]);
    settle().await;
    let t3 = s.load(keys[3]);
    settle().await;
    let t4 = s.load(keys[4]);
    settle().await;
    t0.abort();
    s.until_waiting("ANY($1)", 1).await;
    t4.abort();
    settle().await;
    // The control: with both connections stalled, the process is idle.
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cpu_time().saturating_sub(before);
    assert!(idle < Duration::from_millis(150), "control: {idle:?}");
    t1.abort();
    settle().await;

    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time().saturating_sub(before);

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(t2.await.unwrap().as_deref(), Some("u2"));
    assert_eq!(t3.await.unwrap().as_deref(), Some("u3"));
    assert!(
        used < Duration::from_millis(150),
        "the process used {used:?} of CPU in one second of waiting for a stalled statement"
    );
}

/// A stalled batch whose runner is cancelled strands nobody, and every
/// load gets exactly its own answer: the same key loaded three times in
/// one batch (each gets the row), a session deleted on another instance
/// before its load was asked, a session that ended by the store's clock,
/// a key never stored. Two loads hold both connections behind the lock;
/// eight more queue; the first two requests are cancelled (their
/// connections go to the queue in shares), then a load that runs a batch
/// for others is cancelled too. When the lock goes, every remaining load
/// is answered, right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_runners_strand_no_load_and_each_gets_its_own_row() {
    let s = setup().await;
    let blockers = [s.session("b0").await, s.session("b1").await];
    let shared = s.session("shared").await;
    let deleted = s.session("deleted").await;
    s.other.delete(&deleted).await.unwrap();
    let ended = digest();
    let mut rec = record(Some("ended"), s.clock.now() - Duration::from_secs(3000));
    rec.idle_deadline = s.clock.now() + Duration::from_secs(1);
    let _ = s.store.create(&ended, &rec, None).await.unwrap();
    let live = s.session("live").await;
    s.clock.advance(Duration::from_secs(2));

    let mut holder = s.lock_table().await;
    let b0 = s.load(blockers[0]);
    s.until_waiting("id_digest = $1", 1).await;
    let b1 = s.load(blockers[1]);
    s.until_waiting("id_digest = $1", 2).await;
    let wanted: Vec<(TokenDigest, Option<&str>)> = vec![
        (shared, Some("shared")),
        (shared, Some("shared")),
        (deleted, None),
        (ended, None),
        (shared, Some("shared")),
        (digest(), None),
        (live, Some("live")),
        (live, Some("live")),
    ];
    let mut tasks = Vec::new();
    for (k, want) in &wanted {
        tasks.push((s.load(*k), *want));
        settle().await;
    }
    b0.abort();
    s.until_waiting("ANY($1)", 1).await;
    b1.abort();
    s.until_waiting("ANY($1)", 2).await;
    // The first queued load ran a batch for others (a share of four of
    // eight with two connections): its request is cancelled now.
    let (first, _) = tasks.remove(0);
    first.abort();
    settle().await;

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        for (i, (t, want)) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().as_deref(), want, "load {}", i + 1);
        }
    })
    .await
    .expect("every load answered after its runner was cancelled");
    // Both the single-key and the shared statement served.
    assert!(s.store.load(&live).await.unwrap().is_some());
}

/// A clock that jumps between a load being asked and its batch running
/// does not change what it sees: a session live when the load was asked
/// is served to it, though the store's clock has since passed its idle
/// deadline, while a load asked after the jump gets nothing; each load is
/// judged by its own clock, in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_load_in_a_batch_is_judged_by_the_clock_it_was_asked_at() {
    let s = setup().await;
    let blockers = [s.session("b0").await, s.session("b1").await];
    let k = digest();
    let mut rec = record(Some("short"), s.clock.now());
    rec.idle_deadline = s.clock.now() + Duration::from_secs(60);
    let _ = s.store.create(&k, &rec, None).await.unwrap();

    let mut holder = s.lock_table().await;
    let b0 = s.load(blockers[0]);
    s.until_waiting("id_digest = $1", 1).await;
    let b1 = s.load(blockers[1]);
    s.until_waiting("id_digest = $1", 2).await;
    let before = s.load(k);
    settle().await;
    s.clock.advance(Duration::from_secs(61));
    let after = s.load(k);
    settle().await;
    let after2 = s.load(k);
    settle().await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(b0.await.unwrap().as_deref(), Some("b0"));
    assert_eq!(b1.await.unwrap().as_deref(), Some("b1"));
    assert_eq!(before.await.unwrap().as_deref(), Some("short"));
    assert_eq!(after.await.unwrap(), None);
    assert_eq!(after2.await.unwrap(), None);
}

/// The store's connections die while their statements wait (PostgreSQL
/// terminates them, as a failover or an administrator would): the loads
/// they were answering, alone or in a batch, run again on fresh
/// connections and each gets its own row once the lock goes; none hangs
/// and none gets another's answer or an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_batch_strand_no_load() {
    let s = setup().await;
    let keys = [
        s.session("u0").await,
        s.session("u1").await,
        s.session("u2").await,
        s.session("u3").await,
        s.session("u4").await,
        s.session("u5").await,
    ];
    let mut holder = s.lock_table().await;
    let t0 = s.load(keys[0]);
    s.until_waiting("id_digest = $1", 1).await;
    let t1 = s.load(keys[1]);
    s.until_waiting("id_digest = $1", 2).await;
    let mut queued = Vec::new();
    for k in &keys[2..] {
        queued.push(s.load(*k));
        settle().await;
    }
    // Both of the store's connections are killed mid-statement.
    let killed = s.server.psql(
        &s.db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
         AND query LIKE '%id_digest%'",
    );
    assert_eq!(killed.trim(), "2");
    // Their loads run again (the single-key statements, or a batch with
    // the queued loads) and wait for the lock once more.
    for _ in 0..500 {
        if s.waiting("id_digest") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        assert_eq!(t0.await.unwrap().as_deref(), Some("u0"));
        assert_eq!(t1.await.unwrap().as_deref(), Some("u1"));
        for (i, t) in queued.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(format!("u{}", i + 2)));
        }
    })
    .await
    .expect("every load answered after its connection died");
}
