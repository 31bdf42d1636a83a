//! Template: server-side sessions with portcullis, and the front door
//! before them (the app; `main.rs` serves it).
//!
//! - Passwords are argon2id PHC strings, checked by
//!   [`PasswordHasher::verify`] on a bounded pool; an unknown user costs the
//!   same verification and gets the same 401 as a wrong password. A hash
//!   made with older parameters is replaced at the next login.
//! - `POST /login` and `POST /reauth` sit behind a [`LoginThrottleLayer`]:
//!   failures counted per account and per client address, 429 with
//!   `Retry-After` past the free tries.
//! - "Remember me" (`"remember": true`) gets a cookie that outlives the
//!   browser ([`REMEMBER_FOR`]); without it the cookie ends with the
//!   browser session.
//! - `POST /password` needs a login at most [`FRESH_FOR`] old
//!   ([`RequireFreshLogin`]); `POST /reauth` makes it fresh again. A
//!   password change stores the new hash and ends the user's other
//!   sessions.
//! - Every layer emits its authentication events through one [`Events`]
//!   handle. `GET /activity` (logged in) is "your security activity": the
//!   user's last [`RecentActivity::PER_USER`] audit events (logins, failed
//!   logins at their account, logouts, password changes...) with time,
//!   client address and reason, never another user's. With
//!   [`Options::audit_log`] the same events are appended to a file as JSON
//!   lines (the audit trail).
//!
//! ```
//! use std::sync::Arc;
//! use portcullis::session::MemoryStore;
//! use session_login::{Options, app};
//!
//! let (router, users) = app(Arc::new(MemoryStore::new()), Options::new(vec![7; 32]))?;
//! assert!(users.stored_hash("alice").unwrap().starts_with("$argon2id$"));
//! # let _: axum::Router = router;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::core::events::{AuditTrail, AuthEvent, Events, RecentActivity, audit};
use portcullis::core::{ProblemJson, RenderRejection as _, SharedClock, SystemClock};
use portcullis::password::{PasswordError, PasswordHasher, Verification, invalid_credentials};
use portcullis::session::{
    AuthMethod, CurrentUser, LoginOptions, RequireFreshLogin, Session, SessionConfig, SessionError,
    SessionLayer, SessionStore,
};
use portcullis::throttle::{
    LoginFailure, LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig,
    ThrottleStore,
};
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use serde::Deserialize;
use serde_json::json;

/// The demo users, as a user table stores them: argon2id PHC strings,
/// never the passwords. `alice` / `wonderland` is hashed at the current
/// parameters (m = 19456 KiB, t = 2, p = 1); `bob` / `builder` at older
/// ones (m = 12288 KiB, t = 3), so his first login upgrades his hash.
pub const DEMO_USERS: &[(&str, &str)] = &[
    (
        "alice",
        "$argon2id$v=19$m=19456,t=2,p=1$SKNIe9Qv37UkvGtgT0BKhA$tCXZtDFrZJ2oq2MyC3XNsklOKMYWSvzViShADKeaXDg",
    ),
    (
        "bob",
        "$argon2id$v=19$m=12288,t=3,p=1$gyONp0l0Rkw7LppCn+pSXA$A3V9W57TaK6FS6ebnjGqEhMITZLVQIkX0jFkJecKKc4",
    ),
];

/// How long a "remember me" login lasts: 30 days.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How recent a login must be to change the password: 10 minutes.
pub const FRESH_FOR: Duration = Duration::from_secs(10 * 60);

/// How the app is built.
#[derive(Clone)]
pub struct Options {
    /// The key that signs CSRF tokens (at least 32 random bytes), shared by
    /// every instance.
    pub csrf_key: Vec<u8>,
    /// Where the login throttle counts failures; `None`: this process'
    /// memory. Give every instance the same shared store.
    pub throttle: Option<Arc<dyn ThrottleStore>>,
    /// The clock of sessions and the throttle (tests pass a manual one).
    pub clock: SharedClock,
    /// **Insecure.** Cookies without `Secure` and `__Host-`, for
    /// plain-http development on hosts other than localhost.
    pub insecure_dev_cookies: bool,
    /// The audit trail: a file the audit events are appended to, one JSON
    /// object per line ([`AuditTrail`]); `None`: no file (the activity page
    /// works either way). The lines carry user ids and client addresses,
    /// personal data: rotate the file outside the process (logrotate with
    /// `copytruncate`) and keep it no longer than the retention period you
    /// have set. The file is created readable by the process's account
    /// only (`0600`), and written on a thread of its own: a file that
    /// blocks never holds a request up. [`app`] must then be called inside
    /// a Tokio runtime: it spawns the task that reports a write error.
    pub audit_log: Option<PathBuf>,
}

