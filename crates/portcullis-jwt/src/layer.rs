//! `JwtLayer`: verifies an access token before the inner service runs.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response};
use portcullis_core::cookie::find_cookie;
use portcullis_core::rejection::is_grpc;
use portcullis_core::request::{bearer_token, single_header};
use portcullis_core::{ProblemJson, RenderRejection, ResponseBody, SharedClock, SystemClock};
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;

use crate::cache::TokenCache;
use crate::claims::{Claims, NoCustomClaims};
use crate::error::{JwtError, JwtErrorKind};
use crate::revocation::RevocationView;
use crate::source::KeySource;
use crate::verify::{Prepared, Step, Validation, verify};

/// Where the layer reads the token. Never from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (the default).
    Bearer,
    /// A cookie of this name (prefix included).
    Cookie(String),
    /// Any header carrying the bare token (gRPC metadata is a header too).
    Header(HeaderName),
}

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
}

pub(crate) struct Shared<T> {
    keys: Arc<dyn KeySource>,
    validation: Validation,
    source: TokenSource,
    optional: bool,
    revocation: Option<RevocationView>,
    cache: Option<TokenCache<T>>,
    prepared: Prepared,
    clock: SharedClock,
    realm: Option<String>,
    retry_after: Duration,
}

/// Builds a [`JwtLayer`]. See [`JwtLayer::builder`].
#[must_use]
pub struct JwtLayerBuilder<T = NoCustomClaims> {
    keys: Arc<dyn KeySource>,
    validation: Validation,
    any_issuer: bool,
    any_audience: bool,
    source: TokenSource,
    optional: bool,
    revocation: Option<RevocationView>,
    cache: usize,
    clock: SharedClock,
    realm: Option<String>,
    retry_after: Duration,
    _claims: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for JwtLayerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtLayerBuilder")
            .field("keys", &self.keys)
            .field("validation", &self.validation)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<T> JwtLayerBuilder<T> {
    /// Replaces the validation rules.
    pub fn validation(mut self, validation: Validation) -> Self {
        self.validation = validation;
        self
    }

    /// Trusts tokens issued by `issuer` (shortcut for [`Validation::issuer`]).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.validation = self.validation.issuer(issuer);
        self
    }

    /// This service's audience (shortcut for [`Validation::audience`]).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.validation = self.validation.audience(audience);
        self
    }

    /// **Weaker.** Accepts tokens from any issuer the keys verify. Only for
    /// key sets that a single issuer owns.
    pub const fn allow_any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// **Weaker.** Accepts tokens for any audience: a token minted for
    /// another service is then accepted here.
    pub const fn allow_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Reads the token from `source` instead of `Authorization: Bearer`.
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }

    /// Lets requests without a token through, without claims. A token that
    /// is present and invalid is still refused.
    pub const fn optional(mut self) -> Self {
        self.optional = true;
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

    /// `Retry-After` of 503 answers (keys unavailable).
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Decodes the application's claims as `U` (any `DeserializeOwned`).
    pub fn claims<U>(self) -> JwtLayerBuilder<U> {
        JwtLayerBuilder {
            keys: self.keys,
            validation: self.validation,
            any_issuer: self.any_issuer,
            any_audience: self.any_audience,
            source: self.source,
            optional: self.optional,
            revocation: self.revocation,
            cache: self.cache,
            clock: self.clock,
            realm: self.realm,
            retry_after: self.retry_after,
            _claims: PhantomData,
        }
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`JwtConfigError`] when no issuer or audience is configured and not
    /// explicitly waived, or the size limit is zero.
    pub fn build(self) -> Result<JwtLayer<T>, JwtConfigError> {
        if !self.validation.has_issuer() && !self.any_issuer {
            return Err(JwtConfigError::IssuerNotConfigured);
        }
        if !self.validation.has_audience() && !self.any_audience {
            return Err(JwtConfigError::AudienceNotConfigured);
        }
        if self.validation.max_len == 0 {
            return Err(JwtConfigError::MaxLen);
        }
        Ok(JwtLayer {
            shared: Arc::new(Shared {
                keys: self.keys,
                validation: self.validation,
                source: self.source,
                optional: self.optional,
                revocation: self.revocation,
                cache: (self.cache > 0).then(|| TokenCache::new(self.cache)),
                prepared: Prepared::default(),
                clock: self.clock,
                realm: self.realm,
                retry_after: self.retry_after,
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
    shared: Arc<Shared<T>>,
    renderer: R,
}

impl<T, R: Clone> Clone for JwtLayer<T, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            renderer: self.renderer.clone(),
        }
    }
}

impl<T, R> fmt::Debug for JwtLayer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtLayer")
            .field("keys", &self.shared.keys)
            .field("validation", &self.shared.validation)
            .field("source", &self.shared.source)
            .field("optional", &self.shared.optional)
            .finish_non_exhaustive()
    }
}

