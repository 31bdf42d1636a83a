//! [`SqliteRevocationStore`]: JWT revocations in a SQLite file, for one
//! process: every store of that process on the file shares one view,
//! loaded from the file at start (in pages) and given each revocation
//! before it commits. (About 600 lines before the tests, 130 of them
//! docs: the store, its builder, its statements and the per-file view are
//! one unit.)

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{SharedClock, StoreError, SystemClock};
use portcullis_jwt::revocation::{RevocationEvent, RevocationStore, RevocationView};
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr, SqlitePool};
use tokio::sync::watch;

use super::{
    DEFAULT_SNAPSHOT_PAGE, Entry, KEEP_MS, MIN_BACKOFF, PageRows, RevocationStartError, SyncState,
    apply_page, digest, entry_event, jitter, ms_of, now_ms, user_event, version_floor,
};
use crate::SqliteBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::names::Names;
use crate::purge::Purger;

/// The longest pause between two attempts to load the first snapshot.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A `RevocationStore` in a SQLite file, for the stores of one process.
///
/// ```no_run
/// use portcullis_jwt::revocation::RevocationStore as _;
/// use portcullis_sql::{SqliteConfig, SqliteRevocationStore};
/// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let options = SqliteConnectOptions::new()
///     .filename("auth.db")
///     .create_if_missing(true)
///     .journal_mode(SqliteJournalMode::Wal);
/// let backend = SqliteConfig::new(SqlitePool::connect_with(options).await?).build()?;
/// backend.migrate().await?;
/// let revocations = SqliteRevocationStore::new(&backend)?; // loads the file in the background
/// revocations.wait_synced(std::time::Duration::from_secs(5)).await;
/// let view = revocations.view(); // give it to JwtLayer::builder(..).revocation(view)
/// revocations.revoke_user("alice").await?; // in the view, then committed
/// # let _ = view; Ok(()) }
/// ```
///
/// - **In the view before it is in the file**: a committed revocation is
///   never missing from the view, whatever the call answered. A token or
///   session revocation is applied to the view first, then written (one
///   upsert): a write that fails or times out leaves the entry refused by
///   this process until it expires (a denylist only grows: a revocation
///   the file lost is refused, never admitted) and the caller gets the
///   error, to try again. A user revocation runs in a task of its own,
///   awaited by the call for the backend's timeout: the task takes the
///   write lock (`BEGIN IMMEDIATE`), upserts the version the file numbers,
///   applies it to the view, then commits, and runs to its end even after
///   the call has answered "timeout" (a writer holding the file longer
///   than the timeout but less than SQLite's busy timeout), so the version
///   reaches the view before the file has it. A JWT check reads only the
///   view: no database call per request.
/// - **One view per file and table prefix in a process**: every store
///   started on the same file (through one pool or several) with the same
///   prefix shares the view of the first one (and its clock), so a
///   revocation through any of them is refused at once by all.
/// - **Snapshot at start**: the first store of a file loads every live row
///   into the view in the background, in pages of
///   [`snapshot_page`](SqliteRevocationStoreBuilder::snapshot_page) rows
///   (10,000 by default), each page one statement under the backend's
///   timeout, so a file of millions of rows loads; until every page is in,
///   the view is not ready (layers answer 503), and the load is tried again
///   from the start with a doubling backoff (up to 2 s) until it succeeds.
///   Wait for [`wait_synced`](Self::wait_synced) before serving.
/// - **SQLite serves one process**: revocations written to the file by
///   another process reach this one's view only at its next start.
///   Instances that scale out share a PostgreSQL database
///   ([`PgRevocationStore`](crate::PgRevocationStore)) instead.
/// - **A restored backup brings back what it held**: a process started on
///   a file restored from an older copy loads that copy; revocations made
///   after the copy are lost (tokens and sessions revoked since are
///   accepted again until they expire, users revoked since have their
///   older version back). Run `revoke_user` again for every user revoked
///   since the copy was taken.
/// - **Forgetting needs two clocks**: denylist rows are kept
///   `portcullis_jwt::MAX_LEEWAY` plus 60 s past their expiry, by the
///   earlier of this store's clock and the system clock; only then does
///   the purge delete them (in batches, in the background of revoke
///   calls, or by [`purge_expired`](Self::purge_expired)). User versions
///   are never purged.
#[derive(Clone)]
pub struct SqliteRevocationStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: SqliteBackend,
    shared: Arc<SharedView>,
    clock: SharedClock,
    sql: Arc<Statements>,
    purge_tokens: Arc<Purger>,
    purge_sessions: Arc<Purger>,
}