impl Options {
    /// Tokens signed with `csrf_key`, the throttle in memory, the system
    /// clock, secure cookies.
    #[must_use]
    pub fn new(csrf_key: Vec<u8>) -> Self {
        Self {
            csrf_key,
            throttle: None,
            clock: SystemClock::shared(),
            insecure_dev_cookies: false,
            audit_log: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("csrf_key", &"REDACTED")
            .field("shared_throttle", &self.throttle.is_some())
            .field("insecure_dev_cookies", &self.insecure_dev_cookies)
            .field("audit_log", &self.audit_log)
            .finish_non_exhaustive()
    }
}

/// The user table: user name to PHC string, and the hasher that checks
/// them. (A real app keeps the hashes in its database.)
pub struct Users {
    hasher: PasswordHasher,
    hashes: Mutex<HashMap<String, String>>,
    /// Each user's last audit events: the activity page.
    activity: RecentActivity,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("hasher", &self.hasher)
            .field("users", &self.table().len())
            .finish()
    }
}

impl Users {
    /// The demo users.
    ///
    /// # Errors
    ///
    /// When the hasher cannot be built.
    pub fn demo() -> Result<Self, portcullis::password::PasswordConfigError> {
        Ok(Self {
            hasher: PasswordHasher::builder().build()?,
            hashes: Mutex::new(
                DEMO_USERS
                    .iter()
                    .map(|(u, h)| ((*u).to_owned(), (*h).to_owned()))
                    .collect(),
            ),
            activity: RecentActivity::new(),
        })
    }

    /// The PHC string stored for `user`.
    #[must_use]
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        self.table().get(user).cloned()
    }

    /// How many hashes the hasher has computed (verifications, those of
    /// unknown users included, and new hashes).
    #[must_use]
    pub fn hashes_computed(&self) -> u64 {
        self.hasher.stats().completed
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.hashes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks `password` against `user`'s hash (an unknown user costs the
    /// same), and upgrades a hash made with older parameters.
    async fn check(&self, user: &str, password: &str) -> Result<bool, PasswordError> {
        let stored = self.stored_hash(user);
        match self.hasher.verify(stored.as_deref(), password).await? {
            Verification::Verified { needs_rehash } => {
                if needs_rehash {
                    // The password is at hand only now. A busy pool only
                    // delays the upgrade to the next login.
                    if let Ok(phc) = self.hasher.rehash(password).await {
                        self.table().insert(user.to_owned(), phc);
                    }
                }
                Ok(true)
            }
            Verification::Mismatch => Ok(false),
        }
    }
}

/// A problem+json response for `rejection`.
fn problem(rejection: &portcullis::core::Rejection) -> Response {
    ProblemJson
        .render(rejection, false)
        .map(axum::body::Body::from)
}

/// The answer to a failed password check: one 401 for a wrong password and
/// an unknown user, marked as a failure for the throttle. A busy hashing
/// pool is a 503 and counts as nothing.
fn refused(error: Option<&PasswordError>) -> Response {
    match error {
        None => (LoginOutcome::Failed, problem(&invalid_credentials())).into_response(),
        Some(e @ PasswordError::StoredHash(_)) => {
            (LoginOutcome::Failed, problem(&e.rejection())).into_response()
        }
        Some(e) => problem(&e.rejection()),
    }
}

/// The answer to a wrong password: [`refused`], and when the account
/// exists, its user id for the `login_failed` event (so the failure shows
/// on that user's activity page). The client sees the same answer either
/// way. (The demo's user ids are the user names; a real app gives the id
/// its user table resolved, never the name typed.)
fn refused_at(users: &Users, name: &str) -> Response {
    let mut response = refused(None);
    if users.table().contains_key(name) {
        response
            .extensions_mut()
            .insert(LoginFailure::invalid_credentials().user(name));
    }
    response
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    /// The "remember me" box.
    #[serde(default)]
    remember: bool,
}

