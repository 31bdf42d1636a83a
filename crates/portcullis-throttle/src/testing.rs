//! The throttle store conformance suite: one public function per clause of
//! the [`ThrottleStore`] contract, for every store (memory, Redis, SQL, an
//! application's own).
//!
//! Give the macro an async factory for a fresh, empty store; it expands to
//! one `#[tokio::test]` per case (multi-threaded: the racing case needs it).
//! The suite passes explicit times, so stores need no clock; it only uses
//! keys it makes up, so stores may share a backend between cases if each
//! factory call gives a fresh namespace (a key prefix, a table).
//!
//! ```
//! # mod demo {
//! use portcullis_throttle::MemoryThrottleStore;
//!
//! portcullis_throttle::throttle_store_conformance!(|| async { MemoryThrottleStore::new() });
//! # }
//! ```
//!
//! Each case is also a public `async fn` taking the same factory, and
//! [`run_all`] runs them in turn. The saturation of `failures` at
//! `u32::MAX` cannot be reached through the trait in a test's time; stores
//! must clamp it themselves (the memory store's unit tests cover its own).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{Timestamp, TokenDigest};

use crate::store::{Backoff, ThrottleKey, ThrottleScope, ThrottleState, ThrottleStore};

const T0: u64 = 1_700_000_000_000;

/// The `forget_after` the suite passes: one hour.
pub const FORGET: Duration = Duration::from_secs(3600);

/// The suite's time `secs` seconds after its start.
#[must_use]
pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

/// A fresh random key of `scope` (so cases never meet each other's
/// counters, even in a shared backend).
#[must_use]
pub fn fresh_key(scope: ThrottleScope) -> ThrottleKey {
    let token = portcullis_core::OpaqueToken::generate().expect("random");
    ThrottleKey::new(scope, token.digest())
}

fn state(failures: u32, secs: u64) -> ThrottleState {
    ThrottleState {
        failures,
        last_failure: Some(at(secs)),
    }
}

/// Failures count up per key and are read back in the order asked; an
/// unknown key reads as `Default`; an empty call is empty.
pub async fn counts_failures<S: ThrottleStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let a = fresh_key(ThrottleScope::Account);
    let b = fresh_key(ThrottleScope::Address);
    let unknown = fresh_key(ThrottleScope::AccountAtAddress);
    assert_eq!(
        store.check(&[a, b], at(0), FORGET).await.expect("check"),
        vec![ThrottleState::default(); 2]
    );
    assert_eq!(
        store
            .record_failure(&[a], at(1), FORGET)
            .await
            .expect("fail"),
        vec![state(1, 1)]
    );
    assert_eq!(
        store
            .record_failure(&[b, a], at(2), FORGET)
            .await
            .expect("fail"),
        vec![state(1, 2), state(2, 2)]
    );
    assert_eq!(
        store
            .check(&[a, unknown, b], at(3), FORGET)
            .await
            .expect("check"),
        vec![state(2, 2), ThrottleState::default(), state(1, 2)]
    );
    assert!(
        store
            .check(&[], at(3), FORGET)
            .await
            .expect("check")
            .is_empty(),
        "no keys, no states"
    );
    assert!(
        store
            .record_failure(&[], at(3), FORGET)
            .await
            .expect("fail")
            .is_empty()
    );
    store.reset(&[]).await.expect("reset nothing");
}

/// One digest under two scopes is two counters.
pub async fn scopes_are_apart<S: ThrottleStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let digest = TokenDigest::of(fresh_key(ThrottleScope::Account).digest().as_bytes());
    let keys: Vec<ThrottleKey> = ThrottleScope::ALL
        .iter()
        .map(|&s| ThrottleKey::new(s, digest))
        .collect();
    store
        .record_failure(&keys[..1], at(0), FORGET)
        .await
        .expect("fail");
    store
        .record_failure(&keys[..1], at(0), FORGET)
        .await
        .expect("fail");
    store
        .record_failure(&keys[1..2], at(0), FORGET)
        .await
        .expect("fail");
    assert_eq!(
        store.check(&keys, at(1), FORGET).await.expect("check"),
        vec![state(2, 0), state(1, 0), ThrottleState::default()]
    );
}

