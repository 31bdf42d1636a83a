//! `RedisRefreshStore` against real redis-servers: the public conformance
//! suite (standalone, one server per case, and on a local three-master
//! Redis Cluster), the rotation script in lockstep with the memory store
//! (the reference for `Family::classify`/`Family::rotate`), resends, key
//! layout and native expiry, unreadable records; then the hybrid pattern
//! over HTTP on two app instances sharing Redis: rotation, reuse killing
//! the family's access token on every instance, racing refreshes across
//! instances, and a failing Redis answering 503 without consuming the
//! token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis::core::{Clock as _, ManualClock, StoreErrorKind, Timestamp};
use portcullis::jwt::revocation::RevocationStore;
use portcullis::refresh::testing::family;
use portcullis::refresh::{
    DeviceInfo, Family, FamilyId, MemoryRefreshStore, RefreshConfig, RefreshStore, RefreshToken,
    RotateOutcome, Rotation, RotationKey,
};
use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore};
use portcullis_tests::cookie_value;
use portcullis_tests::redis_harness::{Owned, RedisCluster, RedisServer, Reply};
use portcullis_tests::refresh_app::{
    COOKIE, HybridApp, api, login, post_token, read_login, refresh, start_with,
};
use reqwest::StatusCode;
use serde_json::Value;

/// Generous: these tests check behaviour, not latency (the outage test
/// uses the default timeout).
const TIMEOUT: Duration = Duration::from_secs(2);

fn config(url: String, prefix: &str) -> RedisConfig {
    RedisConfig::new(url).key_prefix(prefix).timeout(TIMEOUT)
}

/// A fresh server per store: the store keeps it alive.
async fn standalone() -> Owned<RedisRefreshStore> {
    let server = RedisServer::start();
    let store = RedisRefreshStore::new(config(server.url(), "conf").build().unwrap());
    Owned::new(store, Arc::new(server))
}

mod standalone {
    portcullis::refresh::refresh_store_conformance!(super::standalone);
}

/// The per-user family cap cases of the conformance suite, on a standalone
/// server and on a cluster (each case under its own prefix): the cap is
/// enforced in the index script, atomically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn family_cap_conformance() {
    portcullis::refresh::testing::run_family_cap(standalone).await;
    let cluster = RedisCluster::start();
    let cases = std::sync::atomic::AtomicU32::new(0);
    portcullis::refresh::testing::run_family_cap(|| {
        let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let backend = RedisConfig::cluster(cluster.urls())
            .key_prefix(format!("cap{n}"))
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        async move { RedisRefreshStore::new(backend) }
    })
    .await;
    assert_eq!(cases.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// The whole suite on one cluster, each case under its own prefix; then
/// families spread over every node, and a purge that finds them on all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_conformance() {
    let cluster = RedisCluster::start();
    let cases = std::sync::atomic::AtomicU32::new(0);
    portcullis::refresh::testing::run_all(|| {
        let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let backend = RedisConfig::cluster(cluster.urls())
            .key_prefix(format!("case{n}"))
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        async move { RedisRefreshStore::new(backend) }
    })
    .await;
    assert_eq!(cases.load(std::sync::atomic::Ordering::Relaxed), 8);

    let backend = RedisConfig::cluster(cluster.urls())
        .key_prefix("spread")
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let store = RedisRefreshStore::new(backend);
    let before = cluster.dbsizes();
    let mut fams = Vec::new();
    for _ in 0..30 {
        let (f, _) = family("alice", 0);
        store.create(&f, None).await.unwrap();
        fams.push(f);
    }
    let after = cluster.dbsizes();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "families on every node: {before:?} -> {after:?}"
    );
    assert_eq!(
        store
            .list_user("alice", fams[0].created_at)
            .await
            .unwrap()
            .len(),
        30
    );
    // Every family ended an hour later (idle timeout): the purge scans
    // every primary and finds all thirty.
    let late = fams[0].created_at + Duration::from_secs(3600);
    assert_eq!(store.purge_expired(late).await.unwrap(), 30);
    assert_eq!(
        cluster.dbsizes(),
        before,
        "families and their index all gone"
    );
    assert!(store.list_user("alice", late).await.unwrap().is_empty());
    let slots: std::collections::BTreeSet<i64> = fams
        .iter()
        .map(|f| cluster.keyslot(&store.family_key(&f.id)))
        .collect();
    assert!(slots.len() > 20, "families spread over slots");
}

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

