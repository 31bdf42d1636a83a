//! DPoP (RFC 9449): access tokens bound to a key the client holds.
//!
//! A DPoP client makes a key pair, and the authorization server binds the
//! access token to the key's thumbprint (the token's `cnf.jkt`). With each
//! request the client sends `Authorization: DPoP <token>` and a `DPoP`
//! header: a *proof*, a JWT signed by the key, naming the request's
//! method (`htm`) and URL (`htu`), when it was made (`iat`), a unique id
//! (`jti`) and the token's hash (`ath`). A token copied out of a page, a
//! log or a proxy is then useless alone: every request needs a fresh
//! proof, and only the key's holder can make one.
//!
//! [`DpopVerifier`] checks proofs; give it to
//! [`JwtLayerBuilder::dpop`](crate::JwtLayerBuilder::dpop) with a
//! [`DpopPolicy`] and the layer accepts DPoP-bound tokens:
//!
//! ```
//! use axum::{Router, routing::get};
//! use portcullis_jwt::dpop::{DpopPolicy, DpopProof, DpopVerifier};
//! use portcullis_jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
//!
//! let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
//!     .issuer("https://auth.example.com")
//!     .audience("https://api.example.com")
//!     .build()
//!     .unwrap();
//! // The URL clients use to reach this service (never read from `Host`).
//! let dpop = DpopVerifier::builder("https://api.example.com").build().unwrap();
//! let jwt = JwtLayer::builder_for(&issuer)
//!     .dpop(dpop, DpopPolicy::Required)
//!     .resource_metadata("https://api.example.com/.well-known/oauth-protected-resource")
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route(
//!         "/me",
//!         get(|claims: Claims, proof: axum::Extension<DpopProof>| async move {
//!             format!("{} with key {}", claims.subject().unwrap_or_default(), proof.jkt())
//!         }),
//!     )
//!     .layer(jwt);
//! # let _ = app;
//! ```
//!
//! What a proof must be (each a 401 with
//! `WWW-Authenticate: DPoP algs="...", error="invalid_dpop_proof"` when
//! not):
//!
//! - exactly one `DPoP` header, a compact JWS under the house rules
//!   (size limit, canonical base64url, a duplicate-free JSON header, no
//!   `crit`, `b64`, `cty`, `kid`, `jku`, `x5u` or `x5c`);
//! - `typ` is `dpop+jwt` (`application/dpop+jwt` too, RFC 7515 §4.1.9);
//! - `alg` is asymmetric and among [`DpopVerifierBuilder::algorithms`]
//!   (never `none` or HMAC); `Ed25519` (RFC 9864's name) is read as
//!   `EdDSA`;
//! - `jwk` is a public EC (P-256, P-384), RSA (2048 bits or more) or OKP
//!   (Ed25519) key with canonical members: `d`, RSA private members and
//!   `oct` keys are refused;
//! - the signature verifies with that key;
//! - `jti`, `htm`, `htu` and `iat` are present; `htm` equals the method
//!   exactly; `htu` equals the configured public origin plus the request's
//!   path, both normalised (scheme and host lowercase, default port
//!   dropped, percent-encoding case, query and fragment ignored);
//! - `iat` is at most [`max_age`](DpopVerifierBuilder::max_age) old and at
//!   most [`leeway`](DpopVerifierBuilder::leeway) in the future;
//! - with an access token, `ath` is its SHA-256 hash (base64url);
//! - with [`nonces`](DpopVerifierBuilder::nonces), `nonce` is the
//!   server's current or previous nonce, or the answer is 401
//!   `error="use_dpop_nonce"` with a fresh `DPoP-Nonce` header;
//! - at the layer, the proof's key thumbprint equals the token's
//!   `cnf.jkt`;
//! - last, the proof was never seen before: its `jti` (hashed with the key)
//!   goes into the [`ReplayCache`] until its `iat` window ends. A cache
//!   that cannot answer (down, or full of live entries) is a 503, never a
//!   pass; a user (the token's issuer and subject; the key, for a proof
//!   without a token) holding its share of a [`MemoryReplayCache`] gets
//!   429, however many keys it logged in with.

mod htu;
mod nonce;
mod proof;
mod replay;
mod thumbprint;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use portcullis_core::request::single_header;
use portcullis_core::{Rejection, SharedClock, SystemClock};

pub use self::nonce::NONCE_STEP_SECS;
pub use self::replay::{
    DEFAULT_KEY_SHARE_DIVISOR, DEFAULT_REPLAY_CAPACITY, MemoryReplayCache, ReplayCache,
    ReplayCacheError,
};
pub use self::thumbprint::{ThumbprintError, thumbprint};

use self::nonce::Nonces;
use self::proof::{KeyCache, MAX_PROOF_LEN, ProofKey};
use crate::alg::Algorithm;
use crate::key::{KeyError, SigningKey};

/// The `DPoP` request header, which carries the proof.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header (RFC 9449 §8, §9).
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Which token schemes a [`JwtLayer`](crate::JwtLayer) accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopPolicy {
    /// Bearer tokens only (the default, and what a layer without
    /// [`dpop`](crate::JwtLayerBuilder::dpop) does): `Authorization: DPoP`
    /// is not read. A DPoP-bound token (one with `cnf.jkt`) is refused
    /// under every policy when it comes as a bearer token.
    #[default]
    Bearer,
    /// Bearer tokens and DPoP-bound tokens with their proofs; refusals
    /// carry both challenges.
    Accepted,
    /// DPoP-bound tokens with their proofs only: a bearer token is
    /// refused.
    Required,
}

/// Why a [`DpopVerifier`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopConfigError {
    /// The public origin is not `https://host[:port]` or
    /// `http://host[:port]` (nothing after the authority but `/`).
    #[error("the public origin must be scheme://host[:port], got {0:?}")]
    Origin(String),
    /// No algorithm, or a symmetric one (HMAC proofs prove nothing: the
    /// server would need the client's secret).
    #[error("DPoP algorithms must be asymmetric, and at least one")]
    Algorithms,
    /// A zero `max_age`.
    #[error("the proof max age must be positive")]
    MaxAge,
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopErrorKind {
    /// No `DPoP` header.
    Missing,
    /// Several `DPoP` headers.
    Multiple,
    /// Not a compact JWS under the house rules (size, base64url, JSON,
    /// forbidden header parameters).
    Malformed,
    /// `typ` is not `dpop+jwt`.
    WrongType,
    /// `alg` is `none`, symmetric, unknown or not allowed.
    UnsupportedAlg,
    /// `jwk` is missing, malformed, not a usable public key, or does not
    /// fit `alg`.
    BadKey,
    /// `jwk` holds private key material (`d`, RSA private members) or is a
    /// secret key.
    PrivateKey,
    /// The signature does not verify with `jwk`.
    BadSignature,
    /// `jti`, `htm`, `htu` or `iat` is missing or malformed.
    MissingClaim,
    /// `htm` is not the request's method.
    WrongMethod,
    /// `htu` is not this resource's URL.
    WrongUrl,
    /// `iat` is further in the future than the leeway.
    IssuedInFuture,
    /// `iat` is older than the maximum age.
    TooOld,
    /// An access token came without `ath`.
    MissingAth,
    /// `ath` is not the access token's hash.
    WrongAth,
    /// Server nonces are on and the proof has none, or a stale one: 401
    /// `use_dpop_nonce` with a `DPoP-Nonce` header.
    NonceRequired,
    /// The proof's key is not the one the token (or refresh family) is
    /// bound to.
    KeyMismatch,
    /// The proof was used before.
    Replayed,
    /// The replay cache cannot answer: 503.
    ReplayUnavailable,
    /// The replay cache is full of live entries: 503.
    ReplayFull,
    /// This key already holds its share of the replay cache (a client
    /// sending proofs faster than any honest one): 429.
    TooManyProofs,
}

/// A refused proof: its [`DpopErrorKind`] and what the challenge needs.
#[derive(Clone, PartialEq, Eq)]
pub struct DpopError {
    kind: DpopErrorKind,
    /// The algorithms to advertise (`algs="..."`).
    algs: Option<Arc<str>>,
    /// The nonce to hand out with `use_dpop_nonce`.
    nonce: Option<String>,
}

impl fmt::Debug for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DPoP proof refused: {}", self.reason())
    }
}

