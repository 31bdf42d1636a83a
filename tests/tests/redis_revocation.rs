//! `RedisRevocationStore` against real redis-servers: the store's
//! behaviour (standalone and on a local three-master Redis Cluster), JWT
//! revocation across three app servers sharing one Redis with no Redis
//! call per request on the instance that checks, the propagation time
//! (median and max over 200 revocations), a subscriber cut off from Redis
//! catching up through its snapshot, and Redis going away and coming back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis::core::{Clock as _, ManualClock, SharedClock, SystemClock};
use portcullis::jwt::revocation::RevocationStore;
use portcullis::jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
use portcullis_redis::{RedisBackend, RedisConfig, RedisRevocationStore};
use portcullis_tests::TestServer;
use portcullis_tests::jwt_app::{me, serve_subject};
use portcullis_tests::redis_harness::{CutProxy, RedisCluster, RedisServer, Reply, RoundTripProxy};
use reqwest::StatusCode;

const ISS: &str = "https://revocation.test";
const AUD: &str = "api";
const SYNC: Duration = Duration::from_secs(5);
/// For the behaviour tests, which check outcomes, not latency (thousands
/// of concurrent calls on a debug build).
const TIMEOUT: Duration = Duration::from_secs(2);

/// A started store whose first snapshot has loaded; reconnects fast.
async fn store(backend: RedisBackend, clock: SharedClock) -> RedisRevocationStore {
    let s = RedisRevocationStore::builder(backend)
        .clock(clock)
        .ping_interval(Duration::from_millis(200))
        .max_backoff(Duration::from_millis(200))
        .start()
        .unwrap();
    assert!(s.wait_synced(SYNC).await, "first snapshot");
    s
}

/// Waits (1 s at most) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(1), "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn now_secs(clock: &SharedClock) -> i64 {
    i64::try_from(clock.now().secs()).unwrap()
}

/// What every deployment must do, standalone or cluster: changes reach
/// this instance's view at once and the others' by pub/sub; a store
/// started later loads everything live by snapshot (paging through
/// thousands of entries); expired entries are neither stored nor loaded;
/// versions only go up.
async fn behaviour(
    backend: impl Fn() -> RedisBackend,
) -> (RedisRevocationStore, RedisRevocationStore) {
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let now = now_secs(&clock);
    let a = store(backend(), clock.clone()).await;
    let b = store(backend(), clock.clone()).await;
    let (va, vb) = (a.view(), b.view());

    a.revoke_token("jti-1", now + 600).await.unwrap();
    assert!(
        va.check(&claims(Some("jti-1"), None, "x", 0)).is_some(),
        "own view at once"
    );
    eventually("token on b", || {
        vb.check(&claims(Some("jti-1"), None, "x", 0)).is_some()
    })
    .await;

    b.revoke_session("fam 1", now + 600).await.unwrap();
    eventually("session on a", || va.is_session_revoked("fam 1")).await;

    assert_eq!(a.revoke_user("alice").await.unwrap(), 1);
    eventually("version 1 on b", || vb.user_version("alice") == 1).await;
    assert_eq!(b.revoke_user("alice").await.unwrap(), 2);
    eventually("version 2 on a", || va.user_version("alice") == 2).await;
    assert_eq!(a.revoke_user("bob").await.unwrap(), 1);

    // Expired more than MAX_LEEWAY (300 s) plus 60 s for clock skew ago,
    // by this clock and Redis' both: no layer accepts it any more, so
    // nothing is stored and nothing published.
    a.revoke_token("stale", now - 361).await.unwrap();
    // A second revocation of the same id keeps the later expiry.
    a.revoke_token("jti-1", now + 60).await.unwrap();

    // Many entries: the snapshot pages through them.
    let many: Vec<String> = (0..2500).map(|i| format!("bulk-{i}")).collect();
    for chunk in many.chunks(100) {
        for r in join_all(chunk.iter().map(|j| a.revoke_token(j, now + 900))).await {
            r.unwrap();
        }
    }
    eventually("bulk on b", || vb.len().0 == 2501).await;

    let c = store(backend(), clock.clone()).await;
    let vc = c.view();
    assert_eq!(c.messages(), 0, "all of it from the snapshot");
    assert_eq!(vc.len(), (2501, 1, 2), "{vc:?}");
    assert!(vc.check(&claims(Some("jti-1"), None, "x", 0)).is_some());
    assert!(vc.check(&claims(Some("stale"), None, "x", 0)).is_none());
    assert!(vc.is_session_revoked("fam 1"));
    assert_eq!((vc.user_version("alice"), vc.user_version("bob")), (2, 1));
    assert_eq!(a.messages(), b.messages(), "every change reached both");
    (a, c)
}