/// The script against the memory store, the reference implementation of
/// `Family::classify` and `Family::rotate`, on the same random sequences:
/// current, previous, older, forged and mismatched tokens, at times inside
/// and outside the grace window and the idle timeout, with history limits
/// that trim. Every outcome, and every family it returns, must be equal.
#[tokio::test]
async fn the_script_matches_the_memory_store_in_lockstep() {
    let server = RedisServer::start();
    let redis = RedisRefreshStore::new(config(server.url(), "lockstep").build().unwrap());
    let memory = MemoryRefreshStore::new();
    let key = RotationKey::generate().unwrap();
    let other_key = RotationKey::generate().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let steps_ms = [
        0, 0, 1, 999, 999, 5_000, 9_999, 10_000, 10_000, 10_001, 11_000, 60_000, 1_800_000,
        3_600_000,
    ];
    let mut seen = std::collections::BTreeMap::<&str, u32>::new();
    let mut longest = 0;
    for _ in 0..100 {
        let (mut fam, t0) = family("alice", rng.next() % 1000);
        // Some families end (absolutely) before their idle timeout would.
        fam.deadlines.absolute =
            fam.created_at + Duration::from_millis(rng.pick(&[30_000, 7_200_000, 86_400_000]));
        fam.deadlines.idle = fam.deadlines.idle.min(fam.deadlines.absolute);
        redis.create(&fam, None).await.unwrap();
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
                        user_agent: Some(format!("ua {}", rng.next() % 9)),
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
            let got = redis.rotate(&r).await.unwrap();
            assert_eq!(got, want, "rotation {r:?}");
            assert_eq!(
                redis.get(&fam.id, now).await.unwrap(),
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

fn keys(server: &RedisServer) -> Vec<String> {
    match server.command(&["KEYS", "*"]) {
        Reply::Array(Some(keys)) => {
            let mut keys: Vec<String> = keys.iter().map(Reply::text).collect();
            keys.sort();
            keys
        }
        other => panic!("KEYS: {other:?}"),
    }
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    match server.command(&["PTTL", key]) {
        Reply::Int(n) => n,
        other => panic!("PTTL: {other:?}"),
    }
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

/// Writes an entry into a user's index directly (both sorted sets), with
/// `deadline` as its absolute deadline and its creation time.
fn index_entry(
    server: &RedisServer,
    store: &RedisRefreshStore,
    user: &str,
    id: &str,
    deadline: &str,
) {
    for key in [store.user_index_key(user), store.user_created_key(user)] {
        server.command(&["ZADD", &key, deadline, id]);
    }
}

/// The number of entries in a user's index (both sets agree).
fn index_len(server: &RedisServer, store: &RedisRefreshStore, user: &str) -> Reply {
    let by_created = server.command(&["ZCARD", &store.user_created_key(user)]);
    assert_eq!(
        server.command(&["ZCARD", &store.user_index_key(user)]),
        by_created
    );
    by_created
}

#[tokio::test]
async fn key_layout_native_expiry_and_nothing_secret_in_redis() {
    let server = RedisServer::start();
    let store = RedisRefreshStore::new(config(server.url(), "app").build().unwrap());
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.unwrap();
    let family_key = format!("app:rf:{{{}}}", fam.id);
    assert_eq!(store.family_key(&fam.id), family_key);
    assert_eq!(
        keys(&server),
        vec![
            family_key.clone(),
            store.user_index_key("alice"),
            store.user_created_key("alice")
        ]
    );
    assert!(store.user_index_key("alice").starts_with("app:rua:{"));
    assert!(store.user_created_key("alice").starts_with("app:ruc:{"));
    // Idle 1 h + 60 s grace; the index: absolute 1 day + 60 s.
    let ttl = pttl(&server, &family_key);
    assert!((3_655_000..=3_660_000).contains(&ttl), "family TTL {ttl}");
    let ttl = pttl(&server, &store.user_index_key("alice"));
    assert!((86_455_000..=86_460_000).contains(&ttl), "index TTL {ttl}");
    // Only digests: the token's secret never reaches Redis.
    let dump = match server.command(&["HGETALL", &family_key]) {
        Reply::Array(Some(items)) => items.iter().map(Reply::text).collect::<Vec<_>>().join(" "),
        other => panic!("HGETALL: {other:?}"),
    };
    let secret = t0.to_encoded().split_once('.').unwrap().1.to_owned();
    assert!(!dump.contains(&secret), "{dump}");
    assert!(dump.contains(&t0.digest().to_hex()));
    // A rotation 30 min later slides the native expiry with the idle deadline.
    let key = RotationKey::generate().unwrap();
    let (r, _) = rotation(&t0, &key, fam.created_at + Duration::from_secs(1800));
    assert!(matches!(
        store.rotate(&r).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    let ttl = pttl(&server, &family_key);
    assert!((3_655_000..=3_660_000).contains(&ttl), "slid TTL {ttl}");
}

/// The rotation script is safe to resend: the store resends a call once
/// when the connection broke before the reply. A resend of a rotation gets
/// the same successor; a resend of a reuse detection gets `Reused` again
/// (so the caller still kills the family's access tokens), and nothing
/// else brings the family back.
#[tokio::test]
async fn resent_rotations_answer_as_the_first_did() {
    let server = RedisServer::start();
    let store = RedisRefreshStore::new(config(server.url(), "resend").build().unwrap());
    let key = RotationKey::generate().unwrap();
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.unwrap();
    // A resent create recognises its own record... and only its own.
    assert_eq!(
        store.create(&fam, None).await.unwrap_err().kind(),
        StoreErrorKind::Conflict
    );
    let t = |s| fam.created_at + Duration::from_secs(s);
    let (r1, t1) = rotation(&t0, &key, t(100));
    let RotateOutcome::Rotated(first) = store.rotate(&r1).await.unwrap() else {
        panic!("rotated")
    };
    let RotateOutcome::Repeat(again) = store.rotate(&r1).await.unwrap() else {
        panic!("a resend is a repeat")
    };
    assert_eq!(first, again);
    assert_eq!(again.current, t1.digest());
    // t0 again, 20 s later: reuse. Its resend: reuse again.
    let (late, _) = rotation(&t0, &key, t(120));
    let RotateOutcome::Reused(gone) = store.rotate(&late).await.unwrap() else {
        panic!("reused")
    };
    assert_eq!(
        store.rotate(&late).await.unwrap(),
        RotateOutcome::Reused(gone)
    );
    // Any other presentation: the family is gone.
    let (newest, _) = rotation(&t1, &key, t(121));
    assert_eq!(store.rotate(&newest).await.unwrap(), RotateOutcome::Invalid);
    let (later, _) = rotation(&t0, &key, t(121));
    assert_eq!(store.rotate(&later).await.unwrap(), RotateOutcome::Invalid);
    assert_eq!(store.get(&fam.id, t(121)).await.unwrap(), None);
    assert!(store.list_user("alice", t(121)).await.unwrap().is_empty());
    assert_eq!(store.revoke(&fam.id).await.unwrap(), None);
    // The tombstone is short-lived.
    assert_eq!(
        server.command(&["EXISTS", &store.family_key(&fam.id)]),
        Reply::Int(0)
    );
    let (fam2, t0) = family("bob", 0);
    store.create(&fam2, None).await.unwrap();
    let (r, _) = rotation(&t0, &key, t(1));
    store.rotate(&r).await.unwrap();
    let (r2, _) = rotation(&t0, &key, t(100));
    assert!(matches!(
        store.rotate(&r2).await.unwrap(),
        RotateOutcome::Reused(_)
    ));
    let ttl = pttl(&server, &store.family_key(&fam2.id));
    assert!((1..=60_000).contains(&ttl), "tombstone TTL {ttl}");
}

#[tokio::test]
async fn unreadable_records_are_corrupt_never_rotated() {
    let server = RedisServer::start();
    let store = RedisRefreshStore::new(config(server.url(), "bad").build().unwrap());
    let key = RotationKey::generate().unwrap();
    let (good, _) = family("alice", 0);
    store.create(&good, None).await.unwrap();
    let now = good.created_at;
    // Not a hash; a hash without deadlines.
    let (wrong_type, t1) = family("alice", 0);
    server.command(&["SET", &store.family_key(&wrong_type.id), "x"]);
    let (partial, t2) = family("alice", 0);
    server.command(&[
        "HSET",
        &store.family_key(&partial.id),
        "u",
        "alice",
        "cur",
        &t2.digest().to_hex(),
    ]);
    for (f, t) in [(&wrong_type, &t1), (&partial, &t2)] {
        let (r, _) = rotation(t, &key, now);
        assert_eq!(
            store.rotate(&r).await.unwrap_err().kind(),
            StoreErrorKind::Corrupt,
            "{f:?}"
        );
        assert_eq!(
            store.get(&f.id, now).await.unwrap_err().kind(),
            StoreErrorKind::Corrupt
        );
        assert_eq!(
            store.create(f, None).await.unwrap_err().kind(),
            StoreErrorKind::Conflict
        );
    }
    // Listed as dead in alice's index (pruned), never as hers.
    for id in [wrong_type.id.as_str(), partial.id.as_str(), "junk"] {
        index_entry(&server, &store, "alice", id, "99999999999999");
    }
    let list = store.list_user("alice", now).await.unwrap();
    assert_eq!(
        list.iter().map(|f| &f.id).collect::<Vec<_>>(),
        vec![&good.id]
    );
    assert_eq!(
        index_len(&server, &store, "alice"),
        Reply::Int(1),
        "dead entries pruned"
    );
    // Purge leaves unreadable records alone.
    assert_eq!(store.purge_expired(now).await.unwrap(), 0);
    assert_eq!(
        server.command(&["EXISTS", &store.family_key(&partial.id)]),
        Reply::Int(1)
    );
}

/// Families whose keys Redis dropped (native expiry) leave the index on
/// the next read; log out everywhere reaches every family listed, and
/// never another user's family that an index names.
#[tokio::test]
async fn the_user_index_follows_the_families() {
    let server = RedisServer::start();
    let store = RedisRefreshStore::new(config(server.url(), "idx").build().unwrap());
    let fams: Vec<Family> = (0..4).map(|_| family("alice", 0).0).collect();
    for f in &fams {
        store.create(f, None).await.unwrap();
    }
    let bob = family("bob", 0).0;
    store.create(&bob, None).await.unwrap();
    let now = fams[0].created_at;
    server.command(&["DEL", &store.family_key(&fams[0].id)]);
    index_entry(&server, &store, "alice", bob.id.as_str(), "99999999999999");
    assert_eq!(store.list_user("alice", now).await.unwrap().len(), 3);
    assert_eq!(index_len(&server, &store, "alice"), Reply::Int(3));
    index_entry(&server, &store, "alice", bob.id.as_str(), "99999999999999");
    let gone = store.revoke_user("alice", Some(&fams[1].id)).await.unwrap();
    assert_eq!(gone.len(), 2);
    assert!(
        store.get(&bob.id, now).await.unwrap().is_some(),
        "bob's family untouched"
    );
    assert!(store.get(&fams[1].id, now).await.unwrap().is_some());
    assert_eq!(
        server.command(&["ZRANGE", &store.user_created_key("alice"), "0", "-1"]),
        Reply::Array(Some(vec![Reply::Bulk(Some(
            fams[1].id.as_str().as_bytes().to_vec()
        ))]))
    );
    // A new login on a full index drops the entries past their absolute
    // deadline (+ grace).
    index_entry(&server, &store, "alice", "AAAAAAAAAAAAAAAAAAAAAA", "1");
    store.create(&family("alice", 0).0, None).await.unwrap();
    assert_eq!(index_len(&server, &store, "alice"), Reply::Int(2));
}

// ---------------------------------------------------------------------
// The hybrid pattern over HTTP, on Redis, two instances.

/// Two app instances (own stores, own connections, own subscribers) on
/// one Redis, sharing the clock, the signing key (the test app's) and the
/// rotation key, as instances behind a load balancer must.
async fn instances(redis_url: &str, prefix: &str) -> (Vec<HybridApp>, Vec<RedisRevocationStore>) {
    let clock = Arc::new(ManualClock::starting_now());
    let key = RotationKey::from_bytes(&[9; 32]).unwrap();
    let mut apps = Vec::new();
    let mut revs = Vec::new();
    for _ in 0..2 {
        let backend = RedisConfig::new(redis_url)
            .key_prefix(prefix)
            .build()
            .unwrap();
        let rev = revocation_store(backend.clone(), clock.clone()).await;
        let store: Arc<dyn RefreshStore> = Arc::new(RedisRefreshStore::new(backend));
        let revocations: Arc<dyn RevocationStore> = Arc::new(rev.clone());
        let key = key.clone();
        apps.push(
            start_with(
                Some(store),
                Some(revocations),
                move |c: RefreshConfig| c.rotation_key(key),
                clock.clone(),
            )
            .await,
        );
        revs.push(rev);
    }
    (apps, revs)
}

/// A revocation store on `backend` whose subscriber has loaded its first
/// snapshot (and reconnects quickly after an outage).
async fn revocation_store(
    backend: portcullis_redis::RedisBackend,
    clock: Arc<ManualClock>,
) -> RedisRevocationStore {
    let rev = RedisRevocationStore::builder(backend)
        .clock(clock)
        .max_backoff(Duration::from_millis(200))
        .start()
        .unwrap();
    assert!(rev.wait_synced(Duration::from_secs(5)).await);
    rev
}

/// Polls `app` until `access` is refused; returns how long that took.
async fn refused_within(app: &HybridApp, access: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if api(app, access).await == StatusCode::UNAUTHORIZED {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "still accepted after {limit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_reuse_across_instances() {
    let server = RedisServer::start();
    let (apps, _revs) = instances(&server.url(), "hybrid").await;
    let (a, b) = (&apps[0], &apps[1]);
    // Log in on A, refresh on B, refresh again on A: one chain.
    let l = login(a, "alice").await;
    assert_eq!(api(b, &l.access).await, StatusCode::OK);
    let resp = refresh(b, &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r1 = read_login(resp).await;
    assert_ne!(r1.refresh, l.refresh);
    let resp = refresh(a, &r1.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r2 = read_login(resp).await;
    assert_eq!(api(a, &r2.access).await, StatusCode::OK);
    assert_eq!(api(b, &r2.access).await, StatusCode::OK);
    // Another device of alice's stays alive throughout.
    let other = login(b, "alice").await;
    // r1 presented on B 11 s after its rotation: reuse. The family dies,
    // and its live access token is refused on A (the reuse was on B) as
    // well as on B.
    a.clock.advance(Duration::from_secs(11));
    let resp = refresh(b, &r1.refresh).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api(b, &r2.access).await, StatusCode::UNAUTHORIZED);
    let took = refused_within(a, &r2.access, Duration::from_millis(100)).await;
    eprintln!("reuse on B: the family's access token refused on A after {took:?}");
    assert_eq!(
        refresh(a, &r2.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api(a, &other.access).await, StatusCode::OK);
    assert_eq!(api(b, &other.access).await, StatusCode::OK);
    let events = b.events.reuses();
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_refreshes_racing_on_two_instances_leave_one_successor() {
    let server = RedisServer::start();
    let (apps, _revs) = instances(&server.url(), "race").await;
    for round in 0..3 {
        let l = login(&apps[0], &format!("user{round}")).await;
        let responses = join_all((0..20).map(|i| refresh(&apps[i % 2], &l.refresh))).await;
        let mut successors = std::collections::BTreeSet::new();
        for resp in responses {
            assert_eq!(resp.status(), StatusCode::OK, "every racer succeeds");
            successors.insert(cookie_value(&resp, COOKIE).unwrap());
        }
        assert_eq!(successors.len(), 1, "one successor: {successors:?}");
        let successor = successors.into_iter().next().unwrap();
        let id = FamilyId::parse(l.refresh.split_once('.').unwrap().0).unwrap();
        let stored = RedisRefreshStore::new(
            RedisConfig::new(server.url())
                .key_prefix("race")
                .build()
                .unwrap(),
        )
        .get(&id, apps[0].clock.now())
        .await
        .unwrap()
        .unwrap();
        assert_eq!(stored.rotations, 1, "exactly one rotation");
        assert_eq!(
            stored.current,
            RefreshToken::parse(&successor).unwrap().digest()
        );
        // The successor works on either instance.
        assert_eq!(
            refresh(&apps[1 - round % 2], &successor).await.status(),
            StatusCode::OK
        );
    }
}

/// Redis stops answering (frozen): refresh answers 503 with `Retry-After`
/// within the default timeout, and the refresh token is not consumed: it
/// works once Redis is back. Then Redis dies and restarts with its data
/// (saved first): the first refresh after it works (reconnect + resend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redis_gives_503_and_the_token_survives() {
    let mut server = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let backend = RedisConfig::new(server.url())
        .key_prefix("outage")
        .build()
        .unwrap();
    let rev = revocation_store(backend.clone(), clock.clone()).await;
    let app = start_with(
        Some(Arc::new(RedisRefreshStore::new(backend))),
        Some(Arc::new(rev.clone())),
        |c| c,
        clock,
    )
    .await;
    let l = login(&app, "alice").await;
    server.freeze();
    let started = Instant::now();
    let resp = refresh(&app, &l.refresh).await;
    let took = started.elapsed();
    server.thaw();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    eprintln!("refresh with Redis frozen: 503 after {took:?}");
    assert!(took < Duration::from_millis(600), "{took:?}");
    let resp = refresh(&app, &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK, "the token survived");
    let next = read_login(resp).await;

    server.command(&["SAVE"]);
    let snapshots = rev.snapshots();
    server.kill();
    let started = Instant::now();
    let resp = refresh(&app, &next.refresh).await;
    let took = started.elapsed();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    eprintln!("refresh with Redis killed: 503 after {took:?}");
    assert!(took < Duration::from_millis(300), "{took:?}");
    server.restart();
    assert!(
        rev.wait_snapshot(snapshots, Duration::from_secs(5)).await,
        "the subscriber is back"
    );
    let resp = refresh(&app, &next.refresh).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the token survived the restart"
    );
}

/// Log out this device on A: its access token is refused on B within
/// 100 ms, another device's is not. Log out everywhere on B: every access
/// token of the user is refused on A, another user's is not, and a new
/// login (minted with the new version, on either instance) works on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_on_one_instance_kill_access_tokens_on_the_other() {
    let server = RedisServer::start();
    let (apps, _revs) = instances(&server.url(), "logout").await;
    let (a, b) = (&apps[0], &apps[1]);
    let phone = login(a, "alice").await;
    let laptop = login(b, "alice").await;
    let bob = login(a, "bob").await;
    let resp = post_token(a, "/auth/logout", &phone.refresh).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let took = refused_within(b, &phone.access, Duration::from_millis(100)).await;
    eprintln!("logout on A: the device's access token refused on B after {took:?}");
    assert_eq!(
        refresh(b, &phone.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api(b, &laptop.access).await, StatusCode::OK);
    assert_eq!(api(a, &laptop.access).await, StatusCode::OK);

    let second = login(a, "alice").await;
    let resp = post_token(b, "/auth/logout-everywhere", &laptop.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"ended": 2})
    );
    for access in [&laptop.access, &second.access] {
        refused_within(a, access, Duration::from_millis(100)).await;
        assert_eq!(api(b, access).await, StatusCode::UNAUTHORIZED);
    }
    for token in [&laptop.refresh, &second.refresh] {
        assert_eq!(refresh(a, token).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(api(a, &bob.access).await, StatusCode::OK, "bob untouched");
    let again = login(b, "alice").await;
    assert_eq!(
        api(a, &again.access).await,
        StatusCode::OK,
        "new version known on A"
    );
    assert_eq!(api(b, &again.access).await, StatusCode::OK);
}
