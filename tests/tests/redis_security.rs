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
//!   plus `MAX_LEEWAY`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use futures_util::future::join_all;
use portcullis::core::{Clock as _, ManualClock, SharedClock, Timestamp};
use portcullis::jwt::revocation::RevocationStore;
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::refresh::testing::family;
use portcullis::refresh::{DeviceInfo, RefreshStore, RotateOutcome, Rotation, RotationKey};
use portcullis::session::{
    CapPolicy, CreateOutcome, SessionCap, SessionRecord, SessionStore, testing::record,
};
use portcullis_core::{OpaqueToken, TokenDigest};
use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore, RedisSessionStore};
use portcullis_tests::redis_harness::{CutProxy, RedisServer, Reply};
use portcullis_tests::{TestServer, client};
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
    JwtIssuer::builder(SigningKey::hmac(Some("k"), Algorithm::HS256, &[7; 32]).unwrap())
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
    TestServer::start(
        Router::new()
            .route(
                "/me",
                get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
            )
            .layer(jwt),
    )
    .await
}

async fn me(app: &TestServer, token: &str) -> StatusCode {
    client()
        .get(app.url("/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
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
/// in Redis; only past `exp + MAX_LEEWAY` is it dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_entries_outlive_their_expiry_by_the_leeway() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let shared: SharedClock = clock.clone();
    let now = i64::try_from(clock.now().secs()).unwrap();
    let start = || async {
        let s = RedisRevocationStore::builder(RedisConfig::new(redis.url()).build().unwrap())
            .clock(shared.clone())
            .start()
            .unwrap();
        assert!(s.wait_synced(SYNC).await);
        s
    };
    let a = start().await;
    a.revoke_token("expiring", now + 10).await.unwrap();
    a.revoke_session("fam-expiring", now + 10).await.unwrap();
    // exp 50 s ago: still inside the leeway, so stored.
    a.revoke_token("just-expired", now - 50).await.unwrap();
    let score = |key: &str, member: &str| redis.command(&["ZSCORE", key, member]);
    assert_ne!(score("portcullis:rv:t", "just-expired"), Reply::Bulk(None));

    // 200 s past "expiring"'s exp: a write prunes, and a new instance
    // loads its snapshot; both keep what is inside the leeway.
    clock.advance(Duration::from_secs(210));
    a.revoke_token("other", now + 900).await.unwrap();
    for (key, member) in [
        ("portcullis:rv:t", "expiring"),
        ("portcullis:rv:t", "just-expired"),
        ("portcullis:rv:s", "fam-expiring"),
    ] {
        assert_ne!(score(key, member), Reply::Bulk(None), "{member} kept");
    }
    // Past exp + MAX_LEEWAY: dropped by the next write.
    clock.advance(Duration::from_secs(101));
    a.revoke_token("later", now + 900).await.unwrap();
    assert_eq!(score("portcullis:rv:t", "expiring"), Reply::Bulk(None));
    assert_eq!(score("portcullis:rv:t", "just-expired"), Reply::Bulk(None));
    assert_ne!(score("portcullis:rv:t", "other"), Reply::Bulk(None));
}

/// The snapshot an instance loads when it starts (or reconnects) carries
/// the entries whose `exp` has passed but are inside the leeway, and the
/// message of a revocation made inside the leeway reaches the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_messages_carry_entries_inside_the_leeway() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let shared: SharedClock = clock.clone();
    let now = i64::try_from(clock.now().secs()).unwrap();
    let start = || async {
        let s = RedisRevocationStore::builder(RedisConfig::new(redis.url()).build().unwrap())
            .clock(shared.clone())
            .start()
            .unwrap();
        assert!(s.wait_synced(SYNC).await);
        s
    };
    let a = start().await;
    let b = start().await;
    a.revoke_token("expiring", now + 10).await.unwrap();
    a.revoke_session("fam-expiring", now + 10).await.unwrap();
    clock.advance(Duration::from_secs(210));
    // exp 200 s ago, revoked now: stored and published.
    let messages = b.messages();
    a.revoke_token("just-expired", now + 10).await.unwrap();
    a.revoke_token("just-expired-2", now).await.unwrap();
    let started = Instant::now();
    while b.messages() < messages + 2 {
        assert!(started.elapsed() < SYNC, "published");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let claims = |jti: &str| {
        let mut c = portcullis::jwt::RegisteredClaims::default();
        c.jti = Some(jti.into());
        c.sub = Some("x".into());
        c
    };
    assert!(b.view().check(&claims("just-expired-2")).is_some());
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
