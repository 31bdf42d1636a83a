//! The hybrid pattern as a test app: login, JwtLayer, RefreshLayer, on a
//! manual clock, with a counting and fault-injecting refresh store; and
//! the requests a client sends it (log in, refresh, post with a cookie,
//! call the API).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::routing::{self, get};
use portcullis::core::events::{AuthEvent, EventStream, Events};
use portcullis::core::store::FaultSwitch;
use portcullis::core::{ManualClock, StoreError, Timestamp};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore, RevocationView};
use portcullis::jwt::{
    Algorithm, Claims, DEFAULT_LEEWAY, JwtIssuer, JwtLayer, SigningKey, Validation,
};
use portcullis::refresh::testing::FaultyRefreshStore;
use portcullis::refresh::{
    Family, FamilyId, MemoryRefreshStore, RefreshConfig, RefreshLayer, RefreshStore, Refresher,
    RotateOutcome, Rotation,
};
use serde_json::{Value, json};

use crate::otel::Metrics;
use crate::{TestServer, client, cookie_value};

pub const ISS: &str = "https://hybrid.test";
pub const AUD: &str = "hybrid";
/// The refresh cookie's name with the default configuration.
pub const COOKIE: &str = "__Host-refresh";

/// Counts calls to the wrapped store.
#[derive(Clone)]
pub struct Counting<S> {
    pub inner: S,
    pub calls: Arc<AtomicU64>,
}

#[async_trait]
impl<S: RefreshStore> RefreshStore for Counting<S> {
    async fn create(
        &self,
        f: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.create(f, max_per_user).await
    }
    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.rotate(r).await
    }
    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id, now).await
    }
    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.revoke(id).await
    }
    async fn revoke_user(
        &self,
        user: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.revoke_user(user, except).await
    }
    async fn list_user(&self, user: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.list_user(user, now).await
    }
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.purge_expired(now).await
    }
}

/// A revocation store that fails every write while its switch is on (the
/// view keeps what it has, as a Redis view does during an outage).
#[derive(Clone)]
pub struct FaultyRevocations {
    pub inner: Arc<dyn RevocationStore>,
    pub failing: FaultSwitch,
}

impl FaultyRevocations {
    /// Wraps a memory store on `clock`, healthy.
    pub fn memory(clock: Arc<ManualClock>) -> Self {
        Self {
            inner: Arc::new(MemoryRevocationStore::with_clock(clock)),
            failing: FaultSwitch::new(),
        }
    }
}

#[async_trait]
impl RevocationStore for FaultyRevocations {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.failing.check()?;
        self.inner.revoke_token(jti, expires_at).await
    }
    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        self.failing.check()?;
        self.inner.revoke_session(sid, expires_at).await
    }
    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        self.failing.check()?;
        self.inner.revoke_user(user).await
    }
    fn view(&self) -> RevocationView {
        self.inner.view()
    }
}

pub struct HybridApp {
    pub server: TestServer,
    pub clock: Arc<ManualClock>,
    pub store_calls: Arc<AtomicU64>,
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// The event handle of the refresher, the `JwtLayer` and the issuer.
    pub bus: Events,
    /// Every event of `bus` since the app started.
    pub events: EventLog,
    /// The OpenTelemetry metrics `bus` records to.
    pub metrics: Metrics,
    pub api_hits: Arc<AtomicUsize>,
    pub refresher: Refresher,
}

/// Builds the app on `store` (memory when `None`), with `config` applied to
/// the defaults, and `revocations` (memory when `None`).
pub async fn start_with(
    store: Option<Arc<dyn RefreshStore>>,
    revocations: Option<Arc<dyn RevocationStore>>,
    config: impl FnOnce(RefreshConfig) -> RefreshConfig,
    clock: Arc<ManualClock>,
) -> HybridApp {
    start_with_leeway(store, revocations, config, clock, DEFAULT_LEEWAY).await
}

