//! [`DatabaseUrl`]: a connection string that never prints its password.

use std::fmt;

use portcullis_core::store::redact_url;

/// Which database a [`DatabaseUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseKind {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:` (a file, or `sqlite::memory:`).
    Sqlite,
}

/// A connection string as the application configured it (say, from
/// `DATABASE_URL`), whose `Debug` and `Display` redact the user-info and
/// the query, where passwords and keys are.
///
/// ```
/// use portcullis_sql::{DatabaseKind, DatabaseUrl};
///
/// let url = DatabaseUrl::new("postgres://app:s3cret@db/app").unwrap();
/// assert_eq!(url.kind(), DatabaseKind::Postgres);
/// assert_eq!(format!("{url:?}"), "DatabaseUrl(\"postgres://REDACTED@db/app\")");
/// assert!(!url.to_string().contains("s3cret"));
/// assert!(DatabaseUrl::new("mysql://db/app").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    kind: DatabaseKind,
}

/// A URL that names no database this crate serves (it carries the scheme
/// only, never the rest of the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported database URL scheme {0} (expected postgres://, postgresql:// or sqlite:)")]
pub struct UnsupportedUrl(String);

impl DatabaseUrl {
    /// Reads the scheme.
    ///
    /// # Errors
    ///
    /// [`UnsupportedUrl`] (redacted) for any other scheme.
    pub fn new(url: impl Into<String>) -> Result<Self, UnsupportedUrl> {
        let url = url.into();
        let lower = url.get(..13).unwrap_or(&url).to_ascii_lowercase();
        let kind = if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            DatabaseKind::Postgres
        } else if lower.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else {
            // Only what looks like a scheme: the rest of a mistaken
            // connection string may be a password.
            let scheme = url
                .split_once(':')
                .map(|(s, _)| s)
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= 16
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+')
                })
                .map_or_else(|| "(not a URL)".to_owned(), |s| format!("{s}:"));
            return Err(UnsupportedUrl(scheme));
        };
        Ok(Self { url, kind })
    }

    /// Which database it names.
    #[must_use]
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The URL itself, secrets included: only for the driver.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&redact_url(&self.url))
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.url))
    }
}
