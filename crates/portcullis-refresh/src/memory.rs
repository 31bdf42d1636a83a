//! `MemoryRefreshStore`: families in process memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};

use crate::family::{Family, Presented, RotateOutcome, Rotation};
use crate::store::RefreshStore;
use crate::token::FamilyId;

/// Families in memory, behind one lock (refreshes are rare next to
/// requests). Single-process: use the Redis store for several instances.
/// Cheap to clone (clones share the data).
///
/// Expired families are never returned, and are removed without help:
/// every `create` and `rotate` also removes up to a few families whose
/// deadline has passed (oldest deadline first, from an index ordered by
/// deadline), so memory stays bounded by the live families without a
/// background task or calls to [`RefreshStore::purge_expired`] (which
/// removes them all at once).
#[derive(Clone, Default)]
pub struct MemoryRefreshStore {
    inner: Arc<Mutex<Inner>>,
}

/// Expired families removed per write, at most.
const SWEEP_PER_WRITE: usize = 16;

#[derive(Default)]
struct Inner {
    families: HashMap<FamilyId, Family>,
    users: HashMap<String, HashSet<FamilyId>>,
    /// One entry per family: (a deadline it had, id). A rotation slides the
    /// deadline without touching this index; the sweep re-files a family it
    /// finds still live under its current deadline.
    deadlines: BTreeSet<(Timestamp, FamilyId)>,
    /// The deadline each family is filed under in `deadlines`.
    filed: HashMap<FamilyId, Timestamp>,
}

impl std::fmt::Debug for MemoryRefreshStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRefreshStore")
            .field("families", &self.lock().families.len())
            .finish()
    }
}

impl Inner {
    fn insert(&mut self, family: Family) {
        let at = family.expires_at();
        self.deadlines.insert((at, family.id.clone()));
        self.filed.insert(family.id.clone(), at);
        self.users
            .entry(family.user_id.clone())
            .or_default()
            .insert(family.id.clone());
        self.families.insert(family.id.clone(), family);
    }

    /// Removes up to `budget` families expired at `now`, oldest deadline
    /// first; returns how many.
    fn sweep(&mut self, now: Timestamp, budget: usize) -> usize {
        let mut removed = 0;
        let mut looked = 0;
        while looked < budget {
            let Some((at, id)) = self.deadlines.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            looked += 1;
            self.deadlines.remove(&(at, id.clone()));
            self.filed.remove(&id);
            match self.families.get(&id) {
                Some(f) if f.is_expired(now) => {
                    self.remove(&id);
                    removed += 1;
                }
                Some(f) => {
                    // Refreshed since it was filed: file it again.
                    let at = f.expires_at();
                    self.deadlines.insert((at, id.clone()));
                    self.filed.insert(id, at);
                }
                None => {}
            }
        }
        removed
    }

    fn remove(&mut self, id: &FamilyId) -> Option<Family> {
        let fam = self.families.remove(id)?;
        if let Some(at) = self.filed.remove(id) {
            self.deadlines.remove(&(at, id.clone()));
        }
        if let Some(set) = self.users.get_mut(&fam.user_id) {
            set.remove(id);
            if set.is_empty() {
                self.users.remove(&fam.user_id);
            }
        }
        Some(fam)
    }
}

