//! One network round trip to load a session on an authenticated request,
//! measured two independent ways: Redis' own `INFO commandstats` (commands
//! the server ran) and a TCP proxy counting request/reply exchanges
//! between the store and Redis. A deadpool pool's per-checkout health check
//! is measured too, to show what the multiplexed connection saves.

use std::sync::Arc;

use portcullis::session::SessionConfig;
use portcullis_redis::deadpool_redis::{self, Runtime};
use portcullis_redis::{RedisConfig, RedisSessionStore};
use portcullis_tests::redis_harness::{RedisServer, RoundTripProxy};
use portcullis_tests::{TestServer, client, cookie_value, session_app};
use reqwest::StatusCode;

const REQUESTS: u64 = 100;
const COOKIE: &str = "__Host-session";

/// Logs in, warms the connection up, then sends `REQUESTS` authenticated
/// `GET /me` one after the other; returns (commands by name, exchanges).
async fn measure(
    redis: &RedisServer,
    proxy: &RoundTripProxy,
    config: RedisConfig,
) -> (portcullis_redis::testing::CommandStats, u64) {
    let store = RedisSessionStore::new(config.build().unwrap());
    let app = TestServer::start(session_app::router(
        Arc::new(store),
        SessionConfig::default(),
    ))
    .await;
    let http = client();
    let resp = http.post(app.url("/login/alice")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = format!("{COOKIE}={}", cookie_value(&resp, COOKIE).unwrap());
    let me = || http.get(app.url("/me")).header("cookie", &cookie).send();
    assert_eq!(me().await.unwrap().status(), StatusCode::OK);

    let stats = redis.command_stats();
    let exchanges = proxy.exchanges();
    for _ in 0..REQUESTS {
        assert_eq!(me().await.unwrap().status(), StatusCode::OK);
    }
    (
        redis.command_stats().since(&stats),
        proxy.exchanges() - exchanges,
    )
}

#[tokio::test]
async fn one_round_trip_per_authenticated_request() {
    let redis = RedisServer::start();
    let proxy = RoundTripProxy::start(redis.port()).await;
    let (commands, exchanges) = measure(&redis, &proxy, RedisConfig::new(proxy.url())).await;
    eprintln!(
        "multiplexed: {REQUESTS} authenticated requests -> {commands:?}, {exchanges} round trips"
    );
    assert_eq!(commands.calls("get"), REQUESTS);
    assert_eq!(
        commands.total(),
        REQUESTS,
        "one command per request, nothing else: {commands:?}"
    );
    assert_eq!(exchanges, REQUESTS, "one round trip per request");
}

#[tokio::test]
async fn a_deadpool_pool_costs_a_second_round_trip() {
    let redis = RedisServer::start();
    let proxy = RoundTripProxy::start(redis.port()).await;
    let pool = deadpool_redis::Config::from_url(proxy.url())
        .create_pool(Some(Runtime::Tokio1))
        .unwrap();
    let (commands, exchanges) = measure(&redis, &proxy, RedisConfig::from_pool(pool)).await;
    eprintln!("pool: {REQUESTS} authenticated requests -> {commands:?}, {exchanges} round trips");
    // Each checkout: UNWATCH + PING (pipelined, one exchange), then GET.
    assert_eq!(commands.calls("get"), REQUESTS);
    assert_eq!(commands.calls("ping"), REQUESTS);
    assert_eq!(commands.calls("unwatch"), REQUESTS);
    assert_eq!(exchanges, 2 * REQUESTS);
}
