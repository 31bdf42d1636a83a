//! `CsrfConfig`: the token mode, origins, names, limits and exemptions.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName};
use portcullis_core::CookieConfig;
use portcullis_core::events::Events;

/// Reads an application-defined binding (for example a JWT's `sid`) from a
/// request; `None` means "no session": the pre-session cookie is used.
pub type BindingFn = dyn Fn(&HeaderMap, &Extensions) -> Option<Vec<u8>> + Send + Sync + 'static;

/// What a signed token is bound to when the visitor has a session.
///
/// Without one (`None` from the binding, or no session), tokens are bound to
/// the `__Host-` pre-session cookie, which the layer sets the first time a
/// token is rendered; so a login form is protected too.
#[derive(Clone)]
pub struct SignedBinding(pub(crate) BindingKind);

#[derive(Clone)]
pub(crate) enum BindingKind {
    PreSessionOnly,
    #[cfg(feature = "session")]
    Session,
    Cookie(String),
    Custom(Arc<BindingFn>),
}

impl SignedBinding {
    /// The portcullis session (needs `SessionLayer` outside `CsrfLayer`):
    /// the session's public handle (the SHA-256 of its id) goes into the
    /// MAC, so a token is valid only for the session that rendered it, and
    /// renewing the id at login changes every token. Costs the session load
    /// the request would usually make anyway.
    #[cfg(feature = "session")]
    #[cfg_attr(docsrs, doc(cfg(feature = "session")))]
    #[must_use]
    pub const fn session() -> Self {
        Self(BindingKind::Session)
    }

    /// The value of the cookie `name` (full name, prefix included), for
    /// example a stateless session or access-token cookie. Read when the
    /// request arrives: a handler that replaces that cookie (a login)
    /// should redirect before rendering a token.
    #[must_use]
    pub fn cookie(name: impl Into<String>) -> Self {
        Self(BindingKind::Cookie(name.into()))
    }

    /// An application-defined binding, read when the request arrives.
    #[must_use]
    pub fn from_fn(
        f: impl Fn(&HeaderMap, &Extensions) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        Self(BindingKind::Custom(Arc::new(f)))
    }

    /// No session binding: every token is bound to the pre-session cookie
    /// only (for sites without logins).
    #[must_use]
    pub const fn pre_session_only() -> Self {
        Self(BindingKind::PreSessionOnly)
    }
}

impl fmt::Debug for SignedBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            BindingKind::PreSessionOnly => f.write_str("PreSessionOnly"),
            #[cfg(feature = "session")]
            BindingKind::Session => f.write_str("Session"),
            BindingKind::Cookie(name) => f.debug_tuple("Cookie").field(name).finish(),
            BindingKind::Custom(_) => f.write_str("Custom(<fn>)"),
        }
    }
}

