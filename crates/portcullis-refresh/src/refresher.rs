//! `Refresher`: starts families (the typed [`Login`] builder), rotates,
//! revokes, lists devices. No HTTP here: the endpoints that speak HTTP
//! call these methods.
//!
//! Over 500 lines: every operation of the `Refresher` is in this one file,
//! with the builder that starts a family.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::events::{AuthEvent, AuthEventKind, EventContext};
use portcullis_core::lifetime::{Lifetimes, retry_on_conflict};
use portcullis_core::{
    ActiveSession, OriginCheck, SharedClock, StoreError, SystemClock, Timestamp,
};
use portcullis_jwt::dpop::{DpopPolicy, DpopProof};
use portcullis_jwt::revocation::RevocationStore;
use portcullis_jwt::{AccessToken, JwtIssuer, JwtLayer};
use serde_json::{Map, Value};

use crate::config::{RefreshConfig, RefreshConfigError};
use crate::error::{RefreshError, RefreshErrorKind};
use crate::family::{DeviceInfo, Family, Presented, RotateOutcome, Rotation};
use crate::store::RefreshStore;
use crate::token::{FamilyId, RefreshToken, RotationKey};

/// The source name of every event this crate emits.
const SOURCE: &str = "refresh";

/// Added to the `exp` bound of a revoked family's access tokens: a refresh
/// in flight when the family is revoked, and other instances' clocks.
const EXP_MARGIN: Duration = Duration::from_secs(30);

