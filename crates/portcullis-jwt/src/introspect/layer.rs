//! `IntrospectionLayer`: the builder and the `Layer` that wraps a service
//! in [`Introspect`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::events::Events;
use portcullis_core::{ProblemJson, RenderRejection, SharedClock, SystemClock};
use tower_layer::Layer;

use super::IntrospectionConfigError;
use super::cache::{Introspector, MAX_CACHE_BOUND_SECS, Settings};
use super::client::{Client, basic_authorization};
use super::service::{Config, Introspect};
use crate::jwks::url_allowed;
use crate::revocation::{RevocationStore, RevocationView};
use crate::transport::Transport;

/// A client secret: never printed.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// Builds an [`IntrospectionLayer`]. See [`IntrospectionLayer::builder`].
#[must_use]
pub struct IntrospectionLayerBuilder {
    endpoint: String,
    client: Option<(String, Secret)>,
    issuer: Option<String>,
    audiences: Vec<String>,
    any_audience: bool,
    max_calls: usize,
    cache_bound: Duration,
    inactive_cache_bound: Duration,
    cache_capacity: usize,
    timeout: Duration,
    max_response: usize,
    max_token_len: usize,
    leeway: Duration,
    revocation: Option<RevocationView>,
    store: Option<Arc<dyn RevocationStore>>,
    events: Events,
    transport: Transport,
    realm: Option<String>,
    retry_after: Duration,
    clock: SharedClock,
}

impl fmt::Debug for IntrospectionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionLayerBuilder")
            .field("endpoint", &self.endpoint)
            .field("client", &self.client)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("cache_bound", &self.cache_bound)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl IntrospectionLayerBuilder {
    /// Authenticates to the endpoint with HTTP Basic (`client_secret_basic`,
    /// RFC 6749 section 2.3.1). The secret never appears in `Debug`
    /// output, logs or events.
    pub fn client_secret_basic(
        mut self,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.client = Some((client_id.into(), Secret(secret.into())));
        self
    }

    /// Requires the answer's `iss` to be `issuer` (default: not checked;
    /// the endpoint vouches for its own tokens).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires the answer's `aud` to name `audience` (or another audience
    /// added this way). Required unless
    /// [`allow_any_audience`](Self::allow_any_audience) is called.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// **Weaker.** Accepts any `aud` the endpoint answers, none included:
    /// a token the provider issued for another resource server is then
    /// accepted here. Only for a provider that issues tokens for this
    /// service alone.
    pub const fn allow_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// The most calls to the endpoint open at once (default 256); a
    /// request that would open one more (a token neither cached nor being
    /// asked about) is answered 503 at once.
    pub const fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.max_calls = calls;
        self
    }

    /// The longest an active answer is served from the cache (default
    /// 60 s; at most one day): never past the answer's `exp` either. A
    /// token revoked at the provider is still accepted here for up to this
    /// long (unless the revocation view denies it); zero turns the cache
    /// of active answers off.
    pub fn cache_bound(mut self, bound: Duration) -> Self {
        self.cache_bound = bound.min(Duration::from_secs(MAX_CACHE_BOUND_SECS.unsigned_abs()));
        self
    }

    /// The longest an inactive answer is served from the cache (default
    /// 10 s; at most one day; zero turns it off). Failures are never
    /// cached.
    pub fn inactive_cache_bound(mut self, bound: Duration) -> Self {
        self.inactive_cache_bound =
            bound.min(Duration::from_secs(MAX_CACHE_BOUND_SECS.unsigned_abs()));
        self
    }

    /// The most answers cached (default 10 000). When full, expired
    /// answers go first, then arbitrary ones.
    pub const fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The longest a call to the endpoint may take, connection included
    /// (default 5 s); past it the request is answered 503.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest answer body read (default 64 KiB); a larger one is a
    /// provider failure (503).
    pub const fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }

    /// The longest token sent to the endpoint (default 8 KiB); a longer
    /// one is refused (401) without a call.
    pub const fn max_token_len(mut self, len: usize) -> Self {
        self.max_token_len = len;
        self
    }

    /// The tolerance for `exp` and `nbf` in answers (default 5 s, at most
    /// [`MAX_LEEWAY`](crate::MAX_LEEWAY)).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(crate::MAX_LEEWAY);
        self
    }

    /// Checks every answer against `view` (its `jti`, `sid`, user version,
    /// and the token's [`revocation_key`](super::revocation_key)), and
    /// puts into it every token seen active that the endpoint now calls
    /// inactive (see the module docs).
    pub fn revocation(mut self, view: RevocationView) -> Self {
        self.revocation = Some(view);
        self.store = None;
        self
    }

    /// As [`revocation`](Self::revocation) with `store`'s view, and a token
    /// seen active that the endpoint now calls inactive is also written to
    /// `store` ([`RevocationStore::revoke_token`]), so that the views of
    /// every instance sharing the store (Redis, SQL) refuse it, not only
    /// this process's. The write happens in the call to the endpoint that
    /// heard "inactive"; a failed write is logged, and the local view
    /// refuses the token all the same.
    pub fn revocation_store(mut self, store: impl RevocationStore) -> Self {
        self.revocation = Some(store.view());
        self.store = Some(Arc::new(store));
        self
    }

    /// Reports to `events` (default: nothing listens); see the module
    /// docs for the events.
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Reads the token from `transport` instead of `Authorization: Bearer`.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the `realm` of `WWW-Authenticate` challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// `Retry-After` of 503 answers (default 1 s).
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Reads the time from `clock` (cache lifetimes, `exp`, `nbf`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`IntrospectionConfigError`] for an endpoint that is not `https`
    /// (or `http` to loopback), no audience (and no explicit
    /// [`allow_any_audience`](Self::allow_any_audience)), no or unusable
    /// client credentials, a zero
    /// timeout or limit, or a TLS client that cannot be built.
    pub fn build(self) -> Result<IntrospectionLayer, IntrospectionConfigError> {
        crate::ensure_crypto_provider();
        if !url_allowed(&self.endpoint) {
            return Err(IntrospectionConfigError::InsecureUrl);
        }
        let endpoint: http::Uri = self
            .endpoint
            .parse()
            .map_err(|_| IntrospectionConfigError::InsecureUrl)?;
        if self.audiences.is_empty() && !self.any_audience {
            return Err(IntrospectionConfigError::AudienceNotConfigured);
        }
        let Some((client_id, secret)) = &self.client else {
            return Err(IntrospectionConfigError::NoClientAuthentication);
        };
        let authorization = basic_authorization(client_id, &secret.0)?;
        if self.timeout.is_zero()
            || self.max_response == 0
            || self.max_token_len == 0
            || self.cache_capacity == 0
            || self.max_calls == 0
        {
            return Err(IntrospectionConfigError::ZeroLimit);
        }
        let client = Client::new(endpoint, authorization, self.timeout, self.max_response)?;
        let introspector = Introspector::new(Settings {
            client,
            clock: self.clock,
            capacity: self.cache_capacity,
            max_calls: self.max_calls,
            active_bound: self.cache_bound,
            inactive_bound: self.inactive_cache_bound,
            leeway: self.leeway,
            issuer: self.issuer,
            audiences: self.audiences,
            revocation: self.revocation,
            store: self.store,
        });
        Ok(IntrospectionLayer {
            config: Arc::new(Config {
                introspector: Arc::new(introspector),
                transport: self.transport,
                max_token_len: self.max_token_len,
                events: self.events,
                realm: self.realm,
                retry_after: self.retry_after,
                endpoint: self.endpoint,
                client_id: client_id.clone(),
            }),
            renderer: ProblemJson,
        })
    }
}

