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
    /// A valid token whose login is too old, or whose authentication
    /// context class (`acr`) is not one the route accepts: 401 with RFC
    /// 9470's `insufficient_user_authentication` challenge. The client
    /// logs in again (step-up) and retries.
    InsufficientUserAuthentication,
}

/// A refused token: its [`JwtErrorKind`] and, for scope and step-up
/// failures, what was required.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtError {
    kind: JwtErrorKind,
    /// The missing scope or role; for a step-up refusal, the challenge's
    /// parameters after the error code, already rendered.
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

    /// A step-up refusal; `params` are the challenge's parameters after
    /// `error="insufficient_user_authentication"` (`error_description`,
    /// `max_age`, `acr_values`), rendered by the guard.
    pub(crate) const fn step_up(params: String) -> Self {
        Self {
            kind: JwtErrorKind::InsufficientUserAuthentication,
            required: Some(params),
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
            JwtErrorKind::InsufficientUserAuthentication => "insufficient-user-authentication",
        }
    }

    /// The refusal: 401 `invalid_token` with one uniform body for every
    /// token failure, 401 without an error code when no token was sent
    /// (RFC 6750 section 3.1), 400 `invalid_request` for malformed
    /// credentials, 403 `insufficient_scope`, 401
    /// `insufficient_user_authentication` (RFC 9470) for a login too old or
    /// too weak, 503 when keys are unavailable.
    pub fn rejection(&self, realm: Option<&str>, retry_after: std::time::Duration) -> Rejection {
        let rejection = match self.kind {
            JwtErrorKind::Missing => Rejection::unauthenticated("an access token is required"),
            JwtErrorKind::InvalidRequest => {
                Rejection::bad_request("the request's credentials are malformed")
            }
            JwtErrorKind::KeysUnavailable | JwtErrorKind::RevocationUnavailable => {
                return Rejection::unavailable("a backing store is unavailable; retry shortly")
                    .with_retry_after(retry_after)
                    .with_reason(self.reason());
            }
            JwtErrorKind::InsufficientScope => {
                Rejection::forbidden("the access token does not grant this")
            }
            JwtErrorKind::InsufficientUserAuthentication => Rejection::unauthenticated(
                "a more recent or stronger login is required: log in again",
            ),
            _ => Rejection::unauthenticated("the access token is invalid"),
        };
        let value = challenge(self.kind, realm, self.required.as_deref());
        let value =
            HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        rejection.with_challenge(value).with_reason(self.reason())
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

/// The `WWW-Authenticate` value for a refusal of `kind` (RFC 6750 §3):
/// no error code when no token was sent, and no trailing space when there
/// is nothing after the scheme.
pub(crate) fn challenge(kind: JwtErrorKind, realm: Option<&str>, required: Option<&str>) -> String {
    let mut params: Vec<String> = Vec::with_capacity(3);
    if let Some(realm) = realm {
        params.push(format!("realm=\"{realm}\""));
    }
    match kind {
        JwtErrorKind::Missing => {}
        JwtErrorKind::InvalidRequest => params.push("error=\"invalid_request\"".into()),
        JwtErrorKind::InsufficientScope => {
            params.push("error=\"insufficient_scope\"".into());
            params.push(format!("scope=\"{}\"", required.unwrap_or_default()));
        }
        JwtErrorKind::InsufficientUserAuthentication => {
            params.push("error=\"insufficient_user_authentication\"".into());
            if let Some(rest) = required {
                params.push(rest.to_owned());
            }
        }
        _ => params.push("error=\"invalid_token\"".into()),
    }
    if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_table() {
        use JwtErrorKind as K;
        let cases: [(K, Option<&str>, Option<&str>, &str); 8] = [
            (K::Missing, None, None, "Bearer"),
            (K::Missing, Some("api"), None, "Bearer realm=\"api\""),
            (
                K::InvalidRequest,
                None,
                None,
                "Bearer error=\"invalid_request\"",
            ),
            (
                K::InvalidRequest,
                Some("api"),
                None,
                "Bearer realm=\"api\", error=\"invalid_request\"",
            ),
            (K::Expired, None, None, "Bearer error=\"invalid_token\""),
            (
                K::BadSignature,
                Some("api"),
                None,
                "Bearer realm=\"api\", error=\"invalid_token\"",
            ),
            (
                K::InsufficientScope,
                None,
                Some("admin"),
                "Bearer error=\"insufficient_scope\", scope=\"admin\"",
            ),
            (
                K::InsufficientScope,
                Some("api"),
                Some("read"),
                "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read\"",
            ),
        ];
        for (kind, realm, scope, want) in cases {
            assert_eq!(challenge(kind, realm, scope), want, "{kind:?} {realm:?}");
        }
    }

    #[test]
    fn a_missing_token_challenge_has_no_trailing_space() {
        let r: http::Response<portcullis_core::ResponseBody<String>> =
            JwtError::new(JwtErrorKind::Missing)
                .rejection(None, std::time::Duration::from_secs(1))
                .into_response(&portcullis_core::ProblemJson, false);
        assert_eq!(r.headers()[http::header::WWW_AUTHENTICATE], "Bearer");
    }
}