/// An access token and its refresh token, as login and refresh return them.
#[derive(Clone)]
pub struct TokenPair {
    /// The short-lived access JWT (carries `sid` and `ver`).
    pub access: AccessToken,
    /// The refresh token.
    pub refresh: RefreshToken,
    /// When the refresh family ends at the latest.
    pub refresh_expires_at: Timestamp,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access", &self.access)
            .field("refresh", &self.refresh)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

/// Issues access + refresh token pairs, rotates refresh tokens with reuse
/// detection, and revokes families, pushing every revocation into the JWT
/// revocation view so that live access tokens die at once.
///
/// The application's login handler checks credentials and starts a family
/// with [`Refresher::login`]; the [`RefreshLayer`](crate::RefreshLayer)
/// serves refresh, logout and device endpoints. Cheap to clone.
///
/// Its events ([`RefreshConfig::events`]) carry the route, client address
/// and trace id of the request when the handle knows the request: the
/// endpoints of the [`RefreshLayer`](crate::RefreshLayer) and
/// [`Login::reply`] do; in a handler of yours, call
/// [`for_request`](Self::for_request) first. Without it an operation's
/// events carry the user and device only.
#[derive(Clone)]
pub struct Refresher {
    pub(crate) inner: Arc<Inner>,
    /// The request the events of this handle belong to (empty when none,
    /// or when nothing listens).
    ctx: EventContext,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn RefreshStore>,
    pub(crate) issuer: JwtIssuer,
    pub(crate) revocation: Arc<dyn RevocationStore>,
    pub(crate) verifier: JwtLayer,
    pub(crate) config: RefreshConfig,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) key: RotationKey,
    pub(crate) clock: SharedClock,
    /// The cross-site check of cookie-borne requests.
    pub(crate) origin: OriginCheck,
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Refresher`].
#[must_use]
pub struct RefresherBuilder {
    store: Arc<dyn RefreshStore>,
    issuer: JwtIssuer,
    revocation: Arc<dyn RevocationStore>,
    verifier: JwtLayer,
    config: RefreshConfig,
    clock: SharedClock,
}

impl fmt::Debug for RefresherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefresherBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RefresherBuilder {
    /// Replaces the configuration.
    pub fn config(mut self, config: RefreshConfig) -> Self {
        self.config = config;
        self
    }

    /// Reads the time from `clock` (give the issuer and the verifier the
    /// same clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The refresher.
    ///
    /// # Errors
    ///
    /// [`RefreshConfigError`] for a configuration that cannot work.
    pub fn build(self) -> Result<Refresher, RefreshConfigError> {
        let lifetimes = self.config.validate()?;
        let key = match &self.config.rotation_key {
            Some(k) => k.clone(),
            None => RotationKey::generate().map_err(|_| RefreshConfigError::RotationKeyTooShort)?,
        };
        let mut origin = OriginCheck::new(
            &self.config.trusted_origins,
            self.config.public_origin.as_deref(),
        )
        .map_err(|e| RefreshConfigError::Origin(e.to_string()))?;
        // The site is `https` unless the refresh cookie is not `Secure`
        // (`insecure_dev_cookies`, plain-http development): then an
        // `Origin` with the `http` scheme is the site's own.
        if !self.config.cookie.is_secure() {
            origin = origin.insecure_http_site();
        }
        Ok(Refresher {
            ctx: EventContext::default(),
            inner: Arc::new(Inner {
                store: self.store,
                issuer: self.issuer,
                revocation: self.revocation,
                verifier: self.verifier,
                config: self.config,
                lifetimes,
                key,
                clock: self.clock,
                origin,
            }),
        })
    }
}

/// The claims the issuer and the refresher control: [`Login::claim`]
/// refuses them (the login's own setters set `roles`, `scope`, `amr` and
/// `acr`; `auth_time` is the login's time; `cnf` is the family's DPoP
/// key).
const RESERVED: [&str; 13] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "sid",
    "ver",
    "auth_time",
    "amr",
    "acr",
    "cnf",
];

/// What a request showed about the DPoP key of the family its refresh
/// token names, before anything is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// Not looked at (no DPoP configured) or no live family: the rotation
    /// answers.
    Unknown,
    /// The family is a bearer family.
    Unbound,
    /// The family is bound to this key (`jkt`), and the request's proof
    /// was signed by it; `next_nonce` as the proof's
    /// [`DpopProof::next_nonce`].
    Proven {
        /// The family's key thumbprint.
        jkt: String,
        /// The current server nonce, when the proof's was the previous.
        next_nonce: Option<String>,
    },
}

impl Binding {
    /// The server nonce to hand back with the answer, if any.
    pub(crate) fn next_nonce(&self) -> Option<&str> {
        match self {
            Self::Proven { next_nonce, .. } => next_nonce.as_deref(),
            _ => None,
        }
    }
}

/// A request's method, URI and headers: what a DPoP proof is checked
/// against.
pub(crate) type ProofRequest<'a> = (&'a http::Method, &'a http::Uri, &'a http::HeaderMap);

/// The `amr` of a login unless [`Login::methods`] names others.
const DEFAULT_METHODS: [&str; 1] = [portcullis_jwt::DEFAULT_AMR];

/// Splits family claims into the builder's typed setters and the rest.
/// The login's `auth_time`, `amr` and `acr` are copied as they were
/// stored at login; a reserved name of another shape (a family stored by
/// an older version) is left out rather than failing every refresh.
fn mint(issuer: &JwtIssuer, family: &Family, ver: u64) -> Result<AccessToken, RefreshError> {
    let mut t = issuer
        .token(family.user_id.clone())
        .sid(family.id.as_str())
        .ver(ver);
    let mut rest = Map::new();
    for (k, v) in &family.claims {
        match (k.as_str(), v) {
            ("roles", Value::Array(roles)) => {
                t = t.roles(roles.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            ("scope", Value::String(scope)) => t = t.scope(scope.clone()),
            ("auth_time", Value::Number(n)) => {
                if let Some(secs) = n.as_i64() {
                    t = t.auth_time(secs);
                }
            }
            ("amr", Value::Array(methods)) if !methods.is_empty() => {
                t = t.methods(methods.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            ("acr", Value::String(acr)) => t = t.acr(acr.clone()),
            (name, _) if RESERVED.contains(&name) || name == "roles" || name == "scope" => {}
            _ => {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    if !rest.is_empty() {
        t = t.claims(&rest);
    }
    if let Some(jkt) = &family.jkt {
        t = t.dpop_jkt(jkt.clone());
    }
    t.mint().map_err(|e| RefreshError::internal("mint", e))
}

impl Refresher {
    /// Starts a builder. `issuer` mints access tokens; `revocation` is the
    /// store whose view `verifier` (the app's `JwtLayer`) checks; `verifier`
    /// also authenticates the device endpoints.
    pub fn builder(
        store: impl RefreshStore,
        issuer: JwtIssuer,
        revocation: Arc<dyn RevocationStore>,
        verifier: JwtLayer,
    ) -> RefresherBuilder {
        RefresherBuilder {
            store: Arc::new(store),
            issuer,
            revocation,
            verifier,
            config: RefreshConfig::default(),
            clock: SystemClock::shared(),
        }
    }

    /// Like [`Refresher::builder`] for a store already behind an `Arc`.
    pub fn builder_arc(
        store: Arc<dyn RefreshStore>,
        issuer: JwtIssuer,
        revocation: Arc<dyn RevocationStore>,
        verifier: JwtLayer,
    ) -> RefresherBuilder {
        RefresherBuilder {
            store,
            issuer,
            revocation,
            verifier,
            config: RefreshConfig::default(),
            clock: SystemClock::shared(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RefreshConfig {
        &self.inner.config
    }

    /// This refresher, for the request whose `parts` are given: the events
    /// of every operation called on the returned handle carry the
    /// request's route, client address and trace id (read as the
    /// [`Events`](portcullis_core::events::Events) handle was built to).
    /// Nothing is read while nothing listens. Use it in the handlers that
    /// call [`login`](Self::login) with [`Login::issue`],
    /// [`password_changed`](Self::password_changed),
    /// [`revoke_user`](Self::revoke_user) or
    /// [`revoke_device`](Self::revoke_device).
    ///
    /// ```no_run
    /// # async fn change_password(refresher: portcullis_refresh::Refresher, parts: http::request::Parts) {
    /// // ... old password checked, new hash stored ...
    /// let ended = refresher.for_request(&parts).password_changed("alice").await;
    /// # let _ = ended; }
    /// ```
    #[must_use]
    pub fn for_request(&self, parts: &http::request::Parts) -> Self {
        self.with_context(&parts.extensions, &parts.headers)
    }