impl MemoryRefreshStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Families held (live or not yet purged).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().families.len()
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RefreshStore for MemoryRefreshStore {
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        let mut inner = self.lock();
        inner.sweep(family.created_at, SWEEP_PER_WRITE);
        if inner.families.contains_key(&family.id) {
            return Err(StoreError::conflict());
        }
        let mut evicted = Vec::new();
        if let Some(max) = max_per_user {
            let now = family.created_at;
            let mut live: Vec<(Timestamp, FamilyId)> = Vec::new();
            let mut dead: Vec<FamilyId> = Vec::new();
            for id in inner.users.get(&family.user_id).into_iter().flatten() {
                match inner.families.get(id) {
                    Some(f) if !f.is_expired(now) => live.push((f.created_at, id.clone())),
                    _ => dead.push(id.clone()),
                }
            }
            for id in &dead {
                inner.remove(id);
            }
            live.sort();
            let excess = (live.len() + 1).saturating_sub(max.max(1));
            for (_, id) in live.into_iter().take(excess) {
                evicted.extend(inner.remove(&id));
            }
        }
        inner.insert(family.clone());
        Ok(evicted)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut inner = self.lock();
        // The presented family first: the sweep could remove it unseen.
        if inner
            .families
            .get(&r.family)
            .is_some_and(|f| f.is_expired(r.now))
        {
            let gone = inner.remove(&r.family);
            inner.sweep(r.now, SWEEP_PER_WRITE);
            return Ok(match gone {
                Some(f) if f.classify(&r.presented, r.now, r.grace) != Presented::Unknown => {
                    RotateOutcome::Expired(f)
                }
                _ => RotateOutcome::Invalid,
            });
        }
        inner.sweep(r.now, SWEEP_PER_WRITE);
        let Some(fam) = inner.families.get_mut(&r.family) else {
            return Ok(RotateOutcome::Invalid);
        };
        match fam.classify(&r.presented, r.now, r.grace) {
            Presented::Current => {
                fam.rotate(r.successor, r.now, r.idle, r.history_limit, &r.device);
                Ok(RotateOutcome::Rotated(fam.clone()))
            }
            Presented::InGrace if fam.current == r.successor => {
                Ok(RotateOutcome::Repeat(fam.clone()))
            }
            Presented::InGrace => Ok(RotateOutcome::KeyMismatch),
            Presented::Reused => Ok(inner
                .remove(&r.family)
                .map_or(RotateOutcome::Invalid, RotateOutcome::Reused)),
            Presented::Unknown => Ok(RotateOutcome::Invalid),
        }
    }

    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        Ok(self
            .lock()
            .families
            .get(id)
            .filter(|f| !f.is_expired(now))
            .cloned())
    }

    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        Ok(self.lock().remove(id))
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        let mut inner = self.lock();
        let ids: Vec<FamilyId> = inner
            .users
            .get(user_id)
            .map(|s| s.iter().filter(|id| Some(*id) != except).cloned().collect())
            .unwrap_or_default();
        Ok(ids.iter().filter_map(|id| inner.remove(id)).collect())
    }

    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .users
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.families.get(id))
            .filter(|f| !f.is_expired(now))
            .cloned()
            .collect())
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let removed = inner.sweep(now, usize::MAX);
        Ok(removed as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::RefreshToken;
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    fn family(user: &str, at: Timestamp) -> Family {
        let id = FamilyId::generate().unwrap();
        let token = RefreshToken::first(id.clone()).unwrap();
        Family {
            id,
            user_id: user.to_owned(),
            claims: serde_json::Map::new(),
            device: crate::family::DeviceInfo::default(),
            created_at: at,
            last_used_at: at,
            deadlines: portcullis_core::Deadlines {
                idle: at + HOUR,
                absolute: at + 24 * HOUR,
            },
            current: token.digest(),
            previous: None,
            history: Vec::new(),
            rotations: 0,
            jkt: None,
        }
    }

    #[tokio::test]
    async fn writes_remove_expired_families_without_purge_calls() {
        let store = MemoryRefreshStore::new();
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        for i in 0..40 {
            store
                .create(&family(&format!("user{i}"), t0), None)
                .await
                .unwrap();
        }
        // A family refreshed late stays: its deadline slid.
        let kept = family("kept", t0);
        let token = RefreshToken::first(kept.id.clone()).unwrap();
        let kept = Family {
            current: token.digest(),
            ..kept
        };
        store.create(&kept, None).await.unwrap();
        let key = crate::token::RotationKey::generate().unwrap();
        let rotation = |now| Rotation {
            family: kept.id.clone(),
            presented: token.digest(),
            successor: token.successor(&key).digest(),
            now,
            grace: Duration::from_secs(10),
            idle: HOUR,
            history_limit: 8,
            device: crate::family::DeviceInfo::default(),
        };
        assert!(matches!(
            store.rotate(&rotation(t0 + HOUR / 2)).await.unwrap(),
            RotateOutcome::Rotated(_)
        ));
        assert_eq!(store.len(), 41);
        // An hour and a bit later, each login removes up to 16 expired
        // families: three logins clear the 40, the refreshed one stays.
        let later = t0 + HOUR + Duration::from_secs(60);
        for i in 0..3 {
            store
                .create(&family(&format!("late{i}"), later), None)
                .await
                .unwrap();
        }
        assert_eq!(
            store.len(),
            4,
            "40 expired families gone, 3 new + 1 refreshed"
        );
        let inner = store.lock();
        assert!(inner.families.contains_key(&kept.id));
        assert_eq!(
            inner.deadlines.len(),
            4,
            "the index holds one entry per family"
        );
        assert_eq!(inner.filed.len(), 4);
        assert!(
            inner
                .users
                .keys()
                .all(|u| u == "kept" || u.starts_with("late"))
        );
    }

    #[tokio::test]
    async fn purge_expired_uses_the_deadline_index() {
        let store = MemoryRefreshStore::new();
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        for _ in 0..5 {
            store.create(&family("a", t0), None).await.unwrap();
        }
        let revoked = family("a", t0);
        store.create(&revoked, None).await.unwrap();
        store.revoke(&revoked.id).await.unwrap();
        assert_eq!(store.purge_expired(t0 + HOUR).await.unwrap(), 5);
        assert!(store.is_empty());
        assert!(store.lock().deadlines.is_empty());
    }
}
