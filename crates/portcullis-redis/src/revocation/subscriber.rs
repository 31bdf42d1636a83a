//! The subscriber task: one dedicated pub/sub connection per store, a
//! snapshot after every (re)connect, pings, reconnection with backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_redis::redis::{self, Client, Value};
use futures_util::StreamExt as _;
use portcullis_core::StoreError;
use portcullis_core::events::{AuthEvent, AuthEventKind};
use portcullis_jwt::revocation::RevocationEvent;
use tokio::time::{Instant, MissedTickBehavior, timeout};

use super::{StoreState, SyncState, parse_message};
use crate::backend::{Idempotent, Op};

/// Entries asked for per `ZSCAN`/`HSCAN` call of a snapshot.
const SCAN_COUNT: u32 = 1000;

/// The subscriber's timing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) ping_interval: Duration,
    pub(super) min_backoff: Duration,
    pub(super) max_backoff: Duration,
}

/// How one subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It never got as far as a loaded snapshot.
    Failed,
    /// It was current, then the connection was lost.
    Lost,
}

/// Subscribes, loads snapshots and applies messages until the task is
/// aborted (when the store is dropped).
pub(super) async fn run(shared: Arc<StoreState>, clients: Vec<Client>, timing: Timing) {
    let mut backoff = timing.min_backoff;
    let mut node = 0usize;
    loop {
        let Some(client) = clients.get(node % clients.len().max(1)) else {
            return;
        };
        let ended = subscription(&shared, client, timing.ping_interval).await;
        shared.sync.send_modify(|s| s.connected = false);
        match ended {
            Ended::Lost => {
                portcullis_core::event!(
                    warn,
                    reason = "revocation-subscriber-lost",
                    "revocation subscriber lost its connection; reconnecting"
                );
                backoff = timing.min_backoff;
            }
            Ended::Failed => {
                // Another node of a cluster may answer.
                node = node.wrapping_add(1);
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        if ended == Ended::Failed {
            backoff = (backoff * 2).min(timing.max_backoff);
        }
    }
}

/// `backoff` plus up to a quarter more, so that instances that lost Redis
/// together do not all come back in the same millisecond.
fn jitter(backoff: Duration) -> Duration {
    let mut b = [0u8; 1];
    if portcullis_core::token::fill_random(&mut b).is_err() {
        return backoff;
    }
    backoff + backoff / 4 * u32::from(b[0]) / 255
}

/// One connection: connect, subscribe, load the snapshot, then apply
/// messages and ping until the connection fails.
async fn subscription(shared: &StoreState, client: &Client, ping_interval: Duration) -> Ended {
    let bound = shared.backend.timeout();
    let Ok(Ok(pubsub)) = timeout(bound, client.get_async_pubsub()).await else {
        portcullis_core::event!(
            debug,
            reason = "revocation-subscriber-connect-failed",
            "revocation subscriber could not connect"
        );
        return Ended::Failed;
    };
    let (mut sink, mut stream) = pubsub.split();
    if !matches!(
        timeout(bound, sink.subscribe(&shared.keys.channel)).await,
        Ok(Ok(()))
    ) {
        return Ended::Failed;
    }
    // Subscribed first, then the snapshot: a change published meanwhile is
    // in the snapshot, or in the stream (applied after it), or both.
    if let Err(_e) = load_snapshot(shared).await {
        portcullis_core::event!(
            debug,
            reason = "revocation-snapshot-failed",
            error = %_e,
            "revocation subscriber could not load the snapshot"
        );
        return Ended::Failed;
    }
    // From the first snapshot on, layers may trust the view (again, if the
    // watchdog had marked it stale); then whoever waits for the sync is
    // told, so that a view is always ready once `wait_synced` returns.
    shared.fresh();
    shared.sync.send_modify(|s| {
        *s = SyncState {
            connected: true,
            snapshots: s.snapshots + 1,
        };
    });
    portcullis_core::event!(
        debug,
        reason = "revocation-subscriber-synced",
        "revocation subscriber connected; snapshot loaded"
    );
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost;
                };
                let Some(event) = parse_message(msg.get_payload_bytes()) else {
                    portcullis_core::event!(
                        debug,
                        reason = "revocation-message-malformed",
                        "ignored a malformed revocation message"
                    );
                    continue;
                };
                shared.view.apply(&event);
                shared.messages.fetch_add(1, Ordering::Relaxed);
                if shared.alive() && refresh(shared).await.is_err() {
                    return Ended::Lost;
                }
            }
            _ = ping.tick() => {
                if !matches!(timeout(bound, sink.ping::<Value>()).await, Ok(Ok(_))) {
                    return Ended::Lost;
                }
                // Answered: the connection is verified alive. Stale (the
                // pings were late: a busy runtime, a slow server), a fresh
                // snapshot makes the view current again.
                if shared.alive() && refresh(shared).await.is_err() {
                    return Ended::Lost;
                }
            }
        }
    }
}

