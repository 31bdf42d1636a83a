//! `PgSessionStore`: sessions in PostgreSQL, shared by every instance of an
//! application. (About 680 lines before the tests, a third of them docs:
//! the statements, the capped-login transaction and the rerun on a closed
//! connection are one contract; the codec shared with SQLite is in
//! `mod.rs`.)

use crate::direct::{DirectConnections, Lease};
use crate::error::store_error;
use crate::pg::DB_NOW_MS;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock, Timestamp, TokenDigest};
use portcullis_session::{
    CreateOutcome, SessionCap, SessionRecord, SessionStore, SessionUpdate, eviction_victims,
};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{PgPool, Postgres, SqlStr, Transaction};

use super::{
    Bound, COLUMNS, EXPIRY_GRACE, Row, decode_row, digest, listed, ms, purge_before,
    shared_load::{self, LoadQueue, Waiter},
    statement, timestamp, update_remove, update_set, user_digest,
};
use crate::error::{SqlResultExt as _, bounded};
use crate::pg::PgBackend;
use crate::purge::Purger;

/// A [`SessionStore`] on PostgreSQL.
///
/// ```no_run
/// use portcullis_session::{SessionConfig, SessionLayer};
/// use portcullis_sql::{PgConfig, PgSessionStore};
/// use sqlx::postgres::PgPoolOptions;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PgPoolOptions::new()
///     .test_before_acquire(false)
///     .connect("postgres://app@db.internal/app")
///     .await?;
/// let backend = PgConfig::new(pool).build()?;
/// backend.migrate().await?;
/// let layer = SessionLayer::new(PgSessionStore::new(&backend), SessionConfig::default())?;
/// # let _ = layer;
/// # Ok(()) }
/// ```
///
/// Every instance of an application on the same database and schema sees
/// the same sessions: a session created on one works on all, and a logout
/// on one is refused on the others at once (there is no cache).
///
/// # Schema
///
/// [`PgBackend::migrate`] creates one table, `sessions`
/// (`"portcullis"."sessions"` by default), one row per session:
///
/// | column | type | holds |
/// |---|---|---|
/// | `id_digest` | `bytea`, primary key | SHA-256 of the session id (never the id) |
/// | `user_digest` | `bytea` | SHA-256 of the user id; `NULL` for an anonymous session |
/// | `user_id` | `bytea` | the user id's UTF-8 bytes (a NUL or 10 KB of text are fine: it is never indexed) |
/// | `created_at`, `last_seen`, `idle_deadline`, `absolute_deadline` | `bigint` | the application clock's milliseconds since the Unix epoch |
/// | `expires_at` | `bigint`, generated | the earlier deadline |
/// | `metadata` | `text` | the user agent and address, as JSON |
/// | `data` | `jsonb` | an object: escaped key -> the value's JSON text, as a JSON string |
/// | `clock_offset` | `bigint` | the writing instance's clock minus the database's, in milliseconds, at the last write (see [Expired rows](#expired-rows)) |
///
/// and two indexes: `sessions_user (user_digest, created_at)` (partial:
/// users only), behind every per-user operation and the cap's eviction
/// order, each an index descent plus that user's rows; and
/// `sessions_expiry (expires_at)`, behind the purge. The SQLite table
/// ([`SqliteSessionStore`](crate::SqliteSessionStore)) is the same in
/// SQLite's types (`BLOB`, `INTEGER`, `TEXT`; `STRICT`).
///
/// Each data value is kept as its JSON text inside a JSON string
/// (`{"cart": "[1,2]"}`), as the Redis store keeps it: an update changes
/// single keys in the database (`(data - $remove) || $set`), so two
/// requests writing different keys both survive, and a value holding a
/// NUL character reaches `jsonb` as the six characters `\u0000` inside a
/// string, which it accepts. Keys are escaped so that none holds a
/// character JSON would escape: `%`, `"`, `\` and the control characters
/// become `%XX` (`%` itself `%25`, a NUL `%00`), so any key works and the
/// stored keys compare as plain text. Times past `i64::MAX` milliseconds
/// are stored as that.
///
/// With [`PgConfig::unlogged_sessions`](crate::PgConfig::unlogged_sessions)
/// the table is `UNLOGGED`: cheaper writes, but a crash or a fail-over
/// logs everyone out.
///
/// # Statements per operation
///
/// Measured with `pg_stat_statements` (the `sql_session` tests pin these
/// numbers):
///
/// | operation | statements |
/// |---|---|
/// | `load` (the one store call of an authenticated request) | **at most 1**: a `SELECT` by primary key, no transaction; under load, the loads waiting for a connection share one (`id_digest = ANY($1)`) |
/// | `update`, `touch` | 1: one `UPDATE` (key-level, update-only) |
/// | `delete` | 1: `DELETE ... RETURNING` |
/// | `create` without a cap (anonymous, or a login without one) | 1: `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired` |
/// | `create` with a cap | 5: `BEGIN`, the user's advisory lock, the user's live sessions, `INSERT`, `COMMIT`; +1 `DELETE` when it evicts; 4 when it refuses (`ROLLBACK` instead of the insert and commit) |
/// | `list_for_user`, `count_for_user`, `delete_for_user` | 1 each, on the user index |
///
/// On a pool that tests connections before handing them out
/// (`test_before_acquire`, sqlx's default), every call costs one more
/// round trip (a ping, not a statement); build the pool with
/// `.test_before_acquire(false)`.
///
/// # The cap
///
/// Logins with a per-user cap run in one `READ COMMITTED` transaction that
/// first takes a transaction-scoped advisory lock on the user
/// (`pg_advisory_xact_lock`, released at commit or rollback, and when a
/// connection dies): logins of one user, on any instance, take turns, so
/// racing logins never end above the cap, while other users' logins never
/// wait. The lock is the two-key form: the first key is derived from the
/// table's name, the second from the user id's digest (two users sharing
/// it only take turns). Row locks alone cannot do this: a user without
/// sessions has no row to lock.
///
/// # Expired rows
///
/// `load`, `update`, `touch`, the per-user operations and the cap judge
/// expiry by the store's clock, so an expired row is never returned,
/// changed or counted.
///
/// What is forgotten never hangs on one instance's clock, as on Redis
/// (whose keys expire by Redis' own count):
///
/// - The purge deletes rows that ended 60 s before the **earlier** of the
///   store's clock and the database's (`statement_timestamp()`), so that
///   an instance whose clock is behind by less than that still finds them
///   and judges them by its own clock, and an instance whose clock jumped
///   ahead, by any amount, deletes nothing another instance still serves.
///   It runs in batches, started by a write at most once per
///   [`PurgeConfig::every`](crate::PurgeConfig::every), or by
///   [`purge_expired`](Self::purge_expired).
/// - `load`, `update` and `touch` serve a row only until 60 s past its
///   end as the database's clock counts it, in the same statement:
///   each write records its instance's clock's offset from the
///   database's (`clock_offset`), and the row's end moved by it must be
///   less than 60 s behind the database's clock. So an instance whose
///   clock was set back cannot serve a session that ended long ago (by
///   its writer's clock) and that no purge has deleted yet; within that
///   bound, acceptance is judged by the store's clock alone. This is the
///   Redis stores' TTL (counted by Redis from its writer's clock's
///   remaining lifetime) in SQL: it holds whatever the offset between an
///   instance's clock and the database's (a test's manual clock
///   included), and costs no statement and no round trip.
///
/// # Errors
///
/// Every call, pool checkout included, is bounded by the backend's
/// timeout ([`StoreError::timeout`]); a database error, a lost connection
/// or a stopped server is [`StoreError::backend`]. Both are answered 503
/// by the layers, never "logged out".
///
/// After the server closed the pool's connections (a restart, a
/// fail-over, `pg_terminate_backend`), a call that meets a dead pooled
/// connection runs again on the next one, within the same bound: always
/// when PostgreSQL answered that the connection was terminated
/// (`57P01`/`57P02`: the statement did not run), and for loads, listings
/// and key-level updates (which give the same result twice) also when
/// the socket broke. So the first call after such an event drains the
/// dead connections instead of failing, even on a pool that does not ping
/// before each checkout.
#[derive(Clone)]
pub struct PgSessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: PgBackend,
    clock: SharedClock,
    sql: Statements,
    purger: Arc<Purger>,
    /// The first key of the per-user advisory lock.
    lock_class: i32,
    /// The loads' own connections (`None`: loads use the pool).
    direct: Option<DirectConnections>,
    /// Loads waiting for one of those connections.
    queue: LoadQueue,
}

