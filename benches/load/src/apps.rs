//! The same small app, once per contender: `POST /login` (sets a session
//! or returns an access token), `GET /me` (returns the user, through the
//! contender's auth), and `GET /public` (behind the same layer, never
//! touching the session).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{Request, Response, StatusCode, header::AUTHORIZATION};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use futures_util::future::Either;
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationEvent, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use serde::Deserialize;
use tower::{Layer, Service, ServiceBuilder};

pub const ISS: &str = "https://bench.test";
pub const AUD: &str = "bench";
pub const HS_SECRET: &str = "0123456789abcdef0123456789abcdef";
const P256_PRIVATE: &[u8] = include_bytes!("../../../tests/fixtures/p256-private.pem");
const P256_PUBLIC: &str = include_str!("../../../tests/fixtures/p256-public.pem");

/// A contender: its name, the family it belongs to (for the chart), the
/// path measured, and what it stands for.
pub struct Contender {
    pub name: &'static str,
    pub family: &'static str,
    pub path: &'static str,
    pub needs_redis: bool,
    pub about: &'static str,
}

pub const CONTENDERS: &[Contender] = &[
    Contender {
        name: "baseline",
        family: "baseline",
        path: "/me",
        needs_redis: false,
        about: "no auth: the same routes return constants; sent the same requests as the contender it is paired with",
    },
    Contender {
        name: "portcullis-session-memory",
        family: "portcullis",
        path: "/me",
        needs_redis: false,
        about: "SessionLayer + MemoryStore, /me reads the session's user",
    },
    Contender {
        name: "portcullis-session-memory-untouched",
        family: "portcullis",
        path: "/public",
        needs_redis: false,
        about: "SessionLayer + MemoryStore, cookie sent, handler never touches the session",
    },
    Contender {
        name: "tower-sessions-memory",
        family: "peer",
        path: "/me",
        needs_redis: false,
        about: "tower-sessions 0.14 + its MemoryStore, /me reads a key",
    },
    Contender {
        name: "portcullis-session-redis",
        family: "portcullis",
        path: "/me",
        needs_redis: true,
        about: "SessionLayer + RedisSessionStore (one multiplexed connection)",
    },
    Contender {
        name: "tower-sessions-redis",
        family: "peer",
        path: "/me",
        needs_redis: true,
        about: "tower-sessions 0.14 + tower-sessions-redis-store 0.16 (fred pool of 6, as its README)",
    },
    Contender {
        name: "portcullis-jwt-hs256",
        family: "portcullis",
        path: "/me",
        needs_redis: false,
        about: "JwtLayer, HS256, verified-token cache on (default)",
    },
    Contender {
        name: "portcullis-jwt-hs256-nocache",
        family: "portcullis",
        path: "/me",
        needs_redis: false,
        about: "JwtLayer, HS256, cache off (every token verified, as the peers do)",
    },
    Contender {
        name: "jwt-authorizer-hs256",
        family: "peer",
        path: "/me",
        needs_redis: false,
        about: "jwt-authorizer 0.15, HS256",
    },
    Contender {
        name: "jsonwebtoken-hs256",
        family: "floor",
        path: "/me",
        needs_redis: false,
        about: "hand-written tower layer over jsonwebtoken::decode, HS256",
    },
    Contender {
        name: "portcullis-jwt-es256-cache",
        family: "portcullis",
        path: "/me",
        needs_redis: false,
        about: "JwtLayer, ES256, verified-token cache on (default)",
    },
    Contender {
        name: "portcullis-jwt-es256-nocache",
        family: "portcullis",
        path: "/me",
        needs_redis: false,
        about: "JwtLayer, ES256, cache off",
    },
    Contender {
        name: "jwt-authorizer-es256",
        family: "peer",
        path: "/me",
        needs_redis: false,
        about: "jwt-authorizer 0.15, ES256",
    },
    Contender {
        name: "jsonwebtoken-es256",
        family: "floor",
        path: "/me",
        needs_redis: false,
        about: "hand-written tower layer over jsonwebtoken::decode, ES256",
    },
    Contender {
        name: "portcullis-hybrid-es256",
        family: "portcullis",
        path: "/me",
        needs_redis: false,
        about: "JwtLayer ES256 (cache on) + revocation view holding 10k revoked sids; token carries sid and ver",
    },
];