impl JwtLayer {
    /// Starts a builder over a key source (a [`KeySet`](crate::KeySet),
    /// [`SharedKeys`](crate::SharedKeys), a remote JWKS, or yours).
    pub fn builder(keys: impl KeySource) -> JwtLayerBuilder {
        JwtLayerBuilder {
            keys: Arc::new(keys),
            validation: Validation::default(),
            any_issuer: false,
            any_audience: false,
            source: TokenSource::Bearer,
            optional: false,
            revocation: None,
            cache: 10_000,
            clock: SystemClock::shared(),
            realm: None,
            retry_after: Duration::from_secs(1),
            _claims: PhantomData,
        }
    }
}

/// Why the layer could not produce claims.
pub(crate) enum Check<T> {
    Pass(Option<Claims<T>>),
    Reject(JwtError),
    Wait(crate::source::RefreshFuture, String),
}

/// Extracts the raw token per `source`.
pub(crate) fn extract<'a>(
    source: &TokenSource,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, JwtError> {
    let read = match source {
        TokenSource::Bearer => bearer_token(headers).map_err(drop),
        TokenSource::Cookie(name) => find_cookie(headers, name).map_err(drop),
        TokenSource::Header(name) => single_header(headers, name).map_err(drop),
    };
    read.map_err(|()| JwtError::new(JwtErrorKind::InvalidRequest))
}

fn now_secs(clock: &SharedClock) -> i64 {
    i64::try_from(clock.now().secs()).unwrap_or(i64::MAX)
}

