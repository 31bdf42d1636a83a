//! Why a token was refused.

use std::fmt;

use http::HeaderValue;
use portcullis_core::Rejection;

/// Why a token was refused. Logged and attached to responses (inside the
/// [`Rejection`]), never shown to the client, which sees one uniform body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtErrorKind {
    /// No token where the layer looks for one.
    Missing,
    /// The request's credentials are malformed (two `Authorization`
    /// headers, a scheme other than `Bearer`).
    InvalidRequest,
    /// Larger than the configured limit.
    TooLarge,
    /// Not three base64url segments of the JWS compact form, or a segment
    /// that is not canonical base64url.
    Malformed,
    /// A header or payload that is not one JSON object, or has duplicate
    /// keys.
    BadJson,
    /// `alg` is `none` or not a supported algorithm.
    UnsupportedAlg,
    /// The `kid` is unknown, or missing while several keys could apply.
    UnknownKey,
    /// The token's `alg` differs from the algorithm pinned to its key.
    AlgMismatch,
    /// The signature does not verify.
    BadSignature,
    /// `crit`, `b64: false` or `cty: JWT` (nested tokens): refused.
    UnsupportedHeader,
    /// The header `typ` is not an access token's, or the payload marks an
    /// id or refresh token.
    WrongTokenType,
    /// `exp` is missing or not a NumericDate.
    MissingExp,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `iss` is missing or not a trusted issuer.
    BadIssuer,
    /// `aud` is missing or does not name this service.
    BadAudience,
    /// A claim the configuration requires is missing.
    MissingClaim,
    /// The application's claims type does not match the payload.
    BadClaims,
    /// The token, its session or its user has been revoked.
    Revoked,
    /// The keys cannot be obtained right now (JWKS endpoint down before
    /// any key was ever loaded): 503.
    KeysUnavailable,
    /// The revocation view has not loaded yet (its store is still
    /// fetching its first snapshot): 503, never a pass.
    RevocationUnavailable,
    /// A valid token without the required scope or role: 403.
    InsufficientScope,
}

/// A refused token: its [`JwtErrorKind`] and, for scope failures, what was
/// required.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtError {
    kind: JwtErrorKind,
    required: Option<String>,
}

impl JwtError {
    pub(crate) const fn new(kind: JwtErrorKind) -> Self {
        Self {
            kind,
            required: None,
        }
    }

    pub(crate) fn insufficient(required: String) -> Self {
        Self {
            kind: JwtErrorKind::InsufficientScope,
            required: Some(required),
        }
    }

    /// Why.
    #[must_use]
    pub const fn kind(&self) -> JwtErrorKind {
        self.kind
    }

    /// A short machine-readable reason, for logs.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self.kind {
            JwtErrorKind::Missing => "missing",
            JwtErrorKind::InvalidRequest => "invalid-request",
            JwtErrorKind::TooLarge => "too-large",
            JwtErrorKind::Malformed => "malformed",
            JwtErrorKind::BadJson => "bad-json",
            JwtErrorKind::UnsupportedAlg => "unsupported-alg",
            JwtErrorKind::UnknownKey => "unknown-key",
            JwtErrorKind::AlgMismatch => "alg-mismatch",
            JwtErrorKind::BadSignature => "bad-signature",
            JwtErrorKind::UnsupportedHeader => "unsupported-header",
            JwtErrorKind::WrongTokenType => "wrong-token-type",
            JwtErrorKind::MissingExp => "missing-exp",
            JwtErrorKind::Expired => "expired",
            JwtErrorKind::NotYetValid => "not-yet-valid",
            JwtErrorKind::IssuedInFuture => "issued-in-future",
            JwtErrorKind::BadIssuer => "bad-issuer",
            JwtErrorKind::BadAudience => "bad-audience",
            JwtErrorKind::MissingClaim => "missing-claim",
            JwtErrorKind::BadClaims => "bad-claims",
            JwtErrorKind::Revoked => "revoked",
            JwtErrorKind::KeysUnavailable => "keys-unavailable",
            JwtErrorKind::RevocationUnavailable => "revocation-unavailable",
            JwtErrorKind::InsufficientScope => "insufficient-scope",
        }
    }

    /// The refusal: 401 `invalid_token` with one uniform body for every
    /// token failure, 401 without an error code when no token was sent
    /// (RFC 6750 section 3.1), 400 `invalid_request` for malformed
    /// credentials, 403 `insufficient_scope`, 503 when keys are
    /// unavailable.
    pub fn rejection(&self, realm: Option<&str>, retry_after: std::time::Duration) -> Rejection {
        let realm = realm
            .map(|r| format!("realm=\"{r}\", "))
            .unwrap_or_default();
        let challenge = |s: String| {
            HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        match self.kind {
            JwtErrorKind::Missing => Rejection::unauthenticated("an access token is required")
                .with_challenge(
                    challenge(format!("Bearer {}", realm.trim_end_matches(", "))).clone(),
                ),
            JwtErrorKind::InvalidRequest => {
                Rejection::bad_request("the request's credentials are malformed").with_challenge(
                    challenge(format!("Bearer {realm}error=\"invalid_request\"")),
                )
            }
            JwtErrorKind::KeysUnavailable | JwtErrorKind::RevocationUnavailable => {
                Rejection::unavailable(retry_after)
            }
            JwtErrorKind::InsufficientScope => {
                let scope = self.required.as_deref().unwrap_or_default();
                Rejection::forbidden("the access token does not grant this").with_challenge(
                    challenge(format!(
                        "Bearer {realm}error=\"insufficient_scope\", scope=\"{scope}\""
                    )),
                )
            }
            _ => Rejection::unauthenticated("the access token is invalid")
                .with_challenge(challenge(format!("Bearer {realm}error=\"invalid_token\""))),
        }
        .with_reason(self.reason())
    }
}

impl fmt::Debug for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtError")
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access token refused: {}", self.reason())
    }
}

impl std::error::Error for JwtError {}
