//! `MemoryRefreshStore`: families in process memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};

use crate::family::{Family, Presented, RotateOutcome, Rotation};
use crate::store::RefreshStore;
use crate::token::FamilyId;

/// Families in memory, behind one lock (refreshes are rare next to
/// requests). Single-process: use the Redis store for several instances.
/// Cheap to clone (clones share the data).
#[derive(Clone, Default)]
pub struct MemoryRefreshStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    families: HashMap<FamilyId, Family>,
    users: HashMap<String, HashSet<FamilyId>>,
}

impl std::fmt::Debug for MemoryRefreshStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRefreshStore")
            .field("families", &self.lock().families.len())
            .finish()
    }
}

impl Inner {
    fn remove(&mut self, id: &FamilyId) -> Option<Family> {
        let fam = self.families.remove(id)?;
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
        inner.families.insert(family.id.clone(), family.clone());
        inner
            .users
            .entry(family.user_id.clone())
            .or_default()
            .insert(family.id.clone());
        Ok(evicted)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut inner = self.lock();
        let Some(fam) = inner.families.get_mut(&r.family) else {
            return Ok(RotateOutcome::Invalid);
        };
        if fam.is_expired(r.now) {
            inner.remove(&r.family);
            return Ok(RotateOutcome::Invalid);
        }
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
        let dead: Vec<FamilyId> = inner
            .families
            .values()
            .filter(|f| f.is_expired(now))
            .map(|f| f.id.clone())
            .collect();
        for id in &dead {
            inner.remove(id);
        }
        Ok(dead.len() as u64)
    }
}
