//! `PgRefreshStore` and `SqliteRefreshStore` against a real PostgreSQL
//! (one shared server, a fresh database per case) and real SQLite files:
//! the public conformance suite, the rotation statement in lockstep with
//! the memory store (the reference for `Family::classify` and
//! `Family::rotate`), two pools racing one rotation, statements per call
//! (`pg_stat_statements`), user ids no index could hold, unreadable rows,
//! batched and background purges, and the hybrid pattern over HTTP on
//! PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::core::{Clock as _, ManualClock, StoreErrorKind, Timestamp};
use portcullis::refresh::testing::family;
use portcullis::refresh::{
    DeviceInfo, Family, MemoryRefreshStore, RefreshStore, RefreshToken, RotateOutcome, Rotation,
    RotationKey,
};
use portcullis_sql::sqlx;
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use portcullis_sql::{
    PgBackend, PgConfig, PgRefreshStore, PurgeConfig, SqliteBackend, SqliteConfig,
    SqliteRefreshStore,
};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::Owned;
use portcullis_tests::refresh_app::{api, login, refresh, refreshed, start_with};
use reqwest::StatusCode;

/// Generous: these tests check behaviour, not latency, on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The table as the default names render it.
const PG_TABLE: &str = "portcullis.refresh_families";
const SQLITE_TABLE: &str = "portcullis_refresh_families";

/// No background purge: the tests that count rows decide when to purge.
fn no_background_purge() -> PurgeConfig {
    PurgeConfig {
        every: Duration::ZERO,
        ..PurgeConfig::default()
    }
}

/// A backend on a pool of `url`, migrated.
async fn pg_backend(url: &str, purge: PurgeConfig) -> PgBackend {
    let pool = PgPoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool)
        .timeout(TIMEOUT)
        .purge(purge)
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// A fresh database on the shared server: its URL and database name.
fn fresh_pg() -> (String, String) {
    let url = PgServer::shared().fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    (url, db)
}

/// A store on a fresh database.
async fn pg_store() -> PgRefreshStore {
    let (url, _) = fresh_pg();
    PgRefreshStore::new(&pg_backend(&url, no_background_purge()).await)
}

/// A backend on a new SQLite file in `dir`, migrated.
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

/// A store on a new SQLite file; the file lives as long as the store.
async fn sqlite_store() -> Owned<SqliteRefreshStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteRefreshStore::new(&sqlite_backend(&dir, no_background_purge()).await);
    Owned::new(store, Arc::new(dir))
}

fn rotation(token: &RefreshToken, key: &RotationKey, now: Timestamp) -> (Rotation, RefreshToken) {
    let next = token.successor(key);
    let r = Rotation {
        family: token.family().clone(),
        presented: token.digest(),
        successor: next.digest(),
        now,
        grace: Duration::from_secs(10),
        idle: Duration::from_secs(3600),
        history_limit: 8,
        device: DeviceInfo::default(),
    };
    (r, next)
}

// ---------------------------------------------------------------------
// The conformance suite.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    portcullis::refresh::testing::run_all(pg_store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_family_cap_conformance() {
    portcullis::refresh::testing::run_family_cap(pg_store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    portcullis::refresh::testing::run_all(sqlite_store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_family_cap_conformance() {
    portcullis::refresh::testing::run_family_cap(sqlite_store).await;
}

// ---------------------------------------------------------------------
// The rotation statement against the reference.

/// A tiny deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.next() % items.len() as u64).unwrap()]
    }
}

/// `store` against the memory store on the same random sequences:
/// current, previous, older, forged and mismatched tokens, at times inside
/// and outside the grace window and the idle timeout, with history limits
/// that trim and devices that change or not. Every outcome, and every
/// family returned or read back, must be equal.
async fn lockstep(store: &dyn RefreshStore) {
    let memory = MemoryRefreshStore::new();
    let key = RotationKey::generate().unwrap();
    let other_key = RotationKey::generate().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let steps_ms = [
        0, 0, 1, 999, 999, 5_000, 9_999, 10_000, 10_000, 10_001, 11_000, 60_000, 1_800_000,
        3_600_000,
    ];
    let mut seen = BTreeMap::<&str, u32>::new();
    let mut longest = 0;
    for _ in 0..60 {
        let (mut fam, t0) = family("alice", rng.next() % 1000);
        fam.deadlines.absolute =
            fam.created_at + Duration::from_millis(rng.pick(&[30_000, 7_200_000, 86_400_000]));
        fam.deadlines.idle = fam.deadlines.idle.min(fam.deadlines.absolute);
        store.create(&fam, None).await.unwrap();
        memory.create(&fam, None).await.unwrap();
        let mut chain: Vec<RefreshToken> = vec![t0];
        let mut now = fam.created_at;
        for _ in 0..40 {
            now = now + Duration::from_millis(rng.pick(&steps_ms));
            let n = chain.len();
            let presented = match rng.next() % 10 {
                0..=4 => chain[n - 1].clone(),
                5..=7 if n >= 2 => chain[n - 2].clone(),
                8 if n >= 3 => chain[usize::try_from(rng.next()).unwrap() % (n - 2)].clone(),
                _ => RefreshToken::first(fam.id.clone()).unwrap(),
            };
            let k = if rng.next().is_multiple_of(5) {
                &other_key
            } else {
                &key
            };
            let successor = presented.successor(k);
            let r = Rotation {
                family: fam.id.clone(),
                presented: presented.digest(),
                successor: successor.digest(),
                now,
                grace: Duration::from_millis(rng.pick(&[0, 10_000])),
                idle: Duration::from_millis(rng.pick(&[1_000, 3_600_000, 3_600_000, 3_600_000])),
                history_limit: rng.pick(&[0, 1, 2, 8]),
                device: match rng.next() % 3 {
                    0 => DeviceInfo::default(),
                    1 => DeviceInfo {
                        user_agent: Some(format!("ua \"{}\" \u{0}", rng.next() % 9)),
                        ip: None,
                    },
                    _ => DeviceInfo {
                        user_agent: None,
                        ip: Some("2001:db8::1".into()),
                    },
                },
            };
            // The contract lets a store answer `Invalid` for an expired
            // family instead of `Expired` (which only adds the event).
            let want = match memory.rotate(&r).await.unwrap() {
                RotateOutcome::Expired(_) => RotateOutcome::Invalid,
                outcome => outcome,
            };
            let got = store.rotate(&r).await.unwrap();
            assert_eq!(got, want, "rotation {r:?}");
            assert_eq!(
                store.get(&fam.id, now).await.unwrap(),
                memory.get(&fam.id, now).await.unwrap()
            );
            *seen
                .entry(match &want {
                    RotateOutcome::Rotated(_) => "rotated",
                    RotateOutcome::Repeat(_) => "repeat",
                    RotateOutcome::Reused(_) => "reused",
                    RotateOutcome::KeyMismatch => "mismatch",
                    _ => "invalid",
                })
                .or_default() += 1;
            longest = longest.max(chain.len());
            match want {
                RotateOutcome::Rotated(_) => chain.push(successor),
                RotateOutcome::Reused(_) => break,
                _ if memory.get(&fam.id, now).await.unwrap().is_none() => break,
                _ => {}
            }
        }
    }
    eprintln!("lockstep outcomes: {seen:?}, longest chain {longest}");
    assert!(longest >= 6, "chains long enough to trim the history");
    for outcome in ["rotated", "repeat", "reused", "mismatch", "invalid"] {
        assert!(seen.get(outcome).copied().unwrap_or(0) >= 3, "{seen:?}");
    }
}