impl<T: DeserializeOwned + Send + Sync + 'static> Shared<T> {
    fn revoked(&self, claims: &Claims<T>) -> Result<(), JwtError> {
        let Some(view) = &self.revocation else {
            return Ok(());
        };
        if !view.is_ready() {
            return Err(JwtError::new(JwtErrorKind::RevocationUnavailable));
        }
        match view.check(claims.registered()) {
            Some(_) => Err(JwtError::new(JwtErrorKind::Revoked)),
            None => Ok(()),
        }
    }

    /// The whole decision for one token (cache, verification, revocation).
    fn decide(&self, token: &str, allow_wait: bool) -> Check<T> {
        let now = now_secs(&self.clock);
        if let Some(cache) = &self.cache {
            if let Some(claims) = cache.get(token, now, &*self.keys) {
                return match self.revoked(&claims) {
                    Ok(()) => Check::Pass(Some(claims)),
                    Err(e) => Check::Reject(e),
                };
            }
        }
        let keys = &self.keys;
        match verify::<T>(
            token,
            &self.validation,
            |kid| keys.lookup(kid),
            Some(&self.prepared),
            now,
        ) {
            Step::Done(Ok(verified)) => {
                if let Some(cache) = &self.cache {
                    cache.insert(token, &verified, now);
                }
                match self.revoked(&verified.claims) {
                    Ok(()) => Check::Pass(Some(verified.claims)),
                    Err(e) => Check::Reject(e),
                }
            }
            Step::Done(Err(e)) => Check::Reject(e),
            Step::Wait(f) if allow_wait => Check::Wait(f, token.to_owned()),
            // Still no key after a refresh: the kid is unknown.
            Step::Wait(_) => Check::Reject(JwtError::new(JwtErrorKind::UnknownKey)),
        }
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> Check<T> {
        match extract(&self.source, headers) {
            Ok(Some(token)) => self.decide(token, true),
            Ok(None) if self.optional => Check::Pass(None),
            Ok(None) => Check::Reject(JwtError::new(JwtErrorKind::Missing)),
            Err(e) => Check::Reject(e),
        }
    }

    fn log(e: &JwtError) {
        let _ = e;
        portcullis_core::event!(debug, reason = e.reason(), "access token refused");
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static, R> JwtLayer<T, R> {
    /// Uses `renderer` for refusals.
    pub fn with_rejection<R2: RenderRejection>(self, renderer: R2) -> JwtLayer<T, R2> {
        JwtLayer {
            shared: self.shared,
            renderer,
        }
    }

    /// Reads the token of a request where this layer reads it (its
    /// token source: bearer header, cookie or header) and verifies it as
    /// the layer would: keys, claims rules, revocation, cache. For
    /// endpoints outside the layer that need the caller's claims (the
    /// refresh endpoints' device list).
    ///
    /// # Errors
    ///
    /// [`JwtErrorKind::Missing`] without a token (even for an optional
    /// layer), [`JwtErrorKind::InvalidRequest`] for a malformed credential
    /// header, otherwise why the token was refused.
    pub async fn verify_request(&self, headers: &HeaderMap) -> Result<Claims<T>, JwtError> {
        match extract(&self.shared.source, headers)? {
            Some(token) => self.verify(token).await,
            None => Err(JwtError::new(JwtErrorKind::Missing)),
        }
    }

    /// Verifies `token` as the layer would (for WebSocket handshakes,
    /// background jobs, tests): signature, claims, revocation.
    ///
    /// # Errors
    ///
    /// [`JwtError`] says why the token was refused.
    pub async fn verify(&self, token: &str) -> Result<Claims<T>, JwtError> {
        match self.shared.decide(token, true) {
            Check::Pass(Some(c)) => Ok(c),
            Check::Pass(None) => Err(JwtError::new(JwtErrorKind::Missing)),
            Check::Reject(e) => Err(e),
            Check::Wait(f, token) => {
                f.await;
                match self.shared.decide(&token, false) {
                    Check::Pass(Some(c)) => Ok(c),
                    Check::Reject(e) => Err(e),
                    _ => Err(JwtError::new(JwtErrorKind::UnknownKey)),
                }
            }
        }
    }
}

impl<S, T, R: Clone> Layer<S> for JwtLayer<T, R> {
    type Service = Jwt<S, T, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Jwt {
            inner,
            shared: Arc::clone(&self.shared),
            renderer: self.renderer.clone(),
        }
    }
}

/// The service built by [`JwtLayer`].
pub struct Jwt<S, T = NoCustomClaims, R = ProblemJson> {
    inner: S,
    shared: Arc<Shared<T>>,
    renderer: R,
}

impl<S: Clone, T, R: Clone> Clone for Jwt<S, T, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            renderer: self.renderer.clone(),
        }
    }
}

