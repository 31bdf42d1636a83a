//! The Lua scripts of the session store. Each touches exactly one key (so
//! each runs on one Cluster node) and judges expiry by the `now` it is
//! given: the store's clock, never Redis' own.
//!
//! Every script but [`DELETE`] may run twice (the store resends it once
//! when the connection broke before the reply) with the effect and answer
//! of running once.
//!
//! Timestamps are milliseconds since the Unix epoch; Lua numbers (doubles)
//! hold them exactly. Values written back are the caller's strings, never
//! reformatted numbers.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// Create if absent.
///
/// `KEYS[1]` the session hash. `ARGV[1]` now, `ARGV[2]` native TTL (ms),
/// `ARGV[3]` this call's nonce (stored as field `n`), `ARGV[4..]` field,
/// value pairs. Returns 1 when stored (or already stored by this very call:
/// a retry after a lost reply is harmless), 0 when a live (or unreadable)
/// record holds the key. An expired record is replaced.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then
  local d = redis.call('HMGET', k, 'i', 'a', 'n')
  if d[3] == ARGV[3] then
    return 1
  end
  local i, a = tonumber(d[1]), tonumber(d[2])
  if not i or not a or tonumber(ARGV[1]) < math.min(i, a) then
    return 0
  end
  redis.call('DEL', k)
end
redis.call('HSET', k, 'n', ARGV[3])
for j = 4, #ARGV, 2 do
  redis.call('HSET', k, ARGV[j], ARGV[j + 1])
end
redis.call('PEXPIRE', k, ARGV[2])
return 1
",
    )
});

/// Update only: key-level data changes and the idle extension, on a live
/// record; `touch` is this script with no data change.
///
/// `KEYS[1]` the session hash. `ARGV[1]` now, `ARGV[2]` last seen,
/// `ARGV[3]` wanted idle deadline, `ARGV[4]` grace added to the native TTL
/// (ms), `ARGV[5]` n, the number of fields to delete, `ARGV[6..6+n]` those
/// fields, then field, value pairs to set. Returns 1 when applied, 0 (and
/// writes nothing) when the record is absent, expired or unreadable.
pub(super) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local now = tonumber(ARGV[1])
local d = redis.call('HMGET', k, 'l', 'i', 'a')
local l, i, a = tonumber(d[1]), tonumber(d[2]), tonumber(d[3])
if not l or not i or not a or now >= math.min(i, a) then
  return 0
end
local n = tonumber(ARGV[5])
for j = 6, 5 + n do
  redis.call('HDEL', k, ARGV[j])
end
for j = 6 + n, #ARGV, 2 do
  redis.call('HSET', k, ARGV[j], ARGV[j + 1])
end
if tonumber(ARGV[2]) > l then
  redis.call('HSET', k, 'l', ARGV[2])
end
local want, wanted = tonumber(ARGV[3]), ARGV[3]
if want > a then
  want, wanted = a, d[3]
end
if want > i then
  i = want
  redis.call('HSET', k, 'i', wanted)
end
redis.call('PEXPIRE', k, math.min(math.min(i, a) - now + tonumber(ARGV[4]), 1099511627776))
return 1
",
    )
});

/// Delete, saying whether the record was live and whose it was.
///
/// `KEYS[1]` the session hash. `ARGV[1]` now, `ARGV[2]` empty to delete
/// whatever the record, or `=` followed by a user id to delete it only when
/// it belongs to that user. Returns `{live, has_user, user}`; an unreadable
/// record counts as live.
pub(super) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then
  return {0, 0, ''}
end
local d = redis.call('HMGET', k, 'u', 'i', 'a')
if ARGV[2] ~= '' and d[1] ~= string.sub(ARGV[2], 2) then
  return {0, 0, ''}
end
redis.call('DEL', k)
local i, a = tonumber(d[2]), tonumber(d[3])
local live = 1
if i and a and tonumber(ARGV[1]) >= math.min(i, a) then
  live = 0
end
if d[1] then
  return {live, 1, d[1]}
end
return {live, 0, ''}
",
    )
});

/// Adds a session to its user's index, enforcing the cap atomically.
///
/// `KEYS[1]` the user's index hash (field: session digest in hex, value:
/// `created_at:absolute_deadline`). `ARGV[1]` now, `ARGV[2]` the new
/// session's hex, `ARGV[3]` its created at, `ARGV[4]` its absolute
/// deadline, `ARGV[5]` the index' native TTL (ms), `ARGV[6]` the cap (0:
/// none), `ARGV[7]` `r` to refuse or `e` to evict at the cap, `ARGV[8]` the
/// hex of the session being replaced (not counted) or empty, `ARGV[9..]`
/// sessions the caller found dead (removed first).
///
/// Entries past their absolute deadline are removed. Every other entry
/// counts as live. Returns `{0}` when refused (nothing written), else `{1,
/// victims...}`: the oldest entries (by created at, then hex, the order of
/// `eviction_victims`) to end so that the new session fits. Victims stay in
/// the index until the caller has deleted their records, so that a
/// failure never leaves a live session out of its user's index.
pub(super) static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local now = tonumber(ARGV[1])
local me, replacing = ARGV[2], ARGV[8]
for j = 9, #ARGV do
  redis.call('HDEL', k, ARGV[j])
end
local entries = redis.call('HGETALL', k)
local live = {}
for j = 1, #entries, 2 do
  local m = entries[j]
  local c, a = string.match(entries[j + 1], '^(%d+):(%d+)$')
  if not c or now >= tonumber(a) then
    redis.call('HDEL', k, m)
  elseif m ~= me and m ~= replacing then
    live[#live + 1] = {tonumber(c), m}
  end
end
local max = tonumber(ARGV[6])
local result = {1}
if max > 0 and #live >= max then
  if ARGV[7] == 'r' then
    return {0}
  end
  table.sort(live, function(x, y)
    if x[1] ~= y[1] then
      return x[1] < y[1]
    end
    return x[2] < y[2]
  end)
  for j = 1, #live + 1 - max do
    result[#result + 1] = live[j][2]
  end
end
redis.call('HSET', k, me, ARGV[3] .. ':' .. ARGV[4])
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', k) < ttl then
  redis.call('PEXPIRE', k, ttl)
end
return result
",
    )
});
