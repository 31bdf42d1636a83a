//! The four strategies, each a router behind the real layers with its own
//! stores and its own manual clock ("expire" moves that clock).
//!
//! | strategy | layers | what a request to `/api/profile` costs |
//! |---|---|---|
//! | `session` | `SessionLayer` + `CsrfLayer` (synchronizer tokens) | one session load |
//! | `jwt` | `JwtLayer` | no store call; cannot be revoked |
//! | `jwt-revocation` | `JwtLayer` + revocation view | no store call; revocation pushed into the view |
//! | `hybrid` | `JwtLayer` + `RefreshLayer` | no store call; each refresh rotates one family |
//!
//! Every layer, issuer and refresher of a strategy emits its
//! authentication events through the strategy's one `Events` handle; the
//! page shows each request's events beside its store operations.
//!
//! Each strategy is mounted under `/{slug}`; besides its own routes it
//! answers the simulator's controls `POST /{slug}/admin/revoke` (the admin
//! revokes a user), `/admin/expire` (jump the clock) and `/admin/reset`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::core::cookie::CookiePrefix;
use portcullis::core::events::Events;
use portcullis::core::{Clock as _, CookieConfig, ManualClock, SameSite, SharedClock, Timestamp};
use portcullis::csrf::{CsrfConfig, CsrfLayer, CsrfToken};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey, TokenResponse};
use portcullis::redis::{RedisBackend, RedisSessionStore};
use portcullis::refresh::{
    CountingRefreshStore, MemoryRefreshStore, RefreshConfig, RefreshLayer, Refresher,
};
use portcullis::session::{
    CountingStore, CurrentUser, MemoryStore, Session, SessionConfig, SessionError, SessionLayer,
    SessionStore,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::ops::{Counters, CountingRevocations, EventLog, measured};
use crate::users;

/// What building a router can fail with.
pub(crate) type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// Issuer and audience of every token the simulator mints.
pub(crate) const ISS: &str = "portcullis-simulator";
pub(crate) const AUD: &str = "simulator-api";

/// The session's idle timeout (the library's default).
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// Process-wide settings, read from the environment at start.
#[derive(Debug)]
pub(crate) struct Settings {
    /// `PORTCULLIS_INSECURE_DEV_COOKIES`: cookies without `Secure` and
    /// without their `__Host-`/`__Secure-` prefix, for browsers that refuse
    /// `Secure` cookies over plain http even on 127.0.0.1 (Safari).
    pub(crate) insecure_dev_cookies: bool,
    /// `REDIS_URL`: sessions in Redis instead of memory.
    pub(crate) redis: Option<RedisBackend>,
}

impl Settings {
    /// Applies the cookie mode to `cookie`.
    pub(crate) fn cookie(&self, cookie: CookieConfig) -> CookieConfig {
        if self.insecure_dev_cookies {
            cookie.insecure_dev_cookies()
        } else {
            cookie
        }
    }

    /// A session store on `clock`: Redis when configured, else memory.
    pub(crate) fn session_store(&self, clock: SharedClock) -> Arc<dyn SessionStore> {
        match &self.redis {
            Some(backend) => Arc::new(RedisSessionStore::with_clock(backend.clone(), clock)),
            None => Arc::new(MemoryStore::with_clock(clock)),
        }
    }

    /// The session layer's configuration (cookie `__Host-session`).
    pub(crate) fn session_config(&self, clock: SharedClock) -> SessionConfig {
        let config = SessionConfig::default()
            .idle_timeout(SESSION_IDLE)
            .clock(clock);
        if self.insecure_dev_cookies {
            config.insecure_dev_cookies()
        } else {
            config
        }
    }

    /// The hybrid's refresh cookie, the library's default: `__Host-refresh`,
    /// `Path=/`, `HttpOnly`, `SameSite=Strict` (a sibling sub-domain cannot
    /// shadow it).
    pub(crate) fn refresh_cookie(&self) -> CookieConfig {
        self.cookie(
            CookieConfig::new("refresh")
                .prefix(CookiePrefix::Host)
                .same_site(SameSite::Strict),
        )
    }
}

/// The four strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Session,
    Jwt,
    JwtRevocation,
    Hybrid,
}

impl Kind {
    pub(crate) const ALL: [Self; 4] = [Self::Session, Self::Jwt, Self::JwtRevocation, Self::Hybrid];

