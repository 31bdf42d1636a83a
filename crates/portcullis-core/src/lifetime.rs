//! Idle and absolute lifetimes, and the retry loop for colliding creates.
//!
//! Sessions and refresh families live under the same two limits: an idle
//! timeout that each use slides forward, and an absolute lifetime counted
//! from login that nothing extends (OWASP's session management guidance).
//!
//! ```
//! use std::time::Duration;
//! use portcullis_core::lifetime::Lifetimes;
//! use portcullis_core::Timestamp;
//!
//! let lifetimes = Lifetimes::new(Duration::from_secs(60), Duration::from_secs(90)).unwrap();
//! let t0 = Timestamp::from_millis(0);
//! let d = lifetimes.start(t0);
//! assert_eq!(d.expires_at(), Timestamp::from_millis(60_000));
//! // A use at 50 s slides the idle deadline, never past the absolute one.
//! let slid = lifetimes.slide(d, Timestamp::from_millis(50_000));
//! assert_eq!(slid.expires_at(), Timestamp::from_millis(90_000));
//! ```

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::store::{StoreError, StoreErrorKind};

/// An idle timeout and an absolute lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    idle: Duration,
    absolute: Duration,
}

/// Lifetimes that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lifetimes must be non-zero with the idle timeout at most the absolute lifetime")]
pub struct LifetimesError;

impl Lifetimes {
    /// `idle` slides with use; `absolute` never moves.
    ///
    /// # Errors
    ///
    /// [`LifetimesError`] when either is zero or `idle > absolute`.
    pub fn new(idle: Duration, absolute: Duration) -> Result<Self, LifetimesError> {
        if idle.is_zero() || absolute.is_zero() || idle > absolute {
            return Err(LifetimesError);
        }
        Ok(Self { idle, absolute })
    }

    /// The idle timeout.
    #[must_use]
    pub const fn idle(&self) -> Duration {
        self.idle
    }

    /// The absolute lifetime.
    #[must_use]
    pub const fn absolute(&self) -> Duration {
        self.absolute
    }

    /// The deadlines of something created at `now`.
    #[must_use]
    pub fn start(&self, now: Timestamp) -> Deadlines {
        let absolute = now + self.absolute;
        Deadlines {
            idle: (now + self.idle).min(absolute),
            absolute,
        }
    }

    /// The idle deadline a use at `now` asks for (before the absolute
    /// bound applies).
    #[must_use]
    pub fn idle_from(&self, now: Timestamp) -> Timestamp {
        now + self.idle
    }

    /// `deadlines` after a use at `now`: the idle deadline moves to
    /// `now + idle`, never past the absolute deadline and never back.
    #[must_use]
    pub fn slide(&self, deadlines: Deadlines, now: Timestamp) -> Deadlines {
        deadlines.extended_to(self.idle_from(now))
    }
}

/// When something ends: the earlier of its idle and absolute deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadlines {
    /// Ends here unless used again.
    pub idle: Timestamp,
    /// Ends here whatever happens.
    pub absolute: Timestamp,
}

impl Deadlines {
    /// The earlier deadline.
    #[must_use]
    pub fn expires_at(&self) -> Timestamp {
        self.idle.min(self.absolute)
    }

    /// Whether it has ended at `now`.
    #[must_use]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at()
    }

    /// The idle deadline moved to `idle` when that is later, never past
    /// the absolute deadline (a late writer never shortens a session that
    /// another request extended).
    #[must_use]
    pub fn extended_to(self, idle: Timestamp) -> Self {
        Self {
            idle: self.idle.max(idle.min(self.absolute)),
            absolute: self.absolute,
        }
    }
}

/// How many times a create is tried again after an id collision.
pub const CONFLICT_RETRIES: usize = 2;

/// An error that may be a lost race on a fresh id ([`StoreErrorKind::Conflict`]).
pub trait MaybeConflict {
    /// Whether trying again with a fresh id may succeed.
    fn is_conflict(&self) -> bool;
}

impl MaybeConflict for StoreError {
    fn is_conflict(&self) -> bool {
        self.kind() == StoreErrorKind::Conflict
    }
}

/// Runs `attempt` (which draws a fresh random id each time) until it does
/// not fail with a conflict, at most [`CONFLICT_RETRIES`] more times. With
/// 256-bit ids a conflict means a broken random source or a store bug, so
/// the bound is small; the last error is returned.
///
/// # Errors
///
/// The first error that is not a conflict, or the last conflict.
pub async fn retry_on_conflict<T, E, Fut>(mut attempt: impl FnMut() -> Fut) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: MaybeConflict,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if e.is_conflict() && retries < CONFLICT_RETRIES => retries += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: u64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn lifetimes_table() {
        let secs = Duration::from_secs;
        assert!(Lifetimes::new(secs(0), secs(1)).is_err());
        assert!(Lifetimes::new(secs(1), secs(0)).is_err());
        assert!(Lifetimes::new(secs(2), secs(1)).is_err());
        let l = Lifetimes::new(secs(10), secs(25)).unwrap();
        // (start, uses, expected expiry)
        let cases: &[(&[u64], u64)] = &[
            (&[], 10),
            (&[5], 15),
            (&[5, 12], 22),
            (&[5, 12, 20], 25),
            // A late writer with an older use never shortens it.
            (&[12, 5], 22),
        ];
        for (uses, want) in cases {
            let mut d = l.start(ts(0));
            for u in *uses {
                d = l.slide(d, ts(*u));
            }
            assert_eq!(d.expires_at(), ts(*want), "{uses:?}");
            assert!(d.is_expired(ts(*want)));
            assert!(!d.is_expired(Timestamp::from_millis(ts(*want).millis() - 1)));
        }
    }

    #[tokio::test]
    async fn retries_conflicts_a_bounded_number_of_times() {
        for (conflicts, want_ok, want_calls) in [(0, true, 1), (2, true, 3), (5, false, 3)] {
            let mut calls = 0;
            let result = retry_on_conflict(|| {
                calls += 1;
                let n = calls;
                async move {
                    if n <= conflicts {
                        Err(StoreError::conflict())
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
            assert_eq!(result.is_ok(), want_ok, "{conflicts}");
            assert_eq!(calls, want_calls, "{conflicts}");
        }
        let mut calls = 0;
        let result: Result<(), _> = retry_on_conflict(|| {
            calls += 1;
            async { Err(StoreError::timeout()) }
        })
        .await;
        assert!(result.unwrap_err().is_unavailable());
        assert_eq!(calls, 1, "only conflicts are retried");
    }
}
