//! `SqliteSessionStore`: sessions in a SQLite file, durable on one node.
//! (About 510 lines before the tests, a third of them docs: the statements
//! and the `BEGIN IMMEDIATE` capped login are one contract; the codec
//! shared with PostgreSQL is in `mod.rs`.)

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp, TokenDigest};
use portcullis_session::{
    CreateOutcome, SessionCap, SessionRecord, SessionStore, SessionUpdate, eviction_victims,
};
use sqlx::{SqlStr, Sqlite, SqlitePool};

use super::{
    Bound, COLUMNS, Row, decode_row, digest, listed, ms, purge_before, statement, timestamp,
    update_patch, user_digest,
};
use crate::error::{SqlResultExt as _, bounded};
use crate::purge::Purger;
use crate::sqlite::SqliteBackend;

/// A [`SessionStore`] in a SQLite database.
///
/// ```no_run
/// use portcullis_session::{SessionConfig, SessionLayer};
/// use portcullis_sql::{SqliteConfig, SqliteSessionStore};
/// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let options = SqliteConnectOptions::new()
///     .filename("auth.db")
///     .create_if_missing(true)
///     .journal_mode(SqliteJournalMode::Wal);
/// let backend = SqliteConfig::new(SqlitePool::connect_with(options).await?).build()?;
/// backend.migrate().await?;
/// let layer = SessionLayer::new(SqliteSessionStore::new(&backend), SessionConfig::default())?;
/// # let _ = layer;
/// # Ok(()) }
/// ```
///
/// Sessions survive a restart; every process that opens the same file
/// sees the same sessions. The schema and the data encoding are described
/// on [`PgSessionStore`](crate::PgSessionStore#schema) (here in SQLite's
/// types, and an update applies an RFC 7396 patch with `json_patch`). Use WAL mode
/// (`journal_mode(Wal)`): loads then never wait for a writer.
///
/// # Statements per operation
///
/// The same statements as [`PgSessionStore`](crate::PgSessionStore#statements-per-operation)'s,
/// run in-process (no round trips), except that the cap needs no lock
/// statement:
///
/// | operation | statements |
/// |---|---|
/// | `load` | **1**: a `SELECT` by primary key, no transaction |
/// | `update`, `touch` | 1: one `UPDATE` (key-level through `json_patch`, update-only) |
/// | `delete` | 1: `DELETE ... RETURNING` |
/// | `create` without a cap | 1: `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired` |
/// | `create` with a cap | 4: `BEGIN IMMEDIATE`, the user's live sessions, `INSERT`, `COMMIT`; +1 `DELETE` per evicted session; 3 when it refuses (`ROLLBACK` instead of the insert and commit) |
/// | `list_for_user`, `count_for_user`, `delete_for_user` | 1 each, on the user index |
///
/// # The cap
///
/// A login with a cap is one `BEGIN IMMEDIATE` transaction: it takes the
/// database's write lock before it counts, so racing logins take turns
/// and never end above the cap. SQLite has one writer at a time anyway;
/// the lock is held for the count and the insert only.
///
/// # Expired rows
///
/// Expiry is judged by the store's clock, so an expired row is never
/// returned, changed or counted. Rows are deleted 60 s past their end, in
/// batches (each its own short write transaction, so a purge of many rows
/// never holds the write lock for long), by a purge that a write starts at
/// most once per [`PurgeConfig::every`](crate::PurgeConfig::every), or by
/// [`purge_expired`](Self::purge_expired).
///
/// A SQLite file serves the processes of one host, which share the host's
/// clock with the file: there is no second clock to bound the first by,
/// so unlike `PgSessionStore` this store neither
/// takes the earlier of two clocks for its purge nor bounds what it
/// serves by the database's clock. A host clock set back serves what it
/// says is live; one jumped ahead purges what it says ended.
///
/// # Errors
///
/// Every call is bounded by the backend's timeout
/// ([`StoreError::timeout`]): a writer waiting on a locked database
/// (another process's transaction) gives up there, before the
/// connection's `busy_timeout` (sqlx: 5 s). `SQLITE_BUSY`,
/// `SQLITE_LOCKED`, `SQLITE_READONLY` and every other database error are
/// [`StoreError::backend`]. Both are answered 503 by the layers.
#[derive(Clone)]
pub struct SqliteSessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: SqliteBackend,
    clock: SharedClock,
    sql: Statements,
    purger: Arc<Purger>,
}

