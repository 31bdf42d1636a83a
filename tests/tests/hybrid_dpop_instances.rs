//! hybrid-spa in DPoP mode on several instances: the replay cache lives in
//! the instances' shared store (`Stores::dpop_replay`), so a proof used on
//! one instance is refused on every other. With a cache per process, a
//! proof captured in flight could be replayed once to each other instance.

use std::sync::Arc;

use portcullis::core::SystemClock;
use portcullis::jwt::dpop::{ReplayCache, sign_proof};
use portcullis::jwt::revocation::MemoryRevocationStore;
use portcullis::jwt::{Algorithm, SigningKey};
use portcullis::refresh::MemoryRefreshStore;
use portcullis::throttle::MemoryThrottleStore;
use portcullis_redis::{RedisConfig, RedisReplayCache};
use portcullis_tests::TestServer;
use portcullis_tests::redis_harness::RedisServer;
use reqwest::StatusCode;

/// The origin both instances serve under (a load balancer in front).
const ORIGIN: &str = "https://spa.example.com";

fn stores(replay: Option<Arc<dyn ReplayCache>>) -> hybrid_spa::Stores {
    hybrid_spa::Stores {
        refresh: Arc::new(MemoryRefreshStore::new()),
        revocations: Arc::new(MemoryRevocationStore::new()),
        throttle: Arc::new(MemoryThrottleStore::new()),
        dpop_replay: replay,
    }
}

async fn instance(replay: Option<Arc<dyn ReplayCache>>) -> TestServer {
    let app = hybrid_spa::app_dpop(stores(replay), SystemClock::shared(), ORIGIN).unwrap();
    TestServer::start(app).await
}

async fn login(server: &TestServer, proof: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/auth/login"))
        .header("dpop", proof)
        .json(&serde_json::json!({"username": "alice", "password": "wonderland"}))
        .send()
        .await
        .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Two instances on one Redis: the login proof accepted by the first is
/// a replay at the second. The same two instances each on its own memory
/// cache accept it twice, which is what the shared store prevents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_used_on_one_instance_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let shared = || -> Option<Arc<dyn ReplayCache>> {
        let backend = RedisConfig::new(redis.url())
            .key_prefix("spa")
            .build()
            .unwrap();
        Some(Arc::new(RedisReplayCache::new(backend)))
    };
    let (a, b) = (instance(shared()).await, instance(shared()).await);
    let key = SigningKey::generate("client", Algorithm::ES256).unwrap();
    let proof = sign_proof(
        &key,
        "POST",
        &format!("{ORIGIN}/auth/login"),
        now(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(login(&a, &proof).await.status(), StatusCode::OK);
    let replay = login(&b, &proof).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let challenge = replay.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_dpop_proof"), "{challenge}");

    // Without the shared store each instance remembers only its own.
    let (c, d) = (instance(None).await, instance(None).await);
    let proof = sign_proof(
        &key,
        "POST",
        &format!("{ORIGIN}/auth/login"),
        now(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(login(&c, &proof).await.status(), StatusCode::OK);
    assert_eq!(login(&d, &proof).await.status(), StatusCode::OK);
}
