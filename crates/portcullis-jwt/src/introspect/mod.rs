//! Token introspection (RFC 7662) for opaque access tokens.
//!
//! [`IntrospectionLayer`] asks the authorization server's introspection
//! endpoint whether the request's bearer token is active, and puts the
//! same [`Claims`](crate::Claims) extension as [`JwtLayer`](crate::JwtLayer)
//! into the request, so [`Claims`](crate::Claims),
//! [`RequireClaimsLayer`](crate::RequireClaimsLayer) and
//! [`RequireFreshAuthLayer`](crate::RequireFreshAuthLayer) work behind it
//! unchanged.
//!
//! - The endpoint is asked with `POST` `token=...&token_type_hint=access_token`
//!   and HTTP Basic client authentication (`client_secret_basic`); the
//!   secret never appears in `Debug` output, logs or events.
//! - The answer is read strictly: one JSON object without duplicate keys,
//!   `active` a boolean, the registered claims typed as in a JWT. Anything
//!   else, any status but 200, a body over the size limit or no answer
//!   within the timeout is a provider failure: 503 with `Retry-After`,
//!   never a 401 and never a pass, and never cached.
//! - Active answers are cached no longer than their `exp` and the
//!   configured bound ([`cache_bound`](IntrospectionLayerBuilder::cache_bound),
//!   60 s by default); inactive answers for a shorter bound
//!   ([`inactive_cache_bound`](IntrospectionLayerBuilder::inactive_cache_bound),
//!   10 s). The cache is keyed by the SHA-256 of the token, never by the
//!   token, and holds at most
//!   [`cache_capacity`](IntrospectionLayerBuilder::cache_capacity) entries.
//! - Concurrent requests with one token share one call to the endpoint;
//!   at most [`max_concurrent_calls`](IntrospectionLayerBuilder::max_concurrent_calls)
//!   calls (256) are open at once, and a request that would open one more
//!   is answered 503 at once (a flood of random tokens cannot pile up
//!   calls).
//! - A token this layer had cached as active that the endpoint now calls
//!   inactive is put into the [`RevocationView`](crate::revocation::RevocationView)
//!   given to [`revocation`](IntrospectionLayerBuilder::revocation), so every
//!   layer sharing the view refuses it at once, its own cached answers
//!   included: under its `jti` when the answer had one (a
//!   [`JwtLayer`](crate::JwtLayer) refuses a JWT with that `jti` too),
//!   otherwise under [`revocation_key`] of the token. The entry lasts until
//!   the token's `exp` (one day when the answer had none). Given a
//!   [`RevocationStore`](crate::revocation::RevocationStore) instead
//!   ([`revocation_store`](IntrospectionLayerBuilder::revocation_store)),
//!   the layer also writes the entry to the store, which tells every
//!   instance's view. An inactive
//!   answer for a token never seen active adds nothing (a flood of random
//!   tokens cannot fill the view).
//! - The audience must be configured (or the weaker
//!   [`allow_any_audience`](IntrospectionLayerBuilder::allow_any_audience)
//!   spelled out): otherwise a token the provider issued for another
//!   resource server would pass here.
//! - An inactive token is a 401 `invalid_token`; so is an answer whose
//!   `exp` has passed, whose `nbf` is ahead, whose `iss` or `aud` is not the
//!   configured one, whose `token_type` is not `Bearer`, or that binds the
//!   token to its client (`cnf` of any method, `token_type: DPoP`): a
//!   sender-constrained token is not accepted as a bearer token.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis_jwt::Claims;
//! use portcullis_jwt::introspect::IntrospectionLayer;
//!
//! # fn demo() -> Result<(), portcullis_jwt::introspect::IntrospectionConfigError> {
//! let introspection = IntrospectionLayer::builder("https://auth.example.com/token/introspection")
//!     .client_secret_basic("api", "the api's client secret")
//!     .issuer("https://auth.example.com")
//!     .audience("https://api.example.com")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/me", get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }))
//!     .layer(introspection);
//! # Ok(()) }
//! ```
//!
//! # Events
//!
//! With an [`Events`](portcullis_core::events::Events) handle
//! ([`IntrospectionLayerBuilder::events`]) the layer emits, with source
//! `introspection`: `jwt_refused` (reason = [`IntrospectionError::reason`])
//! for every refused request; `store_unavailable` (`introspection`,
//! `introspect`) when the endpoint failed; `store_unavailable`
//! (`revocation`, `check`) when the revocation view is not ready. Each
//! decision is timed for the recorder (layer `introspection`). No event
//! carries a token or the client secret.

