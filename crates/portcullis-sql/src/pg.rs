//! [`PgConfig`] and [`PgBackend`]: the application's PostgreSQL pool with
//! the names, time bound and purge schedule every PostgreSQL store shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::MigrateError;

use crate::migrate::{Dialect, migrator};
use crate::names::{NameError, Names};
use crate::purge::PurgeConfig;

/// The database's clock in milliseconds since the Unix epoch, as SQL
/// (`date_part` is a double: exact for milliseconds until the year 287396,
/// and cheaper than `extract`'s numeric).
pub(crate) const DB_NOW_MS: &str = "(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// One batch of a store's purge: `purge` deletes up to `$3` rows that
/// ended before `$1` and `$2` before the database's clock (both in the
/// units of the table's expiry column); returns how many, within
/// `timeout`. (The session store's purge routes its statement itself.)
#[cfg(any(feature = "jwt", feature = "throttle"))]
pub(crate) async fn purge_batch(
    pool: &PgPool,
    timeout: Duration,
    purge: &sqlx::SqlStr,
    now: i64,
    grace: i64,
    n: u32,
) -> Result<u64, portcullis_core::StoreError> {
    use crate::error::{SqlResultExt as _, bounded};
    bounded(timeout, async {
        let done = sqlx::query(purge.clone())
            .bind(now)
            .bind(grace)
            .bind(i64::from(n))
            .execute(pool)
            .await
            .store()?;
        Ok(done.rows_affected())
    })
    .await
}

/// The default bound on every store call (pool checkout included).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// How the PostgreSQL stores use the application's pool.
///
/// ```no_run
/// use portcullis_sql::PgConfig;
/// use sqlx::postgres::PgPoolOptions;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PgPoolOptions::new()
///     .test_before_acquire(false) // one round trip per session load, not two
///     .connect("postgres://app@db.internal/app")
///     .await?;
/// let backend = PgConfig::new(pool).schema("auth").build()?;
/// backend.migrate().await?; // creates or upgrades the tables, once per start
/// # Ok(()) }
/// ```
pub struct PgConfig {
    pool: PgPool,
    schema: String,
    prefix: String,
    timeout: Duration,
    unlogged_sessions: bool,
    purge: PurgeConfig,
    read_connections: usize,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's `Debug` shows its size and options, never the
        // connect options (which hold the password).
        f.debug_struct("PgConfig")
            .field("pool", &self.pool)
            .field("schema", &self.schema)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("unlogged_sessions", &self.unlogged_sessions)
            .field("purge", &self.purge)
            .field("read_connections", &self.read_connections)
            .finish()
    }
}

/// The default number of connections a session store opens for its loads.
pub(crate) const DEFAULT_READ_CONNECTIONS: usize = 8;

