//! Refresh configuration: [`RefreshConfig`], where the token travels
//! ([`Transport`]), where events go, and what cannot work.

use std::fmt;
use std::time::Duration;

use portcullis_core::events::Events;
use portcullis_core::lifetime::Lifetimes;
pub use portcullis_core::request::ClientIpFn;
use portcullis_core::{CookieConfig, SameSite};
use portcullis_jwt::dpop::{DpopPolicy, DpopVerifier};

pub use crate::error::RefreshConfigError;
use crate::token::RotationKey;

/// Where the refresh token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An `HttpOnly` cookie scoped to the auth prefix (browsers).
    Cookie,
    /// The JSON body: `{"refresh_token": "..."}` (native clients).
    Body,
    /// Each request chooses: a refresh token in the cookie, or in the body,
    /// never both (a request carrying both is refused). Logins answer with
    /// a cookie unless the login request carries
    /// `x-refresh-transport: body`.
    Either,
}

/// The default per-user family cap: [`RefreshConfig::max_families_per_user`].
pub const DEFAULT_MAX_FAMILIES_PER_USER: usize = 20;

/// Configuration of the refresher and its layer.
///
/// Secure defaults: refresh idle timeout 7 days, absolute lifetime 30 days
/// (never extended by a refresh), grace window 10 s; at most
/// [`DEFAULT_MAX_FAMILIES_PER_USER`] families (devices) per user, the
/// oldest logged out first; cookie `__Host-refresh`, `HttpOnly`, `Secure`,
/// `SameSite=Strict`, `Path=/`; endpoints under `/auth`; cookie transport.
///
/// # Why `__Host-refresh` with `Path=/`
///
/// A cookie without the `__Host-` prefix can be shadowed ("tossed") by a
/// sibling sub-domain: `evil.example.com` sets `refresh` with
/// `Domain=example.com` and a longer path, the browser then sends two
/// values under one name and the endpoints cannot tell which is genuine.
/// Browsers refuse to store a `__Host-` cookie that has a `Domain`
/// attribute, a path other than `/` or no `Secure`, so every value sent
/// under the name `__Host-refresh` was set by this host. The price of
/// `Path=/` is that the (`HttpOnly`, `SameSite=Strict`) cookie travels
/// with every request to the host, not only to `/auth`: keep `Cookie`
/// headers out of access logs. To scope the cookie to the endpoints
/// instead, set `CookieConfig::new("refresh").prefix(CookiePrefix::Secure)
/// .path("/auth")` with [`RefreshConfig::cookie`] and accept that a
/// sibling sub-domain can shadow it (the endpoints then refuse requests
/// carrying two copies with 400, and log out revokes every copy it can
/// verify).
#[derive(Clone)]
#[must_use]
pub struct RefreshConfig {
    pub(crate) prefix: String,
    pub(crate) transport: Transport,
    pub(crate) cookie: CookieConfig,
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
    pub(crate) grace: Duration,
    pub(crate) history_limit: usize,
    pub(crate) rotation_key: Option<RotationKey>,
    pub(crate) retry_after: Duration,
    pub(crate) max_body: usize,
    pub(crate) events: Events,
    pub(crate) trusted_origins: Vec<String>,
    pub(crate) client_ip: Option<ClientIpFn>,
    pub(crate) public_origin: Option<String>,
    pub(crate) max_families: Option<usize>,
    pub(crate) dpop: Option<(DpopVerifier, DpopPolicy)>,
}

impl fmt::Debug for RefreshConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshConfig")
            .field("prefix", &self.prefix)
            .field("transport", &self.transport)
            .field("cookie", &self.cookie)
            .field("idle", &self.idle)
            .field("absolute", &self.absolute)
            .field("grace", &self.grace)
            .field("max_families_per_user", &self.max_families)
            .field("dpop", &self.dpop.as_ref().map(|(_, policy)| policy))
            .finish_non_exhaustive()
    }
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            prefix: "/auth".into(),
            transport: Transport::Cookie,
            cookie: CookieConfig::new("refresh").same_site(SameSite::Strict),
            idle: Duration::from_secs(7 * 24 * 3600),
            absolute: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(10),
            history_limit: 64,
            rotation_key: None,
            retry_after: Duration::from_secs(1),
            max_body: 4096,
            events: Events::default(),
            trusted_origins: Vec::new(),
            client_ip: None,
            public_origin: None,
            max_families: Some(DEFAULT_MAX_FAMILIES_PER_USER),
            dpop: None,
        }
    }
}

impl RefreshConfig {
    /// The path prefix of the endpoints (default `/auth`). The cookie keeps
    /// its own path (`/` by default, which the `__Host-` prefix requires).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Caps the families (logged-in devices) of one user at `max` (default
    /// [`DEFAULT_MAX_FAMILIES_PER_USER`], at least 1): a login beyond it
    /// logs the user's oldest devices out, their access tokens included.
    /// Expired families do not count.
    pub const fn max_families_per_user(mut self, max: usize) -> Self {
        self.max_families = Some(max);
        self
    }

    /// **Unbounded.** No per-user family cap: every login adds a family
    /// until it expires, so a leaked password (or a script) can pile up
    /// families without end. Prefer [`RefreshConfig::max_families_per_user`].
    pub const fn unbounded_families_per_user(mut self) -> Self {
        self.max_families = None;
        self
    }

    /// Where the refresh token travels.
    pub const fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Replaces the cookie settings.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// **Insecure.** Plain-http development cookies (no `Secure`, no
    /// prefix); keeps `HttpOnly`, `SameSite=Strict` and the path.
    pub fn insecure_dev_cookies(mut self) -> Self {
        self.cookie = self.cookie.insecure_dev_cookies();
        self
    }

