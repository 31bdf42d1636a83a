//! [`SqliteThrottleStore`]: the login throttle's counters in SQLite.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};
use portcullis_throttle::{ThrottleKey, ThrottleState, ThrottleStore};
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr, SqlitePool};

use super::{COLUMNS, EXPIRY_GRACE, RawRow, TABLE, assemble, distinct_sorted, forget_ms, ms};
use crate::SqliteBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::purge::Purger;

/// The statements rendered once, for requests of up to this many distinct
/// counters (the throttle's three and a spare); larger ones are rendered
/// per call.
const PREPARED: usize = 4;

/// A [`ThrottleStore`] on SQLite: one row per counter, a failure as one
/// upsert over every counter of the request, a check as one `SELECT`.
///
/// Cheap to clone (clones share the statements and the purge schedule).
/// A SQLite file serves the processes of one host. See the [module
/// docs](crate::throttle) for the table, the statements and the purge.
///
/// ```no_run
/// # async fn run(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_sql::{SqliteConfig, SqliteThrottleStore};
///
/// let backend = SqliteConfig::new(pool).build()?;
/// backend.migrate().await?;
/// let store = SqliteThrottleStore::new(&backend);
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteThrottleStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    timeout: Duration,
    table: String,
    /// `[n - 1]`: the statements for `n` distinct counters.
    prepared: Vec<Sql>,
    purge: SqlStr,
    purger: Arc<Purger>,
}

impl fmt::Debug for SqliteThrottleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` never shows its connect options.
        f.debug_struct("SqliteThrottleStore")
            .field("pool", &self.inner.pool)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// The statements for one number of distinct counters.
#[derive(Clone)]
struct Sql {
    check: SqlStr,
    record: SqlStr,
    reset: SqlStr,
}

impl Sql {
    /// `n` distinct counters, bound as (digest, scope) pairs from `?first`.
    fn new(t: &str, n: usize) -> Self {
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        let pairs = |first: usize| {
            (0..n)
                .map(|i| format!("(?{}, ?{})", first + 2 * i, first + 2 * i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let digests = (0..n)
            .map(|i| format!("?{}", 1 + 2 * i))
            .collect::<Vec<_>>()
            .join(", ");
        // ?1 now, ?2 forget_after (ms), ?3 now + forget_after, then the
        // pairs. Unqualified columns in the update read the row before it.
        let values = (0..n)
            .map(|i| format!("(?{}, ?{}, 1, ?1, ?3)", 4 + 2 * i, 5 + 2 * i))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            // The scopes are bound too (as ?2, ?4...), and matched by the
            // caller: rows of another scope with the same digest are left
            // out there.
            check: sql(format!(
                "SELECT {COLUMNS} FROM {t} WHERE key_digest IN ({digests}) \
                 AND (key_digest, scope) IN (VALUES {})",
                pairs(1)
            )),
            record: sql(format!(
                "INSERT INTO {t} (key_digest, scope, failures, last_failure, expires_at) \
                 VALUES {values} \
                 ON CONFLICT (key_digest, scope) DO UPDATE SET \
                 failures = CASE WHEN last_failure <= ?1 - ?2 THEN 1 \
                 ELSE min(failures + 1, 4294967295) END, \
                 last_failure = ?1, expires_at = ?3 \
                 RETURNING {COLUMNS}"
            )),
            reset: sql(format!(
                "DELETE FROM {t} WHERE (key_digest, scope) IN (VALUES {})",
                pairs(1)
            )),
        }
    }
}

impl SqliteThrottleStore {
    /// A store on `backend`'s pool, names, timeout and purge schedule.
    #[must_use]
    pub fn new(backend: &SqliteBackend) -> Self {
        let table = backend.names().table(TABLE);
        Self {
            inner: Arc::new(Inner {
                pool: backend.pool().clone(),
                timeout: backend.timeout(),
                prepared: (1..=PREPARED).map(|n| Sql::new(&table, n)).collect(),
                // By rowid, from the expiry index: each batch is a short write.
                purge: AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} \
                     WHERE expires_at <= ?1 LIMIT ?2)"
                ))
                .into_sql_str(),
                table,
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
    /// The statements for `n` distinct counters.
    fn sql(&self, n: usize) -> std::borrow::Cow<'_, Sql> {
        match self.prepared.get(n.wrapping_sub(1)) {
            Some(sql) => std::borrow::Cow::Borrowed(sql),
            None => std::borrow::Cow::Owned(Sql::new(&self.table, n)),
        }
    }

    /// Deletes up to `n` counters expired at `now`; returns how many.
    async fn purge_batch(&self, now: Timestamp, n: u32) -> Result<u64, StoreError> {
        bounded(self.timeout, async {
            let done = sqlx::query(self.purge.clone())
                .bind(ms(now))
                .bind(i64::from(n))
                .execute(&self.pool)
                .await
                .store()?;
            Ok(done.rows_affected())
        })
        .await
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;
type QueryAs<'q> = sqlx::query::QueryAs<'q, sqlx::Sqlite, RawRow, sqlx::sqlite::SqliteArguments>;

#[async_trait]
impl ThrottleStore for SqliteThrottleStore {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = distinct_sorted(keys);
        let sql = self.inner.sql(rows.len());
        let mut q: QueryAs<'_> = sqlx::query_as(sql.check.clone());
        for (digest, scope) in &rows {
            q = q.bind(digest.to_vec()).bind(*scope);
        }
        let found: Vec<RawRow> = bounded(self.inner.timeout, async {
            q.fetch_all(&self.inner.pool).await.store()
        })
        .await?;
        assemble(keys, found, Some((now, forget_after)))
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
        let rows = distinct_sorted(keys);
        let sql = self.inner.sql(rows.len());
        let (now_ms, forget) = (ms(now), forget_ms(forget_after));
        let mut q: QueryAs<'_> = sqlx::query_as(sql.record.clone())
            .bind(now_ms)
            .bind(forget)
            .bind(now_ms.saturating_add(forget));
        for (digest, scope) in &rows {
            q = q.bind(digest.to_vec()).bind(*scope);
        }
        let written: Vec<RawRow> = bounded(self.inner.timeout, async {
            q.fetch_all(&self.inner.pool).await.store()
        })
        .await?;
        self.purge_in_background(now);
        assemble(keys, written, None)
    }

    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows = distinct_sorted(keys);
        let sql = self.inner.sql(rows.len());
        let mut q: Query<'_> = sqlx::query(sql.reset.clone());
        for (digest, scope) in &rows {
            q = q.bind(digest.to_vec()).bind(*scope);
        }
        bounded(self.inner.timeout, async {
            q.execute(&self.inner.pool).await.store()
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Names;

    #[test]
    fn statements_name_the_configured_table_and_number_their_binds() {
        let backend_names = Names::new(None, "pc_").unwrap();
        let t = backend_names.table(TABLE);
        let sql = Sql::new(&t, 3);
        for s in [&sql.check, &sql.record, &sql.reset] {
            assert!(
                s.as_str().contains("\"pc_throttle_counters\""),
                "{}",
                s.as_str()
            );
        }
        assert!(sql.record.as_str().contains("(?8, ?9, 1, ?1, ?3)"));
        assert!(sql.reset.as_str().contains("(?5, ?6)"));
        assert!(!sql.check.as_str().contains("?7"));
    }
}