    /// The path segment the strategy is mounted under.
    pub(crate) const fn slug(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Jwt => "jwt",
            Self::JwtRevocation => "jwt-revocation",
            Self::Hybrid => "hybrid",
        }
    }

    /// How far "expire" moves the clock: just past the credential's life
    /// (the session's idle timeout, the access token's lifetime plus the
    /// verifier's 5 s leeway).
    pub(crate) const fn expire_by(self) -> Duration {
        match self {
            Self::Session => Duration::from_secs(SESSION_IDLE.as_secs() + 60),
            _ => Duration::from_secs(16 * 60),
        }
    }
}

/// One strategy's current routers, stores and clock; "reset" replaces it.
struct Instance {
    router: Router,
    clock: Arc<ManualClock>,
    started: Timestamp,
    counters: Counters,
    admin: Admin,
    /// Cookies to clear on reset.
    cookies: Vec<CookieConfig>,
}

/// What "revoke access" acts on.
enum Admin {
    /// Deletes the user's sessions from the store.
    Session(Arc<dyn SessionStore>),
    /// Nothing: the server never stored the token.
    Jwt,
    /// Bumps the user's token version in the revocation store, which
    /// pushes it into the in-process view.
    JwtRevocation(Arc<CountingRevocations>),
    /// Deletes the user's refresh families and bumps the token version.
    Hybrid(Refresher, Arc<CountingRevocations>),
}

/// A strategy's event handle (with the route template of each request),
/// and the log the page's reports read it through.
fn events() -> (Events, EventLog) {
    fn matched_path(ext: &axum::http::Extensions) -> Option<Arc<str>> {
        ext.get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().into())
    }
    let events = Events::builder().route(matched_path).build();
    let log = EventLog::new(&events);
    (events, log)
}

fn manual_clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = Arc::new(ManualClock::starting_now());
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

fn signing_key() -> Result<SigningKey, BuildError> {
    Ok(SigningKey::generate("simulator-1", Algorithm::ES256)?)
}

impl Instance {
    fn build(kind: Kind, settings: &Settings) -> Result<Self, BuildError> {
        match kind {
            Kind::Session => Self::session(settings),
            Kind::Jwt => Self::jwt(false),
            Kind::JwtRevocation => Self::jwt(true),
            Kind::Hybrid => Self::hybrid(settings),
        }
    }

    fn session(settings: &Settings) -> Result<Self, BuildError> {
        let (clock, shared) = manual_clock();
        let counting = CountingStore::new(settings.session_store(shared.clone()));
        let counter = counting.counter();
        let store: Arc<dyn SessionStore> = Arc::new(counting);
        let (events, log) = events();
        let config = settings.session_config(shared).events(events.clone());
        let cookie = config.cookie_config().clone();
        Ok(Self {
            router: session_routes()
                .layer(CsrfLayer::new(CsrfConfig::session().events(events))?)
                .layer(SessionLayer::from_arc(Arc::clone(&store), config)?),
            started: clock.now(),
            clock,
            counters: Counters {
                sessions: vec![counter],
                events: Some(log),
                ..Counters::default()
            },
            admin: Admin::Session(store),
            cookies: vec![cookie],
        })
    }

    fn jwt(with_revocation: bool) -> Result<Self, BuildError> {
        let (clock, shared) = manual_clock();
        let (events, log) = events();
        let mut issuer = JwtIssuer::builder(signing_key()?)
            .issuer(ISS)
            .audience(AUD)
            .clock(shared.clone())
            .events(events.clone());
        let mut counters = Counters {
            events: Some(log),
            ..Counters::default()
        };
        let mut admin = Admin::Jwt;
        let mut view = None;
        if with_revocation {
            let revocations = Arc::new(CountingRevocations::new(
                MemoryRevocationStore::with_clock(shared.clone()),
            ));
            counters.revocations = Some(revocations.counter());
            issuer = issuer.revocation(revocations.view());
            view = Some(revocations.view());
            admin = Admin::JwtRevocation(revocations);
        }
        let issuer = issuer.build()?;
        let mut layer = JwtLayer::builder(issuer.keys())
            .issuer(ISS)
            .audience(AUD)
            .clock(shared)
            .events(events);
        if let Some(view) = view {
            layer = layer.revocation(view);
        }
        Ok(Self {
            router: jwt_routes(layer.build()?, issuer),
            started: clock.now(),
            clock,
            counters,
            admin,
            cookies: Vec::new(),
        })
    }

