//! [`SqliteRefreshStore`]: refresh families in SQLite.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp};
use portcullis_refresh::{Family, FamilyId, RefreshStore, RotateOutcome, Rotation};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr, Sqlite, SqlitePool};

use super::{
    COLUMNS, EXPIRY_GRACE, NewRow, READ_COLUMNS, RawRow, ReadRow, RotationRows, Swap, TABLE,
    decode, decode_all, family_key, ms, split, user_key, victims,
};
use crate::SqliteBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::names::Names;
use crate::purge::Purger;

/// A [`RefreshStore`] on SQLite: one row per family, rotation as one
/// compare-and-swap `UPDATE`, the per-user cap in one transaction that
/// takes the database's write lock first (`BEGIN IMMEDIATE`).
///
/// Cheap to clone (clones share the statements and the purge schedule).
/// A SQLite file serves the processes of one host; processes sharing it
/// must share the refresher's rotation key (`RefreshConfig::rotation_key`):
/// a repeat inside the grace window in another process must derive the
/// same successor.
///
#[doc = include_str!("docs.md")]
#[derive(Clone)]
pub struct SqliteRefreshStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    timeout: Duration,
    sql: Sql,
    purger: Arc<Purger>,
    clock: SharedClock,
}

impl fmt::Debug for SqliteRefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` never shows its connect options.
        f.debug_struct("SqliteRefreshStore")
            .field("pool", &self.inner.pool)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Every statement of the store, rendered once with the backend's names.
struct Sql {
    insert: SqlStr,
    swap: SqlStr,
    read: SqlStr,
    get: SqlStr,
    mark_reused: SqlStr,
    delete_ended: SqlStr,
    revoke: SqlStr,
    revoke_user: SqlStr,
    list_user: SqlStr,
    evict: SqlStr,
    purge: SqlStr,
}

impl Sql {
    fn new(names: &Names) -> Self {
        let t = names.table(TABLE);
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        Self {
            insert: sql(format!(
                "INSERT INTO {t} (family_digest, family_id, user_digest, user_id, current_digest, \
                 previous_digest, previous_at, history, rotations, created_at, last_used_at, \
                 idle_deadline, absolute_deadline, claims, device, dpop_jkt) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT (family_digest) DO NOTHING"
            )),
            // `Family::rotate` in SQL (the right-hand sides read the row
            // before the update): the previous digest joins the history,
            // which keeps its newest ?4 characters (64 per digest).
            swap: sql(format!(
                "UPDATE {t} SET \
                 history = CASE WHEN previous_digest IS NULL THEN history \
                 ELSE substr(history || lower(hex(previous_digest)), \
                 max(1, length(history) + 65 - ?4)) END, \
                 previous_digest = current_digest, previous_at = ?5, current_digest = ?3, \
                 last_used_at = ?5, idle_deadline = min(?6, absolute_deadline), \
                 rotations = rotations + 1, device = coalesce(?7, device) \
                 WHERE family_digest = ?1 AND current_digest = ?2 AND expires_at > ?5 \
                 AND reused_at IS NULL RETURNING {COLUMNS}"
            )),
            read: sql(format!(
                "SELECT {READ_COLUMNS} FROM {t} WHERE family_digest = ?1"
            )),
            get: sql(format!(
                "SELECT {COLUMNS} FROM {t} WHERE family_digest = ?1 AND expires_at > ?2 \
                 AND reused_at IS NULL"
            )),
            mark_reused: sql(format!(
                "UPDATE {t} SET reused_at = ?4 WHERE family_digest = ?1 AND rotations = ?2 \
                 AND current_digest = ?3 AND reused_at IS NULL RETURNING {COLUMNS}"
            )),
            delete_ended: sql(format!(
                "DELETE FROM {t} WHERE family_digest = ?1 AND expires_at <= ?2"
            )),
            revoke: sql(format!(
                "DELETE FROM {t} WHERE family_digest = ?1 AND reused_at IS NULL \
                 RETURNING {COLUMNS}"
            )),
            revoke_user: sql(format!(
                "DELETE FROM {t} WHERE user_digest = ?1 AND user_id = ?2 \
                 AND family_digest IS NOT ?3 AND reused_at IS NULL RETURNING {COLUMNS}"
            )),
            list_user: sql(format!(
                "SELECT {COLUMNS} FROM {t} WHERE user_digest = ?1 AND user_id = ?2 \
                 AND expires_at > ?3 AND reused_at IS NULL ORDER BY created_at"
            )),
            evict: sql(format!(
                "DELETE FROM {t} WHERE family_digest = ?1 AND user_digest = ?2 \
                 RETURNING {COLUMNS}"
            )),
            // By rowid, from the expiry index: each batch is a short write.
            purge: sql(format!(
                "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} \
                 WHERE expires_at <= ?1 LIMIT ?2)"
            )),
        }
    }
}

impl SqliteRefreshStore {
    /// A store on `backend`'s pool and names, judging the background
    /// purge by the system clock (every other call takes its time from
    /// the caller).
    #[must_use]
    pub fn new(backend: &SqliteBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// A store whose background purge reads `clock` (the refresher's).
    #[must_use]
    pub fn with_clock(backend: &SqliteBackend, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: backend.pool().clone(),
                timeout: backend.timeout(),
                sql: Sql::new(backend.names()),
                purger: Purger::new(backend.purge_config()),
                clock,
            }),
        }
    }

    /// Starts a background purge when one is due.
    fn purge_in_background(&self) {
        let inner = Arc::clone(&self.inner);
        self.inner.purger.maybe_start(move |n| {
            let inner = Arc::clone(&inner);
            async move {
                let before = inner.clock.now() - EXPIRY_GRACE;
                inner.purge_batch(before, n).await
            }
        });
    }
}

impl Inner {
    /// Every ended family, in batches (`RefreshStore::purge_expired`).
    async fn purge_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.purger.run(|n| self.purge_batch(now, n)).await
    }

    /// Deletes up to `n` families ended at `now`; returns how many.
    async fn purge_batch(&self, now: Timestamp, n: u32) -> Result<u64, StoreError> {
        bounded(self.timeout, async {
            let done = sqlx::query(self.sql.purge.clone())
                .bind(ms(now))
                .bind(i64::from(n))
                .execute(&self.pool)
                .await
                .store()?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn insert(&self, row: &NewRow) -> Result<(), StoreError> {
        let done = bind_insert(sqlx::query(self.sql.insert.clone()), row)
            .execute(&self.pool)
            .await
            .store()?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::conflict())
        }
    }

    /// The insert under the cap: one transaction that takes the write
    /// lock first, so that the user's families cannot change meanwhile.
    async fn insert_capped(
        &self,
        row: &NewRow,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<Family>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.store()?;
        let live: Vec<RawRow> = sqlx::query_as(self.sql.list_user.clone())
            .bind(&row.user_key[..])
            .bind(&row.user_id[..])
            .bind(ms(now))
            .fetch_all(&mut *tx)
            .await
            .store()?;
        let done = bind_insert(sqlx::query(self.sql.insert.clone()), row)
            .execute(&mut *tx)
            .await
            .store()?;
        if done.rows_affected() != 1 {
            return Err(StoreError::conflict());
        }
        let mut evicted = Vec::new();
        for victim in victims(decode_all(live), max) {
            let gone: Option<RawRow> = sqlx::query_as(self.sql.evict.clone())
                .bind(&family_key(&victim.id)[..])
                .bind(&row.user_key[..])
                .fetch_optional(&mut *tx)
                .await
                .store()?;
            evicted.extend(decode_all(gone.into_iter().collect()));
        }
        tx.commit().await.store()?;
        Ok(evicted)
    }
}

refresh_store_code!(SqliteRefreshStore, Sqlite, sqlx::sqlite::SqliteArguments);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_configured_table() {
        let sql = Sql::new(&Names::new(None, "pc_").unwrap());
        for s in [&sql.insert, &sql.swap, &sql.read, &sql.purge, &sql.evict] {
            assert!(
                s.as_str().contains("\"pc_refresh_families\""),
                "{}",
                s.as_str()
            );
        }
    }
}
