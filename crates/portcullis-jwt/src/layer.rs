//! `JwtLayer`: the builder and the `Layer` that wraps a service in
//! [`Jwt`], which verifies an access token before the inner service runs.
//!
//! Over 500 lines: every builder option is documented with a runnable
//! example, and the three entry points (one key source, one issuer,
//! several issuers) live together.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use portcullis_core::events::Events;
use portcullis_core::{ProblemJson, RenderRejection, SharedClock, SystemClock};
use serde::de::DeserializeOwned;
use tower_layer::Layer;

use crate::cache::TokenCache;
use crate::claims::{Claims, NoCustomClaims};
use crate::dpop::{DpopPolicy, DpopVerifier};
use crate::error::{Challenges, JwtError, JwtErrorKind};
use crate::issuer::JwtIssuer;
use crate::keys::KeySource;
use crate::prepared::Prepared;
use crate::revocation::RevocationView;
use crate::service::{Config, Jwt};
use crate::transport::Transport;
use crate::validation::Validation;
use crate::verifier::{Anonymous, Verifier};

/// A configuration that cannot be safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// No trusted issuer, and no explicit [`JwtLayerBuilder::allow_any_issuer`].
    #[error("configure the trusted issuer (or call allow_any_issuer explicitly)")]
    IssuerNotConfigured,
    /// No audience, and no explicit [`JwtLayerBuilder::allow_any_audience`].
    #[error("configure this service's audience (or call allow_any_audience explicitly)")]
    AudienceNotConfigured,
    /// A zero token size limit.
    #[error("the token size limit must be positive")]
    MaxLen,
    /// A `realm` or `resource_metadata` value that cannot be a challenge
    /// parameter (a quote, a backslash, a character outside visible ASCII
    /// and space).
    #[error("a challenge parameter holds a character it cannot carry")]
    ChallengeParam,
    /// [`JwtLayerBuilder::issuer`], [`audience`](JwtLayerBuilder::audience),
    /// [`validation`](JwtLayerBuilder::validation),
    /// [`allow_any_issuer`](JwtLayerBuilder::allow_any_issuer) or
    /// [`allow_any_audience`](JwtLayerBuilder::allow_any_audience) called
    /// on a builder from [`JwtLayer::builder_issuers`]: each issuer's rules
    /// are its own, set on its [`Issuer`](crate::issuers::Issuer), and a
    /// rule given to the builder would be silently unused.
    #[error("with several issuers, set the issuer, audience and validation rules on each Issuer")]
    RulesOutsideIssuerSet,
}

/// Builds a [`JwtLayer`]. See [`JwtLayer::builder`].
#[must_use]
pub struct JwtLayerBuilder<T = NoCustomClaims> {
    keys: Arc<dyn KeySource>,
    validation: Validation,
    any_issuer: bool,
    any_audience: bool,
    /// One of the single-issuer rules was set (refused with an issuer set).
    single_issuer_rules: bool,
    transport: Transport,
    anonymous: Anonymous,
    revocation: Option<RevocationView>,
    cache: usize,
    clock: SharedClock,
    realm: Option<String>,
    retry_after: Duration,
    events: Events,
    /// Several issuers, each with its own keys and rules (set by
    /// `JwtLayer::builder_issuers`); `None`: `keys` and `validation`.
    pub(crate) issuers: Option<Arc<crate::issuers::IssuerSet>>,
    dpop: Option<(DpopVerifier, DpopPolicy)>,
    resource_metadata: Option<String>,
    _claims: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for JwtLayerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtLayerBuilder")
            .field("keys", &self.keys)
            .field("validation", &self.validation)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl<T> JwtLayerBuilder<T> {
    /// Replaces the validation rules.
    pub fn validation(mut self, validation: Validation) -> Self {
        self.validation = validation;
        self.single_issuer_rules = true;
        self
    }

    /// Trusts tokens issued by `issuer` (shortcut for [`Validation::issuer`]).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.validation = self.validation.issuer(issuer);
        self.single_issuer_rules = true;
        self
    }

