//! The listener task of [`PgRevocationStore`](super::PgRevocationStore):
//! one dedicated connection per store, `LISTEN` then a snapshot after
//! every (re)connect, a ping on silence, reconnection with backoff, and
//! the staleness watchdog.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_core::events::{AuthEvent, AuthEventKind};
use portcullis_core::{StoreError, TokenDigest};
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::time::{Instant, timeout};

use super::pg_state::{EVENT_SOURCE, StoreState};
use super::{
    Entry, KEEP_MS, PageRows, SyncState, apply_page, entry_event, id_of, jitter, now_ms, user_event,
};
use crate::error::SqlResultExt as _;

/// The `application_name` of the listener's connection (what
/// `pg_stat_activity` shows).
pub(super) const APPLICATION_NAME: &str = "portcullis-revocations";

/// The listener's timing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) ping_interval: Duration,
    pub(super) min_backoff: Duration,
    pub(super) max_backoff: Duration,
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It never got as far as a loaded snapshot.
    Failed,
    /// It was current, then the connection was lost.
    Lost,
}

/// Listens, loads snapshots and applies messages until the task is
/// aborted (when the store is dropped).
pub(super) async fn run(shared: Arc<StoreState>, timing: Timing) {
    let mut backoff = timing.min_backoff;
    loop {
        let ended = connection(&shared, timing.ping_interval).await;
        shared.sync.send_modify(|s| s.connected = false);
        match ended {
            Ended::Lost => {
                portcullis_core::event!(
                    warn,
                    reason = "revocation-listener-lost",
                    "revocation listener lost its connection; reconnecting"
                );
                backoff = timing.min_backoff;
            }
            Ended::Failed => {
                portcullis_core::event!(
                    debug,
                    reason = "revocation-listener-connect-failed",
                    "revocation listener could not connect, listen or load its snapshot"
                );
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        if ended == Ended::Failed {
            backoff = (backoff * 2).min(timing.max_backoff);
        }
    }
}

/// One connection: connect, `LISTEN`, load the snapshot, then apply
/// messages and ping on silence until something fails.
///
/// Each connection comes from a one-connection pool of its own, built from
/// the application pool's connect options (never printed: they hold the
/// password) and dropped with the connection, so that a connection left
/// hanging on a dead network path never holds up the next one.
async fn connection(shared: &StoreState, ping_interval: Duration) -> Ended {
    let bound = shared.backend.timeout();
    let options = (*shared.backend.pool().connect_options())
        .clone()
        .application_name(APPLICATION_NAME);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(bound)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let Ok(Ok(mut listener)) = timeout(bound, PgListener::connect_with(&pool)).await else {
        return Ended::Failed;
    };
    // A lost connection ends this one (`try_recv` answers `Ok(None)`);
    // the next one listens first, then loads a snapshot.
    listener.eager_reconnect(false);
    if !matches!(
        timeout(bound, listener.listen(&shared.channel)).await,
        Ok(Ok(()))
    ) {
        return Ended::Failed;
    }
    // Listening first, then the snapshot: a change committed meanwhile is
    // in the snapshot, or in the stream (applied after it), or both.
    if let Err(_e) = load_snapshot(shared, &mut listener).await {
        portcullis_core::event!(
            debug,
            reason = "revocation-snapshot-failed",
            error = %_e,
            "revocation listener could not load the snapshot"
        );
        return Ended::Failed;
    }
    synced(shared);
    portcullis_core::event!(
        debug,
        reason = "revocation-listener-synced",
        "revocation listener connected; snapshot loaded"
    );
    loop {
        match timeout(ping_interval, listener.try_recv()).await {
            Ok(Ok(Some(message))) => {
                if apply_message(shared, &mut listener, message.payload())
                    .await
                    .is_err()
                {
                    return Ended::Lost;
                }
                shared.messages.fetch_add(1, Ordering::Relaxed);
            }
            // The connection was lost (`Ok(None)`), or another failure.
            Ok(_) => return Ended::Lost,
            // Silent for a ping interval: is the connection still there?
            Err(_) => {
                if !matches!(
                    timeout(bound, sqlx::query("SELECT 1").execute(&mut listener)).await,
                    Ok(Ok(_))
                ) {
                    return Ended::Lost;
                }
            }
        }
        // Answered: the connection is verified alive. Stale (the pings
        // were late: a busy runtime, a slow server), a fresh snapshot
        // makes the view current again.
        if shared.alive() {
            if load_snapshot(shared, &mut listener).await.is_err() {
                return Ended::Lost;
            }
            synced(shared);
        }
    }
}

/// A snapshot has loaded on a connection that listens: the view is
/// trusted (again), and whoever waits for the sync is told.
fn synced(shared: &StoreState) {
    shared.fresh();
    shared.sync.send_modify(|s| {
        *s = SyncState {
            connected: true,
            snapshots: s.snapshots + 1,
        };
    });
}

/// Reads every live row on the listening connection and merges it into
/// the view (merged, never replacing: revocations only grow, and one this
/// instance made while the snapshot was read is not dropped). Each table
/// is read in pages along its key, each page one statement under the
/// backend's timeout; the caller marks the view synced only after the
/// last page. Returns how many rows were read.
async fn load_snapshot(
    shared: &StoreState,
    listener: &mut PgListener,
) -> Result<usize, StoreError> {
    let bound = shared.backend.timeout();
    let page = shared.snapshot_page;
    let now = now_ms(&shared.clock);
    let mut read = 0;
    for entry in [Entry::Token, Entry::Session] {
        let statement = match entry {
            Entry::Token => &shared.sql.snapshot_tokens,
            Entry::Session => &shared.sql.snapshot_sessions,
        };
        let mut after = Some(Vec::new());
        while let Some(key) = after {
            let rows: PageRows = timeout(
                bound,
                sqlx::query_as(statement.clone())
                    .bind(key)
                    .bind(now)
                    .bind(KEEP_MS)
                    .bind(i64::from(page))
                    .fetch_all(&mut *listener),
            )
            .await
            .map_err(|_| StoreError::timeout())?
            .store()?;
            read += rows.len();
            after = apply_page(&shared.view, rows, page, entry_event(entry));
        }
    }
    let mut after = Some(Vec::new());
    while let Some(key) = after {
        let rows: PageRows = timeout(
            bound,
            sqlx::query_as(shared.sql.snapshot_users.clone())
                .bind(key)
                .bind(i64::from(page))
                .fetch_all(&mut *listener),
        )
        .await
        .map_err(|_| StoreError::timeout())?
        .store()?;
        read += rows.len();
        after = apply_page(&shared.view, rows, page, user_event);
    }
    Ok(read)
}

/// A message of the channel: `t:<hex>`, `s:<hex>` or `u:<hex>`, the
/// SHA-256 of the id, whose row the listener reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Message {
    /// A denylist row (tokens or sessions).
    Entry(Entry, TokenDigest),
    /// A user version row.
    User(TokenDigest),
}

/// Parses a message strictly (anything else is not ours).
pub(super) fn parse_message(payload: &str) -> Option<Message> {
    let (tag, hex) = payload.split_once(':')?;
    let key = TokenDigest::from_hex(hex).ok()?;
    match tag {
        "t" => Some(Message::Entry(Entry::Token, key)),
        "s" => Some(Message::Entry(Entry::Session, key)),
        "u" => Some(Message::User(key)),
        _ => None,
    }
}

/// Reads the row a message names and applies it. A malformed message, or
/// one whose row is gone (purged since), changes nothing.
async fn apply_message(
    shared: &StoreState,
    listener: &mut PgListener,
    payload: &str,
) -> Result<(), StoreError> {
    let Some(message) = parse_message(payload) else {
        portcullis_core::event!(
            debug,
            reason = "revocation-message-malformed",
            "ignored a malformed revocation message"
        );
        return Ok(());
    };
    let bound = shared.backend.timeout();
    let event = match message {
        Message::Entry(entry, key) => {
            let statement = match entry {
                Entry::Token => &shared.sql.token_row,
                Entry::Session => &shared.sql.session_row,
            };
            let row: Option<(Vec<u8>, i64)> = timeout(
                bound,
                sqlx::query_as(statement.clone())
                    .bind(&key.as_bytes()[..])
                    .fetch_optional(&mut *listener),
            )
            .await
            .map_err(|_| StoreError::timeout())?
            .store()?;
            row.and_then(|(id, expires_at)| Some(entry.event(id_of(id)?, expires_at)))
        }
        Message::User(key) => {
            let row: Option<(Vec<u8>, i64)> = timeout(
                bound,
                sqlx::query_as(shared.sql.user_row.clone())
                    .bind(&key.as_bytes()[..])
                    .fetch_optional(&mut *listener),
            )
            .await
            .map_err(|_| StoreError::timeout())?
            .store()?;
            row.and_then(|(user, version)| user_event(user, version))
        }
    };
    if let Some(event) = event {
        shared.view.apply(&event);
    }
    Ok(())
}

/// Marks the view stale once the listener's connection has gone `bound`
/// without being verified alive (no ping answered, no message, no
/// snapshot). A task of its own: the bound holds whatever the listener is
/// waiting on (a connection attempt, its backoff, a reply that never comes
/// from a frozen server). The listener marks the view ready again after a
/// fresh snapshot.
pub(super) async fn watchdog(shared: Arc<StoreState>, bound: Duration) {
    loop {
        let deadline = {
            let mut h = shared.health();
            let deadline = h.alive_at + bound;
            if !h.stale && Instant::now() >= deadline {
                h.stale = true;
                shared.view.mark_stale();
                shared
                    .events
                    .emit(|| AuthEvent::new(EVENT_SOURCE, AuthEventKind::RevocationViewStale));
                portcullis_core::event!(
                    warn,
                    reason = "revocation-view-stale",
                    bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                    "revocation view cut off from PostgreSQL past its staleness bound; JWT requests answer 503"
                );
            }
            deadline
        };
        let now = Instant::now();
        if deadline > now {
            tokio::time::sleep_until(deadline).await;
        } else {
            // Stale: look again soon for the next deadline.
            tokio::time::sleep(bound / 4).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_strictly() {
        let key = TokenDigest::of(b"alice");
        let hex = key.to_hex();
        assert_eq!(parse_message(&format!("u:{hex}")), Some(Message::User(key)));
        assert_eq!(
            parse_message(&format!("t:{hex}")),
            Some(Message::Entry(Entry::Token, key))
        );
        assert_eq!(
            parse_message(&format!("s:{hex}")),
            Some(Message::Entry(Entry::Session, key))
        );
        for bad in [
            String::new(),
            "u".into(),
            "u:".into(),
            format!("x:{hex}"),
            format!("u:{}", &hex[1..]),
            format!("u:{hex}0"),
            format!("u:{}", hex.to_uppercase()),
            format!("u {hex}"),
        ] {
            assert_eq!(parse_message(&bad), None, "{bad:?}");
        }
    }
}