impl std::error::Error for DpopError {}

impl DpopError {
    pub(crate) const fn bare(kind: DpopErrorKind) -> Self {
        Self {
            kind,
            algs: None,
            nonce: None,
        }
    }

    /// Why.
    #[must_use]
    pub const fn kind(&self) -> DpopErrorKind {
        self.kind
    }

    /// A short machine-readable reason, for logs and events.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self.kind {
            DpopErrorKind::Missing => "dpop-missing",
            DpopErrorKind::Multiple => "dpop-multiple",
            DpopErrorKind::Malformed => "dpop-malformed",
            DpopErrorKind::WrongType => "dpop-typ",
            DpopErrorKind::UnsupportedAlg => "dpop-alg",
            DpopErrorKind::BadKey => "dpop-key",
            DpopErrorKind::PrivateKey => "dpop-private-key",
            DpopErrorKind::BadSignature => "dpop-signature",
            DpopErrorKind::MissingClaim => "dpop-claims",
            DpopErrorKind::WrongMethod => "dpop-htm",
            DpopErrorKind::WrongUrl => "dpop-htu",
            DpopErrorKind::IssuedInFuture => "dpop-iat-future",
            DpopErrorKind::TooOld => "dpop-iat-old",
            DpopErrorKind::MissingAth => "dpop-ath-missing",
            DpopErrorKind::WrongAth => "dpop-ath",
            DpopErrorKind::NonceRequired => "dpop-nonce",
            DpopErrorKind::KeyMismatch => "dpop-key-mismatch",
            DpopErrorKind::Replayed => "dpop-replay",
            DpopErrorKind::ReplayUnavailable => "dpop-replay-unavailable",
            DpopErrorKind::ReplayFull => "dpop-replay-full",
            DpopErrorKind::TooManyProofs => "dpop-key-share",
        }
    }

    /// Whether the refusal is a 503 (the replay cache cannot answer).
    #[must_use]
    pub const fn is_unavailable(&self) -> bool {
        matches!(
            self.kind,
            DpopErrorKind::ReplayUnavailable | DpopErrorKind::ReplayFull
        )
    }

    /// The nonce a `use_dpop_nonce` refusal hands out.
    #[must_use]
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// The `error_description` of the challenge: what the client must fix,
    /// never a secret.
    pub(crate) const fn description(&self) -> &'static str {
        match self.kind {
            DpopErrorKind::Missing => "a DPoP proof is required",
            DpopErrorKind::Multiple => "exactly one DPoP proof is required",
            DpopErrorKind::WrongMethod | DpopErrorKind::WrongUrl => {
                "the DPoP proof is for another request"
            }
            DpopErrorKind::IssuedInFuture | DpopErrorKind::TooOld => {
                "the DPoP proof is too old or from the future"
            }
            DpopErrorKind::MissingAth | DpopErrorKind::WrongAth => {
                "the DPoP proof does not name this access token"
            }
            DpopErrorKind::NonceRequired => "a DPoP nonce from the server is required",
            DpopErrorKind::Replayed => "the DPoP proof was used before",
            DpopErrorKind::KeyMismatch => "the DPoP proof is not signed by the bound key",
            _ => "the DPoP proof is invalid",
        }
    }

    /// The `DPoP` challenge's value for this refusal (RFC 9449 §7.1),
    /// `params` (realm, resource metadata) first.
    pub(crate) fn challenge(&self, params: &[String]) -> String {
        let mut out = String::from("DPoP");
        let mut parts: Vec<String> = params.to_vec();
        if let Some(algs) = &self.algs {
            parts.push(format!("algs=\"{algs}\""));
        }
        let code = if self.kind == DpopErrorKind::NonceRequired {
            "use_dpop_nonce"
        } else {
            "invalid_dpop_proof"
        };
        parts.push(format!("error=\"{code}\""));
        parts.push(format!("error_description=\"{}\"", self.description()));
        out.push(' ');
        out.push_str(&parts.join(", "));
        out
    }

    /// The refusal: 401 with `WWW-Authenticate: DPoP algs="...",
    /// error="invalid_dpop_proof", error_description="..."`, or
    /// `error="use_dpop_nonce"` and a `DPoP-Nonce` header; 503 when the
    /// replay cache cannot answer; 429 when the key holds its share of it.
    pub fn rejection(&self) -> Rejection {
        if self.kind == DpopErrorKind::TooManyProofs {
            return Rejection::too_many_requests("too many DPoP proofs; retry shortly")
                .with_retry_after(Duration::from_secs(1))
                .with_reason(self.reason());
        }
        if self.is_unavailable() {
            return Rejection::unavailable("a backing store is unavailable; retry shortly")
                .with_reason(self.reason());
        }
        let rejection = Rejection::unauthenticated("the DPoP proof is invalid");
        let value = HeaderValue::try_from(self.challenge(&[]))
            .unwrap_or_else(|_| HeaderValue::from_static("DPoP"));
        self.with_nonce(rejection.with_challenge(value).with_reason(self.reason()))
    }

    /// Adds the `DPoP-Nonce` header of a `use_dpop_nonce` refusal.
    pub(crate) fn with_nonce(&self, rejection: Rejection) -> Rejection {
        match self.nonce.as_deref().map(HeaderValue::try_from) {
            Some(Ok(v)) => rejection.with_header(DPOP_NONCE, v),
            _ => rejection,
        }
    }
}

