//! The error every store returns.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A boxed error from a store's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend failed or could not be reached: the answer is unknown,
    /// so layers fail closed with 503 and never treat it as "logged out".
    Backend,
    /// The backend did not answer in time (also unknown: 503).
    Timeout,
    /// The write conflicts with an existing record (an id collision on
    /// create, a lost compare-and-swap).
    Conflict,
    /// The record does not exist (deleted or expired).
    NotFound,
    /// The record exists but cannot be read (a corrupt file): an error for
    /// that record only.
    Corrupt,
}

/// The error of every store trait in portcullis.
///
/// Opaque, with a [`kind`](StoreError::kind) accessor and the backend's own
/// error as [`source`](std::error::Error::source).
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
}

impl StoreError {
    /// The backend failed; `source` is its error.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self {
            kind: StoreErrorKind::Backend,
            source: Some(source.into()),
        }
    }

    /// The backend did not answer in time.
    #[must_use]
    pub const fn timeout() -> Self {
        Self {
            kind: StoreErrorKind::Timeout,
            source: None,
        }
    }

    /// The write conflicts with an existing record.
    #[must_use]
    pub const fn conflict() -> Self {
        Self {
            kind: StoreErrorKind::Conflict,
            source: None,
        }
    }

    /// The record does not exist.
    #[must_use]
    pub const fn not_found() -> Self {
        Self {
            kind: StoreErrorKind::NotFound,
            source: None,
        }
    }

    /// The record cannot be read; `source` says why.
    pub fn corrupt(source: impl Into<BoxError>) -> Self {
        Self {
            kind: StoreErrorKind::Corrupt,
            source: Some(source.into()),
        }
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the store's state is unknown (backend failure or timeout):
    /// callers must fail closed and must not assume the record is gone.
    #[must_use]
    pub const fn is_unavailable(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Backend | StoreErrorKind::Timeout)
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Backend => "store backend failed",
            StoreErrorKind::Timeout => "store backend timed out",
            StoreErrorKind::Conflict => "store write conflicts with an existing record",
            StoreErrorKind::NotFound => "store record not found",
            StoreErrorKind::Corrupt => "store record is corrupt",
        })
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A shared on/off switch for fault injection: the test wrappers around
/// stores (`FaultyStore`, `FaultyRefreshStore`) fail every call with a
/// backend error while it is on, to show what an outage does.
///
/// ```
/// use portcullis_core::store::FaultSwitch;
///
/// let switch = FaultSwitch::new();
/// assert!(switch.check().is_ok());
/// switch.shared().store(true, std::sync::atomic::Ordering::SeqCst);
/// assert!(switch.check().unwrap_err().is_unavailable());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    failing: Arc<AtomicBool>,
}

impl FaultSwitch {
    /// A switch, off.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The flag itself, shared with every clone: `true` makes calls fail.
    #[must_use]
    pub fn shared(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.failing)
    }

    /// `Err` (a backend error, "connection refused") while the switch is on.
    ///
    /// # Errors
    ///
    /// A [`StoreErrorKind::Backend`] error while the switch is on.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "store is down (injected)",
            )))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kinds_and_sources() {
        let e = StoreError::backend(std::io::Error::other("boom"));
        assert!(e.is_unavailable());
        assert_eq!(e.source().unwrap().to_string(), "boom");
        assert!(StoreError::timeout().is_unavailable());
        assert!(!StoreError::conflict().is_unavailable());
        assert!(!StoreError::not_found().is_unavailable());
        assert_eq!(
            StoreError::corrupt("bad json").kind(),
            StoreErrorKind::Corrupt
        );
    }
}
