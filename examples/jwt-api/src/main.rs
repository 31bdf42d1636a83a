//! Template: a JSON API with bearer JWTs.
//!
//! Run it with `cargo run -p jwt-api` (listens on `127.0.0.1:$PORT`,
//! default 3001). With `REDIS_URL` set (for example
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run -p jwt-api`) revocations
//! live in Redis and reach every instance on that Redis within
//! milliseconds (each instance still checks tokens without a Redis call);
//! unset, they are per process. With `DATABASE_URL` set (`postgres://...`:
//! pushed to every instance by `LISTEN/NOTIFY`; `sqlite://jwt-api.db`: one
//! durable node) revocations live in that database (tables created at
//! start). The login throttle's counters live in the same store (Redis,
//! the database, or memory). See this crate's README for the contract,
//! the environment variables and running several instances.
//!
//! The front door: the demo users are argon2id PHC strings checked by
//! `PasswordHasher::verify` (an unknown user costs the same and gets the
//! same 401 as a wrong password; a hash made with older parameters is
//! replaced at the next login), and `POST /login` sits behind a
//! `LoginThrottleLayer` (429 with `Retry-After` after repeated failures).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::core::{ProblemJson, RenderRejection as _};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{
    Claims, JwksResponse, JwtIssuer, JwtLayer, RequireClaimsLayer, SigningKey, TokenResponse,
};
use portcullis::password::{PasswordError, PasswordHasher, Verification, invalid_credentials};
use portcullis::redis::{RedisConfig, RedisRevocationStore, RedisThrottleStore};
use portcullis::throttle::{
    LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig, ThrottleStore,
};
use portcullis_sql::{Database, DatabaseUrl};
use serde::Deserialize;
use serde_json::json;