/// Every statement, rendered once.
struct Statements {
    load: SqlStr,
    load_many: SqlStr,
    insert: SqlStr,
    update: SqlStr,
    touch: SqlStr,
    delete: SqlStr,
    lock_user: SqlStr,
    live_for_cap: SqlStr,
    evict: SqlStr,
    list: SqlStr,
    count: SqlStr,
    delete_for_user: SqlStr,
    purge: SqlStr,
}

impl Statements {
    fn new(names: &crate::names::Names) -> Self {
        let columns = COLUMNS.replace("{data}", "data::text");
        let live = "idle_deadline > {now} AND absolute_deadline > {now}";
        let live = |now: &str| live.replace("{now}", now);
        // What a row may still be served at: live by the caller's clock,
        // and not ended more than the grace ago by the database's clock
        // (its end moved to that clock by the offset its writer left).
        // (Written so that no stored value can overflow it: `expires_at -
        // clock_offset` could.)
        let grace = EXPIRY_GRACE.as_millis();
        let served = |now: &str| {
            format!(
                "{} AND expires_at > {DB_NOW_MS} - {grace} + clock_offset",
                live(now)
            )
        };
        let s = |template: &str| statement(names, template);
        Self {
            load: s(&format!(
                "SELECT {columns} FROM {{table:sessions}} WHERE id_digest = $1 AND {}",
                served("$2")
            )),
            load_many: s(&format!(
                "SELECT id_digest, {columns} FROM {{table:sessions}} \
                 WHERE id_digest = ANY($1) AND {}",
                served("$2")
            )),
            insert: s(&format!(
                "INSERT INTO {{table:sessions}} AS s \
                 (id_digest, user_digest, user_id, created_at, last_seen, idle_deadline, \
                  absolute_deadline, metadata, data, clock_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10 - {DB_NOW_MS}) \
                 ON CONFLICT (id_digest) DO UPDATE SET \
                 user_digest = EXCLUDED.user_digest, user_id = EXCLUDED.user_id, \
                 created_at = EXCLUDED.created_at, last_seen = EXCLUDED.last_seen, \
                 idle_deadline = EXCLUDED.idle_deadline, \
                 absolute_deadline = EXCLUDED.absolute_deadline, \
                 metadata = EXCLUDED.metadata, data = EXCLUDED.data, \
                 clock_offset = EXCLUDED.clock_offset \
                 WHERE s.expires_at <= $10 \
                 RETURNING true"
            )),
            // Remove, then set (parenthesised: `||` binds tighter than `-`).
            update: s(&format!(
                "UPDATE {{table:sessions}} SET data = (data - $2::text[]) || $3::jsonb, \
                 last_seen = GREATEST(last_seen, $4), \
                 idle_deadline = GREATEST(idle_deadline, LEAST($5, absolute_deadline)), \
                 clock_offset = $6 - {DB_NOW_MS} \
                 WHERE id_digest = $1 AND {}",
                served("$6")
            )),
            touch: s(&format!(
                "UPDATE {{table:sessions}} SET last_seen = GREATEST(last_seen, $2), \
                 idle_deadline = GREATEST(idle_deadline, LEAST($3, absolute_deadline)), \
                 clock_offset = $4 - {DB_NOW_MS} \
                 WHERE id_digest = $1 AND {}",
                served("$4")
            )),
            delete: s(&format!(
                "DELETE FROM {{table:sessions}} WHERE id_digest = $1 RETURNING ({})",
                live("$2")
            )),
            lock_user: s("SELECT pg_advisory_xact_lock($1, $2)"),
            live_for_cap: s(&format!(
                "SELECT id_digest, created_at FROM {{table:sessions}} \
                 WHERE user_digest = $1 AND user_id = $2 AND {} \
                 AND id_digest IS DISTINCT FROM $4",
                live("$3")
            )),
            evict: s("DELETE FROM {table:sessions} \
                 WHERE id_digest = ANY($1) AND user_digest = $2"),
            list: s(&format!(
                "SELECT id_digest, {columns} FROM {{table:sessions}} \
                 WHERE user_digest = $1 AND user_id = $2 AND {}",
                live("$3")
            )),
            count: s(&format!(
                "SELECT count(*) FROM {{table:sessions}} \
                 WHERE user_digest = $1 AND user_id = $2 AND {}",
                live("$3")
            )),
            delete_for_user: s(&format!(
                "WITH gone AS (DELETE FROM {{table:sessions}} \
                 WHERE user_digest = $1 AND user_id = $2 AND id_digest IS DISTINCT FROM $3 \
                 RETURNING idle_deadline, absolute_deadline) \
                 SELECT count(*) FROM gone WHERE {}",
                live("$4")
            )),
            // A Tid scan over a batch picked on the expiry index; rows a
            // request holds are skipped, and instances purging at once take
            // disjoint batches.
            // The cut-off is the earlier of the caller's (`$1`, grace
            // taken) and the database's clock: one instance whose clock
            // jumped ahead deletes nothing another one still serves.
            purge: s(&format!(
                "DELETE FROM {{table:sessions}} WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM {{table:sessions}} \
                 WHERE expires_at < LEAST($1, {DB_NOW_MS} - {grace}) \
                 LIMIT $2 FOR UPDATE SKIP LOCKED))"
            )),
        }
    }
}

