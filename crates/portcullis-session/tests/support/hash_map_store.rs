use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use portcullis_session::store::{
    CreateOutcome, SessionCap, SessionRecord, SessionStore, SessionUpdate, SharedClock,
    StoreError, Timestamp, TokenDigest, async_trait, eviction_victims,
};

/// Sessions in a `HashMap` behind a `Mutex`: one process, lost on restart.
#[derive(Debug)]
pub struct HashMapStore {
    records: Mutex<HashMap<TokenDigest, SessionRecord>>,
    /// Expiry is judged by this clock (a test hands in a manual one).
    clock: SharedClock,
}

impl HashMapStore {
    /// An empty store judging expiry by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn records(&self) -> MutexGuard<'_, HashMap<TokenDigest, SessionRecord>> {
        // A panic elsewhere never leaves a record half-written: keep going.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for HashMapStore {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        let now = self.clock.now();
        let mut records = self.records();
        if records.get(key).is_some_and(|r| !r.is_expired(now)) {
            return Err(StoreError::conflict());
        }
        let mut evicted = Vec::new();
        if let (Some(cap), Some(user)) = (cap, &record.user_id) {
            // Under the same lock as the insert: the cap is atomic.
            let live = records
                .iter()
                .filter(|(k, r)| {
                    r.user_id.as_ref() == Some(user)
                        && !r.is_expired(now)
                        && Some(**k) != cap.replacing
                })
                .map(|(k, r)| (*k, r.created_at))
                .collect();
            let Some(victims) = eviction_victims(live, &cap) else {
                return Ok(CreateOutcome::LimitReached);
            };
            for victim in &victims {
                records.remove(victim);
            }
            evicted = victims;
        }
        records.insert(*key, record.clone());
        Ok(CreateOutcome::Created { evicted })
    }

    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let now = self.clock.now();
        Ok(self.records().get(key).filter(|r| !r.is_expired(now)).cloned())
    }

    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        let now = self.clock.now();
        match self.records().get_mut(key) {
            Some(r) if !r.is_expired(now) => {
                r.apply(update);
                Ok(())
            }
            // Update-only: a deleted or expired session never comes back.
            _ => Err(StoreError::not_found()),
        }
    }

    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        match self.records().get_mut(key) {
            Some(r) if !r.is_expired(now) => {
                r.touch(last_seen, idle_deadline);
                Ok(())
            }
            _ => Err(StoreError::not_found()),
        }
    }

    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(self.records().remove(key).is_some_and(|r| !r.is_expired(now)))
    }

    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .records()
            .iter()
            .filter(|(_, r)| r.user_id.as_deref() == Some(user_id) && !r.is_expired(now))
            .map(|(k, r)| (*k, r.clone()))
            .collect())
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut deleted = 0;
        self.records().retain(|k, r| {
            let doomed = r.user_id.as_deref() == Some(user_id) && Some(k) != except;
            if doomed && !r.is_expired(now) {
                deleted += 1;
            }
            !doomed
        });
        Ok(deleted)
    }

    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = self.clock.now();
        Ok(self
            .records()
            .values()
            .filter(|r| r.user_id.as_deref() == Some(user_id) && !r.is_expired(now))
            .count())
    }
}