async fn login(
    State(users): State<Arc<Users>>,
    session: Session,
    Json(creds): Json<Credentials>,
) -> Result<Response, SessionError> {
    match users.check(&creds.username, &creds.password).await {
        Ok(true) => {}
        Ok(false) => return Ok(refused_at(&users, &creds.username)),
        Err(e) => return Ok(refused(Some(&e))),
    }
    let mut options = LoginOptions::new();
    if creds.remember {
        options = options.remember(REMEMBER_FOR);
    }
    // Renews the session id: whatever id the browser had before is dead now.
    session.login_with(creds.username.clone(), options).await?;
    Ok((
        LoginOutcome::Succeeded,
        Json(json!({ "user": creds.username })),
    )
        .into_response())
}

/// `{"username": <the session's user>, "password": ...}`: naming the user
/// lets the login throttle count the guesses against that account (not
/// only the address); a body naming anyone else is refused before any
/// password is checked.
#[derive(Deserialize)]
struct Reauth {
    username: String,
    password: String,
}

/// `POST /reauth`: the logged-in user enters their password again, which
/// makes the login fresh for [`FRESH_FOR`].
async fn reauth(
    State(users): State<Arc<Users>>,
    CurrentUser(user): CurrentUser,
    session: Session,
    Json(form): Json<Reauth>,
) -> Result<Response, SessionError> {
    if form.username != user {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "the username is not the session's user" })),
        )
            .into_response());
    }
    match users.check(&user, &form.password).await {
        Ok(true) => {}
        Ok(false) => return Ok(refused_at(&users, &user)),
        Err(e) => return Ok(refused(Some(&e))),
    }
    session.reauthenticated([AuthMethod::PASSWORD]).await?;
    Ok((LoginOutcome::Succeeded, Json(json!({ "user": user }))).into_response())
}

#[derive(Deserialize)]
struct NewPassword {
    new_password: String,
}

/// `POST /password` (behind [`RequireFreshLogin`]): the new password is
/// checked by the policy, stored as a new hash, and every other session of
/// the user ends.
async fn change_password(
    State(users): State<Arc<Users>>,
    CurrentUser(user): CurrentUser,
    session: Session,
    Json(form): Json<NewPassword>,
) -> Result<Response, SessionError> {
    let phc = match users
        .hasher
        .hash_for(form.new_password.as_str(), &[&user, "session-login"])
        .await
    {
        Ok(phc) => phc,
        Err(e) => return Ok(problem(&e.rejection())),
    };
    users.table().insert(user, phc);
    let ended = session.password_changed().await?;
    Ok(Json(json!({ "ended": ended })).into_response())
}

/// A CSRF token for the `x-csrf-token` header of the next `POST`. Fetch a
/// new one after logging in: tokens are bound to the session.
async fn csrf_token(token: CsrfToken) -> Json<serde_json::Value> {
    Json(json!({ "header": token.header_name().as_str(), "token": token.as_str() }))
}

