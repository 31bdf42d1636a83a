//! OpenID Connect discovery: an issuer's keys found from its URL alone
//! (`{issuer}/.well-known/openid-configuration`, then its `jwks_uri`),
//! lazily, with the caching, cooldown and outage rules of [`RemoteJwks`]
//! (feature `jwks-remote`).
//!
//! Over 500 lines: the discovery document's strict reading, the lazy key
//! source with its retry rules, and the provider metadata other layers
//! use are one unit.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use portcullis_core::{SharedClock, SystemClock};
use serde_json::{Map, Value};

use super::document::{JwksError, url_allowed};
use super::remote::{HttpFetcher, JwksFetcher, RemoteJwks};
use crate::alg::Algorithm;
use crate::keys::{KeyLookup, KeySource, RefreshFuture};
use crate::layer::{JwtLayer, JwtLayerBuilder};

/// The path OpenID Connect discovery appends to an issuer URL.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer is not an allowed URL: `https` (plain `http` only to a
    /// loopback host), with a host, without query or fragment.
    #[error(
        "the issuer must be an https URL (plain http only for loopback) without query or fragment"
    )]
    InsecureIssuer,
    /// Fetching the discovery document failed (network, status, size,
    /// timeout).
    #[error("fetching the discovery document failed: {0}")]
    Fetch(String),
    /// The document is not one JSON object without duplicate keys, or a
    /// member has the wrong type.
    #[error("not a discovery document: {0}")]
    Json(String),
    /// The document's `issuer` is not the configured issuer, byte for
    /// byte: a document for another issuer (or a spoofed one) is never
    /// used.
    #[error("the discovery document names another issuer")]
    IssuerMismatch,
    /// The document has no `jwks_uri`.
    #[error("the discovery document has no jwks_uri")]
    NoJwksUri,
    /// An endpoint the document names (`jwks_uri`, or
    /// `introspection_endpoint`) is not `https` (plain `http` only to a
    /// loopback host).
    #[error("the discovery document's {0} must be https (plain http only for loopback)")]
    InsecureEndpoint(&'static str),
    /// The key source on `jwks_uri` could not be started.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// An attempt failed within the cooldown: not retried yet.
    #[error("discovery failed recently; retrying after the cooldown")]
    CoolingDown,
}

/// An OpenID provider's metadata (OpenID Connect Discovery 1.0, RFC 8414),
/// as discovered: the members this crate uses, typed, and the whole
/// document.
#[derive(Debug, Clone)]
pub struct ProviderMetadata {
    issuer: String,
    jwks_uri: String,
    introspection_endpoint: Option<String>,
    document: Map<String, Value>,
}

fn string_member(doc: &Map<String, Value>, name: &str) -> Result<Option<String>, DiscoveryError> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DiscoveryError::Json(format!("{name} is not a string"))),
    }
}

