//! `RemoteJwks`: keys fetched from an HTTPS JWKS URL, cached within
//! `Cache-Control` bounds, refreshed on an unknown `kid` (feature
//! `jwks-remote`).
//!
//! Over 500 lines: the HTTP fetcher, the refresh rules (cache lifetime,
//! cooldown, negative cache, first fetch) and their docs belong together.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use portcullis_core::{SharedClock, SystemClock};

use super::document::{JwksError, cache_control_max_age, key_set_from_json, url_allowed};
use crate::alg::Algorithm;
use crate::keys::KeySet;
use crate::keys::{KeyLookup, KeySource};

/// A fetched JWKS document.
#[derive(Debug, Clone)]
pub struct FetchedJwks {
    /// The body.
    pub body: Bytes,
    /// `Cache-Control: max-age`, if the server sent one.
    pub max_age: Option<Duration>,
}

/// Fetches JWKS documents. The default is [`HttpFetcher`]; implement it
/// to fetch through your own client.
#[async_trait]
pub trait JwksFetcher: Send + Sync + 'static {
    /// Fetches `url`.
    async fn fetch(&self, url: &str) -> Result<FetchedJwks, JwksError>;
}

#[async_trait]
impl<F: JwksFetcher + ?Sized> JwksFetcher for Arc<F> {
    async fn fetch(&self, url: &str) -> Result<FetchedJwks, JwksError> {
        (**self).fetch(url).await
    }
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<Bytes>,
>;

/// hyper over rustls (aws-lc-rs provider, webpki roots, passed
/// explicitly: no process-wide TLS state is touched): no redirects, 5 s
/// timeout, at most 256 KiB.
#[derive(Clone)]
pub struct HttpFetcher {
    client: HttpsClient,
    timeout: Duration,
    max_body: usize,
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl HttpFetcher {
    /// A fetcher with the defaults.
    ///
    /// # Errors
    ///
    /// The TLS configuration cannot be built.
    pub fn new() -> Result<Self, JwksError> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksError::Fetch(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // Plain http is only reachable for loopback URLs (checked before
        // any fetch by `url_allowed`).
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Self {
            client,
            timeout: Duration::from_secs(5),
            max_body: 256 * 1024,
        })
    }
}

#[async_trait]
impl JwksFetcher for HttpFetcher {
    async fn fetch(&self, url: &str) -> Result<FetchedJwks, JwksError> {
        use http_body_util::BodyExt as _;
        if !url_allowed(url) {
            return Err(JwksError::InsecureUrl);
        }
        let uri: http::Uri = url.parse().map_err(|_| JwksError::InsecureUrl)?;
        let work = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| JwksError::Fetch(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(JwksError::Fetch(format!("status {}", resp.status())));
            }
            let max_age = resp
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .and_then(cache_control_max_age);
            let body = http_body_util::Limited::new(resp.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| JwksError::Fetch(e.to_string()))?
                .to_bytes();
            Ok(FetchedJwks { body, max_age })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| JwksError::Fetch("timed out".into()))?
    }
}

