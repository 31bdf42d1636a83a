//! An in-process `ThrottleStore` with bounded memory.
//!
//! ```
//! use std::time::Duration;
//! use portcullis_core::{Timestamp, TokenDigest};
//! use portcullis_throttle::{MemoryThrottleStore, ThrottleKey, ThrottleScope, ThrottleStore};
//!
//! # tokio_test_block_on(async {
//! let store = MemoryThrottleStore::with_capacity(1_000);
//! let key = ThrottleKey::new(ThrottleScope::Address, TokenDigest::of(b"192.0.2.1"));
//! let now = Timestamp::from_secs(1_700_000_000);
//! let forget = Duration::from_secs(3600);
//! let states = store.record_failure(&[key], now, forget).await.unwrap();
//! assert_eq!(states[0].failures, 1);
//! assert_eq!(store.len(), 1);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp, TokenDigest};

use crate::store::{ThrottleKey, ThrottleScope, ThrottleState, ThrottleStore};

/// The default [`MemoryThrottleStore`] capacity: counters kept per scope.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Shards per scope: lock contention stays low with many cores.
const SHARDS: usize = 16;

/// The share of a full shard evicted at once when no counter in it is
/// forgotten: evicting in batches keeps the scan amortised to a few
/// entries per insert under a flood.
const EVICT_DIVISOR: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    last_failure: Timestamp,
}

impl Counter {
    fn forgotten(self, now: Timestamp, forget_after: Duration) -> bool {
        self.last_failure + forget_after <= now
    }

    const fn state(self) -> ThrottleState {
        ThrottleState {
            failures: self.failures,
            last_failure: Some(self.last_failure),
        }
    }
}

type Shard = HashMap<TokenDigest, Counter>;

struct Table {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
}

impl Table {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let shards = SHARDS.min(capacity);
        Self {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: capacity / shards,
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters in this process's memory: for a single instance, tests and
/// development. Instances behind a load balancer share counters through
/// the Redis or SQL stores instead.
///
/// **Bounded memory.** Each scope (account, address, account at address)
/// keeps at most `capacity` counters (default [`DEFAULT_CAPACITY`], about
/// 100 bytes each), in 16 shards of `capacity / 16`. When a shard is full
/// and a new key arrives, it first drops its forgotten counters (last
/// failure `forget_after` ago or more); if none is forgotten, it evicts the
/// eighth of its counters least likely to matter: fewest failures first
/// (under any backoff those are the least blocked), then the oldest last
/// failure. A flood of distinct addresses or account names therefore evicts
/// its own one-failure counters and leaves the counters of a guessed
/// account (many failures) in place; it never grows the store past the cap.
/// Evicting a counter forgives what it counted: keep the cap well above
/// the number of addresses and accounts expected to fail within
/// `forget_after`.
///
/// Sweeping is lazy (on a full shard, and on reads of a forgotten
/// counter); no background task is needed. [`purge_forgotten`] sweeps every
/// shard at once for apps that want to return memory early.
///
/// Shards are chosen by a per-process random hash, so an attacker cannot
/// aim a flood at one shard.
///
/// [`purge_forgotten`]: MemoryThrottleStore::purge_forgotten
pub struct MemoryThrottleStore {
    tables: [Table; 3],
    hasher: RandomState,
    capacity: usize,
}

impl Default for MemoryThrottleStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryThrottleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryThrottleStore")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl MemoryThrottleStore {
    /// An empty store keeping at most [`DEFAULT_CAPACITY`] counters per
    /// scope.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty store keeping at most `capacity` counters per scope (at
    /// least one). The bound is exact when `capacity` is a multiple of 16;
    /// otherwise it is rounded down to one.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tables: [
                Table::new(capacity),
                Table::new(capacity),
                Table::new(capacity),
            ],
            hasher: RandomState::new(),
            capacity: capacity.max(1),
        }
    }

    /// The most counters kept per scope, as configured.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counters held now, every scope (forgotten ones not yet swept
    /// included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.tables.iter().map(Table::len).sum()
    }

    /// Whether no counter is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters held now for one scope.
    #[must_use]
    pub fn len_of(&self, scope: ThrottleScope) -> usize {
        self.table(scope).len()
    }

    /// Drops every counter forgotten at `now` (last failure `forget_after`
    /// ago or more); returns how many.
    pub fn purge_forgotten(&self, now: Timestamp, forget_after: Duration) -> usize {
        let mut purged = 0;
        for table in &self.tables {
            for shard in &table.shards {
                let mut shard = lock(shard);
                let before = shard.len();
                shard.retain(|_, c| !c.forgotten(now, forget_after));
                purged += before - shard.len();
            }
        }
        purged
    }

    const fn table(&self, scope: ThrottleScope) -> &Table {
        match scope {
            ThrottleScope::Account => &self.tables[0],
            ThrottleScope::Address => &self.tables[1],
            ThrottleScope::AccountAtAddress => &self.tables[2],
        }
    }

    fn shard(&self, key: &ThrottleKey) -> (&Mutex<Shard>, usize) {
        let table = self.table(key.scope());
        let index =
            usize::try_from(self.hasher.hash_one(key.digest()) % (table.shards.len() as u64))
                .unwrap_or_default();
        (&table.shards[index], table.shard_cap)
    }

    fn fail_one(&self, key: &ThrottleKey, now: Timestamp, forget_after: Duration) -> ThrottleState {
        let (shard, cap) = self.shard(key);
        let mut shard = lock(shard);
        if let Some(c) = shard.get_mut(key.digest()) {
            *c = if c.forgotten(now, forget_after) {
                Counter {
                    failures: 1,
                    last_failure: now,
                }
            } else {
                Counter {
                    failures: c.failures.saturating_add(1),
                    last_failure: now,
                }
            };
            return c.state();
        }
        if shard.len() >= cap {
            make_room(&mut shard, cap, now, forget_after);
        }
        let c = Counter {
            failures: 1,
            last_failure: now,
        };
        shard.insert(*key.digest(), c);
        c.state()
    }

    #[cfg(test)]
    fn seed(&self, key: &ThrottleKey, failures: u32, last_failure: Timestamp) {
        let (shard, _) = self.shard(key);
        lock(shard).insert(
            *key.digest(),
            Counter {
                failures,
                last_failure,
            },
        );
    }
}