/// [`start_with`], the `JwtLayer` granting `leeway` on `exp`.
pub async fn start_with_leeway(
    store: Option<Arc<dyn RefreshStore>>,
    revocations: Option<Arc<dyn RevocationStore>>,
    config: impl FnOnce(RefreshConfig) -> RefreshConfig,
    clock: Arc<ManualClock>,
    leeway: std::time::Duration,
) -> HybridApp {
    let revocations: Arc<dyn RevocationStore> =
        revocations.unwrap_or_else(|| Arc::new(MemoryRevocationStore::with_clock(clock.clone())));
    let metrics = Metrics::new();
    let bus = events_bus(&metrics);
    let events = EventLog::new(&bus);
    let issuer = JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .events(bus.clone())
        .build()
        .unwrap();
    let jwt = JwtLayer::builder(issuer.keys())
        .validation(Validation::default().leeway(leeway))
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .revocation(revocations.view())
        .events(bus.clone())
        .build()
        .unwrap();
    let faulty =
        FaultyRefreshStore::new(store.unwrap_or_else(|| Arc::new(MemoryRefreshStore::new())));
    let down = faulty.switch();
    let store_calls = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: faulty,
        calls: store_calls.clone(),
    };
    let config = config(RefreshConfig::default().events(bus.clone()));
    let refresher = Refresher::builder(counting, issuer, revocations, jwt.clone())
        .config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    let api_hits = Arc::new(AtomicUsize::new(0));
    let hits = api_hits.clone();
    let app = Router::new()
        .route(
            "/api/me",
            get(move |c: Claims| {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"user": c.subject(), "sid": c.registered().sid, "ver": c.registered().ver}))
                }
            }),
        )
        .layer(jwt)
        .route("/auth/login/{user}", routing::post(login_handler))
        .route("/account/password/{user}", routing::post(password_handler))
        .with_state(refresher.clone())
        .layer(RefreshLayer::new(&refresher));
    HybridApp {
        server: TestServer::start(app).await,
        clock,
        store_calls,
        down,
        bus,
        events,
        metrics,
        api_hits,
        refresher,
    }
}