impl PgConfig {
    /// The stores on `pool`, in schema `portcullis`, tables without a
    /// prefix (`portcullis.sessions`, ...).
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            schema: "portcullis".to_owned(),
            prefix: String::new(),
            timeout: DEFAULT_TIMEOUT,
            unlogged_sessions: false,
            purge: PurgeConfig::default(),
            read_connections: DEFAULT_READ_CONNECTIONS,
        }
    }

    /// How many connections of its own each [`PgSessionStore`] opens for
    /// session loads, the statement of every authenticated request
    /// (default 8; 0: loads use the pool). They are opened lazily with the
    /// pool's connect options and kept, beside the pool: count them in the
    /// server's `max_connections`. sqlx pings a pooled connection on its way
    /// back to the pool, so a load through the pool costs a second round
    /// trip and holds the connection meanwhile; these connections do not.
    /// Every other call uses the pool.
    ///
    /// Loads that wait for one of these connections are answered together:
    /// a connection that comes free takes its share of the waiting loads
    /// and answers them with one `id_digest = ANY($1)` statement (each
    /// load still sees only what a statement begun after it was asked
    /// sees). These connections run primary-key lookups only, and are
    /// opened with `plan_cache_mode=force_generic_plan` and
    /// `enable_seqscan=off` (PostgreSQL 12 or later).
    ///
    /// [`PgSessionStore`]: crate::PgSessionStore
    #[must_use]
    pub fn read_connections(mut self, n: usize) -> Self {
        self.read_connections = n;
        self
    }

    /// The schema of the tables (default `portcullis`): 1 to 63 bytes of
    /// `a-z`, `0-9` and `_`, not starting with a digit; checked by
    /// [`build`](Self::build), and quoted in every statement.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// A prefix of every table and index name (default none): at most 31
    /// bytes of `a-z`, `0-9` and `_`, not starting with a digit.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound on every store call, pool checkout and commit included
    /// (default 500 ms): past it the call fails with a timeout and the
    /// layers answer 503.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the sessions table is `UNLOGGED` (default no). Unlogged
    /// tables skip the write-ahead log, so session writes are cheaper, but
    /// PostgreSQL empties them after a crash (not after a clean stop) and
    /// does not replicate them: a crash or a fail-over to a standby logs
    /// every user out. Refresh families and revocations are always
    /// logged (losing a revocation would admit a revoked token again).
    /// [`PgBackend::migrate`] applies a change to an existing table
    /// (`ALTER TABLE ... SET [UN]LOGGED`, which rewrites it).
    #[must_use]
    pub fn unlogged_sessions(mut self, unlogged: bool) -> Self {
        self.unlogged_sessions = unlogged;
        self
    }

    /// How expired rows are purged (see [`PurgeConfig`]).
    #[must_use]
    pub fn purge(mut self, purge: PurgeConfig) -> Self {
        self.purge = purge;
        self
    }

    /// Checks the names.
    ///
    /// # Errors
    ///
    /// [`NameError`] for a schema or prefix that cannot be used.
    pub fn build(self) -> Result<PgBackend, NameError> {
        let names = Names::new(Some(&self.schema), &self.prefix)?;
        Ok(PgBackend {
            inner: Arc::new(Inner {
                pool: self.pool,
                names,
                timeout: self.timeout,
                unlogged_sessions: self.unlogged_sessions,
                purge: self.purge,
                read_connections: self.read_connections,
            }),
        })
    }
}

/// The application's PostgreSQL pool, with the settings every PostgreSQL
/// store of the application shares (cheap to clone).
#[derive(Clone)]
pub struct PgBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    names: Names,
    timeout: Duration,
    unlogged_sessions: bool,
    purge: PurgeConfig,
    // Read by the session store only.
    #[cfg_attr(not(feature = "session"), allow(dead_code))]
    read_connections: usize,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("pool", &self.inner.pool)
            .field("names", &self.inner.names)
            .field("timeout", &self.inner.timeout)
            .field("unlogged_sessions", &self.inner.unlogged_sessions)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Creates or upgrades the tables (idempotent; concurrent instances
    /// wait for each other on an advisory lock), then makes the sessions
    /// table logged or unlogged as configured.
    ///
    /// # Errors
    ///
    /// The database refused a migration, or an applied one differs from
    /// the embedded one (its checksum).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        migrator(&self.inner.names, Dialect::Postgres)
            .run(&self.inner.pool)
            .await?;
        let sessions = self.inner.names.table("sessions");
        let persistence: Option<String> = sqlx::query_scalar(
            "SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(&sessions)
        .fetch_optional(&self.inner.pool)
        .await?;
        let want = if self.inner.unlogged_sessions {
            "u"
        } else {
            "p"
        };
        if persistence.as_deref().is_some_and(|p| p != want) {
            let mode = if self.inner.unlogged_sessions {
                "UNLOGGED"
            } else {
                "LOGGED"
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {sessions} SET {mode}"
            )))
            .execute(&self.inner.pool)
            .await?;
        }
        Ok(())
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The bound on every store call.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn names(&self) -> &Names {
        &self.inner.names
    }

    pub(crate) fn purge_config(&self) -> PurgeConfig {
        self.inner.purge
    }

    #[cfg(feature = "session")]
    pub(crate) fn read_connections(&self) -> usize {
        self.inner.read_connections
    }
}