/// A verified proof, put into the request extensions by the layer.
#[derive(Clone, PartialEq, Eq)]
pub struct DpopProof {
    jkt: Arc<str>,
    alg: Algorithm,
}

impl DpopProof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key (base64url): what
    /// a token bound to that key carries as `cnf.jkt`.
    #[must_use]
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The proof's algorithm.
    #[must_use]
    pub const fn alg(&self) -> Algorithm {
        self.alg
    }
}

impl fmt::Debug for DpopProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopProof")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A proof that passed every check but the replay cache.
pub(crate) struct Checked {
    proof: DpopProof,
    replay_id: [u8; 32],
    until: u64,
}

impl Checked {
    pub(crate) fn jkt(&self) -> &str {
        &self.proof.jkt
    }
}

struct Inner {
    origin: String,
    algorithms: Vec<Algorithm>,
    algs: Arc<str>,
    max_age: i64,
    leeway: i64,
    replay: Arc<dyn ReplayCache>,
    nonces: Option<Nonces>,
    clock: SharedClock,
    keys: KeyCache,
}

/// Checks DPoP proofs (RFC 9449). Cheap to clone. See the [module
/// docs](self) for every rule.
#[derive(Clone)]
pub struct DpopVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for DpopVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopVerifier")
            .field("origin", &self.inner.origin)
            .field("algorithms", &self.inner.algorithms)
            .field("max_age", &self.inner.max_age)
            .field("nonces", &self.inner.nonces.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`DpopVerifier`]. See [`DpopVerifier::builder`].