    /// Idle timeout of a family (default 7 days).
    pub const fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Absolute lifetime of a family (default 30 days).
    pub const fn absolute_timeout(mut self, absolute: Duration) -> Self {
        self.absolute = absolute;
        self
    }

    /// The grace window for the previous token (default 10 s, at most 60 s;
    /// zero makes every repeat a reuse).
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The key deriving successor tokens. Instances sharing a store must
    /// share it; without one, each process draws a random key.
    pub fn rotation_key(mut self, key: RotationKey) -> Self {
        self.rotation_key = Some(key);
        self
    }

    /// Reports to `events` (default: nothing listens): logins, rotations,
    /// reuse detections, logouts, revoked and evicted devices, expired
    /// families, password changes and store outages, each with the user
    /// and the family id (the device; never a token). See the crate docs
    /// for the table of events, and
    /// [`Refresher::for_request`](crate::Refresher::for_request) for the
    /// request context of operations called from handlers.
    ///
    /// ```
    /// use portcullis_core::events::Events;
    /// use portcullis_refresh::RefreshConfig;
    ///
    /// let events = Events::new();
    /// let mut audit = events.subscribe("audit", 1024);
    /// let config = RefreshConfig::default().events(events);
    /// # let _ = (config, audit.try_recv());
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Trusts cross-origin cookie-borne requests from `origin`
    /// (`scheme://host[:port]`).
    pub fn add_trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// The site's public origin (`https://example.com`), compared with
    /// `Origin` instead of the `Host` fallback behind proxies that rewrite
    /// `Host`.
    pub fn public_origin(mut self, origin: impl Into<String>) -> Self {
        self.public_origin = Some(origin.into());
        self
    }

    /// Sender-constrained refresh tokens (RFC 9449 §5, RFC 9700 §4.14):
    /// a login whose request carries a valid DPoP proof, checked by
    /// `verifier` (`htu` = the verifier's public origin plus the login
    /// route's path), binds its family to the proof's key. Every access
    /// token of a bound family carries the key's thumbprint as `cnf.jkt`
    /// (answered with `token_type: DPoP`), and every refresh, logout and
    /// log-out-everywhere with a token of a bound family needs a fresh
    /// proof signed by that same key (`htu` = the verifier's public origin
    /// plus `{prefix}/refresh`, and so on). A refresh token copied out of
    /// a cookie jar, a log or a native client's storage is then useless
    /// without the key.
    ///
    /// The path in `htu` is the one the client called: under axum's
    /// `Router::nest` (`/v1` + `/auth/refresh`), with this crate's `axum`
    /// feature (the `portcullis` crate's `axum` feature turns it on), the
    /// whole `/v1/auth/refresh`
    /// ([`called_uri`](portcullis_jwt::dpop::called_uri)). Without it,
    /// mount the refresher at its public path.
    ///
    /// A request of a bound family without such a proof is refused (401
    /// with a `DPoP` challenge; the reason is the proof's, such as
    /// `dpop-missing` or `dpop-key-mismatch`) **before** anything is
    /// rotated: the refresh token stays the owner's, the family is not
    /// revoked, and the cookie is not cleared. Revoking instead would let
    /// anyone who sees the token, without the key, log its owner out.
    ///
    /// `policy`: [`DpopPolicy::Accepted`] binds the logins that come with
    /// a proof and leaves the others bearer families;
    /// [`DpopPolicy::Required`] refuses a login without a valid proof
    /// (401, reason `dpop-missing`) and every refresh of an unbound family
    /// (a family from before the switch: 401 `dpop-unbound-family`, the
    /// cookie cleared, log in again); [`DpopPolicy::Bearer`] binds no new
    /// family (families bound earlier still need their key). A login
    /// with a `DPoP` header that fails a check is refused under every
    /// policy but `Bearer`, never silently issued unbound.
    ///
    /// ```
    /// use portcullis_jwt::dpop::{DpopPolicy, DpopVerifier};
    /// use portcullis_refresh::RefreshConfig;
    ///
    /// let verifier = DpopVerifier::builder("https://app.example.com").build().unwrap();
    /// let config = RefreshConfig::default().dpop(verifier, DpopPolicy::Required);
    /// # let _ = config;
    /// ```
    pub fn dpop(mut self, verifier: DpopVerifier, policy: DpopPolicy) -> Self {
        self.dpop = Some((verifier, policy));
        self
    }

    /// Records the client address of devices with `f`.
    pub fn client_ip(mut self, f: ClientIpFn) -> Self {
        self.client_ip = Some(f);
        self
    }

    /// `Retry-After` of 503 answers.
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The idle timeout and absolute lifetime of a family.
    ///
    /// # Errors
    ///
    /// [`RefreshConfigError::Lifetimes`] when they cannot work.
    pub fn lifetimes(&self) -> Result<Lifetimes, RefreshConfigError> {
        Lifetimes::new(self.idle, self.absolute).map_err(|_| RefreshConfigError::Lifetimes)
    }

    /// The grace window for the previous token.
    #[must_use]
    pub const fn grace_window(&self) -> Duration {
        self.grace
    }

    /// Checks the configuration; the family lifetimes it settles.
    pub(crate) fn validate(&self) -> Result<Lifetimes, RefreshConfigError> {
        self.cookie.validate()?;
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(RefreshConfigError::Prefix);
        }
        let lifetimes = self.lifetimes()?;
        if self.grace > Duration::from_secs(60) {
            return Err(RefreshConfigError::Lifetimes);
        }
        if self.max_families == Some(0) {
            return Err(RefreshConfigError::FamilyCap);
        }
        Ok(lifetimes)
    }
}
