//! The Lua scripts of the refresh store (the user index has its own, in
//! `crate::index`). Each touches exactly one key, a family, so each runs
//! on one Cluster node, and judges expiry by the `now` the caller passes,
//! never by Redis' clock.
//!
//! Timestamps are milliseconds since the Unix epoch, kept as strings; Lua
//! numbers (doubles) hold them exactly for comparisons. Values written back
//! are the caller's strings or stored ones, never reformatted numbers
//! (`string.format('%d')` for the computed TTLs).
//!
//! Every script may run twice (the store resends a call once when the
//! connection broke before the reply) with the effect of running once:
//! see each script for the answer a resend gets.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// Creates a family if its key is free.
///
/// `KEYS[1]` the family key. `ARGV[1]` this call's nonce, `ARGV[2]` the
/// native TTL (ms), `ARGV[3..]` field, value pairs (the `n` field holds
/// the nonce). Returns 1 when stored, or already stored by this very call
/// (a resend after a lost reply), 0 when the key is taken.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then
  if redis.call('TYPE', k).ok == 'hash' and redis.call('HGET', k, 'n') == ARGV[1] then
    return 1
  end
  return 0
end
redis.call('HSET', k, unpack(ARGV, 3))
redis.call('PEXPIRE', k, ARGV[2])
return 1
",
    )
});

/// Rotation: `Family::classify` then `Family::rotate`, atomically.
///
/// `KEYS[1]` the family key. `ARGV[1]` now, `ARGV[2]` the presented
/// digest, `ARGV[3]` the successor's digest, `ARGV[4]` the grace window
/// (ms), `ARGV[5]` now + the idle timeout, `ARGV[6]` how many old digests
/// to keep, `ARGV[7]` the device (JSON), or empty to keep the stored one,
/// `ARGV[8]` how long (ms) the key outlives the family's end.
///
/// Returns `{code, fields}`:
///
/// - `{0}` Invalid: no family, a tombstone, an expired family (deleted
///   here), or a digest the family never issued;
/// - `{1, fields}` Rotated: the presented digest was current; the fields
///   before the rotation (the caller applies `Family::rotate` to them,
///   which is what the script wrote: one read of the record, not two);
/// - `{2, fields}` Repeat: the previous digest inside the grace window
///   (now - rotated at <= grace) and the current one is the successor;
///   nothing written;
/// - `{3, fields}` Reused: the previous digest after the window, or an
///   older one; the family is deleted (a tombstone remains, see below);
///   its fields before the deletion;
/// - `{4}` KeyMismatch: the previous digest inside the window, another
///   successor; nothing written;
/// - `{5}` the record is unreadable; nothing written.
///
/// Resending: a resent rotation finds the presented digest as the previous
/// one, rotated at the same `now`: Repeat with the same successor. A
/// deletion for reuse leaves the key as a tombstone (field `x` =
/// `<presented>:<now>`, every other reader treats it as absent) for
/// `ARGV[8]` ms, so that a resend of that very call answers Reused again,
/// and the caller still revokes the family's access tokens.
pub(super) static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local h = redis.call('HGETALL', k)
if #h == 0 then
  return {0}
end
local f = {}
for j = 1, #h, 2 do
  f[h[j]] = h[j + 1]
end
local now, me = tonumber(ARGV[1]), ARGV[2]
if f.x then
  if f.x == me .. ':' .. ARGV[1] then
    return {3, h}
  end
  return {0}
end
local i, a = tonumber(f.i), tonumber(f.a)
if not i or not a or type(f.cur) ~= 'string' then
  return {5}
end
if now >= math.min(i, a) then
  redis.call('DEL', k)
  return {0}
end
if f.cur == me then
  local hist = f.h or ''
  if f.p then
    hist = hist .. f.p
  end
  local keep = tonumber(ARGV[6]) * 64
  if #hist > keep then
    hist = string.sub(hist, #hist - keep + 1)
  end
  local idle, idle_s = tonumber(ARGV[5]), ARGV[5]
  if idle > a then
    idle, idle_s = a, f.a
  end
  redis.call('HSET', k, 'p', f.cur, 'pa', ARGV[1], 'cur', ARGV[3], 'l', ARGV[1], 'i', idle_s, 'h', hist)
  redis.call('HINCRBY', k, 'r', 1)
  if ARGV[7] ~= '' then
    redis.call('HSET', k, 'd', ARGV[7])
  end
  local ttl = math.min(math.min(idle, a) - now + tonumber(ARGV[8]), 1099511627776)
  redis.call('PEXPIRE', k, string.format('%d', ttl))
  return {1, h}
end
local reused = false
if f.p == me then
  local pa = tonumber(f.pa)
  if not pa then
    return {5}
  end
  if now - pa <= tonumber(ARGV[4]) then
    if f.cur == ARGV[3] then
      return {2, h}
    end
    return {4}
  end
  reused = true
elseif f.h then
  for j = 1, #f.h, 64 do
    if string.sub(f.h, j, j + 63) == me then
      reused = true
      break
    end
  end
end
if reused then
  redis.call('HSET', k, 'x', me .. ':' .. ARGV[1])
  redis.call('PEXPIRE', k, ARGV[8])
  return {3, h}
end
return {0}
",
    )
});

/// Deletes a family and returns it.
///
/// `KEYS[1]` the family key. `ARGV[1]` empty, or `=` followed by a user
/// id to delete the family only when it is that user's. Returns `{1,
/// fields}` for a family deleted, `{0}` when there was none (or a
/// tombstone, deleted too). A resend after a lost reply finds nothing:
/// `{0}`.
pub(super) static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('TYPE', k).ok ~= 'hash' then
  return {0}
end
local h = redis.call('HGETALL', k)
local f = {}
for j = 1, #h, 2 do
  f[h[j]] = h[j + 1]
end
if ARGV[1] ~= '' and f.u ~= string.sub(ARGV[1], 2) then
  return {0}
end
redis.call('DEL', k)
if f.x then
  return {0}
end
return {1, h}
",
    )
});

/// Deletes a family that has ended at `now`.
///
/// `KEYS[1]` the family key. `ARGV[1]` now. Returns `{1, user}` when an
/// ended family was deleted, `{0}` otherwise (a tombstone is deleted
/// without counting; an unreadable record is left alone).
pub(super) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('TYPE', k).ok ~= 'hash' then
  return {0}
end
local v = redis.call('HMGET', k, 'i', 'a', 'x', 'u')
if v[3] then
  redis.call('DEL', k)
  return {0}
end
local i, a = tonumber(v[1]), tonumber(v[2])
if not i or not a then
  return {0}
end
if tonumber(ARGV[1]) >= math.min(i, a) then
  redis.call('DEL', k)
  return {1, v[4] or ''}
end
return {0}
",
    )
});