fn claims(
    jti: Option<&str>,
    sid: Option<&str>,
    sub: &str,
    ver: u64,
) -> portcullis::jwt::RegisteredClaims {
    let mut c = portcullis::jwt::RegisteredClaims::default();
    c.jti = jti.map(Into::into);
    c.sid = sid.map(Into::into);
    c.sub = Some(sub.into());
    c.ver = Some(ver);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_behaviour_and_key_layout() {
    let server = RedisServer::start();
    let url = server.url();
    let (a, _) = behaviour(|| {
        RedisConfig::new(url.clone())
            .key_prefix("app")
            .timeout(TIMEOUT)
            .build()
            .unwrap()
    })
    .await;
    assert_eq!(
        (a.tokens_key(), a.sessions_key(), a.users_key(), a.channel()),
        ("app:rv:t", "app:rv:s", "app:rv:u", "app:rv")
    );
    assert_eq!(server.command(&["ZCARD", "app:rv:t"]), Reply::Int(2501));
    assert_eq!(
        server.command(&["ZSCORE", "app:rv:t", "stale"]),
        Reply::Bulk(None)
    );
    let exp = server.command(&["ZSCORE", "app:rv:t", "jti-1"]).text();
    let ttl = match server.command(&["TTL", "app:rv:t"]) {
        Reply::Int(n) => n,
        other => panic!("{other:?}"),
    };
    // The set lives as long as its latest entry (900 s) + MAX_LEEWAY
    // (300 s) + 60 s.
    assert!((1255..=1260).contains(&ttl), "TTL {ttl}");
    let now = i64::try_from(SystemClock.now().secs()).unwrap();
    assert!(
        (exp.parse::<i64>().unwrap() - now - 600).abs() <= 2,
        "kept the later expiry"
    );
    assert_eq!(
        server.command(&["HGET", "app:rv:u", "alice"]),
        Reply::Bulk(Some(b"2".to_vec()))
    );
    assert_eq!(
        server.command(&["TTL", "app:rv:u"]),
        Reply::Int(-1),
        "versions never expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_behaviour() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    // A prefix whose token set lives on another node than the first URL,
    // the one the subscribers connect to: messages cross the cluster bus.
    let prefix = (0..)
        .map(|i| format!("c{i}"))
        .find(|p| cluster.keyslot(&format!("{p}:rv:t")) > 5460)
        .unwrap();
    behaviour(|| {
        RedisConfig::cluster(urls.clone())
            .key_prefix(prefix.clone())
            .timeout(TIMEOUT)
            .build()
            .unwrap()
    })
    .await;
}

/// One app instance: `/me` behind a `JwtLayer` checking `view`.
async fn instance(
    keys: portcullis::jwt::SharedKeys,
    view: portcullis::jwt::revocation::RevocationView,
) -> TestServer {
    let jwt = JwtLayer::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .revocation(view)
        .build()
        .unwrap();
    serve_subject(jwt).await
}

/// Three servers on distinct ports, each with its own store (own
/// connections, own subscriber) on one Redis, no sticky routing. A user
/// revoked on A is refused on B and C; B's requests cost no Redis call
/// (Redis' command statistics and a round-trip proxy in front of B both
/// say zero); and the propagation time from A's revoke returning to B's
/// view refusing, over 200 revocations, stays under 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_revocation_reaches_every_instance_without_a_call_per_request() {
    let redis = RedisServer::start();
    let proxy = RoundTripProxy::start(redis.port()).await;
    let issuer = JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .lifetime(Duration::from_secs(900))
        .build()
        .unwrap();
    // Subscribers pinging rarely, so that any command sent during the
    // requests below shows; B through the counting proxy.
    let quiet = |url: String| async move {
        let s = RedisRevocationStore::builder(RedisConfig::new(url).build().unwrap())
            .ping_interval(Duration::from_secs(3600))
            .start()
            .unwrap();
        assert!(s.wait_synced(SYNC).await);
        s
    };
    let a = quiet(redis.url()).await;
    let b = quiet(proxy.url()).await;
    let c = quiet(redis.url()).await;
    let apps = [
        instance(issuer.keys(), a.view()).await,
        instance(issuer.keys(), b.view()).await,
        instance(issuer.keys(), c.view()).await,
    ];

    let alice = issuer.token("alice").mint().unwrap().token;
    let mallory = issuer.token("mallory").mint().unwrap().token;
    for app in &apps {
        assert_eq!(me(app, &mallory).await, StatusCode::OK);
    }
    a.revoke_user("mallory").await.unwrap();
    let (stats, exchanges) = (redis.command_stats(), proxy.exchanges());
    // Right after: the revocation is pushed; no request asks Redis.
    let started = Instant::now();
    while me(&apps[1], &mallory).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "B still accepts"
        );
    }
    assert_eq!(me(&apps[2], &mallory).await, StatusCode::UNAUTHORIZED);
    for _ in 0..200 {
        assert_eq!(me(&apps[1], &alice).await, StatusCode::OK);
        assert_eq!(me(&apps[1], &mallory).await, StatusCode::UNAUTHORIZED);
    }
    let commands = redis.command_stats().since(&stats);
    let b_exchanges = proxy.exchanges() - exchanges;
    eprintln!("400 JWT requests on B: Redis commands {commands:?}, B's round trips {b_exchanges}");
    assert_eq!(
        commands.total(),
        0,
        "no Redis call per request: {commands:?}"
    );
    assert_eq!(b_exchanges, 0, "B never spoke to Redis");

    // Propagation: A's revoke returns -> B's view refuses.
    let view_b = b.view();
    let mut times = Vec::new();
    let mut from_call = Vec::new();
    for i in 0..200 {
        let user = format!("user-{i}");
        let token = issuer.token(user.as_str()).mint().unwrap();
        let checked = claims(None, None, &user, 0);
        assert!(view_b.check(&checked).is_none());
        let called = Instant::now();
        a.revoke_user(&user).await.unwrap();
        let returned = Instant::now();
        while view_b.check(&checked).is_none() {
            assert!(
                returned.elapsed() < Duration::from_secs(1),
                "never propagated"
            );
            tokio::task::yield_now().await;
        }
        times.push(returned.elapsed());
        from_call.push(called.elapsed());
        if i % 20 == 0 {
            assert_eq!(me(&apps[1], &token.token).await, StatusCode::UNAUTHORIZED);
            // C hears of it on its own connection, not necessarily before B.
            while me(&apps[2], &token.token).await != StatusCode::UNAUTHORIZED {
                assert!(
                    returned.elapsed() < Duration::from_secs(1),
                    "never propagated to C"
                );
            }
        }
    }
    let summary = |mut t: Vec<Duration>| {
        t.sort();
        (t[t.len() / 2], t[t.len() * 99 / 100], t[t.len() - 1])
    };
    let (median, p99, max) = summary(times);
    eprintln!(
        "revocation propagation, A's revoke returned -> B's view refuses, over 200 \
         revocations: median {median:?}, p99 {p99:?}, max {max:?}"
    );
    let (c_median, c_p99, c_max) = summary(from_call);
    eprintln!("  (from A's revoke called: median {c_median:?}, p99 {c_p99:?}, max {c_max:?})");
    assert!(max < Duration::from_millis(100), "max {max:?}");
}

