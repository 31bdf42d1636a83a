//! `CountingStore`: a wrapper that counts store operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp, TokenDigest};

use crate::record::{CreateOutcome, SessionCap, SessionRecord, SessionUpdate};
use crate::store::SessionStore;

/// Wraps a store and counts every call made through it (for dashboards,
/// tests and the simulator's "store operations per request" column).
///
/// ```
/// use portcullis_session::{CountingStore, MemoryStore};
///
/// let store = CountingStore::new(MemoryStore::new());
/// let counter = store.counter();
/// assert_eq!(counter.total(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    counter: Arc<OpCounter>,
}

/// Per-operation counters of a [`CountingStore`].
#[derive(Debug, Default)]
pub struct OpCounter {
    /// `create` calls.
    pub create: AtomicU64,
    /// `load` calls.
    pub load: AtomicU64,
    /// `update` calls.
    pub update: AtomicU64,
    /// `touch` calls.
    pub touch: AtomicU64,
    /// `delete` calls.
    pub delete: AtomicU64,
    /// per-user calls (`list_for_user`, `delete_for_user`, `count_for_user`).
    pub per_user: AtomicU64,
}

impl OpCounter {
    /// All calls so far.
    #[must_use]
    pub fn total(&self) -> u64 {
        [
            &self.create,
            &self.load,
            &self.update,
            &self.touch,
            &self.delete,
            &self.per_user,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S> CountingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counter: Arc::new(OpCounter::default()),
        }
    }

    /// The shared counters.
    #[must_use]
    pub fn counter(&self) -> Arc<OpCounter> {
        Arc::clone(&self.counter)
    }

    /// The wrapped store.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for CountingStore<S> {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        OpCounter::bump(&self.counter.create);
        self.inner.create(key, record, cap).await
    }
    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        OpCounter::bump(&self.counter.load);
        self.inner.load(key).await
    }
    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        OpCounter::bump(&self.counter.update);
        self.inner.update(key, update).await
    }
    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        OpCounter::bump(&self.counter.touch);
        self.inner.touch(key, last_seen, idle_deadline).await
    }
    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        OpCounter::bump(&self.counter.delete);
        self.inner.delete(key).await
    }
    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        OpCounter::bump(&self.counter.per_user);
        self.inner.list_for_user(user_id).await
    }
    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        OpCounter::bump(&self.counter.per_user);
        self.inner.delete_for_user(user_id, except).await
    }
    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        OpCounter::bump(&self.counter.per_user);
        self.inner.count_for_user(user_id).await
    }
}
