//! `CountingRefreshStore`: a wrapper that counts refresh-store operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};

use crate::family::{Family, RotateOutcome, Rotation};
use crate::store::RefreshStore;
use crate::token::FamilyId;

/// Wraps a refresh store and counts every call made through it (for
/// dashboards, tests and the simulator's "store operations per request"
/// column). Failed calls count too: they reached the store.
///
/// ```
/// use portcullis_refresh::{CountingRefreshStore, MemoryRefreshStore};
///
/// let store = CountingRefreshStore::new(MemoryRefreshStore::new());
/// let counter = store.counter();
/// assert_eq!(counter.total(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct CountingRefreshStore<S> {
    inner: S,
    counter: Arc<RefreshOpCounter>,
}

/// Per-operation counters of a [`CountingRefreshStore`].
#[derive(Debug, Default)]
pub struct RefreshOpCounter {
    /// `create` calls (logins).
    pub create: AtomicU64,
    /// `rotate` calls (refreshes).
    pub rotate: AtomicU64,
    /// `get` calls.
    pub get: AtomicU64,
    /// `revoke` calls (one device).
    pub revoke: AtomicU64,
    /// `revoke_user` calls (every device of a user).
    pub revoke_user: AtomicU64,
    /// `list_user` calls.
    pub list_user: AtomicU64,
    /// `purge_expired` calls.
    pub purge_expired: AtomicU64,
}

impl RefreshOpCounter {
    /// Each counter by name, in declaration order.
    #[must_use]
    pub fn by_name(&self) -> [(&'static str, u64); 7] {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("create", n(&self.create)),
            ("rotate", n(&self.rotate)),
            ("get", n(&self.get)),
            ("revoke", n(&self.revoke)),
            ("revoke_user", n(&self.revoke_user)),
            ("list_user", n(&self.list_user)),
            ("purge_expired", n(&self.purge_expired)),
        ]
    }

    /// All calls so far.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_name().iter().map(|(_, n)| n).sum()
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S> CountingRefreshStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counter: Arc::new(RefreshOpCounter::default()),
        }
    }

    /// The shared counters.
    #[must_use]
    pub fn counter(&self) -> Arc<RefreshOpCounter> {
        Arc::clone(&self.counter)
    }

    /// The wrapped store.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: RefreshStore> RefreshStore for CountingRefreshStore<S> {
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        RefreshOpCounter::bump(&self.counter.create);
        self.inner.create(family, max_per_user).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        RefreshOpCounter::bump(&self.counter.rotate);
        self.inner.rotate(rotation).await
    }
    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        RefreshOpCounter::bump(&self.counter.get);
        self.inner.get(id, now).await
    }
    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        RefreshOpCounter::bump(&self.counter.revoke);
        self.inner.revoke(id).await
    }
    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        RefreshOpCounter::bump(&self.counter.revoke_user);
        self.inner.revoke_user(user_id, except).await
    }
    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        RefreshOpCounter::bump(&self.counter.list_user);
        self.inner.list_user(user_id, now).await
    }
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        RefreshOpCounter::bump(&self.counter.purge_expired);
        self.inner.purge_expired(now).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use portcullis_core::Timestamp;
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
            idle_deadline: now + Duration::from_secs(3600),
            absolute_deadline: now + Duration::from_secs(86_400),
            current: token.digest(),
            previous: None,
            history: Vec::new(),
            rotations: 0,
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
            counter.by_name(),
            [
                ("create", 1),
                ("rotate", 1),
                ("get", 1),
                ("revoke", 1),
                ("revoke_user", 1),
                ("list_user", 1),
                ("purge_expired", 1),
            ]
        );
        assert_eq!(counter.total(), 7);
        // Clones share the counters.
        let clone = store.clone();
        clone.get(&fam.id, now).await.unwrap();
        assert_eq!(counter.total(), 8);
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn wrapped_memory_store_passes_the_conformance_suite() {
        crate::testing::run_all(|| async { CountingRefreshStore::new(MemoryRefreshStore::new()) })
            .await;
    }
}
