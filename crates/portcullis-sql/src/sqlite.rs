//! [`SqliteConfig`] and [`SqliteBackend`]: the application's SQLite pool
//! with the names, time bound and purge schedule every SQLite store shares.
//! A SQLite file is the durable choice for one instance; the stores of one
//! process share one in-process revocation view.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::migrate::MigrateError;

use crate::migrate::{Dialect, migrator};
use crate::names::{NameError, Names};
use crate::purge::PurgeConfig;

/// The default bound on every store call (pool checkout included).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// How the SQLite stores use the application's pool.
///
/// ```no_run
/// use portcullis_sql::SqliteConfig;
/// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let options = SqliteConnectOptions::new()
///     .filename("auth.db")
///     .create_if_missing(true)
///     .journal_mode(SqliteJournalMode::Wal); // readers never wait for a writer
/// let pool = SqlitePool::connect_with(options).await?;
/// let backend = SqliteConfig::new(pool).build()?;
/// backend.migrate().await?;
/// # Ok(()) }
/// ```
pub struct SqliteConfig {
    pool: SqlitePool,
    prefix: String,
    timeout: Duration,
    purge: PurgeConfig,
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("pool", &self.pool)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("purge", &self.purge)
            .finish()
    }
}

impl SqliteConfig {
    /// The stores on `pool`, tables prefixed `portcullis_`.
    #[must_use]
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            prefix: "portcullis_".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            purge: PurgeConfig::default(),
        }
    }

    /// The prefix of every table and index name (default `portcullis_`):
    /// at most 31 bytes of `a-z`, `0-9` and `_`, not starting with a digit.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound on every store call, pool checkout and commit included
    /// (default 500 ms): past it the call fails with a timeout and the
    /// layers answer 503. A locked database file makes writers wait up to
    /// the connection's `busy_timeout` (sqlx: 5 s), so this bound is the
    /// one that answers first.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How expired rows are purged (see [`PurgeConfig`]).
    #[must_use]
    pub fn purge(mut self, purge: PurgeConfig) -> Self {
        self.purge = purge;
        self
    }

    /// Checks the prefix.
    ///
    /// # Errors
    ///
    /// [`NameError`] for a prefix that cannot be used.
    pub fn build(self) -> Result<SqliteBackend, NameError> {
        let names = Names::new(None, &self.prefix)?;
        Ok(SqliteBackend {
            inner: Arc::new(Inner {
                pool: self.pool,
                names,
                timeout: self.timeout,
                purge: self.purge,
            }),
        })
    }
}

/// The application's SQLite pool, with the settings every SQLite store of
/// the application shares (cheap to clone).
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    names: Names,
    timeout: Duration,
    purge: PurgeConfig,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("pool", &self.inner.pool)
            .field("names", &self.inner.names)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Creates or upgrades the tables (idempotent).
    ///
    /// # Errors
    ///
    /// The database refused a migration, or an applied one differs from
    /// the embedded one (its checksum).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        migrator(&self.inner.names, Dialect::Sqlite)
            .run(&self.inner.pool)
            .await
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
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
}
