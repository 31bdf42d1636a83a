//! The SQL session store behind a real `SessionLayer` on a real socket:
//! one statement per authenticated request (counted by PostgreSQL's
//! `pg_stat_statements`), and a database outage answered with 503 and
//! `Retry-After`, then service resumed with no session lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::session::SessionConfig;
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::{PgConfig, PgSessionStore};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::{TestServer, client, cookie_value, session_app};
use reqwest::StatusCode;

const REQUESTS: u64 = 100;
const COOKIE: &str = "__Host-session";

/// The session app on PostgreSQL at `url`, the pool as `Database::connect`
/// builds it (no ping on checkout).
async fn app(url: &str, timeout: Duration) -> TestServer {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .test_before_acquire(false)
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool).timeout(timeout).build().unwrap();
    backend.migrate().await.unwrap();
    TestServer::start(session_app::router(
        Arc::new(PgSessionStore::new(&backend)),
        SessionConfig::default(),
    ))
    .await
}

async fn login(app: &TestServer) -> String {
    let resp = client().post(app.url("/login/alice")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    format!("{COOKIE}={}", cookie_value(&resp, COOKIE).unwrap())
}

async fn me(app: &TestServer, cookie: &str) -> reqwest::Response {
    client()
        .get(app.url("/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_authenticated_request_is_one_statement() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url);
    let app = app(&url, Duration::from_secs(2)).await;
    server.reset_statement_stats(db);
    let cookie = login(&app).await;
    assert_eq!(me(&app, &cookie).await.status(), StatusCode::OK);
    // The login's write starts the store's first background purge (then at
    // most one a minute). It runs beside the requests, not in them: wait
    // until its statement has finished so it does not land in the count.
    let waited = Instant::now();
    while !server
        .statement_stats(db)
        .iter()
        .any(|(_, query)| query.starts_with("DELETE") && query.contains("SKIP LOCKED"))
    {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the first background purge never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.reset_statement_stats(db);
    for _ in 0..REQUESTS {
        assert_eq!(me(&app, &cookie).await.status(), StatusCode::OK);
    }
    let stats = server.statement_stats(db);
    eprintln!("{REQUESTS} authenticated requests -> {stats:?}");
    let total: u64 = stats.iter().map(|(calls, _)| calls).sum();
    assert_eq!(total, REQUESTS, "one statement per request: {stats:?}");
    assert!(
        stats[0].1.trim_start().starts_with("SELECT"),
        "the one statement is the load: {stats:?}"
    );
}

#[tokio::test]
async fn a_database_outage_is_a_503_then_service_resumes_with_no_session_lost() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let timeout = Duration::from_millis(500);
    let app = app(&url, timeout).await;
    let cookie = login(&app).await;
    assert_eq!(me(&app, &cookie).await.status(), StatusCode::OK);

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let resp = me(&app, &cookie).await;
        let took = started.elapsed();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key("retry-after"));
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "a problem+json body"
        );
        assert!(
            took < timeout * 3,
            "answered within the bound (took {took:?})"
        );
        // A login during the outage is refused too, never a session that
        // was not stored.
        let resp = client().post(app.url("/login/bob")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(cookie_value(&resp, COOKIE).is_none());
    }

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = me(&app, &cookie).await.status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "never 401 (logged out) or 500 while it recovers"
        );
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another connection of the pool, killed by the server, is survived.
    server.terminate_connections(PgServer::database_of(&url));
    assert_eq!(me(&app, &cookie).await.status(), StatusCode::OK);
}
