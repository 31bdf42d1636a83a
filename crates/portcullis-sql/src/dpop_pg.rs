//! [`PgReplayCache`]: the DPoP proof replay cache in PostgreSQL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp};
use portcullis_jwt::dpop::{ReplayCache, ReplayCacheError};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr as _, SqlStr};

use super::{EXPIRY_GRACE, TABLE, secs, unavailable};
use crate::PgBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::names::Names;
use crate::pg::DB_NOW_MS;
use crate::purge::Purger;

/// A DPoP [`ReplayCache`] on PostgreSQL, shared by every instance on the
/// database: one upsert per proof.
///
/// Cheap to clone (clones share the statements and the purge schedule).
/// See the [module docs](crate::dpop) for the table, the statement and the
/// purge.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_jwt::dpop::ReplayCache as _;
/// use portcullis_sql::{PgConfig, PgReplayCache};
///
/// let backend = PgConfig::new(pool).build()?;
/// backend.migrate().await?;
/// let cache = PgReplayCache::new(&backend);
/// assert!(cache.first_use(&[7; 32], 1_900_000_000).await?);
/// assert!(!cache.first_use(&[7; 32], 1_900_000_000).await?, "a replay");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgReplayCache {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    timeout: Duration,
    clock: SharedClock,
    sql: Sql,
    purger: Arc<Purger>,
}

impl fmt::Debug for PgReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` never shows its connect options.
        f.debug_struct("PgReplayCache")
            .field("pool", &self.inner.pool)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Every statement of the cache, rendered once with the backend's names.
struct Sql {
    first_use: SqlStr,
    purge: SqlStr,
}

impl Sql {
    fn new(names: &Names) -> Self {
        let t = names.table(TABLE);
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        Self {
            // $1 id, $2 its deadline, $3 now (seconds). A row past its
            // deadline is taken over; a live one returns nothing.
            first_use: sql(format!(
                "INSERT INTO {t} AS r (proof_id, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (proof_id) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE r.expires_at < $3 RETURNING 1"
            )),
            // `$1` is the caller's cut-off, `$2` the database's clock's
            // allowance (seconds): the earlier of the two clocks decides.
            purge: sql(format!(
                "DELETE FROM {t} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {t} \
                 WHERE expires_at <= LEAST($1, {DB_NOW_MS} / 1000 - $2) \
                 LIMIT $3 FOR UPDATE SKIP LOCKED))"
            )),
        }
    }
}

impl PgReplayCache {
    /// A cache on `backend`'s pool, names, timeout and purge schedule, on
    /// the system clock.
    #[must_use]
    pub fn new(backend: &PgBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// [`new`](Self::new) on `clock`, which judges whether a remembered
    /// proof's window is over (give it the verifier's clock).
    #[must_use]
    pub fn with_clock(backend: &PgBackend, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: backend.pool().clone(),
                timeout: backend.timeout(),
                clock,
                sql: Sql::new(backend.names()),
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
            .run(|n| self.inner.purge_batch(now, Duration::ZERO, n))
            .await
    }

    /// Starts a background purge when one is due.
    fn purge_in_background(&self, now: Timestamp) {
        let inner = Arc::clone(&self.inner);
        self.inner.purger.maybe_start(move |n| {
            let inner = Arc::clone(&inner);
            async move { inner.purge_batch(now - EXPIRY_GRACE, EXPIRY_GRACE, n).await }
        });
    }
}

impl Inner {
    /// Deletes up to `n` rows expired before `now` and `grace` before the
    /// database's clock; returns how many.
    async fn purge_batch(
        &self,
        now: Timestamp,
        grace: Duration,
        n: u32,
    ) -> Result<u64, StoreError> {
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        crate::pg::purge_batch(
            &self.pool,
            self.timeout,
            &self.sql.purge,
            secs(now.secs()),
            grace,
            n,
        )
        .await
    }
}

#[async_trait]
impl ReplayCache for PgReplayCache {
    async fn first_use(
        &self,
        id: &[u8; 32],
        until_unix_secs: u64,
    ) -> Result<bool, ReplayCacheError> {
        let now = self.inner.clock.now();
        let taken: Option<i32> = bounded(self.inner.timeout, async {
            sqlx::query_scalar(self.inner.sql.first_use.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_configured_table() {
        let sql = Sql::new(&Names::new(Some("auth"), "pc_").unwrap());
        for s in [&sql.first_use, &sql.purge] {
            assert!(
                s.as_str().contains("\"auth\".\"pc_dpop_replay\""),
                "{}",
                s.as_str()
            );
        }
    }
}
