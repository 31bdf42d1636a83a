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
    /// This key already holds its share of the cache: the client sends
    /// proofs faster than any honest client does. Answered 429 for that
    /// key alone, so one client cannot fill the cache for everyone.
    #[error("this key holds its share of the DPoP replay cache")]
    KeyShare,
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

    /// [`first_use`](Self::first_use) for a proof whose holder is hashed
    /// as `key` (the bound token's issuer and subject at a resource, the
    /// proof's key otherwise), for caches that bound each holder's share
    /// (the verifier calls this one). The default ignores the key.
    ///
    /// # Errors
    ///
    /// [`ReplayCacheError`] when the cache cannot answer, or
    /// [`ReplayCacheError::KeyShare`] when the key holds its share.
    async fn first_use_by_key(
        &self,
        key: &[u8; 32],
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        let _ = key;
        self.first_use(id, until_unix_secs).await
    }
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

    async fn first_use_by_key(
        &self,
        key: &[u8; 32],
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        (**self).first_use_by_key(key, id, until_unix_secs).await
    }
}

/// The default capacity of a [`MemoryReplayCache`]: 100 000 proofs,
/// about 10 MB at most.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// The default share of a [`MemoryReplayCache`] one key may hold: a
/// sixteenth of its capacity (6 250 live proofs of the default capacity,
/// about 100 requests a second for a minute).
pub const DEFAULT_KEY_SHARE_DIVISOR: usize = 16;

/// An in-process [`ReplayCache`] holding at most `capacity` live entries.
///
/// Memory is bounded: an entry is a 32-byte id, an 8-byte deadline and an
/// 8-byte key tag in a hash table (about 75 bytes with the table's
/// overhead, measured, plus a per-key counter), and the table never holds more than
/// `capacity` entries. When it is full, the entries whose deadline has
/// passed are dropped (at most once per second of the cache's clock, so a
/// flood cannot make every request sweep the table); if it is still full,
/// [`first_use`](ReplayCache::first_use) answers
/// [`ReplayCacheError::Full`] and the request gets 503, rather than
/// forgetting a live entry and letting its proof be replayed.
///
/// One key may hold at most a share of the cache (a sixteenth by default,
/// [`key_share`](Self::key_share)); beyond it, that key's proofs get
/// [`ReplayCacheError::KeyShare`] (429), so one client flooding proofs of
/// its own cannot fill the cache and lock every other client out.
///
/// One process only: several instances need a shared store.
pub struct MemoryReplayCache {
    capacity: usize,
    key_share: usize,
    clock: SharedClock,
    state: Mutex<State>,
}

struct State {
    /// Proof id -> (deadline, key tag).
    entries: HashMap<[u8; 32], (u64, u64)>,
    /// Key tag -> entries held.
    per_key: HashMap<u64, usize>,
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
        let capacity = capacity.max(1);
        Self {
            capacity,
            key_share: (capacity / DEFAULT_KEY_SHARE_DIVISOR).max(1),
            clock,
            state: Mutex::new(State {
                entries: HashMap::new(),
                per_key: HashMap::new(),
                last_sweep: 0,
            }),
        }
    }

    /// The most live entries one key may hold (at least 1, at most the
    /// capacity; default: a sixteenth of the capacity).
    #[must_use]
    pub fn key_share(mut self, share: usize) -> Self {
        self.key_share = share.clamp(1, self.capacity);
        self
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
        // The tables keep at most 7/8 of their slots in use.
        let state = self.lock();
        let entries = state.entries.capacity() * 8 / 7;
        let keys = state.per_key.capacity() * 8 / 7;
        entries * (std::mem::size_of::<([u8; 32], (u64, u64))>() + 1)
            + keys * (std::mem::size_of::<(u64, usize)>() + 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn first_use_now(&self, key: u64, id: &[u8; 32], until: u64) -> Result<bool, ReplayCacheError> {
        let now = self.clock.now().secs();
        let mut state = self.lock();
        if let Some(&(deadline, _)) = state.entries.get(id) {
            if deadline >= now {
                return Ok(false);
            }
        }
        let held = |s: &State| s.per_key.get(&key).copied().unwrap_or(0);
        let over = |s: &State| s.entries.len() >= self.capacity || held(s) >= self.key_share;
        if over(&state) && !state.entries.contains_key(id) {
            if state.last_sweep != now {
                state.last_sweep = now;
                state.sweep(now);
            }
            if state.entries.len() >= self.capacity {
                return Err(ReplayCacheError::Full);
            }
            if held(&state) >= self.key_share {
                return Err(ReplayCacheError::KeyShare);
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
        if let Some((_, old_key)) = state.entries.insert(*id, (until, key)) {
            // An expired entry of the same id, taken over.
            state.release(old_key);
        }
        *state.per_key.entry(key).or_insert(0) += 1;
        Ok(true)
    }
}

impl State {
    fn release(&mut self, key: u64) {
        if let Some(n) = self.per_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&key);
            }
        }
    }

    /// Drops the entries whose deadline has passed.
    fn sweep(&mut self, now: u64) {
        let mut gone: Vec<u64> = Vec::new();
        self.entries.retain(|_, (deadline, key)| {
            let live = *deadline >= now;
            if !live {
                gone.push(*key);
            }
            live
        });
        for key in gone {
            self.release(key);
        }
    }
}

