//! The store's own purge of expired rows: small batches (each one short
//! statement that skips rows other transactions hold), run in a background
//! task that a store call starts at most once per interval, never one
//! statement that locks a table.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis_core::StoreError;

/// How and how often expired rows are purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeConfig {
    /// At most one purge per table per instance in this interval (0: never
    /// in the background; the stores' `purge_expired` still works).
    pub every: Duration,
    /// Rows per statement.
    pub batch: u32,
    /// Pause between two batches, so a purge of a million rows leaves the
    /// database to the requests.
    pub pause: Duration,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            batch: 500,
            pause: Duration::from_millis(10),
        }
    }
}

/// One table's purge schedule, shared by the clones of a store.
#[derive(Debug)]
pub(crate) struct Purger {
    config: PurgeConfig,
    origin: Instant,
    /// When the last purge started, in ms since `origin` (`u64::MAX`: never).
    last: AtomicU64,
    running: AtomicBool,
}

impl Purger {
    pub(crate) fn new(config: PurgeConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            origin: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            running: AtomicBool::new(false),
        })
    }

    /// Starts a background purge when one is due and none runs: `batch`
    /// deletes up to the given number of expired rows and says how many it
    /// deleted; batches repeat until one deletes fewer than asked. Needs a
    /// tokio runtime (every store call runs in one).
    pub(crate) fn maybe_start<F, Fut>(self: &Arc<Self>, batch: F)
    where
        F: Fn(u32) -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, StoreError>> + Send + 'static,
    {
        if self.config.every.is_zero() {
            return;
        }
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(self.config.every.as_millis()).unwrap_or(u64::MAX);
        if last != u64::MAX && now.saturating_sub(last) < every {
            return;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last.store(now, Ordering::Relaxed);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _ = this.run(batch).await;
            this.running.store(false, Ordering::Release);
        });
    }

    /// Purges batch after batch until one deletes fewer rows than asked;
    /// returns the rows deleted.
    pub(crate) async fn run<F, Fut>(&self, batch: F) -> Result<u64, StoreError>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<u64, StoreError>>,
    {
        let size = self.config.batch.max(1);
        let mut total = 0;
        loop {
            let n = batch(size).await?;
            total += n;
            if n < u64::from(size) {
                return Ok(total);
            }
            tokio::time::sleep(self.config.pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn config(every: Duration) -> PurgeConfig {
        PurgeConfig {
            every,
            batch: 10,
            pause: Duration::ZERO,
        }
    }

    /// Batches repeat until a short one; at most one purge starts per
    /// interval; an interval of zero never starts one.
    #[tokio::test]
    async fn purges_are_batched_and_rate_limited() {
        let left = Arc::new(AtomicU64::new(35));
        let calls = Arc::new(AtomicU32::new(0));
        let batch = {
            let (left, calls) = (Arc::clone(&left), Arc::clone(&calls));
            move |n: u32| {
                let (left, calls) = (Arc::clone(&left), Arc::clone(&calls));
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let take = left.load(Ordering::SeqCst).min(u64::from(n));
                    left.fetch_sub(take, Ordering::SeqCst);
                    Ok(take)
                }
            }
        };
        let purger = Purger::new(config(Duration::from_secs(3600)));
        assert_eq!(purger.run(&batch).await.unwrap(), 35);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "10 + 10 + 10 + 5");

        left.store(100, Ordering::SeqCst);
        calls.store(0, Ordering::SeqCst);
        purger.maybe_start(batch.clone());
        purger.maybe_start(batch.clone());
        for _ in 0..100 {
            if !purger.running.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        purger.maybe_start(batch.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            11,
            "one purge in the interval"
        );
        assert_eq!(left.load(Ordering::SeqCst), 0);

        left.store(100, Ordering::SeqCst);
        calls.store(0, Ordering::SeqCst);
        let never = Purger::new(config(Duration::ZERO));
        never.maybe_start(batch);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