#[must_use]
pub struct DpopVerifierBuilder {
    origin: String,
    algorithms: Vec<Algorithm>,
    max_age: Duration,
    leeway: Duration,
    replay: Option<Arc<dyn ReplayCache>>,
    nonces: Option<[u8; 32]>,
    clock: SharedClock,
}

impl fmt::Debug for DpopVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopVerifierBuilder")
            .field("origin", &self.origin)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The default proof algorithms.
pub const DEFAULT_DPOP_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::RS256,
    Algorithm::EdDSA,
];

impl DpopVerifierBuilder {
    /// The accepted proof algorithms (default: ES256, ES384, PS256, RS256,
    /// EdDSA); asymmetric only.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// How old a proof's `iat` may be (default 60 s). A proof is remembered
    /// by the replay cache for this long.
    pub const fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How far in the future a proof's `iat` may be (default 5 s): client
    /// clocks differ a little.
    pub const fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Where used proofs are remembered (default: a
    /// [`MemoryReplayCache`] of [`DEFAULT_REPLAY_CAPACITY`] entries on
    /// this builder's clock). Several instances of a service need one
    /// cache they all share, or a proof can be replayed to another
    /// instance.
    pub fn replay_cache(mut self, cache: impl ReplayCache) -> Self {
        self.replay = Some(Arc::new(cache));
        self
    }

    /// Requires server nonces (RFC 9449 §9), derived from `secret` and the
    /// time: a nonce is current for [`NONCE_STEP_SECS`] and accepted for
    /// one more step. Instances sharing the secret accept each other's
    /// nonces. A proof without a valid nonce gets 401 `use_dpop_nonce` and
    /// the current nonce in `DPoP-Nonce`.
    pub const fn nonces(mut self, secret: [u8; 32]) -> Self {
        self.nonces = Some(secret);
        self
    }

    /// Reads the time from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The verifier.
    ///
    /// # Errors
    ///
    /// [`DpopConfigError`] for an origin that is not `scheme://host[:port]`,
    /// no or a symmetric algorithm, or a zero maximum age.
    pub fn build(self) -> Result<DpopVerifier, DpopConfigError> {
        crate::ensure_crypto_provider();
        let origin = htu::normalize_origin(&self.origin)
            .ok_or_else(|| DpopConfigError::Origin(self.origin.clone()))?;
        if self.algorithms.is_empty() || self.algorithms.iter().any(|a| !a.is_asymmetric()) {
            return Err(DpopConfigError::Algorithms);
        }
        if self.max_age.is_zero() {
            return Err(DpopConfigError::MaxAge);
        }
        let mut names: Vec<&str> = Vec::new();
        for a in &self.algorithms {
            if !names.contains(&a.as_str()) {
                names.push(a.as_str());
            }
            if *a == Algorithm::EdDSA && !names.contains(&"Ed25519") {
                names.push("Ed25519");
            }
        }
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let replay = self.replay.unwrap_or_else(|| {
            Arc::new(MemoryReplayCache::with_clock(
                DEFAULT_REPLAY_CAPACITY,
                self.clock.clone(),
            ))
        });
        Ok(DpopVerifier {
            inner: Arc::new(Inner {
                origin,
                algorithms: self.algorithms,
                algs: Arc::from(names.join(" ")),
                max_age: secs(self.max_age),
                leeway: secs(self.leeway),
                replay,
                nonces: self.nonces.as_ref().map(Nonces::new),
                clock: self.clock,
                keys: KeyCache::default(),
            }),
        })
    }
}

fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, data).as_ref())
}

