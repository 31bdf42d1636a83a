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

/// A store's connection URL with its secrets removed, for `Debug`,
/// `Display` and errors: the user-info (`user:password@`, up to the last
/// `@`, whatever the password holds) and the whole query (which can carry
/// `password=`, `sslpassword=` or a key) become `REDACTED`; the scheme,
/// host, port and path stay. Text that is not a `scheme://` URL (a
/// `key=value` connection string, a mistake) is redacted whole, except a
/// plain `sqlite:` file name.
///
/// ```
/// use portcullis_core::store::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/app?sslmode=require&password=x"),
///     "postgres://REDACTED@db:5432/app?REDACTED"
/// );
/// assert_eq!(redact_url("postgres://app:a?b@c@db/app"), "postgres://REDACTED@db/app");
/// assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
/// assert_eq!(redact_url("sqlite://auth.db"), "sqlite://auth.db");
/// assert_eq!(redact_url("sqlite:auth.db"), "sqlite:auth.db");
/// assert_eq!(redact_url("host=db password=s3cret"), "REDACTED");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        let plain_sqlite = url
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("sqlite:"))
            && !url.contains(['?', '@', ' ', '=']);
        return if plain_sqlite {
            url.to_owned()
        } else {
            "REDACTED".to_owned()
        };
    };
    let scheme = &url[..scheme_end];
    if !scheme
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return "REDACTED".to_owned();
    }
    let after = &url[scheme_end + 3..];
    // The user-info ends at the last `@`: a password may hold `?`, `#`,
    // `/` or `@` unescaped. An `@` in the query instead only makes this
    // redact more than needed.
    let (userinfo, rest) = match after.rfind('@') {
        Some(at) => (true, &after[at + 1..]),
        None => (false, after),
    };
    let (rest, had_query) = match rest.split_once('?') {
        Some((before, _)) => (before, true),
        None => (rest, false),
    };
    let mut out = format!("{scheme}://");
    if userinfo {
        out.push_str("REDACTED@");
    }
    out.push_str(rest);
    if had_query {
        out.push_str("?REDACTED");
    }
    out
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

/// Watches the calls made through an instrumented store: each layer crate
/// has one instrumenting wrapper per store trait (`InstrumentedStore` in
/// `portcullis-session`, `InstrumentedRefreshStore` in
/// `portcullis-refresh`) that asks its observer before every call and tells
/// it the outcome after. Counting calls ([`CallCounter`]) and injecting an
/// outage ([`FaultSwitch`]) are two observers; metrics are another.
pub trait StoreObserver: Send + Sync + fmt::Debug + 'static {
    /// Before `op` runs. An `Err` fails the call without reaching the
    /// store.
    ///
    /// # Errors
    ///
    /// Whatever the observer wants the call to fail with.
    fn before(&self, op: &'static str) -> Result<(), StoreError> {
        let _ = op;
        Ok(())
    }

    /// After `op` ran (or was failed by [`before`](StoreObserver::before)),
    /// with its outcome.
    fn after(&self, op: &'static str, outcome: Result<(), &StoreError>) {
        let _ = (op, outcome);
    }

    /// Whether this observer wants calls timed ([`took`](Self::took)):
    /// `false` by default, so that calls pay for no clock read.
    fn timed(&self) -> bool {
        false
    }

    /// After `op` ran, with how long it took, when
    /// [`timed`](Self::timed) says so.
    fn took(
        &self,
        op: &'static str,
        outcome: Result<(), &StoreError>,
        elapsed: std::time::Duration,
    ) {
        let _ = (op, outcome, elapsed);
    }
}

impl StoreObserver for FaultSwitch {
    fn before(&self, _: &'static str) -> Result<(), StoreError> {
        self.check()
    }
}

/// Runs one store call under `observer`.
///
/// # Errors
///
/// The observer's refusal, or the call's own error.
pub async fn observe<T, O: StoreObserver + ?Sized>(
    observer: &O,
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = observer.timed().then(std::time::Instant::now);
    let result = match observer.before(op) {
        Ok(()) => call.await,
        Err(e) => Err(e),
    };
    observer.after(op, result.as_ref().map(|_| ()));
    if let Some(started) = started {
        observer.took(op, result.as_ref().map(|_| ()), started.elapsed());
    }
    result
}

/// Counts store calls per operation name: the observer behind the
/// `CountingStore` wrappers (the simulator's "store operations" column,
/// tests that pin how many calls a request makes).
///
/// ```
/// use portcullis_core::store::{CallCounter, StoreObserver};
///
/// let counter = CallCounter::default();
/// counter.before("load").unwrap();
/// counter.before("load").unwrap();
/// assert_eq!(counter.get("load"), 2);
/// assert_eq!(counter.total(), 2);
/// ```
#[derive(Debug, Default)]
pub struct CallCounter {
    calls: std::sync::Mutex<Vec<(&'static str, u64)>>,
}

impl CallCounter {
    fn calls(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, u64)>> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls of `op` so far.
    #[must_use]
    pub fn get(&self, op: &str) -> u64 {
        self.calls()
            .iter()
            .find(|(name, _)| *name == op)
            .map_or(0, |(_, n)| *n)
    }

    /// Calls so far, every operation.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.calls().iter().map(|(_, n)| n).sum()
    }

    /// Calls so far per operation, in the order first seen.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.calls().clone()
    }
}

impl StoreObserver for CallCounter {
    fn before(&self, op: &'static str) -> Result<(), StoreError> {
        let mut calls = self.calls();
        match calls.iter_mut().find(|(name, _)| *name == op) {
            Some((_, n)) => *n += 1,
            None => calls.push((op, 1)),
        }
        Ok(())
    }
}

impl<O: StoreObserver> StoreObserver for Arc<O> {
    fn before(&self, op: &'static str) -> Result<(), StoreError> {
        (**self).before(op)
    }
    fn after(&self, op: &'static str, outcome: Result<(), &StoreError>) {
        (**self).after(op, outcome);
    }
    fn timed(&self) -> bool {
        (**self).timed()
    }
    fn took(
        &self,
        op: &'static str,
        outcome: Result<(), &StoreError>,
        elapsed: std::time::Duration,
    ) {
        (**self).took(op, outcome, elapsed);
    }
}

/// Two observers in turn: the first's refusal wins; both are told the
/// outcome (counting and metrics on one store).
impl<A: StoreObserver, B: StoreObserver> StoreObserver for (A, B) {
    fn before(&self, op: &'static str) -> Result<(), StoreError> {
        self.0.before(op)?;
        self.1.before(op)
    }
    fn after(&self, op: &'static str, outcome: Result<(), &StoreError>) {
        self.0.after(op, outcome);
        self.1.after(op, outcome);
    }
    fn timed(&self) -> bool {
        self.0.timed() || self.1.timed()
    }
    fn took(
        &self,
        op: &'static str,
        outcome: Result<(), &StoreError>,
        elapsed: std::time::Duration,
    ) {
        self.0.took(op, outcome, elapsed);
        self.1.took(op, outcome, elapsed);
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
