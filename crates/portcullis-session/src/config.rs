//! `SessionConfig`: timeouts, cookie, transport, per-user cap.

use std::fmt;
use std::time::Duration;

use http::HeaderName;
use portcullis_core::events::Events;
use portcullis_core::request::ClientIpFn;
use portcullis_core::{CookieConfig, CookieConfigError, SharedClock, SystemClock};

use crate::store::CapPolicy;

/// How the session id travels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A cookie (the default; for browsers).
    Cookie,
    /// A request header; new ids are returned in a response header of the
    /// same name (for non-browser clients that keep no cookie jar).
    Header(HeaderName),
}

/// The default per-user session cap: at most this many concurrent sessions
/// per user, the oldest logged out first
/// ([`SessionConfig::max_sessions_per_user`]).
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 20;

/// The default [`SessionConfig::max_remember`]: 30 days.
pub const DEFAULT_MAX_REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest [`SessionConfig::max_remember`] accepted: 400 days, the
/// cap browsers put on a cookie's lifetime (RFC 6265bis).
pub const MAX_REMEMBER_LIMIT: Duration = Duration::from_secs(400 * 24 * 3600);

/// The default [`SessionConfig::remembered_idle_timeout`]: 7 days.
pub const DEFAULT_REMEMBERED_IDLE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Configuration of a [`SessionLayer`](crate::SessionLayer).
///
/// Defaults: cookie `__Host-session` (`Secure`, `HttpOnly`, `SameSite=Lax`,
/// `Path=/`), idle timeout 30 minutes, absolute lifetime 12 hours, idle
/// extension written at most once a minute, at most
/// [`DEFAULT_MAX_SESSIONS_PER_USER`] sessions per user (the oldest logged
/// out first, so one account cannot fill a bounded store), `Retry-After:
/// 1` on 503, the system clock, no `Clear-Site-Data` on logout; session
/// cookies without `Max-Age` (they end with the browser session) unless a
/// login is remembered ([`LoginOptions::remember`](crate::LoginOptions::remember)),
/// for at most [`DEFAULT_MAX_REMEMBER`]; no re-authentication page (the
/// fresh-login guard answers pages 401 as it does APIs).
///
/// ```
/// use std::time::Duration;
/// use portcullis_session::{CapPolicy, SessionConfig};
///
/// let config = SessionConfig::default()
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .absolute_timeout(Duration::from_secs(8 * 3600))
///     .max_sessions_per_user(5, CapPolicy::EvictOldest);
/// # let _ = config;
/// ```
#[derive(Clone)]
#[must_use]
pub struct SessionConfig {
    pub(crate) cookie: CookieConfig,
    pub(crate) transport: Transport,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) cap: Option<(usize, CapPolicy)>,
    pub(crate) retry_after: Duration,
    pub(crate) clock: SharedClock,
    pub(crate) client_ip: Option<ClientIpFn>,
    pub(crate) clear_site_data: bool,
    pub(crate) max_remember: Duration,
    pub(crate) remembered_idle: Duration,
    pub(crate) reauthentication_url: Option<String>,
    pub(crate) events: Events,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie: CookieConfig::new("session"),
            transport: Transport::Cookie,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: None,
            cap: Some((DEFAULT_MAX_SESSIONS_PER_USER, CapPolicy::EvictOldest)),
            retry_after: Duration::from_secs(1),
            clock: SystemClock::shared(),
            client_ip: None,
            clear_site_data: false,
            max_remember: DEFAULT_MAX_REMEMBER,
            remembered_idle: DEFAULT_REMEMBERED_IDLE_TIMEOUT,
            reauthentication_url: None,
            events: Events::default(),
        }
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("cookie", &self.cookie)
            .field("transport", &self.transport)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("touch_interval", &self.effective_touch_interval())
            .field("cap", &self.cap)
            .field("clock", &self.clock)
            .field("clear_site_data_on_logout", &self.clear_site_data)
            .field("max_remember", &self.max_remember)
            .field("remembered_idle_timeout", &self.remembered_idle)
            .field("reauthentication_url", &self.reauthentication_url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionConfigError {
    /// The cookie settings are refused by browsers.
    #[error(transparent)]
    Cookie(#[from] CookieConfigError),
    /// A timeout is zero, or the idle timeout exceeds the absolute lifetime.
    #[error("timeouts must be non-zero and the idle timeout at most the absolute lifetime")]
    Timeouts,
    /// The per-user cap is zero.
    #[error("the per-user session cap must be at least 1")]
    Cap,
    /// The longest remembered login is zero or above 400 days, or the
    /// remembered idle timeout is zero.
    #[error("the remembered lifetime must be between 1 ms and 400 days, its idle timeout non-zero")]
    Remember,
    /// The re-authentication URL is not a path on this site.
    #[error(transparent)]
    ReauthenticationUrl(#[from] crate::redirect_url::InvalidLoginUrl),
}

impl SessionConfig {
    /// Replaces the cookie settings.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// **Insecure.** Plain-http development cookies (see
    /// [`CookieConfig::insecure_dev_cookies`]): no `Secure`, no prefix.
    pub fn insecure_dev_cookies(mut self) -> Self {
        self.cookie = self.cookie.insecure_dev_cookies();
        self
    }

    /// Sends the session id in `header` instead of a cookie.
    pub fn header_transport(mut self, header: HeaderName) -> Self {
        self.transport = Transport::Header(header);
        self
    }

    /// Ends a session after this long without a request.
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Ends a session this long after login, whatever happens.
    pub const fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = timeout;
        self
    }

    /// Writes the idle extension at most once per `interval` (default: a
    /// quarter of the idle timeout, at most one minute).
    pub const fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = Some(interval);
        self
    }

    /// Caps each user's concurrent sessions at `max` (default
    /// [`DEFAULT_MAX_SESSIONS_PER_USER`] with [`CapPolicy::EvictOldest`]).
    pub const fn max_sessions_per_user(mut self, max: usize, policy: CapPolicy) -> Self {
        self.cap = Some((max, policy));
        self
    }

    /// **Unbounded.** No per-user session cap: every login adds a session
    /// until it expires, so one account (a script with a valid password)
    /// can fill a bounded store such as [`MemoryStore`](crate::MemoryStore)
    /// and lock everyone else out of logging in. Prefer
    /// [`SessionConfig::max_sessions_per_user`].
    pub const fn unbounded_sessions_per_user(mut self) -> Self {
        self.cap = None;
        self
    }

    /// The `Retry-After` of 503 responses.
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Reads the time from `clock` (give stores the same clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Records the client address of new sessions with `f` (for example
    /// from axum's `ConnectInfo`, or `portcullis_throttle::client_ip`).
    ///
    /// `f` reads the request when it reaches the session layer, and again
    /// each time a handler takes the [`Session`](crate::Session) with its
    /// axum extractor: a layer inside the session layer (a login throttle
    /// on the login route that finds the client behind a trusted proxy)
    /// is then heard. The events' client address is read again at the
    /// same moments. A handler that takes the `Session` from the
    /// extensions itself (tonic, hyper) gets the address as it was when
    /// the request arrived: put `portcullis_throttle::ClientAddressLayer`
    /// outside the session layer when a proxy is trusted.
    pub fn client_ip(mut self, f: ClientIpFn) -> Self {
        self.client_ip = Some(f);
        self
    }

    /// Adds `Clear-Site-Data: "cookies"` to the responses of
    /// [`Session::logout`](crate::Session::logout) and
    /// [`Session::logout_everywhere`](crate::Session::logout_everywhere).
    ///
    /// Off by default. Browsers apply the header to the whole registrable
    /// domain: a logout on `app.example.com` also deletes every cookie of
    /// `example.com` and of **every sibling sub-domain** (another app's
    /// session on `admin.example.com`, a consent cookie on `www`). Turn it
    /// on only when this app owns its registrable domain. Without it, the
    /// logout still deletes the session on the server and removes the
    /// session cookie.
    pub const fn clear_site_data_on_logout(mut self) -> Self {
        self.clear_site_data = true;
        self
    }

    /// The longest a login may ask to be remembered
    /// ([`LoginOptions::remember`](crate::LoginOptions::remember) is capped
    /// at it). Default [`DEFAULT_MAX_REMEMBER`] (30 days); at most
    /// [`MAX_REMEMBER_LIMIT`] (400 days, browsers' own cap on a cookie's
    /// lifetime), checked when the layer is built.
    ///
    /// What remembering trades: a remembered session's cookie survives the
    /// browser closing, so a stolen cookie, or a shared computer someone
    /// forgot to log out of, stays logged in for days. The server-side
    /// deadlines (this cap, and [`SessionConfig::remembered_idle_timeout`])
    /// are the real limit either way: browsers that restore their last
    /// session also keep "session" cookies, so a login that was not
    /// remembered is not guaranteed to end when the window closes either.
    /// Offer remembering as a choice on the login form, keep sensitive
    /// actions behind [`RequireFreshLogin`](crate::RequireFreshLogin), and
    /// give users a device list ([`Session::active_sessions`](crate::Session::active_sessions))
    /// and "log out everywhere".
    pub const fn max_remember(mut self, max: Duration) -> Self {
        self.max_remember = max;
        self
    }

    /// A remembered login ends after this long without a request (default
    /// [`DEFAULT_REMEMBERED_IDLE_TIMEOUT`], 7 days), or at its absolute
    /// deadline, whichever comes first. Logins that are not remembered keep
    /// [`SessionConfig::idle_timeout`].
    pub const fn remembered_idle_timeout(mut self, timeout: Duration) -> Self {
        self.remembered_idle = timeout;
        self
    }

    /// Where [`RequireFreshLogin`](crate::RequireFreshLogin) and
    /// [`FreshLogin`](crate::FreshLogin) send a page (a browser navigation)
    /// whose login is not recent enough: a form that asks for the password
    /// again and calls [`Session::reauthenticated`](crate::Session::reauthenticated).
    /// The page's own path is added as `next` (`/reauth?next=/account`).
    /// Without it, pages get the 401 that APIs get. Checked when the layer
    /// is built: it must be a path on this site, as for
    /// [`RequireLoginLayer::redirect_to`](crate::RequireLoginLayer::redirect_to).
    pub fn reauthentication_url(mut self, url: impl Into<String>) -> Self {
        self.reauthentication_url = Some(url.into());
        self
    }

    /// Sends what happens to sessions to `events` (default
    /// `Events::default()`: nothing listens and the layer builds no event):
    /// logins, logouts, renewals, evictions, expiries, revocations,
    /// refused fresh-login checks and store failures, under the source
    /// `session` (the table is in the [crate docs](crate#events)). Each
    /// request's route and trace id are read once, when it arrives, and
    /// only while something listens; its client also when a handler takes
    /// the session (see [`client_ip`](Self::client_ip)).
    ///
    /// ```
    /// use portcullis_core::events::Events;
    /// use portcullis_session::{MemoryStore, SessionConfig, SessionLayer};
    ///
    /// let events = Events::new();
    /// let mut audit = events.subscribe("audit", 1024);
    /// let layer = SessionLayer::new(
    ///     MemoryStore::new(),
    ///     SessionConfig::default().events(events.clone()),
    /// )
    /// .unwrap();
    /// // ... serve; then `audit.recv().await` yields each `AuthEvent`.
    /// # let _ = (layer, audit.try_recv());
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The cookie settings.
    pub const fn cookie_config(&self) -> &CookieConfig {
        &self.cookie
    }

    pub(crate) fn effective_touch_interval(&self) -> Duration {
        self.touch_interval
            .unwrap_or_else(|| (self.idle_timeout / 4).min(Duration::from_secs(60)))
    }

    pub(crate) fn validate(&self) -> Result<(), SessionConfigError> {
        self.cookie.validate()?;
        if self.idle_timeout.is_zero()
            || self.absolute_timeout.is_zero()
            || self.idle_timeout > self.absolute_timeout
        {
            return Err(SessionConfigError::Timeouts);
        }
        if matches!(self.cap, Some((0, _))) {
            return Err(SessionConfigError::Cap);
        }
        if self.max_remember.is_zero()
            || self.max_remember > MAX_REMEMBER_LIMIT
            || self.remembered_idle.is_zero()
        {
            return Err(SessionConfigError::Remember);
        }
        if let Some(url) = &self.reauthentication_url {
            crate::redirect_url::check_redirect_url(url)?;
        }
        Ok(())
    }
}