impl DpopVerifier {
    /// Starts a builder. `public_origin` is how clients reach this service
    /// (`https://api.example.com`, no path): the `htu` every proof must
    /// name is this origin plus the request's path. It is never read from
    /// `Host` or `X-Forwarded-*`.
    pub fn builder(public_origin: impl Into<String>) -> DpopVerifierBuilder {
        DpopVerifierBuilder {
            origin: public_origin.into(),
            algorithms: DEFAULT_DPOP_ALGORITHMS.to_vec(),
            max_age: Duration::from_secs(60),
            leeway: crate::validation::DEFAULT_LEEWAY,
            replay: None,
            nonces: None,
            clock: SystemClock::shared(),
        }
    }

    /// The algorithm names advertised in challenges (`algs="..."`) and in
    /// resource metadata (`dpop_signing_alg_values_supported`).
    #[must_use]
    pub fn algs(&self) -> &str {
        &self.inner.algs
    }

    /// The current server nonce (`None` without
    /// [`nonces`](DpopVerifierBuilder::nonces)). Send it in a `DPoP-Nonce`
    /// header to spare clients a `use_dpop_nonce` round trip.
    #[must_use]
    pub fn nonce(&self) -> Option<String> {
        let now = self.inner.clock.now().secs();
        self.inner.nonces.as_ref().map(|n| n.current(now))
    }

    fn error(&self, kind: DpopErrorKind) -> DpopError {
        let nonce = if kind == DpopErrorKind::NonceRequired {
            self.nonce()
        } else {
            None
        };
        DpopError {
            kind,
            algs: Some(Arc::clone(&self.inner.algs)),
            nonce,
        }
    }

    /// Adds the verifier's challenge details to a bare error.
    fn dress(&self, e: &DpopError) -> DpopError {
        self.error(e.kind)
    }