/// Every statement, rendered once.
struct Statements {
    load: SqlStr,
    insert: SqlStr,
    update: SqlStr,
    touch: SqlStr,
    delete: SqlStr,
    live_for_cap: SqlStr,
    evict: SqlStr,
    list: SqlStr,
    count: SqlStr,
    delete_for_user: SqlStr,
    purge: SqlStr,
}

impl Statements {
    fn new(names: &crate::names::Names) -> Self {
        let columns = COLUMNS.replace("{data}", "data");
        let live = |now: &str| format!("idle_deadline > {now} AND absolute_deadline > {now}");
        let s = |template: &str| statement(names, template);
        Self {
            load: s(&format!(
                "SELECT {columns} FROM {{table:sessions}} WHERE id_digest = ?1 AND {}",
                live("?2")
            )),
            insert: s("INSERT INTO {table:sessions} \
                 (id_digest, user_digest, user_id, created_at, last_seen, idle_deadline, \
                  absolute_deadline, metadata, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (id_digest) DO UPDATE SET \
                 user_digest = excluded.user_digest, user_id = excluded.user_id, \
                 created_at = excluded.created_at, last_seen = excluded.last_seen, \
                 idle_deadline = excluded.idle_deadline, \
                 absolute_deadline = excluded.absolute_deadline, \
                 metadata = excluded.metadata, data = excluded.data \
                 WHERE {table:sessions}.expires_at <= ?10 \
                 RETURNING 1"),
            // One statement holds the write lock throughout: the patch is
            // applied to the row as it is now.
            update: s(&format!(
                "UPDATE {{table:sessions}} SET data = json_patch(data, ?2), \
                 last_seen = max(last_seen, ?3), \
                 idle_deadline = max(idle_deadline, min(?4, absolute_deadline)) \
                 WHERE id_digest = ?1 AND {}",
                live("?5")
            )),
            touch: s(&format!(
                "UPDATE {{table:sessions}} SET last_seen = max(last_seen, ?2), \
                 idle_deadline = max(idle_deadline, min(?3, absolute_deadline)) \
                 WHERE id_digest = ?1 AND {}",
                live("?4")
            )),
            delete: s(&format!(
                "DELETE FROM {{table:sessions}} WHERE id_digest = ?1 RETURNING ({})",
                live("?2")
            )),
            live_for_cap: s(&format!(
                "SELECT id_digest, created_at FROM {{table:sessions}} \
                 WHERE user_digest = ?1 AND user_id = ?2 AND {} AND id_digest IS NOT ?4",
                live("?3")
            )),
            evict: s("DELETE FROM {table:sessions} WHERE id_digest = ?1 AND user_digest = ?2"),
            list: s(&format!(
                "SELECT id_digest, {columns} FROM {{table:sessions}} \
                 WHERE user_digest = ?1 AND user_id = ?2 AND {}",
                live("?3")
            )),
            count: s(&format!(
                "SELECT count(*) FROM {{table:sessions}} \
                 WHERE user_digest = ?1 AND user_id = ?2 AND {}",
                live("?3")
            )),
            delete_for_user: s(&format!(
                "DELETE FROM {{table:sessions}} \
                 WHERE user_digest = ?1 AND user_id = ?2 AND id_digest IS NOT ?3 \
                 RETURNING ({})",
                live("?4")
            )),
            purge: s("DELETE FROM {table:sessions} WHERE rowid IN (\
                 SELECT rowid FROM {table:sessions} WHERE expires_at < ?1 LIMIT ?2)"),
        }
    }
}