impl ProviderMetadata {
    /// Reads a discovery document fetched for `issuer`.
    ///
    /// ```
    /// use portcullis_jwt::jwks::{DiscoveryError, ProviderMetadata};
    ///
    /// let doc = br#"{"issuer":"https://id.example.com","jwks_uri":"https://id.example.com/jwks"}"#;
    /// let md = ProviderMetadata::parse(doc, "https://id.example.com").unwrap();
    /// assert_eq!(md.jwks_uri(), "https://id.example.com/jwks");
    /// // Another issuer's document (or a spoofed one): refused.
    /// assert!(matches!(
    ///     ProviderMetadata::parse(doc, "https://id.example.com/"),
    ///     Err(DiscoveryError::IssuerMismatch)
    /// ));
    /// ```
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::Json`] when the document is not one JSON object
    /// without duplicate keys (or `issuer`, `jwks_uri` or
    /// `introspection_endpoint` is not a string);
    /// [`DiscoveryError::IssuerMismatch`] when its `issuer` differs from
    /// `issuer` in any byte; [`DiscoveryError::NoJwksUri`];
    /// [`DiscoveryError::InsecureEndpoint`] when `jwks_uri` or
    /// `introspection_endpoint` is not an allowed URL
    /// ([`url_allowed`](crate::jwks::url_allowed)).
    pub fn parse(json: &[u8], issuer: &str) -> Result<Self, DiscoveryError> {
        let text = std::str::from_utf8(json).map_err(|e| DiscoveryError::Json(e.to_string()))?;
        crate::json::check_object_str(text).map_err(|()| {
            DiscoveryError::Json("not one JSON object without duplicate keys".into())
        })?;
        let document: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| DiscoveryError::Json(e.to_string()))?;
        let got = string_member(&document, "issuer")?;
        if got.as_deref() != Some(issuer) {
            return Err(DiscoveryError::IssuerMismatch);
        }
        let jwks_uri = string_member(&document, "jwks_uri")?.ok_or(DiscoveryError::NoJwksUri)?;
        if !url_allowed(&jwks_uri) {
            return Err(DiscoveryError::InsecureEndpoint("jwks_uri"));
        }
        let introspection_endpoint = string_member(&document, "introspection_endpoint")?;
        if introspection_endpoint
            .as_deref()
            .is_some_and(|u| !url_allowed(u))
        {
            return Err(DiscoveryError::InsecureEndpoint("introspection_endpoint"));
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            jwks_uri,
            introspection_endpoint,
            document,
        })
    }

    /// `issuer`: equal to the configured issuer.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `jwks_uri`: where the keys are (an allowed URL).
    #[must_use]
    pub fn jwks_uri(&self) -> &str {
        &self.jwks_uri
    }

    /// `introspection_endpoint` (RFC 7662), if the provider has one (an
    /// allowed URL).
    #[must_use]
    pub fn introspection_endpoint(&self) -> Option<&str> {
        self.introspection_endpoint.as_deref()
    }

    /// A string member of the document (`token_endpoint`,
    /// `revocation_endpoint`, ...), as published: not checked beyond
    /// being a string.
    #[must_use]
    pub fn string(&self, name: &str) -> Option<&str> {
        self.document.get(name).and_then(Value::as_str)
    }

    /// A member that is a list of strings
    /// (`dpop_signing_alg_values_supported`,
    /// `introspection_endpoint_auth_methods_supported`, ...); `None` when
    /// absent or not a list of strings.
    #[must_use]
    pub fn strings(&self, name: &str) -> Option<Vec<&str>> {
        self.document
            .get(name)?
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect()
    }

    /// The whole document.
    #[must_use]
    pub const fn document(&self) -> &Map<String, Value> {
        &self.document
    }
}

/// What one discovery found: the metadata, and the key source on its
/// `jwks_uri`.
struct Discovered {
    metadata: Arc<ProviderMetadata>,
    keys: RemoteJwks,
}

/// Keys of an issuer found by OpenID Connect discovery, from the issuer
/// URL alone: a [`KeySource`] for [`JwtLayer`] (or for one
/// [`Issuer`](crate::issuers::Issuer) of several).
///
/// - Lazy: nothing is fetched when it is built (the builder needs no
///   runtime); the first token that asks for a key fetches
///   `{issuer}/.well-known/openid-configuration` (a terminating `/` of
///   the issuer removed first), then its `jwks_uri`, while the request
///   waits.
/// - The document's `issuer` must equal the configured issuer byte for
///   byte, else the document is refused (a spoofed or misdirected
///   provider); `jwks_uri` (and `introspection_endpoint`, if listed) must
///   be `https`, or `http` to a loopback host; duplicate JSON keys are
///   refused.
/// - Keys then come from a [`RemoteJwks`] on `jwks_uri`, with all its
///   rules: `Cache-Control` bounds, background refresh, an unknown `kid`
///   refreshing at most once per cooldown, the last good key set kept
///   through failures.
/// - A successful discovery is kept for the life of the source (a
///   provider that moves its `jwks_uri` needs a new one).
/// - A failed discovery (provider down, refused document) is retried by
///   the first token after the cooldown (10 s); until a discovery and a
///   key set have succeeded, tokens are answered 503 (keys unavailable),
///   never 401. Concurrent first tokens share one discovery and one
///   first key fetch, and wait for them.
///
/// ```no_run
/// # fn demo() -> Result<(), portcullis_jwt::jwks::DiscoveryError> {
/// use portcullis_jwt::JwtLayer;
///
/// let layer = JwtLayer::discover("https://id.example.com")?
///     .audience("https://api.example.com")
///     .build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    config_url: String,
    fetcher: Arc<dyn JwksFetcher>,
    state: ArcSwapOption<Discovered>,
    clock: SharedClock,
    cooldown: Duration,
    default_rsa_alg: Option<Algorithm>,
    ttl_bounds: Option<(Duration, Duration)>,
    negative_ttl: Option<Duration>,
    retry: Option<Duration>,
    /// Attempts completed: waiters compare it to know whether one ran
    /// while they queued.
    generation: AtomicU64,
    last_attempt_ms: AtomicI64,
    attempts: AtomicU64,
    /// An attempt is under way: lookups wait for it (and are not
    /// refused as within the cooldown it set).
    in_flight: AtomicBool,
    lock: tokio::sync::Mutex<()>,
}

