//! Remember-me for cookie sessions, through a real axum server and a
//! manual clock, on the memory store, a real redis-server and a real
//! PostgreSQL (a remembered login's idle window lives in a reserved data
//! key, which every store must keep): a remembered login's cookie carries
//! the chosen lifetime (`Max-Age`) and the server ends the session at that
//! absolute deadline, and after its own idle window; a login that is not
//! remembered gets a browser-session cookie (no `Max-Age`) and the
//! configured timeouts; a choice longer than the configured maximum is
//! capped; `renew()` and re-authentication keep the remembered deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use portcullis::core::{ManualClock, SharedClock};
use portcullis::session::{
    AuthMethod, CurrentUser, LoginOptions, MemoryStore, Session, SessionConfig, SessionConfigError,
    SessionError, SessionLayer, SessionStore,
};
use portcullis_redis::{RedisConfig, RedisSessionStore};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::{PgConfig, PgSessionStore};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::{Owned, RedisServer};
use portcullis_tests::{TestServer, client, cookie_value, set_cookies};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde::Deserialize;

const COOKIE_NAME: &str = "__Host-session";
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The stores the reserved keys must survive.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redis,
    Postgres,
}

/// A fresh, empty store of `backend` judging time by `clock`.
async fn store(backend: Backend, clock: SharedClock) -> Arc<dyn SessionStore> {
    match backend {
        Backend::Memory => Arc::new(MemoryStore::with_clock(clock)),
        Backend::Redis => {
            let server = RedisServer::start();
            let redis = RedisConfig::new(server.url())
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            Arc::new(Owned::new(
                RedisSessionStore::with_clock(redis, clock),
                Arc::new(server),
            ))
        }
        Backend::Postgres => {
            let url = PgServer::shared().fresh_database();
            let pool = PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(2))
                .connect(&url)
                .await
                .unwrap();
            let pg = PgConfig::new(pool)
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            pg.migrate().await.unwrap();
            Arc::new(PgSessionStore::with_clock(&pg, clock))
        }
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    /// Remember the login for this many seconds (the "remember me" box).
    remember: Option<u64>,
}

async fn login(
    session: Session,
    Path(user): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Result<&'static str, SessionError> {
    let mut options = LoginOptions::new();
    if let Some(secs) = q.remember {
        options = options.remember(Duration::from_secs(secs));
    }
    session.login_with(user, options).await?;
    Ok("logged in")
}

fn app(store: Arc<dyn SessionStore>, config: SessionConfig) -> Router {
    let layer = SessionLayer::from_arc(store, config).unwrap();
    Router::new()
        .route("/login/{user}", post(login))
        .route(
            "/me",
            get(|CurrentUser(user): CurrentUser| async move { user }),
        )
        .route(
            "/renew",
            post(|s: Session| async move { s.renew().await.map(|()| "renewed") }),
        )
        .route(
            "/reauth",
            post(|s: Session| async move {
                s.reauthenticated([AuthMethod::PASSWORD])
                    .await
                    .map(|()| "confirmed")
            }),
        )
        .layer(layer)
}

struct Fixture {
    server: TestServer,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

impl Fixture {
    async fn on(backend: Backend, config: impl FnOnce(SessionConfig) -> SessionConfig) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let store = store(backend, clock.clone()).await;
        let config = config(SessionConfig::default().clock(clock.clone()));
        Self {
            server: TestServer::start(app(store, config)).await,
            clock,
            http: client(),
        }
    }

    async fn post(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(self.server.url(path));
        if let Some(c) = cookie {
            req = req.header(COOKIE, format!("{COOKIE_NAME}={c}"));
        }
        req.send().await.unwrap()
    }

    /// `POST path`, expecting 200 and a session cookie: its value and its
    /// `Set-Cookie` line.
    async fn new_cookie(&self, path: &str, cookie: Option<&str>) -> (String, String) {
        let resp = self.post(path, cookie).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let value = cookie_value(&resp, COOKIE_NAME).expect("a session cookie");
        let line = set_cookies(&resp)
            .into_iter()
            .find(|c| c.starts_with(COOKIE_NAME))
            .unwrap();
        (value, line)
    }