/// B's path to Redis fails (its connections drop, new ones are refused)
/// while Redis stays up. A revocation made on A meanwhile cannot reach B by
/// message; B's own revoke calls fail; B's view keeps what it had. When the
/// path is back, B's subscriber reconnects by itself and the snapshot it
/// loads brings the missed revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_missed_while_cut_off_arrives_by_snapshot() {
    let redis = RedisServer::start();
    let cut = CutProxy::start(redis.port()).await;
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let now = now_secs(&clock);
    let a = store(
        RedisConfig::new(redis.url()).build().unwrap(),
        clock.clone(),
    )
    .await;
    let b = store(RedisConfig::new(cut.url()).build().unwrap(), clock.clone()).await;
    let vb = b.view();
    a.revoke_user("before").await.unwrap();
    eventually("before", || vb.user_version("before") == 1).await;

    let snapshots = b.snapshots();
    cut.cut();
    eventually("b notices", || !b.is_synced()).await;
    a.revoke_user("mallory").await.unwrap();
    a.revoke_token("jti-missed", now + 600).await.unwrap();
    a.revoke_session("sid-missed", now + 600).await.unwrap();
    let started = Instant::now();
    let err = b.revoke_user("x").await.unwrap_err();
    eprintln!(
        "revoke on a cut-off instance: {:?} after {:?}",
        err.kind(),
        started.elapsed()
    );
    assert!(err.is_unavailable());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vb.user_version("mallory"), 0, "no message reached b");
    assert_eq!(vb.user_version("before"), 1, "the view keeps its state");
    let messages = b.messages();

    cut.restore();
    assert!(
        b.wait_snapshot(snapshots, SYNC).await,
        "b reconnects by itself"
    );
    assert_eq!(vb.user_version("mallory"), 1);
    assert!(
        vb.check(&claims(Some("jti-missed"), None, "x", 0))
            .is_some()
    );
    assert!(vb.is_session_revoked("sid-missed"));
    assert_eq!(b.messages(), messages, "from the snapshot, not a message");
    // And messages flow again.
    a.revoke_user("later").await.unwrap();
    eventually("later", || vb.user_version("later") == 1).await;
}

