//! Session loads that share a statement: loads that wait for one of the
//! store's own connections are taken together by the next connection that
//! comes free and answered by one `SELECT ... WHERE id_digest = ANY($1)`.
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
//! A load that is dropped (its request cancelled, its time bound run out)
//! while it runs a batch for others drops their answers' senders with it:
//! they queue again and are taken by the next free connection, within
//! their own time bounds.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;

use portcullis_core::{StoreError, Timestamp, TokenDigest};
use tokio::sync::oneshot;

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

/// The loads waiting for a statement, oldest first.
#[derive(Default)]
pub(super) struct LoadQueue {
    waiting: Mutex<VecDeque<Waiter>>,
}

impl LoadQueue {
    fn push(&self, key: TokenDigest, now: Timestamp) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.push_back(Waiter { key, now, reply });
        }
        answer
    }

    /// The oldest loads still waiting for an answer: this connection's
    /// share of them (an equal part for each of the `connections`, so
    /// that the others come free to take theirs in parallel rather than
    /// wait for one statement that answers everybody), at most
    /// [`MAX_BATCH`].
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
}

/// What came first for a waiting load.
enum Next<'a> {
    /// Its answer (`Err`: the load that had taken it was dropped).
    Answer(Result<Answer, oneshot::error::RecvError>),
    /// A free connection.
    Lease(Result<Lease<'a>, sqlx::Error>),
}

/// Loads `key`: queues it, then either receives its answer from a batch
/// another load runs, or gets a connection first and runs the batch of
/// every load waiting (its own among them), through `serve`, which must
/// answer each waiter it is given.
pub(super) async fn load<'a, S, Fut>(
    queue: &LoadQueue,
    direct: &'a DirectConnections,
    key: TokenDigest,
    now: Timestamp,
    serve: S,
) -> Answer
where
    S: Fn(Lease<'a>, Vec<Waiter>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut answer = queue.push(key, now);
    loop {
        let next = {
            let mut lease = pin!(direct.lease());
            poll_fn(|cx| {
                if let Poll::Ready(a) = Pin::new(&mut answer).poll(cx) {
                    return Poll::Ready(Next::Answer(a));
                }
                lease.as_mut().poll(cx).map(Next::Lease)
            })
            .await
        };
        match next {
            Next::Answer(Ok(a)) => return a,
            // Taken by a load that was dropped before it answered: queue
            // again.
            Next::Answer(Err(_)) => answer = queue.push(key, now),
            Next::Lease(Err(e)) => return Err(crate::error::store_error(&e)),
            Next::Lease(Ok(lease)) => {
                let batch = queue.take(direct.max());
                if batch.is_empty() {
                    // Another load took ours: wait for its answer alone
                    // (competing for connections meanwhile would find
                    // nothing to do, again and again).
                    lease.keep();
                    match (&mut answer).await {
                        Ok(a) => return a,
                        // That load was dropped before it answered.
                        Err(_) => answer = queue.push(key, now),
                    }
                    continue;
                }
                serve(lease, batch).await;
            }
        }
    }
}
