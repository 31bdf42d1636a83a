//! [`Database`]: a backend from a `DATABASE_URL`, connected with the pool
//! settings the stores are measured with.

use std::str::FromStr as _;
use std::time::Duration;

use crate::url::{DatabaseKind, DatabaseUrl};

/// A database URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the database {url}: {what}")]
pub struct ConnectError {
    url: String,
    what: String,
}

impl ConnectError {
    fn new(url: &DatabaseUrl, what: impl Into<String>) -> Self {
        Self {
            url: url.to_string(),
            what: what.into(),
        }
    }
}

/// The backend a `DATABASE_URL` names: PostgreSQL or SQLite.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Database {
    /// `postgres://...`
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(crate::PgBackend),
    /// `sqlite:...`
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(crate::SqliteBackend),
}

impl Database {
    /// A pool for `url` with the recommended settings, and the backend on
    /// it with the default names (`portcullis.*` on PostgreSQL,
    /// `portcullis_*` tables on SQLite):
    ///
    /// - PostgreSQL: connects lazily (the application starts while the
    ///   database is down; requests get 503 until it answers), no health
    ///   check on checkout, up to 16 connections (a session store opens up
    ///   to 8 more for its loads, a revocation store one for its listener:
    ///   see [`PgConfig::read_connections`](crate::PgConfig::read_connections)).
    /// - SQLite: creates the file if missing, write-ahead log (readers never
    ///   wait for the writer). `sqlite::memory:` is one connection (each
    ///   connection would see its own database otherwise).
    ///
    /// Run [`migrate`](Self::migrate) before serving.
    ///
    /// # Errors
    ///
    /// [`ConnectError`] (the URL redacted) when the URL does not parse or
    /// names a database whose feature is off.
    pub fn connect(url: &DatabaseUrl) -> Result<Self, ConnectError> {
        match url.kind() {
            #[cfg(feature = "postgres")]
            DatabaseKind::Postgres => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url.expose())
                    .map_err(|e| ConnectError::new(url, crate::error::describe(&e)))?;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(false)
                    .connect_lazy_with(options);
                let backend = crate::PgConfig::new(pool)
                    .build()
                    .map_err(|e| ConnectError::new(url, e.to_string()))?;
                Ok(Self::Postgres(backend))
            }
            #[cfg(feature = "sqlite")]
            DatabaseKind::Sqlite => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
                let memory =
                    url.expose().contains(":memory:") || url.expose().contains("mode=memory");
                let options = SqliteConnectOptions::from_str(url.expose())
                    .map_err(|e| ConnectError::new(url, crate::error::describe(&e)))?
                    .create_if_missing(true);
                let options = if memory {
                    options
                } else {
                    options.journal_mode(SqliteJournalMode::Wal)
                };
                let pool = SqlitePoolOptions::new()
                    .max_connections(if memory { 1 } else { 8 })
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(false)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_lazy_with(options);
                let backend = crate::SqliteConfig::new(pool)
                    .build()
                    .map_err(|e| ConnectError::new(url, e.to_string()))?;
                Ok(Self::Sqlite(backend))
            }
            #[allow(unreachable_patterns)]
            kind => Err(ConnectError::new(
                url,
                format!("{kind:?} support is not compiled in (enable the portcullis-sql feature)"),
            )),
        }
    }

    /// The session store on this database.
    #[cfg(feature = "session")]
    #[cfg_attr(docsrs, doc(cfg(feature = "session")))]
    #[must_use]
    pub fn session_store(&self) -> std::sync::Arc<dyn portcullis_session::SessionStore> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(b) => std::sync::Arc::new(crate::PgSessionStore::new(b)),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(b) => std::sync::Arc::new(crate::SqliteSessionStore::new(b)),
        }
    }

    /// The refresh-family store on this database.
    #[cfg(feature = "refresh")]
    #[cfg_attr(docsrs, doc(cfg(feature = "refresh")))]
    #[must_use]
    pub fn refresh_store(&self) -> std::sync::Arc<dyn portcullis_refresh::RefreshStore> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(b) => std::sync::Arc::new(crate::PgRefreshStore::new(b)),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(b) => std::sync::Arc::new(crate::SqliteRefreshStore::new(b)),
        }
    }

    /// The login throttle's counter store on this database.
    #[cfg(feature = "throttle")]
    #[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
    #[must_use]
    pub fn throttle_store(&self) -> std::sync::Arc<dyn portcullis_throttle::ThrottleStore> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(b) => std::sync::Arc::new(crate::PgThrottleStore::new(b)),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(b) => std::sync::Arc::new(crate::SqliteThrottleStore::new(b)),
        }
    }

    /// The DPoP proof replay cache on this database (give it to
    /// [`DpopVerifierBuilder::replay_cache`](portcullis_jwt::dpop::DpopVerifierBuilder::replay_cache)),
    /// shared by every instance on it, on the system clock.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    #[must_use]
    pub fn dpop_replay_cache(&self) -> std::sync::Arc<dyn portcullis_jwt::dpop::ReplayCache> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(b) => std::sync::Arc::new(crate::PgReplayCache::new(b)),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(b) => std::sync::Arc::new(crate::SqliteReplayCache::new(b)),
        }
    }

    /// The revocation store on this database, started, once its view has
    /// loaded the revocations already made (so this instance never trusts
    /// an empty view).
    ///
    /// # Errors
    ///
    /// The store cannot start (no tokio runtime), or the first snapshot
    /// did not load within `wait` (the database does not answer).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub async fn revocation_store(
        &self,
        wait: Duration,
    ) -> Result<std::sync::Arc<dyn portcullis_jwt::revocation::RevocationStore>, ConnectError> {
        let unanswered = |what: &str| ConnectError {
            url: what.to_owned(),
            what: format!(
                "the revocations did not load within {wait:?}; not serving without the \
                 revocations made by other instances"
            ),
        };
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(b) => {
                let store = crate::PgRevocationStore::new(b).map_err(|e| ConnectError {
                    url: "PostgreSQL".to_owned(),
                    what: e.to_string(),
                })?;
                if !store.wait_synced(wait).await {
                    return Err(unanswered("PostgreSQL"));
                }
                Ok(std::sync::Arc::new(store))
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(b) => {
                let store = crate::SqliteRevocationStore::new(b).map_err(|e| ConnectError {
                    url: "SQLite".to_owned(),
                    what: e.to_string(),
                })?;
                if !store.wait_synced(wait).await {
                    return Err(unanswered("SQLite"));
                }
                Ok(std::sync::Arc::new(store))
            }
        }
    }

    /// Creates or upgrades the tables.
    ///
    /// # Errors
    ///
    /// The database cannot be reached or refused a migration.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(b) => b.migrate().await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(b) => b.migrate().await,
        }
    }
}
