//! `RedisReplayCache`: the DPoP proof replay cache (RFC 9449 §11.1) shared
//! by every instance, so a proof accepted by one instance is refused by all
//! the others.
//!
//! ```no_run
//! use portcullis_jwt::dpop::DpopVerifier;
//! use portcullis_redis::{RedisConfig, RedisReplayCache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/").build()?;
//! let dpop = DpopVerifier::builder("https://api.example.com")
//!     .replay_cache(RedisReplayCache::new(backend))
//!     .build()?;
//! # let _ = dpop;
//! # Ok(()) }
//! ```
//!
//! # Key layout
//!
//! | key | type | holds | native expiry |
//! |---|---|---|---|
//! | `<prefix>:dp:<hex>` | string | `1`: the proof `<hex>` was used | the proof's deadline + 60 s (`EXPIRY_GRACE`) |
//!
//! `<hex>` is the lower-case hex of the 32-byte id the verifier passes (a
//! SHA-256 of the proof's key thumbprint and `jti`): no proof, key or
//! token reaches Redis. Each check is **one command**, `SET key 1 NX PX
//! <time left to the deadline + 60 s>`: atomic, so of any number of instances racing with the
//! same proof exactly one gets `OK` (first use) and the others `nil`
//! (replay). One key per call: Redis Cluster spreads them over every slot.
//!
//! # Bounded
//!
//! Every key expires by itself (Redis' native expiry) 60 s after the
//! proof's deadline, the end of its `iat` window: the memory held is the
//! rate of accepted proofs times the window plus a minute. The expiry is
//! relative (`PX`), the time left in the proof's window by the cache's
//! clock (give it the verifier's: [`with_clock`](RedisReplayCache::with_clock)),
//! so no difference between the instance's clock and Redis' can shorten
//! it: an absolute `EXAT` from an instance whose clock is behind Redis'
//! would be in Redis' past, and the proof forgotten at once.
//!
//! # Failures
//!
//! Every call is bounded by the backend's timeout; an error or a timeout
//! is [`ReplayCacheError::Unavailable`], and the layer answers 503 (a
//! proof the cache cannot vouch for might be a replay: never a pass). The
//! command is never resent: a resend after a lost reply would find its own
//! key and call a first use a replay.

use std::fmt;
use std::fmt::Write as _;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Value};
use portcullis_core::{SharedClock, SystemClock};
use portcullis_jwt::dpop::{ReplayCache, ReplayCacheError};

use crate::EXPIRY_GRACE;
use crate::backend::{Idempotent, Op, RedisBackend};

/// A DPoP [`ReplayCache`] on Redis (or Redis Cluster), shared by every
/// instance on the same Redis and key prefix: one `SET NX PX` per
/// proof.
///
/// See the [module docs](self) for the key layout, the bound on memory
/// and failures. Cheap to clone.
#[derive(Clone)]
pub struct RedisReplayCache {
    backend: RedisBackend,
    prefix: String,
    clock: SharedClock,
}

impl fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl RedisReplayCache {
    /// A cache on `backend` (its key prefix, connection and timeout),
    /// timing its entries by the system clock.
    #[must_use]
    pub fn new(backend: RedisBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// [`new`](Self::new) on `clock`, which measures the time left in a
    /// proof's window (give it the verifier's clock).
    #[must_use]
    pub fn with_clock(backend: RedisBackend, clock: SharedClock) -> Self {
        let prefix = backend.key_prefix().to_owned();
        Self {
            backend,
            prefix,
            clock,
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &RedisBackend {
        &self.backend
    }

    /// The Redis key of proof `id`: `<prefix>:dp:<hex>`.
    ///
    /// ```
    /// use portcullis_redis::{RedisConfig, RedisReplayCache};
    ///
    /// let backend = RedisConfig::new("redis://127.0.0.1/").key_prefix("app").build()?;
    /// let cache = RedisReplayCache::new(backend);
    /// assert_eq!(cache.key(&[0xab; 32]), format!("app:dp:{}", "ab".repeat(32)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn key(&self, id: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 4 + 64);
        key.push_str(&self.prefix);
        key.push_str(":dp:");
        for b in id {
            let _ = write!(key, "{b:02x}");
        }
        key
    }
}

#[async_trait]
impl ReplayCache for RedisReplayCache {
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        // Relative, so Redis' own clock cannot shorten it.
        let left_ms = until_unix_secs
            .saturating_add(EXPIRY_GRACE.as_secs())
            .saturating_sub(self.clock.now().secs())
            .saturating_mul(1000)
            // Redis refuses expiry times past i64 milliseconds.
            .min(1 << 40);
        if left_ms == 0 {
            // A window that ended more than the grace ago: the verifier
            // refuses such proofs before asking, and nothing is kept.
            return Ok(true);
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(left_ms);
        match self
            .backend
            .run::<Value>(Op::Cmd(&cmd), Idempotent::No)
            .await
        {
            Ok(Value::Okay) => Ok(true),
            Ok(Value::SimpleString(s)) if s == "OK" => Ok(true),
            Ok(Value::Nil) => Ok(false),
            Ok(_) => {
                portcullis_core::event!(
                    warn,
                    reason = "unexpected-reply",
                    "Redis answered a DPoP replay check with an unexpected reply"
                );
                Err(ReplayCacheError::Unavailable)
            }
            Err(_) => Err(ReplayCacheError::Unavailable),
        }
    }
}
