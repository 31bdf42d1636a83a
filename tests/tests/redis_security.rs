//! The Redis stores under an account that grows its index without end and
//! under a cut-off instance:
//!
//! - a login's Redis-side work stays bounded however many sessions or
//!   refresh families the user's index holds (one user cannot stall the
//!   Redis every user shares), with and without a per-user cap;
//! - the refresh store's per-user family cap, atomically in Redis;
//! - an instance cut off from Redis (its path cut, or Redis frozen with
//!   its sockets open) answers 503 for JWT requests once its revocation
//!   view is older than `max_staleness`, and recovers, refusing what was
//!   revoked meanwhile, once Redis is back;
//! - denylist entries stay in Redis and in snapshots until their expiry
//!   plus `MAX_LEEWAY` (through its last second);
//! - one instance whose clock runs ahead never makes the others forget a
//!   revocation, nor unindexes a user's live session (so "log out
//!   everywhere" still ends it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis::core::{Clock as _, ManualClock, SharedClock, Timestamp};
use portcullis::jwt::revocation::RevocationStore;
use portcullis::jwt::{Algorithm, JwtIssuer, JwtLayer, MAX_LEEWAY, SigningKey, Validation};
use portcullis::refresh::testing::family;
use portcullis::refresh::{DeviceInfo, RefreshStore, RotateOutcome, Rotation, RotationKey};
use portcullis::session::{
    CapPolicy, CreateOutcome, SessionCap, SessionRecord, SessionStore, testing::record,
};
use portcullis_core::{OpaqueToken, TokenDigest};
use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore, RedisSessionStore};
use portcullis_tests::TestServer;
use portcullis_tests::jwt_app::{me, serve_subject};
use portcullis_tests::redis_harness::{CutProxy, RedisServer, Reply};
use reqwest::StatusCode;

/// Entries in the large index: the scripts before the sorted-set index
/// read all of them on every login (about 13 ms of Redis time at this
/// size), the bounded ones a handful.
const LARGE: usize = 20_000;

/// A login's Redis-side work with a large index, at most: a generous
/// bound for a few sorted-set operations (tens of µs), far below what
/// reading the whole index costs.
const LOGIN_BOUND_US: u64 = 1_000;

/// Commands (from the store or from its scripts) a capped login may cost
/// with a large index: the bounded check window and eviction batch (at
/// most 64 + 10 reads and 64 evictions), far below one read per entry.
const CAPPED_LOGIN_COMMANDS: u64 = 1_000;

fn config(url: String, prefix: &str) -> RedisConfig {
    // Generous: these tests fill an index with thousands of concurrent
    // calls on a debug build.
    RedisConfig::new(url)
        .key_prefix(prefix)
        .timeout(Duration::from_secs(5))
}

fn digest() -> TokenDigest {
    OpaqueToken::generate().unwrap().digest()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs `login` `n` times, one at a time, and returns the median of the
/// server time each one's scripts cost (`SLOWLOG`, threshold 0).
async fn script_time_per_login<F, Fut>(server: &RedisServer, n: usize, mut login: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    server.slowlog_everything(1024);
    let mut per_login = Vec::new();
    for _ in 0..n {
        login().await;
        let spent: u64 = server
            .slowlog_take()
            .iter()
            .filter(|(_, args)| {
                args.first()
                    .is_some_and(|c| c.eq_ignore_ascii_case("evalsha"))
            })
            .map(|(us, _)| us)
            .sum();
        per_login.push(spent);
    }
    median(per_login)
}

/// Fills `alice`'s session index with `n` sessions (no cap).
async fn fill_sessions(store: &RedisSessionStore, clock: &SharedClock, n: usize) {
    let store = Arc::new(store.clone());
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let creates = chunk.iter().map(|_| {
            let store = Arc::clone(&store);
            let rec = record(Some("alice"), clock.now());
            async move { store.create(&digest(), &rec, None).await.unwrap() }
        });
        join_all(creates).await;
    }
}