/// Redis kills the subscriber's connection (`CLIENT KILL TYPE pubsub`):
/// it reconnects, reloads, and messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_connection_resubscribes() {
    let redis = RedisServer::start();
    let clock = SystemClock::shared();
    let a = store(
        RedisConfig::new(redis.url()).build().unwrap(),
        clock.clone(),
    )
    .await;
    let b = store(RedisConfig::new(redis.url()).build().unwrap(), clock).await;
    let snapshots = b.snapshots();
    assert_eq!(
        redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(2)
    );
    assert!(b.wait_snapshot(snapshots, SYNC).await);
    assert!(a.wait_snapshot(snapshots, SYNC).await);
    a.revoke_user("alice").await.unwrap();
    let vb = b.view();
    eventually("message after resubscribe", || {
        vb.user_version("alice") == 1
    })
    .await;
}

/// Redis dies: revoke calls fail fast (503 upstream), views keep their
/// state and keep refusing what they refused. Redis restarts empty: the
/// subscribers reconnect by themselves, revoked tokens stay refused, and
/// versions keep going up from what the views hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back_empty() {
    let mut redis = RedisServer::start();
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let now = now_secs(&clock);
    let backend = || RedisConfig::new(redis.url()).build().unwrap();
    let a = store(backend(), clock.clone()).await;
    let b = store(backend(), clock.clone()).await;
    a.revoke_user("alice").await.unwrap();
    a.revoke_user("alice").await.unwrap();
    a.revoke_token("jti-1", now + 600).await.unwrap();
    let vb = b.view();
    // Both messages: the jti is published after the versions.
    eventually("b has it", || {
        vb.user_version("alice") == 2 && vb.check(&claims(Some("jti-1"), None, "x", 0)).is_some()
    })
    .await;

    let (sa, sb) = (a.snapshots(), b.snapshots());
    redis.kill();
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let err = a.revoke_user("bob").await.unwrap_err();
        took.push(started.elapsed());
        assert!(err.is_unavailable(), "{err:?}");
        let err = a.revoke_token("j", now + 600).await.unwrap_err();
        assert!(err.is_unavailable());
    }
    eprintln!("revoke with Redis down fails after {took:?}");
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(300)),
        "{took:?}"
    );
    assert_eq!(vb.user_version("alice"), 2);
    assert!(vb.check(&claims(Some("jti-1"), None, "x", 0)).is_some());

    redis.restart();
    assert!(a.wait_snapshot(sa, SYNC).await && b.wait_snapshot(sb, SYNC).await);
    assert_eq!(
        vb.user_version("alice"),
        2,
        "merged, not replaced by the empty snapshot"
    );
    assert!(vb.check(&claims(Some("jti-1"), None, "x", 0)).is_some());
    // Redis lost alice's version; the next bump starts from the view's.
    assert_eq!(b.revoke_user("alice").await.unwrap(), 3);
    let va = a.view();
    eventually("a at 3", || va.user_version("alice") == 3).await;
}

#[tokio::test]
async fn the_view_is_not_ready_until_the_first_snapshot() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let s = RedisRevocationStore::builder(RedisConfig::new(url).build().unwrap())
        .ping_interval(Duration::from_millis(200))
        .max_backoff(Duration::from_millis(200))
        .start()
        .unwrap();
    let view = s.view();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !view.is_ready(),
        "Redis down at start: the view cannot be trusted yet"
    );
    redis.restart();
    assert!(
        s.wait_synced(SYNC).await,
        "first snapshot after Redis came up"
    );
    assert!(view.is_ready());
}