    fn hybrid(settings: &Settings) -> Result<Self, BuildError> {
        let (clock, shared) = manual_clock();
        let (events, log) = events();
        let revocations = Arc::new(CountingRevocations::new(MemoryRevocationStore::with_clock(
            shared.clone(),
        )));
        let issuer = JwtIssuer::builder(signing_key()?)
            .issuer(ISS)
            .audience(AUD)
            .clock(shared.clone())
            .revocation(revocations.view())
            .events(events.clone())
            .build()?;
        let jwt = JwtLayer::builder(issuer.keys())
            .issuer(ISS)
            .audience(AUD)
            .clock(shared.clone())
            .revocation(revocations.view())
            .events(events.clone())
            .build()?;
        let store = CountingRefreshStore::new(MemoryRefreshStore::new());
        let cookie = settings.refresh_cookie();
        let refresher = Refresher::builder(store.clone(), issuer, revocations.clone(), jwt.clone())
            .config(
                RefreshConfig::default()
                    .cookie(cookie.clone())
                    .events(events),
            )
            .clock(shared)
            .build()?;
        let router = Router::new()
            .route("/api/profile", get(jwt_profile))
            .layer(jwt)
            .route("/auth/login", post(hybrid_login))
            .with_state(refresher.clone())
            // Serves /auth/refresh (and logout, devices) itself.
            .layer(RefreshLayer::new(&refresher));
        Ok(Self {
            router,
            started: clock.now(),
            clock,
            counters: Counters {
                refresh: Some(store.counter()),
                revocations: Some(revocations.counter()),
                sessions: Vec::new(),
                events: Some(log),
            },
            admin: Admin::Hybrid(refresher, revocations),
            cookies: vec![cookie],
        })
    }

    fn clock_offset_secs(&self) -> u64 {
        self.clock.now().saturating_since(self.started).as_secs()
    }

    /// The admin revokes `user` (from the JSON body; alice by default).
    async fn revoke(&self, body: Body) -> Response {
        let bytes = to_bytes(body, 1024).await.unwrap_or_default();
        let user = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["user"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "alice".to_owned());
        let outcome = match &self.admin {
            Admin::Session(store) => store
                .delete_for_user(&user, None)
                .await
                .map(|n| json!({"user": user, "sessions_deleted": n}))
                .map_err(|e| e.to_string()),
            Admin::Jwt => Ok(json!({"user": user, "nothing_to_delete": true})),
            Admin::JwtRevocation(revocations) => revocations
                .revoke_user(&user)
                .await
                .map(|v| json!({"user": user, "token_version": v}))
                .map_err(|e| e.to_string()),
            Admin::Hybrid(refresher, revocations) => refresher
                .revoke_user(&user)
                .await
                .map(|n| {
                    let v = revocations.view().user_version(&user);
                    json!({"user": user, "families_deleted": n, "token_version": v})
                })
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(body) => Json(body).into_response(),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"detail": format!("store unavailable: {e}")})),
            )
                .into_response(),
        }
    }

    /// Jumps this strategy's clock past its credential's life.
    fn expire(&self, kind: Kind) -> Response {
        let by = kind.expire_by();
        self.clock.advance(by);
        Json(json!({
            "advanced_secs": by.as_secs(),
            "clock_offset_secs": self.clock_offset_secs(),
        }))
        .into_response()
    }
}

/// The live instance of a strategy (or of a scaled pair), swapped whole on
/// reset, and a turn lock so that requests run one at a time and each
/// counter difference belongs to one request.
pub(crate) struct Slot<T> {
    current: RwLock<Arc<T>>,
    pub(crate) turn: tokio::sync::Mutex<()>,
}

impl<T> Slot<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            current: RwLock::new(Arc::new(value)),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn get(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `fresh` in place and answers `body`, telling the browser to
    /// drop the old instance's `cookies`; a 500 when it could not be built.
    pub(crate) fn reset(
        &self,
        fresh: Result<T, BuildError>,
        cookies: impl FnOnce(&T) -> &[CookieConfig],
        body: Value,
    ) -> Response {
        let fresh = match fresh {
            Ok(v) => Arc::new(v),
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"detail": e.to_string()})),
                )
                    .into_response();
            }
        };
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        let mut response = Json(body).into_response();
        for cookie in cookies(&old) {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie.removal_cookie());
        }
        response
    }
}

