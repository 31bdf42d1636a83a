//! `RedisThrottleStore`: the login throttle's failure counters shared by
//! every instance.
//!
//! ```no_run
//! use portcullis_redis::{RedisConfig, RedisThrottleStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/").build()?;
//! let store = RedisThrottleStore::new(backend);
//! // Hand `store` to `portcullis_throttle`'s layer: every instance built on
//! // the same Redis and key prefix counts the same failures.
//! # let _ = store;
//! # Ok(()) }
//! ```
//!
//! # Key layout
//!
//! One hash per counter, `n` the failures and `l` the last failure (ms
//! since the epoch, as strings):
//!
//! | key | counts the failures of |
//! |---|---|
//! | `<prefix>:ta:{<hex>}` | one account, from every address |
//! | `<prefix>:ti:{<hex>}` | one client address (an IPv6 /64) |
//! | `<prefix>:tp:{<hex>}` | one account from one address |
//!
//! `<hex>` is the key's digest (SHA-256 of what it counts, computed by the
//! throttle): neither an account name nor an address reaches Redis. The
//! digest is the hash tag, so counters spread over every slot of a
//! cluster, and every script touches exactly one key.
//!
//! # Round trips
//!
//! - **An allowed request is one round trip**: one `HMGET` per counter of
//!   the request, pipelined (sent together, answered together). On a
//!   cluster the counters live on different nodes: one command per counter,
//!   sent at once, one round trip to each node in parallel.
//! - A failure: one script per counter (forget if old, count, set the
//!   expiry), pipelined the same way; atomic per counter, so racing
//!   failures on any number of instances are each counted.
//! - A success: one `DEL` per counter, pipelined.
//!
//! # Clocks and expiry
//!
//! Forgetting is judged by the `now` the throttle passes (its clock, never
//! Redis'), and each failure stamps the counter with that `now`: a stamp
//! from an instance whose clock runs ahead is replaced by the next failure
//! anywhere, so it cannot silence the counter for the others (see
//! `ThrottleState::blocked_until`; instances sharing a store need
//! synchronised clocks). Each counter also carries a native TTL,
//! `forget_after` past its last failure, so Redis removes forgotten
//! counters by itself: no purge to run.
//!
//! # Failures
//!
//! Every call is bounded by the backend's timeout and fails with a
//! [`StoreError`] (the throttle answers 503: it fails closed). `check` and
//! `reset` are resent once after a broken connection; `record_failure` is
//! not (a resend after a lost reply would count the failure twice).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Script, Value};
use futures_util::future::join_all;
use portcullis_core::{StoreError, Timestamp};
use portcullis_throttle::{ThrottleKey, ThrottleScope, ThrottleState, ThrottleStore};

use crate::backend::{Idempotent, Op, RedisBackend};

/// The longest native TTL set (about 35 years).
const MAX_TTL_MS: u64 = 1 << 40;

/// The failure script's source (kept for `SCRIPT LOAD`).
const RECORD_FAILURE_LUA: &str = r"
local now = tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'n', 'l')
local n = tonumber(v[1])
local l = tonumber(v[2])
if n == nil or l == nil or l + tonumber(ARGV[2]) <= now then
  n = 0
end
if n < 4294967295 then n = n + 1 end
redis.call('HSET', KEYS[1], 'n', string.format('%d', n), 'l', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {n, ARGV[1]}
";

/// One failure on one counter, atomically.
///
/// `KEYS[1]` the counter. `ARGV[1]` now (ms), `ARGV[2]` forget after (ms,
/// at least 1). A counter whose last failure is `forget` old or older
/// starts again from zero; then the count goes up by one (saturating at
/// `u32::MAX`), the last failure becomes now, and the key expires `forget`
/// after now. Returns `{n, now}`.
static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_FAILURE_LUA));

/// A [`ThrottleStore`] on Redis (or Redis Cluster): the counters of
/// `portcullis_throttle`'s layer, shared by every instance.
///
/// See the [module docs](self) for the key layout, the round trips and
/// the clocks. Cheap to clone.
#[derive(Clone)]
pub struct RedisThrottleStore {
    backend: RedisBackend,
    prefix: String,
}

impl fmt::Debug for RedisThrottleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottleStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Redis answered with something the store never writes or asks for.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis to a throttle call")]
struct UnexpectedReply;

/// A counter that does not decode; the message names the field, never a
/// value.
#[derive(Debug, thiserror::Error)]
#[error("unreadable throttle counter: {0}")]
struct Corrupt(&'static str);

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The key code of a scope.
fn scope_code(scope: ThrottleScope) -> &'static str {
    match scope {
        ThrottleScope::Account => "ta",
        ThrottleScope::Address => "ti",
        ThrottleScope::AccountAtAddress => "tp",
        // A scope added later: its own, longer name.
        other => other.as_str(),
    }
}

