//! `RedisRefreshStore`: refresh-token families shared by every instance,
//! rotated by one Lua script. (About 510 lines: one method per
//! `RefreshStore` operation, each a thin call of its script; the scripts and
//! the record encoding have files of their own.)
//!
//! ```no_run
//! use std::sync::Arc;
//! use portcullis_jwt::revocation::RevocationStore as _;
//! use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
//! use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore};
//! use portcullis_refresh::{RefreshConfig, Refresher, RotationKey};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/").build()?;
//! let revocations = Arc::new(RedisRevocationStore::new(backend.clone())?);
//! # let key = SigningKey::generate("k1", Algorithm::ES256)?;
//! let issuer = JwtIssuer::builder(key).issuer("https://app").audience("app").build()?;
//! let jwt = JwtLayer::builder(issuer.keys()).issuer("https://app").audience("app")
//!     .revocation(revocations.view()).build()?;
//! // Every instance must derive the same successors: share the rotation key.
//! let config = RefreshConfig::default().rotation_key(RotationKey::from_bytes(&[7; 32])?);
//! let refresher = Refresher::builder(RedisRefreshStore::new(backend), issuer, revocations, jwt)
//!     .config(config)
//!     .build()?;
//! # let _ = refresher; Ok(()) }
//! ```
//!
//! See the [crate docs](crate#refresh-families) for the key layout, the
//! script and which calls are resent.

mod codec;
mod scripts;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Value};
use futures_util::future::join_all;
use portcullis_core::{StoreError, Timestamp};
use portcullis_refresh::{Family, FamilyId, RefreshStore, RotateOutcome, Rotation};

use crate::EXPIRY_GRACE;
use crate::backend::{Idempotent, Op, RedisBackend, glob_escape};
use crate::index::{self, Added, Cap, NewEntry, UserIndex, UserIndexes};
use codec::Fields;
use scripts::{CREATE, PURGE, REVOKE, ROTATE};

/// The longest native TTL set (about 35 years).
const MAX_TTL_MS: u64 = 1 << 40;

/// Families purged at once by [`RefreshStore::purge_expired`].
const PURGE_BATCH: usize = 64;

/// The native TTL of something that ends at `until`, seen at `now`, plus
/// [`EXPIRY_GRACE`].
fn ttl_ms(until: Timestamp, now: Timestamp) -> u64 {
    let ms = u64::try_from((until.saturating_since(now) + EXPIRY_GRACE).as_millis())
        .unwrap_or(MAX_TTL_MS);
    ms.clamp(1, MAX_TTL_MS)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Redis answered a script with something it never returns.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from a Redis script")]
struct UnexpectedReply;

/// A [`RefreshStore`] on Redis (or Redis Cluster).
///
/// One hash per family, `<prefix>:rf:{<family id>}`, and two sorted sets
/// per user listing the user's families (by absolute deadline and by
/// creation; a login touches a bounded part of them, and enforces the
/// per-user cap in one script). Rotation is one Lua script that reproduces
/// [`Family::classify`] and [`Family::rotate`] exactly (compare-and-swap on
/// the presented digest), so racing rotations of one token end with one
/// rotation on every instance. Expiry is judged by the `now` the caller
/// passes; the keys' native TTLs ([`EXPIRY_GRACE`] past the family's end)
/// only clean up.
///
/// Instances sharing this store must share the refresher's rotation key
/// (`RefreshConfig::rotation_key`): a repeat inside the grace window on
/// another instance must derive the same successor.
#[derive(Clone)]
pub struct RedisRefreshStore {
    backend: RedisBackend,
    families: String,
    users: UserIndexes,
}

impl fmt::Debug for RedisRefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRefreshStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A parsed `{code, fields}` script reply.
fn script_reply(reply: Value) -> Result<(i64, Option<Fields>), StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::backend(UnexpectedReply));
    };
    let mut items = items.into_iter();
    let Some(Value::Int(code)) = items.next() else {
        return Err(StoreError::backend(UnexpectedReply));
    };
    let fields = match items.next() {
        Some(v) => Some(
            redis::from_redis_value::<Fields>(v)
                .map_err(|_| StoreError::backend(UnexpectedReply))?,
        ),
        None => None,
    };
    Ok((code, fields))
}

