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
//! | `jwt` | no | the JWT revocation stores and the DPoP proof replay caches (the `dpop` module) |
//! | `refresh` | no | the refresh-family stores (turns on `jwt`) |
//! | `throttle` | no | the login throttle's counter stores (`PgThrottleStore`, `SqliteThrottleStore`; see the `throttle` module) |
//! | `testing` | no | what the conformance suites need |
//! | `tracing` | no | debug/warn events (never an id, a token, data or the connection string) |
//!
//! Enable at least one of `postgres` and `sqlite` (without either, the
//! build stops with an error saying so). This crate needs Rust
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
//! # The stores
//!
//! | store | trait | what one request costs (PostgreSQL, measured with `pg_stat_statements`) |
//! |---|---|---|
//! | [`PgSessionStore`], [`SqliteSessionStore`] | `portcullis_session::SessionStore` | a session load: **one** `SELECT` by primary key; an update or touch: one key-level `UPDATE` that never inserts; a login with a per-user cap: one transaction serialized per user (4 to 6 statements) |
//! | [`PgRefreshStore`], [`SqliteRefreshStore`] | `portcullis_refresh::RefreshStore` | a rotation: **one** compare-and-swap `UPDATE` on the presented token's digest; a repeat inside the grace window 2; a reuse 3 |
//! | [`PgRevocationStore`], [`SqliteRevocationStore`] | `portcullis_jwt::revocation::RevocationStore` | a JWT request: **none** (the view is in process); a revocation: one statement (upsert and `pg_notify` together) |
//!
//! Each type's docs give its schema and the statements of every operation.
//! On a pool with sqlx's default `test_before_acquire(true)`, every call
//! also waits for one ping round trip before its statement: build the pool
//! with `.test_before_acquire(false)` (as [`Database::connect`] does). sqlx
//! also pings every pooled connection on its way back to the pool, whatever
//! the options, so the PostgreSQL session store runs its loads on a few
//! connections of its own ([`PgConfig::read_connections`], 8 by default,
//! beside the pool: count them in the server's `max_connections`). The
//! PostgreSQL session store reruns a call on another pooled connection when
//! the server closed the one it took (a restart, `pg_terminate_backend`),
//! within the same time bound, and only when the call gives the same result
//! twice.
//!
//! # Atomicity
//!
//! Every rule is enforced by the database, in one statement or one
//! transaction, correct under `READ COMMITTED` with any number of instances:
//! create-if-absent (an upsert that replaces only an expired holder), the
//! update that never inserts (a session deleted meanwhile stays deleted),
//! key-level changes (concurrent requests changing different keys both
//! survive), the per-user cap (PostgreSQL: a transaction-scoped advisory
//! lock on the user, released at commit or when the connection dies;
//! SQLite: `BEGIN IMMEDIATE`), and refresh rotation (the row is updated only
//! if its current token is the one presented: two instances racing one
//! token end with exactly one successor).
//!
//! # Revocations across instances
//!
//! On PostgreSQL every revocation is written and announced by `pg_notify`
//! in one statement, so a message goes out only for a change that
//! committed; the payload is a digest, never an id. Each instance's
//! [`PgRevocationStore`] runs a listener on a connection of its own (never
//! one of the application's pool): `LISTEN`, then a snapshot of the tables
//! merged into the view, then the messages; after every reconnect it takes a
//! snapshot again (PostgreSQL does not keep messages for a listener that was
//! away). A silent connection is pinged; past the staleness bound (4 s by
//! default) without a confirmed connection the view is stale and JWT
//! requests get 503 until it recovers, which it does by itself. Until the
//! first snapshot has loaded, the view is not ready and the layers answer
//! 503 too. Measured on one PostgreSQL with two instances, 100
//! revocations: the other instance refused the token a median of 0.2 to
//! 2.5 ms and at most 4 to 28 ms after the revoking call returned (debug
//! build, busy 2-core machine, four runs).
//!
//! [`SqliteRevocationStore`] serves one process: stores on the same file
//! and prefix share one view, loaded from the file at start and given each
//! revocation before it commits, so a write that times out and commits
//! later is never missing from it. Every snapshot, on both databases, is
//! read in pages (`snapshot_page` rows, 10,000 by default), each under the
//! backend's timeout, so its time grows with the table and never fails on
//! size alone. A database restored from an older backup brings back what
//! it held: revocations made since are lost (run `revoke_user` again for
//! the users revoked since).
//!
//! # Outages and timeouts
//!
//! Every store call (pool checkout, statements, commit) is bounded by the
//! backend's timeout (500 ms by default): past it the call fails with
//! `StoreErrorKind::Timeout` and the layers answer 503 with `Retry-After`,
//! never 500 and never "logged out". A stopped server, a killed connection,
//! a locked or read-only SQLite file are backend errors, 503 too; service
//! resumes by itself. PostgreSQL's own `statement_timeout` and
//! `lock_timeout`, when the application sets them, count as timeouts. A
//! call that timed out may still take effect: its statement may already
//! be on its way (PostgreSQL) or queued on the connection's worker
//! (SQLite), and commits when the database gets to it: a late delete or
//! revocation ends what it was asked to end, a late update writes what it
//! was asked to write (never into a deleted session), a late create stores
//! a session whose token was never handed out, and a late reuse mark is
//! answered at the next presentation of a replaced token. The SQLite
//! revocation store puts each revocation in its view before the write, so
//! a late one is never missing there.
//!
//! # Purging expired rows
//!
//! Each store deletes its expired rows itself, 60 s after they ended by
//! the earlier of the instance's clock and the database's (PostgreSQL;
//! SQLite: the instance's), so an instance whose clock is a little behind
//! still sees them, in batches
//! ([`PurgeConfig`]: 500 rows per statement, a pause between batches, at
//! most one purge per table per instance per minute, started by a store
//! call in the background): PostgreSQL deletes by `ctid` rows that no
//! other transaction holds (`FOR UPDATE SKIP LOCKED`), SQLite by `rowid`;
//! neither ever runs one statement over the whole table. The stores also
//! have a `purge_expired` method for applications that schedule it.
//!
//! # `UNLOGGED` sessions (PostgreSQL)
//!
//! [`PgConfig::unlogged_sessions`] makes the sessions table `UNLOGGED`:
//! writes skip the write-ahead log and cost less, but PostgreSQL empties
//! the table after a crash (not after a clean stop) and does not replicate
//! it, so a crash or a fail-over to a standby logs every user out. Refresh
//! families and revocations are always logged: losing a revocation would
//! let a revoked token in again.
//!
//! # Clocks
//!
//! Deadlines are the application's clock's milliseconds, compared with the
//! `now` each call passes, as the Redis stores do: acceptance is judged by
//! the instance's own clock, so instances must keep their clocks
//! synchronized (NTP). What the PostgreSQL stores forget or serve never
//! hangs on one instance's clock:
//!
//! - every purge deletes only what the **earlier** of the instance's clock
//!   and the database's (`statement_timestamp()`) has put past its end, so
//!   an instance whose clock jumped ahead, by any amount, deletes nothing
//!   another instance still serves;
//! - sessions (`load`, `update`, `touch`) and refresh families (`rotate`,
//!   `get`, `list_user`) are served only until 60 s past their end as the
//!   database's clock counts it, checked in the same statement: each write
//!   records its instance's clock's offset from the database's
//!   (`clock_offset`), so an instance whose clock was set back cannot serve
//!   a session or family that ended long ago and that no purge has deleted
//!   yet. This is Redis' key expiry in SQL; it costs no statement.
//!
//! A SQLite file serves the processes of one host, which share its clock:
//! the SQLite stores judge and purge by the caller's clock alone.
//!
//! # Connection strings
//!
//! The stores never print the pool's connect options (sqlx's `Debug` of
//! them shows the password). [`DatabaseUrl`] holds a `DATABASE_URL` whose
//! `Debug` and `Display` redact the user-info and the query, and errors
//! carry no URL (see [`SqlError`]).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!(
    "portcullis-sql needs a database: enable its `postgres` or `sqlite` feature (or both)"
);

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod connect;
mod error;
mod migrate;
mod names;
mod purge;
mod url;

#[cfg(all(feature = "postgres", feature = "session"))]
mod direct;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "session")]
mod session;

#[cfg(feature = "refresh")]
mod refresh;

#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod dpop;
#[cfg(feature = "jwt")]
mod revocation;

#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub mod throttle;

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
#[cfg(all(feature = "jwt", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "postgres"))))]
pub use dpop::PgReplayCache;
#[cfg(all(feature = "jwt", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "jwt", feature = "sqlite"))))]
pub use dpop::SqliteReplayCache;
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

// throttle: the login throttle's counter stores.
#[cfg(all(feature = "throttle", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "throttle", feature = "postgres"))))]
pub use throttle::PgThrottleStore;
#[cfg(all(feature = "throttle", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "throttle", feature = "sqlite"))))]
pub use throttle::SqliteThrottleStore;