#[tokio::test]
async fn the_rotation_statement_matches_the_memory_store_in_lockstep() {
    lockstep(&pg_store().await).await;
    lockstep(&sqlite_store().await).await;
}

// ---------------------------------------------------------------------
// Two application instances racing.

/// How a round of racing rotations ended, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    RotatedAndRepeats,
    RotatedAndMismatch,
    RotatedThenReused,
    RepeatAfterLateRotation,
}

/// Rounds of racing rotations of one token through two stores (two pools:
/// two application instances): racers with the same key and time; a racer
/// with another rotation key; a racer 11 s late (past the grace window of
/// the other's rotation). Whatever the order, never two rotations: exactly
/// one `Rotated`, the others what the shared rules make of a loser.
async fn racing_rounds(a: Arc<dyn RefreshStore>, b: Arc<dyn RefreshStore>, rounds: usize) {
    let key = RotationKey::generate().unwrap();
    let other_key = RotationKey::generate().unwrap();
    let mut endings = BTreeMap::<Ending, u32>::new();
    for round in 0..rounds {
        let (fam, t0) = family(&format!("user{round}"), 0);
        a.create(&fam, None).await.unwrap();
        let at = fam.created_at + Duration::from_secs(100);
        let successor = t0.successor(&key).digest();
        let scenario = round % 3;
        // Four racers per instance with the same key and time; or one per
        // instance, the second with another key or 11 s later.
        let racers: Vec<(Arc<dyn RefreshStore>, Rotation)> = match scenario {
            0 => (0..8)
                .map(|i| {
                    let store = if i % 2 == 0 { &a } else { &b };
                    (Arc::clone(store), rotation(&t0, &key, at).0)
                })
                .collect(),
            1 => vec![
                (Arc::clone(&a), rotation(&t0, &key, at).0),
                (Arc::clone(&b), rotation(&t0, &other_key, at).0),
            ],
            _ => vec![
                (Arc::clone(&a), rotation(&t0, &key, at).0),
                (
                    Arc::clone(&b),
                    rotation(&t0, &key, at + Duration::from_secs(11)).0,
                ),
            ],
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(racers.len()));
        let tasks: Vec<_> = racers
            .into_iter()
            .map(|(store, r)| {
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.rotate(&r).await.unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, RotateOutcome::Rotated(_)))
            .count();
        assert_eq!(rotated, 1, "round {round}: one rotation: {outcomes:?}");
        let stored = a.get(&fam.id, at).await.unwrap();
        let ending = match scenario {
            0 => {
                assert!(
                    outcomes.iter().all(|o| match o {
                        RotateOutcome::Rotated(f) | RotateOutcome::Repeat(f) =>
                            f.current == successor,
                        _ => false,
                    }),
                    "round {round}: every racer gets the same successor: {outcomes:?}"
                );
                Ending::RotatedAndRepeats
            }
            1 => {
                assert!(
                    outcomes.contains(&RotateOutcome::KeyMismatch),
                    "round {round}: {outcomes:?}"
                );
                Ending::RotatedAndMismatch
            }
            _ => match &outcomes[..] {
                [RotateOutcome::Rotated(_), RotateOutcome::Reused(_)] => {
                    assert_eq!(stored, None, "round {round}: reuse deleted the family");
                    Ending::RotatedThenReused
                }
                [RotateOutcome::Repeat(_), RotateOutcome::Rotated(_)] => {
                    Ending::RepeatAfterLateRotation
                }
                other => panic!("round {round}: {other:?}"),
            },
        };
        if ending != Ending::RotatedThenReused {
            let stored = stored.expect("live");
            assert_eq!(stored.rotations, 1, "round {round}: one rotation stored");
            let winner = outcomes
                .iter()
                .find_map(|o| match o {
                    RotateOutcome::Rotated(f) => Some(f.current),
                    _ => None,
                })
                .unwrap();
            assert_eq!(
                stored.current, winner,
                "round {round}: the winner's successor"
            );
        }
        *endings.entry(ending).or_default() += 1;
    }
    eprintln!("racing rounds: {endings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_racing_one_rotation_never_fork_the_chain() {
    let (url, _) = fresh_pg();
    let a = pg_backend(&url, no_background_purge()).await;
    let b = pg_backend(&url, no_background_purge()).await;
    racing_rounds(
        Arc::new(PgRefreshStore::new(&a)),
        Arc::new(PgRefreshStore::new(&b)),
        90,
    )
    .await;
    // The same on one SQLite file through two pools (two processes).
    let dir = tempfile::tempdir().unwrap();
    let a = sqlite_backend(&dir, no_background_purge()).await;
    let b = sqlite_backend(&dir, no_background_purge()).await;
    racing_rounds(
        Arc::new(SqliteRefreshStore::new(&a)),
        Arc::new(SqliteRefreshStore::new(&b)),
        30,
    )
    .await;
}

/// Rounds of one user's logins racing through two stores (two pools) at a
/// cap of 3: never more than 3 live families, and every family either
/// live or returned as evicted, exactly once.
async fn logins_at_the_cap(a: Arc<dyn RefreshStore>, b: Arc<dyn RefreshStore>, rounds: usize) {
    const CAP: usize = 3;
    for round in 0..rounds {
        let user = format!("capped{round}");
        let fams: Vec<Family> = (0..12).map(|i| family(&user, i % 4).0).collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(fams.len()));
        let tasks: Vec<_> = fams
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, f)| {
                let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.create(&f, Some(CAP)).await.unwrap()
                })
            })
            .collect();
        let mut seen: Vec<_> = Vec::new();
        for t in tasks {
            seen.extend(t.await.unwrap().into_iter().map(|f| f.id));
        }
        let live = a.list_user(&user, fams[0].created_at).await.unwrap();
        assert_eq!(live.len(), CAP, "round {round}: the cap holds");
        seen.extend(live.into_iter().map(|f| f.id));
        seen.sort();
        let mut all: Vec<_> = fams.iter().map(|f| f.id.clone()).collect();
        all.sort();
        assert_eq!(
            seen, all,
            "round {round}: each family live or evicted, once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_logging_in_at_the_cap_never_exceed_it() {
    let (url, _) = fresh_pg();
    let a = pg_backend(&url, no_background_purge()).await;
    let b = pg_backend(&url, no_background_purge()).await;
    logins_at_the_cap(
        Arc::new(PgRefreshStore::new(&a)),
        Arc::new(PgRefreshStore::new(&b)),
        15,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = sqlite_backend(&dir, no_background_purge()).await;
    let b = sqlite_backend(&dir, no_background_purge()).await;
    logins_at_the_cap(
        Arc::new(SqliteRefreshStore::new(&a)),
        Arc::new(SqliteRefreshStore::new(&b)),
        10,
    )
    .await;
}

// ---------------------------------------------------------------------
// Statements per call.

/// Runs `call` between a reset of `pg_stat_statements` and a read of it:
/// the statements `call` ran, with their counts.
async fn statements<F: std::future::Future<Output = ()>>(db: &str, call: F) -> Vec<(u64, String)> {
    let server = PgServer::shared();
    server.reset_statement_stats(db);
    call.await;
    server.statement_stats(db)
}

fn total(stats: &[(u64, String)]) -> u64 {
    stats.iter().map(|(c, _)| c).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_is_one_statement() {
    let (url, db) = fresh_pg();
    let store = PgRefreshStore::new(&pg_backend(&url, no_background_purge()).await);
    let key = RotationKey::generate().unwrap();
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.unwrap();
    // Warm the connection's statement cache, as a running app has.
    let (r, mut token) = rotation(&t0, &key, fam.created_at);
    store.rotate(&r).await.unwrap();

    let mut now = fam.created_at;
    let stats = statements(&db, async {
        for _ in 0..20 {
            now = now + Duration::from_secs(60);
            let (r, next) = rotation(&token, &key, now);
            assert!(matches!(
                store.rotate(&r).await.unwrap(),
                RotateOutcome::Rotated(_)
            ));
            token = next;
        }
    })
    .await;
    eprintln!("20 rotations: {stats:?}");
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].0, 20, "one statement per rotation: {stats:?}");
    assert!(stats[0].1.starts_with("UPDATE"), "{stats:?}");

    // A repeat inside the grace window: the UPDATE finds nothing, a SELECT
    // classifies.
    let previous = {
        let f = store.get(&fam.id, now).await.unwrap().unwrap();
        f.previous.unwrap().digest
    };
    let mut repeat = rotation(&token, &key, now).0;
    repeat.presented = previous;
    repeat.successor = token.digest();
    let stats = statements(&db, async {
        assert!(matches!(
            store.rotate(&repeat).await.unwrap(),
            RotateOutcome::Repeat(_)
        ));
    })
    .await;
    eprintln!("a repeat: {stats:?}");
    assert_eq!(total(&stats), 2, "{stats:?}");

    // Reuse: the UPDATE, the SELECT, the guarded DELETE.
    repeat.now = now + Duration::from_secs(11);
    let stats = statements(&db, async {
        assert!(matches!(
            store.rotate(&repeat).await.unwrap(),
            RotateOutcome::Reused(_)
        ));
    })
    .await;
    eprintln!("a reuse: {stats:?}");
    assert_eq!(total(&stats), 3, "{stats:?}");

    // The same token again: the UPDATE finds nothing, the SELECT finds
    // the mark.
    repeat.now = repeat.now + Duration::from_secs(1);
    let stats = statements(&db, async {
        assert!(matches!(
            store.rotate(&repeat).await.unwrap(),
            RotateOutcome::Reused(_)
        ));
    })
    .await;
    eprintln!("a token of a family marked reused: {stats:?}");
    assert_eq!(total(&stats), 2, "{stats:?}");

    // The other calls.
    let (f2, _) = family("bob", 0);
    let f3 = family("bob", 1).0;
    let stats = statements(&db, async {
        store.create(&f2, None).await.unwrap();
        store.get(&f2.id, f2.created_at).await.unwrap().unwrap();
        store.list_user("bob", f2.created_at).await.unwrap();
    })
    .await;
    eprintln!("create, get, list_user: {stats:?}");
    assert_eq!(total(&stats), 3, "{stats:?}");
    let stats = statements(&db, async {
        assert_eq!(store.create(&f3, Some(1)).await.unwrap().len(), 1);
    })
    .await;
    eprintln!("create at the cap, evicting one: {stats:?}");
    assert_eq!(total(&stats), 6, "{stats:?}");
}

