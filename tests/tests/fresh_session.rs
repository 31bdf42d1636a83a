//! Fresh login ("sudo mode") for cookie sessions, through a real axum
//! server and a manual clock, on the memory store, a real redis-server and
//! a real PostgreSQL (the authentication time lives in reserved data keys,
//! which every store must keep): the guard refuses a 20-minute-old login
//! at `within(10 min)` (a page: 303 to the re-authentication form with
//! `next`; an API: 401 `login_not_fresh` with `max_age`) and lets it
//! through once the password was entered again; `renew()` never makes a
//! login fresh; the application cannot write the reserved keys; a
//! password change logs the user's other sessions out at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, extract::Query};
use portcullis::core::{Clock as _, ManualClock, SharedClock, StoreError, Timestamp, TokenDigest};
use portcullis::session::testing::FaultyStore;
use portcullis::session::{
    AuthMethod, CreateOutcome, CurrentUser, FreshLogin, LoginOptions, MemoryStore,
    RequireFreshLogin, Session, SessionCap, SessionConfig, SessionError, SessionLayer,
    SessionRecord, SessionStore, SessionUpdate,
};
use portcullis_redis::{RedisConfig, RedisSessionStore};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::{PgConfig, PgSessionStore};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::{Owned, RedisServer};
use portcullis_tests::{TestServer, client, cookie_value};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION};
use serde::Deserialize;
use serde_json::{Value, json};

const COOKIE_NAME: &str = "__Host-session";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const MINUTE: Duration = Duration::from_secs(60);

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
    methods: Option<String>,
}

async fn login(
    session: Session,
    Path(user): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Result<&'static str, SessionError> {
    let mut options = LoginOptions::new();
    if let Some(methods) = q.methods {
        options = options.methods(
            methods
                .split(',')
                .map(|m| AuthMethod::new(m.to_owned()).unwrap()),
        );
    }
    session.login_with(user, options).await?;
    Ok("logged in")
}

/// The user, when and how they authenticated; 401 without a user.
async fn me(CurrentUser(user): CurrentUser, session: Session) -> Result<Json<Value>, SessionError> {
    let methods: Vec<String> = session
        .auth_methods()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Json(json!({
        "user": user,
        "authenticated_at": session.authenticated_at().await?.map(|t| t.millis()),
        "methods": methods,
    })))
}

async fn set(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&key, value).await?;
    Ok("set")
}

async fn remove(session: Session, Path(key): Path<String>) -> Result<&'static str, SessionError> {
    session.remove(&key).await?;
    Ok("removed")
}

/// The form the guard sends stale pages to; here the password is taken as
/// checked.
async fn reauth(session: Session) -> Result<&'static str, SessionError> {
    session.reauthenticated([AuthMethod::PASSWORD]).await?;
    Ok("confirmed")
}

async fn change_password(session: Session) -> Result<Json<Value>, SessionError> {
    let ended = session.password_changed().await?;
    Ok(Json(json!({ "ended": ended })))
}

async fn delete_account(fresh: FreshLogin<600>) -> Json<Value> {
    let methods: Vec<String> = fresh.methods.iter().map(ToString::to_string).collect();
    Json(json!({ "deleting": fresh.user, "methods": methods }))
}

fn app(store: Arc<dyn SessionStore>, config: SessionConfig) -> Router {
    let layer = SessionLayer::from_arc(store, config).unwrap();
    let guarded = Router::new()
        .route(
            "/account/password",
            get(|| async { "the change password form" }),
        )
        .route("/api/password", post(change_password))
        .route_layer(RequireFreshLogin::within(10 * MINUTE));
    Router::new()
        .route("/login/{user}", post(login))
        .route("/me", get(me))
        .route("/set/{key}/{value}", post(set))
        .route("/remove/{key}", post(remove))
        .route("/reauth", post(reauth))
        .route(
            "/renew",
            post(|s: Session| async move { s.renew().await.map(|()| "renewed") }),
        )
        .route("/password", post(change_password))
        .route("/account/delete", post(delete_account))
        .merge(guarded)
        .layer(layer)
}