/// The view the stores of one file share, and its first snapshot's state.
struct SharedView {
    view: RevocationView,
    sync: watch::Sender<SyncState>,
    loader: tokio::task::JoinHandle<()>,
}

impl Drop for SharedView {
    fn drop(&mut self) {
        self.loader.abort();
    }
}

/// Which view a store joins: the database file (canonical path, or the
/// name as given for an in-memory database) and the table prefix.
type ViewKey = (PathBuf, String);

/// The live views of this process.
static VIEWS: LazyLock<Mutex<HashMap<ViewKey, Weak<SharedView>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Every statement of the store, built once from the names.
struct Statements {
    revoke_token: SqlStr,
    revoke_session: SqlStr,
    revoke_user: SqlStr,
    snapshot_tokens: SqlStr,
    snapshot_sessions: SqlStr,
    snapshot_users: SqlStr,
    purge_tokens: SqlStr,
    purge_sessions: SqlStr,
}

/// Opens the transaction of a user revocation: the write lock first, so
/// the upsert never meets a snapshot it cannot upgrade.
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// The system clock in milliseconds, as SQLite reads it.
const DB_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

fn sql(names: &Names, template: &str) -> SqlStr {
    AssertSqlSafe(names.render(template)).into_sql_str()
}

impl Statements {
    fn new(names: &Names) -> Self {
        // `?1` digest, `?2` id, `?3` expiry (ms).
        let revoke_entry = |table: &str| {
            sql(
                names,
                &format!(
                    "INSERT INTO {{table:{table}}} (id_digest, id, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id_digest) DO UPDATE \
                     SET expires_at = MAX(expires_at, excluded.expires_at)"
                ),
            )
        };
        // One page: `?1` the last key of the page before (an empty blob
        // for the first), `?2` the caller's now (ms), `?3` how long rows
        // are kept past their expiry (ms), `?4` the page size. The unary
        // `+` keeps the expiry index out: the page walks the key.
        let snapshot = |table: &str| {
            sql(
                names,
                &format!(
                    "SELECT id_digest, id, expires_at FROM {{table:{table}}} \
                     WHERE id_digest > ?1 AND +expires_at >= MIN(?2, {DB_NOW_MS}) - ?3 \
                     ORDER BY id_digest LIMIT ?4"
                ),
            )
        };
        // `?1` now (ms), `?2` kept (ms), `?3` batch size: a search of the
        // expiry index, then deletes by rowid.
        let purge = |table: &str| {
            sql(
                names,
                &format!(
                    "DELETE FROM {{table:{table}}} WHERE rowid IN (\
                     SELECT rowid FROM {{table:{table}}} \
                     WHERE expires_at < MIN(?1, {DB_NOW_MS}) - ?2 LIMIT ?3)"
                ),
            )
        };
        Self {
            revoke_token: revoke_entry(Entry::Token.table()),
            revoke_session: revoke_entry(Entry::Session.table()),
            // `?1` digest, `?2` user id, `?3` this instance's version (the
            // floor).
            revoke_user: sql(
                names,
                "INSERT INTO {table:revoked_users} (user_digest, user_id, version) \
                 VALUES (?1, ?2, ?3 + 1) ON CONFLICT (user_digest) DO UPDATE \
                 SET version = MAX(version, ?3) + 1 RETURNING version",
            ),
            snapshot_tokens: snapshot(Entry::Token.table()),
            snapshot_sessions: snapshot(Entry::Session.table()),
            // `?1` the last key of the page before, `?2` the page size.
            snapshot_users: sql(
                names,
                "SELECT user_digest, user_id, version FROM {table:revoked_users} \
                 WHERE user_digest > ?1 ORDER BY user_digest LIMIT ?2",
            ),
            purge_tokens: purge(Entry::Token.table()),
            purge_sessions: purge(Entry::Session.table()),
        }
    }
}

