//! Session loads that share a statement: loads that wait for one of the
//! store's own connections are taken together by a connection that comes
//! free and answered by one `SELECT ... WHERE id_digest = ANY($1)`.
//!
//! A load alone (a connection free, nobody waiting) runs its own statement,
//! as before. Under load, PostgreSQL pays its fixed cost per statement
//! (protocol round, snapshot, executor start) once per batch instead of
//! once per request.
//!
//! Every load is still answered by a statement that started after the
//! load was asked for: a waiter is taken only by a statement that starts
//! after it queued. So a session deleted (a logout on another instance)
//! before a request arrives is never served to it; batching changes how
//! many statements run, never what a load sees.
//!
//! How connections go round: a load that finds a connection free *leads*:
//! it answers batches of waiting loads, one after the other, until its own
//! answer is in or nobody waits, then gives the connection back and, when
//! loads still wait, wakes one of them to lead in turn. A waiting load
//! does nothing but wait for its answer or that wake-up, so a free
//! connection never sits reserved for a load that no longer needs it. A
//! leader whose request is dropped (cancelled, timed out) wakes a successor
//! as it goes; the loads of the batch it was running lose their answer's
//! sender and queue again.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;

use portcullis_core::{StoreError, Timestamp, TokenDigest};
use tokio::sync::{Notify, oneshot};

use super::Row;
use crate::direct::{DirectConnections, Lease};

/// The most loads one statement answers.
pub(super) const MAX_BATCH: usize = 64;

/// One load's answer.
pub(super) type Answer = Result<Option<Row>, StoreError>;

/// A load waiting for a statement.
pub(super) struct Waiter {
    /// The session's key.
    pub(super) key: TokenDigest,
    /// The loading instance's clock when the load was asked for.
    pub(super) now: Timestamp,
    reply: oneshot::Sender<Answer>,
}

impl Waiter {
    /// Answers the load (a load that gave up meanwhile is not told).
    pub(super) fn answer(self, answer: Answer) {
        let _ = self.reply.send(answer);
    }
}

/// The loads waiting for a statement, oldest first, and the wake-up of
/// the next leader.
#[derive(Default)]
pub(super) struct LoadQueue {
    waiting: Mutex<VecDeque<Waiter>>,
    next_leader: Notify,
}

impl LoadQueue {
    fn push(&self, key: TokenDigest, now: Timestamp) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.push_back(Waiter { key, now, reply });
        }
        answer
    }

    fn is_empty(&self) -> bool {
        self.waiting.lock().map_or(true, |w| w.is_empty())
    }

    /// The oldest loads still waiting for an answer: one connection's
    /// share of them (an equal part for each of the `connections`, so
    /// that others can take theirs in parallel), at most [`MAX_BATCH`].
    fn take(&self, connections: usize) -> Vec<Waiter> {
        let Ok(mut waiting) = self.waiting.lock() else {
            return Vec::new();
        };
        let share = waiting
            .len()
            .div_ceil(connections.max(1))
            .clamp(1, MAX_BATCH);
        let mut batch = Vec::with_capacity(share);
        while batch.len() < share {
            match waiting.pop_front() {
                Some(w) if w.reply.is_closed() => {}
                Some(w) => batch.push(w),
                None => break,
            }
        }
        batch
    }

    /// Wakes a waiting load to lead when loads still wait.
    fn hand_over(&self) {
        if !self.is_empty() {
            self.next_leader.notify_one();
        }
    }
}

/// Wakes the next leader when a leader ends, however it ends (its request
/// dropped included), after its connection went back.
struct HandOver<'q>(&'q LoadQueue);

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        self.0.hand_over();
    }
}

/// What came first for a waiting load.
enum Next {
    /// Its answer (`Err`: the load that had taken it was dropped).
    Answer(Result<Answer, oneshot::error::RecvError>),
    /// A turn to lead.
    Lead,
}

/// Loads `key`: queues it, then leads when a connection is free (see the
/// module docs), else waits for its answer or a turn to lead. `serve` must
/// answer each waiter it is given, and give the connection back unless it
/// broke.
pub(super) async fn load<'a, S, Fut>(
    queue: &LoadQueue,
    direct: &'a DirectConnections,
    key: TokenDigest,
    now: Timestamp,
    serve: S,
) -> Answer
where
    S: Fn(Lease<'a>, Vec<Waiter>) -> Fut,
    Fut: Future<Output = Option<Lease<'a>>>,
{
    let mut answer = queue.push(key, now);
    let mut turn = pin!(queue.next_leader.notified());
    loop {
        // Listening before looking for a connection: a leader that gives
        // its connection back after the look wakes a listening load.
        turn.as_mut().enable();
        match direct.try_lease().await {
            Ok(Some(lease)) => {
                // Not listening while leading: a wake-up sent meanwhile goes
                // on to a load that is.
                turn.set(queue.next_leader.notified());
                if let Some(a) = lead(queue, direct, lease, &serve, &mut answer, key, now).await {
                    return a;
                }
            }
            Ok(None) => {}
            Err(e) => {
                queue.hand_over();
                return Err(crate::error::store_error(&e));
            }
        }
        let next = poll_fn(|cx| {
            if let Poll::Ready(a) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(Next::Answer(a));
            }
            turn.as_mut().poll(cx).map(|()| Next::Lead)
        })
        .await;
        match next {
            // (A wake-up this load received and will not act on goes on to
            // another load when `turn` drops.)
            Next::Answer(Ok(a)) => return a,
            // Taken by a load that was dropped before it answered: queue
            // again.
            Next::Answer(Err(_)) => answer = queue.push(key, now),
            Next::Lead => turn.set(queue.next_leader.notified()),
        }
    }
}

/// Answers batches of waiting loads on `lease` until this load's own
/// answer is in (returned) or nobody waits (`None`), then gives the
/// connection back (unless it broke) and wakes the next leader.
async fn lead<'a, S, Fut>(
    queue: &LoadQueue,
    direct: &'a DirectConnections,
    lease: Lease<'a>,
    serve: &S,
    answer: &mut oneshot::Receiver<Answer>,
    key: TokenDigest,
    now: Timestamp,
) -> Option<Answer>
where
    S: Fn(Lease<'a>, Vec<Waiter>) -> Fut,
    Fut: Future<Output = Option<Lease<'a>>>,
{
    // Dropped last: the connection is back before the next leader wakes.
    let _hand_over = HandOver(queue);
    let mut lease = Some(lease);
    let own = loop {
        let batch = queue.take(direct.max());
        if batch.is_empty() {
            break answer.try_recv().ok();
        }
        // Others can take the rest in parallel.
        queue.hand_over();
        let Some(conn) = lease.take() else {
            break None;
        };
        lease = serve(conn, batch).await;
        match answer.try_recv() {
            Ok(a) => break Some(a),
            Err(oneshot::error::TryRecvError::Empty) => {}
            // Taken by a load that was dropped: queue again.
            Err(oneshot::error::TryRecvError::Closed) => *answer = queue.push(key, now),
        }
        if lease.is_none() {
            break None;
        }
    };
    if let Some(lease) = lease {
        lease.keep();
    }
    own
}
