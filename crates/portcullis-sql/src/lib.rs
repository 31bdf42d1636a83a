//! PostgreSQL and SQLite stores for the portcullis layers: sessions,
//! refresh-token families and JWT revocations in the database the
//! application already runs, as strong as the Redis stores.
//!
//! - **Digests only**: session ids, refresh tokens and token ids are stored
//!   as SHA-256 digests; a database dump or a replica yields no usable
//!   credential.
//! - **A user index**: list, count, cap and revoke a user's sessions and
//!   refresh families, each an index descent (`O(log n)`) plus that user's
//!   rows.
//! - **Atomic in the database**: create-if-absent, update-only (a deleted
//!   session never comes back), key-level updates that keep concurrent
//!   writers' keys, the per-user cap, and refresh rotation as a
//!   compare-and-swap, each one statement or one transaction, correct under
//!   `READ COMMITTED` with instances racing.
//! - **Pushed revocation** (PostgreSQL `LISTEN/NOTIFY`), no database call
//!   per JWT request.
//! - **Fail closed**: every call is bounded in time; an outage is a 503,
//!   never a 500, a hang or "logged out", and service resumes by itself.
//!
//! The stores take the application's pool (`PgPool`, `SqlitePool`):
//!
//! ```no_run
//! # #[cfg(all(feature = "postgres", feature = "session"))]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis_session::{SessionConfig, SessionLayer};
//! use portcullis_sql::{PgConfig, PgSessionStore};
//! use sqlx::postgres::PgPoolOptions;
//!
//! let pool = PgPoolOptions::new()
//!     .test_before_acquire(false)
//!     .connect("postgres://app@db.internal/app")
//!     .await?;
//! let backend = PgConfig::new(pool).build()?;
//! backend.migrate().await?;
//! let layer = SessionLayer::new(PgSessionStore::new(&backend), SessionConfig::default())?;
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `postgres` | no | [`PgBackend`] and the `Pg*` stores |
//! | `sqlite` | no | [`SqliteBackend`] and the `Sqlite*` stores (SQLite bundled by sqlx) |
//! | `session` | yes | the session stores |
//! | `jwt` | no | the JWT revocation stores |
//! | `refresh` | no | the refresh-family stores (turns on `jwt`) |
//! | `testing` | no | what the conformance suites need |
//! | `tracing` | no | debug/warn events (never an id, a token, data or the connection string) |
//!
//! Enable at least one of `postgres` and `sqlite`. This crate needs Rust
//! 1.94 (sqlx 0.9's minimum); the rest of portcullis needs 1.85.
//!
//! # sqlx
//!
//! The crate uses sqlx 0.9 without a TLS backend and without its macros:
//! the application's own `sqlx` features unify with ours (its TLS choice
//! applies to our connections too), and the SQL is built once per store
//! from the validated names. The published `tower-sessions-sqlx-store`
//! (0.15) is still on sqlx 0.8, whose pool is another type: an
//! application can share one pool with it once it moves to sqlx 0.9.
//!
//! # Schema and migrations
//!
//! [`PgBackend::migrate`] and [`SqliteBackend::migrate`] create or upgrade
//! every table in one call (idempotent, safe to run at every start), and
//! record what they applied in a tracking table of their own
//! (`<schema>.<prefix>migrations`, never the application's
//! `_sqlx_migrations`). The same SQL rendered with the default names is in
//! the crate's `migrations/postgres/` and `migrations/sqlite/`, for teams
//! that run their own migration tool.
//!
//! Names are configurable ([`PgConfig::schema`], `table_prefix`), checked
//! when the backend is built (`a-z`, `0-9`, `_`; never a name from a
//! request), and quoted in every statement.
//!
//! # Connection strings
//!
//! The stores never print the pool's connect options (sqlx's `Debug` of
//! them shows the password). [`DatabaseUrl`] holds a `DATABASE_URL` whose
//! `Debug` and `Display` redact the user-info and the query, and errors
//! carry no URL (see [`SqlError`]).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod connect;
mod error;
mod migrate;
mod names;
mod purge;
mod url;

#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "session")]
mod session;

#[cfg(feature = "refresh")]
mod refresh;

#[cfg(feature = "jwt")]
mod revocation;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub use connect::{ConnectError, Database};
pub use error::SqlError;
pub use names::NameError;
pub use purge::PurgeConfig;
pub use url::{DatabaseKind, DatabaseUrl, UnsupportedUrl};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use pg::{PgBackend, PgConfig};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteBackend, SqliteConfig};

/// sqlx, as this crate uses it (build pools with it to be sure the types
/// match).
pub use sqlx;

// session: the session stores.
#[cfg(all(feature = "session", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "session", feature = "postgres"))))]
pub use session::PgSessionStore;
#[cfg(all(feature = "session", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "session", feature = "sqlite"))))]
pub use session::SqliteSessionStore;

// refresh: the refresh-family stores.
#[cfg(all(feature = "refresh", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "refresh", feature = "postgres"))))]
pub use refresh::PgRefreshStore;
#[cfg(all(feature = "refresh", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "refresh", feature = "sqlite"))))]
pub use refresh::SqliteRefreshStore;

// revocation: the JWT revocation stores.
#[cfg(all(feature = "jwt", any(feature = "postgres", feature = "sqlite")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "jwt", any(feature = "postgres", feature = "sqlite"))))
)]
pub use revocation::RevocationStartError;
#[cfg(all(feature = "jwt", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "postgres"))))]
pub use revocation::{PgRevocationStore, PgRevocationStoreBuilder};
#[cfg(all(feature = "jwt", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "sqlite"))))]
pub use revocation::{SqliteRevocationStore, SqliteRevocationStoreBuilder};