/// One user's index of 20 000 sessions: an uncapped login costs Redis a
/// bounded time (the median over 11 logins, `SLOWLOG`), and a capped
/// login a bounded number of commands (`INFO commandstats`, scripts'
/// calls included), where the hash index read every entry on every login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_login_costs_the_same_whatever_the_index_size() {
    let server = RedisServer::start();
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let store =
        RedisSessionStore::with_clock(config(server.url(), "big").build().unwrap(), clock.clone());
    fill_sessions(&store, &clock, LARGE).await;
    assert!(server.dbsize() >= i64::try_from(LARGE).unwrap());

    let us = script_time_per_login(&server, 11, || async {
        let rec = record(Some("alice"), clock.now());
        let _ = store.create(&digest(), &rec, None).await.unwrap();
    })
    .await;
    eprintln!("session login with {LARGE} sessions indexed: {us} µs of Redis time (median)");
    assert!(us < LOGIN_BOUND_US, "{us} µs per login");

    let cap = SessionCap {
        max: 10,
        policy: CapPolicy::EvictOldest,
        replacing: None,
    };
    let before = server.command_stats();
    let key = digest();
    let outcome = store
        .create(&key, &record(Some("alice"), clock.now()), Some(cap))
        .await
        .unwrap();
    let spent = server.command_stats().since(&before);
    eprintln!("capped session login with {LARGE} sessions indexed: {spent:?}");
    assert!(
        spent.total() < CAPPED_LOGIN_COMMANDS,
        "{} commands",
        spent.total()
    );
    let CreateOutcome::Created { evicted } = outcome else {
        panic!("evict policy never refuses")
    };
    assert!(
        !evicted.is_empty() && evicted.len() <= 64,
        "{}",
        evicted.len()
    );
    assert!(store.load(&key).await.unwrap().is_some());
    for gone in &evicted {
        assert!(store.load(gone).await.unwrap().is_none(), "victims end");
    }
}

/// The cap counts live sessions only, however the others ended: a
/// session that was deleted, or ended by its idle timeout, does not count
/// (with the refuse policy, counting them would lock the user out until
/// their old sessions' absolute deadline).
#[tokio::test]
async fn ended_sessions_never_count_against_the_cap() {
    let server = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let store = RedisSessionStore::with_clock(
        config(server.url(), "ended").build().unwrap(),
        clock.clone(),
    );
    let refuse = SessionCap {
        max: 2,
        policy: CapPolicy::Refuse,
        replacing: None,
    };
    let login = || async {
        let key = digest();
        let rec: SessionRecord = record(Some("alice"), clock.now());
        (key, store.create(&key, &rec, Some(refuse)).await.unwrap())
    };
    let (first, _) = login().await;
    let (_second, _) = login().await;
    assert_eq!(login().await.1, CreateOutcome::LimitReached);
    // One logs out: room for one.
    assert!(store.delete(&first).await.unwrap());
    let (third, outcome) = login().await;
    assert!(matches!(outcome, CreateOutcome::Created { .. }));
    assert_eq!(login().await.1, CreateOutcome::LimitReached);
    // Five minutes on, the third is used (idle deadline slides); five more
    // and the second has idled out (10 min): room for one again.
    clock.advance(Duration::from_secs(300));
    store
        .touch(&third, clock.now(), clock.now() + Duration::from_secs(600))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(301));
    let (_, outcome) = login().await;
    assert!(
        matches!(outcome, CreateOutcome::Created { .. }),
        "the session that idled out does not count: {outcome:?}"
    );
    assert_eq!(login().await.1, CreateOutcome::LimitReached);
    assert_eq!(store.count_for_user("alice").await.unwrap(), 2);
}

/// Fills `alice`'s refresh index with `n` families (no cap).
async fn fill_families(store: &RedisRefreshStore, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let creates = chunk.iter().map(|_| async {
            let (fam, _) = family("alice", 0);
            store.create(&fam, None).await.unwrap();
        });
        join_all(creates).await;
    }
}