impl fmt::Debug for SqliteRevocationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the pool's connect options (their pragmas may hold a key).
        let state = *self.inner.shared.sync.borrow();
        f.debug_struct("SqliteRevocationStore")
            .field("names", self.inner.backend.names())
            .field("view", &self.inner.shared.view)
            .field("synced", &state.connected)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SqliteRevocationStore`].
#[must_use]
pub struct SqliteRevocationStoreBuilder {
    backend: SqliteBackend,
    clock: SharedClock,
    snapshot_page: u32,
}

impl fmt::Debug for SqliteRevocationStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRevocationStoreBuilder")
            .field("names", self.backend.names())
            .field("clock", &self.clock)
            .field("snapshot_page", &self.snapshot_page)
            .finish_non_exhaustive()
    }
}

impl SqliteRevocationStoreBuilder {
    /// How many rows each statement of the snapshot reads (default
    /// 10,000): the snapshot walks each table's key in pages of this size,
    /// each page under the backend's timeout. Lower it if a page takes
    /// close to the timeout on your disk. It applies to the load of the
    /// first store of a file (a store joining its view loads nothing).
    pub const fn snapshot_page(mut self, rows: u32) -> Self {
        self.snapshot_page = rows;
        self
    }

    /// The clock that says when entries expire (default: the system
    /// clock). Give the view's users (the JWT layer) the same clock. A
    /// store joining the view of an earlier store on the same file shares
    /// that store's clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Starts the store: joins this process's view of the file, or makes
    /// one and spawns the task that loads its snapshot (see
    /// [`SqliteRevocationStore::wait_synced`]).
    ///
    /// # Errors
    ///
    /// [`RevocationStartError::NoRuntime`] outside a Tokio runtime,
    /// [`RevocationStartError::SnapshotPage`] for a page of zero rows.
    pub fn start(self) -> Result<SqliteRevocationStore, RevocationStartError> {
        if self.snapshot_page == 0 {
            return Err(RevocationStartError::SnapshotPage);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RevocationStartError::NoRuntime)?;
        let sql = Arc::new(Statements::new(self.backend.names()));
        let key = view_key(self.backend.pool(), self.backend.names());
        let shared = {
            let mut views = VIEWS.lock().unwrap_or_else(PoisonError::into_inner);
            views.retain(|_, v| v.strong_count() > 0);
            if let Some(shared) = views.get(&key).and_then(Weak::upgrade) {
                shared
            } else {
                let view = RevocationView::pending(self.clock.clone());
                let sync = watch::Sender::new(SyncState::default());
                let loader = runtime.spawn(load_first_snapshot(
                    self.backend.clone(),
                    self.clock.clone(),
                    Arc::clone(&sql),
                    self.snapshot_page,
                    view.clone(),
                    sync.clone(),
                ));
                let shared = Arc::new(SharedView { view, sync, loader });
                views.insert(key, Arc::downgrade(&shared));
                shared
            }
        };
        let purge = self.backend.purge_config();
        Ok(SqliteRevocationStore {
            inner: Arc::new(Inner {
                backend: self.backend,
                shared,
                clock: self.clock,
                sql,
                purge_tokens: Purger::new(purge),
                purge_sessions: Purger::new(purge),
            }),
        })
    }
}

/// The file and prefix a pool's stores share a view by.
fn view_key(pool: &SqlitePool, names: &Names) -> ViewKey {
    let file = pool.connect_options().get_filename().to_path_buf();
    let file = std::fs::canonicalize(&file).unwrap_or(file);
    (file, names.prefix().to_owned())
}

/// Loads the first snapshot, trying again from the start with a doubling
/// backoff until every page has loaded; then the view is ready.
async fn load_first_snapshot(
    backend: SqliteBackend,
    clock: SharedClock,
    sql: Arc<Statements>,
    page: u32,
    view: RevocationView,
    sync: watch::Sender<SyncState>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match load_snapshot(&backend, &clock, &sql, page, &view).await {
            Ok(()) => {
                view.mark_ready();
                sync.send_modify(|s| {
                    *s = SyncState {
                        connected: true,
                        snapshots: s.snapshots + 1,
                    };
                });
                return;
            }
            Err(_e) => {
                portcullis_core::event!(
                    warn,
                    reason = "revocation-snapshot-failed",
                    error = %_e,
                    "could not load the revocation snapshot; JWT requests answer 503 until it loads"
                );
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Reads every live row into `view`, a page at a time: each table's key
/// in order, each page one statement under the backend's timeout. Rows
/// are merged into the view as their pages arrive (the view is not ready
/// meanwhile).
async fn load_snapshot(
    backend: &SqliteBackend,
    clock: &SharedClock,
    sql: &Statements,
    page: u32,
    view: &RevocationView,
) -> Result<(), StoreError> {
    let pool = backend.pool();
    let bound = backend.timeout();
    let now = now_ms(clock);
    for (entry, statement) in [
        (Entry::Token, &sql.snapshot_tokens),
        (Entry::Session, &sql.snapshot_sessions),
    ] {
        let mut after = Some(Vec::new());
        while let Some(key) = after {
            let rows: PageRows = bounded(bound, async {
                sqlx::query_as(statement.clone())
                    .bind(key)
                    .bind(now)
                    .bind(KEEP_MS)
                    .bind(i64::from(page))
                    .fetch_all(pool)
                    .await
                    .store()
            })
            .await?;
            after = apply_page(view, rows, page, entry_event(entry));
        }
    }
    let mut after = Some(Vec::new());
    while let Some(key) = after {
        let rows: PageRows = bounded(bound, async {
            sqlx::query_as(sql.snapshot_users.clone())
                .bind(key)
                .bind(i64::from(page))
                .fetch_all(pool)
                .await
                .store()
        })
        .await?;
        after = apply_page(view, rows, page, user_event);
    }
    Ok(())
}

impl SqliteRevocationStore {
    /// Starts a store on `backend` with the system clock.
    ///
    /// # Errors
    ///
    /// See [`SqliteRevocationStoreBuilder::start`].
    pub fn new(backend: &SqliteBackend) -> Result<Self, RevocationStartError> {
        Self::builder(backend).start()
    }

    /// [`new`](Self::new) with entries expiring by `clock`.
    ///
    /// # Errors
    ///
    /// See [`SqliteRevocationStoreBuilder::start`].
    pub fn with_clock(
        backend: &SqliteBackend,
        clock: SharedClock,
    ) -> Result<Self, RevocationStartError> {
        Self::builder(backend).clock(clock).start()
    }

    /// A builder, to set the clock or the snapshot's page size.
    pub fn builder(backend: &SqliteBackend) -> SqliteRevocationStoreBuilder {
        SqliteRevocationStoreBuilder {
            backend: backend.clone(),
            clock: SystemClock::shared(),
            snapshot_page: DEFAULT_SNAPSHOT_PAGE,
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &SqliteBackend {
        &self.inner.backend
    }

    /// Whether the view's snapshot has loaded: the view is current.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.inner.shared.sync.borrow().connected
    }

    /// Snapshots loaded so far into this store's view (0, then 1).
    #[must_use]
    pub fn snapshots(&self) -> u64 {
        self.inner.shared.sync.borrow().snapshots
    }

    /// Waits until the view's snapshot has loaded, for `timeout` at most;
    /// returns whether it has.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.shared.sync.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Deletes every denylist row kept past its expiry plus
    /// `portcullis_jwt::MAX_LEEWAY` and 60 s (by the earlier of this
    /// store's clock and the system clock), in batches; returns how many.
    /// Revoke calls start the same purge in the background, at most once
    /// per [`PurgeConfig::every`](crate::PurgeConfig::every).
    ///
    /// # Errors
    ///
    /// A batch failed or timed out (the batches before it stay deleted).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let i = &self.inner;
        let tokens = i.purge_tokens.run(purge_batch(i, Entry::Token)).await?;
        let sessions = i.purge_sessions.run(purge_batch(i, Entry::Session)).await?;
        Ok(tokens + sessions)
    }

    async fn revoke_entry(
        &self,
        entry: Entry,
        id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let key = digest(id);
        let statement = match entry {
            Entry::Token => &i.sql.revoke_token,
            Entry::Session => &i.sql.revoke_session,
        };
        // In the view first: a write that times out may still commit later
        // (the statement stays queued on the connection's worker), and one
        // that fails leaves an entry refused early, never one admitted.
        i.shared
            .view
            .apply(&entry.event(id.to_owned(), ms_of(expires_at)));
        bounded(i.backend.timeout(), async {
            sqlx::query(statement.clone())
                .bind(&key[..])
                .bind(id.as_bytes())
                .bind(ms_of(expires_at))
                .execute(i.backend.pool())
                .await
                .store()
        })
        .await?;
        let purger = match entry {
            Entry::Token => &i.purge_tokens,
            Entry::Session => &i.purge_sessions,
        };
        purger.maybe_start(purge_batch(i, entry));
        Ok(())
    }
}

/// A user revocation, start to end: takes the write lock, upserts the
/// version above the view's and the file's, applies it to the view, then
/// commits. Nothing of it is dropped half-way (its caller may have stopped
/// waiting), so a version the file holds is always in the view.
async fn write_user(
    pool: SqlitePool,
    statement: SqlStr,
    view: RevocationView,
    user: String,
) -> Result<u64, StoreError> {
    let key = digest(&user);
    let mut tx = pool.begin_with(BEGIN_IMMEDIATE).await.store()?;
    // Read after the lock: every version committed before is in the view.
    let floor = version_floor(&view, &user);
    let version: i64 = sqlx::query_scalar(statement)
        .bind(&key[..])
        .bind(user.as_bytes())
        .bind(floor)
        .fetch_one(&mut *tx)
        .await
        .store()?;
    let version =
        u64::try_from(version).map_err(|_| StoreError::corrupt("a user version below zero"))?;
    view.apply(&RevocationEvent::User { user, version });
    tx.commit().await.store()?;
    Ok(version)
}

/// One purge batch of `entry`'s table, as [`Purger`] runs it.
fn purge_batch(
    i: &Inner,
    entry: Entry,
) -> impl Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send>>
+ Send
+ 'static {
    let pool = i.backend.pool().clone();
    let limit = i.backend.timeout();
    let clock = i.clock.clone();
    let statement = match entry {
        Entry::Token => i.sql.purge_tokens.clone(),
        Entry::Session => i.sql.purge_sessions.clone(),
    };
    move |n| {
        let (pool, statement, now) = (pool.clone(), statement.clone(), now_ms(&clock));
        Box::pin(async move {
            bounded(limit, async {
                let done = sqlx::query(statement)
                    .bind(now)
                    .bind(KEEP_MS)
                    .bind(i64::from(n))
                    .execute(&pool)
                    .await
                    .store()?;
                Ok(done.rows_affected())
            })
            .await
        })
    }
}

#[async_trait]
impl RevocationStore for SqliteRevocationStore {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoke_entry(Entry::Token, jti, expires_at).await
    }

    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoke_entry(Entry::Session, sid, expires_at).await
    }

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        let i = &self.inner;
        // The write runs to its end in a task of its own, whatever the
        // call answers: a version it commits is in the view first.
        let write = tokio::spawn(write_user(
            i.backend.pool().clone(),
            i.sql.revoke_user.clone(),
            i.shared.view.clone(),
            user.to_owned(),
        ));
        bounded(i.backend.timeout(), async {
            write
                .await
                .map_err(|_| StoreError::backend("the revocation task ended without an answer"))?
        })
        .await
    }

    fn view(&self) -> RevocationView {
        self.inner.shared.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    async fn backend(file: &std::path::Path) -> SqliteBackend {
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let backend = crate::SqliteConfig::new(pool).build().unwrap();
        backend.migrate().await.unwrap();
        backend
    }

    /// Two stores on one file, through two pools, share one view; a store
    /// on another file has its own; a store started after the others are
    /// gone loads the file.
    #[tokio::test]
    async fn stores_of_one_file_share_a_view() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteRevocationStore::new(&backend(&dir.path().join("a.db")).await).unwrap();
        let b = SqliteRevocationStore::new(&backend(&dir.path().join("a.db")).await).unwrap();
        let other = SqliteRevocationStore::new(&backend(&dir.path().join("b.db")).await).unwrap();
        for s in [&a, &b, &other] {
            assert!(s.wait_synced(Duration::from_secs(5)).await);
        }
        assert_eq!(a.revoke_user("alice").await.unwrap(), 1);
        assert_eq!(b.view().user_version("alice"), 1);
        assert_eq!(b.revoke_user("alice").await.unwrap(), 2);
        assert_eq!(a.view().user_version("alice"), 2);
        assert_eq!(other.view().user_version("alice"), 0);
        let prefixed = {
            let options = SqliteConnectOptions::new().filename(dir.path().join("a.db"));
            let pool = SqlitePool::connect_with(options).await.unwrap();
            let backend = crate::SqliteConfig::new(pool)
                .table_prefix("other_")
                .build()
                .unwrap();
            backend.migrate().await.unwrap();
            SqliteRevocationStore::new(&backend).unwrap()
        };
        assert!(prefixed.wait_synced(Duration::from_secs(5)).await);
        assert_eq!(
            prefixed.view().user_version("alice"),
            0,
            "other tables, another view"
        );
        drop((a, b));
        let c = SqliteRevocationStore::new(&backend(&dir.path().join("a.db")).await).unwrap();
        assert!(c.wait_synced(Duration::from_secs(5)).await);
        assert_eq!(c.snapshots(), 1);
        assert_eq!(c.view().user_version("alice"), 2, "from the snapshot");
    }
}