    /// This service's audience (shortcut for [`Validation::audience`]).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.validation = self.validation.audience(audience);
        self.single_issuer_rules = true;
        self
    }

    /// **Weaker.** Accepts tokens from any issuer the keys verify. Only for
    /// key sets that a single issuer owns.
    pub const fn allow_any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self.single_issuer_rules = true;
        self
    }

    /// **Weaker.** Accepts tokens for any audience: a token minted for
    /// another service is then accepted here.
    pub const fn allow_any_audience(mut self) -> Self {
        self.any_audience = true;
        self.single_issuer_rules = true;
        self
    }

    /// Reads the token from `transport` instead of `Authorization: Bearer`.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Lets requests without a token through, without claims. A token that
    /// is present and invalid is still refused.
    pub const fn optional(mut self) -> Self {
        self.anonymous = Anonymous::Allowed;
        self
    }

    /// Checks every token against `view` (no I/O per request).
    pub fn revocation(mut self, view: RevocationView) -> Self {
        self.revocation = Some(view);
        self
    }

    /// Caches up to `capacity` verified tokens (default 10 000; 0 turns
    /// the cache off).
    ///
    /// A client sends the same token on every request until it expires; a
    /// hit compares the whole token byte for byte, is served only inside
    /// the window a fresh verification would accept (never past `exp` plus
    /// leeway, never before `iat`/`nbf` minus leeway when the clock is set
    /// back), and only while the key source still returns the key that
    /// verified it (removing a key, retiring it with
    /// [`JwtIssuer::retire`](crate::JwtIssuer::retire) or passing its
    /// retirement deadline ends its cached tokens at once). Revocation is
    /// checked on every request, hit or miss.
    pub const fn cache(mut self, capacity: usize) -> Self {
        self.cache = capacity;
        self
    }

    /// Reads the time from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the `realm` of `WWW-Authenticate` challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Accepts DPoP-bound tokens (RFC 9449) per `policy`, their proofs
    /// checked by `verifier`:
    ///
    /// - [`DpopPolicy::Bearer`]: bearer tokens only (as without this call);
    /// - [`DpopPolicy::Accepted`]: bearer tokens, and DPoP-bound tokens
    ///   sent as `Authorization: DPoP <token>` with a valid `DPoP` proof;
    ///   refusals carry a `Bearer` and a `DPoP` challenge;
    /// - [`DpopPolicy::Required`]: DPoP-bound tokens with proofs only.
    ///
    /// Under every policy, a token bound to a key (`cnf.jkt`, or any other
    /// `cnf` confirmation method) sent as a bearer token (or from a cookie
    /// or header) is refused: a stolen
    /// bound token is useless without the key. A token sent with the
    /// `DPoP` scheme must be bound, and the proof's key thumbprint must
    /// equal its `cnf.jkt`. The verified [`DpopProof`](crate::dpop::DpopProof)
    /// goes into the request extensions next to the [`Claims`].
    ///
    /// The verified-token cache serves DPoP-bound tokens too: a cached
    /// token costs one proof signature check per request. The proof's
    /// `jti` is remembered (the replay cache) only after everything else
    /// passed.
    ///
    /// Per route: one layer per policy, or [`RequireDpopLayer`](crate::RequireDpopLayer)
    /// as a route guard behind an `Accepted` layer.
    pub fn dpop(mut self, verifier: DpopVerifier, policy: DpopPolicy) -> Self {
        self.dpop = Some((verifier, policy));
        self
    }

    /// Adds `resource_metadata="<url>"` (RFC 9728 §5.1: where this
    /// resource's protected-resource metadata is) to every challenge of
    /// the layer, and of the route guards behind it
    /// ([`RequireClaimsLayer`](crate::RequireClaimsLayer),
    /// [`RequireFreshAuthLayer`](crate::RequireFreshAuthLayer),
    /// [`RequireDpopLayer`](crate::RequireDpopLayer)).
    pub fn resource_metadata(mut self, url: impl Into<String>) -> Self {
        self.resource_metadata = Some(url.into());
        self
    }

    /// `Retry-After` of 503 answers (keys unavailable).
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Reports to `events` (default: nothing listens): a `jwt_refused`
    /// event with the refusal's reason code for every refused request
    /// (`store_unavailable` `revocation`/`check` too when the revocation
    /// view cannot answer), the time each decision took, and, with the
    /// `tracing` feature, a `portcullis.jwt` span per request. No event
    /// carries the token. See the crate docs for the table of events.
    ///
    /// ```
    /// use portcullis_core::events::{AuthEventKind, Events};
    /// use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    ///     .issuer("https://auth.example.com")
    ///     .audience("api")
    ///     .build()
    ///     .unwrap();
    /// let events = Events::new();
    /// let mut audit = events.subscribe("audit", 1024);
    /// let jwt = JwtLayer::builder_for(&issuer).events(events).build().unwrap();
    /// // Every request a `jwt` refuses is now in `audit`:
    /// // AuthEventKind::JwtRefused { reason: "expired" }, ...
    /// # let _ = (jwt, audit.try_recv());
    /// # });
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Decodes the application's claims as `U` (any `DeserializeOwned`).
    pub fn claims<U>(self) -> JwtLayerBuilder<U> {
        JwtLayerBuilder {
            keys: self.keys,
            validation: self.validation,
            any_issuer: self.any_issuer,
            any_audience: self.any_audience,
            single_issuer_rules: self.single_issuer_rules,
            transport: self.transport,
            anonymous: self.anonymous,
            revocation: self.revocation,
            cache: self.cache,
            clock: self.clock,
            realm: self.realm,
            retry_after: self.retry_after,
            events: self.events,
            issuers: self.issuers,
            dpop: self.dpop,
            resource_metadata: self.resource_metadata,
            _claims: PhantomData,
        }
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`JwtConfigError`] when no issuer or audience is configured and not
    /// explicitly waived, the size limit is zero, the realm or the
    /// resource metadata URL cannot be a challenge parameter, or a
    /// single-issuer rule was given to a builder over an issuer set
    /// ([`JwtConfigError::RulesOutsideIssuerSet`]).
    pub fn build(self) -> Result<JwtLayer<T>, JwtConfigError> {
        let param_ok = |v: &Option<String>| {
            v.as_deref().is_none_or(|v| {
                v.bytes()
                    .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
            })
        };
        if !param_ok(&self.realm) || !param_ok(&self.resource_metadata) {
            return Err(JwtConfigError::ChallengeParam);
        }
        if self.issuers.is_some() && self.single_issuer_rules {
            return Err(JwtConfigError::RulesOutsideIssuerSet);
        }
        if self.issuers.is_none() && !self.validation.has_issuer() && !self.any_issuer {
            return Err(JwtConfigError::IssuerNotConfigured);
        }
        if self.issuers.is_none() && !self.validation.has_audience() && !self.any_audience {
            return Err(JwtConfigError::AudienceNotConfigured);
        }
        if self.validation.max_len == 0 {
            return Err(JwtConfigError::MaxLen);
        }
        let (dpop, policy) = match self.dpop {
            Some((verifier, policy)) if policy != DpopPolicy::Bearer => (Some(verifier), policy),
            _ => (None, DpopPolicy::Bearer),
        };
        Ok(JwtLayer {
            config: Arc::new(Config {
                verifier: Verifier {
                    keys: self.keys,
                    validation: self.validation,
                    transport: self.transport,
                    anonymous: self.anonymous,
                    revocation: self.revocation,
                    cache: (self.cache > 0).then(|| TokenCache::new(self.cache)),
                    prepared: Prepared::default(),
                    clock: self.clock,
                    issuers: self.issuers,
                },
                mark_challenges: self.resource_metadata.is_some() || policy != DpopPolicy::Bearer,
                challenges: Arc::new(Challenges {
                    realm: self.realm,
                    resource_metadata: self.resource_metadata,
                    policy,
                    dpop_algs: dpop.as_ref().map(|d| Arc::from(d.algs())),
                }),
                retry_after: self.retry_after,
                events: self.events,
                dpop,
                policy,
            }),
            renderer: ProblemJson,
        })
    }
}