/// One user's index of 20 000 refresh families: an uncapped login costs
/// Redis a bounded time (median over 11 logins, `SLOWLOG`), a capped one
/// a bounded number of commands, and the cap evicts (a bounded batch per
/// login) the oldest families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_login_costs_the_same_whatever_the_index_size() {
    let server = RedisServer::start();
    let store = RedisRefreshStore::new(config(server.url(), "big").build().unwrap());
    fill_families(&store, LARGE).await;
    assert!(server.dbsize() >= i64::try_from(LARGE).unwrap());

    let us = script_time_per_login(&server, 11, || async {
        let (fam, _) = family("alice", 1);
        store.create(&fam, None).await.unwrap();
    })
    .await;
    eprintln!("refresh login with {LARGE} families indexed: {us} µs of Redis time (median)");
    assert!(us < LOGIN_BOUND_US, "{us} µs per login");

    let before = server.command_stats();
    let (fam, _) = family("alice", 2);
    let evicted = store.create(&fam, Some(10)).await.unwrap();
    let spent = server.command_stats().since(&before);
    eprintln!("capped refresh login with {LARGE} families indexed: {spent:?}");
    assert!(
        spent.total() < CAPPED_LOGIN_COMMANDS,
        "{} commands",
        spent.total()
    );
    assert!(
        !evicted.is_empty() && evicted.len() <= 64,
        "{}",
        evicted.len()
    );
    let now = fam.created_at;
    assert!(store.get(&fam.id, now).await.unwrap().is_some());
    for gone in &evicted {
        assert_eq!(gone.user_id, "alice");
        assert!(store.get(&gone.id, now).await.unwrap().is_none());
    }
}

fn rotation(
    token: &portcullis::refresh::RefreshToken,
    key: &RotationKey,
    now: Timestamp,
) -> Rotation {
    Rotation {
        family: token.family().clone(),
        presented: token.digest(),
        successor: token.successor(key).digest(),
        now,
        grace: Duration::from_secs(10),
        idle: Duration::from_secs(3600),
        history_limit: 8,
        device: DeviceInfo::default(),
    }
}

/// `RefreshStore::create` with a cap, in Redis: the user's oldest live
/// families beyond the cap are deleted and returned, atomically (sixteen
/// racing logins under a cap of one leave one family); families that
/// ended (idle timeout) never count, however old, and a family kept alive
/// by refreshing stays however old it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_family_cap_evicts_the_oldest_live_families() {
    let server = RedisServer::start();
    let store = Arc::new(RedisRefreshStore::new(
        config(server.url(), "cap").build().unwrap(),
    ));
    let (a, _) = family("alice", 0);
    let (b, _) = family("alice", 1);
    let (c, _) = family("alice", 2);
    assert!(store.create(&a, Some(2)).await.unwrap().is_empty());
    assert!(store.create(&b, Some(2)).await.unwrap().is_empty());
    let evicted = store.create(&c, Some(2)).await.unwrap();
    assert_eq!(
        evicted.iter().map(|f| &f.id).collect::<Vec<_>>(),
        vec![&a.id],
        "the oldest goes"
    );
    let now = c.created_at;
    assert!(store.get(&a.id, now).await.unwrap().is_none());
    let mut listed: Vec<_> = store
        .list_user("alice", now)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    listed.sort();
    let mut want = vec![b.id.clone(), c.id.clone()];
    want.sort();
    assert_eq!(listed, want);

    // bob: his oldest family is refreshed (alive), a younger one idles out
    // (1 h): a third login under a cap of two evicts nothing.
    let key = RotationKey::generate().unwrap();
    let (old, t0) = family("bob", 0);
    let (idle, _) = family("bob", 100);
    store.create(&old, Some(2)).await.unwrap();
    store.create(&idle, Some(2)).await.unwrap();
    let r = rotation(&t0, &key, old.created_at + Duration::from_secs(3000));
    assert!(matches!(
        store.rotate(&r).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    let (third, _) = family("bob", 3800);
    assert_eq!(store.create(&third, Some(2)).await.unwrap(), Vec::new());
    assert!(
        store
            .get(&old.id, third.created_at)
            .await
            .unwrap()
            .is_some(),
        "the refreshed family is live and was not evicted"
    );

    // carol: sixteen racing logins, a cap of one.
    let creates = (0..16).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let (fam, _) = family("carol", 0);
            store.create(&fam, Some(1)).await.unwrap()
        })
    });
    let evicted: usize = join_all(creates)
        .await
        .into_iter()
        .map(|r| r.unwrap().len())
        .sum();
    let live = store
        .list_user("carol", family("carol", 0).0.created_at)
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "one family fits a cap of one");
    assert_eq!(evicted, 15, "every other family was evicted and returned");
}

// ---------------------------------------------------------------------
// The revocation view's staleness bound, over HTTP.

const ISS: &str = "https://security.test";
const AUD: &str = "api";
const SYNC: Duration = Duration::from_secs(5);
const STALENESS: Duration = Duration::from_secs(1);

fn issuer() -> JwtIssuer {
    JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .lifetime(Duration::from_secs(900))
        .build()
        .unwrap()
}