    /// Whether `GET /me` with `cookie` is served as `user`.
    async fn alive(&self, cookie: &str) -> bool {
        let resp = self
            .http
            .get(self.server.url("/me"))
            .header(COOKIE, format!("{COOKIE_NAME}={cookie}"))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::OK => true,
            StatusCode::UNAUTHORIZED => false,
            other => panic!("unexpected {other}"),
        }
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The `Max-Age` of a `Set-Cookie` line, if any.
fn max_age(line: &str) -> Option<u64> {
    line.split(';')
        .map(str::trim)
        .find_map(|a| a.strip_prefix("Max-Age="))
        .map(|v| v.parse().unwrap())
}

async fn a_remembered_login_carries_its_lifetime_and_dies_at_it(backend: Backend) {
    let f = Fixture::on(backend, |c| c).await;
    let (cookie, line) = f
        .new_cookie(
            &format!("/login/alice?remember={}", (14 * DAY).as_secs()),
            None,
        )
        .await;
    assert_eq!(max_age(&line), Some(14 * 24 * 3600), "{line}");
    assert!(!line.contains("Expires"), "{line}");
    // Visits within the idle window (7 days) keep it alive past the
    // configured 12 h lifetime and 30 min idle timeout...
    for _ in 0..2 {
        f.advance(6 * DAY);
        assert!(f.alive(&cookie).await);
    }
    f.advance(2 * DAY - MINUTE);
    assert!(f.alive(&cookie).await, "a minute before the deadline");
    // ...until the absolute deadline, whatever the visits.
    f.advance(MINUTE);
    assert!(!f.alive(&cookie).await, "at the deadline");
}

async fn a_remembered_login_dies_after_its_idle_window(backend: Backend) {
    let f = Fixture::on(backend, |c| c).await;
    let path = format!("/login/alice?remember={}", (14 * DAY).as_secs());
    let (visited, _) = f.new_cookie(&path, None).await;
    let (idle, _) = f.new_cookie(&path, None).await;
    f.advance(7 * DAY - MINUTE);
    assert!(f.alive(&visited).await);
    f.advance(2 * MINUTE);
    assert!(!f.alive(&idle).await, "7 days without a request");
    assert!(f.alive(&visited).await, "its window moved with the visit");
}

async fn a_login_without_remember_gets_a_browser_session_cookie(backend: Backend) {
    let f = Fixture::on(backend, |c| c).await;
    let (cookie, line) = f.new_cookie("/login/alice", None).await;
    assert_eq!(max_age(&line), None, "{line}");
    assert!(!line.contains("Expires"), "{line}");
    let (cookie, line) = f.new_cookie("/renew", Some(&cookie)).await;
    assert_eq!(max_age(&line), None, "{line}");
    // The server's deadlines stay the real limit: 30 idle minutes.
    f.advance(29 * MINUTE);
    assert!(f.alive(&cookie).await);
    f.advance(29 * MINUTE);
    assert!(f.alive(&cookie).await);
    f.advance(31 * MINUTE);
    assert!(!f.alive(&cookie).await);
}

async fn a_remember_longer_than_the_maximum_is_capped(backend: Backend) {
    let f = Fixture::on(backend, |c| c.max_remember(20 * DAY)).await;
    let (cookie, line) = f
        .new_cookie(
            &format!("/login/alice?remember={}", (90 * DAY).as_secs()),
            None,
        )
        .await;
    assert_eq!(max_age(&line), Some(20 * 24 * 3600), "{line}");
    for _ in 0..3 {
        f.advance(6 * DAY);
        assert!(f.alive(&cookie).await);
    }
    f.advance(2 * DAY);
    assert!(!f.alive(&cookie).await, "ended at the 20-day cap");
}

async fn renew_and_reauthentication_keep_the_remembered_deadline(backend: Backend) {
    let f = Fixture::on(backend, |c| c).await;
    let (cookie, _) = f
        .new_cookie(
            &format!("/login/alice?remember={}", (14 * DAY).as_secs()),
            None,
        )
        .await;
    f.advance(3 * DAY);
    let (renewed, line) = f.new_cookie("/renew", Some(&cookie)).await;
    assert_eq!(max_age(&line), Some(11 * 24 * 3600), "{line}");
    assert!(!f.alive(&cookie).await, "the old id is gone");
    f.advance(3 * DAY);
    let (reauthenticated, line) = f.new_cookie("/reauth", Some(&renewed)).await;
    assert_eq!(max_age(&line), Some(8 * 24 * 3600), "{line}");
    f.advance(6 * DAY);
    assert!(f.alive(&reauthenticated).await, "day 12");
    f.advance(2 * DAY);
    assert!(
        !f.alive(&reauthenticated).await,
        "day 14: the login's deadline"
    );
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Redis).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_every_store!(
    a_remembered_login_carries_its_lifetime_and_dies_at_it,
    a_remembered_login_dies_after_its_idle_window,
    a_login_without_remember_gets_a_browser_session_cookie,
    a_remember_longer_than_the_maximum_is_capped,
    renew_and_reauthentication_keep_the_remembered_deadline,
);

#[test]
fn the_maximum_is_checked_when_the_layer_is_built() {
    let build = |config: SessionConfig| SessionLayer::new(MemoryStore::new(), config).map(|_| ());
    assert_eq!(
        build(SessionConfig::default().max_remember(401 * DAY)),
        Err(SessionConfigError::Remember)
    );
    assert_eq!(
        build(SessionConfig::default().max_remember(Duration::ZERO)),
        Err(SessionConfigError::Remember)
    );
    assert_eq!(
        build(SessionConfig::default().remembered_idle_timeout(Duration::ZERO)),
        Err(SessionConfigError::Remember)
    );
    assert_eq!(
        build(SessionConfig::default().max_remember(400 * DAY)),
        Ok(())
    );
    assert!(matches!(
        build(SessionConfig::default().reauthentication_url("//evil.example/reauth")),
        Err(SessionConfigError::ReauthenticationUrl(_))
    ));
}