impl fmt::Debug for PgSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSessionStore")
            .field("backend", &self.inner.backend)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// The second key of a user's advisory lock.
fn user_lock_key(user: &TokenDigest) -> i32 {
    let b = user.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Whether a statement may run again after `e`: the pooled connection it
/// was sent on had been closed by the server (an administrator's
/// `pg_terminate_backend`, a restart, a fail-over). PostgreSQL's
/// `57P01`/`57P02` answer means the statement did not take effect (an
/// autocommit statement that completed answers before the termination
/// is read), so any statement may run again; a broken socket leaves that
/// unknown, so only statements that give the same result twice
/// (`idempotent`) run again.
fn dead_connection(e: &sqlx::Error, idempotent: bool) -> bool {
    use std::io::ErrorKind as K;
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P01" | "57P02")),
        sqlx::Error::Io(io) => {
            idempotent
                && matches!(
                    io.kind(),
                    K::BrokenPipe
                        | K::ConnectionReset
                        | K::ConnectionAborted
                        | K::UnexpectedEof
                        | K::NotConnected
                )
        }
        _ => false,
    }
}

impl PgSessionStore {
    /// A store on `backend`, judging expiry by the system clock.
    #[must_use]
    pub fn new(backend: &PgBackend) -> Self {
        Self::with_clock(backend, SystemClock::shared())
    }

