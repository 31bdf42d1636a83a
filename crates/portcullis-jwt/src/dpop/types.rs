//! The DPoP values the rest of the crate names (the headers, the policy,
//! the errors and a verified proof), apart from the verifier so that the
//! refusal code can use them without depending on it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use portcullis_core::Rejection;

use crate::alg::Algorithm;

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

/// Why a [`DpopVerifier`](super::DpopVerifier) could not be built.
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
    pub(crate) kind: DpopErrorKind,
    /// The algorithms to advertise (`algs="..."`).
    pub(crate) algs: Option<Arc<str>>,
    /// The nonce to hand out with `use_dpop_nonce`.
    pub(crate) nonce: Option<String>,
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

/// A verified proof, put into the request extensions by the layer. Two
/// proofs are equal when they have the same key and algorithm.
#[derive(Clone)]
pub struct DpopProof {
    pub(crate) jkt: Arc<str>,
    pub(crate) alg: Algorithm,
    /// The current server nonce, when the proof's was the previous one.
    pub(crate) next_nonce: Option<Arc<str>>,
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

    /// With server nonces, when the proof carried the previous step's
    /// nonce (still accepted, soon not): the current one, to send back in
    /// a `DPoP-Nonce` header of the successful response (RFC 9449 §8.2).
    /// `JwtLayer`, the refresh endpoints and `Login::reply` of
    /// `portcullis-refresh` do; an active client then never meets a
    /// `use_dpop_nonce` refusal. A browser client on another origin reads
    /// the header only if CORS exposes it (`Access-Control-Expose-Headers:
    /// DPoP-Nonce`).
    #[must_use]
    pub fn next_nonce(&self) -> Option<&str> {
        self.next_nonce.as_deref()
    }
}

impl PartialEq for DpopProof {
    fn eq(&self, other: &Self) -> bool {
        self.jkt == other.jkt && self.alg == other.alg
    }
}

impl Eq for DpopProof {}

impl fmt::Debug for DpopProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopProof")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}
