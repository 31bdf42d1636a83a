//! [`SqliteReplayCache`]: the DPoP proof replay cache in SQLite.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp};
use portcullis_jwt::dpop::{ReplayCache, ReplayCacheError};
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr, SqlitePool};

use super::{EXPIRY_GRACE, TABLE, secs, unavailable};
use crate::SqliteBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::purge::Purger;

/// A DPoP [`ReplayCache`] on SQLite, shared by the processes of one host
/// on the same file: one upsert per proof.
///
/// Cheap to clone (clones share the statements and the purge schedule).
/// See the [module docs](crate::dpop) for the table, the statement and the
/// purge.
///
/// ```no_run
/// # async fn run(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_jwt::dpop::ReplayCache as _;
/// use portcullis_sql::{SqliteConfig, SqliteReplayCache};
///
/// let backend = SqliteConfig::new(pool).build()?;
/// backend.migrate().await?;
/// let cache = SqliteReplayCache::new(&backend);
/// assert!(cache.first_use(&[7; 32], 1_900_000_000).await?);
/// assert!(!cache.first_use(&[7; 32], 1_900_000_000).await?, "a replay");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteReplayCache {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    timeout: Duration,
    clock: SharedClock,
    first_use: SqlStr,
    purge: SqlStr,
    purger: Arc<Purger>,
}

impl fmt::Debug for SqliteReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` never shows its connect options.
        f.debug_struct("SqliteReplayCache")
            .field("pool", &self.inner.pool)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteReplayCache {
    /// A cache on `backend`'s pool, names, timeout and purge schedule, on
    /// the system clock.
    #[must_use]
    pub fn new(backend: &SqliteBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// [`new`](Self::new) on `clock`, which judges whether a remembered
    /// proof's window is over (give it the verifier's clock).
    #[must_use]
    pub fn with_clock(backend: &SqliteBackend, clock: SharedClock) -> Self {
        let t = backend.names().table(TABLE);
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        Self {
            inner: Arc::new(Inner {
                pool: backend.pool().clone(),
                timeout: backend.timeout(),
                clock,
                // ?1 id, ?2 its deadline, ?3 now (seconds). A row past its
                // deadline is taken over; a live one returns nothing.
                first_use: sql(format!(
                    "INSERT INTO {t} (proof_id, expires_at) VALUES (?1, ?2) \
                     ON CONFLICT (proof_id) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE expires_at < ?3 RETURNING 1"
                )),
                // By rowid, from the expiry index: each batch is a short write.
                purge: sql(format!(
                    "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} \
                     WHERE expires_at <= ?1 LIMIT ?2)"
                )),
                purger: Purger::new(backend.purge_config()),
            }),
        }
    }

    /// Deletes every row whose window ended by `now`, in batches; returns
    /// how many. The cache also does this by itself, 60 s later, in the
    /// background.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database fails or a batch times out.
    pub async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.inner
            .purger
            .run(|n| self.inner.purge_batch(now, n))
            .await
    }

    /// Starts a background purge when one is due.
    fn purge_in_background(&self, now: Timestamp) {
        let inner = Arc::clone(&self.inner);
        self.inner.purger.maybe_start(move |n| {
            let inner = Arc::clone(&inner);
            async move { inner.purge_batch(now - EXPIRY_GRACE, n).await }
        });
    }
}

impl Inner {
    /// Deletes up to `n` rows expired before `now`; returns how many.
    async fn purge_batch(&self, now: Timestamp, n: u32) -> Result<u64, StoreError> {
        bounded(self.timeout, async {
            let done = sqlx::query(self.purge.clone())
                .bind(secs(now.secs()))
                .bind(i64::from(n))
                .execute(&self.pool)
                .await
                .store()?;
            Ok(done.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl ReplayCache for SqliteReplayCache {
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        let now = self.inner.clock.now();
        let taken: Option<i64> = bounded(self.inner.timeout, async {
            sqlx::query_scalar(self.inner.first_use.clone())
                .bind(id.as_slice())
                .bind(secs(until_unix_secs))
                .bind(secs(now.secs()))
                .fetch_optional(&self.inner.pool)
                .await
                .store()
        })
        .await
        .map_err(unavailable)?;
        self.purge_in_background(now);
        Ok(taken.is_some())
    }
}
