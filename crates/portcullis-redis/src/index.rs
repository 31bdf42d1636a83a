//! A user's index (their sessions, or their refresh families): two sorted
//! sets under one hash tag, so that every script touching both runs on one
//! Cluster node.
//!
//! - `<...>:{<hex>}` by absolute deadline: member = the entry (a session's
//!   digest in hex, a family id), score = its absolute deadline (ms);
//! - its twin by creation: the same members, score = created at (ms). Equal
//!   scores order by member, so the set's order is "created at, then
//!   member": the eviction order.
//!
//! Every call costs `O(log n)` per entry it touches and touches a bounded
//! number of entries, however many the index holds: a login does not read
//! the user's whole index (only listing and logging out everywhere do,
//! which is what they are for).

use std::future::Future;
use std::sync::LazyLock;

use deadpool_redis::redis::{self, Script, Value};
use portcullis_core::{StoreError, Timestamp};

use crate::backend::{Idempotent, Op, RedisBackend};

/// Members per `ZREM` call when unindexing many entries (Lua's `unpack`
/// has a limit, and one call should stay short).
const UNINDEX_BATCH: usize = 1000;

/// Adds an entry (a session, a refresh family) to its user's index,
/// enforcing a per-user cap atomically.
///
/// `KEYS[1]` the set by absolute deadline, `KEYS[2]` the set by creation.
/// `ARGV[1]` now, `ARGV[2]` the new entry, `ARGV[3]` its created at,
/// `ARGV[4]` its absolute deadline, `ARGV[5]` the sets' native TTL (ms; it
/// only grows, so the index outlives every entry it lists), `ARGV[6]` the
/// cap (0: none), `ARGV[7]` `r` to refuse or `e` to evict at the cap,
/// `ARGV[8]` the entry being replaced (not counted) or empty, `ARGV[9]`
/// `1` when the caller has checked the entries a first call asked about
/// (else `0`), `ARGV[10]` the pruning bound (the caller's now minus a
/// grace), `ARGV[11..]` entries the
/// caller found dead (removed first), or, prefixed with `~`, found ended
/// but to be kept listed (they do not count and are not evicted).
///
/// Bounded work per call: at most `PRUNE` entries whose absolute deadline
/// is at or before the pruning bound are removed, the bound taken by the
/// earlier of the caller's clock and the server's `TIME` (the same grace
/// before either): the index is shared by every instance, so one whose
/// clock runs ahead never unindexes a live entry; at most `WINDOW` entries
/// are read; at most `EVICT` victims are named. Entries before their
/// absolute deadline count as live (`ZCOUNT`): one whose record ended
/// early (idle timeout, deleted) counts until a caller finds it dead. So,
/// at the cap:
///
/// - unchecked (`ARGV[9]` = `0`): returns `{2, entries...}`, the oldest
///   entries (at most the cap + `SLACK`, and `WINDOW`) for the caller to
///   check, and writes nothing;
/// - checked: returns `{0}` (refused, nothing written), or adds the entry
///   and returns `{1, victims...}`: the oldest live entries (by created
///   at, then member) to end so that the new one fits.
///
/// Below the cap it adds the entry and returns `{1}`. Victims stay in the
/// index until the caller has deleted their records, so that a failure
/// never leaves a live record out of its user's index. Safe to run twice:
/// the entry itself never counts against the cap.
static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ka, kc = KEYS[1], KEYS[2]
local PRUNE, SLACK, WINDOW, EVICT = 100, 64, 1000, 64
local now = tonumber(ARGV[1])
local me, replacing = ARGV[2], ARGV[8]
local ended = {}
for j = 11, #ARGV do
  local m = ARGV[j]
  if string.sub(m, 1, 1) == '~' then
    ended[string.sub(m, 2)] = true
  else
    redis.call('ZREM', ka, m)
    redis.call('ZREM', kc, m)
  end
end
local prune = tonumber(ARGV[10])
local t = redis.call('TIME')
local server = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - (now - prune)
if server < prune then
  prune = server
end
local old = redis.call('ZRANGEBYSCORE', ka, '-inf', string.format('%d', prune), 'LIMIT', 0, PRUNE)
if #old > 0 then
  redis.call('ZREM', ka, unpack(old))
  redis.call('ZREM', kc, unpack(old))
end
local function live_entry(m)
  local a = tonumber(redis.call('ZSCORE', ka, m))
  return a ~= nil and a > now
