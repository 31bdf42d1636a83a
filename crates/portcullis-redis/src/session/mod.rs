//! `RedisSessionStore`: sessions shared by every instance of an application.
//!
//! ```no_run
//! use portcullis_redis::{RedisConfig, RedisSessionStore};
//! use portcullis_session::{SessionConfig, SessionLayer};
//!
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/").build()?;
//! let layer = SessionLayer::new(RedisSessionStore::new(backend), SessionConfig::default())?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See the [crate docs](crate) for the key layout, the round trips each
//! operation costs and the guarantees on Redis Cluster.

mod codec;
mod scripts;

use std::fmt;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Value};
use futures_util::future::{join, join_all};
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp, TokenDigest};
use portcullis_session::{
    CapPolicy, CreateOutcome, SessionCap, SessionRecord, SessionStore, SessionUpdate,
};

use crate::backend::{Idempotent, Op, RedisBackend};
use crate::index::{self, Added, Cap, NewEntry, UserIndex, UserIndexes};
use crate::{EXPIRY_GRACE, nonce::nonce};
use scripts::{CREATE, DELETE, UPDATE};

/// The longest native TTL set (about 35 years).
const MAX_TTL_MS: u64 = 1 << 40;

/// The native TTL of something that ends at `until`, seen at `now`.
fn ttl_ms(until: Timestamp, now: Timestamp) -> u64 {
    let ms = u64::try_from((until.saturating_since(now) + EXPIRY_GRACE).as_millis())
        .unwrap_or(MAX_TTL_MS);
    ms.clamp(1, MAX_TTL_MS)
}

/// A [`SessionStore`] on Redis (or Redis Cluster).
///
/// Every instance of an application built on the same Redis and key prefix
/// sees the same sessions: a session created on one works on all, and a
/// logout on one is refused on the others at once (there is no cache).
/// Loading a session is one `GET`: one round trip.
///
/// Expiry is judged by the clock the store was built with (give it the
/// layer's clock); the keys also carry a native TTL, [`EXPIRY_GRACE`] past
/// the session's end, so that Redis cleans them up.
#[derive(Clone)]
pub struct RedisSessionStore {
    backend: RedisBackend,
    clock: SharedClock,
    sessions: String,
    users: UserIndexes,
}

impl fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("backend", &self.backend)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What a user index entry turned out to be.
enum Entry {
    Live(TokenDigest, SessionRecord),
    /// The user's record, expired by this instance's clock but still in
    /// Redis: it neither counts nor is listed, and stays indexed (another
    /// instance's clock may still see it live; its key's TTL ends it).
    Ended(String),
    /// Absent, another user's or unreadable: it leaves the index.
    Dead(String),
}

