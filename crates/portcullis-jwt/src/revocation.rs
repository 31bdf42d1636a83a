//! Revocation without a store round trip per request.
//!
//! A [`RevocationStore`] is the source of truth (memory here, Redis in
//! `portcullis-redis`); every instance keeps a [`RevocationView`] in
//! process that the store keeps current (by pub/sub for Redis), and the
//! layer checks only the view. Three kinds of entry:
//!
//! - a token id (`jti`) on the denylist, until the token would have expired;
//! - a session or refresh family (`sid`), until its last access token would
//!   have expired (log out this device);
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock};

use crate::claims::RegisteredClaims;

/// One change to the revocation state, as stores push it to views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// Deny the token with this `jti` until `expires_at` (seconds).
    Token {
        /// The token id.
        jti: String,
        /// When the entry may be forgotten (the token's `exp`).
        expires_at: i64,
    },
    /// Deny every token with this `sid` until `expires_at` (seconds).
    Session {
        /// The session or family id.
        sid: String,
        /// When the entry may be forgotten.
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
    /// False until the store has loaded its first snapshot: a layer then
    /// answers 503 rather than accept tokens it may not know are revoked.
    ready: std::sync::atomic::AtomicBool,
    tokens: Table<i64>,
    sessions: Table<i64>,
    users: Table<u64>,
    clock: SharedClock,
}

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

    fn clear(&self) {
        self.update(|t| {
            t.map.clear();
            t.expiries.clear();
        });
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

impl TableInner<i64> {
    /// Forgets every entry whose expiry is `now` or earlier.
    fn forget_expired(&mut self, now: i64) {
        while let Some(Reverse((exp, _))) = self.expiries.peek() {
            if *exp > now {
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

    /// Forgets the expired entries, then denies `key` until `expires_at`
    /// (when that is still ahead).
    fn deny(&mut self, key: &str, expires_at: i64, now: i64) {
        self.forget_expired(now);
        if expires_at > now {
            let key: Arc<str> = Arc::from(key);
            self.map.insert(Arc::clone(&key), expires_at);
            self.expiries.push(Reverse((expires_at, key)));
        }
    }
}

impl fmt::Debug for RevocationView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationView")
            .field("tokens", &self.inner.tokens.len())
            .field("sessions", &self.inner.sessions.len())
            .field("users", &self.inner.users.len())
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
    /// `clock` decides when entries may be forgotten.
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
        Self {
            inner: Arc::new(ViewInner {
                ready: std::sync::atomic::AtomicBool::new(ready),
                tokens: Table::new(),
                sessions: Table::new(),
                users: Table::new(),
                clock,
            }),
        }
    }

    /// Marks the view current (its store loaded a first snapshot). A view
    /// stays ready afterwards: while a store's push channel reconnects the
    /// view may lag by the reconnect time, which stores document.
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
        let v = &self.inner;
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
        self.inner.users.get(user).unwrap_or(0)
    }

    /// Whether the session or family `sid` is revoked.
    #[must_use]
    pub fn is_session_revoked(&self, sid: &str) -> bool {
        self.inner.sessions.get(sid).is_some()
    }

    /// Applies one change (stores call this; so does a pub/sub listener).
    /// User versions only move forward.
    pub fn apply(&self, event: &RevocationEvent) {
        let now = self.inner.clock.now().secs();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        match event {
            RevocationEvent::Token { jti, expires_at } => {
                self.inner.tokens.update(|t| t.deny(jti, *expires_at, now));
            }
            RevocationEvent::Session { sid, expires_at } => {
                self.inner
                    .sessions
                    .update(|t| t.deny(sid, *expires_at, now));
            }
            RevocationEvent::User { user, version } => self.inner.users.update(|t| {
                if let Some(v) = t.map.get_mut(user.as_str()) {
                    *v = (*v).max(*version);
                } else {
                    t.map.insert(Arc::from(user.as_str()), *version);
                }
            }),
        }
    }

    /// Replaces the whole state with a snapshot (a store's view after a
    /// (re)connect).
    pub fn replace_all(&self, events: &[RevocationEvent]) {
        self.inner.tokens.clear();
        self.inner.sessions.clear();
        self.inner.users.clear();
        for e in events {
            self.apply(e);
        }
    }

    /// Number of entries (tokens, sessions, users).
    #[must_use]
    pub fn len(&self) -> (usize, usize, usize) {
        (
            self.inner.tokens.len(),
            self.inner.sessions.len(),
            self.inner.users.len(),
        )
    }

    /// Whether the view holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }
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
        // Entries are forgotten once their tokens would have expired anyway.
        clock.advance(Duration::from_secs(200));
        store.revoke_token("other", 2000).await.unwrap();
        store.revoke_session("other", 2000).await.unwrap();
        assert_eq!(view.len(), (1, 1, 1));
    }

    #[test]
    fn pending_views_become_ready_once() {
        let view = RevocationView::pending(SystemClock::shared());
        assert!(!view.is_ready());
        view.clone().mark_ready();
        assert!(view.is_ready(), "clones share readiness");
        assert!(RevocationView::default().is_ready());
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
