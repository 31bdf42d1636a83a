//! Template: a server-rendered app with sessions and CSRF protection.
//!
//! Plain HTML forms, no JavaScript. Every form carries a hidden
//! `csrf_token` field rendered by the [`CsrfToken`] extractor; `CsrfLayer`
//! checks it (and tower-http's Fetch Metadata / `Origin` check) before any
//! handler runs.
//!
//! The front door: the demo users are argon2id PHC strings checked by
//! [`PasswordHasher::verify`] (an unknown user costs the same and reads the
//! same page as a wrong password; a hash made with older parameters is
//! replaced at the next login); `POST /login` and `POST /reauth` sit behind
//! a [`LoginThrottleLayer`] (429 with `Retry-After` after repeated
//! failures); the login form has a "remember me" box (a cookie that
//! outlives the browser, [`REMEMBER_FOR`]); `/account/password` needs a
//! login at most [`FRESH_FOR`] old ([`RequireFreshLogin`]: an older one is
//! sent to `/reauth` to enter the password again), checks the new
//! password against the policy, stores its hash and ends the user's other
//! sessions.
//!
//! Every layer emits its authentication events through one [`Events`]
//! handle. `/account/activity` is "your security activity": the logged-in
//! user's last [`RecentActivity::PER_USER`] audit events (logins, failed
//! logins at their account, logouts, password changes...) with time,
//! client address and reason, never another user's. With
//! [`AppConfig::audit_log`] the same events are appended to a file as JSON
//! lines (the audit trail).
//!
//! Tokens are signed (`CsrfConfig::signed` with `SignedBinding::session`):
//! an anonymous visitor's token is bound to the `__Host-csrf` pre-session
//! cookie, a logged-in user's to the session id, so logging in renews it
//! together with the session id. Anonymous pages (the login form) create no
//! server state at all: a flood of `GET /login` costs no memory. (The
//! synchronizer mode, `CsrfConfig::session`, would store an anonymous
//! session for every visitor who sees the form.)
//!
//! ```
//! use portcullis::session::MemoryStore;
//! use web_app::{AppConfig, app};
//!
//! let (router, state) = app(MemoryStore::new(), AppConfig::default())?;
//! assert_eq!(state.display_name("alice").as_deref(), Some("Alice Liddell"));
//! # let _: axum::Router = router;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use portcullis::core::events::{AuditTrail, AuthEvent, Events, RecentActivity, audit};
use portcullis::core::{SharedClock, SystemClock};
use portcullis::csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use portcullis::password::{PasswordError, PasswordHasher, Verification};
use portcullis::session::{
    AuthMethod, LoginOptions, RequireFreshLogin, Session, SessionConfig, SessionError,
    SessionLayer, SessionStore,
};
use portcullis::throttle::{
    LoginFailure, LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig,
    ThrottleStore,
};
use serde::Deserialize;

/// The demo users: name, argon2id PHC string (never the password), display
/// name. `alice` / `wonderland` is hashed at the current parameters
/// (m = 19456 KiB, t = 2, p = 1); `bob` / `builder` at older ones
/// (m = 12288 KiB, t = 3), so his first login upgrades his hash.
pub const DEMO_USERS: &[(&str, &str, &str)] = &[
    (
        "alice",
        "$argon2id$v=19$m=19456,t=2,p=1$SKNIe9Qv37UkvGtgT0BKhA$tCXZtDFrZJ2oq2MyC3XNsklOKMYWSvzViShADKeaXDg",
        "Alice Liddell",
    ),
    (
        "bob",
        "$argon2id$v=19$m=12288,t=3,p=1$gyONp0l0Rkw7LppCn+pSXA$A3V9W57TaK6FS6ebnjGqEhMITZLVQIkX0jFkJecKKc4",
        "Bob the Builder",
    ),
];

/// How long a "remember me" login lasts: 30 days.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How recent a login must be to change the password: 10 minutes.
pub const FRESH_FOR: Duration = Duration::from_secs(10 * 60);

/// The longest display name accepted, in characters.
const MAX_DISPLAY_NAME: usize = 64;