    /// [`for_request`](Self::for_request) from a request's extensions and
    /// headers.
    pub(crate) fn with_context(
        &self,
        extensions: &http::Extensions,
        headers: &http::HeaderMap,
    ) -> Self {
        let events = &self.inner.config.events;
        Self {
            inner: Arc::clone(&self.inner),
            ctx: if events.enabled() {
                events.context(extensions, headers)
            } else {
                EventContext::default()
            },
        }
    }

    /// Sets the route of this handle's events to `prefix` + `template`
    /// when the route reader found none (and something listens).
    pub(crate) fn route_fallback(&mut self, template: &str) {
        if self.ctx.route.is_none() && self.inner.config.events.enabled() {
            self.ctx.route = Some(format!("{}{template}", self.inner.config.prefix).into());
        }
    }

    /// The request context of this handle's events.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) const fn event_context(&self) -> &EventContext {
        &self.ctx
    }

    /// Emits `kind` for `user` and `device`, with this handle's request.
    pub(crate) fn emit(&self, kind: AuthEventKind, user: Option<&str>, device: Option<&str>) {
        self.inner.config.events.emit(|| {
            let event = AuthEvent::new(SOURCE, kind)
                .context(&self.ctx)
                .maybe_user(user);
            match device {
                Some(d) => event.device(d),
                None => event,
            }
        });
    }

    /// Maps a failure of `store` during `operation` to the 503 error, and
    /// emits `store_unavailable`.
    fn store_failed(
        &self,
        store: &'static str,
        operation: &'static str,
    ) -> impl FnOnce(StoreError) -> RefreshError + '_ {
        move |e| {
            self.emit(
                AuthEventKind::StoreUnavailable { store, operation },
                None,
                None,
            );
            RefreshError::store(e)
        }
    }

    /// Emits `family_expired` when `token`, presented to log out, names a
    /// family that is still stored but past its idle or absolute deadline,
    /// and `token` is one the family issued (a guessed secret emits
    /// nothing). Only while something listens: the probe is one more store
    /// read, on a request that found no live family. Stores that delete
    /// expired families at their deadline (Redis expiry) have nothing to
    /// find.
    async fn expired_probe(&self, token: &RefreshToken, now: Timestamp) {
        if !self.inner.config.events.enabled() {
            return;
        }
        if let Ok(Some(fam)) = self.inner.store.get(token.family(), Timestamp::EPOCH).await {
            if fam.is_expired(now)
                && fam.classify(&token.digest(), now, self.inner.config.grace) != Presented::Unknown
            {
                self.emit(
                    AuthEventKind::FamilyExpired,
                    Some(&fam.user_id),
                    Some(fam.id.as_str()),
                );
            }
        }
    }

    /// Starts a login for `user_id`, after the application checked the
    /// credentials: set the access tokens' roles, scope and other claims,
    /// then finish with [`Login::issue`] (a [`TokenPair`]) or
    /// [`Login::reply`] (the HTTP answer, with the cookie).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use portcullis_jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
    /// # use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
    /// # use portcullis_refresh::{MemoryRefreshStore, Refresher};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let revocations = Arc::new(MemoryRevocationStore::new());
    /// # let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    /// #     .issuer("https://app.example.com").audience("app").build().unwrap();
    /// # let jwt = JwtLayer::builder_for(&issuer).revocation(revocations.view()).build().unwrap();
    /// # let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt.clone())
    /// #     .build().unwrap();
    /// let pair = refresher
    ///     .login("alice")
    ///     .roles(["admin"])
    ///     .claim("tenant", "acme")
    ///     .issue()
    ///     .await
    ///     .unwrap();
    /// let claims = jwt.verify(&pair.access.token).await.unwrap();
    /// assert_eq!(claims.subject(), Some("alice"));
    /// assert_eq!(claims.registered().roles, Some(vec!["admin".to_owned()]));
    /// # }
    /// ```
    pub fn login(&self, user_id: impl Into<String>) -> Login {
        Login {
            refresher: self.clone(),
            user_id: user_id.into(),
            claims: Map::new(),
            device: DeviceInfo::default(),
            methods: DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            acr: None,
            refused: false,
            jkt: None,
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn ver(&self, user: &str) -> u64 {
        self.inner.revocation.view().user_version(user)
    }

    /// Starts a family for `user_id`: a new refresh token and an access
    /// token carrying the family as `sid`; `claims` go into every access
    /// token of the family. A login beyond the per-user cap logs the
    /// user's oldest devices out.
    async fn start_family(
        &self,
        user_id: &str,
        claims: &Map<String, Value>,
        device: &DeviceInfo,
        jkt: Option<String>,
    ) -> Result<TokenPair, RefreshError> {
        let c = &self.inner.config;
        let now = self.now();
        // The login's time: copied unchanged into every access token of
        // the family, refreshes included.
        let mut claims = claims.clone();
        claims.insert(
            "auth_time".into(),
            Value::from(i64::try_from(now.secs()).unwrap_or(i64::MAX)),
        );
        let claims = &claims;
        let (family, token, evicted) = retry_on_conflict(|| async {
            let id = FamilyId::generate().map_err(|e| RefreshError::internal("random", e))?;
            let token =
                RefreshToken::first(id.clone()).map_err(|e| RefreshError::internal("random", e))?;
            let family = Family {
                id,
                user_id: user_id.to_owned(),
                claims: claims.clone(),
                device: device.clone(),
                created_at: now,
                last_used_at: now,
                deadlines: self.inner.lifetimes.start(now),
                current: token.digest(),
                previous: None,
                history: Vec::new(),
                rotations: 0,
                jkt: jkt.clone(),
            };
            let evicted = self
                .inner
                .store
                .create(&family, c.max_families)
                .await
                .map_err(RefreshError::store)?;
            Ok((family, token, evicted))
        })
        .await
        .inspect_err(|e: &RefreshError| {
            if e.kind() == RefreshErrorKind::Unavailable {
                self.emit(
                    AuthEventKind::StoreUnavailable {
                        store: "refresh",
                        operation: "create",
                    },
                    None,
                    None,
                );
            }
        })?;
        for gone in &evicted {
            portcullis_core::event!(debug, reason = "family-evicted", family = %gone.id, "family cap: oldest family logged out");
            self.emit(
                AuthEventKind::SessionEvicted,
                Some(&gone.user_id),
                Some(gone.id.as_str()),
            );
            // The login itself succeeded; on failure (logged) an evicted
            // device's access token lives until its `exp`.
            let _ = self.kill_access_tokens(&gone.id).await;
        }
        let access = mint(&self.inner.issuer, &family, self.ver(user_id))?;
        self.emit(
            AuthEventKind::LoginSucceeded,
            Some(user_id),
            Some(family.id.as_str()),
        );
        Ok(TokenPair {
            access,
            refresh: token,
            refresh_expires_at: family.expires_at(),
        })
    }

    /// Rotates `token`: a new pair, or an error. A repeat of the previous
    /// token inside the grace window gets the same successor; anything
    /// older, or later, revokes the family (and its access tokens) and
    /// emits a `refresh_reuse_detected` event: one per family, however
    /// often the reused token is replayed while the family's access
    /// tokens stay revoked (a store that keeps a reused family as a
    /// tombstone answers reuse to every replay).
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::InvalidGrant`] for an unknown, expired, revoked or
    /// reused token; [`RefreshErrorKind::Unavailable`] when the store fails
    /// (nothing consumed).
    ///
    /// A family bound to a DPoP key ([`RefreshConfig::dpop`]) cannot be
    /// refreshed here, without a request to carry the proof:
    /// [`RefreshErrorKind::DpopProof`] (reason `dpop-missing`), nothing
    /// rotated. The [`RefreshLayer`](crate::RefreshLayer)'s endpoint
    /// checks the proof.
    pub async fn refresh(
        &self,
        token: &RefreshToken,
        device: DeviceInfo,
    ) -> Result<TokenPair, RefreshError> {
        let binding = self.dpop_binding(token, None, true).await?;
        self.rotate(token, device, &binding).await
    }

    /// What `token`'s family is bound to, and whether the request proves
    /// possession of its key, before anything is rotated or ended. Only
    /// with [`RefreshConfig::dpop`]: one more store read.
    ///
    /// A bound family needs a proof by its key (`request` `None`: no
    /// proof); with `refreshing` under [`DpopPolicy::Required`], an
    /// unbound family is refused too.
    pub(crate) async fn dpop_binding(
        &self,
        token: &RefreshToken,
        request: Option<ProofRequest<'_>>,
        refreshing: bool,
    ) -> Result<Binding, RefreshError> {
        let Some((verifier, policy)) = &self.inner.config.dpop else {
            return Ok(Binding::Unknown);
        };
        let Some(fam) = self
            .inner
            .store
            .get(token.family(), self.now())
            .await
            .map_err(self.store_failed("refresh", "get"))?
        else {
            return Ok(Binding::Unknown);
        };
        match (&fam.jkt, request) {
            (Some(jkt), Some((method, uri, headers))) => verifier
                .check_bound(method, uri, headers, None, jkt)
                .await
                .map(|proof| Binding::Proven {
                    jkt: jkt.clone(),
                    next_nonce: proof.next_nonce().map(str::to_owned),
                })
                .map_err(RefreshError::dpop),
            (Some(_), None) => Err(RefreshError::new(
                RefreshErrorKind::DpopProof,
                "dpop-missing",
            )),
            (None, _) if refreshing && *policy == DpopPolicy::Required => Err(RefreshError::new(
                RefreshErrorKind::InvalidGrant,
                "dpop-unbound-family",
            )),
            (None, _) => Ok(Binding::Unbound),
        }
    }

    /// Rotates `token` (its binding checked by
    /// [`dpop_binding`](Self::dpop_binding)).
    pub(crate) async fn rotate(
        &self,
        token: &RefreshToken,
        device: DeviceInfo,
        binding: &Binding,
    ) -> Result<TokenPair, RefreshError> {
        let c = &self.inner.config;
        let now = self.now();
        let successor = token.successor(&self.inner.key);
        let rotation = Rotation {
            family: token.family().clone(),
            presented: token.digest(),
            successor: successor.digest(),
            now,
            grace: c.grace,
            idle: self.inner.lifetimes.idle(),
            history_limit: c.history_limit,
            device,
        };
        match self
            .inner
            .store
            .rotate(&rotation)
            .await
            .map_err(self.store_failed("refresh", "rotate"))?
        {
            RotateOutcome::Rotated(family) | RotateOutcome::Repeat(family) => {
                // A bound family whose proof was not checked (the DPoP
                // configuration is gone): no token leaves, fail closed.
                if let Some(jkt) = &family.jkt {
                    if !matches!(binding, Binding::Proven { jkt: proven, .. } if proven == jkt) {
                        portcullis_core::event!(
                            error,
                            reason = "dpop-unverified",
                            family = %family.id,
                            "a DPoP-bound family was refreshed without a DPoP verifier"
                        );
                        return Err(RefreshError::new(
                            RefreshErrorKind::DpopProof,
                            "dpop-unverified",
                        ));
                    }
                }
                let access = mint(&self.inner.issuer, &family, self.ver(&family.user_id))?;
                self.emit(
                    AuthEventKind::RefreshRotated,
                    Some(&family.user_id),
                    Some(family.id.as_str()),
                );
                Ok(TokenPair {
                    access,
                    refresh: successor,
                    refresh_expires_at: family.expires_at(),
                })
            }
            RotateOutcome::Reused(family) => {
                // The family is dead in the store (deleted, or kept as a
                // tombstone that answers reuse again, as the SQL stores
                // do): a failure to revoke its access tokens is only logged.
                // A family whose access tokens are revoked already was
                // detected by an earlier replay: one detection per family,
                // however often a stolen token is replayed.
                let detected_before = self
                    .inner
                    .revocation
                    .view()
                    .is_session_revoked(family.id.as_str());
                let _ = self.kill_access_tokens(&family.id).await;
                if !detected_before {
                    self.reuse_event(&family);
                }
                Err(RefreshError::new(RefreshErrorKind::InvalidGrant, "reused"))
            }
            RotateOutcome::KeyMismatch => {
                portcullis_core::event!(
                    error,
                    reason = "rotation-key-mismatch",
                    "refresh instances disagree on the rotation key"
                );
                Err(RefreshError::new(
                    RefreshErrorKind::Conflict,
                    "rotation-key-mismatch",
                ))
            }
            RotateOutcome::Expired(family) => {
                self.emit(
                    AuthEventKind::FamilyExpired,
                    Some(&family.user_id),
                    Some(family.id.as_str()),
                );
                Err(RefreshError::new(RefreshErrorKind::InvalidGrant, "invalid"))
            }
            _ => Err(RefreshError::new(RefreshErrorKind::InvalidGrant, "invalid")),
        }
    }

    /// Emits `refresh_reuse_detected` for `family`.
    fn reuse_event(&self, family: &Family) {
        portcullis_core::event!(warn, reason = "reuse-detected", family = %family.id, "refresh token reuse: family revoked");
        self.emit(
            AuthEventKind::RefreshReuseDetected,
            Some(&family.user_id),
            Some(family.id.as_str()),
        );
    }

    /// The `expires_at` of a revoked family's entry in the revocation
    /// store: a bound on the `exp` of every access token minted for the
    /// family, now + the issuer's lifetime, plus [`EXP_MARGIN`] for a
    /// refresh still in flight and for clocks of other instances running
    /// ahead. Revocation stores keep entries
    /// [`MAX_LEEWAY`](portcullis_jwt::MAX_LEEWAY) past `expires_at`, the
    /// most leeway a verifier grants after `exp`.
    fn revocation_until(&self) -> i64 {
        let now = i64::try_from(self.now().secs()).unwrap_or(i64::MAX);
        let margin = self.inner.issuer.lifetime() + EXP_MARGIN;
        now.saturating_add(i64::try_from(margin.as_secs()).unwrap_or(i64::MAX))
    }

    /// Puts `sid` in the revocation view until every access token of the
    /// family has expired, leeway included. Logs a failure; a caller whose
    /// answer the failure becomes (503) maps it with
    /// [`store_failed`](Self::store_failed), which emits
    /// `store_unavailable`; a best-effort caller only has the log.
    async fn kill_access_tokens(&self, sid: &FamilyId) -> Result<(), StoreError> {
        self.inner
            .revocation
            .revoke_session(sid.as_str(), self.revocation_until())
            .await
            .inspect_err(|_| {
                portcullis_core::event!(error, reason = "revocation-push-failed", family = %sid, "could not push the family's revocation to the view");
            })
    }

    /// Ends `family`: its access tokens are revoked first, then the family
    /// is deleted, so that a failure at either step leaves the family in
    /// place and a retry with the same token does the whole job again.
    async fn end_family(&self, family: &Family) -> Result<(), RefreshError> {
        self.kill_access_tokens(&family.id)
            .await
            .map_err(self.store_failed("revocation", "revoke_session"))?;
        self.inner
            .store
            .revoke(&family.id)
            .await
            .map_err(self.store_failed("refresh", "revoke"))?;
        Ok(())
    }

    /// Ends the family of `token` (log out this device): its refresh token
    /// and its live access tokens die at once. An unknown token is not an
    /// error (logout is idempotent).
    ///
    /// A token that was already rotated (outside the grace window) is
    /// reuse, wherever it is presented: the family is ended all the same
    /// (the newest token too, which a thief may hold) and
    /// a `refresh_reuse_detected` event is emitted.
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::Unavailable`] when the refresh store or the
    /// revocation store fails: nothing is reported done that was not, and
    /// a retry with the same token finishes the job.
    pub async fn logout(&self, token: &RefreshToken) -> Result<(), RefreshError> {
        match self.classify(token).await? {
            Some((fam, Presented::Current | Presented::InGrace)) => {
                self.end_family(&fam).await?;
                self.emit(
                    AuthEventKind::Logout,
                    Some(&fam.user_id),
                    Some(fam.id.as_str()),
                );
                Ok(())
            }
            Some((fam, Presented::Reused)) => {
                self.end_family(&fam).await?;
                self.reuse_event(&fam);
                Ok(())
            }
            Some((_, Presented::Unknown)) => Ok(()),
            None => {
                self.expired_probe(token, self.now()).await;
                Ok(())
            }
        }
    }

    /// Ends every family of `token`'s user and bumps the user's token
    /// version, so that every live access token of the user dies at once;
    /// returns how many devices were logged out.
    ///
    /// A token that was already rotated (outside the grace window) is
    /// reuse: the user is logged out everywhere all the same and
    /// a `refresh_reuse_detected` event is emitted.
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::InvalidGrant`] for an invalid token;
    /// [`RefreshErrorKind::Unavailable`] when a store fails (a retry with
    /// the same token finishes the job).
    pub async fn logout_everywhere(&self, token: &RefreshToken) -> Result<usize, RefreshError> {
        match self.classify(token).await? {
            Some((fam, Presented::Current | Presented::InGrace)) => {
                let n = self.end_user(&fam.user_id).await?;
                self.emit(
                    AuthEventKind::LogoutEverywhere,
                    Some(&fam.user_id),
                    Some(fam.id.as_str()),
                );
                Ok(n)
            }
            Some((fam, Presented::Reused)) => {
                let n = self.end_user(&fam.user_id).await?;
                self.reuse_event(&fam);
                Ok(n)
            }
            Some((_, Presented::Unknown)) => {
                Err(RefreshError::new(RefreshErrorKind::InvalidGrant, "invalid"))
            }
            None => {
                self.expired_probe(token, self.now()).await;
                Err(RefreshError::new(RefreshErrorKind::InvalidGrant, "invalid"))
            }
        }
    }

    /// Ends every family of `user_id` and bumps the user's token version
    /// (an admin's "log this user out everywhere", or after a password
    /// change).
    ///
    /// The version is bumped first, so that a failure of the refresh store
    /// leaves the families in place for a retry; the families' `sid`s are
    /// then revoked too, which covers an access token minted by a refresh
    /// racing with this call.
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::Unavailable`] when a store fails.
    ///
    /// Emits `logout_everywhere` for the user.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, RefreshError> {
        let n = self.end_user(user_id).await?;
        self.emit(AuthEventKind::LogoutEverywhere, Some(user_id), None);
        Ok(n)
    }

    /// [`revoke_user`](Self::revoke_user) without its event.
    async fn end_user(&self, user_id: &str) -> Result<usize, RefreshError> {
        self.inner
            .revocation
            .revoke_user(user_id)
            .await
            .map_err(self.store_failed("revocation", "revoke_user"))?;
        let gone = self
            .inner
            .store
            .revoke_user(user_id, None)
            .await
            .map_err(self.store_failed("refresh", "revoke_user"))?;
        for fam in &gone {
            // Every token minted before the version bump is dead already;
            // a failure here is logged.
            let _ = self.kill_access_tokens(&fam.id).await;
        }
        Ok(gone.len())
    }

    /// The refresh and access-token half of a password change, in one
    /// call: ends every refresh family of the user (no device can mint a
    /// new access token from then on), then bumps the user's token version
    /// (every live access token of the user is refused at once, on every
    /// instance, through the revocation view), then revokes the ended
    /// families' `sid`s (an access token that a refresh racing with this
    /// call minted after the bump). Returns how many devices were logged
    /// out.
    ///
    /// Call it after storing the new password hash, before ending the
    /// user's other cookie sessions. The device that changed the password
    /// is logged out too: answer it with a new login
    /// ([`Refresher::login`]), whose tokens carry the new version and a
    /// fresh `auth_time`.
    ///
    /// Unlike [`revoke_user`](Self::revoke_user), every step must succeed:
    /// a failure at any step is an error (answer 503), and each step
    /// leaves the user more logged out, never less. Until the version bump
    /// has succeeded the caller's access token still works, so the client
    /// can simply retry; a retry bumps the version again, which also kills
    /// whatever a racing refresh minted, and finishes the job.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use portcullis_jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
    /// # use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
    /// # use portcullis_refresh::{MemoryRefreshStore, Refresher};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let revocations = Arc::new(MemoryRevocationStore::new());
    /// # let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    /// #     .issuer("https://app.example.com").audience("app").build().unwrap();
    /// # let jwt = JwtLayer::builder_for(&issuer).revocation(revocations.view()).build().unwrap();
    /// # let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt.clone())
    /// #     .build().unwrap();
    /// let phone = refresher.login("alice").issue().await.unwrap();
    /// let laptop = refresher.login("alice").issue().await.unwrap();
    /// // On the laptop, alice has entered her old and new passwords; the
    /// // new hash is stored.
    /// assert_eq!(refresher.password_changed("alice").await.unwrap(), 2);
    /// let fresh = refresher.login("alice").issue().await.unwrap();
    /// assert!(jwt.verify(&phone.access.token).await.is_err());
    /// assert!(jwt.verify(&laptop.access.token).await.is_err());
    /// assert!(jwt.verify(&fresh.access.token).await.is_ok());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::Unavailable`] when the refresh store or the
    /// revocation store fails at any step (answer 503; retry).
    pub async fn password_changed(&self, user_id: &str) -> Result<usize, RefreshError> {
        let gone = self
            .inner
            .store
            .revoke_user(user_id, None)
            .await
            .map_err(self.store_failed("refresh", "revoke_user"))?;
        self.inner
            .revocation
            .revoke_user(user_id)
            .await
            .map_err(self.store_failed("revocation", "revoke_user"))?;
        let mut outcome = Ok(gone.len());
        for fam in &gone {
            // Every family is tried; the first failure is the answer.
            if let Err(e) = self.kill_access_tokens(&fam.id).await {
                if outcome.is_ok() {
                    outcome = Err(self.store_failed("revocation", "revoke_session")(e));
                }
            }
        }
        portcullis_core::event!(
            debug,
            reason = "password-changed",
            families = gone.len(),
            "every refresh family of the user ended, the token version bumped"
        );
        if outcome.is_ok() {
            self.emit(AuthEventKind::PasswordChanged, Some(user_id), None);
        }
        outcome
    }

    /// The live family of `token` and what the token is to it.
    async fn classify(
        &self,
        token: &RefreshToken,
    ) -> Result<Option<(Family, Presented)>, RefreshError> {
        let now = self.now();
        let fam = self
            .inner
            .store
            .get(token.family(), now)
            .await
            .map_err(self.store_failed("refresh", "get"))?;
        Ok(fam.map(|fam| {
            let presented = fam.classify(&token.digest(), now, self.inner.config.grace);
            (fam, presented)
        }))
    }

    /// The user's devices; `current` marks the caller's.
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::Unavailable`] when the store fails.
    pub async fn devices(
        &self,
        user_id: &str,
        current: Option<&str>,
    ) -> Result<Vec<ActiveSession>, RefreshError> {
        let mut list: Vec<ActiveSession> = self
            .inner
            .store
            .list_user(user_id, self.now())
            .await
            .map_err(self.store_failed("refresh", "list_user"))?
            .into_iter()
            .map(|f| ActiveSession {
                current: Some(f.id.as_str()) == current,
                id: f.id.to_string(),
                created_at: f.created_at,
                last_seen: f.last_used_at,
                expires_at: f.expires_at(),
                user_agent: f.device.user_agent,
                ip: f.device.ip,
            })
            .collect();
        list.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(list)
    }

    /// Ends one of `user_id`'s devices.
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::NotFound`] when the user has no such device (another
    /// user's device is never touched); [`RefreshErrorKind::Unavailable`]
    /// when a store fails (the device is then still there: retry).
    pub async fn revoke_device(&self, user_id: &str, family_id: &str) -> Result<(), RefreshError> {
        let not_found = || RefreshError::new(RefreshErrorKind::NotFound, "no-such-device");
        let id = FamilyId::parse(family_id).ok_or_else(not_found)?;
        let fam = self
            .inner
            .store
            .get(&id, self.now())
            .await
            .map_err(self.store_failed("refresh", "get"))?
            .ok_or_else(not_found)?;
        if fam.user_id != user_id {
            return Err(not_found());
        }
        self.end_family(&fam).await?;
        self.emit(
            AuthEventKind::DeviceRevoked,
            Some(user_id),
            Some(fam.id.as_str()),
        );
        Ok(())
    }
}

