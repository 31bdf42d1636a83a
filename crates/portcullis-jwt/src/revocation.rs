//! Revocation without a store round trip per request.
//!
//! (About 500 lines: the view, its tables and the memory store are one
//! consistency unit; the tests below exercise them together.)
//!
//! A [`RevocationStore`] is the source of truth (memory here, Redis in
//! `portcullis-redis`); every instance keeps a [`RevocationView`] in
//! process that the store keeps current (by pub/sub for Redis), and the
//! layer checks only the view. Three kinds of entry:
//!
//! - a token id (`jti`) on the denylist, until the token would have expired;
//! - a session or refresh family (`sid`), until its last access token would
//!   have expired (log out this device);
//!
//!   both kept [`MAX_LEEWAY`] past that expiry, since a layer accepts a
//!   token up to its leeway after `exp`;
//! - a user's token version: a token whose `ver` is below the user's
//!   current version is refused (log out everywhere, password change).
//!
//! ```
//! # tokio_test();
//! # fn tokio_test() { tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use portcullis_jwt::revocation::{MemoryRevocationStore, RevocationStore};
//!
//! let store = MemoryRevocationStore::new();
//! let view = store.view();
//! assert_eq!(view.user_version("alice"), 0);
//! store.revoke_user("alice").await.unwrap();
//! assert_eq!(view.user_version("alice"), 1);
//! # }) }
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock};

use crate::claims::RegisteredClaims;
use crate::validation::MAX_LEEWAY;

/// One change to the revocation state, as stores push it to views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// Deny the token with this `jti`; it expires at `expires_at`
    /// (seconds), and the view keeps the entry [`MAX_LEEWAY`] longer.
    Token {
        /// The token id.
        jti: String,
        /// The token's `exp`.
        expires_at: i64,
    },
    /// Deny every token with this `sid`; the last of them expires at
    /// `expires_at` (seconds), and the view keeps the entry [`MAX_LEEWAY`]
    /// longer.
    Session {
        /// The session or family id.
        sid: String,
        /// When the session's last access token expires.
        expires_at: i64,
    },
    /// The user's token version is now `version`.
    User {
        /// The user (`sub`).
        user: String,
        /// The new version.
        version: u64,
    },
}

/// The in-process revocation state the layer checks. Cheap to clone.
#[derive(Clone)]
pub struct RevocationView {
    inner: Arc<ViewInner>,
}

struct ViewInner {
    /// False until the store has loaded its first snapshot, and while the
    /// store has marked it stale: a layer then answers 503 rather than
    /// accept tokens it may not know are revoked.
    ready: std::sync::atomic::AtomicBool,
    /// The tables, swapped whole by [`RevocationView::replace_all`], so a
    /// reader sees either the old state or the new one, never a state
    /// being rebuilt.
    state: ArcSwap<Tables>,
    /// Serializes writers (`apply`, `replace_all`), so a change is never
    /// applied to tables being replaced and lost; readers never take it.
    writer: Mutex<()>,
    clock: SharedClock,
    /// The clock's reading (seconds) when the view was built, and the
    /// monotonic instant it was read at: together, an estimate of the
    /// time that no step of the clock can move forward.
    anchor_secs: AtomicI64,
    anchor: Instant,
}

/// The whole revocation state.
struct Tables {
    tokens: Table<i64>,
    sessions: Table<i64>,
    users: Table<u64>,
}

impl Tables {
    fn new() -> Self {
        Self {
            tokens: Table::new(),
            sessions: Table::new(),
            users: Table::new(),
        }
    }

    fn apply(&self, event: &RevocationEvent, now: i64) {
        match event {
            RevocationEvent::Token { jti, expires_at } => {
                self.tokens.update(|t| t.deny(jti, *expires_at, now));
            }
            RevocationEvent::Session { sid, expires_at } => {
                self.sessions.update(|t| t.deny(sid, *expires_at, now));
            }
            RevocationEvent::User { user, version } => self.users.update(|t| {
                if let Some(v) = t.map.get_mut(user.as_str()) {
                    *v = (*v).max(*version);
                } else {
                    t.map.insert(Arc::from(user.as_str()), *version);
                }
            }),
        }
    }
}

