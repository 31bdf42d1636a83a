//! The shared DPoP proof replay caches (`RedisReplayCache`,
//! `PgReplayCache`, `SqliteReplayCache`) against real servers:
//!
//! - the cache contract, through two caches on two connections to one
//!   store (two instances): first use, a replay seen by the other instance,
//!   exactly one first use among racing instances, entries that expire
//!   (Redis, Redis Cluster, PostgreSQL, SQLite);
//! - a store outage is an error (the layer answers 503), never a pass;
//! - two `JwtLayer`s on two ports sharing one store: a proof accepted by
//!   one is refused by the other; with Redis cut off, 503.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use portcullis::core::{Clock as _, ManualClock, SharedClock, SystemClock};
use portcullis::jwt::dpop::{DpopPolicy, DpopVerifier, ReplayCache, ReplayCacheError};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis_redis::{RedisConfig, RedisReplayCache};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use portcullis_sql::{
    PgBackend, PgConfig, PgReplayCache, PurgeConfig, SqliteBackend, SqliteConfig,
    SqliteReplayCache, sqlx,
};
use portcullis_tests::oidc::DpopKey;
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::{
    CutProxy, RedisCluster, RedisServer, free_port, redis_command,
};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;

const TIMEOUT: Duration = Duration::from_millis(500);

/// The origin both test servers answer for (the `htu` of proofs).
const ORIGIN: &str = "https://api.portcullis.test";

fn now_secs() -> u64 {
    SystemClock.now().secs()
}

/// A fresh random-looking id (distinct per call and per process).
fn id(n: u8) -> [u8; 32] {
    use sha2::Digest as _;
    let seed = format!("{}:{n}:{:?}", std::process::id(), std::time::Instant::now());
    sha2::Sha256::digest(seed.as_bytes()).into()
}

/// The contract, on two caches over one store (two instances).
async fn contract(a: Arc<dyn ReplayCache>, b: Arc<dyn ReplayCache>) {
    let until = now_secs() + 60;
    let first = id(1);
    assert_eq!(a.first_use(&first, until).await, Ok(true), "first use");
    assert_eq!(
        a.first_use(&first, until).await,
        Ok(false),
        "replay, same instance"
    );
    assert_eq!(
        b.first_use(&first, until).await,
        Ok(false),
        "replay, other instance"
    );
    let second = id(2);
    assert_eq!(b.first_use(&second, until).await, Ok(true), "another proof");
    assert_eq!(a.first_use(&second, until).await, Ok(false));

    // A deadline at the end of time is stored (bounded by the store), not
    // an error.
    let far = id(14);
    assert_eq!(a.first_use(&far, u64::MAX).await, Ok(true));
    assert_eq!(b.first_use(&far, u64::MAX).await, Ok(false));

    // Racing instances: exactly one first use.
    let raced = id(3);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { cache.first_use(&raced, until).await })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        if t.await.unwrap().expect("the store answers") {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1, "one first use among 16 racing checks");
}

// ---------------------------------------------------------------------
// Redis

fn redis_cache(url: &str) -> RedisReplayCache {
    RedisReplayCache::new(
        RedisConfig::new(url)
            .key_prefix("dpop-test")
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    )
}

/// The contract on Redis, and its keys expire by themselves: a key lives
/// until the proof's deadline plus the 60 s grace, and a deadline long
/// past leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replay_cache_contract_and_expiry() {
    let redis = RedisServer::start();
    let (a, b) = (redis_cache(&redis.url()), redis_cache(&redis.url()));
    contract(Arc::new(a.clone()), Arc::new(b)).await;

    let fresh = id(4);
    let until = now_secs() + 30;
    assert_eq!(a.first_use(&fresh, until).await, Ok(true));
    let ttl = redis.command(&["TTL", &a.key(&fresh)]).text();
    let ttl: i64 = ttl.parse().unwrap();
    assert!((85..=91).contains(&ttl), "TTL {ttl}: the deadline + 60 s");

    // A proof whose window ended long ago: accepted once (the verifier
    // refuses it before asking), and nothing stays in Redis.
    let stale = id(5);
    assert_eq!(a.first_use(&stale, now_secs() - 120).await, Ok(true));
    assert_eq!(
        redis.command(&["EXISTS", &a.key(&stale)]).text(),
        "0",
        "an expired key is not kept"
    );
    assert_eq!(a.first_use(&stale, now_secs() - 120).await, Ok(true));
}

/// The contract on a Redis Cluster (three masters): proofs spread over
/// the nodes, each check one command on the node of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_replay_cache_contract() {
    let cluster = RedisCluster::start();
    let cache = || {
        RedisReplayCache::new(
            RedisConfig::cluster(cluster.urls())
                .key_prefix("dpop-test")
                .timeout(TIMEOUT)
                .build()
                .unwrap(),
        )
    };
    contract(Arc::new(cache()), Arc::new(cache())).await;
    let a = cache();
    let until = now_secs() + 60;
    for n in 0..30 {
        assert_eq!(a.first_use(&id(100 + n), until).await, Ok(true));
    }
    let sizes = cluster.dbsizes();
    assert!(
        sizes.iter().all(|n| *n > 0),
        "proofs on every node: {sizes:?}"
    );
}

