//! The public session store conformance suite on `RedisSessionStore`,
//! against a real redis-server (one per case) and a local three-master
//! Redis Cluster; plus what only Redis can get wrong: native expiry, the
//! key layout, corrupt keys, cluster slot spread.

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::{
    Clock as _, ManualClock, OpaqueToken, SharedClock, StoreErrorKind, Timestamp, TokenDigest,
};
use portcullis::session::testing::{T0, record};
use portcullis::session::{
    CapPolicy, CreateOutcome, SessionCap, SessionStore as _, SessionUpdate, eviction_victims,
};
use portcullis_redis::testing::CommandStats;
use portcullis_redis::{RedisConfig, RedisSessionStore};
use portcullis_tests::redis_harness::{Owned, RedisCluster, RedisServer, Reply};
use serde_json::json;

/// Generous: these tests check behaviour, not latency (the fault tests
/// check the default timeout).
const TIMEOUT: Duration = Duration::from_secs(2);

/// A fresh server per store: the store keeps it alive.
async fn standalone(clock: SharedClock) -> Owned<RedisSessionStore> {
    let server = RedisServer::start();
    let backend = RedisConfig::new(server.url())
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    Owned::new(
        RedisSessionStore::with_clock(backend, clock),
        Arc::new(server),
    )
}

mod standalone {
    portcullis::session::session_store_conformance!(super::standalone);
}

/// The whole suite on one cluster (starting one takes a second or two);
/// each case gets its own key prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_conformance() {
    let cluster = RedisCluster::start();
    let cases = std::sync::atomic::AtomicU32::new(0);
    portcullis::session::testing::run_all(|clock: SharedClock| {
        let prefix = format!(
            "case{}",
            cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let backend = RedisConfig::cluster(cluster.urls())
            .key_prefix(prefix)
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        async move { RedisSessionStore::with_clock(backend, clock) }
    })
    .await;
    assert_eq!(cases.load(std::sync::atomic::Ordering::Relaxed), 11);

    // One user's sessions spread over every node (no hash tag pins them),
    // and the per-user operations, which span slots, still work.
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let backend = RedisConfig::cluster(cluster.urls())
        .key_prefix("spread")
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let store = RedisSessionStore::with_clock(backend, clock.clone());
    let before = cluster.dbsizes();
    let keys: Vec<TokenDigest> = (0..30).map(|_| digest()).collect();
    for k in &keys {
        let _ = store
            .create(k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
    }
    let after = cluster.dbsizes();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "sessions on every node: {before:?} -> {after:?}"
    );
    let slots: std::collections::BTreeSet<i64> = keys
        .iter()
        .map(|k| cluster.keyslot(&store.session_key(k)))
        .collect();
    assert!(slots.len() > 20, "sessions spread over slots");
    assert_eq!(store.count_for_user("alice").await.unwrap(), 30);
    assert_eq!(
        store
            .delete_for_user("alice", Some(&keys[0]))
            .await
            .unwrap(),
        29
    );
    assert_eq!(store.list_for_user("alice").await.unwrap().len(), 1);
    assert!(store.load(&keys[0]).await.unwrap().is_some());
    assert!(store.load(&keys[1]).await.unwrap().is_none());

    // Command statistics add up over the nodes.
    let stats = CommandStats::snapshot(store.backend()).await.unwrap();
    let by_node: u64 = cluster
        .nodes()
        .iter()
        .map(|n| n.command_stats().calls("get"))
        .sum();
    assert!(stats.calls("get") >= 32, "{stats:?}");
    assert_eq!(stats.calls("get"), by_node);
}

fn digest() -> TokenDigest {
    OpaqueToken::generate().unwrap().digest()
}

/// A store on `server` with a manual clock.
fn store_on(server: &RedisServer, prefix: &str) -> (RedisSessionStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let backend = RedisConfig::new(server.url())
        .key_prefix(prefix)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    (RedisSessionStore::with_clock(backend, clock.clone()), clock)
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    match server.command(&["PTTL", key]) {
        Reply::Int(n) => n,
        other => panic!("PTTL: {other:?}"),
    }
}