    /// Checks the proof of a request, and that it was never used before.
    /// `access_token`: the token presented with it at a resource (then
    /// `ath` is required and checked); `None` at a token or refresh
    /// endpoint.
    ///
    /// ```
    /// use http::{HeaderMap, Method, Uri};
    /// use portcullis_jwt::dpop::{DpopErrorKind, DpopVerifier, sign_proof};
    /// use portcullis_jwt::{Algorithm, SigningKey};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let verifier = DpopVerifier::builder("https://api.example.com").build().unwrap();
    /// let client_key = SigningKey::generate("client", Algorithm::ES256).unwrap();
    /// let now = std::time::SystemTime::now()
    ///     .duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    /// let proof = sign_proof(&client_key, "POST", "https://api.example.com/token", now, None, None).unwrap();
    /// let mut headers = HeaderMap::new();
    /// headers.insert("dpop", proof.parse().unwrap());
    /// let uri: Uri = "/token".parse().unwrap();
    /// let checked = verifier.check(&Method::POST, &uri, &headers, None).await.unwrap();
    /// assert_eq!(checked.jkt().len(), 43);
    /// // The same proof again is a replay.
    /// let again = verifier.check(&Method::POST, &uri, &headers, None).await;
    /// assert_eq!(again.unwrap_err().kind(), DpopErrorKind::Replayed);
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// [`DpopError`] says which rule the proof broke.
    pub async fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> Result<DpopProof, DpopError> {
        let checked = self.verify(method, uri, headers, access_token)?;
        self.commit(checked).await
    }

    /// [`check`](Self::check), and the proof's key must be the one with
    /// thumbprint `jkt` (a token's `cnf.jkt`, a refresh family's bound
    /// key); checked before the proof is remembered.
    ///
    /// # Errors
    ///
    /// [`DpopErrorKind::KeyMismatch`] for another key; otherwise as
    /// [`check`](Self::check).
    pub async fn check_bound(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        access_token: Option<&str>,
        jkt: &str,
    ) -> Result<DpopProof, DpopError> {
        let checked = self.verify(method, uri, headers, access_token)?;
        if checked.jkt() != jkt {
            return Err(self.error(DpopErrorKind::KeyMismatch));
        }
        self.commit(checked).await
    }

    /// Every check but the replay cache's.
    pub(crate) fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> Result<Checked, DpopError> {
        self.verify_at(method, uri, headers, access_token)
            .map_err(|e| self.dress(&e))
    }

    fn verify_at(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> Result<Checked, DpopError> {
        let fail = DpopError::bare;
        let inner = &*self.inner;
        let proof = match single_header(headers, &DPOP) {
            Ok(Some(p)) => p,
            Ok(None) => return Err(fail(DpopErrorKind::Missing)),
            Err(_) if headers.get_all(&DPOP).iter().count() > 1 => {
                return Err(fail(DpopErrorKind::Multiple));
            }
            Err(_) => return Err(fail(DpopErrorKind::Malformed)),
        };
        let seg =
            crate::jws::split(proof, MAX_PROOF_LEN).map_err(|_| fail(DpopErrorKind::Malformed))?;
        let key: Arc<ProofKey> = if let Some(k) = inner.keys.get(seg.header) {
            proof::check_proof_signature(&seg, &k)?;
            k
        } else {
            let k = Arc::new(proof::parse_header(&seg, &inner.algorithms)?);
            proof::check_proof_signature(&seg, &k)?;
            inner.keys.insert(seg.header, Arc::clone(&k));
            k
        };
        let claims = proof::parse_claims(&seg)?;
        if claims.htm.as_deref() != Some(method.as_str()) {
            return Err(fail(DpopErrorKind::WrongMethod));
        }
        let htu = claims.htu.as_deref().and_then(htu::normalize_htu);
        let want = htu::normalize_path(uri.path()).map(|p| format!("{}{p}", inner.origin));
        if htu.is_none() || htu != want {
            return Err(fail(DpopErrorKind::WrongUrl));
        }
        let now = i64::try_from(inner.clock.now().secs()).unwrap_or(i64::MAX);
        let iat = claims.iat.unwrap_or(i64::MIN);
        if iat > now.saturating_add(inner.leeway) {
            return Err(fail(DpopErrorKind::IssuedInFuture));
        }
        if iat < now.saturating_sub(inner.max_age) {
            return Err(fail(DpopErrorKind::TooOld));
        }
        if let Some(token) = access_token {
            match claims.ath.as_deref() {
                None => return Err(fail(DpopErrorKind::MissingAth)),
                Some(ath) if ath != sha256_b64(token.as_bytes()) => {
                    return Err(fail(DpopErrorKind::WrongAth));
                }
                Some(_) => {}
            }
        }
        if let Some(nonces) = &inner.nonces {
            let now = u64::try_from(now).unwrap_or_default();
            if !claims
                .nonce
                .as_deref()
                .is_some_and(|n| nonces.accepts(n, now))
            {
                return Err(fail(DpopErrorKind::NonceRequired));
            }
        }
        let jti = claims.jti.unwrap_or_default();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"portcullis dpop jti\0");
        ctx.update(key.jkt.as_bytes());
        ctx.update(b"\0");
        ctx.update(jti.as_bytes());
        let mut replay_id = [0u8; 32];
        replay_id.copy_from_slice(ctx.finish().as_ref());
        let until = u64::try_from(iat.saturating_add(inner.max_age)).unwrap_or_default();
        Ok(Checked {
            proof: DpopProof {
                jkt: Arc::clone(&key.jkt),
                alg: key.alg,
            },
            replay_id,
            until,
        })
    }

