//! `InstrumentedStore`: a [`SessionStore`] wrapper that shows every call
//! to a [`StoreObserver`] (counting, fault injection, metrics).

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::store::{CallCounter, StoreObserver, observe};
use portcullis_core::{StoreError, Timestamp, TokenDigest};

use super::record::{CreateOutcome, SessionCap, SessionRecord, SessionUpdate};
use super::session_store::SessionStore;

/// Wraps a store and runs every call under an observer: the observer is
/// asked before the call (and may fail it without reaching the store) and
/// told the outcome after. Operation names are the method names
/// (`"create"`, `"load"`, `"update"`, `"touch"`, `"delete"`,
/// `"list_for_user"`, `"delete_for_user"`, `"count_for_user"`).
///
/// Two observers come ready-made: [`CountingStore`] counts calls (a
/// [`CallCounter`]), and [`FaultyStore`](crate::testing::FaultyStore)
/// (feature `testing`) fails every call while a switch is on.
///
/// ```
/// use portcullis_session::store::{CountingStore, SessionStore as _, TokenDigest};
/// use portcullis_session::MemoryStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = CountingStore::new(MemoryStore::new());
/// let counter = store.counter();
/// store.load(&TokenDigest::of(b"nobody")).await.unwrap();
/// assert_eq!(counter.get("load"), 1);
/// assert_eq!(counter.total(), 1);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct InstrumentedStore<S, O> {
    inner: S,
    observer: O,
}

/// A store whose calls are counted per operation (dashboards, tests, the
/// simulator's "store operations per request" column).
pub type CountingStore<S> = InstrumentedStore<S, Arc<CallCounter>>;

impl<S, O> InstrumentedStore<S, O> {
    /// Wraps `inner`, showing every call to `observer`.
    pub const fn with_observer(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }

    /// The wrapped store.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The observer.
    pub const fn observer(&self) -> &O {
        &self.observer
    }
}

impl<S> InstrumentedStore<S, Arc<CallCounter>> {
    /// Wraps `inner` with a fresh [`CallCounter`].
    pub fn new(inner: S) -> Self {
        Self::with_observer(inner, Arc::default())
    }

    /// The counter, shared with every clone of this store.
    #[must_use]
    pub fn counter(&self) -> Arc<CallCounter> {
        Arc::clone(&self.observer)
    }
}

#[async_trait]
impl<S: SessionStore, O: StoreObserver> SessionStore for InstrumentedStore<S, O> {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        observe(
            &self.observer,
            "create",
            self.inner.create(key, record, cap),
        )
        .await
    }
    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        observe(&self.observer, "load", self.inner.load(key)).await
    }
    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        observe(&self.observer, "update", self.inner.update(key, update)).await
    }
    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        let call = self.inner.touch(key, last_seen, idle_deadline);
        observe(&self.observer, "touch", call).await
    }
    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        observe(&self.observer, "delete", self.inner.delete(key)).await
    }
    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        observe(
            &self.observer,
            "list_for_user",
            self.inner.list_for_user(user_id),
        )
        .await
    }
    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        let call = self.inner.delete_for_user(user_id, except);
        observe(&self.observer, "delete_for_user", call).await
    }
    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        observe(
            &self.observer,
            "count_for_user",
            self.inner.count_for_user(user_id),
        )
        .await
    }
}