impl RedisThrottleStore {
    /// A store on `backend` (its key prefix, connection and timeout).
    #[must_use]
    pub fn new(backend: RedisBackend) -> Self {
        let prefix = backend.key_prefix().to_owned();
        Self { backend, prefix }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &RedisBackend {
        &self.backend
    }

    /// The Redis key of a counter: `<prefix>:ta:{<hex>}` (account),
    /// `<prefix>:ti:{<hex>}` (address) or `<prefix>:tp:{<hex>}` (account at
    /// address), `<hex>` the key's digest.
    ///
    /// ```
    /// use portcullis_core::TokenDigest;
    /// use portcullis_redis::{RedisConfig, RedisThrottleStore};
    /// use portcullis_throttle::{ThrottleKey, ThrottleScope};
    ///
    /// let backend = RedisConfig::new("redis://127.0.0.1/").key_prefix("app").build()?;
    /// let store = RedisThrottleStore::new(backend);
    /// let key = ThrottleKey::new(ThrottleScope::Address, TokenDigest::from_bytes([0xab; 32]));
    /// assert_eq!(store.counter_key(&key), format!("app:ti:{{{}}}", "ab".repeat(32)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn counter_key(&self, key: &ThrottleKey) -> String {
        format!(
            "{}:{}:{{{}}}",
            self.prefix,
            scope_code(key.scope()),
            key.digest().to_hex()
        )
    }

    /// Whether the backend is a cluster (a pipeline then cannot span
    /// counters: they live in different slots).
    fn is_cluster(&self) -> bool {
        #[cfg(feature = "cluster")]
        {
            use crate::connection::{Factory, Source};
            if let Source::Shared(shared) = &self.backend.inner.source {
                return matches!(shared.factory, Factory::Cluster(..));
            }
        }
        false
    }

    /// Sends `cmds` (one per counter) and returns their replies in order,
    /// a server error as a `Value::ServerError`: one pipeline on a single
    /// node, one command per counter at once on a cluster.
    async fn send_all(
        &self,
        cmds: Vec<redis::Cmd>,
        idempotent: Idempotent,
    ) -> Result<Vec<Value>, StoreError> {
        if self.is_cluster() {
            let calls = cmds
                .iter()
                .map(|cmd| self.backend.run::<Value>(Op::Cmd(cmd), idempotent));
            return join_all(calls).await.into_iter().collect();
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        let replies: Vec<Value> = self.backend.run(Op::Pipeline(&pipe), idempotent).await?;
        if replies.len() == pipe.len() {
            Ok(replies)
        } else {
            Err(StoreError::backend(UnexpectedReply))
        }
    }

    /// Runs the failure script on each counter.
    async fn run_failures(
        &self,
        keys: &[String],
        now: u64,
        forget: u64,
    ) -> Result<Vec<Value>, StoreError> {
        if self.is_cluster() {
            // One invocation per counter, each on its node (the script is
            // loaded where it is missing).
            let calls = keys.iter().map(|key| async move {
                let mut inv = RECORD_FAILURE.prepare_invoke();
                inv.key(key).arg(now).arg(forget);
                self.backend
                    .run::<Value>(Op::Script(&inv), Idempotent::No)
                    .await
            });
            return join_all(calls).await.into_iter().collect();
        }
        let eval = |key: &String| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(RECORD_FAILURE.get_hash())
                .arg(1)
                .arg(key)
                .arg(now)
                .arg(forget);
            cmd
        };
        let mut replies = self
            .send_all(keys.iter().map(eval).collect(), Idempotent::No)
            .await?;
        // A Redis that lost its scripts (restarted, SCRIPT FLUSH) refused
        // them all, before running any: load it, then send those again.
        let missing: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Value::ServerError(e) if e.code() == "NOSCRIPT"))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(RECORD_FAILURE_LUA);
            let _: String = self.backend.run(Op::Cmd(&load), Idempotent::Yes).await?;
            let again = self
                .send_all(
                    missing.iter().map(|&i| eval(&keys[i])).collect(),
                    Idempotent::No,
                )
                .await?;
            for (i, reply) in missing.into_iter().zip(again) {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }
}