/// How long entries outlive the expiry they were given, in seconds.
const KEEP_PAST_EXPIRY: i64 = {
    let secs = MAX_LEEWAY.as_secs();
    assert!(secs <= i64::MAX as u64);
    secs as i64
};

/// A map that readers skip entirely while it is empty. Tables of expiring
/// entries also keep their expiries in a min-heap, so forgetting expired
/// entries costs O(log n) per entry forgotten, not a scan of the table on
/// every change (which made building a view of n entries O(n²)).
struct Table<V> {
    map: RwLock<TableInner<V>>,
    len: AtomicUsize,
}

struct TableInner<V> {
    map: HashMap<Arc<str>, V>,
    /// (expiry, key) of every entry inserted with an expiry; an element
    /// whose key now maps to another expiry is stale and skipped.
    expiries: BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

impl<V: Copy> Table<V> {
    fn new() -> Self {
        Self {
            map: RwLock::new(TableInner {
                map: HashMap::new(),
                expiries: BinaryHeap::new(),
            }),
            len: AtomicUsize::new(0),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(key)
            .copied()
    }

    fn update(&self, f: impl FnOnce(&mut TableInner<V>)) {
        let mut t = self.map.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut t);
        self.len.store(t.map.len(), Ordering::Release);
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

impl TableInner<i64> {
    /// Forgets every entry kept until before `now` (an entry kept until
    /// `now` still denies: a layer accepts a token at `exp` plus leeway).
    /// `now` is the view's [`forget_before`](RevocationView::forget_before)
    /// time, never the clock alone.
    fn forget_expired(&mut self, now: i64) {
        while let Some(Reverse((exp, _))) = self.expiries.peek() {
            if *exp >= now {
                break;
            }
            let Some(Reverse((exp, key))) = self.expiries.pop() else {
                break;
            };
            if self.map.get(&key) == Some(&exp) {
                self.map.remove(&key);
            }
        }
    }

    /// Forgets the expired entries, then denies `key` until
    /// [`MAX_LEEWAY`] past `expires_at` (when that is still ahead): a layer
    /// accepts a token up to its leeway past `exp`, so the entry must
    /// outlive `exp` by the largest leeway.
    fn deny(&mut self, key: &str, expires_at: i64, now: i64) {
        self.forget_expired(now);
        let keep_until = expires_at.saturating_add(KEEP_PAST_EXPIRY);
        if keep_until >= now {
            let key: Arc<str> = Arc::from(key);
            // A second revocation of the same key never shortens it.
            let keep_until = self
                .map
                .get(&key)
                .map_or(keep_until, |old| (*old).max(keep_until));
            self.map.insert(Arc::clone(&key), keep_until);
            self.expiries.push(Reverse((keep_until, key)));
        }
    }
}

impl fmt::Debug for RevocationView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tokens, sessions, users) = self.len();
        f.debug_struct("RevocationView")
            .field("tokens", &tokens)
            .field("sessions", &sessions)
            .field("users", &users)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Default for RevocationView {
    fn default() -> Self {
        Self::new(SystemClock::shared())
    }
}

impl RevocationView {
    /// An empty view, ready at once (a single-process store is the view);
    /// entries are forgotten once `clock` and the monotonic time elapsed
    /// since now both say they expired (see [`apply`](Self::apply)).
    #[must_use]
    pub fn new(clock: SharedClock) -> Self {
        Self::with_readiness(clock, true)
    }

    /// An empty view that is not ready until [`mark_ready`](Self::mark_ready):
    /// for stores that must load a snapshot first (Redis). Until then a
    /// layer checking this view answers 503, since it cannot know what
    /// other instances revoked.
    #[must_use]
    pub fn pending(clock: SharedClock) -> Self {
        Self::with_readiness(clock, false)
    }

    fn with_readiness(clock: SharedClock, ready: bool) -> Self {
        let anchor = Instant::now();
        let anchor_secs = clock_secs(&clock);
        Self {
            inner: Arc::new(ViewInner {
                ready: std::sync::atomic::AtomicBool::new(ready),
                state: ArcSwap::from_pointee(Tables::new()),
                writer: Mutex::new(()),
                clock,
                anchor_secs: AtomicI64::new(anchor_secs),
                anchor,
            }),
        }
    }

