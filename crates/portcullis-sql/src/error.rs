//! From sqlx's errors to [`StoreError`]: every call bounded in time, every
//! database failure a backend error (the layers answer 503, never "logged
//! out"), and nothing of the connection string, a bound value or a row in
//! the error that reaches logs.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use portcullis_core::StoreError;

/// A database failure, as much of it as may be logged: the kind, the
/// SQLSTATE or SQLite code, and the server's message (which names
/// constraints and tables, never a bound value: the details that can echo
/// one, PostgreSQL's `DETAIL` line, are left out).
#[derive(Debug)]
pub struct SqlError {
    what: &'static str,
    message: String,
}

impl SqlError {
    /// What kind of failure (`database`, `io`, `protocol`, `pool closed`...).
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.what)
        } else {
            write!(f, "{}: {}", self.what, self.message)
        }
    }
}

impl std::error::Error for SqlError {}

/// Maps a sqlx error: pool and statement timeouts to
/// [`StoreError::timeout`], a row that does not decode to
/// [`StoreError::corrupt`], everything else to [`StoreError::backend`].
pub(crate) fn store_error(e: &sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let (what, message) = match e {
        E::PoolTimedOut => return StoreError::timeout(),
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. } => {
            return StoreError::corrupt(SqlError {
                what: "a row does not decode",
                message: String::new(),
            });
        }
        // PostgreSQL's `statement_timeout` and `lock_timeout`, when the
        // application sets them: the server gave up waiting.
        E::Database(db) if matches!(db.code().as_deref(), Some("57014" | "55P03")) => {
            return StoreError::timeout();
        }
        E::Database(db) => (
            "database",
            match db.code() {
                Some(code) => format!("{code}: {}", db.message()),
                None => db.message().to_owned(),
            },
        ),
        E::Io(io) => ("io", io.to_string()),
        E::PoolClosed => ("pool closed", String::new()),
        E::WorkerCrashed => ("database worker crashed", String::new()),
        E::Tls(_) => ("tls", String::new()),
        E::Protocol(_) => ("protocol", String::new()),
        E::Configuration(_) => ("configuration", String::new()),
        E::Migrate(_) => ("migration", String::new()),
        _ => ("other", String::new()),
    };
    StoreError::backend(SqlError { what, message })
}

/// A loggable description of a sqlx error (no URL, no bound value).
pub(crate) fn describe(e: &sqlx::Error) -> String {
    use std::error::Error as _;
    let mapped = store_error(e);
    mapped
        .source()
        .map_or_else(|| mapped.to_string(), ToString::to_string)
}

/// Runs one store call (the pool checkout, its statements, their commit)
/// within `limit`: past it the call is dropped (sqlx rolls back an open
/// transaction) and the answer is [`StoreError::timeout`].
pub(crate) async fn bounded<T, F>(limit: Duration, call: F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::timeout()))
}

/// `?` on a sqlx result inside a store call.
pub(crate) trait SqlResultExt<T> {
    /// The result with its error mapped by [`store_error`].
    fn store(self) -> Result<T, StoreError>;
}

impl<T> SqlResultExt<T> for Result<T, sqlx::Error> {
    fn store(self) -> Result<T, StoreError> {
        self.map_err(|e| store_error(&e))
    }
}