impl<S: fmt::Debug, T, R> fmt::Debug for Jwt<S, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T, R> Jwt<S, T, R> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The response future of [`Jwt`] (and of
/// [`RequireClaims`](crate::RequireClaims)): the inner future, a refusal,
/// or the boxed wait for a JWKS refresh.
pub type ResponseFuture<F, B, E> = portcullis_core::LayerFuture<F, B, E>;

impl<S, T, R, ReqBody, ResBody> Service<Request<ReqBody>> for Jwt<S, T, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    T: DeserializeOwned + Send + Sync + 'static,
    R: RenderRejection,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let reject = |e: &JwtError, grpc: bool, renderer: &R| {
            Shared::<T>::log(e);
            e.rejection(shared.realm.as_deref(), shared.retry_after)
                .into_response(renderer, grpc)
        };
        match shared.check(req.headers()) {
            Check::Pass(claims) => {
                if let Some(c) = claims {
                    req.extensions_mut().insert(c);
                }
                ResponseFuture::inner(self.inner.call(req))
            }
            Check::Reject(e) => {
                ResponseFuture::ready(reject(&e, is_grpc(req.headers()), &self.renderer))
            }
            Check::Wait(refresh, token) => {
                // The ready service moves into the future and a fresh clone
                // takes its place; see tower's "Be careful when cloning
                // inner services".
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let shared = Arc::clone(&self.shared);
                let renderer = self.renderer.clone();
                let fut = async move {
                    refresh.await;
                    let grpc = is_grpc(req.headers());
                    match shared.decide(&token, false) {
                        Check::Pass(claims) => {
                            if let Some(c) = claims {
                                req.extensions_mut().insert(c);
                            }
                            inner.call(req).await.map(|r| r.map(ResponseBody::inner))
                        }
                        Check::Reject(e) => {
                            Shared::<T>::log(&e);
                            Ok(e.rejection(shared.realm.as_deref(), shared.retry_after)
                                .into_response(&renderer, grpc))
                        }
                        Check::Wait(..) => {
                            let e = JwtError::new(JwtErrorKind::UnknownKey);
                            Ok(e.rejection(shared.realm.as_deref(), shared.retry_after)
                                .into_response(&renderer, grpc))
                        }
                    }
                };
                ResponseFuture::boxed(Box::pin(fut))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::{Algorithm, JwtIssuer, SigningKey};

    fn issuer(secret: u8) -> JwtIssuer {
        let key = SigningKey::hmac(Some("k"), Algorithm::HS256, &[secret; 32]).unwrap();
        JwtIssuer::builder(key)
            .issuer("https://iss")
            .audience("api")
            .build()
            .unwrap()
    }

    fn layer(issuer: &JwtIssuer, source: TokenSource) -> JwtLayer {
        JwtLayer::builder(issuer.keys())
            .issuer("https://iss")
            .audience("api")
            .token_source(source)
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
        let cases: Vec<(TokenSource, HeaderMap, Result<&str, JwtErrorKind>)> = vec![
            (
                TokenSource::Bearer,
                headers(&[("authorization", bearer.clone())]),
                Ok("alice"),
            ),
            (
                TokenSource::Bearer,
                headers(&[]),
                Err(JwtErrorKind::Missing),
            ),
            (
                TokenSource::Bearer,
                headers(&[("authorization", "Basic abc".into())]),
                Err(JwtErrorKind::Missing),
            ),
            (
                TokenSource::Bearer,
                headers(&[("authorization", "Bearer a b".into())]),
                Err(JwtErrorKind::InvalidRequest),
            ),
            (
                TokenSource::Bearer,
                headers(&[
                    ("authorization", bearer.clone()),
                    ("authorization", bearer.clone()),
                ]),
                Err(JwtErrorKind::InvalidRequest),
            ),
            (
                TokenSource::Bearer,
                headers(&[("cookie", format!("at={token}"))]),
                Err(JwtErrorKind::Missing),
            ),
            (
                TokenSource::Cookie("at".into()),
                headers(&[("cookie", format!("at={token}"))]),
                Ok("alice"),
            ),
            (
                TokenSource::Cookie("at".into()),
                headers(&[("authorization", bearer.clone())]),
                Err(JwtErrorKind::Missing),
            ),
            (
                TokenSource::Header(x_token.clone()),
                headers(&[("x-token", token.clone())]),
                Ok("alice"),
            ),
            (
                TokenSource::Header(x_token),
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
}
