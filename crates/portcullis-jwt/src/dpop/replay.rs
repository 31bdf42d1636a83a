//! The `jti` replay cache: a proof is accepted once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use portcullis_core::{SharedClock, SystemClock};

/// Why a [`ReplayCache`] could not answer. The layer answers 503 (never a
/// pass: a proof the cache cannot vouch for might be a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayCacheError {
    /// The backing store is unreachable or failed.
    #[error("the DPoP replay store is unavailable")]
    Unavailable,
    /// The cache holds as many live entries as it may: a flood of proofs
    /// (or a capacity too small for the traffic). Refused rather than
    /// forgetting entries that are still live, which would let their
    /// proofs be replayed.
    #[error("the DPoP replay cache is full")]
    Full,
}

/// Remembers which proofs have been used.
///
/// `id` is a SHA-256 hash of the proof's key thumbprint and its `jti`, so
/// stores see neither. The verifier consults the cache only after every
/// other check passed (signature, claims, the access token's binding), so
/// filling it takes valid proofs.
///
/// Implement it over a store shared by every instance of the service, or
/// a proof replayed to another instance is accepted there.
#[async_trait]
pub trait ReplayCache: Send + Sync + 'static {
    /// `Ok(true)` the first time `id` is seen, which is then remembered
    /// until `until_unix_secs` (the end of the proof's `iat` window);
    /// `Ok(false)` for a replay.
    ///
    /// # Errors
    ///
    /// [`ReplayCacheError`] when the cache cannot answer.
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError>;
}

#[async_trait]
impl<C: ReplayCache + ?Sized> ReplayCache for std::sync::Arc<C> {
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        (**self).first_use(id, until_unix_secs).await
    }
}

/// The default capacity of a [`MemoryReplayCache`]: 100 000 proofs,
/// about 5 MB at most.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// An in-process [`ReplayCache`] holding at most `capacity` live entries.
///
/// Memory is bounded: an entry is a 32-byte id and an 8-byte deadline in
/// a hash table (about 50 bytes with the table's overhead), and the table
/// never holds more than `capacity` entries. When it is full, the entries
/// whose deadline has passed are dropped (at most once per second of the
/// cache's clock, so a flood cannot make every request sweep the table);
/// if it is still full, [`first_use`](ReplayCache::first_use) answers
/// [`ReplayCacheError::Full`] and the request gets 503, rather than
/// forgetting a live entry and letting its proof be replayed.
///
/// One process only: several instances need a shared store.
pub struct MemoryReplayCache {
    capacity: usize,
    clock: SharedClock,
    state: Mutex<State>,
}

struct State {
    entries: HashMap<[u8; 32], u64>,
    last_sweep: u64,
}

impl std::fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl MemoryReplayCache {
    /// A cache of at most `capacity` live entries (at least 1) on the
    /// system clock.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, SystemClock::shared())
    }

    /// [`new`](Self::new) on `clock` (give it the verifier's clock).
    #[must_use]
    pub fn with_clock(capacity: usize, clock: SharedClock) -> Self {
        Self {
            capacity: capacity.max(1),
            clock,
            state: Mutex::new(State {
                entries: HashMap::new(),
                last_sweep: 0,
            }),
        }
    }

    /// The entries held now (live or not yet swept).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries it holds.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// An estimate of the heap memory the table holds, in bytes: its
    /// allocated slots times the size of an entry plus a control byte.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        // The table keeps at most 7/8 of its slots in use.
        let slots = self.lock().entries.capacity() * 8 / 7;
        slots * (std::mem::size_of::<([u8; 32], u64)>() + 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn first_use_now(&self, id: &[u8; 32], until: u64) -> Result<bool, ReplayCacheError> {
        let now = self.clock.now().secs();
        let mut state = self.lock();
        if let Some(&deadline) = state.entries.get(id) {
            if deadline >= now {
                return Ok(false);
            }
        }
        if state.entries.len() >= self.capacity && !state.entries.contains_key(id) {
            if state.last_sweep != now {
                state.last_sweep = now;
                state.entries.retain(|_, deadline| *deadline >= now);
            }
            if state.entries.len() >= self.capacity {
                return Err(ReplayCacheError::Full);
            }
        }
        if state.entries.capacity() < self.capacity
            && state.entries.len() + 1 > state.entries.capacity()
        {
            // Grow, but never past the capacity (the default doubling
            // would allocate up to twice it).
            let want = (state.entries.len() * 2).max(16).min(self.capacity);
            let extra = want - state.entries.len();
            state.entries.reserve(extra);
        }
        state.entries.insert(*id, until);
        Ok(true)
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        self.first_use_now(id, until_unix_secs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use portcullis_core::ManualClock;

    use super::*;

    #[test]
    fn once_then_replay_then_forgotten_after_its_deadline() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = MemoryReplayCache::with_clock(4, clock.clone());
        let id = [1u8; 32];
        assert_eq!(cache.first_use_now(&id, 1_010), Ok(true));
        assert_eq!(cache.first_use_now(&id, 1_010), Ok(false));
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            cache.first_use_now(&id, 1_010),
            Ok(false),
            "until is inclusive"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.first_use_now(&id, 1_030), Ok(true));
    }

    #[test]
    fn full_of_live_entries_refuses_and_stays_bounded() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = MemoryReplayCache::with_clock(100, clock.clone());
        for i in 0..100u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            assert_eq!(cache.first_use_now(&id, 1_060), Ok(true));
        }
        let mut id = [0xffu8; 32];
        assert_eq!(cache.first_use_now(&id, 1_060), Err(ReplayCacheError::Full));
        // A replay of a remembered proof is still a replay, not "full".
        id = [0u8; 32];
        assert_eq!(cache.first_use_now(&id, 1_060), Ok(false));
        assert_eq!(cache.len(), 100);
        assert!(
            cache.memory_bytes() <= 4 * 100 * 41,
            "{}",
            cache.memory_bytes()
        );
        // Once the entries' deadlines pass, the sweep makes room.
        clock.advance(Duration::from_secs(61));
        assert_eq!(cache.first_use_now(&[0xee; 32], 1_200), Ok(true));
        assert_eq!(cache.len(), 1);
    }
}