/// One app instance: `/me` behind a `JwtLayer` checking `store`'s view.
async fn instance(keys: portcullis::jwt::SharedKeys, store: &RedisRevocationStore) -> TestServer {
    let jwt = JwtLayer::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .revocation(store.view())
        .build()
        .unwrap();
    serve_subject(jwt).await
}

/// A store pinging every 100 ms, reconnecting within 200 ms, its view
/// marked stale after `staleness` without a verified connection.
async fn revocations(url: String, staleness: Option<Duration>) -> RedisRevocationStore {
    let s = RedisRevocationStore::builder(RedisConfig::new(url).build().unwrap())
        .ping_interval(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(200))
        .max_staleness(staleness)
        .start()
        .unwrap();
    assert!(s.wait_synced(SYNC).await, "first snapshot");
    s
}

/// Polls `app` with `token` until it answers `want` (10 s at most);
/// returns how long that took.
async fn until(app: &TestServer, token: &str, want: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let got = me(app, token).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {got}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Instance B's path to Redis is cut while A revokes mallory. Until
/// `max_staleness` B may still accept her (it cannot know); past it, B
/// answers 503 to every JWT request, her token and alice's alike. When
/// the path is back, B reconnects, loads a fresh snapshot, accepts alice
/// and refuses mallory. With the bound turned off (`max_staleness(None)`)
/// an instance cut off the same way keeps answering 200 to mallory for as
/// long as the cut lasts: the availability trade-off the option names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_instance_answers_503_past_max_staleness_then_recovers() {
    let redis = RedisServer::start();
    let cut = CutProxy::start(redis.port()).await;
    let issuer = issuer();
    let a = revocations(redis.url(), Some(STALENESS)).await;
    let b = revocations(cut.url(), Some(STALENESS)).await;
    let unbounded = revocations(cut.url(), None).await;
    let app_b = instance(issuer.keys(), &b).await;
    let app_u = instance(issuer.keys(), &unbounded).await;
    let alice = issuer.token("alice").mint().unwrap().token;
    let mallory = issuer.token("mallory").mint().unwrap().token;
    assert_eq!(me(&app_b, &mallory).await, StatusCode::OK);

    let snapshots = b.snapshots();
    cut.cut();
    a.revoke_user("mallory").await.unwrap();
    let took = until(&app_b, &alice, StatusCode::SERVICE_UNAVAILABLE).await;
    eprintln!("cut off: 503 after {took:?} (max_staleness {STALENESS:?})");
    assert!(b.is_stale());
    assert_eq!(me(&app_b, &mallory).await, StatusCode::SERVICE_UNAVAILABLE);
    // Well past the bound, the unbounded instance still accepts her.
    tokio::time::sleep(STALENESS).await;
    assert_eq!(me(&app_u, &mallory).await, StatusCode::OK, "opted out");
    assert!(!unbounded.is_stale());

    cut.restore();
    assert!(b.wait_snapshot(snapshots, SYNC).await, "b reconnects");
    let took = until(&app_b, &alice, StatusCode::OK).await;
    eprintln!("path back: 200 after {took:?}");
    assert!(!b.is_stale());
    assert_eq!(me(&app_b, &mallory).await, StatusCode::UNAUTHORIZED);
}

/// Redis frozen (`SIGSTOP`): every socket stays open, nothing answers, so
/// the subscriber waits on replies that never come. The bound is a timer
/// of its own: the instance answers 503 past it all the same, and
/// recovers once Redis thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_trips_the_staleness_bound_too() {
    let redis = RedisServer::start();
    let issuer = issuer();
    let b = revocations(redis.url(), Some(STALENESS)).await;
    let app_b = instance(issuer.keys(), &b).await;
    let alice = issuer.token("alice").mint().unwrap().token;
    assert_eq!(me(&app_b, &alice).await, StatusCode::OK);
    redis.freeze();
    let took = until(&app_b, &alice, StatusCode::SERVICE_UNAVAILABLE).await;
    redis.thaw();
    eprintln!("frozen: 503 after {took:?} (max_staleness {STALENESS:?})");
    until(&app_b, &alice, StatusCode::OK).await;
}