/// Verifies an access token on every request and puts its
/// [`Claims`] into the request extensions.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_jwt::{Algorithm, Claims, JwtLayer, KeySet, VerifyingKey};
///
/// let key = VerifyingKey::hmac(Some("k1"), Algorithm::HS256, b"a secret of at least thirty-two bytes!!").unwrap();
/// let jwt = JwtLayer::builder(KeySet::new([key]).unwrap())
///     .issuer("https://auth.example.com")
///     .audience("api")
///     .build()
///     .unwrap();
/// let app: Router = Router::new()
///     .route("/me", get(|claims: Claims| async move { claims.subject().unwrap_or_default().to_owned() }))
///     .layer(jwt);
/// ```
///
/// Refusals: 401 with `WWW-Authenticate: Bearer` and one uniform body
/// whatever failed (the reason is in the response extensions and in
/// tracing events), 400 `invalid_request` for malformed credentials, 503
/// when keys cannot be fetched; gRPC requests get gRPC statuses. The check
/// runs before the inner service, in a named future; only the rare wait for
/// a JWKS refresh is boxed.
pub struct JwtLayer<T = NoCustomClaims, R = ProblemJson> {
    config: Arc<Config<T>>,
    renderer: R,
}

impl<T, R: Clone> Clone for JwtLayer<T, R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            renderer: self.renderer.clone(),
        }
    }
}