impl RedisRefreshStore {
    /// A store on `backend`.
    #[must_use]
    pub fn new(backend: RedisBackend) -> Self {
        let prefix = backend.key_prefix();
        Self {
            families: format!("{prefix}:rf:"),
            users: UserIndexes::new(prefix, "rua", "ruc"),
            backend,
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &RedisBackend {
        &self.backend
    }

    /// The Redis key of a family: `<prefix>:rf:{<family id>}`.
    #[must_use]
    pub fn family_key(&self, id: &FamilyId) -> String {
        format!("{}{{{}}}", self.families, id.as_str())
    }

    /// The Redis key of a user's index by absolute deadline:
    /// `<prefix>:rua:{<hex of SHA-256 of the user id>}`, a sorted set
    /// (member: family id, score: absolute deadline in ms). Its twin by
    /// creation time is [`user_created_key`](Self::user_created_key).
    #[must_use]
    pub fn user_index_key(&self, user_id: &str) -> String {
        self.index(user_id).by_deadline
    }

    /// The Redis key of a user's index by creation time:
    /// `<prefix>:ruc:{<hex of SHA-256 of the user id>}`, a sorted set
    /// (member: family id, score: created at in ms), in the same Cluster
    /// slot as [`user_index_key`](Self::user_index_key).
    #[must_use]
    pub fn user_created_key(&self, user_id: &str) -> String {
        self.index(user_id).by_created
    }

    fn index(&self, user_id: &str) -> UserIndex {
        self.users.of(user_id)
    }

    /// The family id of a family key, if it is one of this store's.
    fn id_of_key(&self, key: &str) -> Option<FamilyId> {
        let id = key
            .strip_prefix(&self.families)?
            .strip_prefix('{')?
            .strip_suffix('}')?;
        FamilyId::parse(id)
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.backend.run(Op::Cmd(cmd), Idempotent::Yes).await
    }

    /// Removes `ids` from a user's index. Best effort: an entry left behind
    /// names a family that is gone, which reads prune.
    async fn unindex(&self, user_id: &str, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if index::remove(&self.backend, &self.index(user_id), ids)
            .await
            .is_err()
        {
            portcullis_core::event!(
                debug,
                reason = "unindex-failed",
                "dead entries left in a refresh user index; pruned later"
            );
        }
    }

    /// The family ids a user's index lists (unparsable ones separately).
    async fn indexed(&self, user_id: &str) -> Result<(Vec<FamilyId>, Vec<String>), StoreError> {
        let members = index::members(&self.backend, &self.index(user_id)).await?;
        let mut ids = Vec::new();
        let mut junk = Vec::new();
        for m in members {
            match FamilyId::parse(&m) {
                Some(id) => ids.push(id),
                None => junk.push(m),
            }
        }
        Ok((ids, junk))
    }

    /// `HGETALL` of a family key.
    async fn fields(&self, id: &FamilyId) -> Result<Fields, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.family_key(id));
        self.cmd(&cmd).await
    }

    /// Adds a freshly stored family to its user's index under the cap;
    /// ends the victims and returns those that were live.
    async fn index_new(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        let user_id = family.user_id.as_str();
        let now = family.created_at;
        let index = self.index(user_id);
        let entry = NewEntry {
            member: family.id.as_str(),
            created_at: family.created_at,
            absolute_deadline: family.deadlines.absolute,
            ttl_ms: ttl_ms(family.deadlines.absolute, now),
        };
        let cap = max_per_user.map(|max| Cap {
            max,
            refuse: false,
            replacing: None,
        });
        // At the cap: the oldest entries are read; those whose family is
        // gone leave the index, ended ones stop counting but stay listed
        // until their key goes (another instance's clock may still see
        // them live).
        let check = |members: Vec<String>| async move {
            let reads = join_all(members.into_iter().map(|m| async move {
                let Some(id) = FamilyId::parse(&m) else {
                    return Ok(Some(m));
                };
                let fields = match self.fields(&id).await {
                    Ok(f) => f,
                    Err(e) if e.is_unavailable() => return Err(e),
                    Err(_) => return Ok(Some(m)),
                };
                if fields.is_empty() || codec::is_tombstone(&fields) {
                    return Ok(Some(m));
                }
                Ok(match codec::decode(&id, &fields) {
                    Ok(f) if f.user_id != user_id => Some(m),
                    Ok(f) if f.is_expired(now) => Some(format!("~{m}")),
                    Ok(_) => None,
                    Err(_) => Some(m),
                })
            }))
            .await;
            reads
                .into_iter()
                .filter_map(Result::transpose)
                .collect::<Result<Vec<String>, StoreError>>()
        };
        let prune = Timestamp::from_millis(now.millis().saturating_sub(duration_ms(EXPIRY_GRACE)));
        let victims = match index::add(&self.backend, &index, now, prune, entry, cap, check).await?
        {
            Added::Yes { victims } => victims,
            Added::Refused => return Err(StoreError::backend(UnexpectedReply)),
        };
        // End the victims first, then drop them from the index: a failure
        // in between leaves them indexed, never live and unlisted.
        let ids: Vec<FamilyId> = victims.iter().filter_map(|v| FamilyId::parse(v)).collect();
        let ends = join_all(ids.iter().map(|id| self.revoke_one(id, Some(user_id)))).await;
        let mut evicted = Vec::new();
        for end in ends {
            evicted.extend(end?.filter(|f| !f.is_expired(now)));
        }
        self.unindex(user_id, &victims).await;
        Ok(evicted)
    }