/// A staleness bound no longer than a ping interval plus a call's timeout
/// would report a healthy connection stale: refused when the store starts.
#[tokio::test]
async fn a_staleness_bound_shorter_than_a_ping_is_refused() {
    let backend = RedisConfig::new("redis://127.0.0.1:1/")
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let err = RedisRevocationStore::builder(backend)
        .ping_interval(Duration::from_secs(1))
        .max_staleness(Some(Duration::from_millis(1250)))
        .start()
        .unwrap_err();
    assert!(
        matches!(err, portcullis_redis::RevocationStartError::Staleness),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------
// Denylist entries outlive their expiry by MAX_LEEWAY, in Redis and in
// snapshots.

/// A layer accepts a token up to its leeway (at most `MAX_LEEWAY`, 300 s)
/// past `exp`, so a denylist entry must outlive `exp` as long: a token
/// revoked while it expires, or one whose `exp` passed moments ago, stays
/// in Redis. Redis forgets an entry only once the revoking instance's
/// clock and the server's `TIME` both put it past `exp + MAX_LEEWAY` plus
/// 60 s for skew: an instance whose clock runs ahead prunes nothing the
/// server still keeps, and the server drops only what both agree on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_entries_outlive_their_expiry_by_the_leeway() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let now = i64::try_from(clock.now().secs()).unwrap();
    let start = || revocations_on(redis.url(), Some(clock.clone()));
    let a = start().await;
    a.revoke_token("expiring", now + 10).await.unwrap();
    a.revoke_session("fam-expiring", now + 10).await.unwrap();
    // exp 50 s ago: still inside the leeway, so stored.
    a.revoke_token("just-expired", now - 50).await.unwrap();
    // exp an hour ago by both clocks: not stored.
    a.revoke_token("long-expired", now - 3600).await.unwrap();
    let score = |key: &str, member: &str| redis.command(&["ZSCORE", key, member]);
    assert_ne!(score("portcullis:rv:t", "just-expired"), Reply::Bulk(None));
    assert_eq!(score("portcullis:rv:t", "long-expired"), Reply::Bulk(None));

    // This instance's clock runs past exp + MAX_LEEWAY + 60 s, Redis'
    // does not: its writes forget nothing.
    clock.advance(Duration::from_secs(500));
    a.revoke_token("other", now + 900).await.unwrap();
    for (key, member) in [
        ("portcullis:rv:t", "expiring"),
        ("portcullis:rv:t", "just-expired"),
        ("portcullis:rv:s", "fam-expiring"),
    ] {
        assert_ne!(score(key, member), Reply::Bulk(None), "{member} kept");
    }
    // Entries past exp + MAX_LEEWAY + 60 s by both clocks (by seconds to
    // spare either way) are dropped by the next write; those inside stay.
    let gone = (now - 300 - 60 - 30).to_string();
    let kept = (now - 300 - 60 + 30).to_string();
    assert_eq!(
        redis.command(&["ZADD", "portcullis:rv:t", &gone, "past", &kept, "inside"]),
        Reply::Int(2)
    );
    a.revoke_token("later", now + 900).await.unwrap();
    assert_eq!(score("portcullis:rv:t", "past"), Reply::Bulk(None));
    assert_ne!(score("portcullis:rv:t", "inside"), Reply::Bulk(None));
    assert_ne!(score("portcullis:rv:t", "expiring"), Reply::Bulk(None));
    assert_ne!(score("portcullis:rv:t", "other"), Reply::Bulk(None));
}

/// The snapshot an instance loads when it starts (or reconnects) carries
/// the entries whose `exp` has passed but are inside the leeway, and the
/// message of a revocation made inside the leeway reaches the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_messages_carry_entries_inside_the_leeway() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let now = i64::try_from(clock.now().secs()).unwrap();
    let start = || revocations_on(redis.url(), Some(clock.clone()));
    let a = start().await;
    let b = start().await;
    a.revoke_token("expiring", now + 10).await.unwrap();
    a.revoke_session("fam-expiring", now + 10).await.unwrap();
    clock.advance(Duration::from_secs(210));
    // exp 200 s ago, revoked now: stored and published.
    a.revoke_token("just-expired", now + 10).await.unwrap();
    a.revoke_token("just-expired-2", now).await.unwrap();
    let claims = |jti: &str| {
        let mut c = portcullis::jwt::RegisteredClaims::default();
        c.jti = Some(jti.into());
        c.sub = Some("x".into());
        c
    };
    // Published: B's view learns of both (the messages of the earlier
    // revocations may still be arriving, so wait for these two).
    let started = Instant::now();
    while ["just-expired", "just-expired-2"]
        .iter()
        .any(|j| b.view().check(&claims(j)).is_none())
    {
        assert!(started.elapsed() < SYNC, "published: {:?}", b.view());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = start().await;
    let vc = c.view();
    assert_eq!(c.messages(), 0, "all of it from the snapshot");
    for jti in ["expiring", "just-expired", "just-expired-2"] {
        assert!(vc.check(&claims(jti)).is_some(), "{jti}: {vc:?}");
    }
    assert!(vc.is_session_revoked("fam-expiring"));
}

/// `RedisBackend::clock_skew` measures this host's clock against Redis':
/// here both run on one machine, so it is within a second of zero.
#[tokio::test]
async fn the_clock_skew_against_redis_is_measured() {
    let redis = RedisServer::start();
    let backend = RedisConfig::new(redis.url()).build().unwrap();
    let skew = backend.clock_skew().await.unwrap();
    eprintln!("clock skew against Redis: {skew} ms");
    assert!(skew.abs() < 1000, "{skew} ms");
    let down = RedisConfig::new("redis://127.0.0.1:1/").build().unwrap();
    assert!(down.clock_skew().await.unwrap_err().is_unavailable());
}

// ---------------------------------------------------------------------
// One instance's clock never decides alone what every instance forgets.

/// A revocation store on `clock` whose first snapshot has loaded.
async fn revocations_on(url: String, clock: Option<Arc<ManualClock>>) -> RedisRevocationStore {
    let mut b = RedisRevocationStore::builder(RedisConfig::new(url).build().unwrap());
    if let Some(c) = clock {
        b = b.clock(c);
    }
    let s = b.start().unwrap();
    assert!(s.wait_synced(SYNC).await, "first snapshot");
    s
}

/// One app instance as [`instance`], its layer on `clock` with `leeway`.
async fn instance_on(
    keys: portcullis::jwt::SharedKeys,
    store: &RedisRevocationStore,
    clock: &Arc<ManualClock>,
    leeway: Duration,
) -> TestServer {
    let jwt = JwtLayer::builder(keys)
        .validation(Validation::default().leeway(leeway))
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .revocation(store.view())
        .build()
        .unwrap();
    serve_subject(jwt).await
}

/// The denylist set is shared by every instance: one instance whose clock
/// runs a day ahead revokes something, and the revocation another
/// instance made a moment ago is still in Redis, so an instance that
/// starts (or reconnects) afterwards loads it and refuses the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_with_a_fast_clock_never_wipes_the_shared_denylist() {
    let redis = RedisServer::start();
    let iss = issuer();
    let a = revocations_on(redis.url(), None).await;
    let fast = Arc::new(ManualClock::starting_now());
    fast.advance(Duration::from_secs(24 * 3600));
    let b = revocations_on(redis.url(), Some(fast)).await;
    let stolen = iss.token("alice").mint().unwrap();
    // Instance A: the stolen token is logged out.
    a.revoke_token(&stolen.jti, stolen.expires_at)
        .await
        .unwrap();
    // Control: an instance loading the snapshot now refuses it.
    let c0 = revocations_on(redis.url(), None).await;
    let app_c0 = instance(iss.keys(), &c0).await;
    assert_eq!(me(&app_c0, &stolen.token).await, StatusCode::UNAUTHORIZED);
    // Instance B (a day ahead) revokes something unrelated.
    b.revoke_token("unrelated", i64::MAX / 4).await.unwrap();
    // A new instance C loads the snapshot.
    let c = revocations_on(redis.url(), None).await;
    let app_c = instance(iss.keys(), &c).await;
    assert_eq!(
        me(&app_c, &stolen.token).await,
        StatusCode::UNAUTHORIZED,
        "a fast clock on another instance removed the revocation from Redis"
    );
}