struct Fixture {
    server: TestServer,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

impl Fixture {
    async fn on(backend: Backend) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let store = store(backend, clock.clone()).await;
        Self::with_store(store, clock).await
    }

    async fn with_store(store: Arc<dyn SessionStore>, clock: Arc<ManualClock>) -> Self {
        let config = SessionConfig::default()
            .clock(clock.clone())
            .reauthentication_url("/reauth");
        Self::with_config(store, clock, config).await
    }

    async fn with_config(
        store: Arc<dyn SessionStore>,
        clock: Arc<ManualClock>,
        config: SessionConfig,
    ) -> Self {
        Self {
            server: TestServer::start(app(store, config)).await,
            clock,
            http: client(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.server.url(path));
        if let Some(c) = cookie {
            req = req.header(COOKIE, format!("{COOKIE_NAME}={c}"));
        }
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        req.send().await.unwrap()
    }

    async fn post(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, cookie, None).await
    }

    /// Logs `user` in; the session cookie's value.
    async fn login(&self, user: &str) -> String {
        let resp = self.post(&format!("/login/{user}"), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        cookie_value(&resp, COOKIE_NAME).expect("a session cookie")
    }

    /// `POST path`, expecting 200 and a new session cookie; its value.
    async fn renewed_by(&self, path: &str, cookie: &str) -> String {
        let resp = self.post(path, Some(cookie)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let new = cookie_value(&resp, COOKIE_NAME).expect("a new session cookie");
        assert_ne!(new, cookie, "{path} moves the session to a new id");
        new
    }

    /// `GET /me`: the status and the body.
    async fn me(&self, cookie: &str) -> (StatusCode, Value) {
        let resp = self
            .send(reqwest::Method::GET, "/me", Some(cookie), None)
            .await;
        (resp.status(), resp.json().await.unwrap())
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().millis()
    }
}

/// The guarded page, the guarded API and the extractor all refuse a
/// login that is too old, each in its own way.
async fn assert_not_fresh(f: &Fixture, cookie: &str) {
    let page = f
        .send(
            reqwest::Method::GET,
            "/account/password?tab=security",
            Some(cookie),
            Some(HTML),
        )
        .await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()[LOCATION],
        "/reauth?next=/account/password%3Ftab%3Dsecurity"
    );
    for (path, method) in [
        ("/account/password", reqwest::Method::GET),
        ("/api/password", reqwest::Method::POST),
        ("/account/delete", reqwest::Method::POST),
    ] {
        let resp = f
            .send(method, path, Some(cookie), Some("application/json"))
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["reason"], "login_not_fresh", "{path}: {body}");
        assert_eq!(body["max_age"], 600, "{path}: {body}");
        assert_eq!(body["status"], 401);
    }
}

async fn assert_fresh(f: &Fixture, cookie: &str) {
    let page = f
        .send(
            reqwest::Method::GET,
            "/account/password",
            Some(cookie),
            Some(HTML),
        )
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.text().await.unwrap(), "the change password form");
    let resp = f.post("/account/delete", Some(cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["deleting"], "alice");
}

async fn a_twenty_minute_old_login_is_refused_until_the_password_is_entered_again(
    backend: Backend,
) {
    let f = Fixture::on(backend).await;
    let cookie = f.login("alice").await;
    let logged_in_at = f.now_ms();
    assert_fresh(&f, &cookie).await;

    f.clock.advance(20 * MINUTE);
    assert_not_fresh(&f, &cookie).await;
    // Still logged in: only the sensitive routes refuse.
    let (status, me) = f.me(&cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["authenticated_at"], logged_in_at);

    let cookie = f.renewed_by("/reauth", &cookie).await;
    assert_fresh(&f, &cookie).await;
    let (_, me) = f.me(&cookie).await;
    assert_eq!(me["user"], "alice");
    assert_eq!(me["authenticated_at"], f.now_ms());
    assert_eq!(me["methods"], json!(["pwd"]));

    // And stale again once the new window has passed.
    f.clock.advance(11 * MINUTE);
    assert_not_fresh(&f, &cookie).await;
}

