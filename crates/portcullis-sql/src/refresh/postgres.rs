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
                 idle_deadline, absolute_deadline, claims, device, clock_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
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
    /// Deletes up to `n` families ended at `now` and `grace` before the
    /// database's clock; returns how many.
    async fn purge_batch(
        &self,
        now: Timestamp,
        grace: Duration,
        n: u32,
    ) -> Result<u64, StoreError> {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        bounded(self.timeout, async {
            let done = sqlx::query(self.sql.purge.clone())
                .bind(ms(now))
                .bind(grace)
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

fn bind_insert<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    row: &'q NewRow,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(&row.key[..])
        .bind(row.id.as_str())
        .bind(&row.user_key[..])
        .bind(&row.user_id[..])
        .bind(&row.current[..])
        .bind(row.previous.as_ref().map(|p| &p[..]))
        .bind(row.previous_at)
        .bind(row.history.as_str())
        .bind(row.rotations)
        .bind(row.created_at)
        .bind(row.last_used_at)
        .bind(row.idle)
        .bind(row.absolute)
        .bind(row.claims.as_str())
        .bind(row.device.as_str())
}

/// A rotation's statements on one pooled connection.
struct Conn<'a> {
    conn: PoolConnection<Postgres>,
    sql: &'a Sql,
}

#[async_trait]
impl RotationRows for Conn<'_> {
    async fn swap(&mut self, s: &Swap) -> Result<Option<RawRow>, StoreError> {
        sqlx::query_as(self.sql.swap.clone())
            .bind(&s.key[..])
            .bind(&s.presented[..])
            .bind(&s.successor[..])
            .bind(s.keep)
            .bind(s.now)
            .bind(s.idle)
            .bind(s.device.as_deref())
            .fetch_optional(&mut *self.conn)
            .await
            .store()
    }

    async fn read(&mut self, key: &[u8; 32]) -> Result<Option<(RawRow, bool)>, StoreError> {
        let row: Option<ReadRow> = sqlx::query_as(self.sql.read.clone())
            .bind(&key[..])
            .fetch_optional(&mut *self.conn)
            .await
            .store()?;
        Ok(row.map(split))
    }

    async fn mark_reused(
        &mut self,
        key: &[u8; 32],
        rotations: i64,
        current: &[u8; 32],
        now: i64,
    ) -> Result<Option<RawRow>, StoreError> {
        sqlx::query_as(self.sql.mark_reused.clone())
            .bind(&key[..])
            .bind(rotations)
            .bind(&current[..])
            .bind(now)
            .fetch_optional(&mut *self.conn)
            .await
            .store()
    }

    async fn delete_ended(&mut self, key: &[u8; 32], now: i64) -> Result<(), StoreError> {
        sqlx::query(self.sql.delete_ended.clone())
            .bind(&key[..])
            .bind(now)
            .execute(&mut *self.conn)
            .await
            .store()
            .map(drop)
    }
}

#[async_trait]
impl RefreshStore for PgRefreshStore {
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        let row = NewRow::of(family)?;
        let inner = &self.inner;
        let result = bounded(inner.timeout, async {
            match max_per_user {
                None => inner.insert(&row).await.map(|()| Vec::new()),
                Some(max) => inner.insert_capped(&row, family.created_at, max).await,
            }
        })
        .await;
        self.purge_in_background();
        result
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let inner = &self.inner;
        let result = bounded(inner.timeout, async {
            let conn = inner.pool.acquire().await.store()?;
            let mut rows = Conn {
                conn,
                sql: &inner.sql,
            };
            super::rotate(&mut rows, r).await
        })
        .await;
        self.purge_in_background();
        result
    }

    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        let inner = &self.inner;
        bounded(inner.timeout, async {
            let row: Option<RawRow> = sqlx::query_as(inner.sql.get.clone())
                .bind(&family_key(id)[..])
                .bind(ms(now))
                .fetch_optional(&inner.pool)
                .await
                .store()?;
            Ok(row.map(decode).transpose()?)
        })
        .await
    }

    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        let inner = &self.inner;
        bounded(inner.timeout, async {
            let row: Option<RawRow> = sqlx::query_as(inner.sql.revoke.clone())
                .bind(&family_key(id)[..])
                .fetch_optional(&inner.pool)
                .await
                .store()?;
            Ok(decode_all(row.into_iter().collect()).pop())
        })
        .await
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        let inner = &self.inner;
        bounded(inner.timeout, async {
            let rows: Vec<RawRow> = sqlx::query_as(inner.sql.revoke_user.clone())
                .bind(&user_key(user_id)[..])
                .bind(user_id.as_bytes())
                .bind(except.map(|id| family_key(id).to_vec()))
                .fetch_all(&inner.pool)
                .await
                .store()?;
            Ok(decode_all(rows))
        })
        .await
    }

    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        let inner = &self.inner;
        bounded(inner.timeout, async {
            let rows: Vec<RawRow> = sqlx::query_as(inner.sql.list_user.clone())
                .bind(&user_key(user_id)[..])
                .bind(user_id.as_bytes())
                .bind(ms(now))
                .fetch_all(&inner.pool)
                .await
                .store()?;
            Ok(decode_all(rows))
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let inner = &self.inner;
        inner
            .purger
            .run(|n| inner.purge_batch(now, Duration::ZERO, n))
            .await
    }
}

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
