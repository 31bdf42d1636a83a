//! The Lua scripts of the revocation store. Each touches one key (so each
//! runs on one Cluster node), writes, and only then publishes the change:
//! a subscriber that misses the message finds the change in the snapshot
//! it loads when it reconnects.
//!
//! Times are in seconds: the store's clock, passed as `now`, and the
//! server's `TIME`, of which pruning takes the earlier.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// Denies a token id or a session id until it expires, and keeps the entry
/// `portcullis_jwt::MAX_LEEWAY` longer (a layer accepts a token up to its
/// leeway past `exp`).
///
/// `KEYS[1]` the sorted set of the kind (member: the id, score: expiry in
/// seconds). `ARGV[1]` the caller's now, `ARGV[2]` the entry's expiry,
/// `ARGV[3]` the id, `ARGV[4]` the channel, `ARGV[5]` the message,
/// `ARGV[6]` seconds the set outlives its latest entry's expiry (the
/// leeway plus the skew margin), `ARGV[7]` the leeway plus the skew margin
/// (seconds): how long past its expiry an entry is kept.
///
/// Pruning is memory management and never trusts one clock: the set is
/// shared by every instance, so an entry is forgotten only when both the
/// caller's clock and the server's `TIME` put it more than the leeway and
/// the skew margin past its expiry (`ZREMRANGEBYSCORE`, exclusive:
/// `O(log n)` plus the entries removed). An entry already that far past
/// its expiry by both clocks is not stored (returns 0, publishes nothing).
/// A second revocation of the same id keeps the later expiry. The set's
/// native TTL follows its latest entry, counted from the earlier of the
/// two clocks. Returns 1 when stored and published. Safe to run twice.
pub(super) static REVOKE_ENTRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local now, exp, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local server = tonumber(redis.call('TIME')[1])
if server < now then
  now = server
end
redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. string.format('%d', now - keep))
if exp + keep < now then
  return 0
end
redis.call('ZADD', k, 'GT', ARGV[2], ARGV[3])
local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
local ttl = math.min(math.max(tonumber(last[2]) - now, 0) + tonumber(ARGV[6]), 1000000000)
redis.call('EXPIRE', k, string.format('%d', ttl))
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
",
    )
});

/// Bumps a user's token version.
///
/// `KEYS[1]` the hash of versions (field: the user, value: the version).
/// `ARGV[1]` the user, `ARGV[2]` the version this instance's view holds
/// (the new version is above it even if Redis lost its data), `ARGV[3]`
/// the channel. Versions never decrease and never expire. Returns the new
/// version. Not safe to run twice (it would bump twice).
pub(super) static REVOKE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
local v = tonumber(redis.call('HGET', k, ARGV[1]) or '0') or 0
local floor = tonumber(ARGV[2]) or 0
if floor > v then
  v = floor
end
local s = string.format('%d', v + 1)
redis.call('HSET', k, ARGV[1], s)
redis.call('PUBLISH', ARGV[3], 'u ' .. s .. ' ' .. ARGV[1])
return s
",
    )
});