impl<T, R> fmt::Debug for JwtLayer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtLayer")
            .field("keys", &self.config.verifier.keys)
            .field("validation", &self.config.verifier.validation)
            .field("transport", &self.config.verifier.transport)
            .field("anonymous", &self.config.verifier.anonymous)
            .finish_non_exhaustive()
    }
}

impl JwtLayer {
    /// Starts a builder that verifies `issuer`'s tokens: its rotating keys,
    /// its `iss`, every `aud` it mints, and its clock, written once.
    /// Further audiences, issuers or rules can be added as with
    /// [`builder`](Self::builder).
    ///
    /// ```
    /// use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
    ///
    /// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    ///     .issuer("https://auth.example.com")
    ///     .audience("api")
    ///     .build()
    ///     .unwrap();
    /// let jwt = JwtLayer::builder_for(&issuer).build().unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let token = issuer.token("alice").mint().unwrap();
    /// let claims = jwt.verify(&token.token).await.unwrap();
    /// assert_eq!(claims.subject(), Some("alice"));
    /// # });
    /// ```
    pub fn builder_for(issuer: &JwtIssuer) -> JwtLayerBuilder {
        let builder = Self::builder(issuer.keys())
            .issuer(issuer.issuer())
            .clock(issuer.clock());
        issuer
            .audiences()
            .iter()
            .fold(builder, |b, aud| b.audience(aud.as_str()))
    }