/// A counter whose last failure is `forget_after` old reads as `Default`,
/// and the next failure starts again at one; a moment earlier it still
/// counts.
pub async fn forgets_after_the_window<S: ThrottleStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let k = fresh_key(ThrottleScope::AccountAtAddress);
    for _ in 0..3 {
        store
            .record_failure(&[k], at(10), FORGET)
            .await
            .expect("fail");
    }
    let edge = at(10) + FORGET;
    let before = edge - Duration::from_millis(1);
    assert_eq!(
        store.check(&[k], before, FORGET).await.expect("check"),
        vec![state(3, 10)],
        "still counted a millisecond before the window ends"
    );
    assert_eq!(
        store.check(&[k], edge, FORGET).await.expect("check"),
        vec![ThrottleState::default()],
        "forgotten at last_failure + forget_after"
    );
    // A shorter window passed by the caller applies at once.
    let short = Duration::from_secs(5);
    let k2 = fresh_key(ThrottleScope::Account);
    store
        .record_failure(&[k2], at(0), short)
        .await
        .expect("fail");
    store
        .record_failure(&[k2], at(2), short)
        .await
        .expect("fail");
    assert_eq!(
        store
            .record_failure(&[k2], at(7), short)
            .await
            .expect("fail"),
        vec![state(1, 7)],
        "the count restarts after the window"
    );
    assert_eq!(
        store
            .record_failure(&[k], edge, FORGET)
            .await
            .expect("fail"),
        vec![ThrottleState {
            failures: 1,
            last_failure: Some(edge)
        }]
    );
}

/// `reset` forgets exactly the keys given.
pub async fn reset_forgets_the_keys<S: ThrottleStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let a = fresh_key(ThrottleScope::Account);
    let b = fresh_key(ThrottleScope::AccountAtAddress);
    let c = fresh_key(ThrottleScope::Address);
    store
        .record_failure(&[a, b, c], at(0), FORGET)
        .await
        .expect("fail");
    store
        .reset(&[a, b, fresh_key(ThrottleScope::Account)])
        .await
        .expect("reset");
    assert_eq!(
        store.check(&[a, b, c], at(1), FORGET).await.expect("check"),
        vec![
            ThrottleState::default(),
            ThrottleState::default(),
            state(1, 0)
        ]
    );
    assert_eq!(
        store
            .record_failure(&[a], at(2), FORGET)
            .await
            .expect("fail"),
        vec![state(1, 2)],
        "a reset counter starts again at one"
    );
}

/// Many failures are all counted, and the backoff computed from them
/// stops at its cap.
pub async fn many_failures_reach_the_cap<
    S: ThrottleStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let store = factory().await;
    let k = fresh_key(ThrottleScope::AccountAtAddress);
    for i in 0..200 {
        store
            .record_failure(&[k], at(i), FORGET)
            .await
            .expect("fail");
    }
    let states = store.check(&[k], at(199), FORGET).await.expect("check");
    assert_eq!(states, vec![state(200, 199)]);
    let backoff = Backoff {
        free_failures: 5,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(900),
        forget_after: FORGET,
    };
    assert_eq!(
        states[0].blocked_until(&backoff, at(199)),
        Some(at(199 + 900))
    );
}

/// Failures racing on one key from many tasks are each counted exactly
/// once: every call sees a different count, and the last is the total.
pub async fn racing_failures_all_count<
    S: ThrottleStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    const TASKS: u32 = 8;
    const EACH: u32 = 25;
    let store = Arc::new(factory().await);
    let shared = fresh_key(ThrottleScope::Account);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let own = fresh_key(ThrottleScope::Address);
                let mut seen = Vec::new();
                for _ in 0..EACH {
                    let s = store
                        .record_failure(&[own, shared], at(5), FORGET)
                        .await
                        .expect("fail");
                    seen.push(s[1].failures);
                }
                let own_state = store.check(&[own], at(5), FORGET).await.expect("check");
                (seen, own_state[0].failures)
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        let (counts, own) = t.await.expect("task");
        assert_eq!(own, EACH, "each task's own key counted its calls");
        seen.extend(counts);
    }
    seen.sort_unstable();
    let want: Vec<u32> = (1..=TASKS * EACH).collect();
    assert_eq!(seen, want, "every racing failure counted once");
    assert_eq!(
        store.check(&[shared], at(5), FORGET).await.expect("check")[0].failures,
        TASKS * EACH
    );
}

/// Runs every case.
pub async fn run_all<S: ThrottleStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    counts_failures(&factory).await;
    scopes_are_apart(&factory).await;
    forgets_after_the_window(&factory).await;
    reset_forgets_the_keys(&factory).await;
    many_failures_reach_the_cap(&factory).await;
    racing_failures_all_count(&factory).await;
}

/// Expands to one `#[tokio::test]` per conformance case; see the
/// [module docs](crate::testing). The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! throttle_store_conformance {
    ($factory:expr) => {
        $crate::throttle_store_conformance!(@cases $factory;
            counts_failures, scopes_are_apart, forgets_after_the_window,
            reset_forgets_the_keys, many_failures_reach_the_cap, racing_failures_all_count);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testing::$case($factory).await;
            }
        )*
    };
}