/// One strategy and its current instance.
pub(crate) struct Strategy {
    kind: Kind,
    settings: Arc<Settings>,
    slot: Slot<Instance>,
}

impl Strategy {
    pub(crate) fn new(kind: Kind, settings: Arc<Settings>) -> Result<Arc<Self>, BuildError> {
        let instance = Instance::build(kind, &settings)?;
        Ok(Arc::new(Self {
            kind,
            settings,
            slot: Slot::new(instance),
        }))
    }

    fn instance(&self) -> Arc<Instance> {
        self.slot.get()
    }

    /// The router to mount under `/{slug}`.
    pub(crate) fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }

    /// New stores, keys and clock; the browser is told to drop the old
    /// cookies.
    fn reset(&self) -> Response {
        self.slot.reset(
            Instance::build(self.kind, &self.settings),
            |old| &old.cookies,
            json!({"reset": true, "clock_offset_secs": 0}),
        )
    }
}

async fn dispatch(State(strategy): State<Arc<Strategy>>, req: Request) -> Response {
    let _turn = strategy.slot.turn.lock().await;
    let instance = strategy.instance();
    let control = (req.method() == Method::POST)
        .then(|| req.uri().path().strip_prefix("/admin/").map(str::to_owned))
        .flatten();
    let headers = req.headers().clone();
    let mut response = measured(&instance.counters, &headers, async {
        match control.as_deref() {
            Some("revoke") => instance.revoke(req.into_body()).await,
            Some("expire") => instance.expire(strategy.kind),
            Some("reset") => strategy.reset(),
            _ => match instance.router.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
        }
    })
    .await;
    response.headers_mut().insert(
        "x-clock-offset-s",
        HeaderValue::from(strategy.instance().clock_offset_secs()),
    );
    response
}

/// The session strategy's own routes (layers added by the caller).
pub(crate) fn session_routes() -> Router {
    Router::new()
        .route("/csrf", get(csrf_token))
        .route("/login", post(session_login))
        .route("/api/profile", get(session_profile))
}

/// A fresh masked CSRF token for the page's next state-changing request.
async fn csrf_token(token: CsrfToken) -> Json<Value> {
    Json(json!({ "header": token.header_name().as_str(), "csrf_token": token.as_str() }))
}

async fn session_login(session: Session, body: Body) -> Result<Response, SessionError> {
    let bytes = to_bytes(body, 4096).await.unwrap_or_default();
    let (user, roles) = match users::authenticate(&bytes).await {
        Ok(u) => u,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    // A new id: whatever id the browser had before is dead now.
    session.login(user).await?;
    Ok(Json(json!({ "user": user, "roles": roles })).into_response())
}

async fn session_profile(
    CurrentUser(user): CurrentUser,
    session: Session,
) -> Result<Json<Value>, SessionError> {
    let info = session.info().await?;
    Ok(Json(json!({
        "user": user,
        "from": "the session store",
        "session_expires_at_ms": info.map(|i| i.expires_at.millis()),
    })))
}

/// The JWT strategies' routes: login mints, the profile needs a token.
pub(crate) fn jwt_routes(layer: JwtLayer, issuer: JwtIssuer) -> Router {
    Router::new()
        .route("/api/profile", get(jwt_profile))
        .layer(layer)
        .route("/login", post(jwt_login))
        .with_state(issuer)
}

async fn jwt_login(State(issuer): State<JwtIssuer>, body: Body) -> Response {
    let bytes = to_bytes(body, 4096).await.unwrap_or_default();
    let (user, roles) = match users::authenticate(&bytes).await {
        Ok(u) => u,
        Err(refusal) => return refusal.into_response(),
    };
    match issuer.token(user).roles(roles.iter().copied()).mint() {
        Ok(t) => Json(TokenResponse::new(&t)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"detail": e.to_string()})),
        )
            .into_response(),
    }
}

async fn jwt_profile(claims: Claims) -> Json<Value> {
    Json(json!({
        "user": claims.subject(),
        "roles": claims.registered().roles,
        "from": "the token's signed claims",
        "token_expires_at": claims.registered().exp,
    }))
}

async fn hybrid_login(State(refresher): State<Refresher>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, 4096).await.unwrap_or_default();
    let (user, roles) = match users::authenticate(&bytes).await {
        Ok(u) => u,
        Err(refusal) => return refusal.into_response(),
    };
    refresher
        .login(user)
        .roles(roles.iter().copied())
        .reply(&parts)
        .await
        .into_response()
}