impl RedisSessionStore {
    /// A store on `backend`, judging expiry by the system clock.
    #[must_use]
    pub fn new(backend: RedisBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// A store on `backend` judging expiry by `clock` (give it the layer's
    /// clock).
    #[must_use]
    pub fn with_clock(backend: RedisBackend, clock: SharedClock) -> Self {
        let prefix = backend.key_prefix();
        Self {
            sessions: format!("{prefix}:s:"),
            users: UserIndexes::new(prefix, "ua", "uc"),
            backend,
            clock,
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &RedisBackend {
        &self.backend
    }

    /// The Redis key of a session: `<prefix>:s:<hex of the digest>`.
    #[must_use]
    pub fn session_key(&self, key: &TokenDigest) -> String {
        self.session_key_hex(&key.to_hex())
    }

    fn session_key_hex(&self, hex: &str) -> String {
        let mut k = String::with_capacity(self.sessions.len() + 64);
        k.push_str(&self.sessions);
        k.push_str(hex);
        k
    }

    /// The Redis key of a user's index by absolute deadline:
    /// `<prefix>:ua:{<hex of SHA-256 of the user id>}`, a sorted set
    /// (member: session digest in hex, score: absolute deadline in ms). Its
    /// twin by creation time is [`user_created_key`](Self::user_created_key).
    #[must_use]
    pub fn user_index_key(&self, user_id: &str) -> String {
        self.index(user_id).by_deadline
    }

    /// The Redis key of a user's index by creation time:
    /// `<prefix>:uc:{<hex of SHA-256 of the user id>}`, a sorted set
    /// (member: session digest in hex, score: created at in ms), in the
    /// same Cluster slot as [`user_index_key`](Self::user_index_key).
    #[must_use]
    pub fn user_created_key(&self, user_id: &str) -> String {
        self.index(user_id).by_created
    }

    fn index(&self, user_id: &str) -> UserIndex {
        self.users.of(user_id)
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.backend.run(Op::Cmd(cmd), Idempotent::Yes).await
    }

    /// Runs [`DELETE`]; returns (live, user).
    async fn delete_record(
        &self,
        session_key: &str,
        only_user: Option<&str>,
        now: Timestamp,
    ) -> Result<(bool, Option<String>), StoreError> {
        let mut inv = DELETE.prepare_invoke();
        inv.key(session_key).arg(now.millis());
        match only_user {
            Some(user) => inv.arg(format!("={user}")),
            None => inv.arg(""),
        };
        // Not resent: a second run would report the record as already gone.
        let reply: Value = self.backend.run(Op::Script(&inv), Idempotent::No).await?;
        let Value::Array(items) = reply else {
            return Err(StoreError::backend(UnexpectedReply));
        };
        match items.as_slice() {
            [Value::Int(live), Value::Int(has_user), user] => {
                let user = match (has_user, user) {
                    (1, Value::BulkString(b)) => {
                        Some(String::from_utf8_lossy(b.as_slice()).into_owned())
                    }
                    _ => None,
                };
                Ok((*live == 1, user))
            }
            _ => Err(StoreError::backend(UnexpectedReply)),
        }
    }

    /// Removes `members` from a user's index; failures only leave dead
    /// entries, which later reads prune.
    async fn unindex(&self, index: &UserIndex, members: &[String]) {
        if members.is_empty() {
            return;
        }
        if index::remove(&self.backend, index, members).await.is_err() {
            portcullis_core::event!(
                debug,
                reason = "unindex-failed",
                "dead entries left in a user index; pruned later"
            );
        }
    }

    /// Reads each session that index entries name: the live ones, the
    /// ended ones (expired by this instance's clock) and the dead ones
    /// (absent, another user's, unreadable).
    async fn check_entries(
        &self,
        user_id: &str,
        members: Vec<String>,
        now: Timestamp,
    ) -> Result<Vec<Entry>, StoreError> {
        let reads = members.into_iter().map(|member| async move {
            let Ok(digest) = TokenDigest::from_hex(&member) else {
                return Ok(Entry::Dead(member));
            };
            let mut get = redis::cmd("GET");
            get.arg(self.session_key_hex(&member));
            let value: Option<Vec<u8>> = self.cmd(&get).await?;
            match codec::decode(value.as_deref()) {
                Ok(Some(rec)) if rec.user_id.as_deref() == Some(user_id) => {
                    Ok(if rec.is_expired(now) {
                        Entry::Ended(member)
                    } else {
                        Entry::Live(digest, rec)
                    })
                }
                Ok(_) => Ok(Entry::Dead(member)),
                Err(e) if e.is_unavailable() => Err(e),
                Err(_) => Ok(Entry::Dead(member)),
            }
        });
        join_all(reads).await.into_iter().collect()
    }

    /// Scans a user's sessions and prunes the dead entries (ended ones stay
    /// indexed until their keys expire).
    async fn live_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let now = self.clock.now();
        let index = self.index(user_id);
        let members = index::members(&self.backend, &index).await?;
        let entries = self.check_entries(user_id, members, now).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for entry in entries {
            match entry {
                Entry::Live(k, rec) => live.push((k, rec)),
                Entry::Ended(_) => {}
                Entry::Dead(m) => dead.push(m),
            }
        }
        self.unindex(&index, &dead).await;
        Ok(live)
    }

    /// Adds a freshly stored session to its user's index under the cap;
    /// ends the victims. On error the caller abandons the new session.
    async fn index_new(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        user_id: &str,
        cap: Option<SessionCap>,
        now: Timestamp,
    ) -> Result<CreateOutcome, StoreError> {
        let index = self.index(user_id);
        let hex = key.to_hex();
        let replacing = cap.and_then(|c| c.replacing).map(|r| r.to_hex());
        let entry = NewEntry {
            member: &hex,
            created_at: record.created_at,
            absolute_deadline: record.absolute_deadline,
            ttl_ms: ttl_ms(record.absolute_deadline, now),
        };
        let cap = cap.map(|cap| Cap {
            max: cap.max,
            refuse: cap.policy == CapPolicy::Refuse,
            replacing: replacing.as_deref(),
        });
        // At the cap: the oldest entries are read; those whose record is
        // gone or another user's leave the index, ended ones stop counting
        // but stay listed until their key goes (another instance's clock
        // may still see them live).
        let check = |members: Vec<String>| async move {
            let entries = self.check_entries(user_id, members, now).await?;
            Ok(entries
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Dead(m) => Some(m),
                    Entry::Ended(m) => Some(format!("~{m}")),
                    Entry::Live(..) => None,
                })
                .collect())
        };
        // Pruned EXPIRY_GRACE past their absolute deadline (when their keys
        // are gone), by this clock and the server's both.
        let prune = Timestamp::from_millis(
            now.millis()
                .saturating_sub(u64::try_from(EXPIRY_GRACE.as_millis()).unwrap_or(u64::MAX)),
        );
        let victims = match index::add(&self.backend, &index, now, prune, entry, cap, check).await?
        {
            Added::Yes { victims } => victims,
            Added::Refused => {
                // Refused: take back the record stored a moment ago.
                let mut del = redis::cmd("DEL");
                del.arg(self.session_key(key));
                self.cmd::<i64>(&del).await?;
                return Ok(CreateOutcome::LimitReached);
            }
        };
        // End the victims' records first, then drop them from the index: a
        // failure in between leaves them indexed, never live and unlisted.
        let ends = victims.iter().map(|member| async move {
            if TokenDigest::from_hex(member).is_err() {
                return Ok(());
            }
            self.delete_record(&self.session_key_hex(member), Some(user_id), now)
                .await
                .map(|_| ())
        });
        join_all(ends)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, StoreError>>()?;
        self.unindex(&index, &victims).await;
        let evicted = victims
            .iter()
            .filter_map(|m| TokenDigest::from_hex(m).ok())
            .collect();
        Ok(CreateOutcome::Created { evicted })
    }

