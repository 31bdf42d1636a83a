//! [`PgRefreshStore`]: refresh families in PostgreSQL.

use crate::pg::DB_NOW_MS;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp};
use portcullis_refresh::{Family, FamilyId, RefreshStore, RotateOutcome, Rotation};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr as _, SqlStr};

use super::{
    COLUMNS, EXPIRY_GRACE, LOCK_CLASS, NewRow, READ_COLUMNS, RawRow, ReadRow, RotationRows, Swap,
    TABLE, decode, decode_all, family_key, ms, split, user_key, victims,
};
use crate::PgBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::names::Names;
use crate::purge::Purger;

/// A [`RefreshStore`] on PostgreSQL: one row per family, rotation as one
/// compare-and-swap `UPDATE`, the per-user cap in one transaction under an
/// advisory lock on the user.
///
/// Cheap to clone (clones share the statements and the purge schedule).
/// Instances sharing the table must share the refresher's rotation key
/// (`RefreshConfig::rotation_key`): a repeat inside the grace window on
/// another instance must derive the same successor.
///
#[doc = include_str!("docs.md")]
#[derive(Clone)]
pub struct PgRefreshStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    timeout: Duration,
    sql: Sql,
    purger: Arc<Purger>,
    clock: SharedClock,
}

impl fmt::Debug for PgRefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` never shows its connect options.
        f.debug_struct("PgRefreshStore")
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
    lock_user: SqlStr,
    evict: SqlStr,
    purge: SqlStr,
}

impl Sql {
    fn new(names: &Names) -> Self {
        let t = names.table(TABLE);
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        let grace = EXPIRY_GRACE.as_millis();
        // A row is served only until its end, moved to the database's
        // clock by the offset its last writer left, plus the grace, so an
        // instance whose clock was set back cannot serve a family that
        // ended long ago. (Written so that no stored value can overflow
        // it: `expires_at - clock_offset` could.)
        let served = format!("expires_at > {DB_NOW_MS} - {grace} + clock_offset");
        Self {
            insert: sql(format!(
                "INSERT INTO {t} (family_digest, family_id, user_digest, user_id, current_digest, \
                 previous_digest, previous_at, history, rotations, created_at, last_used_at, \
                 idle_deadline, absolute_deadline, claims, device, dpop_jkt, clock_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $11 - {DB_NOW_MS}) \
                 ON CONFLICT (family_digest) DO NOTHING"
            )),
            // `Family::rotate` in SQL (the right-hand sides read the row
            // before the update): the previous digest joins the history,
            // which keeps its newest $4 characters (64 per digest).
            swap: sql(format!(
                "UPDATE {t} SET \
                 history = CASE WHEN previous_digest IS NULL THEN history \
                 ELSE right(history || encode(previous_digest, 'hex'), $4) END, \
                 previous_digest = current_digest, previous_at = $5, current_digest = $3, \
                 last_used_at = $5, idle_deadline = LEAST($6, absolute_deadline), \
                 rotations = rotations + 1, device = COALESCE($7, device), \
                 clock_offset = $5 - {DB_NOW_MS} \
                 WHERE family_digest = $1 AND current_digest = $2 AND expires_at > $5 \
                 AND {served} AND reused_at IS NULL RETURNING {COLUMNS}"
            )),
            // A family the database's clock has put past its end (and the
            // grace) reads as absent: `Invalid`, never classified.
            read: sql(format!(
                "SELECT {READ_COLUMNS} FROM {t} WHERE family_digest = $1 AND {served}"
            )),
            get: sql(format!(
                "SELECT {COLUMNS} FROM {t} WHERE family_digest = $1 AND expires_at > $2 \
                 AND {served} AND reused_at IS NULL"
            )),
            mark_reused: sql(format!(
                "UPDATE {t} SET reused_at = $4 WHERE family_digest = $1 AND rotations = $2 \
                 AND current_digest = $3 AND reused_at IS NULL RETURNING {COLUMNS}"
            )),
            delete_ended: sql(format!(
                "DELETE FROM {t} WHERE family_digest = $1 AND expires_at <= $2"
            )),
            revoke: sql(format!(
                "DELETE FROM {t} WHERE family_digest = $1 AND reused_at IS NULL \
                 RETURNING {COLUMNS}"
            )),
            revoke_user: sql(format!(
                "DELETE FROM {t} WHERE user_digest = $1 AND user_id = $2 \
                 AND family_digest IS DISTINCT FROM $3 AND reused_at IS NULL \
                 RETURNING {COLUMNS}"
            )),
            list_user: sql(format!(
                "SELECT {COLUMNS} FROM {t} WHERE user_digest = $1 AND user_id = $2 \
                 AND expires_at > $3 AND {served} AND reused_at IS NULL ORDER BY created_at"
            )),
            lock_user: sql("SELECT pg_advisory_xact_lock($1, $2)".to_owned()),
            evict: sql(format!(
                "DELETE FROM {t} WHERE family_digest = ANY($1) AND user_digest = $2 \
                 RETURNING {COLUMNS}"
            )),
            // `ctid = ANY (ARRAY(...))`: a TID scan of the rows the index
            // found; `IN (SELECT ...)` would scan the table. `$1` is the
            // caller's cut-off, `$2` the database's clock's allowance: the
            // earlier of the two clocks decides, so an instance whose clock
            // jumped ahead deletes nothing another one still serves.
            purge: sql(format!(
                "DELETE FROM {t} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {t} \
                 WHERE expires_at <= LEAST($1, {DB_NOW_MS} - $2) \
                 LIMIT $3 FOR UPDATE SKIP LOCKED))"
            )),
        }
    }
}

/// The lock key of a user: the first four bytes of the user's digest.
fn lock_key(user_key: &[u8; 32]) -> i32 {
    i32::from_be_bytes([user_key[0], user_key[1], user_key[2], user_key[3]])
}

impl PgRefreshStore {
    /// A store on `backend`'s pool and names, judging the background
    /// purge by the system clock (every other call takes its time from
    /// the caller).
    #[must_use]
    pub fn new(backend: &PgBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// A store whose background purge reads `clock` (the refresher's).
    #[must_use]
    pub fn with_clock(backend: &PgBackend, clock: SharedClock) -> Self {
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
                inner.purge_batch(before, EXPIRY_GRACE, n).await
            }
        });
    }
}

impl Inner {
    /// Every ended family, in batches (`RefreshStore::purge_expired`).
    async fn purge_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.purger
            .run(|n| self.purge_batch(now, Duration::ZERO, n))
            .await
    }

    /// Deletes up to `n` families ended at `now` and `grace` before the
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

    /// The insert under the cap: one transaction holding the user's lock.
    async fn insert_capped(
        &self,
        row: &NewRow,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<Family>, StoreError> {
        let mut tx = self.pool.begin().await.store()?;
        sqlx::query(self.sql.lock_user.clone())
            .bind(LOCK_CLASS)
            .bind(lock_key(&row.user_key))
            .execute(&mut *tx)
            .await
            .store()?;
        // After the lock, in a statement of its own: READ COMMITTED takes
        // its snapshot per statement, so this sees every family committed
        // by the logins that held the lock before.
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
        let doomed: Vec<Vec<u8>> = victims(decode_all(live), max)
            .iter()
            .map(|f| family_key(&f.id).to_vec())
            .collect();
        let evicted = if doomed.is_empty() {
            Vec::new()
        } else {
            let rows: Vec<RawRow> = sqlx::query_as(self.sql.evict.clone())
                .bind(doomed)
                .bind(&row.user_key[..])
                .fetch_all(&mut *tx)
                .await
                .store()?;
            decode_all(rows)
        };
        tx.commit().await.store()?;
        Ok(evicted)
    }
}

refresh_store_code!(PgRefreshStore, Postgres, sqlx::postgres::PgArguments);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_configured_table() {
        let sql = Sql::new(&Names::new(Some("auth"), "pc_").unwrap());
        for s in [&sql.insert, &sql.swap, &sql.read, &sql.purge, &sql.evict] {
            assert!(
                s.as_str().contains("\"auth\".\"pc_refresh_families\""),
                "{}",
                s.as_str()
            );
        }
        assert_eq!(lock_key(&[0x80; 32]), i32::from_be_bytes([0x80; 4]));
    }
}
