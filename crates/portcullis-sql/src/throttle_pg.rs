//! [`PgThrottleStore`]: the login throttle's counters in PostgreSQL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};
use portcullis_throttle::{ThrottleKey, ThrottleState, ThrottleStore};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr as _, SqlStr};

use super::{COLUMNS, EXPIRY_GRACE, RawRow, TABLE, assemble, distinct_sorted, forget_ms, ms};
use crate::PgBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::names::Names;
use crate::pg::DB_NOW_MS;
use crate::purge::Purger;

/// A [`ThrottleStore`] on PostgreSQL: one row per counter, a failure as
/// one upsert over every counter of the request, a check as one `SELECT`.
///
/// Cheap to clone (clones share the statements and the purge schedule).
/// See the [module docs](crate::throttle) for the table, the statements
/// and the purge.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_sql::{PgConfig, PgThrottleStore};
///
/// let backend = PgConfig::new(pool).build()?;
/// backend.migrate().await?;
/// let store = PgThrottleStore::new(&backend);
/// // Hand `store` to `portcullis_throttle`'s layer: every instance on this
/// // database counts the same failures.
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgThrottleStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    timeout: Duration,
    sql: Sql,
    purger: Arc<Purger>,
}

impl fmt::Debug for PgThrottleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` never shows its connect options.
        f.debug_struct("PgThrottleStore")
            .field("pool", &self.inner.pool)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Every statement of the store, rendered once with the backend's names.
struct Sql {
    check: SqlStr,
    record: SqlStr,
    reset: SqlStr,
    purge: SqlStr,
}

impl Sql {
    fn new(names: &Names) -> Self {
        let t = names.table(TABLE);
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        Self {
            // Rows of another scope with the same digest are left out by
            // the caller.
            check: sql(format!(
                "SELECT {COLUMNS} FROM {t} WHERE key_digest = ANY($1)"
            )),
            // $1 digests and $2 scopes (sorted: rows are locked in that
            // order), $3 now, $4 forget_after (ms). The right-hand sides
            // read the row before the update.
            record: sql(format!(
                "INSERT INTO {t} AS t (key_digest, scope, failures, last_failure, expires_at) \
                 SELECT k.d, k.s, 1, $3, $3 + $4 FROM unnest($1::bytea[], $2::text[]) AS k(d, s) \
                 ON CONFLICT (key_digest, scope) DO UPDATE SET \
                 failures = CASE WHEN t.last_failure <= $3 - $4 THEN 1 \
                 ELSE LEAST(t.failures + 1, 4294967295) END, \
                 last_failure = $3, expires_at = $3 + $4 \
                 RETURNING {COLUMNS}"
            )),
            reset: sql(format!(
                "DELETE FROM {t} WHERE (key_digest, scope) IN \
                 (SELECT * FROM unnest($1::bytea[], $2::text[]))"
            )),
            // `ctid = ANY (ARRAY(...))`: a TID scan of the rows the index
            // found. `$1` is the caller's cut-off, `$2` the database's
            // clock's allowance: the earlier of the two clocks decides.
            purge: sql(format!(
                "DELETE FROM {t} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {t} \
                 WHERE expires_at <= LEAST($1, {DB_NOW_MS} - $2) \
                 LIMIT $3 FOR UPDATE SKIP LOCKED))"
            )),
        }
    }
}

impl PgThrottleStore {
    /// A store on `backend`'s pool, names, timeout and purge schedule.
    #[must_use]
    pub fn new(backend: &PgBackend) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: backend.pool().clone(),
                timeout: backend.timeout(),
                sql: Sql::new(backend.names()),
                purger: Purger::new(backend.purge_config()),
            }),
        }
    }

    /// Deletes every counter forgotten at `now` (its `forget_after` past),
    /// in batches; returns how many. The store also does this by itself,
    /// 60 s later, in the background.
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
    /// Deletes up to `n` counters expired at `now` and `grace` before the
    /// database's clock; returns how many.
    async fn purge_batch(
        &self,
        now: Timestamp,
        grace: Duration,
        n: u32,
    ) -> Result<u64, StoreError> {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        crate::pg::purge_batch(&self.pool, self.timeout, &self.sql.purge, ms(now), grace, n).await
    }
}

/// `keys` as the two arrays the statements unnest.
fn arrays(keys: &[ThrottleKey]) -> (Vec<Vec<u8>>, Vec<&'static str>) {
    distinct_sorted(keys)
        .into_iter()
        .map(|(d, s)| (d.to_vec(), s))
        .unzip()
}

#[async_trait]
impl ThrottleStore for PgThrottleStore {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (digests, _) = arrays(keys);
        let rows: Vec<RawRow> = bounded(self.inner.timeout, async {
            sqlx::query_as(self.inner.sql.check.clone())
                .bind(digests)
                .fetch_all(&self.inner.pool)
                .await
                .store()
        })
        .await?;
        assemble(keys, rows, Some((now, forget_after)))
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
        let (digests, scopes) = arrays(keys);
        let rows: Vec<RawRow> = bounded(self.inner.timeout, async {
            sqlx::query_as(self.inner.sql.record.clone())
                .bind(digests)
                .bind(scopes)
                .bind(ms(now))
                .bind(forget_ms(forget_after))
                .fetch_all(&self.inner.pool)
                .await
                .store()
        })
        .await?;
        self.purge_in_background(now);
        assemble(keys, rows, None)
    }

    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let (digests, scopes) = arrays(keys);
        bounded(self.inner.timeout, async {
            sqlx::query(self.inner.sql.reset.clone())
                .bind(digests)
                .bind(scopes)
                .execute(&self.inner.pool)
                .await
                .store()
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_configured_table() {
        let sql = Sql::new(&Names::new(Some("auth"), "pc_").unwrap());
        for s in [&sql.check, &sql.record, &sql.reset, &sql.purge] {
            assert!(
                s.as_str().contains("\"auth\".\"pc_throttle_counters\""),
                "{}",
                s.as_str()
            );
        }
    }
}