async fn constant_me() -> &'static str {
    "alice"
}

async fn public() -> &'static str {
    "public"
}

fn baseline() -> Router {
    Router::new()
        .route("/login", post(|| async { "ok" }))
        .route("/me", get(constant_me))
        .route("/public", get(public))
}

// ---- portcullis sessions ----------------------------------------------

async fn session_login(session: Session) -> impl IntoResponse {
    match session.login("alice").await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub async fn session_me(session: Session) -> Result<String, StatusCode> {
    match session.user_id().await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(StatusCode::UNAUTHORIZED),
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

fn portcullis_session(store: impl portcullis::session::SessionStore) -> Router {
    let layer = SessionLayer::new(store, SessionConfig::default()).expect("session config");
    Router::new()
        .route("/login", post(session_login))
        .route("/me", get(session_me))
        .route("/public", get(public))
        .layer(layer)
}

/// The memory store behind the session contender, exposed so that the purge
/// scenario can fill it and purge it.
pub fn portcullis_session_memory(store: MemoryStore) -> Router {
    portcullis_session(store)
}

fn portcullis_session_redis(url: &str) -> Router {
    let backend = portcullis_redis::RedisConfig::new(url)
        .key_prefix("bench")
        .build()
        .expect("redis config");
    portcullis_session(portcullis_redis::RedisSessionStore::new(backend))
}

// ---- tower-sessions ------------------------------------------------------

async fn ts_login(session: tower_sessions::Session) -> StatusCode {
    if session.cycle_id().await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match session.insert("user", "alice").await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub async fn ts_me(session: tower_sessions::Session) -> Result<String, StatusCode> {
    match session.get::<String>("user").await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(StatusCode::UNAUTHORIZED),
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

fn tower_sessions_app<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
    let layer = tower_sessions::SessionManagerLayer::new(store);
    Router::new()
        .route("/login", post(ts_login))
        .route("/me", get(ts_me))
        .route("/public", get(public))
        .layer(layer)
}

async fn tower_sessions_redis(url: &str) -> Router {
    use tower_sessions_redis_store::fred::prelude::*;
    let config = Config::from_url(url).expect("redis url");
    let pool = Pool::new(config, None, None, None, 6).expect("fred pool");
    let _conn = pool.connect();
    pool.wait_for_connect().await.expect("redis connect");
    tower_sessions_app(tower_sessions_redis_store::RedisStore::new(pool))
}

// ---- JWT: portcullis -----------------------------------------------------

fn signing_key(alg: Algorithm) -> SigningKey {
    match alg {
        Algorithm::HS256 => SigningKey::hmac("k", alg, HS_SECRET.as_bytes()).expect("hmac key"),
        _ => SigningKey::from_pkcs8_pem("k", alg, P256_PRIVATE).expect("p256 key"),
    }
}

fn issuer(alg: Algorithm) -> JwtIssuer {
    JwtIssuer::builder(signing_key(alg))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .expect("issuer")
}

/// `POST /login` of every JWT contender: an access token minted by the
/// same issuer (so every verifier checks the same bytes). Minted once at
/// start-up, so that key generation and the RNG's seeding stay out of the
/// measured requests (and of callgrind's task-only profiles).
fn token_login(issuer: &JwtIssuer, sid: Option<String>) -> Router {
    let mut b = issuer.token("alice").lifetime(Duration::from_secs(3600));
    if let Some(sid) = sid {
        b = b.sid(sid).ver(0);
    }
    let token = b.mint().expect("mint").token;
    Router::new().route("/login", post(move || async move { token }))
}

async fn claims_me(claims: Claims) -> String {
    claims.subject().unwrap_or_default().to_owned()
}

fn portcullis_jwt(alg: Algorithm, cache: usize, revoked_sids: usize) -> Router {
    let issuer = issuer(alg);
    let mut builder = JwtLayer::builder(issuer.keys())
        .issuer(ISS)
        .audience(AUD)
        .cache(cache);
    let mut sid = None;
    if revoked_sids > 0 {
        let view = MemoryRevocationStore::new().view();
        let exp = i64::try_from(crate::unix_us() / 1_000_000).unwrap_or(0) + 3600;
        let mut events: Vec<_> = (0..revoked_sids)
            .map(|i| RevocationEvent::Session {
                sid: format!("revoked-family-{i:08}"),
                expires_at: exp,
            })
            .collect();
        events.push(RevocationEvent::User {
            user: "mallory".into(),
            version: 1,
        });
        view.replace_all(&events);
        builder = builder.revocation(view);
        sid = Some("family-of-alice".to_owned());
    }
    let layer = builder.build().expect("jwt layer");
    Router::new()
        .route("/me", get(claims_me))
        .route("/public", get(public))
        .layer(layer)
        .merge(token_login(&issuer, sid))
}

// ---- JWT: jwt-authorizer ---------------------------------------------------

#[derive(Clone, Deserialize)]
struct User {
    sub: String,
}

/// jwt-authorizer 0.15 is built on axum 0.7; its tower layer needs the inner
/// response type to be `From<AuthError>`. This newtype carries an axum 0.8
/// response through it.
struct Wrapped(Response<Body>);

impl From<jwt_authorizer::AuthError> for Wrapped {
    fn from(_: jwt_authorizer::AuthError) -> Self {
        Self(StatusCode::UNAUTHORIZED.into_response())
    }
}

async fn authorizer_me(Extension(data): Extension<jsonwebtoken9::TokenData<User>>) -> String {
    data.claims.sub
}

async fn jwt_authorizer_app(alg: Algorithm) -> Router {
    use jwt_authorizer::{JwtAuthorizer, Validation};
    let issuer = issuer(alg);
    let builder: jwt_authorizer::AuthorizerBuilder<User> = match alg {
        Algorithm::HS256 => JwtAuthorizer::from_secret(HS_SECRET),
        _ => JwtAuthorizer::from_ec_pem_text(P256_PUBLIC),
    };
    let authorizer = builder
        .validation(Validation::new().iss(&[ISS]).aud(&[AUD]))
        .build()
        .await
        .expect("jwt-authorizer");
    let layer = jwt_authorizer::IntoLayer::into_layer(vec![authorizer]);
    let stack = ServiceBuilder::new()
        .map_response(|w: Wrapped| w.0)
        .layer(layer)
        .map_response(Wrapped);
    Router::new()
        .route("/me", get(authorizer_me))
        .route("/public", get(public))
        .layer(stack)
        .merge(token_login(&issuer, None))
}

// ---- JWT: the floor, a hand-written jsonwebtoken::decode layer -------------

#[derive(Clone)]
struct DecodeLayer {
    key: Arc<jsonwebtoken::DecodingKey>,
    validation: Arc<jsonwebtoken::Validation>,
}

#[derive(Clone)]
struct DecodeService<S> {
    inner: S,
    layer: DecodeLayer,
}

impl<S> Layer<S> for DecodeLayer {
    type Service = DecodeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeService {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S> Service<Request<Body>> for DecodeService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let decoded =
            token.map(|t| jsonwebtoken::decode::<User>(t, &self.layer.key, &self.layer.validation));
        match decoded {
            Some(Ok(data)) => {
                req.extensions_mut().insert(data.claims);
                Either::Left(self.inner.call(req))
            }
            _ => Either::Right(ready(Ok(StatusCode::UNAUTHORIZED.into_response()))),
        }
    }
}

async fn decode_me(Extension(user): Extension<User>) -> String {
    user.sub
}

fn jsonwebtoken_app(alg: Algorithm) -> Router {
    let issuer = issuer(alg);
    let (key, jalg) = match alg {
        Algorithm::HS256 => (
            jsonwebtoken::DecodingKey::from_secret(HS_SECRET.as_bytes()),
            jsonwebtoken::Algorithm::HS256,
        ),
        _ => (
            jsonwebtoken::DecodingKey::from_ec_pem(P256_PUBLIC.as_bytes()).expect("p256 public"),
            jsonwebtoken::Algorithm::ES256,
        ),
    };
    let mut validation = jsonwebtoken::Validation::new(jalg);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[AUD]);
    let layer = DecodeLayer {
        key: Arc::new(key),
        validation: Arc::new(validation),
    };
    Router::new()
        .route("/me", get(decode_me))
        .route("/public", get(public))
        .layer(layer)
        .merge(token_login(&issuer, None))
}

/// Builds the app of contender `name`.
pub async fn build(name: &str, redis: Option<&str>) -> Router {
    portcullis::jwt::ensure_crypto_provider();
    let redis = || redis.expect("this contender needs --redis URL");
    match name {
        "baseline" => baseline(),
        "portcullis-session-memory" | "portcullis-session-memory-untouched" => {
            portcullis_session_memory(MemoryStore::new())
        }
        "portcullis-session-redis" => portcullis_session_redis(redis()),
        "tower-sessions-memory" => tower_sessions_app(tower_sessions::MemoryStore::default()),
        "tower-sessions-redis" => tower_sessions_redis(redis()).await,
        "portcullis-jwt-hs256" => portcullis_jwt(Algorithm::HS256, 10_000, 0),
        "portcullis-jwt-hs256-nocache" => portcullis_jwt(Algorithm::HS256, 0, 0),
        "portcullis-jwt-es256-cache" => portcullis_jwt(Algorithm::ES256, 10_000, 0),
        "portcullis-jwt-es256-nocache" => portcullis_jwt(Algorithm::ES256, 0, 0),
        "portcullis-hybrid-es256" => portcullis_jwt(Algorithm::ES256, 10_000, 10_000),
        "jwt-authorizer-hs256" => jwt_authorizer_app(Algorithm::HS256).await,
        "jwt-authorizer-es256" => jwt_authorizer_app(Algorithm::ES256).await,
        "jsonwebtoken-hs256" => jsonwebtoken_app(Algorithm::HS256),
        "jsonwebtoken-es256" => jsonwebtoken_app(Algorithm::ES256),
        other => panic!("unknown contender {other}"),
    }
}

/// A `State` so that the purge admin routes compile with the session app.
#[derive(Clone)]
pub struct PurgeState {
    pub store: MemoryStore,
    pub last: Arc<std::sync::Mutex<Option<(u64, u64, usize)>>>,
}

/// `POST /admin/purge` starts `purge_expired` on its own thread (as an
/// application's periodic task would); `GET /admin/purge` reports
/// `[start_unix_us, end_unix_us, removed]` once it is done.
pub fn purge_admin(state: PurgeState) -> Router {
    Router::new()
        .route(
            "/admin/purge",
            post(|State(s): State<PurgeState>| async move {
                let store = s.store.clone();
                let last = Arc::clone(&s.last);
                std::thread::spawn(move || {
                    let start = crate::unix_us();
                    let removed = store.purge_expired();
                    let end = crate::unix_us();
                    *last.lock().expect("purge lock") = Some((start, end, removed));
                });
                "started"
            })
            .get(|State(s): State<PurgeState>| async move {
                match *s.last.lock().expect("purge lock") {
                    Some((a, b, n)) => format!("{a} {b} {n}"),
                    None => String::new(),
                }
            }),
        )
        .with_state(state)
}
