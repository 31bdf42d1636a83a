//! Template: the hybrid pattern for single-page apps (the app; `main.rs`
//! serves it).
//!
//! Run it with `cargo run -p hybrid-spa`; see this crate's README.
//!
//! The front door: the demo users are argon2id PHC strings checked by
//! [`PasswordHasher::verify`] (an unknown user costs the same and gets the
//! same 401 as a wrong password; a hash made with older parameters is
//! replaced at the next login). A [`LoginThrottleLayer`] guards
//! `POST /auth/login` (per account and per address) and the refresh
//! endpoints (`/auth/refresh`, `/auth/logout`, `/auth/logout-everywhere`,
//! per address: a bad refresh token's 401 counts as a failure).
//! `POST /auth/password` needs a login at most [`FRESH_FOR`] old
//! ([`RequireFreshAuthLayer`]: RFC 9470's `insufficient_user_authentication`
//! challenge otherwise; step-up is a new login), checks the new password
//! against the policy, stores its hash, and ends every refresh family and
//! live access token of the user ([`Refresher::password_changed`]) before
//! logging this client in again.
//!
//! DPoP mode ([`app_dpop`], or `DPOP_PUBLIC_ORIGIN` for [`app`]): the page
//! makes a non-extractable WebCrypto P-256 key pair at login and signs a
//! DPoP proof (RFC 9449) for every request; the login binds the refresh
//! family to that key, every access token carries its thumbprint
//! (`cnf.jkt`), and the API and the refresh endpoints refuse a token
//! without a proof by it ([`DpopPolicy::Required`]). A token copied out
//! of the page is useless alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::core::{ProblemJson, RenderRejection as _, SharedClock, SystemClock};
use portcullis::jwt::dpop::{DpopPolicy, DpopProof, DpopVerifier, ReplayCache};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, RequireFreshAuthLayer, SigningKey};
use portcullis::password::{PasswordError, PasswordHasher, Verification, invalid_credentials};
use portcullis::redis::{
    RedisConfig, RedisRefreshStore, RedisReplayCache, RedisRevocationStore, RedisThrottleStore,
};
use portcullis::refresh::{
    MemoryRefreshStore, RefreshConfig, RefreshLayer, RefreshStore, Refresher, RotationKey,
};
use portcullis::throttle::{
    LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig, ThrottleStore,
};
use portcullis_sql::{Database, DatabaseUrl};
use serde::Deserialize;
use serde_json::json;
use tower_layer::Layer as _;

/// The demo users: name, argon2id PHC string (never the password), roles.
/// `alice` / `wonderland` is hashed at the current parameters
/// (m = 19456 KiB, t = 2, p = 1); `bob` / `builder` at older ones
/// (m = 12288 KiB, t = 3), so his first login upgrades his hash.
pub const DEMO_USERS: &[(&str, &str, &[&str])] = &[
    (
        "alice",
        "$argon2id$v=19$m=19456,t=2,p=1$SKNIe9Qv37UkvGtgT0BKhA$tCXZtDFrZJ2oq2MyC3XNsklOKMYWSvzViShADKeaXDg",
        &["admin"],
    ),
    (
        "bob",
        "$argon2id$v=19$m=12288,t=3,p=1$gyONp0l0Rkw7LppCn+pSXA$A3V9W57TaK6FS6ebnjGqEhMITZLVQIkX0jFkJecKKc4",
        &[],
    ),
];

/// How recent a login must be to change the password: 10 minutes.
pub const FRESH_FOR: Duration = Duration::from_secs(10 * 60);

/// The app's state: the refresher and the user table.
#[derive(Clone)]
struct App {
    refresher: Refresher,
    hasher: PasswordHasher,
    /// User name to PHC string (a real app keeps them in its database).
    hashes: Arc<Mutex<HashMap<String, String>>>,
}