/// A server error inside a pipeline's replies as a [`StoreError`]
/// (`WRONGTYPE`: a key of ours holds something we did not write).
fn server_error(e: redis::ServerError) -> StoreError {
    if e.code() == "WRONGTYPE" {
        StoreError::corrupt(redis::RedisError::from(e))
    } else {
        StoreError::backend(redis::RedisError::from(e))
    }
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn number<T: std::str::FromStr>(v: &Value, field: &'static str) -> Result<T, StoreError> {
    let parsed = match v {
        Value::Int(n) => n.to_string().parse().ok(),
        other => text(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    };
    parsed.ok_or_else(|| StoreError::corrupt(Corrupt(field)))
}

/// A counter as `HMGET n l` returns it, forgotten by `now`.
fn decode_check(
    reply: Value,
    now: Timestamp,
    forget_after: Duration,
) -> Result<ThrottleState, StoreError> {
    let items = match reply {
        Value::Array(items) => items,
        Value::ServerError(e) => return Err(server_error(e)),
        _ => return Err(StoreError::backend(UnexpectedReply)),
    };
    match items.as_slice() {
        [Value::Nil, Value::Nil] => Ok(ThrottleState::default()),
        [n, l] => {
            let failures: u32 = number(n, "n")?;
            let last = Timestamp::from_millis(number(l, "l")?);
            if last + forget_after <= now || failures == 0 {
                Ok(ThrottleState::default())
            } else {
                Ok(ThrottleState {
                    failures,
                    last_failure: Some(last),
                })
            }
        }
        _ => Err(StoreError::backend(UnexpectedReply)),
    }
}

/// The failure script's `{n, last}`.
fn decode_failure(reply: Value) -> Result<ThrottleState, StoreError> {
    let items = match reply {
        Value::Array(items) => items,
        Value::ServerError(e) => return Err(server_error(e)),
        _ => return Err(StoreError::backend(UnexpectedReply)),
    };
    match items.as_slice() {
        [n, l] => Ok(ThrottleState {
            failures: number(n, "n")?,
            last_failure: Some(Timestamp::from_millis(number(l, "l")?)),
        }),
        _ => Err(StoreError::backend(UnexpectedReply)),
    }
}

#[async_trait]
impl ThrottleStore for RedisThrottleStore {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = keys
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(self.counter_key(k)).arg("n").arg("l");
                cmd
            })
            .collect();
        self.send_all(cmds, Idempotent::Yes)
            .await?
            .into_iter()
            .map(|reply| decode_check(reply, now, forget_after))
            .collect()
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|k| self.counter_key(k)).collect();
        let forget = duration_ms(forget_after).clamp(1, MAX_TTL_MS);
        self.run_failures(&names, now.millis(), forget)
            .await?
            .into_iter()
            .map(decode_failure)
            .collect()
    }

    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let cmds = keys
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.counter_key(k));
                cmd
            })
            .collect();
        for reply in self.send_all(cmds, Idempotent::Yes).await? {
            match reply {
                Value::Int(_) => {}
                Value::ServerError(e) => return Err(server_error(e)),
                _ => return Err(StoreError::backend(UnexpectedReply)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::TokenDigest;

    #[test]
    fn keys_name_scope_and_digest_only() {
        let backend = crate::RedisConfig::new("redis://localhost/")
            .key_prefix("app")
            .build()
            .unwrap();
        let store = RedisThrottleStore::new(backend);
        let d = TokenDigest::of(b"alice");
        let hex = d.to_hex();
        for (scope, code) in [
            (ThrottleScope::Account, "ta"),
            (ThrottleScope::Address, "ti"),
            (ThrottleScope::AccountAtAddress, "tp"),
        ] {
            assert_eq!(
                store.counter_key(&ThrottleKey::new(scope, d)),
                format!("app:{code}:{{{hex}}}")
            );
        }
        assert!(!format!("{store:?}").contains(&hex));
    }

    #[test]
    fn counters_decode_or_fail_as_corrupt() {
        let now = Timestamp::from_secs(1000);
        let forget = Duration::from_secs(60);
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let check = |n: Value, l: Value| decode_check(Value::Array(vec![n, l]), now, forget);
        assert_eq!(
            check(Value::Nil, Value::Nil).unwrap(),
            ThrottleState::default()
        );
        assert_eq!(
            check(bulk("3"), bulk("999000")).unwrap(),
            ThrottleState {
                failures: 3,
                last_failure: Some(Timestamp::from_millis(999_000))
            }
        );
        // Forgotten at exactly forget_after.
        assert_eq!(
            check(bulk("3"), bulk("940000")).unwrap(),
            ThrottleState::default()
        );
        for (n, l) in [
            (bulk("x"), bulk("1")),
            (bulk("1"), Value::Nil),
            (bulk("-1"), bulk("1")),
            (bulk("4294967296"), bulk("1")),
        ] {
            let e = check(n, l).unwrap_err();
            assert_eq!(e.kind(), portcullis_core::StoreErrorKind::Corrupt);
        }
        assert!(decode_failure(Value::Int(1)).is_err());
        assert_eq!(
            decode_failure(Value::Array(vec![Value::Int(2), bulk("5")])).unwrap(),
            ThrottleState {
                failures: 2,
                last_failure: Some(Timestamp::from_millis(5))
            }
        );
    }
}
