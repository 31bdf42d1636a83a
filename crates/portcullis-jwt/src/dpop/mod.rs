//! DPoP (RFC 9449): access tokens bound to a key the client holds.
//!
//! Over 500 lines: the module docs with their example, the verifier's
//! builder and the whole proof check, step by step, in one place.
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
//!   `error="use_dpop_nonce"` with a fresh `DPoP-Nonce` header (a proof
//!   with the previous one passes, and the answer carries the current one
//!   in `DPoP-Nonce`);
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
pub(crate) mod types;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Uri};
use portcullis_core::request::single_header;
use portcullis_core::{SharedClock, SystemClock};

pub use self::nonce::NONCE_STEP_SECS;
pub use self::replay::{
    DEFAULT_KEY_SHARE_DIVISOR, DEFAULT_REPLAY_CAPACITY, MemoryReplayCache, ReplayCache,
    ReplayCacheError,
};
pub use self::thumbprint::{ThumbprintError, thumbprint};
pub use self::types::{
    DPOP, DPOP_NONCE, DpopConfigError, DpopError, DpopErrorKind, DpopPolicy, DpopProof,
};

use self::nonce::{Fresh, Nonces};
use self::proof::{KeyCache, MAX_PROOF_LEN, ProofKey};
use crate::alg::Algorithm;
use crate::key::{KeyError, SigningKey};

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
    /// the current nonce in `DPoP-Nonce`; a proof with the previous step's
    /// passes, and [`JwtLayer`](crate::JwtLayer) (like the refresh
    /// endpoints of `portcullis-refresh`) sends the current one in
    /// `DPoP-Nonce` with the answer ([`DpopProof::next_nonce`]).
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
        let mut next_nonce = None;
        if let Some(nonces) = &inner.nonces {
            let now = u64::try_from(now).unwrap_or_default();
            match claims.nonce.as_deref().and_then(|n| nonces.accepts(n, now)) {
                None => return Err(fail(DpopErrorKind::NonceRequired)),
                Some(Fresh::Previous) => next_nonce = Some(Arc::from(nonces.current(now))),
                Some(Fresh::Current) => {}
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
                next_nonce,
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

/// The URI a request's proof must name in `htu`: the one the client
/// called. Under axum's `Router::nest` a service sees its path with the
/// prefix stripped; with the `axum` feature this is the whole URI, from
/// axum's `OriginalUri`. Otherwise (the feature off, or a service outside
/// axum) it is the request's own URI, so a DPoP-checked service must then
/// sit at its public path. `JwtLayer` and the refresh endpoints both read
/// it here.
///
/// `OriginalUri` is the URI the outermost axum `Router` received: a
/// middleware that rewrites the path before it (a trailing-slash
/// normaliser around the whole app), or a proxy that strips a path prefix,
/// leaves a path the client did not call, and its proofs are refused. The
/// verifier's public origin holds no path, so serve DPoP-checked routes at
/// the paths clients use.
///
/// ```
/// use portcullis_jwt::dpop::called_uri;
///
/// let (parts, ()) = http::Request::get("/me").body(()).unwrap().into_parts();
/// assert_eq!(called_uri(&parts).path(), "/me");
/// ```
#[must_use]
pub fn called_uri(parts: &http::request::Parts) -> &Uri {
    #[cfg(feature = "axum")]
    if let Some(original) = parts.extensions.get::<axum::extract::OriginalUri>() {
        return &original.0;
    }
    &parts.uri
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
