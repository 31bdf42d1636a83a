//! Redis stores for the portcullis layers, for applications that run many
//! instances behind a load balancer: every instance sees the same sessions,
//! a logout on one is refused on all others at once, and a Redis outage
//! answers 503 (never "logged out") within a bounded time.
//!
//! ```no_run
//! use portcullis_redis::{RedisConfig, RedisSessionStore};
//! use portcullis_session::{SessionConfig, SessionLayer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/")
//!     .key_prefix("myapp")
//!     .build()?; // connects lazily: starts even while Redis is down
//! let store = RedisSessionStore::new(backend);
//! let layer = SessionLayer::new(store, SessionConfig::default())?;
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `session` | yes | `RedisSessionStore`, a `portcullis_session::SessionStore` |
//! | `cluster` | no | `RedisConfig::cluster`: Redis Cluster targets |
//! | `testing` | no | `testing::CommandStats`: count the commands a request costs |
//! | `tracing` | no | debug/warn events on connection loss and timeouts (never a key, token or session data) |
//!
//! (The JWT revocation and refresh-token stores will join as the `jwt` and
//! `refresh` features, on the same [`RedisBackend`].)
//!
//! # Connection and timeouts
//!
//! A [`RedisBackend`] holds **one multiplexed connection** that every
//! concurrent call shares (requests are pipelined on the wire, which is how
//! Redis is fastest). There is no per-call checkout and so no per-call
//! health check: a `deadpool-redis` pool sends `UNWATCH` + `PING` on every
//! checkout, a second round trip per call (measured: 3 commands, 2 round
//! trips per session load through a pool; 1 command, 1 round trip through
//! the multiplexed connection; [`RedisConfig::from_pool`] remains for
//! applications that must share their pool).
//!
//! | setting | default | |
//! |---|---|---|
//! | [`timeout`](RedisConfig::timeout) | 250 ms | bound on every Redis call, connecting included: then [`StoreError::timeout`](portcullis_core::StoreError::timeout), and the layers answer 503 |
//! | [`reconnect_backoff`](RedisConfig::reconnect_backoff) | 100 ms | after a failed connection attempt, calls fail at once (503) for this long |
//!
//! A call that fails on the connection (I/O error, timeout) drops it; the
//! next call connects again (one attempt at a time, the others wait for
//! it), so service resumes by itself when Redis returns. A call that is
//! safe to repeat (every one but `delete`) and failed on a broken
//! connection, such as the one a restarted Redis closed, is sent once more
//! on a new connection within the same time bound. Nothing panics on any
//! reply: unexpected ones are errors.
//!
//! # Key layout
//!
//! `<prefix>` is [`RedisConfig::key_prefix`] (default `portcullis`);
//! `<hex>` is the lower-case hex SHA-256 of the session id (the id itself
//! never reaches Redis).
//!
//! | key | type | holds | native expiry |
//! |---|---|---|---|
//! | `<prefix>:s:<hex>` | string | one session, as JSON: `u` user id, `c` created, `l` last seen, `i` idle deadline, `a` absolute deadline (ms since the epoch, as strings), `m` metadata, `n` the nonce of the create call, `d` the data (key -> the value's JSON) | the session's end + 60 s (`EXPIRY_GRACE`) |
//! | `<prefix>:u:<SHA-256 hex of the user id>` | hash | one user's sessions: field = session `<hex>`, value = `created:absolute_deadline` | the latest absolute deadline + 60 s |
//!
//! A session is one string so that loading it is one `GET`, the cheapest
//! read Redis has (measured on Redis 7 for a 180-byte session: 0.11 µs of
//! server time per `GET`, 1.36 µs per `HGETALL` of the same record as a
//! 10-field hash). Updates stay key-level: a script decodes the record
//! (Redis' `cjson`), sets or removes only the keys the request changed and
//! writes it back, atomically, so concurrent requests changing different
//! keys both survive, and a record deleted meanwhile is never written
//! again.
//!
//! Expiry is judged by the store's clock, passed to every script as `now`
//! and compared with the stored deadlines; the native TTL only cleans up.
//!
//! **Redis Cluster.** Every script touches exactly one key, so each runs
//! on one node; sessions and user indexes spread over all slots (no hash
//! tag is needed, and the prefix may carry one to pin everything to one
//! slot). Operations that span a session and its user's index are ordered
//! so that a failure half-way never leaves a live session outside its
//! user's index (where "log out everywhere" would miss it):
//!
//! - create: the session is stored first (create-if-absent), then added to
//!   the index by a script that enforces the per-user cap atomically (it is
//!   the one place concurrent logins of a user meet). A refused or failed
//!   login deletes the session it stored; its token was never handed out.
//! - eviction: victims' records are deleted before they leave the index.
//! - delete: the record goes first, then its index entry.
//! - an index entry whose session is absent, expired or another user's is
//!   dead; reads prune it.
//!
//! # Round trips
//!
//! | operation | round trips |
//! |---|---|
//! | `load` (the one store call of an authenticated request) | **1**: `GET` |
//! | `update`, `touch` | 1: one script |
//! | `create` anonymous / with a user / with a cap | 1 / 2 / 4 (+2 with victims) |
//! | `delete` | 1, +1 to unindex a user's session |
//! | `list_for_user`, `count_for_user`, `delete_for_user` | 2 (+1 to prune) |
//!
//! The sessions an index names are read or deleted concurrently, so they
//! share one round trip on a single server. The first script call after
//! Redis lost its script cache (a restart) costs two more (`NOSCRIPT`, then
//! `SCRIPT LOAD`).
//!
//! # Measured
//!
//! Redis 7.0 on the same 2-core machine as the application (the
//! workspace's `redis_round_trips` and `redis_faults` tests, and the
//! `redis_session` bench):
//!
//! - **Round trips per authenticated request: 1.** 100 requests cost 100
//!   `GET`s and no other command (`INFO commandstats` deltas), and 100
//!   request/reply exchanges on the wire (a counting TCP proxy). Through a
//!   `deadpool-redis` pool: 300 commands (`GET`, `UNWATCH`, `PING`) and
//!   200 exchanges.
//! - **Throughput**, 32 requests at a time: `SessionLayer` on this store
//!   serves 0.34 to 0.40 times the requests per second of bare `GET`s of a
//!   value the session's size (the floor); the store's `load` alone 0.69
//!   times; through a deadpool pool 0.07 times.
//! - **Time to 503**: Redis killed, 1.1 ms (median; 11 ms at most); Redis
//!   frozen (`SIGSTOP`), 252 ms: the 250 ms timeout. A restarted Redis
//!   answers the next request within a few milliseconds (reconnect and
//!   resend), within the 100 ms backoff at worst.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
#[cfg(feature = "session")]
mod session;
#[cfg(feature = "testing")]
pub mod testing;

/// The `deadpool-redis` this crate is built on (and the `redis` crate, as
/// `deadpool_redis::redis`), for [`RedisConfig::from_pool`].
pub use deadpool_redis;

pub use backend::{
    DEFAULT_KEY_PREFIX, DEFAULT_RECONNECT_BACKOFF, DEFAULT_TIMEOUT, RedisBackend, RedisConfig,
    RedisConfigError,
};
#[cfg(feature = "session")]
pub use session::{EXPIRY_GRACE, RedisSessionStore};

/// Emits a `tracing` event when the `tracing` feature is on; nothing
/// otherwise. Never pass a key, a token or session data.
macro_rules! event {
    ($level:ident, $($rest:tt)*) => {{
        #[cfg(feature = "tracing")]
        ::tracing::$level!($($rest)*);
    }};
}
pub(crate) use event;
