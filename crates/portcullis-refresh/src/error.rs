//! Refresh errors and their responses, and the configuration error.

use std::fmt;
use std::time::Duration;

use portcullis_core::lifetime::MaybeConflict;
use portcullis_core::{BoxError, CookieConfigError, Rejection, StoreError, StoreErrorKind};
use portcullis_jwt::dpop::DpopError;

/// The class of a [`RefreshError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshErrorKind {
    /// The refresh token is unknown, expired, revoked or reused (401; the
    /// cookie is cleared). The client sees one uniform answer.
    InvalidGrant,
    /// The request needs a valid access token (401).
    Unauthenticated,
    /// The store is unavailable (503): nothing was consumed, retry with the
    /// same token.
    Unavailable,
    /// Malformed request: no token, a token in both the cookie and the body,
    /// a body that is not the expected JSON (400).
    BadRequest,
    /// The body is larger than the limit (413).
    TooLarge,
    /// A cookie-borne request, or a login that would set the cookie, that
    /// Fetch Metadata or `Origin` mark as cross-site (403).
    CrossSite,
    /// No such device for this user (404).
    NotFound,
    /// Instances disagree on the rotation key (503, logged): configure one
    /// shared key.
    Conflict,
    /// A DPoP proof the request needed is missing or invalid, or was
    /// signed by another key than the one the refresh family is bound to
    /// (401 with a `DPoP` challenge; nothing consumed, the cookie kept).
    DpopProof,
    /// Signing or randomness failed (500).
    Internal,
}

/// A failed refresh operation.
pub struct RefreshError {
    kind: RefreshErrorKind,
    reason: &'static str,
    source: Option<BoxError>,
}

impl RefreshError {
    pub(crate) const fn new(kind: RefreshErrorKind, reason: &'static str) -> Self {
        Self {
            kind,
            reason,
            source: None,
        }
    }

    pub(crate) fn store(e: StoreError) -> Self {
        Self {
            kind: RefreshErrorKind::Unavailable,
            reason: "store-unavailable",
            source: Some(Box::new(e)),
        }
    }

    /// A refused DPoP proof: its reason; a 503 when the proof's replay
    /// cache cannot answer.
    pub(crate) fn dpop(e: DpopError) -> Self {
        let kind = if e.is_unavailable() {
            RefreshErrorKind::Unavailable
        } else {
            RefreshErrorKind::DpopProof
        };
        Self {
            kind,
            reason: e.reason(),
            source: Some(Box::new(e)),
        }
    }

    pub(crate) fn internal(reason: &'static str, e: impl Into<BoxError>) -> Self {
        Self {
            kind: RefreshErrorKind::Internal,
            reason,
            source: Some(e.into()),
        }
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> RefreshErrorKind {
        self.kind
    }

    /// A machine-readable reason (for logs; not shown to clients).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        self.reason
    }

    /// The refusal (without cookie handling, which the layer adds).
    pub fn rejection(&self, retry_after: Duration) -> Rejection {
        let r = match self.kind {
            RefreshErrorKind::InvalidGrant => {
                Rejection::unauthenticated("the refresh token is invalid")
            }
            RefreshErrorKind::Unauthenticated => {
                Rejection::unauthenticated("an access token is required")
                    .with_challenge(http::HeaderValue::from_static("Bearer"))
            }
            RefreshErrorKind::Unavailable | RefreshErrorKind::Conflict => {
                Rejection::unavailable("a backing store is unavailable; retry shortly")
                    .with_retry_after(retry_after)
            }
            RefreshErrorKind::BadRequest => {
                Rejection::bad_request("the refresh request is malformed")
            }
            RefreshErrorKind::TooLarge => {
                Rejection::payload_too_large("the refresh request is too large")
            }
            RefreshErrorKind::CrossSite => {
                Rejection::forbidden("cross-site requests to the refresh endpoints are refused")
            }
            RefreshErrorKind::NotFound => {
                Rejection::new(portcullis_core::RejectionKind::NotFound, "no such device")
            }
            RefreshErrorKind::DpopProof => {
                match self
                    .source
                    .as_deref()
                    .and_then(|e| e.downcast_ref::<DpopError>())
                {
                    // The verifier's challenge (`algs`, `error`, a nonce).
                    Some(e) => e.rejection(),
                    None => Rejection::unauthenticated("a DPoP proof is required")
                        .with_challenge(http::HeaderValue::from_static("DPoP")),
                }
            }
            RefreshErrorKind::Internal => Rejection::internal("the token could not be issued"),
        };
        r.with_reason(self.reason)
    }
}

impl MaybeConflict for RefreshError {
    /// A store conflict (an id collision on create): a fresh id may work.
    fn is_conflict(&self) -> bool {
        self.source
            .as_deref()
            .and_then(|e| e.downcast_ref::<StoreError>())
            .is_some_and(|e| e.kind() == StoreErrorKind::Conflict)
    }
}

impl fmt::Debug for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshError")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refresh refused: {}", self.reason)
    }
}

impl std::error::Error for RefreshError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshConfigError {
    /// The cookie settings are refused by browsers.
    #[error(transparent)]
    Cookie(#[from] CookieConfigError),
    /// The prefix is not an absolute path without a trailing slash.
    #[error("the prefix must start with '/' and not end with '/'")]
    Prefix,
    /// Zero or inconsistent lifetimes, or a grace window above 60 s.
    #[error("lifetimes must be non-zero, idle at most absolute, grace at most 60 s")]
    Lifetimes,
    /// A rotation key shorter than 32 bytes.
    #[error("the rotation key needs at least 32 bytes")]
    RotationKeyTooShort,
    /// A trusted origin that is not `scheme://host[:port]`.
    #[error("invalid trusted origin: {0}")]
    Origin(String),
    /// A per-user family cap of zero.
    #[error("the per-user family cap must be at least 1")]
    FamilyCap,
}