/// Redis unreachable (killed): an error, never a first use.
#[tokio::test]
async fn redis_outage_is_an_error() {
    let mut redis = RedisServer::start();
    let cache = redis_cache(&redis.url());
    assert_eq!(cache.first_use(&id(6), now_secs() + 60).await, Ok(true));
    redis.kill();
    assert_eq!(
        cache.first_use(&id(7), now_secs() + 60).await,
        Err(ReplayCacheError::Unavailable)
    );
    // Nothing listens there at all.
    let nowhere = redis_cache(&format!("redis://127.0.0.1:{}/", free_port()));
    assert_eq!(
        nowhere.first_use(&id(8), now_secs() + 60).await,
        Err(ReplayCacheError::Unavailable)
    );
}

// ---------------------------------------------------------------------
// PostgreSQL and SQLite

/// No background purge: the tests that count rows decide when to purge.
fn no_background_purge() -> PurgeConfig {
    PurgeConfig {
        every: Duration::ZERO,
        ..PurgeConfig::default()
    }
}

async fn pg_backend(url: &str) -> PgBackend {
    let pool = PgPoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool)
        .timeout(TIMEOUT)
        .purge(no_background_purge())
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

async fn sqlite_backend(path: &std::path::Path) -> SqliteBackend {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect_with(options)
        .await
        .unwrap();
    let backend = SqliteConfig::new(pool)
        .timeout(TIMEOUT)
        .purge(no_background_purge())
        .build()
        .unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// The contract on PostgreSQL (two pools: two instances); a row past its
/// window is taken over by the next use of its id and removed by the
/// purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_cache_contract_and_expiry() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let (one, two) = (pg_backend(&url).await, pg_backend(&url).await);
    contract(
        Arc::new(PgReplayCache::new(&one)),
        Arc::new(PgReplayCache::new(&two)),
    )
    .await;

    // On a database of its own, five minutes in the past: the purge
    // deletes by the earlier of the cache's clock and the database's.
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let start = now_secs() - 300;
    let clock = Arc::new(ManualClock::new(start * 1000));
    let cache = PgReplayCache::with_clock(&pg_backend(&url).await, clock.clone() as SharedClock);
    let until = start + 10;
    let proof = id(9);
    assert_eq!(cache.first_use(&proof, until).await, Ok(true));
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cache.first_use(&proof, until).await,
        Ok(false),
        "until is inclusive"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        cache.first_use(&proof, until + 60).await,
        Ok(true),
        "a row past its window is forgotten"
    );
    assert_eq!(cache.first_use(&id(13), until + 60).await, Ok(true));
    let rows = || server.psql(&db, "SELECT count(*) FROM portcullis.dpop_replay");
    assert_eq!(rows(), "2");
    assert_eq!(
        cache.purge_expired(clock.now()).await.unwrap(),
        0,
        "live rows stay"
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(cache.purge_expired(clock.now()).await.unwrap(), 2);
    assert_eq!(rows(), "0");
}

/// The contract on SQLite (two pools on one file: two processes), with
/// the same expiry and purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replay_cache_contract_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let (one, two) = (sqlite_backend(&path).await, sqlite_backend(&path).await);
    contract(
        Arc::new(SqliteReplayCache::new(&one)),
        Arc::new(SqliteReplayCache::new(&two)),
    )
    .await;

    // In a file of its own.
    let expiry = sqlite_backend(&dir.path().join("expiry.db")).await;
    let clock = Arc::new(ManualClock::new(now_secs() * 1000));
    let cache = SqliteReplayCache::with_clock(&expiry, clock.clone() as SharedClock);
    let until = now_secs() + 10;
    let proof = id(10);
    assert_eq!(cache.first_use(&proof, until).await, Ok(true));
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cache.first_use(&proof, until).await,
        Ok(false),
        "until is inclusive"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.first_use(&proof, until + 60).await, Ok(true));
    clock.advance(Duration::from_secs(61));
    cache.purge_expired(clock.now()).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM portcullis_dpop_replay")
        .fetch_one(expiry.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the purge leaves nothing past its window");
}

/// A database that cannot answer: an error, never a first use.
#[tokio::test]
async fn sql_outage_is_an_error() {
    // PostgreSQL: nothing listens on the pool's port.
    let pool = PgPoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect_lazy(&format!(
            "postgres://portcullis@127.0.0.1:{}/none",
            free_port()
        ))
        .unwrap();
    let backend = PgConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    assert_eq!(
        PgReplayCache::new(&backend)
            .first_use(&id(11), now_secs() + 60)
            .await,
        Err(ReplayCacheError::Unavailable)
    );
    // SQLite: the table is gone.
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_backend(&dir.path().join("auth.db")).await;
    sqlx::query("DROP TABLE portcullis_dpop_replay")
        .execute(backend.pool())
        .await
        .unwrap();
    assert_eq!(
        SqliteReplayCache::new(&backend)
            .first_use(&id(12), now_secs() + 60)
            .await,
        Err(ReplayCacheError::Unavailable)
    );
}