/// The snapshot keeps a denylist entry through `exp + MAX_LEEWAY`, the
/// last second a layer with the largest leeway accepts its token (as the
/// view does): an instance that loads its snapshot in that second refuses
/// the revoked token, as one that loaded it a second earlier does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_snapshot_keeps_an_entry_through_the_last_accepted_second() {
    let redis = RedisServer::start();
    let iss = issuer();
    let stolen = iss.token("alice").mint().unwrap();
    let a = revocations_on(redis.url(), None).await;
    a.revoke_token(&stolen.jti, stolen.expires_at)
        .await
        .unwrap();
    let last = stolen.expires_at + i64::try_from(MAX_LEEWAY.as_secs()).unwrap();
    for (at, what) in [(last - 1, "a second before"), (last, "the last second")] {
        let clock = Arc::new(ManualClock::new(u64::try_from(at).unwrap() * 1000));
        let c = revocations_on(redis.url(), Some(clock.clone())).await;
        let app = instance_on(iss.keys(), &c, &clock, MAX_LEEWAY).await;
        assert_eq!(
            me(&app, &stolen.token).await,
            StatusCode::UNAUTHORIZED,
            "{what}: a revoked token accepted by an instance that loaded its snapshot then"
        );
    }
}

/// Alice's session S1 lives on (its record's TTL was set by instance A);
/// she logs in once more through instance B, whose clock runs 2 h ahead
/// (past S1's absolute deadline and the grace). S1 stays in her index, so
/// "log out everywhere" on A still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_instance_never_hides_a_live_session_from_logout_everywhere() {
    let redis = RedisServer::start();
    let clock_a = Arc::new(ManualClock::starting_now());
    let clock_b = Arc::new(ManualClock::starting_now());
    clock_b.advance(Duration::from_secs(2 * 3600));
    let a = RedisSessionStore::with_clock(
        config(redis.url(), "portcullis").build().unwrap(),
        clock_a.clone(),
    );
    let b = RedisSessionStore::with_clock(
        config(redis.url(), "portcullis").build().unwrap(),
        clock_b.clone(),
    );
    let stolen = digest();
    let created = a
        .create(&stolen, &record(Some("alice"), clock_a.now()), None)
        .await
        .unwrap();
    assert!(matches!(created, CreateOutcome::Created { .. }));
    assert!(a.load(&stolen).await.unwrap().is_some());
    // Alice logs in on another device; the load balancer picks B.
    let created = b
        .create(&digest(), &record(Some("alice"), clock_b.now()), None)
        .await
        .unwrap();
    assert!(matches!(created, CreateOutcome::Created { .. }));
    // Alice changes her password: log out everywhere, on A.
    a.delete_for_user("alice", None).await.unwrap();
    assert!(
        a.load(&stolen).await.unwrap().is_none(),
        "the stolen session survived log out everywhere"
    );
}