mod cache;
mod client;
mod layer;
mod service;

use std::fmt;

use http::HeaderValue;
use portcullis_core::Rejection;

pub use cache::{IntrospectedToken, revocation_key};
pub use layer::{IntrospectionLayer, IntrospectionLayerBuilder};
pub use service::Introspect;

use crate::error::{JwtErrorKind, challenge};

/// Why a request was refused by an [`IntrospectionLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IntrospectionErrorKind {
    /// No token where the layer looks for one.
    Missing,
    /// The request's credentials are malformed (two `Authorization`
    /// headers, a bearer token with spaces): 400.
    InvalidRequest,
    /// The token is longer than the configured limit; the endpoint is not
    /// asked.
    TooLarge,
    /// The endpoint answered `active: false`.
    Inactive,
    /// The answer's `exp` has passed (with the leeway).
    Expired,
    /// The answer's `nbf` is ahead (with the leeway).
    NotYetValid,
    /// The answer's `token_type` is not an access token's (`Bearer`).
    WrongTokenType,
    /// The token is sender-constrained (a `cnf` member of any confirmation
    /// method: `jkt`, `x5t#S256`, `jwk`, ...; or `token_type: DPoP`) and was
    /// sent as a bearer token.
    SenderConstrained,
    /// The answer's `iss` is missing or not the configured issuer.
    BadIssuer,
    /// The answer's `aud` is missing or names none of the configured
    /// audiences.
    BadAudience,
    /// The revocation view denies the token (its `jti`, `sid`, user
    /// version or [`revocation_key`]).
    Revoked,
    /// The introspection endpoint failed (unreachable, timed out, a status
    /// other than 200, a body that is not a strict RFC 7662 answer), or the
    /// most calls allowed at once are already open: 503.
    ProviderUnavailable,
    /// The revocation view has not loaded yet: 503.
    RevocationUnavailable,
}

/// A request refused by an [`IntrospectionLayer`]: its kind, and for a
/// provider failure, what failed (for logs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IntrospectionError {
    kind: IntrospectionErrorKind,
    provider: Option<&'static str>,
}

impl IntrospectionError {
    pub(crate) const fn new(kind: IntrospectionErrorKind) -> Self {
        Self {
            kind,
            provider: None,
        }
    }

    pub(crate) const fn provider(reason: &'static str) -> Self {
        Self {
            kind: IntrospectionErrorKind::ProviderUnavailable,
            provider: Some(reason),
        }
    }

    /// Why.
    #[must_use]
    pub const fn kind(&self) -> IntrospectionErrorKind {
        self.kind
    }