/// Frees at least one slot in a full shard: the forgotten counters go
/// first; if none is, the eighth of the shard with the fewest failures
/// (then the oldest last failure).
fn make_room(shard: &mut Shard, cap: usize, now: Timestamp, forget_after: Duration) {
    shard.retain(|_, c| !c.forgotten(now, forget_after));
    if shard.len() < cap {
        return;
    }
    let evict = (cap / EVICT_DIVISOR).max(1).min(shard.len());
    let mut ranked: Vec<(u32, Timestamp, TokenDigest)> = shard
        .iter()
        .map(|(d, c)| (c.failures, c.last_failure, *d))
        .collect();
    ranked.select_nth_unstable(evict - 1);
    for (_, _, digest) in &ranked[..evict] {
        shard.remove(digest);
    }
}

#[async_trait]
impl ThrottleStore for MemoryThrottleStore {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        Ok(keys
            .iter()
            .map(|key| {
                let (shard, _) = self.shard(key);
                let mut shard = lock(shard);
                match shard.get(key.digest()).copied() {
                    Some(c) if c.forgotten(now, forget_after) => {
                        shard.remove(key.digest());
                        ThrottleState::default()
                    }
                    Some(c) => c.state(),
                    None => ThrottleState::default(),
                }
            })
            .collect())
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        Ok(keys
            .iter()
            .map(|key| self.fail_one(key, now, forget_after))
            .collect())
    }

    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        for key in keys {
            let (shard, _) = self.shard(key);
            lock(shard).remove(key.digest());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORGET: Duration = Duration::from_secs(3600);

    fn key(scope: ThrottleScope, i: u64) -> ThrottleKey {
        ThrottleKey::new(scope, TokenDigest::of(&i.to_le_bytes()))
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(1_700_000_000 + secs)
    }

    #[tokio::test]
    async fn a_flood_never_grows_past_the_cap_and_keeps_the_guessed_account() {
        let store = MemoryThrottleStore::with_capacity(160);
        let guessed = key(ThrottleScope::Account, u64::MAX);
        for _ in 0..20 {
            store
                .record_failure(&[guessed], at(0), FORGET)
                .await
                .unwrap();
        }
        for i in 0..10_000 {
            let k = key(ThrottleScope::Account, i);
            store.record_failure(&[k], at(1), FORGET).await.unwrap();
            assert!(store.len_of(ThrottleScope::Account) <= 160);
        }
        assert!(
            store.len_of(ThrottleScope::Account) > 100,
            "the cap is used"
        );
        let kept = store.check(&[guessed], at(2), FORGET).await.unwrap();
        assert_eq!(kept[0].failures, 20, "the many-failure counter survives");
        assert_eq!(store.len_of(ThrottleScope::Address), 0, "scopes are apart");
    }

    #[tokio::test]
    async fn a_full_shard_drops_forgotten_counters_first() {
        let store = MemoryThrottleStore::with_capacity(1);
        let old = key(ThrottleScope::Address, 1);
        store.record_failure(&[old], at(0), FORGET).await.unwrap();
        store.record_failure(&[old], at(0), FORGET).await.unwrap();
        let new = key(ThrottleScope::Address, 2);
        store
            .record_failure(&[new], at(0) + FORGET, FORGET)
            .await
            .unwrap();
        assert_eq!(store.len(), 1);
        let s = store.check(&[new], at(0) + FORGET, FORGET).await.unwrap();
        assert_eq!(s[0].failures, 1);
    }

    #[tokio::test]
    async fn failures_saturate() {
        let store = MemoryThrottleStore::new();
        let k = key(ThrottleScope::Account, 7);
        store.seed(&k, u32::MAX - 1, at(0));
        for want in [u32::MAX, u32::MAX] {
            let s = store.record_failure(&[k], at(1), FORGET).await.unwrap();
            assert_eq!(s[0].failures, want);
        }
    }

    #[tokio::test]
    async fn purge_forgotten_counts() {
        let store = MemoryThrottleStore::new();
        for i in 0..5 {
            let k = key(ThrottleScope::AccountAtAddress, i);
            store.record_failure(&[k], at(i), FORGET).await.unwrap();
        }
        assert_eq!(store.purge_forgotten(at(2) + FORGET, FORGET), 3);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn debug_shows_sizes_only() {
        let store = MemoryThrottleStore::with_capacity(32);
        assert_eq!(
            format!("{store:?}"),
            "MemoryThrottleStore { capacity: 32, len: 0 }"
        );
    }
}
