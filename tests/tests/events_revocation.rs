//! The revocation feeds' events, with a JWT API serving on a real socket
//! from the view they keep: the Redis subscriber (its path to a real
//! redis-server cut and restored) and the PostgreSQL listener (a real
//! server stopped and restarted) each emit `revocation_view_stale` when the
//! view goes past its staleness bound (the API answers 503) and
//! `revocation_view_recovered` when a fresh snapshot puts it back in step
//! (the API answers 200 again); a reconnect that never went stale, and
//! the first connect, emit nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::jwt::revocation::{RevocationStore as _, RevocationView};
use portcullis::jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
use portcullis_core::events::{AuthEvent, AuthEventKind, EventStream};
use portcullis_redis::{RedisConfig, RedisRevocationStore};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::{PgBackend, PgConfig, PgRevocationStore};
use portcullis_tests::TestServer;
use portcullis_tests::jwt_app::{AUD, ISS, me, serve_subject};
use portcullis_tests::otel::Metrics;
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::{CutProxy, RedisServer, Reply};
use reqwest::StatusCode;

const SYNC: Duration = Duration::from_secs(10);
const STALENESS: Duration = Duration::from_secs(1);
const PING: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(300);

fn issuer() -> JwtIssuer {
    JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .lifetime(Duration::from_secs(900))
        .build()
        .unwrap()
}

async fn api(issuer: &JwtIssuer, view: RevocationView) -> TestServer {
    serve_subject(
        JwtLayer::builder(issuer.keys())
            .issuer(ISS)
            .audience(AUD)
            .revocation(view)
            .build()
            .unwrap(),
    )
    .await
}

/// Polls `GET /me` until it answers `want` (15 s at most).
async fn until(app: &TestServer, token: &str, want: StatusCode) {
    let start = Instant::now();
    loop {
        let got = me(app, token).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(stream: &mut EventStream) -> Arc<AuthEvent> {
    tokio::time::timeout(Duration::from_secs(5), stream.recv())
        .await
        .expect("an event within 5 s")
        .expect("the bus is alive")
}

/// A feed event: its kind and source, and nothing of a request.
fn check(event: Arc<AuthEvent>, kind: &AuthEventKind, source: &str) {
    assert_eq!(&event.kind, kind);
    assert_eq!(event.source, source);
    assert_eq!(event.user, None);
    assert_eq!(event.route, None);
    assert!(!event.kind.is_audit());
}

/// Redis: the first connect and a killed subscriber connection (back
/// within the bound) emit nothing; the path cut past the bound emits
/// `revocation_view_stale` (the API answers 503), restored it emits
/// `revocation_view_recovered` once (200 again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriber_reports_stale_then_recovered() {
    let redis = RedisServer::start();
    let cut = CutProxy::start(redis.port()).await;
    let metrics = Metrics::new();
    let events = metrics.events().build();
    let mut stream = events.subscribe("t", 64);
    let store = RedisRevocationStore::builder(
        RedisConfig::new(cut.url())
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    )
    .ping_interval(PING)
    .max_backoff(PING)
    .max_staleness(Some(STALENESS))
    .events(events.clone())
    .start()
    .unwrap();
    assert!(store.wait_synced(SYNC).await);
    let issuer = issuer();
    let app = api(&issuer, store.view()).await;
    let alice = issuer.token("alice").mint().unwrap().token;
    assert_eq!(me(&app, &alice).await, StatusCode::OK);

    // A reconnect that never went stale is no recovery.
    let snapshots = store.snapshots();
    assert_eq!(
        redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(1)
    );
    assert!(store.wait_snapshot(snapshots, SYNC).await);
    assert!(
        stream.try_recv().is_none(),
        "nothing on the first connect or a reconnect in time"
    );

    cut.cut();
    until(&app, &alice, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(store.is_stale());
    check(
        next(&mut stream).await,
        &AuthEventKind::RevocationViewStale,
        "redis",
    );

    cut.restore();
    until(&app, &alice, StatusCode::OK).await;
    check(
        next(&mut stream).await,
        &AuthEventKind::RevocationViewRecovered,
        "redis",
    );
    assert!(stream.try_recv().is_none(), "once per stale spell");
    assert_eq!(metrics.event_count("revocation_view_stale", None), 1);
    assert_eq!(metrics.event_count("revocation_view_recovered", None), 1);
}

async fn pg_backend(url: &str) -> PgBackend {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    backend.migrate().await.unwrap();
    backend
}

/// PostgreSQL: the first connect and a terminated listener connection
/// (back within the bound) emit nothing; the server stopped past the bound
/// emits `revocation_view_stale` (503), restarted `revocation_view_recovered`
/// once (200 again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_listener_reports_stale_then_recovered() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let backend = pg_backend(&url).await;
    let metrics = Metrics::new();
    let events = metrics.events().build();
    let mut stream = events.subscribe("t", 64);
    let store = PgRevocationStore::builder(&backend)
        .ping_interval(PING)
        .max_backoff(PING)
        .max_staleness(Some(STALENESS))
        .events(events.clone())
        .start()
        .unwrap();
    assert!(store.wait_synced(SYNC).await);
    let issuer = issuer();
    let app = api(&issuer, store.view()).await;
    let alice = issuer.token("alice").mint().unwrap().token;
    assert_eq!(me(&app, &alice).await, StatusCode::OK);

    // A reconnect that never went stale is no recovery.
    let snapshots = store.snapshots();
    let killed: Vec<(bool,)> = portcullis_sql::sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'portcullis-revocations' AND datname = current_database()",
    )
    .fetch_all(backend.pool())
    .await
    .unwrap();
    assert_eq!(killed, vec![(true,)]);
    assert!(store.wait_snapshot(snapshots, SYNC).await);
    assert!(
        stream.try_recv().is_none(),
        "nothing on the first connect or a reconnect in time"
    );

    tokio::task::block_in_place(|| server.stop());
    until(&app, &alice, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(store.is_stale());
    check(
        next(&mut stream).await,
        &AuthEventKind::RevocationViewStale,
        "postgres",
    );

    tokio::task::block_in_place(|| server.restart());
    until(&app, &alice, StatusCode::OK).await;
    check(
        next(&mut stream).await,
        &AuthEventKind::RevocationViewRecovered,
        "postgres",
    );
    assert!(stream.try_recv().is_none(), "once per stale spell");
    assert_eq!(metrics.event_count("revocation_view_stale", None), 1);
    assert_eq!(metrics.event_count("revocation_view_recovered", None), 1);
}