end
local max = tonumber(ARGV[6])
local result = {1}
if max > 0 then
  local live = redis.call('ZCOUNT', ka, '(' .. ARGV[1], '+inf')
  if live_entry(me) then
    live = live - 1
  end
  if replacing ~= '' and replacing ~= me and live_entry(replacing) then
    live = live - 1
  end
  for m in pairs(ended) do
    if m ~= me and m ~= replacing and live_entry(m) then
      live = live - 1
    end
  end
  if live >= max then
    if ARGV[9] ~= '1' then
      local window = math.min(live + 2, max + SLACK, WINDOW)
      local out = {2}
      for _, m in ipairs(redis.call('ZRANGE', kc, 0, window - 1)) do
        if m ~= me and m ~= replacing then
          out[#out + 1] = m
        end
      end
      return out
    end
    if ARGV[7] == 'r' then
      return {0}
    end
    local want = math.min(live + 1 - max, EVICT)
    local seen = 0
    while #result - 1 < want and seen < WINDOW do
      local batch = redis.call('ZRANGE', kc, seen, seen + want + 1)
      if #batch == 0 then
        break
      end
      seen = seen + #batch
      for _, m in ipairs(batch) do
        if #result - 1 < want and m ~= me and m ~= replacing and not ended[m] and live_entry(m) then
          result[#result + 1] = m
        end
      end
    end
  end
end
redis.call('ZADD', ka, ARGV[4], me)
redis.call('ZADD', kc, ARGV[3], me)
local ttl = tonumber(ARGV[5])
for _, k in ipairs({ka, kc}) do
  if redis.call('PTTL', k) < ttl then
    redis.call('PEXPIRE', k, ttl)
  end
end
return result
",
    )
});

/// Removes entries from a user's index (both sets). `KEYS[1]`, `KEYS[2]`
/// the sets; `ARGV` the members. Returns how many left the first set.
/// Safe to run twice.
static UNINDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('ZREM', KEYS[2], unpack(ARGV))
return n
",
    )
});

/// Where a store keeps its users' indexes: the two key prefixes (one per
/// ordering), each followed by the user's hash tag.
#[derive(Debug, Clone)]
pub(crate) struct UserIndexes {
    by_deadline: String,
    by_created: String,
}

impl UserIndexes {
    /// `<prefix>:<deadline_tag>:` and `<prefix>:<created_tag>:`.
    pub(crate) fn new(prefix: &str, deadline_tag: &str, created_tag: &str) -> Self {
        Self {
            by_deadline: format!("{prefix}:{deadline_tag}:"),
            by_created: format!("{prefix}:{created_tag}:"),
        }
    }

    /// The index of `user_id`, keyed by the hex SHA-256 of the id (a user
    /// id never appears in a key).
    pub(crate) fn of(&self, user_id: &str) -> UserIndex {
        UserIndex::new(
            &self.by_deadline,
            &self.by_created,
            &portcullis_core::TokenDigest::of(user_id.as_bytes()).to_hex(),
        )
    }
}

/// The two keys of one user's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserIndex {
    /// Scored by absolute deadline.
    pub(crate) by_deadline: String,
    /// Scored by creation.
    pub(crate) by_created: String,
}

impl UserIndex {
    /// `<deadline_prefix>{<hex>}` and `<created_prefix>{<hex>}`: one hash
    /// tag, one Cluster slot.
    pub(crate) fn new(deadline_prefix: &str, created_prefix: &str, user_hex: &str) -> Self {
        Self {
            by_deadline: format!("{deadline_prefix}{{{user_hex}}}"),
            by_created: format!("{created_prefix}{{{user_hex}}}"),
        }
    }
}

/// The entry [`add`] indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewEntry<'a> {
    pub(crate) member: &'a str,
    pub(crate) created_at: Timestamp,
    pub(crate) absolute_deadline: Timestamp,
    /// The index' native TTL (ms).
    pub(crate) ttl_ms: u64,
}

/// The per-user cap [`add`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cap<'a> {
    /// At most this many live entries, the new one included (at least 1).
    pub(crate) max: usize,
    /// Refuse the new entry at the cap (else evict the oldest).
    pub(crate) refuse: bool,
    /// An entry that does not count (the session being replaced).
    pub(crate) replacing: Option<&'a str>,
}

/// What [`add`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// Indexed; the caller ends these entries' records, then unindexes
    /// them.
    Yes { victims: Vec<String> },
    /// At the cap with the refuse policy: nothing written.
    Refused,
}

/// Redis answered an index script with something it never returns.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from a Redis index script")]
struct UnexpectedReply;

