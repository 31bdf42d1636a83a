//! `Every`: "at most once per interval, one winner", the throttle behind the
//! built-in stores' own sweeps of expired records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Lets one caller through per interval of the store's clock (in ms); the
/// others go on without waiting. Lock-free: one load on the common path.
#[derive(Debug)]
pub(crate) struct Every {
    interval_ms: u64,
    last_ms: AtomicU64,
}

impl Every {
    /// An interval counted from `start_ms`.
    pub(crate) fn new(interval: Duration, start_ms: u64) -> Self {
        Self {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(start_ms),
        }
    }

    /// The interval.
    pub(crate) const fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Whether the caller is the one whose turn it is at `now_ms`: true for
    /// exactly one caller once the interval has passed since the last turn,
    /// or once the clock reads earlier than the last turn (a clock set back
    /// must not stop the sweeps until it catches up again).
    pub(crate) fn claim(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        (now_ms < last || now_ms - last >= self.interval_ms)
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_interval() {
        let every = Every::new(Duration::from_secs(1), 10_000);
        assert!(!every.claim(10_999), "before the interval");
        assert!(every.claim(11_000), "at the interval");
        assert!(!every.claim(11_000), "once");
        assert!(!every.claim(11_500));
        assert!(every.claim(12_000));
        assert!(every.claim(5_000), "a clock set back: a turn at once");
        assert!(!every.claim(5_500), "then the interval runs from there");
        assert!(every.claim(6_000));
        let racing = std::sync::Arc::new(Every::new(Duration::from_secs(1), 0));
        let wins: usize = (0..8)
            .map(|_| {
                let r = std::sync::Arc::clone(&racing);
                std::thread::spawn(move || usize::from(r.claim(1_000)))
            })
            .map(|h| h.join().unwrap_or(0))
            .sum();
        assert_eq!(wins, 1, "one winner among racing callers");
    }
}