/// How the app is deployed.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AppConfig {
    /// The origin users reach the app at (`https://example.com`) when it
    /// runs behind a proxy; `None` compares `Origin` with `Host`.
    pub public_origin: Option<String>,
    /// **Insecure.** Cookies without `Secure` and `__Host-`, for plain-http
    /// development on localhost only.
    pub insecure_dev_cookies: bool,
    /// The key that signs CSRF tokens (at least 32 random bytes). Every
    /// instance of the app must share it; `None` draws a random key when
    /// the app is built, so tokens die with the process and are not
    /// accepted by other instances.
    pub csrf_key: Option<Vec<u8>>,
    /// Where the login throttle counts failures; `None`: this process'
    /// memory. Give every instance the same shared store (Redis, SQL).
    pub throttle: Option<Arc<dyn ThrottleStore>>,
    /// The clock of sessions and the throttle; `None`: the system clock
    /// (tests pass a manual one).
    pub clock: Option<SharedClock>,
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

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("public_origin", &self.public_origin)
            .field("insecure_dev_cookies", &self.insecure_dev_cookies)
            .field("csrf_key", &self.csrf_key.as_ref().map(|_| "REDACTED"))
            .field("shared_throttle", &self.throttle.is_some())
            .field("audit_log", &self.audit_log)
            .finish_non_exhaustive()
    }
}

/// The app's own state: the user table (password hashes, display names),
/// and how often each state-changing handler ran (tests read them to prove
/// a refused request changed nothing).
#[derive(Debug)]
pub struct AppState {
    hasher: PasswordHasher,
    password_hashes: Mutex<HashMap<String, String>>,
    display_names: Mutex<HashMap<String, String>>,
    profile_updates: AtomicU64,
    logins: AtomicU64,
    /// Each user's last audit events: the activity page.
    activity: RecentActivity,
}

impl AppState {
    /// The PHC string stored for `user`.
    ///
    /// # Panics
    ///
    /// Never: a poisoned lock is recovered.
    #[must_use]
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        self.hashes().get(user).cloned()
    }

    /// How many hashes the hasher has computed (verifications, those of
    /// unknown users included, and new hashes).
    #[must_use]
    pub fn hashes_computed(&self) -> u64 {
        self.hasher.stats().completed
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.password_hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks `password` against `user`'s hash (an unknown user costs the
    /// same), and upgrades a hash made with older parameters.
    async fn check_password(&self, user: &str, password: &str) -> Result<bool, PasswordError> {
        let stored = self.stored_hash(user);
        match self.hasher.verify(stored.as_deref(), password).await {
            Ok(Verification::Verified { needs_rehash }) => {
                if needs_rehash {
                    // The password is at hand only now; a busy pool only
                    // delays the upgrade to the next login.
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

    /// The display name of `user`.
    ///
    /// # Panics
    ///
    /// Never: a poisoned lock is recovered.
    #[must_use]
    pub fn display_name(&self, user: &str) -> Option<String> {
        self.names().get(user).cloned()
    }

    /// How many times `POST /profile` changed a display name.
    #[must_use]
    pub fn profile_updates(&self) -> u64 {
        self.profile_updates.load(Ordering::SeqCst)
    }

    /// How many logins succeeded.
    #[must_use]
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::SeqCst)
    }

    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.display_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <link rel=\"icon\" href=\"data:,\"><title>{title}</title></head>\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n"
    ))
}