impl App {
    fn hashes(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.hashes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks `password` against `user`'s hash (an unknown user costs the
    /// same), and upgrades a hash made with older parameters.
    async fn check_password(&self, user: &str, password: &str) -> Result<bool, PasswordError> {
        let stored = self.hashes().get(user).cloned();
        match self.hasher.verify(stored.as_deref(), password).await {
            Ok(Verification::Verified { needs_rehash }) => {
                if needs_rehash {
                    // A busy pool only delays the upgrade to the next login.
                    if let Ok(phc) = self.hasher.rehash(password).await {
                        self.hashes().insert(user.to_owned(), phc);
                    }
                }
                Ok(true)
            }
            // An unusable stored hash reads as a wrong password.
            Ok(Verification::Mismatch) | Err(PasswordError::StoredHash(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn roles_of(user: &str) -> &'static [&'static str] {
    DEMO_USERS
        .iter()
        .find(|(u, _, _)| *u == user)
        .map_or(&[], |(_, _, roles)| *roles)
}

/// A problem+json response.
fn problem(rejection: &portcullis::core::Rejection) -> Response {
    ProblemJson
        .render(rejection, false)
        .map(axum::body::Body::from)
}
const ISS: &str = "hybrid-spa";
const AUD: &str = "hybrid-spa";

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// `POST /auth/login`: `Json` insists on `Content-Type: application/json`
/// (415 otherwise), which no cross-site form can send without a CORS
/// preflight; the refresher also refuses a cross-site login that would set
/// the refresh cookie (403), so a form on another site cannot log the
/// visitor into the attacker's account.
///
/// Behind the login throttle: a wrong password and an unknown user get one
/// 401, marked as a failure; a success resets the account's counters.
async fn login(State(app): State<App>, parts: Parts, Json(creds): Json<Credentials>) -> Response {
    match app.check_password(&creds.username, &creds.password).await {
        Ok(true) => {}
        Ok(false) => {
            return (LoginOutcome::Failed, problem(&invalid_credentials())).into_response();
        }
        // A full hashing pool: 503 + Retry-After, not a failure.
        Err(e) => return problem(&e.rejection()),
    }
    let reply = app
        .refresher
        .login(creds.username.as_str())
        .roles(roles_of(&creds.username).iter().copied())
        .reply(&parts)
        .await;
    let outcome = if reply.status().is_success() {
        LoginOutcome::Succeeded
    } else {
        LoginOutcome::Failed
    };
    (outcome, reply).into_response()
}

/// Refuses a login that is not `application/json` (or `application/*+json`)
/// with 415, as the handler's `Json` would, before the throttle reads the
/// body: a cross-site `<form enctype="text/plain">` never gets further.
async fn json_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if json {
        next.run(req).await
    } else {
        let status = axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        let body = json!({
            "type": "about:blank",
            "title": "Unsupported Media Type",
            "status": status.as_u16(),
            "detail": "the login takes Content-Type: application/json",
        });
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct NewPassword {
    new_password: String,
}

/// `POST /auth/password` (bearer, behind [`RequireFreshAuthLayer`]): the
/// policy checks the new password, its hash replaces the old one, every
/// refresh family and live access token of the user ends, and this client
/// is logged in again (a new token pair; in DPoP mode bound to the key of
/// this request's proof).
async fn change_password(
    State(app): State<App>,
    claims: Claims,
    parts: Parts,
    Json(form): Json<NewPassword>,
) -> Response {
    let Some(user) = claims.subject().map(str::to_owned) else {
        return problem(&portcullis::core::Rejection::unauthenticated(
            "the access token names no user",
        ));
    };
    let phc = match app
        .hasher
        .hash_for(form.new_password.as_str(), &[&user, "hybrid-spa"])
        .await
    {
        Ok(phc) => phc,
        Err(e) => return problem(&e.rejection()),
    };
    app.hashes().insert(user.clone(), phc);
    if let Err(e) = app.refresher.password_changed(&user).await {
        // A store failed half-way: 503; a retry finishes the job.
        return problem(&e.rejection(Duration::from_secs(1)));
    }
    let mut login = app
        .refresher
        .login(user.as_str())
        .roles(roles_of(&user).iter().copied());
    // DPoP mode: the proof of this request, which the JWT layer verified
    // (and spent), binds the new family to the page's key.
    if let Some(proof) = parts.extensions.get::<DpopProof>() {
        login = login.dpop(proof);
    }
    login.reply(&parts).await.into_response()
}

async fn me(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "user": claims.subject(), "roles": claims.registered().roles }))
}

fn peer_ip(ext: &axum::http::Extensions, _: &HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The access tokens' signing key: `JWT_KEY_FILE` (PKCS#8 PEM; RSA gives
/// RS256, P-256 ES256, Ed25519 EdDSA) with kid `$JWT_KID` (default
/// `spa-1`), or a fresh Ed25519 key.
fn signing_key() -> Result<SigningKey, String> {
    let kid = std::env::var("JWT_KID").unwrap_or_else(|_| "spa-1".into());
    match std::env::var_os("JWT_KEY_FILE") {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("cannot read JWT_KEY_FILE: {e}"))?;
            SigningKey::from_pkcs8_pem_detect(&kid, &pem).map_err(|e| format!("JWT_KEY_FILE: {e}"))
        }
        None => SigningKey::generate(&kid, Algorithm::EdDSA).map_err(|e| e.to_string()),
    }
}

/// Where refresh families, revocations and the login throttle's counters
/// live.
pub struct Stores {
    /// The refresh families.
    pub refresh: Arc<dyn RefreshStore>,
    /// The revocations (the JWT layer checks their view).
    pub revocations: Arc<dyn RevocationStore>,
    /// The login throttle's counters.
    pub throttle: Arc<dyn ThrottleStore>,
    /// The DPoP proofs already used (DPoP mode), shared by every instance
    /// on the store; `None`: this process' memory.
    pub dpop_replay: Option<Arc<dyn ReplayCache>>,
}

impl Stores {
    /// Both in this process' memory.
    #[must_use]
    pub fn memory() -> Self {
        Self {
            refresh: Arc::new(MemoryRefreshStore::new()),
            revocations: Arc::new(MemoryRevocationStore::new()),
            throttle: Arc::new(MemoryThrottleStore::new()),
            dpop_replay: None,
        }
    }
}

/// PostgreSQL or SQLite when `DATABASE_URL` is set, Redis when
/// `REDIS_URL` is set (keys under `$REDIS_KEY_PREFIX`, default
/// `hybrid-spa`), this process' memory otherwise.
///
/// # Errors
///
/// A bad `DATABASE_URL` or `REDIS_URL`, or a store that does not answer
/// within 10 s.
pub async fn stores() -> Result<Stores, String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        warn_unshared("DATABASE_URL");
        let url = DatabaseUrl::new(url).map_err(|e| e.to_string())?;
        let db = Database::connect(&url).map_err(|e| e.to_string())?;
        db.migrate()
            .await
            .map_err(|e| format!("DATABASE_URL ({url}): {e}"))?;
        let revocations = db
            .revocation_store(Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("refresh families, revocations and login throttle: in {url}");
        return Ok(Stores {
            refresh: db.refresh_store(),
            revocations,
            throttle: db.throttle_store(),
            dpop_replay: Some(db.dpop_replay_cache()),
        });
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!(
            "refresh families, revocations and login throttle: in memory (set REDIS_URL to share them)"
        );
        return Ok(Stores::memory());
    };
    warn_unshared("REDIS_URL");
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "hybrid-spa".into());
    let backend = RedisConfig::new(url)
        .key_prefix(prefix)
        .build()
        .map_err(|e| format!("REDIS_URL: {e}"))?;
    let revocations = RedisRevocationStore::new(backend.clone()).map_err(|e| e.to_string())?;
    // Fail closed: until its first snapshot has loaded, this instance's
    // revocation view misses the logouts made elsewhere.
    if !revocations.wait_synced(Duration::from_secs(10)).await {
        return Err(format!(
            "Redis ({backend:?}) did not answer within 10 s; not serving without the revocations made by other instances"
        ));
    }
    eprintln!("refresh families, revocations and login throttle: in Redis ({backend:?})");
    Ok(Stores {
        refresh: Arc::new(RedisRefreshStore::new(backend.clone())),
        revocations: Arc::new(revocations),
        throttle: Arc::new(RedisThrottleStore::new(backend.clone())),
        dpop_replay: Some(Arc::new(RedisReplayCache::new(backend))),
    })
}