    /// Runs [`REVOKE`]; the family deleted, if there was one (an unreadable
    /// record is deleted and reported as none).
    async fn revoke_one(
        &self,
        id: &FamilyId,
        only_user: Option<&str>,
    ) -> Result<Option<Family>, StoreError> {
        let mut inv = REVOKE.prepare_invoke();
        inv.key(self.family_key(id));
        match only_user {
            Some(user) => inv.arg(format!("={user}")),
            None => inv.arg(""),
        };
        // Resent after a broken connection: the resend finds nothing and
        // reports None (callers revoke the family's access tokens anyway).
        let reply: Value = self.backend.run(Op::Script(&inv), Idempotent::Yes).await?;
        match script_reply(reply)? {
            (1, Some(fields)) => Ok(codec::decode(id, &fields).ok()),
            (0, None) => Ok(None),
            _ => Err(StoreError::backend(UnexpectedReply)),
        }
    }
}

#[async_trait]
impl RefreshStore for RedisRefreshStore {
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        let nonce = crate::nonce::nonce();
        let fields = codec::encode(family, &nonce)?;
        let mut inv = CREATE.prepare_invoke();
        inv.key(self.family_key(&family.id))
            .arg(&nonce)
            .arg(ttl_ms(family.expires_at(), family.last_used_at));
        for (name, value) in &fields {
            inv.arg(*name).arg(value);
        }
        // Resent after a broken connection: the nonce tells the resend that
        // the record it finds is its own.
        let stored: i64 = self.backend.run(Op::Script(&inv), Idempotent::Yes).await?;
        if stored != 1 {
            return Err(StoreError::conflict());
        }
        // Then the index: a live family is always listed once its creation
        // has returned (log out everywhere finds it).
        match self.index_new(family, max_per_user).await {
            Ok(evicted) => Ok(evicted),
            Err(e) => {
                // The family's token was never handed out: take it back.
                let mut del = redis::cmd("DEL");
                del.arg(self.family_key(&family.id));
                let _ = self.cmd::<i64>(&del).await;
                self.unindex(&family.user_id, &[family.id.to_string()])
                    .await;
                Err(e)
            }
        }
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let device = if r.device.user_agent.is_some() || r.device.ip.is_some() {
            serde_json::to_string(&r.device).map_err(StoreError::corrupt)?
        } else {
            String::new()
        };
        let mut inv = ROTATE.prepare_invoke();
        inv.key(self.family_key(&r.family))
            .arg(r.now.millis())
            .arg(r.presented.to_hex())
            .arg(r.successor.to_hex())
            .arg(duration_ms(r.grace))
            .arg((r.now + r.idle).millis())
            .arg(u64::try_from(r.history_limit).unwrap_or(u64::MAX))
            .arg(device)
            .arg(duration_ms(EXPIRY_GRACE));
        // Resent after a broken connection (see the script: a resend gets
        // Repeat with the same successor, or Reused again).
        let reply: Value = self.backend.run(Op::Script(&inv), Idempotent::Yes).await?;
        let decode = |fields: Option<Fields>| -> Result<Family, StoreError> {
            let fields = fields.ok_or_else(|| StoreError::backend(UnexpectedReply))?;
            Ok(codec::decode(&r.family, &fields)?)
        };
        match script_reply(reply)? {
            (0, _) => Ok(RotateOutcome::Invalid),
            (1, fields) => {
                // The script wrote exactly this (the lockstep test checks
                // the stored record against the memory store's).
                let mut family = decode(fields)?;
                family.rotate(r.successor, r.now, r.idle, r.history_limit, &r.device);
                Ok(RotateOutcome::Rotated(family))
            }
            (2, fields) => Ok(RotateOutcome::Repeat(decode(fields)?)),
            (3, fields) => {
                let family = decode(fields)?;
                self.unindex(&family.user_id, &[family.id.to_string()])
                    .await;
                Ok(RotateOutcome::Reused(family))
            }
            (4, _) => Ok(RotateOutcome::KeyMismatch),
            (5, _) => Err(codec::Corrupt("family").into()),
            _ => Err(StoreError::backend(UnexpectedReply)),
        }
    }

    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        let fields = self.fields(id).await?;
        if fields.is_empty() || codec::is_tombstone(&fields) {
            return Ok(None);
        }
        let family = codec::decode(id, &fields)?;
        Ok((!family.is_expired(now)).then_some(family))
    }

    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        let family = self.revoke_one(id, None).await?;
        if let Some(f) = &family {
            self.unindex(&f.user_id, &[f.id.to_string()]).await;
        }
        Ok(family)
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        let (ids, mut done) = self.indexed(user_id).await?;
        let ids: Vec<FamilyId> = ids.into_iter().filter(|id| Some(id) != except).collect();
        // Concurrent: one round trip on a single server (pipelined).
        let results = join_all(ids.iter().map(|id| self.revoke_one(id, Some(user_id)))).await;
        let mut gone = Vec::new();
        let mut failed = None;
        for (id, result) in ids.iter().zip(results) {
            match result {
                Ok(family) => {
                    done.push(id.to_string());
                    gone.extend(family);
                }
                Err(e) => failed = Some(e),
            }
        }
        // Only the entries whose family is surely gone leave the index.
        self.unindex(user_id, &done).await;
        match failed {
            Some(e) => Err(e),
            None => Ok(gone),
        }
    }

    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        let (ids, mut dead) = self.indexed(user_id).await?;
        let reads = join_all(ids.iter().map(|id| self.fields(id))).await;
        let mut live = Vec::new();
        for (id, fields) in ids.iter().zip(reads) {
            let fields = match fields {
                Ok(f) => f,
                Err(e) if e.is_unavailable() => return Err(e),
                // Not a hash: not a family of ours.
                Err(_) => {
                    dead.push(id.to_string());
                    continue;
                }
            };
            if fields.is_empty() || codec::is_tombstone(&fields) {
                dead.push(id.to_string());
                continue;
            }
            match codec::decode(id, &fields) {
                Ok(f) if f.user_id != user_id => dead.push(id.to_string()),
                // An ended family stays indexed until its key goes: another
                // instance's clock may still see it live.
                Ok(f) if f.is_expired(now) => {}
                Ok(f) => live.push(f),
                Err(_) => dead.push(id.to_string()),
            }
        }
        self.unindex(user_id, &dead).await;
        Ok(live)
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let pattern = format!("{}{{*}}", glob_escape(&self.families));
        let keys: Vec<(String, FamilyId)> = self
            .backend
            .scan_match(&pattern)
            .await?
            .into_iter()
            .filter_map(|k| self.id_of_key(&k).map(|id| (k, id)))
            .collect();
        let mut purged = 0;
        for batch in keys.chunks(PURGE_BATCH) {
            let runs = batch.iter().map(|(key, id)| async move {
                let mut inv = PURGE.prepare_invoke();
                inv.key(key).arg(now.millis());
                let reply: Value = self.backend.run(Op::Script(&inv), Idempotent::Yes).await?;
                match reply {
                    Value::Array(items) => match items.as_slice() {
                        [Value::Int(1), Value::BulkString(user)] => {
                            let user = String::from_utf8_lossy(user).into_owned();
                            self.unindex(&user, &[id.to_string()]).await;
                            Ok(1)
                        }
                        [Value::Int(0)] => Ok(0),
                        _ => Err(StoreError::backend(UnexpectedReply)),
                    },
                    _ => Err(StoreError::backend(UnexpectedReply)),
                }
            });
            for result in join_all(runs).await {
                purged += result?;
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let backend = crate::RedisConfig::new("redis://localhost/")
            .key_prefix("app")
            .build()
            .unwrap();
        let store = RedisRefreshStore::new(backend);
        let id = FamilyId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(store.family_key(&id), "app:rf:{AAAAAAAAAAAAAAAAAAAAAA}");
        let hex = portcullis_core::TokenDigest::of(b"alice").to_hex();
        assert_eq!(store.user_index_key("alice"), format!("app:rua:{{{hex}}}"));
        assert_eq!(
            store.user_created_key("alice"),
            format!("app:ruc:{{{hex}}}")
        );
        assert_eq!(store.id_of_key(&store.family_key(&id)), Some(id));
        assert_eq!(store.id_of_key("app:rf:{short}"), None);
        assert_eq!(store.id_of_key("other:rf:{AAAAAAAAAAAAAAAAAAAAAA}"), None);
    }

    #[test]
    fn ttls_are_bounded() {
        let now = Timestamp::from_secs(100);
        assert_eq!(ttl_ms(now, now), 60_000);
        assert_eq!(ttl_ms(Timestamp::from_secs(101), now), 61_000);
        assert_eq!(ttl_ms(Timestamp::from_millis(u64::MAX), now), MAX_TTL_MS);
    }

    #[test]
    fn replies_parse() {
        assert!(matches!(
            script_reply(Value::Array(vec![Value::Int(0)])),
            Ok((0, None))
        ));
        let (code, fields) = script_reply(Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![
                Value::BulkString(b"u".to_vec()),
                Value::BulkString(b"alice".to_vec()),
            ]),
        ]))
        .unwrap();
        assert_eq!(code, 1);
        assert_eq!(fields.unwrap()["u"], "alice");
        assert!(script_reply(Value::Int(1)).is_err());
        assert!(script_reply(Value::Array(vec![])).is_err());
    }
}