/// A signing key. `Debug` prints `REDACTED`.
#[derive(Clone)]
pub(crate) struct SigningKey(pub(crate) Arc<[u8]>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// The token mode as configured; the policy's `TokenMode` is
/// its validated form.
#[derive(Clone, Debug)]
pub(crate) enum TokenModeConfig {
    #[cfg(feature = "session")]
    Session,
    Signed {
        key: SigningKey,
        binding: SignedBinding,
    },
    OriginCheckOnly,
}

/// Configuration of a [`CsrfLayer`](crate::CsrfLayer); checked by
/// [`CsrfLayer::new`](crate::CsrfLayer::new).
///
/// Start from a token mode, then adjust:
///
/// ```
/// use portcullis_csrf::{CsrfConfig, CsrfLayer, SignedBinding};
///
/// // Synchronizer tokens in the portcullis session (feature `session`).
/// let layer = CsrfLayer::new(
///     CsrfConfig::session()
///         .add_trusted_origin("https://admin.example.com")
///         .public_origin("https://example.com")
///         .exempt("/webhooks/payments"),
/// )?;
///
/// // Stateless signed double-submit tokens.
/// let key = [7u8; 32]; // load 32+ random bytes from your secret store
/// let layer = CsrfLayer::new(CsrfConfig::signed(key, SignedBinding::pre_session_only()))?;
/// # Ok::<(), portcullis_csrf::ConfigError>(())
/// ```
///
/// Defaults: token header `x-csrf-token`, form field `csrf_token`, form
/// bodies buffered up to 1 MiB (more is 413), no trusted origins, no public
/// origin (tower-http's `Host` fallback, plus the scheme: the site is
/// `https`), no exemptions, pre-session cookie `__Host-csrf` (`Secure`,
/// `HttpOnly`, `SameSite=Lax`, `Path=/`).
#[derive(Clone, Debug)]
#[must_use]
pub struct CsrfConfig {
    pub(crate) mode: TokenModeConfig,
    pub(crate) trusted_origins: Vec<String>,
    pub(crate) public_origin: Option<String>,
    pub(crate) header_name: HeaderName,
    pub(crate) field_name: Cow<'static, str>,
    pub(crate) max_body_bytes: usize,
    pub(crate) exempt: Vec<String>,
    pub(crate) pre_session_cookie: CookieConfig,
    pub(crate) previous_keys: Vec<SigningKey>,
    pub(crate) signed_only_option: Option<&'static str>,
    pub(crate) http_site: bool,
    pub(crate) events: Events,
}

/// The default form body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

impl CsrfConfig {
    fn with_mode(mode: TokenModeConfig) -> Self {
        Self {
            mode,
            trusted_origins: Vec::new(),
            public_origin: None,
            header_name: HeaderName::from_static("x-csrf-token"),
            field_name: Cow::Borrowed("csrf_token"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            exempt: Vec::new(),
            pre_session_cookie: CookieConfig::new("csrf"),
            previous_keys: Vec::new(),
            signed_only_option: None,
            http_site: false,
            events: Events::default(),
        }
    }

    /// Synchronizer tokens: a 256-bit secret kept in the portcullis session
    /// (under a [`RENEW_SCOPED_PREFIX`](portcullis_session::RENEW_SCOPED_PREFIX)
    /// key, so login and every id renewal replace it). Rendering a token for
    /// a visitor without a session starts an anonymous one, which protects
    /// the login form. Needs `SessionLayer` outside `CsrfLayer`.
    ///
    /// That anonymous session is server state for every visitor who is
    /// shown a form, logged in or not: a flood of requests for a login page
    /// fills the store. For public pages prefer
    /// [`CsrfConfig::signed`] with [`SignedBinding::session`], which binds
    /// anonymous visitors to a cookie and stores nothing.
    #[cfg(feature = "session")]
    #[cfg_attr(docsrs, doc(cfg(feature = "session")))]
    pub fn session() -> Self {
        Self::with_mode(TokenModeConfig::Session)
    }

    /// Signed double-submit tokens (OWASP's "signed double-submit cookie"):
    /// `HMAC-SHA256(key, binding || nonce)` with a fresh nonce, checked
    /// against the binding of the request that comes back. `key` must be at
    /// least 32 bytes (checked by [`CsrfLayer::new`](crate::CsrfLayer::new))
    /// and shared by every instance of the app.
    pub fn signed(key: impl AsRef<[u8]>, binding: SignedBinding) -> Self {
        Self::with_mode(TokenModeConfig::Signed {
            key: SigningKey(Arc::from(key.as_ref())),
            binding,
        })
    }

    /// Only the origin check, [`OriginCheck`](portcullis_core::OriginCheck)
    /// (tower-http's Fetch Metadata / `Origin` check, plus origin
    /// normalisation, the public origin, WebSocket upgrades and
    /// problem+json refusals); no
    /// tokens. Clients that send neither `Sec-Fetch-Site` nor `Origin` pass,
    /// and so does login CSRF from browsers without Fetch Metadata: prefer a
    /// token mode for cookie-authenticated apps.
    pub fn origin_check_only() -> Self {
        Self::with_mode(TokenModeConfig::OriginCheckOnly)
    }

    /// Lets `origin` (`scheme://host[:port]`) send unsafe requests
    /// cross-origin. Normalised (lower case, no default port) and validated
    /// by [`CsrfLayer::new`](crate::CsrfLayer::new). Tokens are still
    /// required from it.
    pub fn add_trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// The origin users reach the app at (`https://example.com`), for apps
    /// behind a proxy that rewrites `Host`. A request without
    /// `Sec-Fetch-Site` then passes the `Origin` check only when `Origin`
    /// equals this origin exactly (scheme and port included), instead of
    /// comparing with `Host`. `X-Forwarded-Host` is never read.
    pub fn public_origin(mut self, origin: impl Into<String>) -> Self {
        self.public_origin = Some(origin.into());
        self
    }

    /// **Insecure.** The site is served over plain `http` (development on
    /// `localhost`). Without a [public origin](CsrfConfig::public_origin),
    /// a request without `Sec-Fetch-Site` passes the `Origin`/`Host` check
    /// only when `Origin` names the same host **and the site's scheme**:
    /// `https` by default, `http` with this option (or with
    /// [`insecure_dev_cookies`](CsrfConfig::insecure_dev_cookies), whose
    /// cookies only work over plain http anyway). Never in production: an
    /// `https` site that sets it accepts forms from `http://` pages of its
    /// own host, which any network attacker can write.
    pub const fn insecure_http_site(mut self) -> Self {
        self.http_site = true;
        self
    }

    /// The request header carrying the token (default `x-csrf-token`).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header_name = name;
        self
    }

    /// The form field carrying the token (default `csrf_token`).
    pub fn field_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.field_name = name.into();
        self
    }

    /// The most bytes of a form body the layer buffers to find the token
    /// (default 1 MiB); a larger body is refused with 413 before the
    /// handler runs.
    pub const fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Exempts the exact path `path` (for example a webhook that
    /// authenticates its caller by a signature) from both checks. Every
    /// exemption is listed in the layer's `Debug` output.
    pub fn exempt(mut self, path: impl Into<String>) -> Self {
        self.exempt.push(path.into());
        self
    }

    /// Signed mode: the pre-session cookie's settings (default
    /// `__Host-csrf`).
    pub fn pre_session_cookie(mut self, cookie: CookieConfig) -> Self {
        self.note_signed_only("pre_session_cookie");
        self.pre_session_cookie = cookie;
        self
    }

    /// **Insecure.** Signed mode over plain-http `localhost` development:
    /// the pre-session cookie loses `Secure` and its `__Host-` prefix (see
    /// [`CookieConfig::insecure_dev_cookies`]). Never in production.
    pub fn insecure_dev_cookies(mut self) -> Self {
        self.note_signed_only("insecure_dev_cookies");
        self.pre_session_cookie = self.pre_session_cookie.insecure_dev_cookies();
        self.http_site = true;
        self
    }

    /// Signed mode: a retired key that still verifies (but never signs)
    /// during a key rotation.
    pub fn previous_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.note_signed_only("previous_key");
        self.previous_keys.push(SigningKey(Arc::from(key.as_ref())));
        self
    }

    fn note_signed_only(&mut self, option: &'static str) {
        if !matches!(self.mode, TokenModeConfig::Signed { .. }) {
            self.signed_only_option.get_or_insert(option);
        }
    }

    /// Sends every refusal to `events` as a
    /// [`CsrfRefused`](portcullis_core::events::AuthEventKind::CsrfRefused)
    /// event (source `csrf`, reason [`CsrfErrorKind::as_str`](crate::CsrfErrorKind::as_str),
    /// with the request's route, client and trace id), and the layer's
    /// decisions to its recorder. Default `Events::default()`: nothing
    /// listens, and the layer builds no event.
    ///
    /// ```
    /// use portcullis_core::events::Events;
    /// use portcullis_csrf::{CsrfConfig, CsrfLayer};
    ///
    /// let events = Events::new();
    /// let mut refusals = events.subscribe("csrf", 1024);
    /// let layer = CsrfLayer::new(CsrfConfig::session().events(events.clone()))?;
    /// // ... serve; then `refusals.recv().await` yields each refusal.
    /// # let _ = (layer, refusals.try_recv());
    /// # Ok::<(), portcullis_csrf::ConfigError>(())
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The configured exemptions.
    #[must_use]
    pub fn exemptions(&self) -> &[String] {
        &self.exempt
    }
}