/// Adds `entry` to `index` under `cap`. At the cap, `check` is given the
/// oldest entries and returns those whose records are dead (gone, ended,
/// another user's, unreadable): they leave the index and stop counting
/// (a member prefixed with `~` only stops counting and stays listed),
/// then the script runs again and decides. Entries at or before `prune`
/// (absolute deadline; `now` minus a grace), and at or before the server's
/// `TIME` minus the same grace, are pruned, a bounded batch per call.
pub(crate) async fn add<F, Fut>(
    backend: &RedisBackend,
    index: &UserIndex,
    now: Timestamp,
    prune: Timestamp,
    entry: NewEntry<'_>,
    cap: Option<Cap<'_>>,
    check: F,
) -> Result<Added, StoreError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<String>, StoreError>>,
{
    let run = |checked: bool, dead: &[String]| {
        let mut inv = INDEX_ADD.prepare_invoke();
        inv.key(&index.by_deadline)
            .key(&index.by_created)
            .arg(now.millis())
            .arg(entry.member)
            .arg(entry.created_at.millis())
            .arg(entry.absolute_deadline.millis())
            .arg(entry.ttl_ms);
        match cap {
            Some(cap) => inv
                .arg(cap.max.max(1))
                .arg(if cap.refuse { "r" } else { "e" })
                .arg(cap.replacing.unwrap_or_default()),
            None => inv.arg(0).arg("e").arg(""),
        };
        inv.arg(if checked { "1" } else { "0" }).arg(prune.millis());
        for m in dead {
            inv.arg(m);
        }
        async move {
            // Resent after a broken connection: the entry never counts
            // against its own cap, and adding it twice keeps one.
            let reply: Value = backend.run(Op::Script(&inv), Idempotent::Yes).await?;
            parse(reply)
        }
    };
    match run(false, &[]).await? {
        Reply::Done(added) => Ok(added),
        Reply::Check(candidates) => {
            let dead = check(candidates).await?;
            match run(true, &dead).await? {
                Reply::Done(added) => Ok(added),
                Reply::Check(_) => Err(StoreError::backend(UnexpectedReply)),
            }
        }
    }
}

enum Reply {
    Done(Added),
    Check(Vec<String>),
}

fn parse(reply: Value) -> Result<Reply, StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::backend(UnexpectedReply));
    };
    let mut items = items.into_iter();
    let Some(Value::Int(code)) = items.next() else {
        return Err(StoreError::backend(UnexpectedReply));
    };
    let members = items
        .map(|v| match v {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| StoreError::backend(UnexpectedReply))?;
    match code {
        0 if members.is_empty() => Ok(Reply::Done(Added::Refused)),
        1 => Ok(Reply::Done(Added::Yes { victims: members })),
        2 => Ok(Reply::Check(members)),
        _ => Err(StoreError::backend(UnexpectedReply)),
    }
}

/// Removes `members` from `index`, a bounded batch per call.
pub(crate) async fn remove(
    backend: &RedisBackend,
    index: &UserIndex,
    members: &[String],
) -> Result<(), StoreError> {
    for batch in members.chunks(UNINDEX_BATCH) {
        let mut inv = UNINDEX.prepare_invoke();
        inv.key(&index.by_deadline).key(&index.by_created);
        for m in batch {
            inv.arg(m);
        }
        let _: i64 = backend.run(Op::Script(&inv), Idempotent::Yes).await?;
    }
    Ok(())
}

/// Every member of `index`, oldest first (listing and logging out
/// everywhere read the whole index: that is what they are for).
pub(crate) async fn members(
    backend: &RedisBackend,
    index: &UserIndex,
) -> Result<Vec<String>, StoreError> {
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(&index.by_created).arg(0).arg(-1);
    backend.run(Op::Cmd(&cmd), Idempotent::Yes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(matches!(
            parse(Value::Array(vec![Value::Int(0)])),
            Ok(Reply::Done(Added::Refused))
        ));
        assert!(matches!(
            parse(Value::Array(vec![Value::Int(1), bulk("a")])),
            Ok(Reply::Done(Added::Yes { victims })) if victims == ["a"]
        ));
        assert!(matches!(
            parse(Value::Array(vec![Value::Int(2), bulk("a"), bulk("b")])),
            Ok(Reply::Check(c)) if c == ["a", "b"]
        ));
        for bad in [
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![Value::Int(0), bulk("a")]),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
        ] {
            assert!(parse(bad).is_err());
        }
    }

    #[test]
    fn one_hash_tag() {
        let i = UserIndex::new("app:ua:", "app:uc:", "ab");
        assert_eq!(i.by_deadline, "app:ua:{ab}");
        assert_eq!(i.by_created, "app:uc:{ab}");
    }
}