    /// For a provider failure, what failed: `provider-timeout`,
    /// `provider-unreachable`, `provider-status`, `provider-bad-answer`,
    /// `provider-too-large`, `provider-busy`, `provider-gone`.
    #[must_use]
    pub const fn provider_failure(&self) -> Option<&'static str> {
        self.provider
    }

    /// A short machine-readable reason, for logs and events.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self.kind {
            IntrospectionErrorKind::Missing => "missing",
            IntrospectionErrorKind::InvalidRequest => "invalid-request",
            IntrospectionErrorKind::TooLarge => "too-large",
            IntrospectionErrorKind::Inactive => "inactive",
            IntrospectionErrorKind::Expired => "expired",
            IntrospectionErrorKind::NotYetValid => "not-yet-valid",
            IntrospectionErrorKind::WrongTokenType => "wrong-token-type",
            IntrospectionErrorKind::SenderConstrained => "sender-constrained",
            IntrospectionErrorKind::BadIssuer => "bad-issuer",
            IntrospectionErrorKind::BadAudience => "bad-audience",
            IntrospectionErrorKind::Revoked => "revoked",
            IntrospectionErrorKind::ProviderUnavailable => "introspection-unavailable",
            IntrospectionErrorKind::RevocationUnavailable => "revocation-unavailable",
        }
    }

    /// The refusal: 401 without an error code when no token was sent, 400
    /// `invalid_request` for malformed credentials, 503 with `Retry-After`
    /// when the endpoint or the revocation view cannot answer, 401
    /// `invalid_token` with one uniform body for everything else.
    pub fn rejection(&self, realm: Option<&str>, retry_after: std::time::Duration) -> Rejection {
        let (rejection, kind) = match self.kind {
            IntrospectionErrorKind::ProviderUnavailable
            | IntrospectionErrorKind::RevocationUnavailable => {
                return Rejection::unavailable("a backing service is unavailable; retry shortly")
                    .with_retry_after(retry_after)
                    .with_reason(self.reason());
            }
            IntrospectionErrorKind::Missing => (
                Rejection::unauthenticated("an access token is required"),
                JwtErrorKind::Missing,
            ),
            IntrospectionErrorKind::InvalidRequest => (
                Rejection::bad_request("the request's credentials are malformed"),
                JwtErrorKind::InvalidRequest,
            ),
            _ => (
                Rejection::unauthenticated("the access token is invalid"),
                JwtErrorKind::Revoked,
            ),
        };
        let value = challenge(kind, realm, None);
        let value =
            HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        rejection.with_challenge(value).with_reason(self.reason())
    }
}

impl fmt::Debug for IntrospectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionError")
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .finish()
    }
}

impl fmt::Display for IntrospectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.provider {
            Some(p) => write!(f, "access token refused: {} ({p})", self.reason()),
            None => write!(f, "access token refused: {}", self.reason()),
        }
    }
}

impl std::error::Error for IntrospectionError {}

/// An [`IntrospectionLayer`] configuration that cannot be safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectionConfigError {
    /// The endpoint is not `https` (plain `http` only to a loopback host).
    #[error("the introspection endpoint must be https (plain http only for loopback)")]
    InsecureUrl,
    /// No audience, and no explicit
    /// [`allow_any_audience`](IntrospectionLayerBuilder::allow_any_audience).
    #[error("configure this service's audience (or call allow_any_audience explicitly)")]
    AudienceNotConfigured,
    /// No client authentication: RFC 7662 endpoints require it.
    #[error("configure the client authentication (client_secret_basic)")]
    NoClientAuthentication,
    /// A client id or secret that is empty or holds a control character.
    #[error("the client id and secret must be non-empty and free of control characters")]
    BadClientCredentials,
    /// A zero timeout, token size limit, response size limit, cache
    /// capacity or call limit.
    #[error("the timeout and the size limits must be positive")]
    ZeroLimit,
    /// The TLS client cannot be built.
    #[error("the TLS client cannot be built: {0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rejections_by_kind() {
        use IntrospectionErrorKind as K;
        let cases: [(K, u16, Option<&str>); 6] = [
            (K::Missing, 401, Some("Bearer")),
            (
                K::InvalidRequest,
                400,
                Some("Bearer error=\"invalid_request\""),
            ),
            (K::Inactive, 401, Some("Bearer error=\"invalid_token\"")),
            (
                K::SenderConstrained,
                401,
                Some("Bearer error=\"invalid_token\""),
            ),
            (K::ProviderUnavailable, 503, None),
            (K::RevocationUnavailable, 503, None),
        ];
        for (kind, status, challenge) in cases {
            let r = IntrospectionError::new(kind).rejection(None, Duration::from_secs(2));
            assert_eq!(r.status().as_u16(), status, "{kind:?}");
            assert_eq!(
                r.challenge().map(|v| v.to_str().unwrap()),
                challenge,
                "{kind:?}"
            );
            if status == 503 {
                assert_eq!(r.retry_after(), Some(Duration::from_secs(2)));
            }
        }
    }
}
