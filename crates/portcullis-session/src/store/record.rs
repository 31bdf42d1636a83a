//! What a store keeps for one session, the changes a request makes, and the
//! per-user cap.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use portcullis_core::{Deadlines, Timestamp, TokenDigest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Metadata a "your active sessions" page can show.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMetadata {
    /// The `User-Agent` the session was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client address the session was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl fmt::Debug for SessionMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMetadata")
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .finish()
    }
}

/// One session as a store keeps it.
///
/// The store key is the SHA-256 of the session id
/// ([`TokenDigest`]); the id itself is never stored. `Debug` prints the
/// data keys, never their values (a session may hold a CSRF secret).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The logged-in user, `None` for an anonymous session. Set only by
    /// `login`, which always creates a new record: it never changes in place.
    pub user_id: Option<String>,
    /// The application's data, one JSON value per key.
    pub data: BTreeMap<String, Value>,
    /// When the session was created.
    pub created_at: Timestamp,
    /// The last request that extended the idle deadline.
    pub last_seen: Timestamp,
    /// The session ends at this time unless a request extends it.
    pub idle_deadline: Timestamp,
    /// The session ends at this time whatever happens.
    pub absolute_deadline: Timestamp,
    /// User agent and address.
    #[serde(default)]
    pub metadata: SessionMetadata,
}

impl SessionRecord {
    /// The record's two deadlines.
    #[must_use]
    pub const fn deadlines(&self) -> Deadlines {
        Deadlines {
            idle: self.idle_deadline,
            absolute: self.absolute_deadline,
        }
    }

    /// When the session ends: the earlier of its two deadlines.
    #[must_use]
    pub fn expires_at(&self) -> Timestamp {
        self.deadlines().expires_at()
    }

    /// Whether the session has ended at `now`.
    #[must_use]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.deadlines().is_expired(now)
    }

    /// Applies a key-level update (what [`SessionStore::update`] must do).
    ///
    /// [`SessionStore::update`]: crate::store::SessionStore::update
    pub fn apply(&mut self, update: &SessionUpdate) {
        for key in &update.remove {
            self.data.remove(key);
        }
        for (key, value) in &update.set {
            self.data.insert(key.clone(), value.clone());
        }
        self.touch(update.last_seen, update.idle_deadline);
    }

    /// Extends the idle deadline (never past the absolute deadline, never
    /// backwards) and records `last_seen`.
    pub fn touch(&mut self, last_seen: Timestamp, idle_deadline: Timestamp) {
        self.last_seen = self.last_seen.max(last_seen);
        self.idle_deadline = self.deadlines().extended_to(idle_deadline).idle;
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user_id", &self.user_id)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .field("idle_deadline", &self.idle_deadline)
            .field("absolute_deadline", &self.absolute_deadline)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The changes one request made to an existing session: single keys set or
/// removed, and the new idle deadline.
#[derive(Clone, Default, PartialEq)]
pub struct SessionUpdate {
    /// Keys to set, with their new values.
    pub set: BTreeMap<String, Value>,
    /// Keys to remove.
    pub remove: BTreeSet<String>,
    /// The request's time.
    pub last_seen: Timestamp,
    /// The new idle deadline (stores cap it at the absolute deadline).
    pub idle_deadline: Timestamp,
}

impl SessionUpdate {
    /// Whether the update changes any key.
    #[must_use]
    pub fn changes_data(&self) -> bool {
        !self.set.is_empty() || !self.remove.is_empty()
    }
}

impl fmt::Debug for SessionUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionUpdate")
            .field("set_keys", &self.set.keys().collect::<Vec<_>>())
            .field("remove", &self.remove)
            .field("last_seen", &self.last_seen)
            .field("idle_deadline", &self.idle_deadline)
            .finish()
    }
}

/// What to do when a user logging in already has the maximum number of
/// live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapPolicy {
    /// End the user's oldest sessions (by creation time) to make room.
    EvictOldest,
    /// Refuse the new login.
    Refuse,
}

/// A limit on one user's concurrent sessions, enforced atomically by
/// [`SessionStore::create`](crate::store::SessionStore::create).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCap {
    /// The most live sessions the user may have, the new one included.
    pub max: usize,
    /// What to do when the limit is reached.
    pub policy: CapPolicy,
    /// A session not to count (the one being replaced by a login's id
    /// renewal, which is deleted right after).
    pub replacing: Option<TokenDigest>,
}

/// The result of [`SessionStore::create`](crate::store::SessionStore::create).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum CreateOutcome {
    /// The record was stored; `evicted` lists sessions ended to respect the
    /// cap.
    Created {
        /// Sessions ended to make room.
        evicted: Vec<TokenDigest>,
    },
    /// The cap's policy is [`CapPolicy::Refuse`] and the user is at the limit:
    /// nothing was stored.
    LimitReached,
}

/// Picks the sessions to evict so that `live` (the user's live sessions,
/// the replaced one excluded) plus one new session fits under `cap`:
/// oldest first. Shared by the stores so they agree on the order.
#[must_use]
pub fn eviction_victims(
    mut live: Vec<(TokenDigest, Timestamp)>,
    cap: &SessionCap,
) -> Option<Vec<TokenDigest>> {
    let max = cap.max.max(1);
    if live.len() < max {
        return Some(Vec::new());
    }
    if cap.policy == CapPolicy::Refuse {
        return None;
    }
    live.sort_by_key(|(key, created)| (*created, *key));
    let excess = live.len() + 1 - max;
    Some(live.into_iter().take(excess).map(|(k, _)| k).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> SessionRecord {
        SessionRecord {
            user_id: None,
            data: BTreeMap::new(),
            created_at: Timestamp::from_secs(0),
            last_seen: Timestamp::from_secs(0),
            idle_deadline: Timestamp::from_secs(10),
            absolute_deadline: Timestamp::from_secs(100),
            metadata: SessionMetadata::default(),
        }
    }

    #[test]
    fn touch_never_passes_absolute_nor_goes_back() {
        let mut r = rec();
        r.touch(Timestamp::from_secs(5), Timestamp::from_secs(500));
        assert_eq!(r.idle_deadline, Timestamp::from_secs(100));
        r.touch(Timestamp::from_secs(6), Timestamp::from_secs(50));
        assert_eq!(r.idle_deadline, Timestamp::from_secs(100));
        assert!(r.is_expired(Timestamp::from_secs(100)));
        assert!(!r.is_expired(Timestamp::from_secs(99)));
    }

    #[test]
    fn debug_hides_values() {
        let mut r = rec();
        r.data.insert("csrf".into(), Value::String("s3cr3t".into()));
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }

    #[test]
    fn victims_table() {
        let k = |b: u8| TokenDigest::from_bytes([b; 32]);
        let t = Timestamp::from_secs;
        let live = vec![(k(1), t(3)), (k(2), t(1)), (k(3), t(2))];
        let evict = SessionCap {
            max: 3,
            policy: CapPolicy::EvictOldest,
            replacing: None,
        };
        assert_eq!(eviction_victims(live.clone(), &evict), Some(vec![k(2)]));
        let refuse = SessionCap {
            policy: CapPolicy::Refuse,
            ..evict
        };
        assert_eq!(eviction_victims(live.clone(), &refuse), None);
        let roomy = SessionCap { max: 4, ..evict };
        assert_eq!(eviction_victims(live.clone(), &roomy), Some(vec![]));
        let one = SessionCap { max: 1, ..evict };
        assert_eq!(eviction_victims(live, &one), Some(vec![k(2), k(3), k(1)]));
    }
}