impl fmt::Debug for SqliteSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSessionStore")
            .field("backend", &self.inner.backend)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl SqliteSessionStore {
    /// A store on `backend`, judging expiry by the system clock.
    #[must_use]
    pub fn new(backend: &SqliteBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// A store on `backend` judging expiry by `clock` (give it the layer's
    /// clock).
    #[must_use]
    pub fn with_clock(backend: &SqliteBackend, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                sql: Statements::new(backend.names()),
                purger: Purger::new(backend.purge_config()),
                backend: backend.clone(),
                clock,
            }),
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &SqliteBackend {
        &self.inner.backend
    }

    /// Deletes every row that ended more than 60 s ago, now, in batches of [`PurgeConfig::batch`](crate::PurgeConfig)
    /// rows (each its own short write transaction, each bounded by the
    /// timeout); returns how many went.
    ///
    /// # Errors
    ///
    /// A batch failed or timed out (the batches before it stay deleted).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let inner = &self.inner;
        inner.purger.run(|n| inner.purge_batch(n)).await
    }

    /// Starts a background purge when one is due.
    fn maybe_purge(&self) {
        let inner = Arc::clone(&self.inner);
        self.inner.purger.maybe_start(move |n| {
            let inner = Arc::clone(&inner);
            async move { inner.purge_batch(n).await }
        });
    }
}

impl Inner {
    fn pool(&self) -> &SqlitePool {
        self.backend.pool()
    }