/// Marks an attempt under way until dropped (also when the request that
/// ran it goes away mid-fetch).
struct InFlight<'a>(&'a AtomicBool);

impl<'a> InFlight<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        f.debug_struct("Discovery")
            .field("issuer", &self.inner.issuer)
            .field("discovered", &state.is_some())
            .field("keys", &state.as_ref().map(|d| &d.keys))
            .finish_non_exhaustive()
    }
}

/// Builds a [`Discovery`]. See [`Discovery::builder`].
#[must_use]
pub struct DiscoveryBuilder {
    issuer: String,
    fetcher: Option<Arc<dyn JwksFetcher>>,
    clock: SharedClock,
    cooldown: Duration,
    default_rsa_alg: Option<Algorithm>,
    ttl_bounds: Option<(Duration, Duration)>,
    negative_ttl: Option<Duration>,
    retry: Option<Duration>,
}

impl fmt::Debug for DiscoveryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryBuilder")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn issuer_allowed(issuer: &str) -> bool {
    url_allowed(issuer) && !issuer.contains(['?', '#'])
}

impl DiscoveryBuilder {
    /// Fetches the document and the keys with `fetcher` instead of
    /// [`HttpFetcher`].
    pub fn fetcher(mut self, fetcher: impl JwksFetcher) -> Self {
        self.fetcher = Some(Arc::new(fetcher));
        self
    }

    /// Reads the time from `clock` (the cooldowns; the key source's
    /// too).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The least time between two discovery attempts, and between two
    /// key fetches triggered by unknown kids (default 10 s).
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// As [`RemoteJwksBuilder::default_rsa_alg`](crate::jwks::RemoteJwksBuilder::default_rsa_alg).
    pub const fn default_rsa_alg(mut self, alg: Algorithm) -> Self {
        self.default_rsa_alg = Some(alg);
        self
    }