/// The demo users: name, argon2id PHC string (never the password), roles.
/// `alice` / `wonderland` is hashed at the current parameters
/// (m = 19456 KiB, t = 2, p = 1); `bob` / `builder` at older ones
/// (m = 12288 KiB, t = 3), so his first login upgrades his hash.
const USERS: &[(&str, &str, &[&str])] = &[
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

#[derive(Clone)]
struct AppState {
    issuer: JwtIssuer,
    revocations: Arc<dyn RevocationStore>,
    hasher: PasswordHasher,
    /// User name to PHC string (a real app keeps them in its database).
    hashes: Arc<Mutex<HashMap<String, String>>>,
}

impl AppState {
    fn stored_hash(&self, user: &str) -> Option<String> {
        let hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        hashes.get(user).cloned()
    }

    /// Checks `password` against `user`'s hash (an unknown user costs the
    /// same), and upgrades a hash made with older parameters.
    async fn check_password(&self, user: &str, password: &str) -> Result<bool, PasswordError> {
        let stored = self.stored_hash(user);
        match self.hasher.verify(stored.as_deref(), password).await {
            Ok(Verification::Verified { needs_rehash }) => {
                if needs_rehash {
                    // A busy pool only delays the upgrade to the next login.
                    if let Ok(phc) = self.hasher.rehash(password).await {
                        let mut hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
                        hashes.insert(user.to_owned(), phc);
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

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail});
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /login` (behind the login throttle): one 401 for a wrong password
/// and an unknown user, marked as a failure; a token on success, which
/// resets the account's counters.
async fn login(State(app): State<AppState>, Json(creds): Json<Credentials>) -> Response {
    match app.check_password(&creds.username, &creds.password).await {
        Ok(true) => {}
        Ok(false) => {
            let refused = ProblemJson.render(&invalid_credentials(), false);
            return (LoginOutcome::Failed, refused.map(axum::body::Body::from)).into_response();
        }
        // A full hashing pool: 503 + Retry-After, not a failure.
        Err(e) => return e.to_http_response().map(axum::body::Body::from),
    }
    let roles = USERS
        .iter()
        .find(|(u, _, _)| *u == creds.username)
        .map_or(&[][..], |(_, _, roles)| *roles);
    // A login token: it carries `auth_time` and `amr`.
    match app
        .issuer
        .login_token(creds.username)
        .roles(roles.iter().copied())
        .mint()
    {
        Ok(t) => (LoginOutcome::Succeeded, Json(TokenResponse::new(&t))).into_response(),
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "could not issue a token"),
    }
}

async fn me(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "user": claims.subject() }))
}

async fn admin(claims: Claims) -> Json<serde_json::Value> {
    Json(json!({ "admin": claims.subject() }))
}

#[derive(Deserialize)]
struct Revoke {
    user: String,
}

async fn revoke(State(app): State<AppState>, Json(body): Json<Revoke>) -> Response {
    match app.revocations.revoke_user(&body.user).await {
        Ok(version) => Json(json!({"revoked": body.user, "version": version})).into_response(),
        Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "revocation store unavailable",
        ),
    }
}

fn signing_key() -> Result<SigningKey, String> {
    let kid = std::env::var("JWT_KID").unwrap_or_else(|_| "jwt-api-1".into());
    match std::env::var_os("JWT_KEY_FILE") {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("cannot read JWT_KEY_FILE: {e}"))?;
            SigningKey::from_pkcs8_pem_detect(&kid, &pem).map_err(|e| format!("JWT_KEY_FILE: {e}"))
        }
        None => {
            SigningKey::generate(&kid, portcullis::jwt::Algorithm::ES256).map_err(|e| e.to_string())
        }
    }
}

/// The revocation store and the login throttle's store: PostgreSQL or
/// SQLite when `DATABASE_URL` is set, Redis when `REDIS_URL` is set (keys
/// under `$REDIS_KEY_PREFIX`, default `jwt-api`), this process' memory
/// otherwise.
async fn stores() -> Result<(Arc<dyn RevocationStore>, Arc<dyn ThrottleStore>), String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let url = DatabaseUrl::new(url).map_err(|e| e.to_string())?;
        let db = Database::connect(&url).map_err(|e| e.to_string())?;
        db.migrate()
            .await
            .map_err(|e| format!("DATABASE_URL ({url}): {e}"))?;
        // Fail closed: not serving until this instance's view holds the
        // revocations already made.
        let store = db
            .revocation_store(Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "revocations and login throttle: in {url}, revocations pushed to this instance as they happen"
        );
        return Ok((store, db.throttle_store()));
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!(
            "revocations and login throttle: in memory (set REDIS_URL to share them between instances)"
        );
        return Ok((
            Arc::new(MemoryRevocationStore::new()),
            Arc::new(MemoryThrottleStore::new()),
        ));
    };
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "jwt-api".into());
    let backend = RedisConfig::new(url)
        .key_prefix(prefix)
        .build()
        .map_err(|e| format!("REDIS_URL: {e}"))?;
    let throttle = Arc::new(RedisThrottleStore::new(backend.clone()));
    let store = RedisRevocationStore::new(backend).map_err(|e| e.to_string())?;
    // Fail closed: until its first snapshot has loaded, this instance's
    // view misses the revocations made elsewhere and would accept those
    // tokens. Later outages are fine: the view keeps what it has.
    if !store.wait_synced(Duration::from_secs(10)).await {
        return Err(format!(
            "Redis ({:?}) did not answer within 10 s; not serving without the revocations made by other instances",
            store.backend()
        ));
    }
    eprintln!(
        "revocations and login throttle: in Redis ({:?}), revocations pushed to this instance as they happen",
        store.backend()
    );
    Ok((Arc::new(store), throttle))
}

/// The app on `revocations` and the throttle's store; `port` only sets the
/// default issuer.
fn app(
    port: u16,
    revocations: Arc<dyn RevocationStore>,
    throttle: Arc<dyn ThrottleStore>,
) -> Result<Router, String> {
    let iss = std::env::var("JWT_ISSUER").unwrap_or_else(|_| format!("http://127.0.0.1:{port}"));
    let aud = std::env::var("JWT_AUDIENCE").unwrap_or_else(|_| "jwt-api".into());
    let issuer = JwtIssuer::builder(signing_key()?)
        .issuer(&iss)
        .audience(&aud)
        .revocation(revocations.view())
        .build()
        .map_err(|e| e.to_string())?;
    let jwt = JwtLayer::builder(issuer.keys())
        .issuer(&iss)
        .audience(&aud)
        .revocation(revocations.view())
        .build()
        .map_err(|e| e.to_string())?;
    let jwks_issuer = issuer.clone();
    let state = AppState {
        issuer,
        revocations,
        hasher: PasswordHasher::builder()
            .build()
            .map_err(|e| e.to_string())?,
        hashes: Arc::new(Mutex::new(
            USERS
                .iter()
                .map(|(u, h, _)| ((*u).to_owned(), (*h).to_owned()))
                .collect(),
        )),
    };
    let throttle = LoginThrottleLayer::from_arc(throttle, ThrottleConfig::default());
    let protected = Router::new()
        .route("/admin", get(admin))
        .route("/admin/revoke", post(revoke))
        .route_layer(RequireClaimsLayer::role("admin"))
        .route("/me", get(me))
        .layer(jwt);
    Ok(Router::new()
        .route("/login", post(login).layer(throttle))
        .route(
            "/.well-known/jwks.json",
            get(move || async move { JwksResponse::from(&jwks_issuer) }),
        )
        .merge(protected)
        .with_state(state))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let (revocations, throttle) = stores().await?;
    let router = app(port, revocations, throttle)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "jwt-api listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    // The peer address: the throttle counts per client address.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string())
}