/// Loads a fresh snapshot on a connection that is alive, for a view the
/// watchdog marked stale; the view is trusted again once it has loaded.
async fn refresh(shared: &StoreState) -> Result<(), StoreError> {
    load_snapshot(shared).await?;
    shared.fresh();
    Ok(())
}

/// Marks the view stale once the subscriber's connection has gone
/// `bound` without being verified alive (no ping answered, no message, no
/// snapshot). A task of its own: the bound holds whatever the subscriber
/// is waiting on (a connection attempt, its backoff, a reply that never
/// comes from a frozen server). The subscriber marks the view ready again
/// after a fresh snapshot.
pub(super) async fn watchdog(shared: Arc<StoreState>, bound: Duration) {
    loop {
        let deadline = {
            let mut h = shared.health();
            let deadline = h.alive_at + bound;
            if !h.stale && Instant::now() >= deadline {
                h.stale = true;
                shared.view.mark_stale();
                shared.events.emit(|| {
                    AuthEvent::new(super::EVENT_SOURCE, AuthEventKind::RevocationViewStale)
                });
                portcullis_core::event!(
                    warn,
                    reason = "revocation-view-stale",
                    bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                    "revocation view cut off from Redis past its staleness bound; JWT requests answer 503"
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

/// Reads every live entry and merges it into the view. The three reads go
/// out at once (one round trip on one server); each `ZSCAN`/`HSCAN` call
/// has the backend's time bound. Not atomic, and need not be: merging is
/// idempotent and every change made meanwhile also arrives as a message.
pub(super) async fn load_snapshot(shared: &StoreState) -> Result<usize, StoreError> {
    let (tokens, sessions, users, server) = futures_util::future::join4(
        scan_all(shared, "ZSCAN", &shared.keys.tokens),
        scan_all(shared, "ZSCAN", &shared.keys.sessions),
        scan_all(shared, "HSCAN", &shared.keys.users),
        shared.backend.server_secs(),
    )
    .await;
    // Redis keeps entries KEEP_SECS past their expiry by the earlier of
    // two clocks; the snapshot leaves out only what Redis itself would
    // forget now (the entry kept through its last second, as the view
    // does), and the view decides by its own rule what it keeps.
    let keep_from = shared
        .now_secs()
        .min(server?)
        .saturating_sub(super::KEEP_SECS);
    let mut events = Vec::new();
    for (jti, score) in tokens? {
        if let Some(expires_at) = score_secs(&score).filter(|e| *e >= keep_from) {
            events.push(RevocationEvent::Token { jti, expires_at });
        }
    }
    for (sid, score) in sessions? {
        if let Some(expires_at) = score_secs(&score).filter(|e| *e >= keep_from) {
            events.push(RevocationEvent::Session { sid, expires_at });
        }
    }
    for (user, version) in users? {
        if let Ok(version) = version.parse::<u64>() {
            events.push(RevocationEvent::User { user, version });
        }
    }
    for event in &events {
        shared.view.apply(event);
    }
    Ok(events.len())
}

/// A sorted-set score (seconds, as Redis prints a double) as whole seconds.
fn score_secs(score: &str) -> Option<i64> {
    let f: f64 = score.parse().ok()?;
    // Saturating: an absurdly far expiry stays far.
    f.is_finite().then_some(f as i64)
}

/// Every (member, value) pair of a sorted set or hash, by cursor. Members
/// that are not UTF-8 (never written by this store) are skipped.
async fn scan_all(
    shared: &StoreState,
    command: &str,
    key: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd(command);
        cmd.arg(key).arg(cursor).arg("COUNT").arg(SCAN_COUNT);
        let (next, flat): (u64, Vec<Vec<u8>>) =
            shared.backend.run(Op::Cmd(&cmd), Idempotent::Yes).await?;
        let mut it = flat.into_iter();
        while let (Some(member), Some(value)) = (it.next(), it.next()) {
            if let (Ok(m), Ok(v)) = (String::from_utf8(member), String::from_utf8(value)) {
                out.push((m, v));
            }
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_jitter() {
        assert_eq!(score_secs("1700000000"), Some(1_700_000_000));
        assert_eq!(score_secs("1.7e9"), Some(1_700_000_000));
        assert_eq!(score_secs("inf"), None);
        assert_eq!(score_secs("nope"), None);
        assert_eq!(score_secs("1e30"), Some(i64::MAX));
        let b = Duration::from_millis(100);
        for _ in 0..100 {
            let j = jitter(b);
            assert!(j >= b && j <= b + b / 4, "{j:?}");
        }
    }
}
