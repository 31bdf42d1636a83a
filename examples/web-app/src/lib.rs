//! Template: a server-rendered app with sessions and CSRF protection.
//!
//! Plain HTML forms, no JavaScript. Every form carries a hidden
//! `csrf_token` field rendered by the [`CsrfToken`] extractor; `CsrfLayer`
//! checks it (and tower-http's Fetch Metadata / `Origin` check) before any
//! handler runs.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use portcullis::csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use portcullis::session::{Session, SessionConfig, SessionError, SessionLayer, SessionStore};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// Demo users. A real app checks a slow password hash (argon2) instead.
const USERS: &[(&str, &str, &str)] = &[
    ("alice", "wonderland", "Alice Liddell"),
    ("bob", "builder", "Bob the Builder"),
];

/// The longest display name accepted, in characters.
const MAX_DISPLAY_NAME: usize = 64;

fn check_password(username: &str, password: &str) -> bool {
    USERS
        .iter()
        .any(|(u, p, _)| *u == username && bool::from(p.as_bytes().ct_eq(password.as_bytes())))
}

/// How the app is deployed.
#[derive(Clone, Default)]
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
}

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("public_origin", &self.public_origin)
            .field("insecure_dev_cookies", &self.insecure_dev_cookies)
            .field("csrf_key", &self.csrf_key.as_ref().map(|_| "REDACTED"))
            .finish()
    }
}

/// The app's own state: display names, and how often each state-changing
/// handler ran (tests read them to prove a refused request changed
/// nothing).
#[derive(Debug, Default)]
pub struct AppState {
    display_names: Mutex<HashMap<String, String>>,
    profile_updates: AtomicU64,
    logins: AtomicU64,
}

impl AppState {
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
}

async fn login(
    State(state): State<Arc<AppState>>,
    session: Session,
    token: CsrfToken,
    Form(creds): Form<Credentials>,
) -> Result<Response, SessionError> {
    if !check_password(&creds.username, &creds.password) {
        let page = login_page(&token, Some("Unknown user or wrong password."));
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    // Renews the session id, and with it the CSRF binding: tokens rendered
    // before the login are dead now.
    session.login(creds.username).await?;
    state.logins.fetch_add(1, Ordering::SeqCst);
    Ok(Redirect::to("/profile").into_response())
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
    let mut session_config = SessionConfig::default().client_ip(peer_ip);
    if config.insecure_dev_cookies {
        session_config = session_config.insecure_dev_cookies();
    }
    let key = match config.csrf_key {
        Some(key) => key,
        None => portcullis::core::OpaqueToken::generate()?
            .as_bytes()
            .to_vec(),
    };
    let mut csrf = CsrfConfig::signed(key, SignedBinding::session());
    if config.insecure_dev_cookies {
        csrf = csrf.insecure_dev_cookies();
    }
    if let Some(origin) = config.public_origin {
        csrf = csrf.public_origin(origin);
    }
    let state = Arc::new(AppState::default());
    state.names().extend(
        USERS
            .iter()
            .map(|(u, _, d)| ((*u).to_owned(), (*d).to_owned())),
    );
    let router = Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/profile", get(profile).post(update_profile))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .with_state(Arc::clone(&state))
        // Inner: checks run after the session is installed, before handlers.
        .layer(CsrfLayer::new(csrf)?)
        .layer(SessionLayer::new(store, session_config)?);
    Ok((router, state))
}