    async fn purge_batch(&self, n: u32) -> Result<u64, StoreError> {
        let before = purge_before(self.clock.now());
        bounded(self.backend.timeout(), async {
            let done = sqlx::query(self.sql.purge.clone())
                .bind(before)
                .bind(i64::from(n))
                .execute(self.pool())
                .await
                .store()?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// The insert (create-if-absent: a live holder of the key is kept);
    /// whether it stored the record.
    async fn insert<'c, E>(
        &self,
        executor: E,
        key: &TokenDigest,
        row: &Bound,
        now: Timestamp,
    ) -> Result<bool, StoreError>
    where
        E: sqlx::Executor<'c, Database = Sqlite>,
    {
        let stored: Option<i64> = sqlx::query_scalar(self.sql.insert.clone())
            .bind(&key.as_bytes()[..])
            .bind(row.user_digest.as_deref())
            .bind(row.user_id.as_deref())
            .bind(row.created_at)
            .bind(row.last_seen)
            .bind(row.idle_deadline)
            .bind(row.absolute_deadline)
            .bind(&row.metadata)
            .bind(&row.data)
            .bind(ms(now))
            .fetch_optional(executor)
            .await
            .store()?;
        Ok(stored.is_some())
    }

    /// A login under a cap: one `BEGIN IMMEDIATE` transaction.
    async fn create_capped(
        &self,
        key: &TokenDigest,
        row: &Bound,
        user: &str,
        cap: SessionCap,
        now: Timestamp,
    ) -> Result<CreateOutcome, StoreError> {
        let digest_of_user = user_digest(user);
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await.store()?;
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(self.sql.live_for_cap.clone())
            .bind(&digest_of_user.as_bytes()[..])
            .bind(user.as_bytes())
            .bind(ms(now))
            .bind(cap.replacing.as_ref().map(|r| &r.as_bytes()[..]))
            .fetch_all(&mut *tx)
            .await
            .store()?;
        let live = rows
            .into_iter()
            .map(|(id, created)| Ok((digest(&id)?, timestamp(created)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let Some(victims) = eviction_victims(live, &cap) else {
            tx.rollback().await.store()?;
            return Ok(CreateOutcome::LimitReached);
        };
        for victim in &victims {
            sqlx::query(self.sql.evict.clone())
                .bind(&victim.as_bytes()[..])
                .bind(&digest_of_user.as_bytes()[..])
                .execute(&mut *tx)
                .await
                .store()?;
        }
        if !self.insert(&mut *tx, key, row, now).await? {
            // A live session holds the key: nothing is evicted either.
            tx.rollback().await.store()?;
            return Err(StoreError::conflict());
        }
        tx.commit().await.store()?;
        Ok(CreateOutcome::Created { evicted: victims })
    }
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        let now = self.inner.clock.now();
        let row = Bound::of(record)?;
        let inner = &self.inner;
        let outcome = bounded(inner.backend.timeout(), async {
            match (cap, record.user_id.as_deref()) {
                (Some(cap), Some(user)) => inner.create_capped(key, &row, user, cap, now).await,
                _ => {
                    if inner.insert(inner.pool(), key, &row, now).await? {
                        Ok(CreateOutcome::Created {
                            evicted: Vec::new(),
                        })
                    } else {
                        Err(StoreError::conflict())
                    }
                }
            }
        })
        .await;
        self.maybe_purge();
        outcome
    }

    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        bounded(inner.backend.timeout(), async {
            let row: Option<Row> = sqlx::query_as(inner.sql.load.clone())
                .bind(&key.as_bytes()[..])
                .bind(ms(now))
                .fetch_optional(inner.pool())
                .await
                .store()?;
            row.map(decode_row).transpose()
        })
        .await
    }

    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        if !update.changes_data() {
            return self
                .touch(key, update.last_seen, update.idle_deadline)
                .await;
        }
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let done = bounded(inner.backend.timeout(), async {
            sqlx::query(inner.sql.update.clone())
                .bind(&key.as_bytes()[..])
                .bind(update_patch(update))
                .bind(ms(update.last_seen))
                .bind(ms(update.idle_deadline))
                .bind(ms(now))
                .execute(inner.pool())
                .await
                .store()
        })
        .await?;
        self.maybe_purge();
        // Update-only: an absent or expired row is left as it is.
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::not_found())
        }
    }

    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let done = bounded(inner.backend.timeout(), async {
            sqlx::query(inner.sql.touch.clone())
                .bind(&key.as_bytes()[..])
                .bind(ms(last_seen))
                .bind(ms(idle_deadline))
                .bind(ms(now))
                .execute(inner.pool())
                .await
                .store()
        })
        .await?;
        self.maybe_purge();
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::not_found())
        }
    }

    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let live: Option<i64> = bounded(inner.backend.timeout(), async {
            sqlx::query_scalar(inner.sql.delete.clone())
                .bind(&key.as_bytes()[..])
                .bind(ms(now))
                .fetch_optional(inner.pool())
                .await
                .store()
        })
        .await?;
        self.maybe_purge();
        Ok(live.is_some_and(|l| l != 0))
    }

    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        type Listed = (Vec<u8>, Option<Vec<u8>>, i64, i64, i64, i64, String, String);
        let rows: Vec<Listed> = bounded(inner.backend.timeout(), async {
            sqlx::query_as(inner.sql.list.clone())
                .bind(&user_digest(user_id).as_bytes()[..])
                .bind(user_id.as_bytes())
                .bind(ms(now))
                .fetch_all(inner.pool())
                .await
                .store()
        })
        .await?;
        Ok(listed(
            rows.into_iter()
                .map(|(id, u, c, l, i, a, m, d)| (id, (u, c, l, i, a, m, d)))
                .collect(),
        ))
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let gone: Vec<i64> = bounded(inner.backend.timeout(), async {
            sqlx::query_scalar(inner.sql.delete_for_user.clone())
                .bind(&user_digest(user_id).as_bytes()[..])
                .bind(user_id.as_bytes())
                .bind(except.map(|k| &k.as_bytes()[..]))
                .bind(ms(now))
                .fetch_all(inner.pool())
                .await
                .store()
        })
        .await?;
        self.maybe_purge();
        Ok(gone.iter().filter(|live| **live != 0).count() as u64)
    }

    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let count: i64 = bounded(inner.backend.timeout(), async {
            sqlx::query_scalar(inner.sql.count.clone())
                .bind(&user_digest(user_id).as_bytes()[..])
                .bind(user_id.as_bytes())
                .bind(ms(now))
                .fetch_one(inner.pool())
                .await
                .store()
        })
        .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }
}
