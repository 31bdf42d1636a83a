//! What [`PgRevocationStore`](super::PgRevocationStore) and its listener
//! task share: the view, the sync and health state, and the statements,
//! built once from the names.

use crate::pg::DB_NOW_MS;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use portcullis_core::SharedClock;
use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
use portcullis_jwt::revocation::RevocationView;
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Entry, SyncState};
use crate::PgBackend;
use crate::names::Names;
use crate::purge::Purger;

/// What the store and its listener task share.
pub(super) struct StoreState {
    pub(super) backend: PgBackend,
    pub(super) view: RevocationView,
    pub(super) clock: SharedClock,
    pub(super) sql: Statements,
    pub(super) channel: String,
    /// Rows per snapshot statement.
    pub(super) snapshot_page: u32,
    pub(super) sync: watch::Sender<SyncState>,
    pub(super) messages: AtomicU64,
    pub(super) health: Mutex<Health>,
    pub(super) purge_tokens: Arc<Purger>,
    pub(super) purge_sessions: Arc<Purger>,
    /// Where the store's events go (source `postgres`).
    pub(super) events: Events,
}

/// The source of the store's events.
pub(super) const EVENT_SOURCE: &str = "postgres";

/// When the listener's connection was last verified alive, and whether
/// the watchdog has marked the view stale since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Health {
    pub(super) alive_at: Instant,
    pub(super) stale: bool,
}

impl StoreState {
    pub(super) fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection answered (a ping, a message): it is alive now.
    /// Returns whether the view is stale (then the listener loads a fresh
    /// snapshot before trusting it again).
    pub(super) fn alive(&self) -> bool {
        let mut h = self.health();
        h.alive_at = Instant::now();
        h.stale
    }

    /// A fresh snapshot has loaded: the view is current and trusted. A view
    /// the watchdog had marked stale is in step again: the
    /// `revocation_view_recovered` event (not on every connect).
    pub(super) fn fresh(&self) {
        let was_stale = {
            let mut h = self.health();
            h.alive_at = Instant::now();
            std::mem::replace(&mut h.stale, false)
        };
        self.view.mark_ready();
        if was_stale {
            self.events
                .emit(|| AuthEvent::new(EVENT_SOURCE, AuthEventKind::RevocationViewRecovered));
        }
    }
}

/// Every statement of the store, built once from the names.
pub(super) struct Statements {
    pub(super) revoke_token: SqlStr,
    pub(super) revoke_session: SqlStr,
    pub(super) revoke_user: SqlStr,
    pub(super) token_row: SqlStr,
    pub(super) session_row: SqlStr,
    pub(super) user_row: SqlStr,
    pub(super) snapshot_tokens: SqlStr,
    pub(super) snapshot_sessions: SqlStr,
    pub(super) snapshot_users: SqlStr,
    pub(super) purge_tokens: SqlStr,
    pub(super) purge_sessions: SqlStr,
}

fn sql(names: &Names, template: &str) -> SqlStr {
    AssertSqlSafe(names.render(template)).into_sql_str()
}

impl Statements {
    pub(super) fn new(names: &Names) -> Self {
        // `$1` digest, `$2` id, `$3` expiry (ms), `$4` channel, `$5` message.
        // One statement, so one transaction: the message is sent at commit,
        // and not at all if the upsert fails.
        let revoke_entry = |table: &str| {
            sql(
                names,
                &format!(
                    "WITH w AS (INSERT INTO {{table:{table}}} AS t (id_digest, id, expires_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (id_digest) DO UPDATE \
                     SET expires_at = GREATEST(t.expires_at, EXCLUDED.expires_at) RETURNING 1) \
                     SELECT pg_notify($4, $5) FROM w"
                ),
            )
        };
        let row = |table: &str| {
            sql(
                names,
                &format!("SELECT id, expires_at FROM {{table:{table}}} WHERE id_digest = $1"),
            )
        };
        // One page of the rows that neither clock has put past their keep:
        // `$1` the last key of the page before (empty for the first), `$2`
        // the caller's now (ms), `$3` how long rows are kept past their
        // expiry (ms), `$4` the page size. The page walks the primary key.
        let snapshot = |table: &str| {
            sql(
                names,
                &format!(
                    "SELECT id_digest, id, expires_at FROM {{table:{table}}} \
                     WHERE id_digest > $1 AND expires_at >= LEAST($2, {DB_NOW_MS}) - $3 \
                     ORDER BY id_digest LIMIT $4"
                ),
            )
        };
        // `$1` now (ms), `$2` kept (ms), `$3` batch size. The inner select
        // descends the expiry index and locks what it picks, skipping rows
        // another purge holds; the delete is a TID scan.
        let purge = |table: &str| {
            sql(
                names,
                &format!(
                    "DELETE FROM {{table:{table}}} WHERE ctid = ANY (ARRAY(\
                     SELECT ctid FROM {{table:{table}}} \
                     WHERE expires_at < LEAST($1, {DB_NOW_MS}) - $2 \
                     LIMIT $3 FOR UPDATE SKIP LOCKED))"
                ),
            )
        };
        Self {
            revoke_token: revoke_entry(Entry::Token.table()),
            revoke_session: revoke_entry(Entry::Session.table()),
            // `$1` digest, `$2` user id, `$3` this instance's version
            // (the floor), `$4` channel, `$5` message.
            revoke_user: sql(
                names,
                "WITH w AS (INSERT INTO {table:revoked_users} AS t (user_digest, user_id, version) \
                 VALUES ($1, $2, $3::bigint + 1) ON CONFLICT (user_digest) DO UPDATE \
                 SET version = GREATEST(t.version, $3::bigint) + 1 RETURNING version) \
                 SELECT w.version, pg_notify($4, $5) FROM w",
            ),
            token_row: row(Entry::Token.table()),
            session_row: row(Entry::Session.table()),
            user_row: sql(
                names,
                "SELECT user_id, version FROM {table:revoked_users} WHERE user_digest = $1",
            ),
            snapshot_tokens: snapshot(Entry::Token.table()),
            snapshot_sessions: snapshot(Entry::Session.table()),
            // `$1` the last key of the page before, `$2` the page size.
            snapshot_users: sql(
                names,
                "SELECT user_digest, user_id, version FROM {table:revoked_users} \
                 WHERE user_digest > $1 ORDER BY user_digest LIMIT $2",
            ),
            purge_tokens: purge(Entry::Token.table()),
            purge_sessions: purge(Entry::Session.table()),
        }
    }
}