/// Keys from a JWKS URL: cached, refreshed in the background, refreshed
/// early (once per cooldown, single-flight) when a token names an
/// unknown `kid`.
///
/// - Reads are lock-free (`arc-swap`).
/// - The background refresh follows `Cache-Control: max-age`, clamped
///   to [`min_ttl`, `max_ttl`] (default 1 min to 1 day; 5 min without
///   the header); after a failure it retries every `retry` (30 s).
/// - A failed fetch keeps the last good key set.
/// - A key the document no longer lists stops verifying at the next
///   successful fetch, and the tokens the layer cached with it are no
///   longer served. Until then (at most the refresh interval, longer
///   while fetches fail) it still verifies: an issuer retiring a
///   compromised key should serve its JWKS with a short `max-age`.
/// - An unknown `kid` triggers at most one fetch per `cooldown` (10 s);
///   concurrent requests share it; kids still unknown afterwards are
///   remembered for `negative_ttl` (1 min), so a flood of random kids
///   costs a bounded number of fetches.
/// - Until a first key set has loaded, lookups answer
///   [`KeyLookup::Unavailable`] (503), distinct from a bad token (401).
/// - Only `https` URLs, or `http` to a loopback host, are accepted.
/// - Symmetric keys in the document are refused.
///
/// ```no_run
/// # async fn demo() -> Result<(), portcullis_jwt::jwks::JwksError> {
/// use portcullis_jwt::JwtLayer;
/// use portcullis_jwt::jwks::RemoteJwks;
///
/// let jwks = RemoteJwks::builder("https://auth.example.com/.well-known/jwks.json").build()?;
/// jwks.ready().await;
/// let layer = JwtLayer::builder(jwks).issuer("https://auth.example.com").audience("api").build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    fetcher: Arc<dyn JwksFetcher>,
    keys: ArcSwapOption<KeySet>,
    default_rsa_alg: Option<Algorithm>,
    min_ttl: Duration,
    max_ttl: Duration,
    default_ttl: Duration,
    retry: Duration,
    cooldown_ms: i64,
    negative_ttl_ms: i64,
    clock: SharedClock,
    /// Attempts so far (successful or not): waiters compare it to know
    /// whether a fetch happened while they queued.
    generation: AtomicU64,
    last_attempt_ms: AtomicI64,
    fetches: AtomicU64,
    fetch_lock: tokio::sync::Mutex<()>,
    loaded: tokio::sync::Notify,
    negative: Mutex<HashMap<String, i64>>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.inner.url)
            .field("loaded", &self.inner.keys.load().is_some())
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RemoteJwks`].
#[must_use]
pub struct RemoteJwksBuilder {
    url: String,
    fetcher: Option<Arc<dyn JwksFetcher>>,
    default_rsa_alg: Option<Algorithm>,
    min_ttl: Duration,
    max_ttl: Duration,
    default_ttl: Duration,
    retry: Duration,
    cooldown: Duration,
    negative_ttl: Duration,
    clock: SharedClock,
}

impl fmt::Debug for RemoteJwksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwksBuilder")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RemoteJwksBuilder {
    /// Fetches with `fetcher` instead of [`HttpFetcher`].
    pub fn fetcher(mut self, fetcher: impl JwksFetcher) -> Self {
        self.fetcher = Some(Arc::new(fetcher));
        self
    }

    /// The algorithm of RSA keys that carry no `alg` (otherwise they are
    /// skipped: an RSA key alone does not say RS256 or PS256).
    pub const fn default_rsa_alg(mut self, alg: Algorithm) -> Self {
        self.default_rsa_alg = Some(alg);
        self
    }

    /// Bounds for `Cache-Control: max-age` (default 1 min .. 1 day).
    pub const fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max;
        self
    }

    /// The least time between two fetches triggered by unknown kids
    /// (default 10 s).
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// How long a kid that stayed unknown after a refresh is refused
    /// without a fetch (default 1 min).
    pub const fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Delay before retrying after a failed background fetch (30 s).
    pub const fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Reads the time from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Starts the source: validates the URL and spawns the background
    /// refresh (which fetches at once) on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`JwksError::InsecureUrl`], or [`JwksError::Fetch`] when there
    /// is no tokio runtime or the TLS client cannot be built.
    pub fn build(self) -> Result<RemoteJwks, JwksError> {
        crate::ensure_crypto_provider();
        if !url_allowed(&self.url) {
            return Err(JwksError::InsecureUrl);
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| JwksError::Fetch("RemoteJwks needs a tokio runtime".into()))?;
        let fetcher = match self.fetcher {
            Some(f) => f,
            None => Arc::new(HttpFetcher::new()?),
        };
        let inner = Arc::new(Inner {
            url: self.url,
            fetcher,
            keys: ArcSwapOption::empty(),
            default_rsa_alg: self.default_rsa_alg,
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl.max(self.min_ttl),
            default_ttl: self.default_ttl,
            retry: self.retry,
            cooldown_ms: ms(self.cooldown),
            negative_ttl_ms: ms(self.negative_ttl),
            clock: self.clock,
            generation: AtomicU64::new(0),
            last_attempt_ms: AtomicI64::new(i64::MIN / 2),
            fetches: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            loaded: tokio::sync::Notify::new(),
            negative: Mutex::new(HashMap::new()),
        });
        handle.spawn(background(Arc::downgrade(&inner)));
        Ok(RemoteJwks { inner })
    }
}

/// Refreshes on schedule until the source is dropped.
async fn background(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let generation = inner.generation.load(Ordering::Acquire);
        let wait = match inner.refresh(generation).await {
            Some(ttl) => ttl,
            None => inner.retry,
        };
        drop(inner);
        tokio::time::sleep(wait).await;
    }
}

impl Inner {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().millis()).unwrap_or(i64::MAX)
    }

    /// Fetches unless another fetch completed since `seen` (single
    /// flight). Returns the next refresh delay on success.
    async fn refresh(&self, seen: u64) -> Option<Duration> {
        let _guard = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return None;
        }
        self.last_attempt_ms.store(self.now_ms(), Ordering::Release);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = match self.fetcher.fetch(&self.url).await {
            Ok(doc) => {
                key_set_from_json(&doc.body, self.default_rsa_alg).map(|set| (set, doc.max_age))
            }
            Err(e) => Err(e),
        };
        let next = match result {
            Ok((set, max_age)) => {
                self.keys.store(Some(Arc::new(set)));
                self.negative
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                self.loaded.notify_waiters();
                Some(
                    max_age
                        .unwrap_or(self.default_ttl)
                        .clamp(self.min_ttl, self.max_ttl),
                )
            }
            Err(_e) => {
                portcullis_core::event!(warn, error = %_e, "JWKS fetch failed; keeping the last good key set");
                None
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        next
    }

    fn in_cooldown(&self) -> bool {
        self.now_ms()
            .saturating_sub(self.last_attempt_ms.load(Ordering::Acquire))
            < self.cooldown_ms
    }

    fn negatively_cached(&self, kid: &str) -> bool {
        let now = self.now_ms();
        let neg = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        neg.get(kid).is_some_and(|until| *until > now)
    }

    fn remember_unknown(&self, kid: &str) {
        let now = self.now_ms();
        let mut neg = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        if neg.len() >= 4096 {
            neg.retain(|_, until| *until > now);
            if neg.len() >= 4096 {
                neg.clear();
            }
        }
        neg.insert(kid.to_owned(), now.saturating_add(self.negative_ttl_ms));
    }
}

impl RemoteJwks {
    /// Starts a builder for `url`.
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            url: url.into(),
            fetcher: None,
            default_rsa_alg: None,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(300),
            retry: Duration::from_secs(30),
            cooldown: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(60),
            clock: SystemClock::shared(),
        }
    }

    /// Waits until a key set has loaded (returns at once if one has).
    pub async fn ready(&self) {
        loop {
            let notified = self.inner.loaded.notified();
            if self.inner.keys.load().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Fetches attempted so far (for tests and metrics).
    #[must_use]
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// The current key set, if one has loaded.
    #[must_use]
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.inner.keys.load_full()
    }

    fn refresh_future(&self) -> crate::keys::RefreshFuture {
        let inner = Arc::clone(&self.inner);
        let seen = inner.generation.load(Ordering::Acquire);
        Box::pin(async move {
            let _ = inner.refresh(seen).await;
        })
    }

    /// Whether no fetch attempt has ended yet (the first one may be
    /// under way).
    pub(crate) fn first_attempt_pending(&self) -> bool {
        self.inner.generation.load(Ordering::Acquire) == 0
    }

    /// Completes once the first fetch attempt has ended (at once if one
    /// has): joins the one under way (the background's first fetch, which
    /// a lookup would answer as unavailable while it runs), or makes it.
    pub(crate) async fn first_attempt(&self) {
        if self.inner.generation.load(Ordering::Acquire) == 0 {
            let _ = self.inner.refresh(0).await;
        }
    }
}

impl KeySource for RemoteJwks {
    fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        let inner = &self.inner;
        let Some(set) = inner.keys.load_full() else {
            // Nothing ever loaded: fetch now unless one just failed.
            return if inner.in_cooldown() {
                KeyLookup::Unavailable
            } else {
                KeyLookup::Refresh(self.refresh_future())
            };
        };
        if let Some(k) = set.find(kid) {
            return KeyLookup::Found(Arc::clone(k));
        }
        let Some(kid) = kid else {
            return KeyLookup::Unknown;
        };
        if inner.negatively_cached(kid) {
            return KeyLookup::Unknown;
        }
        if inner.in_cooldown() {
            inner.remember_unknown(kid);
            return KeyLookup::Unknown;
        }
        KeyLookup::Refresh(self.refresh_future())
    }

    fn may_refresh(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWKS endpoint that holds every fetch until the gate opens.
    struct Gated {
        gate: Arc<tokio::sync::Semaphore>,
        started: Arc<AtomicU64>,
        body: Bytes,
    }

    #[async_trait]
    impl JwksFetcher for Gated {
        async fn fetch(&self, _url: &str) -> Result<FetchedJwks, JwksError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await;
            Ok(FetchedJwks {
                body: self.body.clone(),
                max_age: None,
            })
        }
    }

    fn jwks() -> Bytes {
        let key = crate::SigningKey::generate("k", Algorithm::ES256).unwrap();
        let issuer = crate::JwtIssuer::builder(key)
            .issuer("https://id.example.com")
            .audience("api")
            .build()
            .unwrap();
        Bytes::from(issuer.jwks_json())
    }

    /// While the background's first fetch runs, a lookup answers
    /// unavailable; `first_attempt` waits for that fetch instead, so the
    /// first token after discovery finds the keys.
    #[tokio::test]
    async fn first_attempt_joins_the_background_fetch() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let jwks = RemoteJwks::builder("https://id.example.com/jwks")
            .fetcher(Gated {
                gate: Arc::clone(&gate),
                started: Arc::clone(&started),
                body: jwks(),
            })
            .build()
            .unwrap();
        // The background task starts its fetch and waits at the gate.
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(jwks.lookup(Some("k")), KeyLookup::Unavailable));
        let waiting = {
            let jwks = jwks.clone();
            tokio::spawn(async move { jwks.first_attempt().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        gate.add_permits(8);
        waiting.await.unwrap();
        assert!(matches!(jwks.lookup(Some("k")), KeyLookup::Found(_)));
        assert_eq!(started.load(Ordering::SeqCst), 1, "one fetch, shared");
    }
}
