//! Scale-out: two in-process instances of one app behind a round-robin
//! balancer, in three variants:
//!
//! | variant | where state lives | the session on the other instance |
//! |---|---|---|
//! | `session-local` | each instance's own memory store | unknown there: lost |
//! | `session-shared` | one store both use (Redis with `REDIS_URL`, else one in-process store standing in for it) | found |
//! | `jwt` | nowhere: both verify with the same key | valid |
//!
//! Login forms use signed double-submit CSRF tokens under a key both
//! instances share, so a token rendered by one verifies on the other (a
//! synchronizer token in a per-instance store would not).
//!
//! Mounted under `/scale/{variant}`: `GET /csrf`, `POST /login`,
//! `GET /api/profile` (session variants), `POST /login` and
//! `GET /api/profile` (jwt), and `POST /admin/reset`. Every answer says which
//! instance served it (`x-instance: A` or `B`); the first request after a
//! reset goes to A.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use portcullis::core::cookie::CookiePrefix;
use portcullis::core::{CookieConfig, OpaqueToken, SystemClock};
use portcullis::csrf::{CsrfConfig, CsrfLayer, SignedBinding};
use portcullis::jwt::{JwtIssuer, JwtLayer};
use portcullis::session::{CountingStore, MemoryStore, SessionConfig, SessionLayer, SessionStore};
use serde_json::json;
use tower::ServiceExt as _;

use crate::ops::{Counters, measured};
use crate::strategy::{AUD, BuildError, ISS, Settings, Slot, jwt_routes, session_routes};

/// The three variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    SessionLocal,
    SessionShared,
    Jwt,
}

impl Variant {
    pub(crate) const ALL: [Self; 3] = [Self::SessionLocal, Self::SessionShared, Self::Jwt];

    pub(crate) const fn slug(self) -> &'static str {
        match self {
            Self::SessionLocal => "session-local",
            Self::SessionShared => "session-shared",
            Self::Jwt => "jwt",
        }
    }
}

/// Instances A and B and the balancer's position.
struct Pair {
    instances: [Router; 2],
    counters: Counters,
    next: AtomicUsize,
    cookies: Vec<CookieConfig>,
}

impl Pair {
    fn build(variant: Variant, settings: &Settings) -> Result<Self, BuildError> {
        match variant {
            Variant::SessionLocal => Self::sessions(variant, settings, false),
            Variant::SessionShared => Self::sessions(variant, settings, true),
            Variant::Jwt => Self::jwt(),
        }
    }

    fn sessions(variant: Variant, settings: &Settings, shared: bool) -> Result<Self, BuildError> {
        let path = format!("/scale/{}", variant.slug());
        let cookie = settings.cookie(
            CookieConfig::new(format!("scale-{}", variant.slug()))
                .prefix(CookiePrefix::Secure)
                .path(path.clone()),
        );
        let csrf_cookie = settings.cookie(
            CookieConfig::new(format!("scale-{}-csrf", variant.slug()))
                .prefix(CookiePrefix::Secure)
                .path(path),
        );
        // The CSRF signing key both instances share.
        let key = OpaqueToken::generate()?;
        let common =
            shared.then(|| CountingStore::new(settings.session_store(SystemClock::shared())));
        let mut counters = Counters::default();
        let mut routers = Vec::with_capacity(2);
        for _ in 0..2 {
            let store = match &common {
                Some(s) => s.clone(),
                None => CountingStore::new(Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>),
            };
            if common.is_none() || counters.sessions.is_empty() {
                counters.sessions.push(store.counter());
            }
            let csrf = CsrfConfig::signed(key.as_bytes(), SignedBinding::session())
                .pre_session_cookie(csrf_cookie.clone());
            routers.push(
                session_routes()
                    .layer(CsrfLayer::new(csrf)?)
                    .layer(SessionLayer::new(
                        store,
                        SessionConfig::default().cookie(cookie.clone()),
                    )?),
            );
        }
        Ok(Self {
            instances: pair(routers)?,
            counters,
            next: AtomicUsize::new(0),
            cookies: vec![cookie, csrf_cookie],
        })
    }

    fn jwt() -> Result<Self, BuildError> {
        // One signing key; each instance verifies with its own layer.
        let issuer = JwtIssuer::builder(portcullis::jwt::SigningKey::generate(
            "scale-1",
            portcullis::jwt::Algorithm::ES256,
        )?)
        .issuer(ISS)
        .audience(AUD)
        .build()?;
        let mut routers = Vec::with_capacity(2);
        for _ in 0..2 {
            let layer = JwtLayer::builder(issuer.keys())
                .issuer(ISS)
                .audience(AUD)
                .build()?;
            routers.push(jwt_routes(layer, issuer.clone()));
        }
        Ok(Self {
            instances: pair(routers)?,
            counters: Counters::default(),
            next: AtomicUsize::new(0),
            cookies: Vec::new(),
        })
    }
}

fn pair(routers: Vec<Router>) -> Result<[Router; 2], BuildError> {
    <[Router; 2]>::try_from(routers).map_err(|_| "two instances".into())
}

/// One variant behind its balancer.
pub(crate) struct Scaled {
    variant: Variant,
    settings: Arc<Settings>,
    slot: Slot<Pair>,
}

impl Scaled {
    pub(crate) fn new(variant: Variant, settings: Arc<Settings>) -> Result<Arc<Self>, BuildError> {
        let pair = Pair::build(variant, &settings)?;
        Ok(Arc::new(Self {
            variant,
            settings,
            slot: Slot::new(pair),
        }))
    }

    /// The router to mount under `/scale/{slug}`.
    pub(crate) fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(balance).with_state(self)
    }

    fn reset(&self) -> Response {
        self.slot.reset(
            Pair::build(self.variant, &self.settings),
            |old| &old.cookies,
            json!({"reset": true}),
        )
    }
}

async fn balance(State(scaled): State<Arc<Scaled>>, req: Request) -> Response {
    let _turn = scaled.slot.turn.lock().await;
    let pair = scaled.slot.get();
    let headers = req.headers().clone();
    if req.method() == Method::POST && req.uri().path() == "/admin/reset" {
        return measured(&pair.counters, &headers, async { scaled.reset() }).await;
    }
    let i = pair.next.fetch_add(1, Ordering::Relaxed) % 2;
    let router = pair.instances[i].clone();
    let mut response = measured(&pair.counters, &headers, async {
        match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    })
    .await;
    response.headers_mut().insert(
        "x-instance",
        HeaderValue::from_static(if i == 0 { "A" } else { "B" }),
    );
    response
}