// ---------------------------------------------------------------------
// Two layers on two ports, one shared cache

/// The issuer of the bound tokens, and one `JwtLayer` (DPoP required) per
/// cache, each on its own server.
struct TwoInstances {
    issuer: JwtIssuer,
    servers: [TestServer; 2],
}

impl TwoInstances {
    async fn start(caches: [Arc<dyn ReplayCache>; 2]) -> Self {
        let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
            .issuer("https://issuer.portcullis.test")
            .audience("api")
            .build()
            .unwrap();
        let mut servers = Vec::new();
        for cache in caches {
            let verifier = DpopVerifier::builder(ORIGIN)
                .replay_cache(cache)
                .build()
                .unwrap();
            let layer = JwtLayer::builder_for(&issuer)
                .dpop(verifier, DpopPolicy::Required)
                .build()
                .unwrap();
            let app = Router::new()
                .route(
                    "/me",
                    get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
                )
                .layer(layer);
            servers.push(TestServer::start(app).await);
        }
        let servers: [TestServer; 2] = servers.try_into().unwrap();
        Self { issuer, servers }
    }

    /// `GET /me` on instance `i` with `token` and `proof`.
    async fn get(&self, i: usize, token: &str, proof: &str) -> StatusCode {
        client()
            .get(self.servers[i].url("/me"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A token bound to `key`, and a fresh proof for `GET /me` with it.
    fn bound(&self, key: &DpopKey) -> (String, String) {
        let token = self
            .issuer
            .token("alice")
            .dpop_jkt(key.jkt())
            .mint()
            .unwrap()
            .token;
        let proof = key.proof("GET", &format!("{ORIGIN}/me"), Some(&token));
        (token, proof)
    }

    /// A proof accepted by one instance is refused by the other, and by
    /// itself; a fresh proof passes on either.
    async fn replay_refused_across(&self) {
        let key = DpopKey::generate();
        let (token, proof) = self.bound(&key);
        assert_eq!(self.get(0, &token, &proof).await, StatusCode::OK);
        assert_eq!(
            self.get(1, &token, &proof).await,
            StatusCode::UNAUTHORIZED,
            "replayed to the other instance"
        );
        assert_eq!(self.get(0, &token, &proof).await, StatusCode::UNAUTHORIZED);
        let fresh = key.proof("GET", &format!("{ORIGIN}/me"), Some(&token));
        assert_eq!(self.get(1, &token, &fresh).await, StatusCode::OK);
    }
}

/// Two instances on one Redis: a replay to the other instance is refused;
/// with one instance cut off from Redis, its answer is 503, not a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_share_a_redis_replay_cache() {
    let redis = RedisServer::start();
    let proxy = CutProxy::start(redis.port()).await;
    // No pause after a failed connection attempt: back as soon as restored.
    let via_proxy = RedisReplayCache::new(
        RedisConfig::new(proxy.url())
            .key_prefix("dpop-test")
            .timeout(TIMEOUT)
            .reconnect_backoff(Duration::ZERO)
            .build()
            .unwrap(),
    );
    let direct = redis_cache(&redis.url());
    let apps = TwoInstances::start([Arc::new(via_proxy), Arc::new(direct)]).await;
    apps.replay_refused_across().await;

    proxy.cut();
    let key = DpopKey::generate();
    let (token, proof) = apps.bound(&key);
    assert_eq!(
        apps.get(0, &token, &proof).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a cut Redis is 503, not a pass"
    );
    // Never used anywhere: the other instance takes it.
    assert_eq!(apps.get(1, &token, &proof).await, StatusCode::OK);
    proxy.restore();
    let again = key.proof("GET", &format!("{ORIGIN}/me"), Some(&token));
    assert_eq!(apps.get(0, &token, &again).await, StatusCode::OK, "back");
    assert_eq!(
        redis_command(redis.port(), &["PING"]).unwrap().text(),
        "PONG"
    );
}

/// Two instances on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_share_a_postgres_replay_cache() {
    let url = PgServer::shared().fresh_database();
    let (one, two) = (pg_backend(&url).await, pg_backend(&url).await);
    let apps = TwoInstances::start([
        Arc::new(PgReplayCache::new(&one)),
        Arc::new(PgReplayCache::new(&two)),
    ])
    .await;
    apps.replay_refused_across().await;
}

/// Two instances on one SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_share_a_sqlite_replay_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let (one, two) = (sqlite_backend(&path).await, sqlite_backend(&path).await);
    let apps = TwoInstances::start([
        Arc::new(SqliteReplayCache::new(&one)),
        Arc::new(SqliteReplayCache::new(&two)),
    ])
    .await;
    apps.replay_refused_across().await;
}