    /// As [`RemoteJwksBuilder::ttl_bounds`](crate::jwks::RemoteJwksBuilder::ttl_bounds).
    pub const fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.ttl_bounds = Some((min, max));
        self
    }

    /// As [`RemoteJwksBuilder::negative_ttl`](crate::jwks::RemoteJwksBuilder::negative_ttl).
    pub const fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// As [`RemoteJwksBuilder::retry`](crate::jwks::RemoteJwksBuilder::retry).
    pub const fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The source. Fetches nothing (and needs no runtime): the first
    /// token discovers.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InsecureIssuer`], or [`DiscoveryError::Jwks`]
    /// when the TLS client cannot be built.
    pub fn build(self) -> Result<Discovery, DiscoveryError> {
        crate::ensure_crypto_provider();
        if !issuer_allowed(&self.issuer) {
            return Err(DiscoveryError::InsecureIssuer);
        }
        let fetcher = match self.fetcher {
            Some(f) => f,
            None => Arc::new(HttpFetcher::new()?),
        };
        let config_url = format!(
            "{}{OPENID_CONFIGURATION}",
            self.issuer.strip_suffix('/').unwrap_or(&self.issuer)
        );
        Ok(Discovery {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                config_url,
                fetcher,
                state: ArcSwapOption::empty(),
                clock: self.clock,
                cooldown: self.cooldown,
                default_rsa_alg: self.default_rsa_alg,
                ttl_bounds: self.ttl_bounds,
                negative_ttl: self.negative_ttl,
                retry: self.retry,
                generation: AtomicU64::new(0),
                last_attempt_ms: AtomicI64::new(i64::MIN / 2),
                attempts: AtomicU64::new(0),
                in_flight: AtomicBool::new(false),
                lock: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Inner {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().millis()).unwrap_or(i64::MAX)
    }

    fn in_cooldown(&self) -> bool {
        self.now_ms()
            .saturating_sub(self.last_attempt_ms.load(Ordering::Acquire))
            < ms(self.cooldown)
    }

    /// The document and the key source on its `jwks_uri`.
    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let doc = self
            .fetcher
            .fetch(&self.config_url)
            .await
            .map_err(|e| match e {
                JwksError::Fetch(why) => DiscoveryError::Fetch(why),
                other => DiscoveryError::Fetch(other.to_string()),
            })?;
        let metadata = ProviderMetadata::parse(&doc.body, &self.issuer)?;
        let mut keys = RemoteJwks::builder(metadata.jwks_uri())
            .fetcher(Arc::clone(&self.fetcher))
            .clock(self.clock.clone())
            .cooldown(self.cooldown);
        if let Some(alg) = self.default_rsa_alg {
            keys = keys.default_rsa_alg(alg);
        }
        if let Some((min, max)) = self.ttl_bounds {
            keys = keys.ttl_bounds(min, max);
        }
        if let Some(ttl) = self.negative_ttl {
            keys = keys.negative_ttl(ttl);
        }
        if let Some(retry) = self.retry {
            keys = keys.retry(retry);
        }
        Ok(Discovered {
            metadata: Arc::new(metadata),
            keys: keys.build()?,
        })
    }

    /// One discovery attempt unless another completed since `seen`
    /// (single flight): `None` when another ran.
    async fn attempt(&self, seen: u64) -> Option<Result<Arc<ProviderMetadata>, DiscoveryError>> {
        let _guard = self.lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return None;
        }
        if let Some(done) = self.state.load_full() {
            return Some(Ok(Arc::clone(&done.metadata)));
        }
        let _in_flight = InFlight::start(&self.in_flight);
        self.last_attempt_ms.store(self.now_ms(), Ordering::Release);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.discover().await {
            Ok(found) => {
                let metadata = Arc::clone(&found.metadata);
                self.state.store(Some(Arc::new(found)));
                Ok(metadata)
            }
            Err(e) => {
                portcullis_core::event!(warn, error = %e, "OpenID discovery failed; retrying after the cooldown");
                Err(e)
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        Some(outcome)
    }
}

impl Discovery {
    /// Starts a builder for the issuer `issuer` (its exact `iss`, e.g.
    /// `https://id.example.com` or `https://id.example.com/realms/acme`).
    pub fn builder(issuer: impl Into<String>) -> DiscoveryBuilder {
        DiscoveryBuilder {
            issuer: issuer.into(),
            fetcher: None,
            clock: SystemClock::shared(),
            cooldown: Duration::from_secs(10),
            default_rsa_alg: None,
            ttl_bounds: None,
            negative_ttl: None,
            retry: None,
        }
    }

    /// Discovers `issuer` now, with [`HttpFetcher`]: its metadata (the
    /// introspection endpoint, ...), without keeping a key source.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), portcullis_jwt::jwks::DiscoveryError> {
    /// use portcullis_jwt::jwks::Discovery;
    ///
    /// let md = Discovery::fetch("https://id.example.com").await?;
    /// let introspect = md.introspection_endpoint();
    /// # let _ = introspect; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`DiscoveryError`] says what failed.
    pub async fn fetch(issuer: impl Into<String>) -> Result<ProviderMetadata, DiscoveryError> {
        let discovery = Self::builder(issuer).build()?;
        let fetched = discovery
            .inner
            .fetcher
            .fetch(&discovery.inner.config_url)
            .await;
        let doc = fetched.map_err(|e| DiscoveryError::Fetch(e.to_string()))?;
        ProviderMetadata::parse(&doc.body, &discovery.inner.issuer)
    }

    /// The configured issuer.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The discovery document's URL.
    #[must_use]
    pub fn configuration_url(&self) -> &str {
        &self.inner.config_url
    }

    /// The metadata, discovering it now if no discovery has succeeded
    /// yet (sharing an attempt under way). The key source on `jwks_uri`
    /// starts with it.
    ///
    /// # Errors
    ///
    /// What this attempt found wrong, or
    /// [`DiscoveryError::CoolingDown`] within the cooldown after a
    /// failed attempt (or when a concurrent attempt failed).
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, DiscoveryError> {
        let inner = &self.inner;
        if let Some(done) = inner.state.load_full() {
            return Ok(Arc::clone(&done.metadata));
        }
        if inner.in_cooldown() {
            return Err(DiscoveryError::CoolingDown);
        }
        let seen = inner.generation.load(Ordering::Acquire);
        match inner.attempt(seen).await {
            Some(outcome) => outcome,
            None => inner
                .state
                .load_full()
                .map(|d| Arc::clone(&d.metadata))
                .ok_or(DiscoveryError::CoolingDown),
        }
    }

    /// The metadata, if a discovery has succeeded.
    #[must_use]
    pub fn current(&self) -> Option<Arc<ProviderMetadata>> {
        self.inner
            .state
            .load_full()
            .map(|d| Arc::clone(&d.metadata))
    }

    /// The key source on the discovered `jwks_uri`, if a discovery has
    /// succeeded.
    #[must_use]
    pub fn keys(&self) -> Option<RemoteJwks> {
        self.inner.state.load_full().map(|d| d.keys.clone())
    }

    /// Discovery attempts so far (for tests and metrics; key fetches are
    /// counted by [`keys`](Self::keys)).
    #[must_use]
    pub fn attempt_count(&self) -> u64 {
        self.inner.attempts.load(Ordering::Relaxed)
    }

    /// Discovers (unless another attempt completed meanwhile), then waits
    /// for the first key fetch's outcome, so the lookup after it answers
    /// from a key set or as unavailable.
    fn refresh_future(&self) -> RefreshFuture {
        let inner = Arc::clone(&self.inner);
        let seen = inner.generation.load(Ordering::Acquire);
        Box::pin(async move {
            let _ = inner.attempt(seen).await;
            let Some(found) = inner.state.load_full() else {
                return;
            };
            // The key source's background task may have started that
            // fetch already (a lookup would then answer unavailable):
            // join it rather than ask.
            found.keys.first_attempt().await;
        })
    }
}

impl KeySource for Discovery {
    fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        if let Some(found) = &*self.inner.state.load() {
            if found.keys.first_attempt_pending() {
                // Discovered, keys being fetched for the first time: wait
                // for that fetch (the key source alone would answer
                // unavailable while it runs).
                let keys = found.keys.clone();
                return KeyLookup::Refresh(Box::pin(async move { keys.first_attempt().await }));
            }
            return found.keys.lookup(kid);
        }
        // Not discovered yet: wait for the attempt under way, or discover
        // now unless an attempt failed within the cooldown.
        if self.inner.in_flight.load(Ordering::Acquire) || !self.inner.in_cooldown() {
            KeyLookup::Refresh(self.refresh_future())
        } else {
            KeyLookup::Unavailable
        }
    }

    fn may_refresh(&self) -> bool {
        true
    }
}