/// An event handle recording to `metrics`, reading the route from axum's
/// `MatchedPath`, the client from `ConnectInfo` and the trace id from
/// `traceparent`.
#[must_use]
pub fn events_bus(metrics: &Metrics) -> Events {
    metrics
        .events()
        .route(portcullis::events::matched_path)
        .client_ip(|ext, _| {
            ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .build()
}

/// Collects every event of a handle (a subscriber drained on demand:
/// events are delivered before the response that caused them is sent).
pub struct EventLog {
    stream: Mutex<EventStream>,
    seen: Mutex<Vec<Arc<AuthEvent>>>,
}

impl EventLog {
    /// Subscribes to `events`.
    #[must_use]
    pub fn new(events: &Events) -> Self {
        Self {
            stream: Mutex::new(events.subscribe("test-log", 1 << 14)),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Every event so far, oldest first.
    ///
    /// # Panics
    ///
    /// When the subscriber missed an event.
    pub fn all(&self) -> Vec<Arc<AuthEvent>> {
        let mut stream = self.stream.lock().unwrap();
        let mut seen = self.seen.lock().unwrap();
        while let Some(e) = stream.try_recv() {
            seen.push(e);
        }
        assert_eq!(stream.dropped(), 0, "the test log missed events");
        seen.clone()
    }

    /// The events of kind `name` (`refresh_reuse_detected`, ...).
    pub fn named(&self, name: &str) -> Vec<Arc<AuthEvent>> {
        self.all()
            .into_iter()
            .filter(|e| e.kind.name() == name)
            .collect()
    }

    /// The reuse detections so far.
    pub fn reuses(&self) -> Vec<Arc<AuthEvent>> {
        self.named("refresh_reuse_detected")
    }

    /// Asserts, for each `(kind, reason, n)` of `expected`, that the log
    /// saw `n` events of the kind named `kind` (with `reason` when given)
    /// and that `metrics` counted `n` of them; and that every kind the log
    /// saw is among `expected`.
    ///
    /// # Panics
    ///
    /// When a count differs, or the log saw a kind `expected` leaves out.
    pub fn assert_counted(&self, metrics: &Metrics, expected: &[(&str, Option<&str>, u64)]) {
        let all = self.all();
        for &(kind, reason, n) in expected {
            let seen = all
                .iter()
                .filter(|e| {
                    e.kind.name() == kind && reason.is_none_or(|r| e.kind.reason() == Some(r))
                })
                .count() as u64;
            assert_eq!(seen, n, "{kind} {reason:?} events seen: {all:?}");
            assert_eq!(
                metrics.event_count(kind, reason),
                n,
                "{kind} {reason:?} events counted"
            );
        }
        for e in &all {
            assert!(
                expected.iter().any(|(kind, ..)| *kind == e.kind.name()),
                "an event of a kind not counted: {e:?}"
            );
        }
    }
}

/// The refresh half of a password change (the new hash is stored): every
/// device of `user` logged out. 204, or 503 when a store fails.
async fn password_handler(
    State(refresher): State<Refresher>,
    Path(user): Path<String>,
    req: Request,
) -> impl IntoResponse {
    let (parts, _) = req.into_parts();
    match refresher.for_request(&parts).password_changed(&user).await {
        Ok(_) => axum::http::StatusCode::NO_CONTENT,
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// One captured span: its name and its fields as recorded (values as
/// text: strings as they are, others as `Debug`).
pub type CapturedSpan = (&'static str, Vec<(String, String)>);

/// A `tracing` subscriber that keeps every span and the fields recorded on
/// it (events are ignored). Install it for the test's thread with
/// `tracing::subscriber::set_default`: a current-thread test runtime runs
/// the test server's tasks on that thread too.
#[derive(Debug, Clone, Default)]
pub struct SpanCapture(pub Arc<Mutex<Vec<CapturedSpan>>>);

struct FieldText<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for FieldText<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl tracing::Subscriber for SpanCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Vec::new();
        attrs.record(&mut FieldText(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.0.lock().unwrap();
        let index = usize::try_from(id.into_u64()).unwrap() - 1;
        values.record(&mut FieldText(&mut spans[index].1));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl SpanCapture {
    /// The spans named `name` so far, each as a field map.
    pub fn named(&self, name: &str) -> Vec<std::collections::HashMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, fields)| fields.iter().cloned().collect())
            .collect()
    }

    /// Every field value of every span, as one text.
    pub fn text(&self) -> String {
        format!("{:?}", self.0.lock().unwrap())
    }
}

async fn login_handler(
    State(refresher): State<Refresher>,
    Path(user): Path<String>,
    req: Request,
) -> impl IntoResponse {
    let (parts, _) = req.into_parts();
    refresher.login(user).roles(["user"]).reply(&parts).await
}

/// [`start_with`] on memory stores and a fresh clock, `config` applied to
/// the defaults.
pub async fn start_memory(config: impl FnOnce(RefreshConfig) -> RefreshConfig) -> HybridApp {
    start_with(None, None, config, Arc::new(ManualClock::starting_now())).await
}

/// What a login or a refresh hands out.
pub struct Login {
    /// The access token from the body.
    pub access: String,
    /// The refresh token from the [`COOKIE`].
    pub refresh: String,
    /// The whole JSON body.
    pub body: Value,
}

/// Reads the refresh cookie and the body of a login or refresh answer
/// (its status is the caller's to check).
///
/// # Panics
///
/// When there is no refresh cookie or no access token.
pub async fn read_login(resp: reqwest::Response) -> Login {
    let refresh = cookie_value(&resp, COOKIE).expect("refresh cookie");
    let body: Value = resp.json().await.unwrap();
    Login {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh,
        body,
    }
}

/// `POST /auth/login/{user}` with no other header; asserts 200.
pub async fn login(app: &HybridApp, user: &str) -> Login {
    login_with(app, user, &[]).await
}

/// `POST /auth/login/{user}` with `headers`; asserts 200.
pub async fn login_with(app: &HybridApp, user: &str, headers: &[(&str, &str)]) -> Login {
    let resp = post_login(app, user, headers).await;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    read_login(resp).await
}

/// `POST /auth/login/{user}` with `headers`, whatever the answer.
pub async fn post_login(
    app: &HybridApp,
    user: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(app.server.url(&format!("/auth/login/{user}")));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// `POST path` with the `cookie` header as given.
pub async fn post(app: &HybridApp, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .post(app.server.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// `POST path` with `token` in the [`COOKIE`].
pub async fn post_token(app: &HybridApp, path: &str, token: &str) -> reqwest::Response {
    post(app, path, &format!("{COOKIE}={token}")).await
}

/// `POST /auth/refresh` with `token` in the [`COOKIE`].
pub async fn refresh(app: &HybridApp, token: &str) -> reqwest::Response {
    post_token(app, "/auth/refresh", token).await
}

/// [`refresh`], asserting 200, and what it handed out.
pub async fn refreshed(app: &HybridApp, token: &str) -> Login {
    let resp = refresh(app, token).await;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    read_login(resp).await
}

/// The status of `GET /api/me` with `access` as the bearer token.
pub async fn api(app: &HybridApp, access: &str) -> reqwest::StatusCode {
    client()
        .get(app.server.url("/api/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
}

/// An app whose `JwtLayer` reads access tokens from the `access` cookie,
/// with the refresh layer in front; alice logged in on two devices.
pub struct CookieAccessApp {
    pub server: TestServer,
    pub refresher: Refresher,
    /// The laptop's access token (the caller).
    pub laptop_access: String,
    /// The phone's family id (the other device).
    pub phone_id: String,
}

/// Starts a [`CookieAccessApp`].
pub async fn cookie_access_app() -> CookieAccessApp {
    let revocations = Arc::new(MemoryRevocationStore::new());
    let issuer = JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer("https://cookie.test")
        .audience("cookie")
        .build()
        .unwrap();
    let jwt = JwtLayer::builder_for(&issuer)
        .transport(portcullis::jwt::Transport::Cookie("access".into()))
        .revocation(revocations.view())
        .build()
        .unwrap();
    let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt.clone())
        .build()
        .unwrap();
    let phone = refresher.login("alice").issue().await.unwrap();
    let laptop = refresher.login("alice").issue().await.unwrap();
    let app = Router::new()
        .route("/api/me", get(|| async { "me" }))
        .layer(jwt)
        .layer(RefreshLayer::new(&refresher));
    CookieAccessApp {
        server: TestServer::start(app).await,
        refresher,
        laptop_access: laptop.access.token.clone(),
        phone_id: phone.refresh.family().to_string(),
    }
}
