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
