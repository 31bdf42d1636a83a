//! Errors: why a request was refused ([`CsrfError`]) and why a
//! configuration cannot work ([`ConfigError`]).

use std::fmt;

use portcullis_core::{CookieConfigError, OriginError, Rejection};
use tower_http::csrf::ProtectionErrorKind;

/// Why a request was refused, or why a token could not be rendered.
///
/// Attached to the extensions of every refusal the layer writes (next to the
/// core [`Rejection`]), and named in the `reason` field of the layer's
/// tracing events. The client never learns it: every CSRF refusal has the
/// same 403 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CsrfErrorKind {
    /// Fetch Metadata or `Origin` mark the request as cross-origin
    /// (tower-http's check refused it), or a WebSocket upgrade came from
    /// another origin (403).
    CrossOrigin,
    /// An unsafe request carried no token in the header or the form (403).
    Missing,
    /// The token is not a well-formed masked token: wrong length, wrong
    /// alphabet, truncated (403).
    Malformed,
    /// The token is well formed but does not match this session's secret or
    /// binding (403).
    Mismatch,
    /// A token was sent, but the secret or binding it was made for is gone:
    /// the session ended, was renewed (login), or no pre-session cookie came
    /// with the request (403).
    Expired,
    /// The form body is larger than the configured limit (413).
    BodyTooLarge,
    /// The form body could not be read (the client aborted it) (400).
    BodyUnreadable,
    /// The session store is unavailable (503).
    SessionUnavailable,
    /// Session-bound tokens need `SessionLayer` outside `CsrfLayer`, and it
    /// is not there (500).
    SessionLayerMissing,
    /// The token extractor was used on a route without a token-checking
    /// `CsrfLayer` (500).
    LayerMissing,
    /// The operating system's random source failed (500).
    Random,
}

impl CsrfErrorKind {
    /// A short stable name, used as the tracing `reason` and the
    /// [`Rejection::reason`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CrossOrigin => "csrf-cross-origin",
            Self::Missing => "csrf-token-missing",
            Self::Malformed => "csrf-token-malformed",
            Self::Mismatch => "csrf-token-mismatch",
            Self::Expired => "csrf-token-expired",
            Self::BodyTooLarge => "csrf-body-too-large",
            Self::BodyUnreadable => "csrf-body-unreadable",
            Self::SessionUnavailable => "csrf-session-unavailable",
            Self::SessionLayerMissing => "csrf-session-layer-missing",
            Self::LayerMissing => "csrf-layer-missing",
            Self::Random => "csrf-random",
        }
    }
}

/// A CSRF refusal or failure. Opaque: match on [`CsrfError::kind`].
///
/// Holds no token, cookie or key, so it is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfError {
    kind: CsrfErrorKind,
    protection: Option<ProtectionErrorKind>,
}

impl CsrfError {
    pub(crate) const fn new(kind: CsrfErrorKind) -> Self {
        Self {
            kind,
            protection: None,
        }
    }

    pub(crate) const fn with_protection(
        kind: CsrfErrorKind,
        protection: Option<ProtectionErrorKind>,
    ) -> Self {
        Self { kind, protection }
    }

    /// Why.
    #[must_use]
    pub const fn kind(&self) -> CsrfErrorKind {
        self.kind
    }

    /// For [`CsrfErrorKind::CrossOrigin`]: tower-http's own verdict
    /// (`Sec-Fetch-Site` said cross-origin, or the `Origin` fallback failed).
    #[must_use]
    pub const fn protection_kind(&self) -> Option<ProtectionErrorKind> {
        self.protection
    }

    /// The refusal this error becomes. Every 403 has the same detail, so the
    /// body does not say which check failed.
    pub fn rejection(&self) -> Rejection {
        let r = match self.kind {
            CsrfErrorKind::CrossOrigin
            | CsrfErrorKind::Missing
            | CsrfErrorKind::Malformed
            | CsrfErrorKind::Mismatch
            | CsrfErrorKind::Expired => Rejection::forbidden(FORBIDDEN_DETAIL),
            CsrfErrorKind::BodyTooLarge => {
                Rejection::payload_too_large("the request body is larger than allowed")
            }
            CsrfErrorKind::BodyUnreadable => {
                Rejection::bad_request("the request body could not be read")
            }
            // The default Retry-After of core's rejection.
            CsrfErrorKind::SessionUnavailable => {
                Rejection::unavailable("a backing store is unavailable; retry shortly")
            }
            CsrfErrorKind::SessionLayerMissing => {
                Rejection::internal("SessionLayer is not installed outside CsrfLayer")
            }
            CsrfErrorKind::LayerMissing => {
                Rejection::internal("CsrfLayer with tokens is not installed on this route")
            }
            CsrfErrorKind::Random => Rejection::internal("random source failed"),
        };
        r.with_reason(self.kind.as_str())
    }
}

/// The client-facing detail of every CSRF 403.
pub(crate) const FORBIDDEN_DETAIL: &str =
    "the request was refused by cross-site request forgery protection";

impl fmt::Display for CsrfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            CsrfErrorKind::CrossOrigin => "cross-origin request refused",
            CsrfErrorKind::Missing => "no CSRF token in the request",
            CsrfErrorKind::Malformed => "the CSRF token is malformed",
            CsrfErrorKind::Mismatch => "the CSRF token does not match",
            CsrfErrorKind::Expired => "the CSRF token's secret or binding is gone",
            CsrfErrorKind::BodyTooLarge => "the form body is larger than the limit",
            CsrfErrorKind::BodyUnreadable => "the form body could not be read",
            CsrfErrorKind::SessionUnavailable => "the session store is unavailable",
            CsrfErrorKind::SessionLayerMissing => "SessionLayer is not installed outside CsrfLayer",
            CsrfErrorKind::LayerMissing => "CsrfLayer with tokens is not installed on this route",
            CsrfErrorKind::Random => "the operating system's random source failed",
        })
    }
}

impl std::error::Error for CsrfError {}

/// A [`CsrfConfig`](crate::CsrfConfig) that cannot work, reported by
/// [`CsrfLayer::new`](crate::CsrfLayer::new).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A trusted or public origin is not `scheme://host[:port]` with an
    /// http(s) scheme and nothing else (tower-http's validation says why).
    #[error(transparent)]
    InvalidOrigin(#[from] OriginError),
    /// The signing key is shorter than 32 bytes.
    #[error("the CSRF signing key must be at least 32 bytes")]
    KeyTooShort,
    /// The form field name is empty or not plain ASCII (letters, digits,
    /// `-`, `_`, `.`).
    #[error("invalid CSRF form field name {0:?}")]
    InvalidFieldName(String),
    /// An exempt path is not an absolute path (`/...`) without query,
    /// fragment or whitespace.
    #[error("invalid exempt path {0:?}: give an absolute path without query or fragment")]
    InvalidExemptPath(String),
    /// The body limit is zero.
    #[error("the form body limit must be at least 1 byte")]
    ZeroBodyLimit,
    /// The pre-session cookie settings are refused by browsers.
    #[error(transparent)]
    Cookie(#[from] CookieConfigError),
    /// An option was set that only signed tokens use.
    #[error("{0} only applies to signed tokens (CsrfConfig::signed)")]
    SignedOnly(&'static str),
}