/// Checks an opaque access token at the authorization server's
/// introspection endpoint (RFC 7662) on every request (answers cached),
/// and puts its [`Claims`](crate::Claims) into the request extensions.
/// See the [module docs](super).
///
/// Refusals: 401 with `WWW-Authenticate: Bearer` and one uniform body,
/// 400 `invalid_request` for malformed credentials, 503 with
/// `Retry-After` when the endpoint fails; gRPC requests get gRPC statuses.
/// A cached answer is decided before the inner service, in a named
/// future; a call to the endpoint is awaited in a boxed one.
pub struct IntrospectionLayer<R = ProblemJson> {
    config: Arc<Config>,
    renderer: R,
}

impl<R: Clone> Clone for IntrospectionLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            renderer: self.renderer.clone(),
        }
    }
}

impl<R> fmt::Debug for IntrospectionLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionLayer")
            .field("endpoint", &self.config.endpoint)
            .field("client_id", &self.config.client_id)
            .field("client_secret", &"REDACTED")
            .field("transport", &self.config.transport)
            .field("timeout", &self.config.introspector.timeout())
            .field("revocation", &self.config.introspector.has_revocation())
            .finish_non_exhaustive()
    }
}

impl IntrospectionLayer {
    /// Starts a builder for the introspection endpoint at `endpoint`
    /// (`https`, or `http` to a loopback host).
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionLayerBuilder {
        IntrospectionLayerBuilder {
            endpoint: endpoint.into(),
            client: None,
            issuer: None,
            audiences: Vec::new(),
            any_audience: false,
            max_calls: 256,
            cache_bound: Duration::from_secs(60),
            inactive_cache_bound: Duration::from_secs(10),
            cache_capacity: 10_000,
            timeout: Duration::from_secs(5),
            max_response: 64 * 1024,
            max_token_len: crate::DEFAULT_MAX_TOKEN_LEN,
            leeway: crate::DEFAULT_LEEWAY,
            revocation: None,
            store: None,
            events: Events::default(),
            transport: Transport::Bearer,
            realm: None,
            retry_after: Duration::from_secs(1),
            clock: SystemClock::shared(),
        }
    }
}

impl<R> IntrospectionLayer<R> {
    /// Uses `renderer` for refusals.
    pub fn with_rejection<R2: RenderRejection>(self, renderer: R2) -> IntrospectionLayer<R2> {
        IntrospectionLayer {
            config: self.config,
            renderer,
        }
    }

    /// Calls made to the introspection endpoint so far (for tests and
    /// metrics).
    #[must_use]
    pub fn endpoint_calls(&self) -> u64 {
        self.config.introspector.calls()
    }
}

impl<S, R: Clone> Layer<S> for IntrospectionLayer<R> {
    type Service = Introspect<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Introspect::new(inner, Arc::clone(&self.config), self.renderer.clone())
    }
}