async fn renew_never_makes_an_old_login_fresh(backend: Backend) {
    let f = Fixture::on(backend).await;
    let cookie = f.login("alice").await;
    let logged_in_at = f.now_ms();
    f.clock.advance(20 * MINUTE);
    let cookie = f.renewed_by("/renew", &cookie).await;
    assert_not_fresh(&f, &cookie).await;
    let (_, me) = f.me(&cookie).await;
    assert_eq!(me["authenticated_at"], logged_in_at);
    assert_eq!(me["methods"], json!(["pwd"]));
}

async fn reauthentication_merges_the_methods(backend: Backend) {
    let f = Fixture::on(backend).await;
    let resp = f.post("/login/alice?methods=pwd,otp", None).await;
    let cookie = cookie_value(&resp, COOKIE_NAME).unwrap();
    let (_, me) = f.me(&cookie).await;
    assert_eq!(me["methods"], json!(["pwd", "otp"]));
    f.clock.advance(20 * MINUTE);
    let cookie = f.renewed_by("/reauth", &cookie).await;
    let (_, me) = f.me(&cookie).await;
    assert_eq!(me["methods"], json!(["pwd", "otp"]));
    let resp = f.post("/account/delete", Some(&cookie)).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["methods"], json!(["pwd", "otp"]));
    // Another user logging in on this browser starts from their own.
    let resp = f.post("/login/bob", Some(&cookie)).await;
    let bob = cookie_value(&resp, COOKIE_NAME).unwrap();
    let (_, me) = f.me(&bob).await;
    assert_eq!(me["user"], "bob");
    assert_eq!(me["methods"], json!(["pwd"]));
}

async fn the_app_cannot_write_the_reserved_keys(backend: Backend) {
    let f = Fixture::on(backend).await;
    let cookie = f.login("alice").await;
    let logged_in_at = f.now_ms();
    f.clock.advance(20 * MINUTE);
    let forged = f.now_ms().to_string();
    for path in [
        format!("/set/~auth:at/{forged}"),
        "/set/~auth:amr/hwk".to_owned(),
        "/set/~auth:new/x".to_owned(),
        "/remove/~auth:at".to_owned(),
        "/remove/~auth:amr".to_owned(),
    ] {
        let resp = f.post(&path, Some(&cookie)).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
    }
    let (_, me) = f.me(&cookie).await;
    assert_eq!(me["authenticated_at"], logged_in_at);
    assert_eq!(me["methods"], json!(["pwd"]));
    assert_not_fresh(&f, &cookie).await;
    // Other keys are the application's, as ever.
    let resp = f.post("/set/auth:at/1", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn a_password_change_logs_out_the_other_sessions_at_once(backend: Backend) {
    let f = Fixture::on(backend).await;
    let resp = f.post("/login/alice?methods=hwk", None).await;
    let laptop = cookie_value(&resp, COOKIE_NAME).unwrap();
    let phone = f.login("alice").await;
    let thief = f.login("alice").await;
    let bob = f.login("bob").await;
    f.clock.advance(20 * MINUTE);

    let resp = f.post("/password", Some(&laptop)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let laptop_now = cookie_value(&resp, COOKIE_NAME).expect("the kept session's new id");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ended"], 2);

    for (who, cookie) in [("phone", &phone), ("thief", &thief), ("old id", &laptop)] {
        let (status, _) = f.me(cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}");
    }
    let (status, me) = f.me(&laptop_now).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["authenticated_at"], f.now_ms());
    assert_eq!(me["methods"], json!(["hwk", "pwd"]), "a password was given");
    assert_fresh(&f, &laptop_now).await;
    let (status, _) = f.me(&bob).await;
    assert_eq!(status, StatusCode::OK, "another user's session stays");
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
    a_twenty_minute_old_login_is_refused_until_the_password_is_entered_again,
    renew_never_makes_an_old_login_fresh,
    reauthentication_merges_the_methods,
    the_app_cannot_write_the_reserved_keys,
    a_password_change_logs_out_the_other_sessions_at_once,
);

#[tokio::test]
async fn without_a_login_the_guard_answers_as_the_login_guard() {
    let f = Fixture::on(Backend::Memory).await;
    let page = f
        .send(reqwest::Method::GET, "/account/password", None, Some(HTML))
        .await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[LOCATION], "/reauth?next=/account/password");
    for path in ["/api/password", "/account/delete"] {
        let resp = f.post(path, None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["detail"], "authentication required", "{path}");
        assert!(body.get("reason").is_none(), "{path}: {body}");
    }
    // Nobody to re-authenticate.
    let resp = f.post("/reauth", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Nor to change the password of.
    let resp = f.post("/password", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_store_failure_during_a_password_change_is_a_503_and_a_retry_finishes() {
    let clock = Arc::new(ManualClock::starting_now());
    let faulty = FaultyStore::new(MemoryStore::with_clock(clock.clone()));
    let switch = faulty.switch();
    let f = Fixture::with_store(Arc::new(faulty), clock).await;
    let laptop = f.login("alice").await;
    let phone = f.login("alice").await;
    switch.store(true, Ordering::SeqCst);
    let resp = f.post("/password", Some(&laptop)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    switch.store(false, Ordering::SeqCst);
    // Nothing was reported done; calling again finishes the job.
    let resp = f.post("/password", Some(&laptop)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ended"], 1);
    let (status, _) = f.me(&phone).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A real store whose single-key deletes fail while its switch is on: the
/// old id's delete at the end of a password change.
struct FailingDeletes {
    inner: Arc<dyn SessionStore>,
    on: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl SessionStore for FailingDeletes {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        self.inner.create(key, record, cap).await
    }
    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.load(key).await
    }
    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        self.inner.update(key, update).await
    }
    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.touch(key, last_seen, idle_deadline).await
    }
    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        if self.on.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other("injected")));
        }
        self.inner.delete(key).await
    }
    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        self.inner.list_for_user(user_id).await
    }
    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        self.inner.delete_for_user(user_id, except).await
    }
    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        self.inner.count_for_user(user_id).await
    }
}