// ---------------------------------------------------------------------
// The hybrid pattern over HTTP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_reuse_over_http_on_postgres() {
    let (url, db) = fresh_pg();
    let backend = pg_backend(&url, PurgeConfig::default()).await;
    let clock = Arc::new(ManualClock::starting_now());
    let store: Arc<dyn RefreshStore> =
        Arc::new(PgRefreshStore::with_clock(&backend, clock.clone()));
    let app = start_with(Some(store), None, |c| c, clock.clone()).await;
    let count = |family: &str| {
        PgServer::shared().psql(
            &db,
            &format!("SELECT count(*) FROM {PG_TABLE} WHERE family_id = '{family}'"),
        )
    };

    let l = login(&app, "alice").await;
    let family_id = l.refresh.split_once('.').unwrap().0.to_owned();
    assert_eq!(count(&family_id), "1");
    let other = login(&app, "alice").await;
    let r1 = refreshed(&app, &l.refresh).await;
    assert_ne!(r1.refresh, l.refresh);
    assert_eq!(api(&app, &r1.access).await, StatusCode::OK);
    // A repeat inside the grace window: the same successor.
    let again = refreshed(&app, &l.refresh).await;
    assert_eq!(again.refresh, r1.refresh);
    let r2 = refreshed(&app, &r1.refresh).await;
    assert_eq!(api(&app, &r2.access).await, StatusCode::OK);

    // r1 again, 11 s after its rotation: reuse. The family stays in the
    // table only marked reused (until it ends), its live access token and
    // newest refresh token die; the other device lives on.
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        refresh(&app, &r1.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let live = PgServer::shared().psql(
        &db,
        &format!(
            "SELECT count(*) FROM {PG_TABLE} WHERE family_id = '{family_id}' \
             AND reused_at IS NULL"
        ),
    );
    assert_eq!(live, "0");
    assert_eq!(count(&family_id), "1", "the mark");
    assert_eq!(api(&app, &r2.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &r2.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // r1 once more (a client retrying after a lost answer): reuse again.
    assert_eq!(
        refresh(&app, &r1.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api(&app, &other.access).await, StatusCode::OK);
    assert_eq!(refresh(&app, &other.refresh).await.status(), StatusCode::OK);
    let events = app.events.reuses();
    assert_eq!(
        events.len(),
        1,
        "one reuse event per family, not per presentation: {events:?}"
    );
    // Nothing of a token in the table: digests only.
    let dump = PgServer::shared().psql(&db, &format!("SELECT t::text FROM {PG_TABLE} t"));
    for token in [&l.refresh, &r1.refresh, &r2.refresh, &other.refresh] {
        let secret = token.split_once('.').unwrap().1;
        assert!(!dump.contains(secret), "a token secret in the table");
    }
}

// ---------------------------------------------------------------------
// User ids.

fn hostile_user_ids() -> Vec<String> {
    vec![
        "o'brien".to_owned(),
        "\"; DROP TABLE portcullis.refresh_families; --".to_owned(),
        "'; DROP TABLE portcullis_refresh_families; --".to_owned(),
        "a\u{0}b".to_owned(),
        "a".to_owned(),
        "a\u{0}".to_owned(),
        "\u{0}".to_owned(),
        "x".repeat(10 * 1024),
        format!("{}y", "x".repeat(10 * 1024)),
        "\u{fc}n\u{ef}c\u{f8}d\u{e9} \u{6f22}\u{5b57} \u{1f600}".to_owned(),
        "%_*\\".to_owned(),
    ]
}

/// Every hostile id gets its own families (under a cap too), and finds
/// exactly those: listed, revoked (all, or all but one), nobody else's.
async fn user_ids_round_trip(store: &dyn RefreshStore) {
    let users = hostile_user_ids();
    let mut mine = BTreeMap::new();
    for (i, user) in users.iter().enumerate() {
        let fams: Vec<Family> = (0..2).map(|s| family(user, s).0).collect();
        store.create(&fams[0], None).await.unwrap();
        assert!(store.create(&fams[1], Some(5)).await.unwrap().is_empty());
        mine.insert(i, fams);
    }
    let now = mine[&0][0].created_at + Duration::from_secs(10);
    for (i, user) in users.iter().enumerate() {
        let mut listed: Vec<_> = store
            .list_user(user, now)
            .await
            .unwrap()
            .into_iter()
            .map(|f| {
                assert_eq!(&f.user_id, user, "the id comes back exactly");
                f.id
            })
            .collect();
        listed.sort();
        let mut want: Vec<_> = mine[&i].iter().map(|f| f.id.clone()).collect();
        want.sort();
        assert_eq!(listed, want, "user {i}");
    }
    // All but one, then all: only that user's families.
    for (i, user) in users.iter().enumerate() {
        let keep = &mine[&i][1];
        let gone = store.revoke_user(user, Some(&keep.id)).await.unwrap();
        assert_eq!(gone.len(), 1, "user {i}");
        assert_eq!(gone[0].id, mine[&i][0].id);
        assert_eq!(gone[0].user_id, *user);
    }
    for (i, user) in users.iter().enumerate() {
        let gone = store.revoke_user(user, None).await.unwrap();
        assert_eq!(
            gone.into_iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![mine[&i][1].id.clone()],
            "user {i}"
        );
        assert!(store.list_user(user, now).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_user_ids_are_stored_and_found_exactly() {
    let (url, db) = fresh_pg();
    let store = PgRefreshStore::new(&pg_backend(&url, no_background_purge()).await);
    user_ids_round_trip(&store).await;
    assert_eq!(
        PgServer::shared().psql(&db, &format!("SELECT count(*) FROM {PG_TABLE}")),
        "0",
        "the table is intact, and empty"
    );
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir, no_background_purge()).await;
    user_ids_round_trip(&SqliteRefreshStore::new(&backend)).await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {SQLITE_TABLE}"
    )))
    .fetch_one(backend.pool())
    .await
    .unwrap();
    assert_eq!(n, 0, "the table is intact, and empty");
}

// ---------------------------------------------------------------------
// Unreadable rows.

/// Damages one column of a family's row in a way its schema allows, and
/// checks that the family is never rotated nor returned: `rotate` and
/// `get` answer corrupt, lists skip it, `revoke` deletes it.
async fn unreadable_rows(store: &dyn RefreshStore, damage: &dyn Fn(&str, &str)) {
    let key = RotationKey::generate().unwrap();
    let good = family("alice", 0).0;
    store.create(&good, None).await.unwrap();
    let now = good.created_at;
    let other_id = portcullis::refresh::FamilyId::generate().unwrap();
    for set in [
        "history = 'zz'".to_owned(),
        format!("history = '{}'", "A".repeat(64)),
        "claims = '['".to_owned(),
        "claims = '[1]'".to_owned(),
        "device = 'null'".to_owned(),
        "created_at = -1".to_owned(),
        "rotations = -3".to_owned(),
        "device = '{\"ip\": 7}'".to_owned(),
        format!("family_id = '{other_id}'"),
        "user_id = x'fffe'".to_owned(),
    ] {
        let (fam, t) = family("alice", 0);
        store.create(&fam, None).await.unwrap();
        damage(fam.id.as_str(), &set);
        let (r, _) = rotation(&t, &key, now);
        assert_eq!(
            store.rotate(&r).await.unwrap_err().kind(),
            StoreErrorKind::Corrupt,
            "{set}"
        );
        assert_eq!(
            store.get(&fam.id, now).await.unwrap_err().kind(),
            StoreErrorKind::Corrupt,
            "{set}"
        );
        let listed: Vec<_> = store
            .list_user("alice", now)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(listed, vec![good.id.clone()], "{set}");
        assert_eq!(store.revoke(&fam.id).await.unwrap(), None, "{set}");
        assert_eq!(
            store.get(&fam.id, now).await.unwrap(),
            None,
            "{set}: revoked"
        );
    }
    assert_eq!(store.get(&good.id, now).await.unwrap(), Some(good));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_are_corrupt_never_rotated() {
    let (url, db) = fresh_pg();
    let store = PgRefreshStore::new(&pg_backend(&url, no_background_purge()).await);
    unreadable_rows(&store, &|id, set| {
        PgServer::shared().psql(
            &db,
            &format!(
                "UPDATE {PG_TABLE} SET {} WHERE family_id = '{id}'",
                set.replace("x'fffe'", "'\\xfffe'::bytea")
            ),
        );
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir, no_background_purge()).await;
    let pool = backend.pool().clone();
    let store = SqliteRefreshStore::new(&backend);
    let handle = tokio::runtime::Handle::current();
    unreadable_rows(&store, &|id, set| {
        let sql = format!("UPDATE {SQLITE_TABLE} SET {set} WHERE family_id = '{id}'");
        let pool = pool.clone();
        tokio::task::block_in_place(|| {
            handle.block_on(async move {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                assert_eq!(done.rows_affected(), 1);
            });
        });
    })
    .await;
}

// ---------------------------------------------------------------------
// Purging.

/// 250 ended families (a few of them alice's) and 5 live ones of alice:
/// `purge_expired` removes exactly the ended ones, `batch` at a time.
async fn purge_leaves_live_families(store: &dyn RefreshStore) -> (u64, Timestamp) {
    for i in 0..250 {
        let user = if i % 50 == 0 {
            "alice".to_owned()
        } else {
            format!("gone{i}")
        };
        store.create(&family(&user, 0).0, None).await.unwrap();
    }
    // Live at 1 h: created 50 min in, idle 1 h.
    let live: Vec<Family> = (0..5).map(|_| family("alice", 3000).0).collect();
    for f in &live {
        store.create(f, None).await.unwrap();
    }
    let at = live[0].created_at + Duration::from_secs(600);
    let purged = store.purge_expired(at).await.unwrap();
    let mut left: Vec<_> = store
        .list_user("alice", at)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    left.sort();
    let mut want: Vec<_> = live.iter().map(|f| f.id.clone()).collect();
    want.sort();
    assert_eq!(left, want, "the live families stay, listed");
    assert_eq!(store.purge_expired(at).await.unwrap(), 0, "nothing left");
    (purged, at)
}

fn batches_of_100() -> PurgeConfig {
    PurgeConfig {
        every: Duration::ZERO,
        batch: 100,
        pause: Duration::from_millis(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_goes_in_batches_and_leaves_live_families() {
    let (url, db) = fresh_pg();
    let store = PgRefreshStore::new(&pg_backend(&url, batches_of_100()).await);
    let server = PgServer::shared();
    let mut purged = 0;
    let stats = statements(&db, async {
        purged = purge_leaves_live_families(&store).await.0;
    })
    .await;
    assert_eq!(purged, 250);
    let deletes: Vec<_> = stats
        .iter()
        .filter(|(_, q)| q.starts_with("DELETE") && q.contains("ctid"))
        .collect();
    // 100, 100, 50; then the second purge's empty batch.
    assert_eq!(deletes.len(), 1, "{stats:?}");
    assert_eq!(deletes[0].0, 4, "three batches, then one empty: {stats:?}");
    assert_eq!(
        server.psql(&db, &format!("SELECT count(*) FROM {PG_TABLE}")),
        "5"
    );

    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir, batches_of_100()).await;
    let (purged, _) = purge_leaves_live_families(&SqliteRefreshStore::new(&backend)).await;
    assert_eq!(purged, 250);
}

/// Writes start a purge in the background (at most once per interval):
/// families ended more than 60 s before the store's clock go, those ended
/// less long ago stay (another instance's clock may be behind), live ones
/// stay.
async fn background_purge(
    store: &dyn RefreshStore,
    clock: &ManualClock,
    count: impl AsyncFn() -> i64,
) {
    let old: Vec<Family> = (0..120).map(|i| family(&format!("u{i}"), 0).0).collect();
    for f in &old {
        store.create(f, None).await.unwrap();
    }
    // Ended 30 s before the clock below: kept.
    let mut recent = family("recent", 0).0;
    recent.deadlines.idle = old[0].deadlines.idle + Duration::from_secs(90);
    store.create(&recent, None).await.unwrap();
    assert_eq!(count().await, 121, "nothing had ended by the store's clock");
    clock.set(old[0].deadlines.idle + Duration::from_secs(120));
    let mut live = family("alice", 0).0;
    live.created_at = clock.now();
    live.last_used_at = clock.now();
    live.deadlines.idle = clock.now() + Duration::from_secs(3600);
    live.deadlines.absolute = clock.now() + Duration::from_secs(86_400);
    store.create(&live, None).await.unwrap();
    // Writes (here: rotations of a family that does not exist) start the
    // purge once its interval has passed; poll until it has run.
    let (r, _) = rotation(
        &RefreshToken::first(portcullis::refresh::FamilyId::generate().unwrap()).unwrap(),
        &RotationKey::generate().unwrap(),
        clock.now(),
    );
    let start = Instant::now();
    loop {
        let rows = count().await;
        if rows == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the background purge left {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.rotate(&r).await.unwrap(), RotateOutcome::Invalid);
    }
    assert!(store.get(&live.id, clock.now()).await.unwrap().is_some());
    assert!(
        store
            .get(&recent.id, recent.deadlines.idle - Duration::from_secs(1))
            .await
            .unwrap()
            .is_some(),
        "ended less than 60 s ago: kept"
    );
}

fn background_every_10ms() -> PurgeConfig {
    PurgeConfig {
        every: Duration::from_millis(10),
        batch: 50,
        pause: Duration::from_millis(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_purge_ended_families_in_the_background() {
    let (url, db) = fresh_pg();
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = pg_backend(&url, background_every_10ms()).await;
    let store = PgRefreshStore::with_clock(&backend, clock.clone());
    background_purge(&store, &clock, async || {
        PgServer::shared()
            .psql(&db, &format!("SELECT count(*) FROM {PG_TABLE}"))
            .parse()
            .unwrap()
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = sqlite_backend(&dir, background_every_10ms()).await;
    let store = SqliteRefreshStore::with_clock(&backend, clock.clone());
    let pool = backend.pool().clone();
    background_purge(&store, &clock, async || {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {SQLITE_TABLE}"
        )))
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
}

// ---------------------------------------------------------------------
// Reuse leaves a tombstone.

/// After a reuse, the family is kept, marked, until it ends: presenting
/// the reused token again (the retry of a call whose answer was lost: a
/// 503 after the mark committed) or any other token the family replaced
/// answers `Reused` with the family again, so the refresher revokes its
/// access tokens then; the current token, `get`, `list_user`, `revoke`
/// and the cap find it gone; the purge removes it once it has ended.
async fn reuse_leaves_a_tombstone(store: &dyn RefreshStore) {
    let key = RotationKey::generate().unwrap();
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.unwrap();
    let mut now = fam.created_at;
    let mut tokens = vec![t0];
    for _ in 0..2 {
        now = now + Duration::from_secs(60);
        let (r, next) = rotation(tokens.last().unwrap(), &key, now);
        assert!(matches!(
            store.rotate(&r).await.unwrap(),
            RotateOutcome::Rotated(_)
        ));
        tokens.push(next);
    }
    let (t0, t1, t2) = (&tokens[0], &tokens[1], &tokens[2]);
    let replay = |t: &RefreshToken, at: Timestamp| rotation(t, &key, at).0;
    now = now + Duration::from_secs(60);
    let first = match store.rotate(&replay(t0, now)).await.unwrap() {
        RotateOutcome::Reused(f) => f,
        other => panic!("the grandparent: {other:?}"),
    };
    assert_eq!(first.id, fam.id);

    // The retry, later.
    now = now + Duration::from_secs(5);
    match store.rotate(&replay(t0, now)).await.unwrap() {
        RotateOutcome::Reused(f) => assert_eq!(f, first, "the same family, unchanged"),
        other => panic!("the reused token again: {other:?}"),
    }
    match store.rotate(&replay(t1, now)).await.unwrap() {
        RotateOutcome::Reused(f) => assert_eq!(f.id, fam.id),
        other => panic!("the previous token: {other:?}"),
    }
    assert_eq!(
        store.rotate(&replay(t2, now)).await.unwrap(),
        RotateOutcome::Invalid,
        "the current token finds the family gone"
    );
    let forged = RefreshToken::first(fam.id.clone()).unwrap();
    assert_eq!(
        store.rotate(&replay(&forged, now)).await.unwrap(),
        RotateOutcome::Invalid
    );
    assert_eq!(store.get(&fam.id, now).await.unwrap(), None);
    assert!(store.list_user("alice", now).await.unwrap().is_empty());
    // Not counted under a cap of 1: nothing to evict.
    let (mut second, _) = family("alice", 300);
    second.deadlines.idle = second.deadlines.absolute;
    assert!(store.create(&second, Some(1)).await.unwrap().is_empty());
    assert_eq!(store.revoke(&fam.id).await.unwrap(), None);
    assert_eq!(
        store.revoke_user("alice", Some(&second.id)).await.unwrap(),
        Vec::new()
    );
    match store.rotate(&replay(t0, now)).await.unwrap() {
        RotateOutcome::Reused(f) => assert_eq!(f.id, fam.id),
        other => panic!("after revoke calls: {other:?}"),
    }

    // Purged once it has ended; then its tokens are unknown.
    let ended = first.expires_at() + Duration::from_secs(1);
    assert_eq!(
        store.purge_expired(ended).await.unwrap(),
        1,
        "the tombstone"
    );
    assert_eq!(
        store.rotate(&replay(t0, ended)).await.unwrap(),
        RotateOutcome::Invalid
    );
    assert!(store.get(&second.id, ended).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_leaves_a_tombstone_that_answers_reuse_again() {
    reuse_leaves_a_tombstone(&pg_store().await).await;
    reuse_leaves_a_tombstone(&sqlite_store().await).await;
}

/// The defect the mark closes, as it happens: the rotation that finds
/// reuse waits on a row lock (another transaction holds the family) past
/// its time bound and answers `Timeout` (the client gets a 503), then the
/// lock goes and its statement commits. The next presentation of the same
/// token answers `Reused` with the family, so the refresher revokes the
/// family's access tokens then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_whose_answer_timed_out_after_it_committed_is_answered_again() {
    use portcullis_sql::sqlx::Connection as _;
    let (url, db) = fresh_pg();
    let pool = PgPoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect(&url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool)
        .timeout(Duration::from_millis(300))
        .purge(no_background_purge())
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    let store = PgRefreshStore::new(&backend);
    let key = RotationKey::generate().unwrap();
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.unwrap();
    let mut now = fam.created_at;
    let mut token = t0.clone();
    for _ in 0..2 {
        now = now + Duration::from_secs(60);
        let (r, next) = rotation(&token, &key, now);
        assert!(matches!(
            store.rotate(&r).await.unwrap(),
            RotateOutcome::Rotated(_)
        ));
        token = next;
    }

    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {PG_TABLE} WHERE family_id = $1 FOR UPDATE"
    )))
    .bind(fam.id.as_str())
    .execute(&mut locker)
    .await
    .unwrap();
    now = now + Duration::from_secs(60);
    let err = store
        .rotate(&rotation(&t0, &key, now).0)
        .await
        .expect_err("the reuse waits on the lock past the bound");
    assert_eq!(err.kind(), StoreErrorKind::Timeout);
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    // The abandoned statement runs once the lock is gone.
    let live = || {
        PgServer::shared().psql(
            &db,
            &format!(
                "SELECT count(*) FROM {PG_TABLE} WHERE family_id = '{}' \
                 AND reused_at IS NULL",
                fam.id
            ),
        )
    };
    let start = Instant::now();
    while live() != "0" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the reuse never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    now = now + Duration::from_secs(5);
    match store.rotate(&rotation(&t0, &key, now).0).await.unwrap() {
        RotateOutcome::Reused(f) => assert_eq!(f.id, fam.id),
        other => panic!("the same token after the lost answer: {other:?}"),
    }
}

// ---------------------------------------------------------------------
// Clocks that jumped.

/// A family of `user` created at `now` by a correct clock: idle 1 h,
/// absolute 1 day.
fn family_at(user: &str, now: Timestamp) -> (Family, RefreshToken) {
    let (mut f, token) = family(user, 0);
    f.created_at = now;
    f.last_used_at = now;
    f.deadlines.idle = now + Duration::from_secs(3600);
    f.deadlines.absolute = now + Duration::from_secs(86_400);
    (f, token)
}

/// Instance B's clock jumped a year ahead. Its purges (the explicit one
/// its refresher runs with B's time, and the background one its writes
/// start) delete only what the earlier of its clock and the database's
/// has put past its end: instance A's live family stays, and A still
/// rotates it; a family that ended by both clocks goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_jumped_ahead_purges_no_live_family() {
    let (url, db) = fresh_pg();
    let now = portcullis::core::SystemClock.now();
    let a = PgRefreshStore::new(&pg_backend(&url, no_background_purge()).await);
    let clock_b = Arc::new(ManualClock::new(
        (now + Duration::from_secs(365 * 24 * 3600)).millis(),
    ));
    let b = PgRefreshStore::with_clock(
        &pg_backend(&url, background_every_10ms()).await,
        clock_b.clone(),
    );
    let (live, token) = family_at("alice", now);
    a.create(&live, None).await.unwrap();

    let purged = b.purge_expired(clock_b.now()).await.unwrap();
    assert!(
        a.get(&live.id, now).await.unwrap().is_some(),
        "A's live family was purged by B's explicit purge ({purged} rows)"
    );
    // B's writes start its background purge; it has run once the family
    // that ended in 2023 (by every clock) is gone.
    let (ended, _) = family("bob", 0);
    b.create(&ended, None).await.unwrap();
    let count = |id: &portcullis::refresh::FamilyId| {
        PgServer::shared()
            .psql(
                &db,
                &format!("SELECT count(*) FROM {PG_TABLE} WHERE family_id = '{id}'"),
            )
            .parse::<i64>()
            .unwrap()
    };
    let (probe, _) = rotation(
        &RefreshToken::first(portcullis::refresh::FamilyId::generate().unwrap()).unwrap(),
        &RotationKey::generate().unwrap(),
        clock_b.now(),
    );
    let start = Instant::now();
    while count(&ended.id) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the background purge never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.rotate(&probe).await.unwrap(), RotateOutcome::Invalid);
    }
    assert_eq!(
        count(&live.id),
        1,
        "A's live family was purged in the background"
    );
    let (r, _) = rotation(&token, &RotationKey::generate().unwrap(), now);
    assert!(matches!(
        a.rotate(&r).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
}

/// The only instance's clock is set back a day. A family that ended
/// 23 h ago by every other clock (the database's included) is still in the
/// table when no purge has run since; by the instance's clock it is live.
/// It is not served: `get` and `list_user` do not return it, its current
/// token does not rotate (`Invalid`), and the explicit purge with the
/// instance's time keeps nothing it would serve. The day is simulated by
/// moving the row's times a day back, as if a correct clock had written it
/// a day ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_does_not_revive_a_family_that_ended_a_day_ago() {
    let (url, db) = fresh_pg();
    let store = PgRefreshStore::new(&pg_backend(&url, no_background_purge()).await);
    let real = portcullis::core::SystemClock.now();
    let (fam, token) = family_at("alice", real);
    store.create(&fam, None).await.unwrap();
    let key = RotationKey::generate().unwrap();
    let (r, token) = {
        let (r, next) = rotation(&token, &key, real);
        assert!(matches!(
            store.rotate(&r).await.unwrap(),
            RotateOutcome::Rotated(_)
        ));
        (r, next)
    };
    drop(r);
    // Written a day ago: it ended 23 h ago (idle 1 h).
    let day = Duration::from_secs(24 * 3600);
    let shift = day.as_millis();
    PgServer::shared().psql(
        &db,
        &format!(
            "UPDATE {PG_TABLE} SET created_at = created_at - {shift}, \
             last_used_at = last_used_at - {shift}, previous_at = previous_at - {shift}, \
             idle_deadline = idle_deadline - {shift}, \
             absolute_deadline = absolute_deadline - {shift}"
        ),
    );
    assert!(
        store.get(&fam.id, real).await.unwrap().is_none(),
        "ended by the right clock"
    );
    // The clock is set back a day: 23 h after the end the family is live
    // by it.
    let back = Timestamp::from_millis(real.millis() - u64::try_from(shift).unwrap());
    let _ = store.purge_expired(back).await.unwrap();
    assert!(
        store.get(&fam.id, back).await.unwrap().is_none(),
        "a family that ended 23 h ago is served again"
    );
    assert!(store.list_user("alice", back).await.unwrap().is_empty());
    let (r, _) = rotation(&token, &key, back);
    assert_eq!(store.rotate(&r).await.unwrap(), RotateOutcome::Invalid);
}

// ---------------------------------------------------------------------
// Outages.

/// PostgreSQL stops: logins and refreshes answer 503 with `Retry-After`
/// within the store's time bound, every store call fails as unavailable
/// (never "no such family"), and the refresh token is not consumed: after
/// the restart it refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_gives_503_and_the_token_survives() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect(&url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool)
        .purge(no_background_purge())
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = PgRefreshStore::with_clock(&backend, clock.clone());
    let app = start_with(Some(Arc::new(store.clone())), None, |c| c, clock.clone()).await;
    let l = login(&app, "alice").await;
    let family_id =
        portcullis::refresh::FamilyId::parse(l.refresh.split_once('.').unwrap().0).unwrap();

    server.stop();
    let resp = refresh(&app, &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let resp = portcullis_tests::refresh_app::post_login(&app, "bob", &[]).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let now = clock.now();
    let token = RefreshToken::parse(&l.refresh).unwrap();
    let (r, _) = rotation(&token, &RotationKey::generate().unwrap(), now);
    let errors = [
        store.rotate(&r).await.map(drop),
        store.get(&family_id, now).await.map(drop),
        store.create(&family("bob", 0).0, Some(2)).await.map(drop),
        store.list_user("alice", now).await.map(drop),
        store.revoke_user("alice", None).await.map(drop),
        store.revoke(&family_id).await.map(drop),
        store.purge_expired(now).await.map(drop),
    ];
    for (i, e) in errors.into_iter().enumerate() {
        let e = e.expect_err("the database is down");
        assert!(e.is_unavailable(), "call {i}: {e:?}");
    }

    server.restart();
    let next = refreshed(&app, &l.refresh).await;
    assert_eq!(api(&app, &next.access).await, StatusCode::OK);
}

/// Another connection holds the SQLite file's write lock: writes time out
/// at the store's bound (not at SQLite's 5 s busy timeout, and never
/// panic), reads still answer (WAL), and the family is intact once the
/// lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_unavailable_not_a_panic() {
    use portcullis_sql::sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("auth.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    let backend = SqliteConfig::new(pool)
        .timeout(Duration::from_millis(300))
        .purge(no_background_purge())
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    let store = SqliteRefreshStore::new(&backend);
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.unwrap();

    let mut holder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let key = RotationKey::generate().unwrap();
    let (r, _) = rotation(&t0, &key, fam.created_at);
    // The store's bound answers (a timeout), not SQLite's 5 s busy
    // timeout (a backend error).
    let e = store.rotate(&r).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Timeout, "{e:?}");
    let e = store
        .create(&family("alice", 0).0, Some(3))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Timeout, "{e:?}");
    assert_eq!(
        store.get(&fam.id, fam.created_at).await.unwrap(),
        Some(fam.clone())
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    // The store serves again. The rotation that timed out was queued on
    // its connection's worker and may have run by now: then this one is
    // its repeat (the same successor), else it rotates.
    let outcome = store.rotate(&r).await.unwrap();
    assert!(
        matches!(
            outcome,
            RotateOutcome::Rotated(_) | RotateOutcome::Repeat(_)
        ),
        "{outcome:?}"
    );
}