    /// Marks the view current: its store loaded a snapshot (the first one,
    /// or a fresh one after [`mark_stale`](Self::mark_stale)). The view
    /// stays ready until its store marks it stale: a store cut off from its
    /// push channel may keep it ready for up to its staleness bound (the
    /// view then lags by at most that long, which stores document), and
    /// marks it stale past that bound, so layers answer 503 until the next
    /// snapshot.
    pub fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Marks the view stale: layers answer 503 until the store marks it
    /// ready again (after a fresh snapshot). Stores call this when they
    /// have been cut off from their push channel for longer than their
    /// staleness bound.
    pub fn mark_stale(&self) {
        self.inner.ready.store(false, Ordering::Release);
    }

    /// Whether the view is ready to be trusted.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Why the token is revoked, if it is. Costs no I/O: a few hash lookups,
    /// skipped while the tables are empty.
    #[must_use]
    pub fn check(&self, claims: &RegisteredClaims) -> Option<&'static str> {
        let v = self.inner.state.load();
        if let Some(jti) = &claims.jti {
            if v.tokens.get(jti).is_some() {
                return Some("token-revoked");
            }
        }
        if let Some(sid) = &claims.sid {
            if v.sessions.get(sid).is_some() {
                return Some("session-revoked");
            }
        }
        if let Some(sub) = &claims.sub {
            if let Some(current) = v.users.get(sub) {
                if claims.ver.unwrap_or(0) < current {
                    return Some("user-revoked");
                }
            }
        }
        None
    }

    /// The user's current token version (0 when never revoked): the `ver`
    /// new tokens must carry.
    #[must_use]
    pub fn user_version(&self, user: &str) -> u64 {
        self.inner.state.load().users.get(user).unwrap_or(0)
    }

    /// Whether the session or family `sid` is revoked.
    #[must_use]
    pub fn is_session_revoked(&self, sid: &str) -> bool {
        self.inner.state.load().sessions.get(sid).is_some()
    }

    /// Applies one change (stores call this; so does a pub/sub listener).
    /// User versions only move forward.
    ///
    /// Entries are forgotten (here and in [`replace_all`](Self::replace_all))
    /// only once both the clock and the monotonic time elapsed since the
    /// view was built say they have expired: a clock stepped forward and
    /// back again never brings a revoked token back.
    pub fn apply(&self, event: &RevocationEvent) {
        let _w = self.write();
        let now = self.forget_before();
        self.inner.state.load().apply(event, now);
    }

    /// Replaces the whole state with a snapshot (a store's view after a
    /// (re)connect). The new state is built aside and swapped in at once:
    /// a concurrent [`check`](Self::check) sees the old state or the new
    /// one, never a partial one (an entry in both is never missed).
    pub fn replace_all(&self, events: &[RevocationEvent]) {
        let _w = self.write();
        let now = self.forget_before();
        let next = Tables::new();
        for e in events {
            next.apply(e, now);
        }
        self.inner.state.store(Arc::new(next));
    }

    fn write(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The time (seconds) before which entries may be forgotten: the
    /// earlier of the clock and the monotonic estimate (the clock's
    /// reading when the view was built plus the monotonic time elapsed
    /// since). Keeping an entry longer is always safe (it denies a token
    /// the layer would refuse as expired anyway); forgetting it early
    /// would accept a revoked token once a clock that ran ahead is set
    /// back.
    fn forget_before(&self) -> i64 {
        let elapsed = i64::try_from(self.inner.anchor.elapsed().as_secs()).unwrap_or(i64::MAX);
        let monotonic = self
            .inner
            .anchor_secs
            .load(Ordering::Relaxed)
            .saturating_add(elapsed);
        clock_secs(&self.inner.clock).min(monotonic)
    }

    /// Moves the monotonic estimate forward by `by`, as if that much time
    /// had passed (tests on a manual clock).
    #[cfg(test)]
    fn pass_monotonic(&self, by: std::time::Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.inner.anchor_secs.fetch_add(secs, Ordering::Relaxed);
    }

    /// Number of entries (tokens, sessions, users).
    #[must_use]
    pub fn len(&self) -> (usize, usize, usize) {
        let t = self.inner.state.load();
        (t.tokens.len(), t.sessions.len(), t.users.len())
    }

    /// Whether the view holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }
}

/// The clock's reading in whole seconds.
fn clock_secs(clock: &SharedClock) -> i64 {
    i64::try_from(clock.now().secs()).unwrap_or(i64::MAX)
}

/// The source of truth for revocations, which keeps a [`RevocationView`]
/// current.
///
/// Contract: after a method returns `Ok`, the change is durable in the
/// store and visible in this instance's view; other instances' views see it
/// as soon as the store can push it (milliseconds for Redis pub/sub). On
/// `Err` the change may not have happened and the caller must not report
/// success.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Denies the token `jti` until `expires_at` (its `exp`, in seconds).
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError>;