#[tokio::test]
async fn a_password_change_that_cannot_delete_the_old_id_is_a_503_and_a_retry_finishes() {
    let clock = Arc::new(ManualClock::starting_now());
    let on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = FailingDeletes {
        inner: Arc::new(MemoryStore::with_clock(clock.clone())),
        on: on.clone(),
    };
    let f = Fixture::with_store(Arc::new(store), clock).await;
    let laptop = f.login("alice").await;
    let phone = f.login("alice").await;
    on.store(true, Ordering::SeqCst);
    let resp = f.post("/password", Some(&laptop)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let laptop_new = cookie_value(&resp, COOKIE_NAME).expect("the kept session's new id");
    on.store(false, Ordering::SeqCst);
    // The other sessions were ended first: already more logged out.
    let (status, _) = f.me(&phone).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The retry, from the new id, ends the old one.
    let resp = f.post("/password", Some(&laptop_new)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let laptop_final = cookie_value(&resp, COOKIE_NAME).unwrap();
    let (status, _) = f.me(&laptop).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old id is gone");
    let (status, _) = f.me(&laptop_final).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_reauthentication_url_pages_get_the_api_answer() {
    let clock = Arc::new(ManualClock::starting_now());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let config = SessionConfig::default().clock(clock.clone());
    let f = Fixture::with_config(store, clock, config).await;
    let cookie = f.login("alice").await;
    f.clock.advance(20 * MINUTE);
    let page = f
        .send(
            reqwest::Method::GET,
            "/account/password",
            Some(&cookie),
            Some(HTML),
        )
        .await;
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    assert!(page.headers().get(LOCATION).is_none());
    let body: Value = page.json().await.unwrap();
    assert_eq!(body["reason"], "login_not_fresh");
    assert_eq!(body["max_age"], 600);
}