#[tokio::test]
async fn key_layout_and_nothing_secret_in_redis() {
    let server = RedisServer::start();
    let (store, clock) = store_on(&server, "app");
    let token = OpaqueToken::generate().unwrap();
    let k = token.digest();
    let _ = store
        .create(&k, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();
    let keys = match server.command(&["KEYS", "*"]) {
        Reply::Array(Some(keys)) => {
            let mut keys: Vec<String> = keys.iter().map(Reply::text).collect();
            keys.sort();
            keys
        }
        other => panic!("KEYS: {other:?}"),
    };
    assert_eq!(
        keys,
        vec![
            format!("app:s:{}", k.to_hex()),
            format!("app:ua:{{{}}}", TokenDigest::of(b"alice").to_hex()),
            format!("app:uc:{{{}}}", TokenDigest::of(b"alice").to_hex()),
        ]
    );
    let dump = server.command(&["GET", &store.session_key(&k)]).text();
    assert!(dump.contains("\"u\":\"alice\""), "{dump}");
    assert!(
        !dump.contains(&token.to_encoded()),
        "the id never reaches Redis"
    );
}

#[tokio::test]
async fn native_expiry_follows_the_session() {
    let server = RedisServer::start();
    let (store, clock) = store_on(&server, "ttl");
    let k = digest();
    let rec = record(Some("alice"), clock.now());
    let _ = store.create(&k, &rec, None).await.unwrap();
    // idle 10 min + 60 s grace.
    let ttl = pttl(&server, &store.session_key(&k));
    assert!((655_000..=660_000).contains(&ttl), "session TTL {ttl}");
    // absolute 1 h + 60 s grace.
    let ttl = pttl(&server, &store.user_index_key("alice"));
    assert!((3_655_000..=3_660_000).contains(&ttl), "index TTL {ttl}");
    clock.advance(Duration::from_secs(300));
    store
        .touch(&k, clock.now(), clock.now() + Duration::from_secs(600))
        .await
        .unwrap();
    let ttl = pttl(&server, &store.session_key(&k));
    assert!((655_000..=660_000).contains(&ttl), "extended TTL {ttl}");
}

#[tokio::test]
async fn a_delete_racing_writes_leaves_nothing_behind() {
    let server = RedisServer::start();
    let (store, clock) = store_on(&server, "race");
    let store = Arc::new(store);
    for _ in 0..20 {
        let k = digest();
        let _ = store
            .create(&k, &record(None, clock.now()), None)
            .await
            .unwrap();
        let now = clock.now();
        let writers: Vec<_> = (0..16)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let update = SessionUpdate {
                        set: [(format!("k{i}"), json!(i))].into(),
                        last_seen: now,
                        idle_deadline: now + Duration::from_secs(600),
                        ..SessionUpdate::default()
                    };
                    store.update(&k, &update).await
                })
            })
            .collect();
        assert!(store.delete(&k).await.unwrap());
        for w in writers {
            match w.await.unwrap() {
                Ok(()) => {}
                Err(e) => assert_eq!(e.kind(), StoreErrorKind::NotFound),
            }
        }
        assert_eq!(store.load(&k).await.unwrap(), None);
        assert_eq!(
            server.command(&["EXISTS", &store.session_key(&k)]),
            Reply::Int(0),
            "an in-flight write resurrected part of a deleted session"
        );
    }
}

#[tokio::test]
async fn eviction_order_matches_eviction_victims() {
    let server = RedisServer::start();
    let (store, clock) = store_on(&server, "evict");
    // Four sessions created at the same millisecond: ties go by key.
    let mut live: Vec<(TokenDigest, Timestamp)> = Vec::new();
    for _ in 0..4 {
        let k = digest();
        let _ = store
            .create(&k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
        live.push((k, clock.now()));
    }
    let cap = SessionCap {
        max: 2,
        policy: CapPolicy::EvictOldest,
        replacing: None,
    };
    let want = eviction_victims(live.clone(), &cap).unwrap();
    let outcome = store
        .create(&digest(), &record(Some("alice"), clock.now()), Some(cap))
        .await
        .unwrap();
    let CreateOutcome::Created { mut evicted } = outcome else {
        panic!("refused");
    };
    evicted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(evicted, want_sorted);
    assert_eq!(want.len(), 3);
    assert_eq!(store.count_for_user("alice").await.unwrap(), 2);
    for k in &want {
        assert!(store.load(k).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn unreadable_keys_are_corrupt_for_that_session_only() {
    let server = RedisServer::start();
    let (store, clock) = store_on(&server, "bad");
    let good = digest();
    let _ = store
        .create(&good, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();
    // Not a hash at all.
    let wrong_type = digest();
    server.command(&["SET", &store.session_key(&wrong_type), "x"]);
    assert_eq!(
        store.load(&wrong_type).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
    // A hash, not our string.
    let wrong_hash = digest();
    server.command(&["HSET", &store.session_key(&wrong_hash), "u", "alice"]);
    assert_eq!(
        store.load(&wrong_hash).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
    // JSON without its deadlines.
    let partial = digest();
    server.command(&["SET", &store.session_key(&partial), r#"{"u":"alice"}"#]);
    assert_eq!(
        store.load(&partial).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
    // A bad data value.
    let bad_json = digest();
    let _ = store
        .create(&bad_json, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();
    let text = server
        .command(&["GET", &store.session_key(&bad_json)])
        .text();
    let broken = text.replace(r#""d":{"#, r#""d":{"x":"{nope","#);
    assert_ne!(text, broken);
    server.command(&["SET", &store.session_key(&bad_json), &broken]);
    assert_eq!(
        store.load(&bad_json).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
    // Never writable, never counted; other sessions unaffected.
    for unreadable in [&wrong_type, &wrong_hash, &partial] {
        let err = store
            .touch(unreadable, clock.now(), clock.now())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::NotFound);
        let err = store
            .create(unreadable, &record(None, clock.now()), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Conflict);
    }
    assert!(store.load(&good).await.unwrap().is_some());
    assert_eq!(store.count_for_user("alice").await.unwrap(), 1);
    assert!(store.delete(&bad_json).await.unwrap());
    assert!(store.delete(&wrong_hash).await.unwrap());
}
