//! `MemoryStore`: the default, in-process session store. (About 510 lines:
//! the sharded records, the per-user index and the global bound are
//! updated together under one locking order, kept in one file.)
//!
//! ```
//! use portcullis_session::{MemoryStore, SessionConfig, SessionLayer};
//!
//! let store = MemoryStore::new();
//! let layer = SessionLayer::new(store, SessionConfig::default()).unwrap();
//! # let _ = layer;
//! ```
//!
//! Records live in 32 shards, each a `HashMap` behind its own `RwLock`,
//! hashed by the first eight bytes of the (already uniformly random) digest.
//! A load takes one shard's read lock. Expired records are never returned
//! and are removed: on load, and by an incremental sweep that cleans one
//! shard per [`MemoryStore::purge_interval`] during writes (so memory stays
//! bounded without a background task), or all at once with
//! [`MemoryStore::purge_expired`].
//!
//! It is a single-process store: sessions vanish on restart and are not
//! shared between instances. Use the file store for durability on one node,
//! or the Redis store for several instances.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp, TokenDigest};

use crate::schedule::Every;
use crate::store::SessionStore;
use crate::store::{CreateOutcome, SessionCap, SessionRecord, SessionUpdate, eviction_victims};

const SHARDS: usize = 32;

/// Expired records removed per hold of a shard's write lock by a purge.
const PURGE_CHUNK: usize = 256;

/// The default bound on the records a [`MemoryStore`] holds: one million
/// (on the order of a gigabyte with typical records).
pub const DEFAULT_MAX_SESSIONS: usize = 1_000_000;

/// The least time between two full purges forced by a full store.
const FULL_PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a full [`MemoryStore`] refused a new record.
#[derive(Debug, thiserror::Error)]
#[error("the memory session store is full ({held} records, bound {bound})")]
struct StoreFull {
    held: usize,
    bound: usize,
}

/// A hasher for keys that are already uniformly random (`TokenDigest`
/// writes one `u64`).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = RwLock<HashMap<TokenDigest, SessionRecord, BuildHasherDefault<DigestHasher>>>;

/// The in-process session store. Cheap to clone (clones share the data).
///
/// # Bounded
///
/// The store holds at most [`DEFAULT_MAX_SESSIONS`] records (change it with
/// [`MemoryStore::max_sessions`]), so that no flood of requests can grow it
/// without limit. When a new record would pass the bound, expired records
/// are purged first (at most once a second); if the store is still full:
///
/// - a new **anonymous** session is refused once the store holds 90% of the
///   bound, so the last tenth is kept for logins;
/// - a **login** is refused once it holds the bound.
///
/// A refusal is a [`StoreError::backend`]: the session layer answers `503`
/// with `Retry-After`. Live sessions are never evicted to make room (a
/// logged-in user is never silently logged out); records leave the store
/// only when they expire, are deleted, or are evicted by the per-user cap.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    /// user id -> that user's session keys (may hold dead keys; pruned
    /// when read). Lock order: `users` before any shard.
    users: Mutex<HashMap<String, HashSet<TokenDigest>>>,
    clock: SharedClock,
    purge: Every,
    purge_cursor: AtomicUsize,
    /// Records held, live or not yet purged (kept with every insert and
    /// removal, so the bound costs no scan).
    count: AtomicUsize,
    max_sessions: AtomicUsize,
    full_purge: Every,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// A store on the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// A store that judges expiry by `clock` (give it the layer's clock).
    #[must_use]
    pub fn with_clock(clock: SharedClock) -> Self {
        Self::with_clock_and_purge_interval(clock, Duration::from_secs(60))
    }

    /// Like [`MemoryStore::with_clock`], sweeping one shard for expired
    /// records at most once per `interval` (default 60 s).
    #[must_use]
    pub fn with_clock_and_purge_interval(clock: SharedClock, interval: Duration) -> Self {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(HashMap::default()))
            .collect();
        let now = clock.now().millis();
        Self {
            inner: Arc::new(Inner {
                shards,
                users: Mutex::new(HashMap::new()),
                clock,
                purge: Every::new(interval, now),
                purge_cursor: AtomicUsize::new(0),
                count: AtomicUsize::new(0),
                max_sessions: AtomicUsize::new(DEFAULT_MAX_SESSIONS),
                full_purge: Every::new(FULL_PURGE_INTERVAL, 0),
            }),
        }
    }

    /// Bounds the number of records held (at least 1; default
    /// [`DEFAULT_MAX_SESSIONS`]; see [`MemoryStore`] for what happens
    /// at the bound). Applies to every clone of this store.
    #[must_use]
    pub fn max_sessions(self, max: usize) -> Self {
        self.inner.max_sessions.store(max.max(1), Ordering::Relaxed);
        self
    }

    /// The incremental sweep's interval.
    #[must_use]
    pub fn purge_interval(&self) -> Duration {
        self.inner.purge.interval()
    }

    /// Number of records held, live or not yet purged.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Whether the store holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired record now; returns how many were removed.
    pub fn purge_expired(&self) -> usize {
        (0..SHARDS).map(|i| self.inner.purge_shard(i)).sum()
    }
}