    /// Best-effort removal of a session whose creation failed half-way
    /// (both at once: one time bound, not two).
    async fn abandon(&self, key: &TokenDigest, user_id: &str) {
        let mut del = redis::cmd("DEL");
        del.arg(self.session_key(key));
        let index = self.index(user_id);
        let member = [key.to_hex()];
        let (_, ()) = join(self.cmd::<i64>(&del), self.unindex(&index, &member)).await;
    }
}

/// Redis answered a script with something it never returns.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from a Redis script")]
struct UnexpectedReply;

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        let now = self.clock.now();
        let nonce = nonce();
        let value = codec::encode(record, &nonce)?;
        let mut inv = CREATE.prepare_invoke();
        inv.key(self.session_key(key))
            .arg(now.millis())
            .arg(ttl_ms(record.expires_at(), now))
            .arg(&nonce)
            .arg(value);
        let stored: i64 = self.backend.run(Op::Script(&inv), Idempotent::Yes).await?;
        if stored != 1 {
            return Err(StoreError::conflict());
        }
        let Some(user_id) = record.user_id.as_deref() else {
            return Ok(CreateOutcome::Created {
                evicted: Vec::new(),
            });
        };
        match self.index_new(key, record, user_id, cap, now).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.abandon(key, user_id).await;
                Err(e)
            }
        }
    }

    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let now = self.clock.now();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.session_key(key));
        let value: Option<Vec<u8>> = self.cmd(&cmd).await?;
        Ok(codec::decode(value.as_deref())?.filter(|rec| !rec.is_expired(now)))
    }

    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut inv = UPDATE.prepare_invoke();
        inv.key(self.session_key(key))
            .arg(now.millis())
            .arg(update.last_seen.millis())
            .arg(update.idle_deadline.millis())
            .arg(EXPIRY_GRACE.as_millis().to_string())
            .arg(update.remove.len());
        for removed in &update.remove {
            inv.arg(removed);
        }
        for (k, value) in &update.set {
            inv.arg(k).arg(value.to_string());
        }
        let applied: i64 = self.backend.run(Op::Script(&inv), Idempotent::Yes).await?;
        if applied == 1 {
            Ok(())
        } else {
            Err(StoreError::not_found())
        }
    }

    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        self.update(
            key,
            &SessionUpdate {
                last_seen,
                idle_deadline,
                ..SessionUpdate::default()
            },
        )
        .await
    }

    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let (live, user) = self
            .delete_record(&self.session_key(key), None, now)
            .await?;
        if let Some(user) = user {
            self.unindex(&self.index(&user), &[key.to_hex()]).await;
        }
        Ok(live)
    }

    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        self.live_for_user(user_id).await
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let index = self.index(user_id);
        let members = index::members(&self.backend, &index).await?;
        let except = except.map(TokenDigest::to_hex);
        let members: Vec<String> = members
            .into_iter()
            .filter(|m| Some(m) != except.as_ref())
            .collect();
        let deletes = members.iter().map(|member| async move {
            if TokenDigest::from_hex(member).is_err() {
                return Ok(false);
            }
            self.delete_record(&self.session_key_hex(member), Some(user_id), now)
                .await
                .map(|(live, _)| live)
        });
        let mut deleted = 0;
        for result in join_all(deletes).await {
            if result? {
                deleted += 1;
            }
        }
        self.unindex(&index, &members).await;
        Ok(deleted)
    }

    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        Ok(self.live_for_user(user_id).await?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded() {
        let now = Timestamp::from_secs(100);
        assert_eq!(ttl_ms(now, now), 60_000);
        assert_eq!(ttl_ms(Timestamp::from_secs(50), now), 60_000);
        assert_eq!(ttl_ms(Timestamp::from_secs(101), now), 61_000);
        assert_eq!(ttl_ms(Timestamp::from_millis(u64::MAX), now), MAX_TTL_MS);
    }

    #[test]
    fn key_layout() {
        let backend = crate::RedisConfig::new("redis://localhost/")
            .key_prefix("app")
            .build()
            .unwrap();
        let store = RedisSessionStore::new(backend);
        let digest = TokenDigest::from_bytes([0xab; 32]);
        assert_eq!(
            store.session_key(&digest),
            format!("app:s:{}", "ab".repeat(32))
        );
        let hex = TokenDigest::of(b"alice").to_hex();
        assert_eq!(store.user_index_key("alice"), format!("app:ua:{{{hex}}}"));
        assert_eq!(store.user_created_key("alice"), format!("app:uc:{{{hex}}}"));
    }
}