async fn me(CurrentUser(user): CurrentUser) -> Json<serde_json::Value> {
    Json(json!({ "user": user }))
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_everywhere(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    let ended = session.logout_everywhere().await?;
    Ok(Json(json!({ "ended": ended })))
}

async fn sessions(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    Ok(Json(
        json!({ "sessions": session.active_sessions().await? }),
    ))
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-06T22:48:49Z`: a time in UTC, to the second.
fn utc(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One row of the activity page.
fn activity_row(event: &AuthEvent) -> String {
    format!(
        "<tr><td><time>{}</time></td><td class=\"event\">{}</td><td class=\"client\">{}</td>\
         <td class=\"reason\">{}</td></tr>",
        utc(event.at),
        escape(event.kind.name()),
        escape(&event.client.map(|ip| ip.to_string()).unwrap_or_default()),
        escape(event.kind.reason().unwrap_or("")),
    )
}

/// `GET /activity`: "your security activity", the logged-in user's last
/// audit events, newest first (401 without a login).
async fn activity_page(
    State(users): State<Arc<Users>>,
    CurrentUser(user): CurrentUser,
) -> Response {
    let rows: String = users
        .activity
        .recent(&user)
        .iter()
        .map(|e| activity_row(e))
        .collect();
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Your security activity</title></head><body>\
         <h1>Your security activity</h1><p>User: <span id=\"user\">{}</span></p>\
         <table id=\"activity\"><thead><tr><th>Time (UTC)</th><th>Event</th>\
         <th>Client address</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>\
         </body></html>\n",
        escape(&user)
    );
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Html(page),
    )
        .into_response()
}

/// The route template of the request, for events.
fn matched_path(ext: &axum::http::Extensions) -> Option<Arc<str>> {
    ext.get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().into())
}

fn peer_ip(ext: &axum::http::Extensions, _: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The app on the session `store`, and its user table. Serve it with the
/// peer address (`into_make_service_with_connect_info::<SocketAddr>()`):
/// the throttle counts per client address.
///
/// # Errors
///
/// An invalid session, CSRF or throttle configuration (a CSRF key shorter
/// than 32 bytes).
pub fn app(
    store: Arc<dyn SessionStore>,
    options: Options,
) -> Result<(Router, Arc<Users>), Box<dyn std::error::Error + Send + Sync>> {
    let users = Arc::new(Users::demo()?);
    // One handle for every layer. The activity log is fed inline (a page
    // read right after a request shows its events); the audit file by a
    // task of its own.
    let events = Events::builder()
        .client_ip(peer_ip)
        .route(matched_path)
        .recorder(users.activity.clone())
        .build();
    if let Some(path) = &options.audit_log {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "an audit log needs app() to be called inside a Tokio runtime")?;
        let file =
            audit::open_file(path).map_err(|e| format!("audit log {}: {e}", path.display()))?;
        // The lines are written on a thread of their own: a stalled
        // reader of the file never holds up a request.
        let writer = AuditTrail::new()
            .json_lines(std::io::BufWriter::new(file))
            .spawn(events.subscribe("audit-log", 4096))
            .map_err(|e| format!("audit log {}: {e}", path.display()))?;
        let path = path.clone();
        runtime.spawn(async move {
            if let Err(e) = writer.finished().await {
                eprintln!(
                    "audit log {}: {e}; no more lines are written",
                    path.display()
                );
            }
        });
    }
    let mut config = SessionConfig::default()
        .client_ip(peer_ip)
        .clock(options.clock.clone())
        .events(events.clone());
    let mut csrf =
        CsrfConfig::signed(options.csrf_key, SignedBinding::session()).events(events.clone());
    if options.insecure_dev_cookies {
        config = config.insecure_dev_cookies();
        csrf = csrf.insecure_dev_cookies();
    }
    let throttle_store = options
        .throttle
        .unwrap_or_else(|| Arc::new(MemoryThrottleStore::new()));
    let throttle = LoginThrottleLayer::from_arc(
        throttle_store,
        ThrottleConfig::builder()
            .clock(options.clock)
            .events(events)
            .build()?,
    );
    let layer = SessionLayer::from_arc(store, config)?;
    let router = Router::new()
        .route("/password", post(change_password))
        // Only the routes above: a login at most FRESH_FOR old.
        .route_layer(RequireFreshLogin::within(FRESH_FOR))
        .route("/", get(|| async { Html(include_str!("login.html")) }))
        .route("/csrf", get(csrf_token))
        .route("/login", post(login).layer(throttle.clone()))
        .route("/reauth", post(reauth).layer(throttle))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/sessions", get(sessions))
        .route("/activity", get(activity_page))
        .with_state(Arc::clone(&users))
        // Inner: the checks run after the session is installed, before any
        // handler.
        .layer(CsrfLayer::new(csrf)?)
        .layer(layer);
    Ok((router, users))
}

#[cfg(test)]
mod activity_tests {
    use std::time::{Duration, SystemTime};

    use portcullis::core::events::{AuthEvent, AuthEventKind};

    use super::{activity_row, escape, utc};

    #[test]
    fn times_are_utc_dates() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(utc(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc(at(1_796_597_329)), "2026-12-06T22:48:49Z");
    }

    #[test]
    fn rows_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
        );
        let row = activity_row(&AuthEvent::new(
            "throttle",
            AuthEventKind::LoginFailed {
                reason: "<b>locked</b>",
            },
        ));
        assert!(row.contains("&lt;b&gt;locked&lt;/b&gt;") && !row.contains("<b>"));
    }
}