fn key_tag(key: &[u8; 32]) -> u64 {
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&key[..8]);
    u64::from_be_bytes(tag)
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        // Without a key: every such proof counts against one shared tag.
        self.first_use_now(0, id, until_unix_secs)
    }

    async fn first_use_by_key(
        &self,
        key: &[u8; 32],
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        self.first_use_now(key_tag(key), id, until_unix_secs)
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
        assert_eq!(cache.first_use_now(1, &id, 1_010), Ok(true));
        assert_eq!(cache.first_use_now(1, &id, 1_010), Ok(false));
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            cache.first_use_now(1, &id, 1_010),
            Ok(false),
            "until is inclusive"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.first_use_now(1, &id, 1_030), Ok(true));
        assert_eq!(
            cache.lock().per_key.get(&1),
            Some(&1),
            "taken over, counted once"
        );
    }

    #[test]
    fn full_of_live_entries_refuses_and_stays_bounded() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = MemoryReplayCache::with_clock(100, clock.clone());
        for i in 0..100u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            // 100 keys, one proof each.
            assert_eq!(cache.first_use_now(u64::from(i), &id, 1_060), Ok(true));
        }
        assert_eq!(
            cache.first_use_now(7, &[0xff; 32], 1_060),
            Err(ReplayCacheError::Full)
        );
        // A replay of a remembered proof is still a replay, not "full".
        assert_eq!(cache.first_use_now(0, &[0; 32], 1_060), Ok(false));
        assert_eq!(cache.len(), 100);
        assert!(
            cache.memory_bytes() <= 4 * 100 * 60,
            "{}",
            cache.memory_bytes()
        );
        // Once the entries' deadlines pass, the sweep makes room.
        clock.advance(Duration::from_secs(61));
        assert_eq!(cache.first_use_now(7, &[0xee; 32], 1_200), Ok(true));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.lock().per_key.len(), 1);
    }

    #[test]
    fn one_key_holds_its_share_only() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = MemoryReplayCache::with_clock(64, clock.clone());
        assert_eq!(cache.key_share, 4);
        for i in 0..4u8 {
            assert_eq!(cache.first_use_now(1, &[i; 32], 1_060), Ok(true));
        }
        assert_eq!(
            cache.first_use_now(1, &[9; 32], 1_060),
            Err(ReplayCacheError::KeyShare)
        );
        assert_eq!(
            cache.first_use_now(2, &[10; 32], 1_060),
            Ok(true),
            "another key"
        );
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            cache.first_use_now(1, &[11; 32], 1_120),
            Ok(true),
            "after the window"
        );
    }
}