    /// Starts a builder over a key source (a [`KeySet`](crate::KeySet),
    /// [`SharedKeys`](crate::SharedKeys), a remote JWKS, or yours).
    pub fn builder(keys: impl KeySource) -> JwtLayerBuilder {
        JwtLayerBuilder {
            keys: Arc::new(keys),
            validation: Validation::default(),
            any_issuer: false,
            any_audience: false,
            single_issuer_rules: false,
            transport: Transport::Bearer,
            anonymous: Anonymous::Refused,
            revocation: None,
            cache: 10_000,
            clock: SystemClock::shared(),
            realm: None,
            retry_after: Duration::from_secs(1),
            events: Events::default(),
            issuers: None,
            dpop: None,
            resource_metadata: None,
            _claims: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static, R> JwtLayer<T, R> {
    /// Uses `renderer` for refusals.
    pub fn with_rejection<R2: RenderRejection>(self, renderer: R2) -> JwtLayer<T, R2> {
        JwtLayer {
            config: self.config,
            renderer,
        }
    }

    /// Where this layer reads access tokens. A cookie is an ambient
    /// credential: endpoints outside the layer that accept it must refuse
    /// cross-site requests (the refresh crate's device endpoints do).
    #[must_use]
    pub fn transport(&self) -> &Transport {
        &self.config.verifier.transport
    }

    /// Reads the token of a request where this layer reads it (its
    /// token source: bearer header, cookie or header) and verifies it as
    /// the layer would: keys, claims rules, revocation, cache. For
    /// endpoints outside the layer that need the caller's claims (the
    /// refresh endpoints' device list).
    ///
    /// # Errors
    ///
    /// [`JwtErrorKind::Missing`](crate::JwtErrorKind::Missing) without a token (even for an optional
    /// layer), [`JwtErrorKind::InvalidRequest`](crate::JwtErrorKind::InvalidRequest) for a malformed credential
    /// header, [`JwtErrorKind::DpopBoundAsBearer`] for a token bound to a
    /// DPoP key (no proof is read here), otherwise why the token was
    /// refused.
    pub async fn verify_request(&self, headers: &HeaderMap) -> Result<Claims<T>, JwtError> {
        let claims = self.config.verifier.verify_request(headers).await?;
        if claims.registered().cnf.is_some() {
            return Err(JwtError::new(JwtErrorKind::DpopBoundAsBearer));
        }
        Ok(claims)
    }

    /// Verifies `token` as the layer would (for WebSocket handshakes,
    /// background jobs, tests): signature, claims, revocation. No DPoP
    /// proof is checked here: for a token bound to a key
    /// ([`RegisteredClaims::cnf_jkt`](crate::RegisteredClaims::cnf_jkt)),
    /// check one with [`DpopVerifier::check_bound`].
    ///
    /// # Errors
    ///
    /// [`JwtError`] says why the token was refused.
    pub async fn verify(&self, token: &str) -> Result<Claims<T>, JwtError> {
        self.config.verifier.verify(token).await
    }
}

impl<S, T, R: Clone> Layer<S> for JwtLayer<T, R> {
    type Service = Jwt<S, T, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Jwt::new(inner, Arc::clone(&self.config), self.renderer.clone())
    }
}

impl JwtLayer {
    /// Starts a builder that trusts several issuers, each with its own
    /// keys and rules, chosen by the token's `iss` before any key is
    /// looked up (see [`issuers`](crate::issuers)). The issuers' rules
    /// replace the builder's: calling [`JwtLayerBuilder::issuer`],
    /// [`audience`](JwtLayerBuilder::audience),
    /// [`validation`](JwtLayerBuilder::validation) or the `allow_any_*`
    /// waivers on it makes [`build`](JwtLayerBuilder::build) fail with
    /// [`JwtConfigError::RulesOutsideIssuerSet`] rather than leave a rule
    /// unused; everything else (token source, revocation, cache, clock,
    /// events, realm, DPoP) applies to every issuer.
    ///
    /// ```
    /// use portcullis_jwt::issuers::{Issuer, IssuerSet};
    /// use portcullis_jwt::{Algorithm, JwtLayer, KeySet, VerifyingKey};
    ///
    /// let key = |kid| VerifyingKey::hmac(Some(kid), Algorithm::HS256, &[7u8; 32]).unwrap();
    /// let set = IssuerSet::new([
    ///     Issuer::new("https://a.example.com", KeySet::new([key("a")]).unwrap()).audience("api"),
    ///     Issuer::new("https://b.example.com", KeySet::new([key("b")]).unwrap()).audience("api"),
    /// ])
    /// .unwrap();
    /// let jwt = JwtLayer::builder_issuers(set).build().unwrap();
    /// # let _ = jwt;
    /// ```
    pub fn builder_issuers(issuers: crate::issuers::IssuerSet) -> JwtLayerBuilder {
        let issuers = Arc::new(issuers);
        let mut builder = Self::builder(crate::issuers::Chosen(Arc::clone(&issuers)));
        builder.issuers = Some(issuers);
        builder
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;
    use crate::{Algorithm, JwtErrorKind, JwtIssuer, SigningKey};

    fn issuer(secret: u8) -> JwtIssuer {
        let key = SigningKey::hmac("k", Algorithm::HS256, &[secret; 32]).unwrap();
        JwtIssuer::builder(key)
            .issuer("https://iss")
            .audience("api")
            .build()
            .unwrap()
    }

    fn layer(issuer: &JwtIssuer, source: Transport) -> JwtLayer {
        JwtLayer::builder(issuer.keys())
            .issuer("https://iss")
            .audience("api")
            .transport(source)
            .optional()
            .build()
            .unwrap()
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    #[tokio::test]
    async fn verify_request_reads_where_the_layer_reads() {
        let iss = issuer(7);
        let token = iss.token("alice").mint().unwrap().token;
        let other = issuer(8).token("mallory").mint().unwrap().token;
        let bearer = format!("Bearer {token}");
        let x_token = HeaderName::from_static("x-token");
        // (source, headers, expected: Ok(subject) or Err(kind))
        let cases: Vec<(Transport, HeaderMap, Result<&str, JwtErrorKind>)> = vec![
            (
                Transport::Bearer,
                headers(&[("authorization", bearer.clone())]),
                Ok("alice"),
            ),
            (Transport::Bearer, headers(&[]), Err(JwtErrorKind::Missing)),
            (
                Transport::Bearer,
                headers(&[("authorization", "Basic abc".into())]),
                Err(JwtErrorKind::Missing),
            ),
            (
                Transport::Bearer,
                headers(&[("authorization", "Bearer a b".into())]),
                Err(JwtErrorKind::InvalidRequest),
            ),
            (
                Transport::Bearer,
                headers(&[
                    ("authorization", bearer.clone()),
                    ("authorization", bearer.clone()),
                ]),
                Err(JwtErrorKind::InvalidRequest),
            ),
            (
                Transport::Bearer,
                headers(&[("cookie", format!("at={token}"))]),
                Err(JwtErrorKind::Missing),
            ),
            (
                Transport::Cookie("at".into()),
                headers(&[("cookie", format!("at={token}"))]),
                Ok("alice"),
            ),
            (
                Transport::Cookie("at".into()),
                headers(&[("authorization", bearer.clone())]),
                Err(JwtErrorKind::Missing),
            ),
            (
                Transport::Header(x_token.clone()),
                headers(&[("x-token", token.clone())]),
                Ok("alice"),
            ),
            (
                Transport::Header(x_token),
                headers(&[("x-token", other)]),
                Err(JwtErrorKind::BadSignature),
            ),
        ];
        for (i, (source, headers, want)) in cases.into_iter().enumerate() {
            let got = layer(&iss, source).verify_request(&headers).await;
            match (got, want) {
                (Ok(c), Ok(sub)) => assert_eq!(c.subject(), Some(sub), "case {i}"),
                (Err(e), Err(kind)) => assert_eq!(e.kind(), kind, "case {i}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn builder_for_trusts_the_issuers_iss_and_aud_only() {
        let iss = issuer(7);
        let jwt = JwtLayer::builder_for(&iss).build().unwrap();
        let token = iss.token("alice").mint().unwrap().token;
        assert_eq!(jwt.verify(&token).await.unwrap().subject(), Some("alice"));
        // Same keys, another iss or aud: refused.
        let key = SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap();
        for (other_iss, other_aud, kind) in [
            ("https://other", "api", JwtErrorKind::BadIssuer),
            ("https://iss", "other-api", JwtErrorKind::BadAudience),
        ] {
            let other = JwtIssuer::builder(key.clone())
                .issuer(other_iss)
                .audience(other_aud)
                .build()
                .unwrap();
            let token = other.token("mallory").mint().unwrap().token;
            assert_eq!(jwt.verify(&token).await.unwrap_err().kind(), kind);
        }
    }
}