fn login_page(token: &CsrfToken, error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |e| {
        format!("<p id=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    page(
        "Log in",
        &format!(
            "{error}<form id=\"login\" method=\"post\" action=\"/login\">{}\
             <label>User <input id=\"username\" name=\"username\" autocomplete=\"username\"></label>\
             <label>Password <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\"></label>\
             <label><input id=\"remember\" name=\"remember\" type=\"checkbox\" value=\"on\"> \
             Remember me for 30 days</label>\
             <button id=\"login-submit\" type=\"submit\">Log in</button></form>",
            token.hidden_input()
        ),
    )
}

async fn home(session: Session) -> Result<Redirect, SessionError> {
    Ok(match session.user_id().await? {
        Some(_) => Redirect::to("/profile"),
        None => Redirect::to("/login"),
    })
}

async fn login_form(token: CsrfToken) -> Html<String> {
    login_page(&token, None)
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    /// The "remember me" box: present when ticked.
    remember: Option<String>,
}

/// The page for a busy hashing pool: 503 with `Retry-After`, counted as no
/// attempt by the throttle.
fn busy(e: &PasswordError) -> Response {
    let rejection = e.rejection();
    let mut response = (
        rejection.status(),
        page(
            "Try again shortly",
            "<p id=\"error\" role=\"alert\">Too many logins are being checked; try again in a moment.</p>",
        ),
    )
        .into_response();
    if let Some(after) = rejection.retry_after() {
        response.headers_mut().insert(
            "retry-after",
            axum::http::HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}

async fn login(
    State(state): State<Arc<AppState>>,
    session: Session,
    token: CsrfToken,
    Form(creds): Form<Credentials>,
) -> Result<Response, SessionError> {
    match state.check_password(&creds.username, &creds.password).await {
        Ok(true) => {}
        Ok(false) => {
            // The same page for a wrong password and an unknown user.
            let page = login_page(&token, Some("Unknown user or wrong password."));
            let mut response =
                (StatusCode::UNAUTHORIZED, LoginOutcome::Failed, page).into_response();
            // An existing account's id goes into the `login_failed` event, so
            // the failure shows on its activity page; the client sees the
            // same page either way. (The demo's user ids are the user names;
            // a real app gives the id its user table resolved, never the
            // name typed.)
            if state.stored_hash(&creds.username).is_some() {
                response
                    .extensions_mut()
                    .insert(LoginFailure::invalid_credentials().user(creds.username.as_str()));
            }
            return Ok(response);
        }
        Err(e) => return Ok(busy(&e)),
    }
    let mut options = LoginOptions::new();
    if creds.remember.is_some() {
        options = options.remember(REMEMBER_FOR);
    }
    // Renews the session id, and with it the CSRF binding: tokens rendered
    // before the login are dead now.
    session.login_with(creds.username, options).await?;
    state.logins.fetch_add(1, Ordering::SeqCst);
    Ok((LoginOutcome::Succeeded, Redirect::to("/profile")).into_response())
}

/// Only this page may be asked for as `next` after re-authentication.
const PASSWORD_PAGE: &str = "/account/password";

fn reauth_page(user: &str, token: &CsrfToken, error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |e| {
        format!("<p id=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    page(
        "Confirm it is you",
        &format!(
            "{error}<p>Enter the password of <span id=\"user\">{user}</span> again to go on.</p>\
             <form id=\"reauth\" method=\"post\" action=\"/reauth\">{}\
             <input type=\"hidden\" name=\"username\" value=\"{user}\">\
             <label>Password <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\"></label>\
             <button id=\"reauth-submit\" type=\"submit\">Confirm</button></form>",
            token.hidden_input(),
            user = escape(user),
        ),
    )
}

/// `GET /reauth`: where [`RequireFreshLogin`] sends a page whose login is
/// older than [`FRESH_FOR`].
async fn reauth_form(session: Session, token: CsrfToken) -> Result<Response, SessionError> {
    Ok(match session.user_id().await? {
        Some(user) => reauth_page(&user, &token, None).into_response(),
        None => Redirect::to("/login").into_response(),
    })
}

/// The re-authentication form names the session's user, so that the
/// login throttle counts the guesses against that account (not only the
/// address); the handler refuses a form naming anyone else before any
/// password is checked.
#[derive(Deserialize)]
struct ReauthForm {
    username: String,
    password: String,
}

/// `POST /reauth` (behind the login throttle): the right password makes
/// the login fresh again, and leads on to the password page.
async fn reauth(
    State(state): State<Arc<AppState>>,
    session: Session,
    token: CsrfToken,
    Form(form): Form<ReauthForm>,
) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    if form.username != user {
        return Ok((
            StatusCode::BAD_REQUEST,
            reauth_page(&user, &token, Some("This form is for another user.")),
        )
            .into_response());
    }
    match state.check_password(&user, &form.password).await {
        Ok(true) => {}
        Ok(false) => {
            let page = reauth_page(&user, &token, Some("Wrong password."));
            return Ok((
                StatusCode::UNAUTHORIZED,
                LoginFailure::invalid_credentials().user(user.as_str()),
                page,
            )
                .into_response());
        }
        Err(e) => return Ok(busy(&e)),
    }
    session.reauthenticated([AuthMethod::PASSWORD]).await?;
    Ok((LoginOutcome::Succeeded, Redirect::to(PASSWORD_PAGE)).into_response())
}

fn password_page(user: &str, token: &CsrfToken, error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |e| {
        format!("<p id=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    page(
        "Change password",
        &format!(
            "{error}<p>User: <span id=\"user\">{user}</span></p>\
             <form id=\"change-password\" method=\"post\" action=\"{PASSWORD_PAGE}\">{}\
             <label>New password (15 characters or more) <input id=\"new-password\" \
             name=\"new_password\" type=\"password\" autocomplete=\"new-password\"></label>\
             <button id=\"change-password-submit\" type=\"submit\">Change password</button></form>\
             <p>Changing it logs out your other devices.</p>",
            token.hidden_input(),
            user = escape(user),
        ),
    )
}

/// `GET /account/password` (behind [`RequireFreshLogin`]).
async fn password_form(session: Session, token: CsrfToken) -> Result<Response, SessionError> {
    Ok(match session.user_id().await? {
        Some(user) => password_page(&user, &token, None).into_response(),
        None => Redirect::to("/login").into_response(),
    })
}

#[derive(Deserialize)]
struct PasswordForm {
    new_password: String,
}

/// `POST /account/password` (behind [`RequireFreshLogin`]): the policy
/// checks the new password, its hash replaces the old one, and every other
/// session of the user ends.
async fn change_password(
    State(state): State<Arc<AppState>>,
    session: Session,
    token: CsrfToken,
    Form(form): Form<PasswordForm>,
) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let phc = match state
        .hasher
        .hash_for(form.new_password.as_str(), &[&user, "web-app"])
        .await
    {
        Ok(phc) => phc,
        Err(PasswordError::Policy(e)) => {
            let page = password_page(&user, &token, Some(&e.to_string()));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
        Err(e) => return Ok(busy(&e)),
    };
    state.hashes().insert(user, phc);
    let ended = session.password_changed().await?;
    Ok(page(
        "Password changed",
        &format!(
            "<p id=\"password-changed\">Your password is changed; \
             <span id=\"ended\">{ended}</span> other session(s) logged out.</p>\
             <p><a href=\"/profile\">Back to the profile</a></p>"
        ),
    )
    .into_response())
}

async fn profile(
    State(state): State<Arc<AppState>>,
    session: Session,
    token: CsrfToken,
) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    Ok(profile_page(&state, &user, &token, None).into_response())
}

fn profile_page(
    state: &AppState,
    user: &str,
    token: &CsrfToken,
    error: Option<&str>,
) -> Html<String> {
    let display = state.display_name(user).unwrap_or_default();
    let error = error.map_or(String::new(), |e| {
        format!("<p id=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    // One token per form would do as well; each rendering is masked afresh.
    let hidden = token.hidden_input();
    page(
        "Profile",
        &format!(
            "{error}<p>User: <span id=\"user\">{user}</span></p>\
             <p>Display name: <span id=\"display-name\">{display}</span></p>\
             <p><a id=\"change-password-link\" href=\"{PASSWORD_PAGE}\">Change password</a></p>\
             <p><a id=\"activity-link\" href=\"{ACTIVITY_PAGE}\">Your security activity</a></p>\
             <form id=\"profile\" method=\"post\" action=\"/profile\">{hidden}\
             <label>New display name <input id=\"display-name-input\" name=\"display_name\" \
             maxlength=\"{MAX_DISPLAY_NAME}\"></label>\
             <button id=\"save\" type=\"submit\">Save</button></form>\
             <form id=\"logout\" method=\"post\" action=\"/logout\">{hidden}\
             <button id=\"logout-submit\" type=\"submit\">Log out</button></form>\
             <form id=\"logout-everywhere\" method=\"post\" action=\"/logout-everywhere\">{hidden}\
             <button id=\"logout-everywhere-submit\" type=\"submit\">Log out everywhere</button></form>",
            user = escape(user),
            display = escape(&display),
        ),
    )
}

/// The activity page.
const ACTIVITY_PAGE: &str = "/account/activity";

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

/// `GET /account/activity`: "your security activity", the logged-in
/// user's last audit events, newest first (the login page without a
/// login).
async fn activity_page(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let rows: String = state
        .activity
        .recent(&user)
        .iter()
        .map(|e| activity_row(e))
        .collect();
    let body = format!(
        "<p>User: <span id=\"user\">{}</span></p>\
         <table id=\"activity\"><thead><tr><th>Time (UTC)</th><th>Event</th>\
         <th>Client address</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>\
         <p><a href=\"/profile\">Back to the profile</a></p>",
        escape(&user)
    );
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        page("Your security activity", &body),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ProfileForm {
    display_name: String,
}

async fn update_profile(
    State(state): State<Arc<AppState>>,
    session: Session,
    token: CsrfToken,
    Form(form): Form<ProfileForm>,
) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let name = form.display_name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_DISPLAY_NAME
        || name.chars().any(char::is_control)
    {
        let msg = format!("A display name has 1 to {MAX_DISPLAY_NAME} printable characters.");
        let page = profile_page(&state, &user, &token, Some(&msg));
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    state.names().insert(user, name.to_owned());
    state.profile_updates.fetch_add(1, Ordering::SeqCst);
    Ok(Redirect::to("/profile").into_response())
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.logout().await?;
    Ok(Redirect::to("/login"))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    match session.logout_everywhere().await {
        Ok(_) => {}
        // Nobody logged in: nothing to end.
        Err(e) if e.kind() == portcullis::session::SessionErrorKind::NotAuthenticated => {}
        Err(e) => return Err(e),
    }
    Ok(Redirect::to("/login"))
}

/// The route template of the request, for events.
fn matched_path(ext: &axum::http::Extensions) -> Option<Arc<str>> {
    ext.get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().into())
}

fn peer_ip(ext: &axum::http::Extensions, _: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The app on `store`, and its state.
///
/// # Errors
///
/// When the session or CSRF configuration is invalid (for example a
/// malformed public origin, or a CSRF key shorter than 32 bytes), or when
/// no random key can be drawn.
pub fn app(
    store: impl SessionStore,
    config: AppConfig,
) -> Result<(Router, Arc<AppState>), Box<dyn std::error::Error + Send + Sync>> {
    let clock = config.clock.unwrap_or_else(SystemClock::shared);
    let activity = RecentActivity::new();
    // One handle for every layer. The activity log is fed inline (a page
    // read right after a request shows its events); the audit file by a
    // task of its own.
    let events = Events::builder()
        .client_ip(peer_ip)
        .route(matched_path)
        .recorder(activity.clone())
        .build();
    if let Some(path) = &config.audit_log {
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
    let mut session_config = SessionConfig::default()
        .client_ip(peer_ip)
        .clock(Arc::clone(&clock))
        .reauthentication_url("/reauth")
        .events(events.clone());
    if config.insecure_dev_cookies {
        session_config = session_config.insecure_dev_cookies();
    }
    let key = match config.csrf_key {
        Some(key) => key,
        None => portcullis::core::OpaqueToken::generate()?
            .as_bytes()
            .to_vec(),
    };
    let mut csrf = CsrfConfig::signed(key, SignedBinding::session()).events(events.clone());
    if config.insecure_dev_cookies {
        csrf = csrf.insecure_dev_cookies();
    }
    if let Some(origin) = config.public_origin {
        csrf = csrf.public_origin(origin);
    }
    let state = Arc::new(AppState {
        hasher: PasswordHasher::builder().build()?,
        password_hashes: Mutex::new(
            DEMO_USERS
                .iter()
                .map(|(u, h, _)| ((*u).to_owned(), (*h).to_owned()))
                .collect(),
        ),
        display_names: Mutex::new(
            DEMO_USERS
                .iter()
                .map(|(u, _, d)| ((*u).to_owned(), (*d).to_owned()))
                .collect(),
        ),
        profile_updates: AtomicU64::new(0),
        logins: AtomicU64::new(0),
        activity,
    });
    let throttle = LoginThrottleLayer::from_arc(
        config
            .throttle
            .unwrap_or_else(|| Arc::new(MemoryThrottleStore::new())),
        ThrottleConfig::builder()
            .clock(clock)
            .events(events)
            .build()?,
    );
    let router = Router::new()
        .route(PASSWORD_PAGE, get(password_form).post(change_password))
        // Only the route above: a login at most FRESH_FOR old.
        .route_layer(RequireFreshLogin::within(FRESH_FOR))
        .route("/", get(home))
        .route(
            "/login",
            get(login_form).post(login).layer(throttle.clone()),
        )
        .route("/reauth", get(reauth_form).post(reauth).layer(throttle))
        .route("/profile", get(profile).post(update_profile))
        .route(ACTIVITY_PAGE, get(activity_page))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .with_state(Arc::clone(&state))
        // Inner: checks run after the session is installed, before handlers.
        .layer(CsrfLayer::new(csrf)?)
        .layer(SessionLayer::new(store, session_config)?);
    Ok((router, state))
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