/// Instances sharing a store must share the rotation key and the signing
/// key too: says so when `store_var` is set and they are not.
fn warn_unshared(store_var: &str) {
    for shared in ["REFRESH_ROTATION_KEY", "JWT_KEY_FILE"] {
        if std::env::var_os(shared).is_none() {
            eprintln!(
                "warning: {store_var} is set but {shared} is not: instances sharing this store \
                 must share it (set the same value on each), or refreshes and tokens made on \
                 one instance fail on the others"
            );
        }
    }
}

/// The app on `stores`: the page, `POST /auth/login`, `GET /api/me`,
/// `POST /auth/password`, and the refresher's endpoints under `/auth`.
/// Serve it with the peer address
/// (`into_make_service_with_connect_info::<SocketAddr>()`): the throttle
/// counts per client address.
///
/// # Errors
///
/// A bad `JWT_KEY_FILE` or `REFRESH_ROTATION_KEY`.
pub fn app(stores: Stores) -> Result<Router, String> {
    app_on_clock(stores, SystemClock::shared())
}

/// [`app`] reading the time from `clock` (tests pass a manual one). In
/// DPoP mode when `DPOP_PUBLIC_ORIGIN` is set (see [`app_dpop`]).
///
/// # Errors
///
/// As [`app`], and a `DPOP_PUBLIC_ORIGIN` that is not
/// `scheme://host[:port]`.
pub fn app_on_clock(stores: Stores, clock: SharedClock) -> Result<Router, String> {
    match std::env::var("DPOP_PUBLIC_ORIGIN") {
        Ok(origin) if !origin.is_empty() => app_dpop(stores, clock, &origin),
        _ => build(stores, clock, None),
    }
}

