//! Store timing for the recorder: [`StoreEvents`].

use std::time::Duration;

use super::bus::Events;
use crate::store::{StoreError, StoreErrorKind, StoreObserver};

/// A [`StoreObserver`] that times every call of an instrumented store for
/// the recorder's store-latency histogram: wrap a store with it
/// (`InstrumentedStore::with_observer(store, StoreEvents::new("redis", events))`).
#[derive(Debug, Clone)]
pub struct StoreEvents {
    store: &'static str,
    events: Events,
}

impl StoreEvents {
    /// Times the calls of the store named `store` (`redis`, `postgres`,
    /// `memory`, ...).
    #[must_use]
    pub const fn new(store: &'static str, events: Events) -> Self {
        Self { store, events }
    }
}

/// The name of a store error kind, as recorded.
const fn kind_name(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Backend => "backend",
        StoreErrorKind::Timeout => "timeout",
        StoreErrorKind::Conflict => "conflict",
        StoreErrorKind::NotFound => "not_found",
        StoreErrorKind::Corrupt => "corrupt",
    }
}

impl StoreObserver for StoreEvents {
    fn timed(&self) -> bool {
        self.events.recorder().is_some()
    }

    fn took(&self, op: &'static str, outcome: Result<(), &StoreError>, elapsed: Duration) {
        if let Some(recorder) = self.events.recorder() {
            let error = outcome.err().map(|e| kind_name(e.kind()));
            recorder.store_call(self.store, op, error, elapsed);
        }
    }
}
