//! `InstrumentedRefreshStore`: a refresh store watched by a
//! [`StoreObserver`] (call counting, fault injection, metrics).

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::store::{CallCounter, StoreObserver, observe};
use portcullis_core::{StoreError, Timestamp};

use crate::family::{Family, RotateOutcome, Rotation};
use crate::store::RefreshStore;
use crate::token::FamilyId;

/// Wraps a refresh store and runs every call through `observer`: the
/// observer may refuse a call before it reaches the store (fault
/// injection) and sees every outcome (counting, metrics). Failed calls are
/// observed too: they reached the store.
///
/// Operation names are the trait's method names (`create`, `rotate`,
/// `get`, `revoke`, `revoke_user`, `list_user`, `purge_expired`).
///
/// ```
/// use portcullis_refresh::{CountingRefreshStore, MemoryRefreshStore};
///
/// let store = CountingRefreshStore::new(MemoryRefreshStore::new());
/// let counter = store.counter();
/// assert_eq!(counter.total(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct InstrumentedRefreshStore<S, O> {
    inner: S,
    observer: O,
}

/// A refresh store whose calls are counted per operation (dashboards,
/// tests, the simulator's "store operations per request" column).
pub type CountingRefreshStore<S> = InstrumentedRefreshStore<S, Arc<CallCounter>>;

impl<S, O: StoreObserver> InstrumentedRefreshStore<S, O> {
    /// Wraps `inner` with a fresh default observer (a zeroed counter, a
    /// fault switch that is off).
    pub fn new(inner: S) -> Self
    where
        O: Default,
    {
        Self::with_observer(inner, O::default())
    }

    /// Wraps `inner` with `observer`.
    pub const fn with_observer(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }

    /// The observer.
    pub const fn observer(&self) -> &O {
        &self.observer
    }

    /// The wrapped store.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped store, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> InstrumentedRefreshStore<S, Arc<CallCounter>> {
    /// The shared counter (clones of the store share it).
    #[must_use]
    pub fn counter(&self) -> Arc<CallCounter> {
        Arc::clone(&self.observer)
    }
}

#[async_trait]
impl<S: RefreshStore, O: StoreObserver> RefreshStore for InstrumentedRefreshStore<S, O> {
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        observe(
            &self.observer,
            "create",
            self.inner.create(family, max_per_user),
        )
        .await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        observe(&self.observer, "rotate", self.inner.rotate(rotation)).await
    }
    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        observe(&self.observer, "get", self.inner.get(id, now)).await
    }
    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        observe(&self.observer, "revoke", self.inner.revoke(id)).await
    }
    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        observe(
            &self.observer,
            "revoke_user",
            self.inner.revoke_user(user_id, except),
        )
        .await
    }
    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        observe(
            &self.observer,
            "list_user",
            self.inner.list_user(user_id, now),
        )
        .await
    }
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        observe(
            &self.observer,
            "purge_expired",
            self.inner.purge_expired(now),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use portcullis_core::store::FaultSwitch;
    use portcullis_core::{Deadlines, Timestamp};
    use serde_json::Map;

    use super::*;
    use crate::family::DeviceInfo;
    use crate::memory::MemoryRefreshStore;
    use crate::token::{RefreshToken, RotationKey};

    fn family(user: &str, now: Timestamp) -> (Family, RefreshToken) {
        let id = FamilyId::generate().unwrap();
        let token = RefreshToken::first(id.clone()).unwrap();
        let fam = Family {
            id,
            user_id: user.to_owned(),
            claims: Map::new(),
            device: DeviceInfo::default(),
            created_at: now,
            last_used_at: now,
            deadlines: Deadlines {
                idle: now + Duration::from_secs(3600),
                absolute: now + Duration::from_secs(86_400),
            },
            current: token.digest(),
            previous: None,
            history: Vec::new(),
            rotations: 0,
            jkt: None,
        };
        (fam, token)
    }

    #[tokio::test]
    async fn counts_each_call_and_passes_results_through() {
        let store = CountingRefreshStore::new(MemoryRefreshStore::new());
        let counter = store.counter();
        let now = Timestamp::from_secs(1_700_000_000);
        let (fam, token) = family("alice", now);

        store.create(&fam, None).await.unwrap();
        assert_eq!(store.get(&fam.id, now).await.unwrap(), Some(fam.clone()));
        let key = RotationKey::generate().unwrap();
        let next = token.successor(&key);
        let outcome = store
            .rotate(&Rotation {
                family: fam.id.clone(),
                presented: token.digest(),
                successor: next.digest(),
                now,
                grace: Duration::from_secs(10),
                idle: Duration::from_secs(3600),
                history_limit: 8,
                device: DeviceInfo::default(),
            })
            .await
            .unwrap();
        assert!(matches!(outcome, RotateOutcome::Rotated(f) if f.current == next.digest()));
        assert_eq!(store.list_user("alice", now).await.unwrap().len(), 1);
        assert_eq!(store.revoke_user("alice", None).await.unwrap().len(), 1);
        assert_eq!(store.revoke(&fam.id).await.unwrap(), None);
        assert_eq!(store.purge_expired(now).await.unwrap(), 0);
        assert!(store.get_ref().is_empty());

        assert_eq!(
            counter.snapshot(),
            [
                ("create", 1),
                ("get", 1),
                ("rotate", 1),
                ("list_user", 1),
                ("revoke_user", 1),
                ("revoke", 1),
                ("purge_expired", 1),
            ]
        );
        assert_eq!(counter.total(), 7);
        // Clones share the counters.
        let clone = store.clone();
        clone.get(&fam.id, now).await.unwrap();
        assert_eq!(counter.total(), 8);
        assert_eq!(counter.get("get"), 2);
    }

    #[tokio::test]
    async fn a_fault_switch_fails_calls_before_the_store() {
        let store = InstrumentedRefreshStore::<_, FaultSwitch>::new(MemoryRefreshStore::new());
        let now = Timestamp::from_secs(1_700_000_000);
        let (fam, _) = family("alice", now);
        store
            .observer()
            .shared()
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(store.create(&fam, None).await.unwrap_err().is_unavailable());
        assert!(
            store.get_ref().is_empty(),
            "the call never reached the store"
        );
        store
            .observer()
            .shared()
            .store(false, std::sync::atomic::Ordering::SeqCst);
        store.create(&fam, None).await.unwrap();
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn wrapped_memory_store_passes_the_conformance_suite() {
        crate::testing::run_all(|| async { CountingRefreshStore::new(MemoryRefreshStore::new()) })
            .await;
    }
}
