//! The DPoP proof replay caches (RFC 9449 §11.1): [`PgReplayCache`]
//! (PostgreSQL) and [`SqliteReplayCache`] (SQLite), each a
//! [`portcullis_jwt::dpop::ReplayCache`] shared by every instance on the
//! database, so a proof accepted by one instance is refused by all the
//! others. The shared part is here; each database's statements are in its
//! own file.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis_jwt::dpop::DpopVerifier;
//! use portcullis_sql::{PgConfig, PgReplayCache};
//!
//! let backend = PgConfig::new(pool).build()?;
//! backend.migrate().await?;
//! let dpop = DpopVerifier::builder("https://api.example.com")
//!     .replay_cache(PgReplayCache::new(&backend))
//!     .build()?;
//! # let _ = dpop;
//! # Ok(()) }
//! ```
//!
//! # Table
//!
//! `<schema>.dpop_replay` (PostgreSQL) or `<prefix>dpop_replay` (SQLite),
//! created by the backend's `migrate` (migration 7): one row per accepted
//! proof, `proof_id` the 32-byte id the verifier passes (a SHA-256 of the
//! proof's key thumbprint and `jti`: no proof, key or token is stored) and
//! `expires_at` the end of the proof's `iat` window (seconds since the
//! epoch).
//!
//! # Statements
//!
//! Each check is **one** `INSERT .. ON CONFLICT (proof_id) DO UPDATE ..
//! WHERE expires_at < now RETURNING 1`: a new id is inserted, an id whose
//! row outlived its window (not purged yet) is taken over, and a live one
//! is left alone and returns no row: a replay. Atomic: of any number of
//! instances racing with the same proof exactly one gets the row
//! (PostgreSQL's unique index, SQLite's write lock). `now` is the cache's
//! clock ([`with_clock`](PgReplayCache::with_clock); give it the
//! verifier's).
//!
//! # Bounded
//!
//! Rows past `expires_at` are deleted 60 s later, in the background, in
//! batches ([`PurgeConfig`](crate::PurgeConfig)), started by a check at most
//! once per interval (on PostgreSQL by the earlier of the cache's clock and
//! the database's); `purge_expired` deletes them at once. The table holds
//! the rate of accepted proofs times the window plus a minute.
//!
//! # Failures
//!
//! Every call is bounded by the backend's timeout; an error or a timeout
//! is [`ReplayCacheError::Unavailable`], and the layer answers 503 (a proof
//! the cache cannot vouch for might be a replay: never a pass).
// Without a database feature there is no cache to use the shared part.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

use std::time::Duration;

use portcullis_core::StoreError;
use portcullis_jwt::dpop::ReplayCacheError;

#[cfg(feature = "postgres")]
#[path = "dpop_pg.rs"]
mod postgres;
#[cfg(feature = "sqlite")]
#[path = "dpop_sqlite.rs"]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "postgres"))))]
pub use postgres::PgReplayCache;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "sqlite"))))]
pub use sqlite::SqliteReplayCache;

/// The table's base name.
const TABLE: &str = "dpop_replay";

/// How long after its window the background purge leaves a row: room for
/// the clocks of other instances.
const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// A deadline as stored: seconds, at most `i64::MAX`.
fn secs(until: u64) -> i64 {
    i64::try_from(until).unwrap_or(i64::MAX)
}

/// A store failure as the verifier sees it (the cause goes to the log).
#[allow(clippy::needless_pass_by_value)]
fn unavailable(e: StoreError) -> ReplayCacheError {
    portcullis_core::event!(
        warn,
        reason = "dpop-replay-store",
        error = %e,
        "the DPoP replay cache could not answer"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = e;
    ReplayCacheError::Unavailable
}