    /// Remembers a checked proof; a proof seen before is a replay. The
    /// cache's share is counted per key.
    pub(crate) async fn commit(&self, checked: Checked) -> Result<DpopProof, DpopError> {
        self.commit_for(checked, None).await
    }

    /// [`commit`](Self::commit), the cache's share counted per `owner`
    /// (the bound token's issuer and subject) when there is one: a user
    /// who logs in with many keys still holds one share, not one per key.
    pub(crate) async fn commit_for(
        &self,
        checked: Checked,
        owner: Option<(&str, &str)>,
    ) -> Result<DpopProof, DpopError> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        match owner {
            Some((iss, sub)) => {
                ctx.update(b"portcullis dpop owner\0");
                ctx.update(iss.as_bytes());
                ctx.update(b"\0");
                ctx.update(sub.as_bytes());
            }
            None => {
                ctx.update(b"portcullis dpop key\0");
                ctx.update(checked.proof.jkt.as_bytes());
            }
        }
        let mut key_id = [0u8; 32];
        key_id.copy_from_slice(ctx.finish().as_ref());
        match self
            .inner
            .replay
            .first_use_by_key(&key_id, &checked.replay_id, checked.until)
            .await
        {
            Ok(true) => Ok(checked.proof),
            Ok(false) => Err(self.error(DpopErrorKind::Replayed)),
            Err(ReplayCacheError::Full) => Err(self.error(DpopErrorKind::ReplayFull)),
            Err(ReplayCacheError::KeyShare) => Err(self.error(DpopErrorKind::TooManyProofs)),
            Err(_) => Err(self.error(DpopErrorKind::ReplayUnavailable)),
        }
    }
}

/// Signs a DPoP proof with `key` (any asymmetric key; the client's side,
/// for Rust clients and tests): `htm` the request's method, `htu`
/// its URL, `iat` the time in seconds, `ath` the hash of `access_token`
/// when one is sent, `nonce` the server's when it asks for one, and a
/// random `jti`. The header carries the key's public JWK.
///
/// # Errors
///
/// [`KeyError`] when the key cannot sign a proof (an HMAC key) or the
/// random source fails.
pub fn sign_proof(
    key: &SigningKey,
    htm: &str,
    htu: &str,
    iat: u64,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, KeyError> {
    let alg = key.alg();
    if !alg.is_asymmetric() {
        return Err(KeyError::WrongFamily(alg));
    }
    let jwk = key
        .verifying_key()
        .public_jwk()
        .ok_or(KeyError::WrongFamily(alg))?;
    let mut jwk = serde_json::to_value(jwk).map_err(|e| KeyError::Parse(e.to_string()))?;
    if let Some(m) = jwk.as_object_mut() {
        m.retain(|k, _| matches!(k.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"));
    }
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| KeyError::Generate)?;
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": jwk});
    let mut claims = serde_json::json!({
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "htm": htm,
        "htu": htu,
        "iat": iat,
    });
    if let Some(t) = access_token {
        claims["ath"] = sha256_b64(t.as_bytes()).into();
    }
    if let Some(n) = nonce {
        claims["nonce"] = n.into();
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding_key(), alg.to_jsonwebtoken())
            .map_err(|e| KeyError::Parse(e.to_string()))?;
    Ok(format!("{input}.{sig}"))
}