    /// A store on `backend` judging expiry by `clock` (give it the layer's
    /// clock).
    #[must_use]
    pub fn with_clock(backend: &PgBackend, clock: SharedClock) -> Self {
        let names = backend.names();
        let table = names.table("sessions");
        let class = Sha256::digest(format!("portcullis sessions {table}").as_bytes());
        Self {
            inner: Arc::new(Inner {
                sql: Statements::new(names),
                purger: Purger::new(backend.purge_config()),
                lock_class: i32::from_be_bytes([class[0], class[1], class[2], class[3]]),
                direct: DirectConnections::new(backend.pool(), backend.read_connections()),
                queue: LoadQueue::default(),
                backend: backend.clone(),
                clock,
            }),
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &PgBackend {
        &self.inner.backend
    }

    /// Deletes every row that ended more than 60 s before the earlier of
    /// the store's clock and the database's, now, in batches of
    /// [`PurgeConfig::batch`](crate::PurgeConfig) rows (each its own short
    /// statement, each bounded by the timeout); returns how many went.
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
    fn pool(&self) -> &PgPool {
        self.backend.pool()
    }

    /// Runs `call` on a connection from the pool; when the connection
    /// turns out dead (see [`dead_connection`]), runs it again on the next
    /// one, until every pooled connection could have been tried: after
    /// the server dropped its connections, the first call drains the dead
    /// ones instead of failing (on a pool without a ping before each
    /// checkout, every pooled connection would fail one call otherwise).
    /// Bounded by the caller's time bound.
    async fn run<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut tries = self
            .pool()
            .options()
            .get_max_connections()
            .saturating_add(1);
        loop {
            match call().await {
                Err(e) if tries > 1 && dead_connection(&e, idempotent) => tries -= 1,
                result => return result.store(),
            }
        }
    }

    /// The load on one of the store's own connections, kept for the next
    /// load only when the call ended cleanly.
    /// Answers the loads of `batch` with one statement on `lease` (the
    /// single-key statement for one load): each gets its row when the row
    /// is live by that load's own clock. Gives the connection back unless
    /// it broke.
    async fn serve_loads<'a>(
        &self,
        direct: &'a DirectConnections,
        lease: Lease<'a>,
        batch: Vec<Waiter>,
    ) -> Option<Lease<'a>> {
        match self.fetch_loads(direct, lease, &batch).await {
            Ok((rows, lease)) => {
                for w in batch {
                    let now = ms(w.now);
                    let row = rows
                        .iter()
                        .find(|(id, _)| id[..] == w.key.as_bytes()[..])
                        .map(|(_, row)| row)
                        .filter(|row| row.3 > now && row.4 > now)
                        .cloned();
                    w.answer(Ok(row));
                }
                Some(lease)
            }
            Err(e) => {
                for w in batch {
                    w.answer(Err(store_error(&e)));
                }
                None
            }
        }
    }

    /// The rows of `batch`'s keys that are live by its earliest clock,
    /// with their keys, and the connection they came on. A connection
    /// found dead (see [`dead_connection`]) is closed and the statement
    /// runs on the next one, until each of the store's connections could
    /// have been tried.
    async fn fetch_loads<'a>(
        &self,
        direct: &'a DirectConnections,
        lease: Lease<'a>,
        batch: &[Waiter],
    ) -> Result<(Vec<(Vec<u8>, Row)>, Lease<'a>), sqlx::Error> {
        type Keyed = (Vec<u8>, Option<Vec<u8>>, i64, i64, i64, i64, String, String);
        let earliest = ms(batch.iter().map(|w| w.now).min().unwrap_or_default());
        let keys: Vec<&[u8]> = batch.iter().map(|w| &w.key.as_bytes()[..]).collect();
        let mut tries = direct.max().saturating_add(1);
        let mut lease = Some(lease);
        loop {
            let mut conn = match lease.take() {
                Some(l) => l,
                None => direct.lease().await?,
            };
            let rows = match keys[..] {
                [key] => sqlx::query_as::<_, Row>(self.sql.load.clone())
                    .bind(key)
                    .bind(earliest)
                    .fetch_optional(&mut *conn)
                    .await
                    .map(|row| row.map(|row| (key.to_vec(), row)).into_iter().collect()),
                _ => sqlx::query_as::<_, Keyed>(self.sql.load_many.clone())
                    .bind(&keys)
                    .bind(earliest)
                    .fetch_all(&mut *conn)
                    .await
                    .map(|rows| {
                        rows.into_iter()
                            .map(|(id, u, c, l, i, a, m, d)| (id, (u, c, l, i, a, m, d)))
                            .collect()
                    }),
            };
            match rows {
                Ok(rows) => return Ok((rows, conn)),
                Err(e) if tries > 1 && dead_connection(&e, true) => tries -= 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn purge_batch(&self, n: u32) -> Result<u64, StoreError> {
        let before = purge_before(self.clock.now());
        bounded(self.backend.timeout(), async {
            let done = self
                .run(true, || {
                    sqlx::query(self.sql.purge.clone())
                        .bind(before)
                        .bind(i64::from(n))
                        .execute(self.pool())
                })
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// The insert (create-if-absent: a live holder of the key is kept):
    /// a row when it stored the record.
    fn insert<'q>(
        &self,
        key: &'q TokenDigest,
        row: &'q Bound,
        now: Timestamp,
    ) -> QueryScalar<'q, Postgres, bool, PgArguments> {
        sqlx::query_scalar(self.sql.insert.clone())
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
    }

    /// A login under a cap: one transaction, serialized per user.
    async fn create_capped(
        &self,
        key: &TokenDigest,
        row: &Bound,
        user: &str,
        cap: SessionCap,
        now: Timestamp,
    ) -> Result<CreateOutcome, StoreError> {
        let digest_of_user = user_digest(user);
        // A dead connection fails at `BEGIN`, before anything ran.
        let mut tx: Transaction<'static, Postgres> =
            self.run(false, || self.pool().begin()).await?;
        sqlx::query(self.sql.lock_user.clone())
            .bind(self.lock_class)
            .bind(user_lock_key(&digest_of_user))
            .execute(&mut *tx)
            .await
            .store()?;
        // A new statement, so a new snapshot: it sees every login that
        // committed before this one took the lock.
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
        if !victims.is_empty() {
            let ids: Vec<Vec<u8>> = victims.iter().map(|v| v.as_bytes().to_vec()).collect();
            sqlx::query(self.sql.evict.clone())
                .bind(ids)
                .bind(&digest_of_user.as_bytes()[..])
                .execute(&mut *tx)
                .await
                .store()?;
        }
        let stored = self
            .insert(key, row, now)
            .fetch_optional(&mut *tx)
            .await
            .store()?;
        if stored.is_none() {
            // A live session holds the key: nothing is evicted either.
            tx.rollback().await.store()?;
            return Err(StoreError::conflict());
        }
        tx.commit().await.store()?;
        Ok(CreateOutcome::Created { evicted: victims })
    }
}

#[async_trait]
impl SessionStore for PgSessionStore {
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
                    let stored = inner
                        .run(false, || {
                            inner.insert(key, &row, now).fetch_optional(inner.pool())
                        })
                        .await?;
                    if stored.is_some() {
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
            let row: Option<Row> = match &inner.direct {
                Some(direct) => {
                    shared_load::load(&inner.queue, direct, *key, now, |lease, batch| {
                        inner.serve_loads(direct, lease, batch)
                    })
                    .await?
                }
                None => {
                    inner
                        .run(true, || {
                            sqlx::query_as(inner.sql.load.clone())
                                .bind(&key.as_bytes()[..])
                                .bind(ms(now))
                                .fetch_optional(inner.pool())
                        })
                        .await?
                }
            };
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
        let (remove, set) = (update_remove(update), update_set(update));
        // Setting the same keys twice leaves the same row: idempotent.
        let done = bounded(inner.backend.timeout(), async {
            inner
                .run(true, || {
                    sqlx::query(inner.sql.update.clone())
                        .bind(&key.as_bytes()[..])
                        .bind(&remove)
                        .bind(&set)
                        .bind(ms(update.last_seen))
                        .bind(ms(update.idle_deadline))
                        .bind(ms(now))
                        .execute(inner.pool())
                })
                .await
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
            inner
                .run(true, || {
                    sqlx::query(inner.sql.touch.clone())
                        .bind(&key.as_bytes()[..])
                        .bind(ms(last_seen))
                        .bind(ms(idle_deadline))
                        .bind(ms(now))
                        .execute(inner.pool())
                })
                .await
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
        let live: Option<bool> = bounded(inner.backend.timeout(), async {
            inner
                .run(false, || {
                    sqlx::query_scalar(inner.sql.delete.clone())
                        .bind(&key.as_bytes()[..])
                        .bind(ms(now))
                        .fetch_optional(inner.pool())
                })
                .await
        })
        .await?;
        self.maybe_purge();
        Ok(live == Some(true))
    }

    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        type Listed = (Vec<u8>, Option<Vec<u8>>, i64, i64, i64, i64, String, String);
        let user = user_digest(user_id);
        let rows: Vec<Listed> = bounded(inner.backend.timeout(), async {
            inner
                .run(true, || {
                    sqlx::query_as(inner.sql.list.clone())
                        .bind(&user.as_bytes()[..])
                        .bind(user_id.as_bytes())
                        .bind(ms(now))
                        .fetch_all(inner.pool())
                })
                .await
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
        let user = user_digest(user_id);
        let deleted: i64 = bounded(inner.backend.timeout(), async {
            inner
                .run(false, || {
                    sqlx::query_scalar(inner.sql.delete_for_user.clone())
                        .bind(&user.as_bytes()[..])
                        .bind(user_id.as_bytes())
                        .bind(except.map(|k| &k.as_bytes()[..]))
                        .bind(ms(now))
                        .fetch_one(inner.pool())
                })
                .await
        })
        .await?;
        self.maybe_purge();
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let user = user_digest(user_id);
        let count: i64 = bounded(inner.backend.timeout(), async {
            inner
                .run(true, || {
                    sqlx::query_scalar(inner.sql.count.clone())
                        .bind(&user.as_bytes()[..])
                        .bind(user_id.as_bytes())
                        .bind(ms(now))
                        .fetch_one(inner.pool())
                })
                .await
        })
        .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }
}