impl JwtLayer {
    /// Starts a builder that trusts the issuer `issuer`, its keys found by
    /// OpenID Connect discovery on the first token (see [`Discovery`]);
    /// configure the audience as with [`builder`](Self::builder).
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use portcullis_jwt::JwtLayer;
    ///
    /// let jwt = JwtLayer::discover("https://id.example.com")?
    ///     .audience("https://api.example.com")
    ///     .build()?;
    /// # let _ = jwt; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`DiscoveryBuilder::build`].
    pub fn discover(issuer: impl Into<String>) -> Result<JwtLayerBuilder, DiscoveryError> {
        let discovery = Discovery::builder(issuer).build()?;
        let iss = discovery.issuer().to_owned();
        Ok(Self::builder(discovery).issuer(iss))
    }

    /// [`discover`](Self::discover) with a configured [`Discovery`] (its
    /// fetcher, clock, cooldown).
    pub fn builder_discovery(discovery: Discovery) -> JwtLayerBuilder {
        let iss = discovery.issuer().to_owned();
        Self::builder(discovery).issuer(iss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> Result<ProviderMetadata, DiscoveryError> {
        ProviderMetadata::parse(doc.as_bytes(), "https://id.example.com")
    }

    #[test]
    fn document_table() {
        let ok =
            r#"{"issuer":"https://id.example.com","jwks_uri":"https://keys.example.com/jwks"}"#;
        assert_eq!(
            parse(ok).unwrap().jwks_uri(),
            "https://keys.example.com/jwks"
        );
        let cases: &[(&str, &str)] = &[
            (
                r#"{"issuer":"https://id.example.com/","jwks_uri":"https://a/j"}"#,
                "IssuerMismatch",
            ),
            (
                r#"{"issuer":"https://ID.example.com","jwks_uri":"https://a/j"}"#,
                "IssuerMismatch",
            ),
            (r#"{"jwks_uri":"https://a/j"}"#, "IssuerMismatch"),
            (r#"{"issuer":"https://id.example.com"}"#, "NoJwksUri"),
            (
                r#"{"issuer":"https://id.example.com","jwks_uri":"http://id.example.com/j"}"#,
                "InsecureEndpoint",
            ),
            (
                r#"{"issuer":"https://id.example.com","jwks_uri":"https://a/j","introspection_endpoint":"http://a/i"}"#,
                "InsecureEndpoint",
            ),
            (
                r#"{"issuer":"https://id.example.com","jwks_uri":"https://a/j","issuer":"https://evil"}"#,
                "Json",
            ),
            (
                r#"{"issuer":"https://evil","jwks_uri":"https://a/j","issuer":"https://id.example.com"}"#,
                "Json",
            ),
            (
                r#"{"issuer":["https://id.example.com"],"jwks_uri":"https://a/j"}"#,
                "Json",
            ),
            (
                r#"{"issuer":"https://id.example.com","jwks_uri":7}"#,
                "Json",
            ),
            (r#"[]"#, "Json"),
        ];
        for (doc, want) in cases {
            let got = format!("{:?}", parse(doc).unwrap_err());
            assert!(got.starts_with(want), "{doc}: {got}");
        }
    }

    #[test]
    fn issuer_urls() {
        for (iss, ok) in [
            ("https://id.example.com", true),
            ("https://id.example.com/realms/acme", true),
            ("http://127.0.0.1:8080", true),
            ("http://id.example.com", false),
            ("https://id.example.com?x=1", false),
            ("https://id.example.com#f", false),
            ("id.example.com", false),
        ] {
            assert_eq!(Discovery::builder(iss).build().is_ok(), ok, "{iss}");
        }
        let d = Discovery::builder("https://id.example.com/realms/acme/")
            .build()
            .unwrap();
        assert_eq!(
            d.configuration_url(),
            "https://id.example.com/realms/acme/.well-known/openid-configuration"
        );
    }
}
