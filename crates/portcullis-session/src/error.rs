//! `SessionError`: what a session operation or extractor can fail with.

use std::fmt;
use std::time::Duration;

use portcullis_core::{BoxError, Rejection, StoreError};

/// The class of a [`SessionError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionErrorKind {
    /// The store is unavailable (503). The session is not lost: retry.
    Unavailable,
    /// Nobody is logged in on this session (401).
    NotAuthenticated,
    /// The user has the maximum number of sessions and the cap refuses new
    /// logins (403).
    LimitReached,
    /// A value could not be serialized, or a stored value does not decode
    /// as the requested type (500).
    Serialization,
    /// `SessionLayer` is not installed on this route (500).
    LayerMissing,
    /// The operating system's random source failed (500).
    Random,
    /// The application tried to write or remove a data key under the
    /// reserved prefix [`AUTH_PREFIX`](crate::AUTH_PREFIX), which holds how
    /// and when the user authenticated (500: a bug in the application).
    ReservedKey,
}

/// A failed session operation. Behind the `axum` feature it is also an
/// `IntoResponse`, so handlers can use `?`.
pub struct SessionError {
    kind: SessionErrorKind,
    source: Option<BoxError>,
    retry_after: Duration,
}

impl SessionError {
    pub(crate) fn new(kind: SessionErrorKind) -> Self {
        Self {
            kind,
            source: None,
            retry_after: Duration::from_secs(1),
        }
    }

    pub(crate) fn with_source(kind: SessionErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
            retry_after: Duration::from_secs(1),
        }
    }

    pub(crate) fn unavailable(source: StoreError, retry_after: Duration) -> Self {
        Self {
            kind: SessionErrorKind::Unavailable,
            source: Some(Box::new(source)),
            retry_after,
        }
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> SessionErrorKind {
        self.kind
    }

    /// The refusal this error becomes.
    pub fn rejection(&self) -> Rejection {
        match self.kind {
            SessionErrorKind::Unavailable => {
                Rejection::unavailable("a backing store is unavailable; retry shortly")
                    .with_retry_after(self.retry_after)
                    .with_reason("session-store-unavailable")
            }
            SessionErrorKind::NotAuthenticated => {
                Rejection::unauthenticated("authentication required").with_reason("no-session")
            }
            SessionErrorKind::LimitReached => {
                Rejection::forbidden("too many active sessions for this user")
                    .with_reason("session-cap")
            }
            SessionErrorKind::Serialization => {
                Rejection::internal("session data error").with_reason("session-serialization")
            }
            SessionErrorKind::LayerMissing => {
                Rejection::internal("SessionLayer is not installed on this route")
                    .with_reason("session-layer-missing")
            }
            SessionErrorKind::Random => {
                Rejection::internal("random source failed").with_reason("random")
            }
            SessionErrorKind::ReservedKey => {
                Rejection::internal("session data error").with_reason("session-reserved-key")
            }
        }
    }
}

impl fmt::Debug for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            SessionErrorKind::Unavailable => "the session store is unavailable",
            SessionErrorKind::NotAuthenticated => "nobody is logged in on this session",
            SessionErrorKind::LimitReached => "the user has the maximum number of sessions",
            SessionErrorKind::Serialization => "a session value could not be (de)serialized",
            SessionErrorKind::LayerMissing => "SessionLayer is not installed on this route",
            SessionErrorKind::Random => "the operating system's random source failed",
            SessionErrorKind::ReservedKey => {
                "session keys starting with \"~auth:\" are reserved for the authentication state"
            }
        })
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
