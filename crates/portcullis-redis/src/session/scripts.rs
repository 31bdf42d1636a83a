//! The Lua scripts of the session store. Each touches exactly one key (so
//! each runs on one Cluster node) and judges expiry by the `now` it is
//! given: the store's clock, never Redis' own.
//!
//! Every script but [`DELETE`] may run twice (the store resends it once
//! when the connection broke before the reply) with the effect and answer
//! of running once.
//!
//! A key that holds something unreadable (not JSON, another type) is
//! never written by `create` or `update`, and only deleted by `delete`.
//!
//! Timestamps are milliseconds since the Unix epoch, kept as strings; Lua
//! numbers (doubles) hold them exactly for comparisons. Values written back
//! are the caller's strings, never reformatted numbers.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// Create if absent.
///
/// `KEYS[1]` the session key. `ARGV[1]` now, `ARGV[2]` native TTL (ms),
/// `ARGV[3]` this call's nonce, `ARGV[4]` the record (JSON, carrying the
/// nonce as `n`). Returns 1 when stored (or already stored by this very
/// call: a resend after a lost reply is harmless), 0 when a live (or
/// unreadable) record holds the key. An expired record is replaced.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local cur = redis.pcall('GET', k)
if type(cur) == 'table' then
  return 0
end
if cur then
  local ok, r = pcall(cjson.decode, cur)
  if not ok or type(r) ~= 'table' then
    return 0
  end
  if r.n == ARGV[3] then
    return 1
  end
  local i, a = tonumber(r.i), tonumber(r.a)
  if not i or not a or tonumber(ARGV[1]) < math.min(i, a) then
    return 0
  end
end
redis.call('SET', k, ARGV[4], 'PX', ARGV[2])
return 1
",
    )
});

/// Update only: key-level data changes and the idle extension, on a live
/// record; `touch` is this script with no data change.
///
/// `KEYS[1]` the session key. `ARGV[1]` now, `ARGV[2]` last seen,
/// `ARGV[3]` wanted idle deadline, `ARGV[4]` grace added to the native TTL
/// (ms), `ARGV[5]` n, the number of data keys to remove, `ARGV[6..6+n]`
/// those keys, then key, value (JSON) pairs to set. Only the named keys
/// change: concurrent updates of different keys all survive. Returns 1
/// when applied, 0 (and writes nothing) when the record is absent,
/// expired or unreadable: a deleted session is never written again.
pub(super) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local cur = redis.pcall('GET', k)
if not cur or type(cur) == 'table' then
  return 0
end
local ok, r = pcall(cjson.decode, cur)
if not ok or type(r) ~= 'table' then
  return 0
end
local now = tonumber(ARGV[1])
local l, i, a = tonumber(r.l), tonumber(r.i), tonumber(r.a)
if not l or not i or not a or now >= math.min(i, a) then
  return 0
end
if type(r.d) ~= 'table' then
  r.d = {}
end
local n = tonumber(ARGV[5])
for j = 6, 5 + n do
  r.d[ARGV[j]] = nil
end
for j = 6 + n, #ARGV, 2 do
  r.d[ARGV[j]] = ARGV[j + 1]
end
if tonumber(ARGV[2]) > l then
  r.l = ARGV[2]
end
local want, wanted = tonumber(ARGV[3]), ARGV[3]
if want > a then
  want, wanted = a, r.a
end
if want > i then
  i = want
  r.i = wanted
end
local ttl = math.min(math.min(i, a) - now + tonumber(ARGV[4]), 1099511627776)
redis.call('SET', k, cjson.encode(r), 'PX', ttl)
return 1
",
    )
});

/// Delete, saying whether the record was live and whose it was.
///
/// `KEYS[1]` the session key. `ARGV[1]` now, `ARGV[2]` empty to delete
/// whatever the record, or `=` followed by a user id to delete it only when
/// it belongs to that user. Returns `{live, has_user, user}`; an unreadable
/// record counts as live (and is deleted only when no user is required).
pub(super) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then
  return {0, 0, ''}
end
local cur = redis.pcall('GET', k)
local ok, r = false, nil
if type(cur) == 'string' then
  ok, r = pcall(cjson.decode, cur)
end
if not ok or type(r) ~= 'table' then
  r = {}
end
local u = r.u
if type(u) ~= 'string' then
  u = nil
end
if ARGV[2] ~= '' and u ~= string.sub(ARGV[2], 2) then
  return {0, 0, ''}
end
redis.call('DEL', k)
local i, a = tonumber(r.i), tonumber(r.a)
local live = 1
if i and a and tonumber(ARGV[1]) >= math.min(i, a) then
  live = 0
end
if u then
  return {live, 1, u}
end
return {live, 0, ''}
",
    )
});