/// Instance B runs 3 s ahead of A. Alice's session S1 is 2 s from its idle
/// deadline on A, already past it on B. B lists her sessions (S1 is not
/// listed there) but leaves S1 in her index, since its record is still in
/// Redis; S1 is used on A and extended, and "log out everywhere" on A
/// ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_sessions_on_an_instance_3s_ahead_keeps_a_live_session_indexed() {
    let redis = RedisServer::start();
    let t0 = ManualClock::starting_now().now();
    let clock_a = Arc::new(ManualClock::new(t0.millis()));
    let clock_b = Arc::new(ManualClock::new(t0.millis()));
    let a = RedisSessionStore::with_clock(
        config(redis.url(), "portcullis").build().unwrap(),
        clock_a.clone(),
    );
    let b = RedisSessionStore::with_clock(
        config(redis.url(), "portcullis").build().unwrap(),
        clock_b.clone(),
    );
    let stolen = digest();
    // Idle deadline t0 + 600 s.
    let created = a
        .create(&stolen, &record(Some("alice"), t0), None)
        .await
        .unwrap();
    assert!(matches!(created, CreateOutcome::Created { .. }));
    clock_a.set(Timestamp::from_millis(t0.millis() + 598_000));
    clock_b.set(Timestamp::from_millis(t0.millis() + 601_000));
    assert!(a.load(&stolen).await.unwrap().is_some(), "live on A");
    // Alice's device list opened on B: S1 has ended there.
    assert!(b.list_for_user("alice").await.unwrap().is_empty());
    assert_eq!(b.count_for_user("alice").await.unwrap(), 0);
    // S1 is used on A and extended.
    a.touch(
        &stolen,
        clock_a.now(),
        Timestamp::from_millis(clock_a.now().millis() + 600_000),
    )
    .await
    .unwrap();
    assert_eq!(a.list_for_user("alice").await.unwrap().len(), 1);
    a.delete_for_user("alice", None).await.unwrap();
    assert!(
        a.load(&stolen).await.unwrap().is_none(),
        "a live session survived log out everywhere"
    );
}