/// A login being started: the claims its access tokens will carry, then
/// [`Login::issue`] or [`Login::reply`]. Built by [`Refresher::login`].
///
/// Every access token of the family carries the login's `auth_time` (the
/// time of this login, unchanged by refreshes), `amr` (default `["pwd"]`,
/// [`Login::methods`]) and, if set, `acr` ([`Login::acr`]), which
/// [`RequireFreshAuthLayer`](portcullis_jwt::RequireFreshAuthLayer)
/// checks. Step-up is a new login: a new family with a new `auth_time`
/// (families cannot change their claims).
#[must_use = "a login does nothing until issued or replied"]
pub struct Login {
    pub(crate) refresher: Refresher,
    pub(crate) user_id: String,
    pub(crate) claims: Map<String, Value>,
    pub(crate) device: DeviceInfo,
    methods: Vec<String>,
    acr: Option<String>,
    /// A custom claim set a reserved name: the login is refused.
    refused: bool,
    /// The DPoP key thumbprint the family is bound to.
    pub(crate) jkt: Option<String>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user_id", &self.user_id)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("methods", &self.methods)
            .field("acr", &self.acr)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// The access tokens' `roles` (replaces earlier roles).
    pub fn roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        let roles = roles.into_iter().map(|r| Value::String(r.into())).collect();
        self.claims.insert("roles".into(), Value::Array(roles));
        self
    }

    /// The access tokens' `scope` (space-separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.claims
            .insert("scope".into(), Value::String(scope.into()));
        self
    }

    /// How the user authenticated, as RFC 8176 method names (`pwd`,
    /// `otp`, `mfa`, `hwk`, ...; default `["pwd"]`): the access tokens'
    /// `amr`. Replaces earlier methods; an empty list makes the login fail.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use portcullis_jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
    /// # use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
    /// # use portcullis_refresh::{MemoryRefreshStore, Refresher};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let revocations = Arc::new(MemoryRevocationStore::new());
    /// # let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    /// #     .issuer("https://app.example.com").audience("app").build().unwrap();
    /// # let jwt = JwtLayer::builder_for(&issuer).revocation(revocations.view()).build().unwrap();
    /// # let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt.clone())
    /// #     .build().unwrap();
    /// // The password and a one-time code were checked.
    /// let pair = refresher.login("alice").methods(["pwd", "otp"]).acr("mfa").issue().await.unwrap();
    /// let claims = jwt.verify(&pair.access.token).await.unwrap();
    /// assert_eq!(claims.registered().amr, Some(vec!["pwd".to_owned(), "otp".to_owned()]));
    /// assert_eq!(claims.registered().acr.as_deref(), Some("mfa"));
    /// assert!(claims.registered().auth_time.is_some());
    ///
    /// let none: [&str; 0] = [];
    /// assert!(refresher.login("alice").methods(none).issue().await.is_err());
    /// assert_eq!(refresher.devices("alice", None).await.unwrap().len(), 1);
    /// # }
    /// ```
    pub fn methods<I, M>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.methods = methods.into_iter().map(Into::into).collect();
        self
    }

    /// The authentication context class the login satisfied: the access
    /// tokens' `acr`.
    pub fn acr(mut self, acr: impl Into<String>) -> Self {
        self.acr = Some(acr.into());
        self
    }

    /// A custom claim copied into every access token of the family (fixed
    /// at login). The names the issuer controls (`iss`, `sub`, `aud`,
    /// `exp`, `nbf`, `iat`, `jti`, `sid`, `ver`, `cnf`) and the login's own
    /// (`auth_time`, `amr`, `acr`), or `roles` that is not an array of
    /// strings or `scope` that is not a string, make the login fail before
    /// any family is stored ([`RefreshErrorKind::Internal`], reason
    /// `reserved-claim`): data copied from a request into custom claims
    /// cannot forge a fresh login.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let (name, value) = (name.into(), value.into());
        let allowed = match name.as_str() {
            "roles" => value
                .as_array()
                .is_some_and(|roles| roles.iter().all(Value::is_string)),
            "scope" => value.is_string(),
            other => !RESERVED.contains(&other),
        };
        if allowed {
            self.claims.insert(name, value);
        } else {
            self.refused = true;
        }
        self
    }

    /// Binds the family to the key of `proof`, a DPoP proof the caller
    /// checked (with [`DpopVerifier::check`](portcullis_jwt::dpop::DpopVerifier::check)
    /// at the login route): every access token of the family carries its
    /// thumbprint as `cnf.jkt`, and every refresh needs a proof by that
    /// key (see [`RefreshConfig::dpop`], which the refresher needs for
    /// that). [`Login::reply`] checks the login request's proof itself.
    pub fn dpop(mut self, proof: &DpopProof) -> Self {
        self.jkt = Some(proof.jkt().to_owned());
        self
    }

    /// The device shown in device lists (user agent, address).
    /// [`Login::reply`] reads it from the request instead.
    pub fn device(mut self, device: DeviceInfo) -> Self {
        self.device = device;
        self
    }

    /// Starts the family: the first refresh token and access token, for
    /// callers that answer themselves (not over HTTP, or a custom body).
    ///
    /// # Errors
    ///
    /// [`RefreshErrorKind::Unavailable`] when the store fails,
    /// [`RefreshErrorKind::Internal`] when signing or randomness fails, or
    /// for a reserved custom claim or an empty list of methods (then
    /// nothing is stored); [`RefreshErrorKind::DpopProof`] (reason
    /// `dpop-missing`) under [`DpopPolicy::Required`] without
    /// [`Login::dpop`].
    pub async fn issue(self) -> Result<TokenPair, RefreshError> {
        if self.refused {
            return Err(RefreshError::new(
                RefreshErrorKind::Internal,
                "reserved-claim",
            ));
        }
        if self.methods.is_empty() {
            return Err(RefreshError::new(RefreshErrorKind::Internal, "no-method"));
        }
        let required = matches!(
            self.refresher.inner.config.dpop,
            Some((_, DpopPolicy::Required))
        );
        if required && self.jkt.is_none() {
            return Err(RefreshError::new(
                RefreshErrorKind::DpopProof,
                "dpop-missing",
            ));
        }
        let mut claims = self.claims;
        let methods = self.methods.into_iter().map(Value::String).collect();
        claims.insert("amr".into(), Value::Array(methods));
        if let Some(acr) = self.acr {
            claims.insert("acr".into(), Value::String(acr));
        }
        self.refresher
            .start_family(&self.user_id, &claims, &self.device, self.jkt)
            .await
    }
}