impl Inner {
    fn shard(&self, key: &TokenDigest) -> &Shard {
        let b = key.as_bytes();
        &self.shards[usize::from(b[8]) % SHARDS]
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Removes expired records from one shard and from the user index.
    ///
    /// The shard is scanned under its read lock (requests reading it go on),
    /// then the expired records are removed under the write lock a chunk at
    /// a time and dropped after it is released, so a request never waits
    /// for more than one chunk, however large the shard.
    fn purge_shard(&self, index: usize) -> usize {
        let now = self.now();
        let shard = &self.shards[index];
        let expired: Vec<TokenDigest> = read(shard)
            .iter()
            .filter(|(_, rec)| rec.is_expired(now))
            .map(|(key, _)| *key)
            .collect();
        let mut removed = 0;
        for chunk in expired.chunks(PURGE_CHUNK) {
            let gone: Vec<(TokenDigest, SessionRecord)> = {
                let mut map = write(shard);
                chunk
                    .iter()
                    .filter_map(|key| {
                        // Still there and still expired (`now` as above).
                        if map.get(key).is_some_and(|rec| rec.is_expired(now)) {
                            map.remove(key).map(|rec| (*key, rec))
                        } else {
                            None
                        }
                    })
                    .collect()
            };
            removed += gone.len();
            self.count.fetch_sub(gone.len(), Ordering::Relaxed);
            if gone.iter().any(|(_, rec)| rec.user_id.is_some()) {
                let mut users = lock(&self.users);
                for (key, rec) in &gone {
                    if let Some(user) = &rec.user_id {
                        unindex(&mut users, user, key);
                    }
                }
            }
            // The records are freed here, with no lock held.
            drop(gone);
        }
        removed
    }

    /// Refuses a new record when the store is full (after purging expired
    /// records, at most once a second). Anonymous records may fill 90% of
    /// the bound; logins the whole of it.
    fn admit(&self, authenticated: bool) -> Result<(), StoreError> {
        let bound = self.max_sessions.load(Ordering::Relaxed);
        let limit = if authenticated {
            bound
        } else {
            (bound - bound / 10).max(1)
        };
        if self.count.load(Ordering::Relaxed) < limit {
            return Ok(());
        }
        if self.full_purge.claim(self.now().millis()) {
            for i in 0..SHARDS {
                self.purge_shard(i);
            }
        }
        let held = self.count.load(Ordering::Relaxed);
        if held < limit {
            return Ok(());
        }
        portcullis_core::event!(
            warn,
            reason = "store-full",
            held,
            bound,
            authenticated,
            "memory session store full; new session refused"
        );
        Err(StoreError::backend(StoreFull { held, bound }))
    }

    /// Sweeps one shard if the interval has passed since the last sweep.
    fn maybe_purge(&self) {
        if self.purge.claim(self.now().millis()) {
            let i = self.purge_cursor.fetch_add(1, Ordering::Relaxed) % SHARDS;
            self.purge_shard(i);
        }
    }

    /// The user's live sessions as (key, created_at); prunes dead keys from
    /// the index. Call with the `users` lock held.
    fn live_for_user(
        &self,
        users: &mut HashMap<String, HashSet<TokenDigest>>,
        user: &str,
    ) -> Vec<(TokenDigest, Timestamp)> {
        let now = self.now();
        let Some(keys) = users.get_mut(user) else {
            return Vec::new();
        };
        let mut live = Vec::with_capacity(keys.len());
        keys.retain(|key| {
            let shard = read(self.shard(key));
            match shard.get(key) {
                Some(rec) if !rec.is_expired(now) => {
                    live.push((*key, rec.created_at));
                    true
                }
                _ => false,
            }
        });
        if keys.is_empty() {
            users.remove(user);
        }
        live
    }
}

fn unindex(users: &mut HashMap<String, HashSet<TokenDigest>>, user: &str, key: &TokenDigest) {
    if let Some(keys) = users.get_mut(user) {
        keys.remove(key);
        if keys.is_empty() {
            users.remove(user);
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        let inner = &*self.inner;
        inner.maybe_purge();
        let now = inner.now();
        inner.admit(record.user_id.is_some())?;
        let Some(user) = &record.user_id else {
            let mut shard = write(inner.shard(key));
            if shard.get(key).is_some_and(|r| !r.is_expired(now)) {
                return Err(StoreError::conflict());
            }
            if shard.insert(*key, record.clone()).is_none() {
                inner.count.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(CreateOutcome::Created {
                evicted: Vec::new(),
            });
        };
        let mut users = lock(&inner.users);
        if read(inner.shard(key))
            .get(key)
            .is_some_and(|r| !r.is_expired(now))
        {
            return Err(StoreError::conflict());
        }
        let mut evicted = Vec::new();
        if let Some(cap) = cap {
            let live: Vec<_> = inner
                .live_for_user(&mut users, user)
                .into_iter()
                .filter(|(k, _)| Some(*k) != cap.replacing)
                .collect();
            let Some(victims) = eviction_victims(live, &cap) else {
                return Ok(CreateOutcome::LimitReached);
            };
            for victim in victims {
                if write(inner.shard(&victim)).remove(&victim).is_some() {
                    inner.count.fetch_sub(1, Ordering::Relaxed);
                }
                unindex(&mut users, user, &victim);
                evicted.push(victim);
            }
        }
        if write(inner.shard(key))
            .insert(*key, record.clone())
            .is_none()
        {
            inner.count.fetch_add(1, Ordering::Relaxed);
        }
        users.entry(user.clone()).or_default().insert(*key);
        Ok(CreateOutcome::Created { evicted })
    }

    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let inner = &*self.inner;
        let now = inner.now();
        {
            let shard = read(inner.shard(key));
            match shard.get(key) {
                None => return Ok(None),
                Some(rec) if !rec.is_expired(now) => return Ok(Some(rec.clone())),
                Some(_) => {}
            }
        }
        // Expired: remove it now rather than waiting for the sweep.
        let removed = {
            let mut shard = write(inner.shard(key));
            match shard.get(key) {
                Some(rec) if rec.is_expired(now) => shard.remove(key),
                _ => None,
            }
        };
        if removed.is_some() {
            inner.count.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(user) = removed.and_then(|r| r.user_id) {
            unindex(&mut lock(&inner.users), &user, key);
        }
        Ok(None)
    }

    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        let now = self.inner.now();
        let mut shard = write(self.inner.shard(key));
        match shard.get_mut(key) {
            Some(rec) if !rec.is_expired(now) => {
                rec.apply(update);
                Ok(())
            }
            _ => Err(StoreError::not_found()),
        }
    }

    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        let now = self.inner.now();
        let mut shard = write(self.inner.shard(key));
        match shard.get_mut(key) {
            Some(rec) if !rec.is_expired(now) => {
                rec.touch(last_seen, idle_deadline);
                Ok(())
            }
            _ => Err(StoreError::not_found()),
        }
    }

    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        let now = self.inner.now();
        let removed = write(self.inner.shard(key)).remove(key);
        let Some(rec) = removed else { return Ok(false) };
        self.inner.count.fetch_sub(1, Ordering::Relaxed);
        if let Some(user) = &rec.user_id {
            unindex(&mut lock(&self.inner.users), user, key);
        }
        Ok(!rec.is_expired(now))
    }

    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let inner = &*self.inner;
        let mut users = lock(&inner.users);
        let live = inner.live_for_user(&mut users, user_id);
        Ok(live
            .into_iter()
            .filter_map(|(key, _)| read(inner.shard(&key)).get(&key).map(|r| (key, r.clone())))
            .collect())
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let mut users = lock(&inner.users);
        let live = inner.live_for_user(&mut users, user_id);
        let mut deleted = 0;
        for (key, _) in live {
            if Some(&key) == except {
                continue;
            }
            if write(inner.shard(&key)).remove(&key).is_some() {
                inner.count.fetch_sub(1, Ordering::Relaxed);
            }
            unindex(&mut users, user_id, &key);
            deleted += 1;
        }
        Ok(deleted)
    }

    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let inner = &*self.inner;
        let mut users = lock(&inner.users);
        Ok(inner.live_for_user(&mut users, user_id).len())
    }
}