    /// Denies every token of session or family `sid` until `expires_at`.
    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError>;

    /// Bumps the user's token version, refusing every token minted before;
    /// returns the new version.
    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError>;

    /// The in-process view this store keeps current.
    fn view(&self) -> RevocationView;
}

/// A single-process revocation store: the view is the store.
#[derive(Debug, Clone)]
pub struct MemoryRevocationStore {
    view: RevocationView,
}

impl Default for MemoryRevocationStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRevocationStore {
    /// A store on the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// A store whose entries expire by `clock`.
    #[must_use]
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            view: RevocationView::new(clock),
        }
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocationStore {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.view.apply(&RevocationEvent::Token {
            jti: jti.to_owned(),
            expires_at,
        });
        Ok(())
    }

    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        self.view.apply(&RevocationEvent::Session {
            sid: sid.to_owned(),
            expires_at,
        });
        Ok(())
    }

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        let version = self.view.user_version(user) + 1;
        self.view.apply(&RevocationEvent::User {
            user: user.to_owned(),
            version,
        });
        Ok(version)
    }

    fn view(&self) -> RevocationView {
        self.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::ManualClock;
    use std::time::Duration;

    fn claims(jti: &str, sid: &str, sub: &str, ver: Option<u64>) -> RegisteredClaims {
        RegisteredClaims {
            jti: Some(jti.into()),
            sid: Some(sid.into()),
            sub: Some(sub.into()),
            ver,
            ..RegisteredClaims::default()
        }
    }

    #[tokio::test]
    async fn each_kind_revokes_and_expires() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = MemoryRevocationStore::with_clock(clock.clone());
        let view = store.view();
        let c = claims("j1", "s1", "alice", Some(0));
        assert_eq!(view.check(&c), None);
        store.revoke_token("j1", 1100).await.unwrap();
        assert_eq!(view.check(&c), Some("token-revoked"));
        assert_eq!(view.check(&claims("j2", "s1", "alice", None)), None);
        store.revoke_session("s1", 1100).await.unwrap();
        assert_eq!(
            view.check(&claims("j2", "s1", "alice", None)),
            Some("session-revoked")
        );
        assert_eq!(store.revoke_user("bob").await.unwrap(), 1);
        assert_eq!(
            view.check(&claims("j3", "s3", "bob", None)),
            Some("user-revoked")
        );
        assert_eq!(
            view.check(&claims("j3", "s3", "bob", Some(0))),
            Some("user-revoked")
        );
        assert_eq!(
            view.check(&claims("j3", "s3", "bob", Some(1))),
            None,
            "tokens minted after are fine"
        );
        // Entries outlive `exp` by the largest leeway a layer may allow...
        let pass = |secs| {
            clock.advance(Duration::from_secs(secs));
            view.pass_monotonic(Duration::from_secs(secs));
        };
        pass(100 + MAX_LEEWAY.as_secs());
        store.revoke_token("other", 2000).await.unwrap();
        store.revoke_session("other", 2000).await.unwrap();
        assert_eq!(view.len(), (2, 2, 1));
        assert_eq!(view.check(&c), Some("token-revoked"));
        // ...and are forgotten once every layer would refuse their tokens.
        pass(1);
        store.revoke_token("other2", 2000).await.unwrap();
        store.revoke_session("other2", 2000).await.unwrap();
        assert_eq!(view.len(), (2, 2, 1));
        assert_eq!(view.check(&c), None);
    }

    #[test]
    fn a_second_revocation_never_shortens_the_first() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let view = RevocationView::new(clock.clone());
        let deny = |jti: &str, expires_at| {
            view.apply(&RevocationEvent::Token {
                jti: jti.into(),
                expires_at,
            });
        };
        deny("j", 5000);
        deny("j", 1100);
        clock.advance(Duration::from_secs(1000));
        view.pass_monotonic(Duration::from_secs(1000));
        deny("other", 9000);
        assert_eq!(
            view.check(&claims("j", "s", "u", None)),
            Some("token-revoked")
        );
    }

    /// `replace_all` swaps a state built aside: a reader hammering `check`
    /// for a token revoked in both the old state and the snapshot never
    /// sees it as not revoked. (Clearing the live tables and refilling
    /// them opens a window of thousands of inserts on every replacement.)
    #[test]
    fn replace_all_is_atomic_for_readers() {
        use std::sync::atomic::AtomicBool;
        let view = RevocationView::default();
        let far = i64::MAX / 2;
        // The revoked token comes last, after many other entries.
        let mut snapshot: Vec<RevocationEvent> = (0..5_000)
            .map(|i| RevocationEvent::Token {
                jti: format!("other-{i}"),
                expires_at: far,
            })
            .collect();
        snapshot.push(RevocationEvent::Token {
            jti: "revoked".into(),
            expires_at: far,
        });
        view.replace_all(&snapshot);
        let revoked = claims("revoked", "s", "u", None);
        assert_eq!(view.check(&revoked), Some("token-revoked"));
        let stop = AtomicBool::new(false);
        let checks = AtomicUsize::new(0);
        let misses = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    if view.check(&revoked).is_none() {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                    checks.fetch_add(1, Ordering::Release);
                }
            });
            // Enough replacements that the reader runs during many of them
            // (whatever the scheduler does), then stop.
            let mut replaced = 0;
            while replaced < 50 || checks.load(Ordering::Acquire) < 200_000 {
                view.replace_all(&snapshot);
                replaced += 1;
            }
            stop.store(true, Ordering::Release);
        });
        assert_eq!(
            misses.load(Ordering::Relaxed),
            0,
            "a revoked token read as not revoked during replace_all"
        );
    }

    #[test]
    fn pending_views_become_ready_and_stale_views_not_ready() {
        let view = RevocationView::pending(SystemClock::shared());
        assert!(!view.is_ready());
        view.clone().mark_ready();
        assert!(view.is_ready(), "clones share readiness");
        assert!(RevocationView::default().is_ready());
        view.clone().mark_stale();
        assert!(!view.is_ready(), "clones share staleness");
        view.mark_ready();
        assert!(view.is_ready());
    }

    /// Entries are forgotten only when the clock and the monotonic time
    /// both say they expired: a clock that ran ahead forgets nothing (and
    /// a revoked token stays revoked once the clock is set back), and a
    /// clock behind the monotonic estimate keeps them too.
    #[test]
    fn forgetting_needs_the_clock_and_the_monotonic_time() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let view = RevocationView::new(clock.clone());
        let deny = |jti: &str| {
            view.apply(&RevocationEvent::Token {
                jti: jti.into(),
                expires_at: 1100,
            });
        };
        let revoked = claims("j", "s", "u", None);
        deny("j");
        let past = Duration::from_secs(100 + MAX_LEEWAY.as_secs() + 1);
        // The clock alone runs past the entry's end: kept.
        clock.advance(past);
        deny("a");
        assert_eq!(view.check(&revoked), Some("token-revoked"));
        // The monotonic time alone runs past it (the clock set back): kept.
        clock.set(portcullis_core::Timestamp::from_secs(1000));
        view.pass_monotonic(past);
        deny("b");
        assert_eq!(view.check(&revoked), Some("token-revoked"));
        view.replace_all(&[RevocationEvent::Token {
            jti: "j".into(),
            expires_at: 1100,
        }]);
        assert_eq!(view.check(&revoked), Some("token-revoked"));
        // Both past it: forgotten.
        clock.advance(past);
        deny("c");
        assert_eq!(view.check(&revoked), None);
    }

    #[test]
    fn versions_only_move_forward() {
        let view = RevocationView::default();
        view.apply(&RevocationEvent::User {
            user: "a".into(),
            version: 3,
        });
        view.apply(&RevocationEvent::User {
            user: "a".into(),
            version: 2,
        });
        assert_eq!(view.user_version("a"), 3);
    }
}