/// [`app_on_clock`] in DPoP mode: `public_origin` is the origin the
/// browser loads the page from (`https://app.example.com`; every proof's
/// `htu` starts with it, and it is never read from `Host`). The login
/// needs a DPoP proof and binds the refresh family to its key; the API,
/// the device endpoints and every refresh, logout and log out everywhere
/// need a fresh proof by that key ([`DpopPolicy::Required`]); access
/// tokens are answered as `token_type: DPoP`.
///
/// Off by default: the origin must be configured (behind a proxy the
/// server cannot learn it safely), and WebCrypto needs a secure context
/// (`https`, or `http://localhost` / `127.0.0.1`), which not every
/// deployment of a template has.
///
/// # Errors
///
/// As [`app`], and a `public_origin` that is not `scheme://host[:port]`.
pub fn app_dpop(stores: Stores, clock: SharedClock, public_origin: &str) -> Result<Router, String> {
    let mut verifier = DpopVerifier::builder(public_origin).clock(Arc::clone(&clock));
    // Shared by the instances on the store: a proof used on one is
    // refused on every other.
    if let Some(replay) = stores.dpop_replay.clone() {
        verifier = verifier.replay_cache(replay);
    }
    let verifier = verifier
        .build()
        .map_err(|e| format!("DPOP_PUBLIC_ORIGIN: {e}"))?;
    build(stores, clock, Some(verifier))
}

fn build(stores: Stores, clock: SharedClock, dpop: Option<DpopVerifier>) -> Result<Router, String> {
    let revocations = stores.revocations;
    let issuer = JwtIssuer::builder(signing_key()?)
        .issuer(ISS)
        .audience(AUD)
        .clock(Arc::clone(&clock))
        .build()
        .map_err(|e| e.to_string())?;
    let mut jwt = JwtLayer::builder(issuer.keys())
        .issuer(ISS)
        .audience(AUD)
        .revocation(revocations.view())
        .clock(Arc::clone(&clock));
    let mut config = RefreshConfig::default().client_ip(peer_ip);
    if let Some(verifier) = dpop {
        jwt = jwt.dpop(verifier.clone(), DpopPolicy::Required);
        config = config.dpop(verifier, DpopPolicy::Required);
    }
    let jwt = jwt.build().map_err(|e| e.to_string())?;
    if let Ok(key) = std::env::var("REFRESH_ROTATION_KEY") {
        config = config
            .rotation_key(RotationKey::from_bytes(key.as_bytes()).map_err(|e| e.to_string())?);
    }
    if std::env::var_os("PORTCULLIS_INSECURE_DEV_COOKIES").is_some() {
        config = config.insecure_dev_cookies();
    }
    let refresher = Refresher::builder_arc(stores.refresh, issuer, revocations, jwt.clone())
        .config(config)
        .clock(Arc::clone(&clock))
        .build()
        .map_err(|e| e.to_string())?;
    let state = App {
        refresher: refresher.clone(),
        hasher: PasswordHasher::builder()
            .build()
            .map_err(|e| e.to_string())?,
        hashes: Arc::new(Mutex::new(
            DEMO_USERS
                .iter()
                .map(|(u, h, _)| ((*u).to_owned(), (*h).to_owned()))
                .collect(),
        )),
    };
    let login_throttle = LoginThrottleLayer::from_arc(
        Arc::clone(&stores.throttle),
        ThrottleConfig::builder()
            .clock(Arc::clone(&clock))
            .build()
            .map_err(|e| e.to_string())?,
    );
    // The refresher's endpoints, answered by its layer in front of a 404;
    // those that take a refresh token behind the throttle too (no account
    // in their requests: per address; a 401 counts as a failure).
    let endpoints = RefreshLayer::new(&refresher).layer(Router::new());
    let refresh_throttle = LoginThrottleLayer::from_arc(
        stores.throttle,
        ThrottleConfig::builder()
            .no_account()
            .clock(Arc::clone(&clock))
            .build()
            .map_err(|e| e.to_string())?,
    );
    let throttled = refresh_throttle.layer(endpoints.clone());
    let sudo = RequireFreshAuthLayer::within(FRESH_FOR).clock(clock);
    Ok(Router::new()
        .route(
            "/auth/password",
            post(change_password).layer(DefaultBodyLimit::max(4096)),
        )
        .route_layer(sudo)
        .route("/api/me", get(me))
        .layer(jwt)
        .route("/", get(|| async { Html(include_str!("page.html")) }))
        .route(
            "/auth/login",
            post(login)
                .layer::<_, std::convert::Infallible>(login_throttle)
                .layer::<_, std::convert::Infallible>(axum::middleware::from_fn(json_only))
                .layer(DefaultBodyLimit::max(4096)),
        )
        .route_service("/auth/refresh", throttled.clone())
        .route_service("/auth/logout", throttled.clone())
        .route_service("/auth/logout-everywhere", throttled)
        .route_service("/auth/sessions", endpoints.clone())
        .route_service("/auth/sessions/{id}", endpoints)
        .with_state(state))
}
