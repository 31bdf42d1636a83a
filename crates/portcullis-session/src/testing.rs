//! The session store conformance suite, and fault injection.
//!
//! Over 500 lines on purpose: one public case per contract clause, each
//! readable on its own by a store implementer whose store failed it.
//!
//! Every [`SessionStore`] (ours and yours) should pass the same cases. Give
//! the macro an async factory that builds a fresh, empty store judging
//! expiry by the clock it is handed:
//!
//! ```
//! # mod demo {
//! use portcullis_session::MemoryStore;
//!
//! portcullis_session::session_store_conformance!(|clock| async move { MemoryStore::with_clock(clock) });
//! # }
//! ```
//!
//! This expands to one `#[tokio::test]` per case (your crate needs `tokio`
//! with the `macros` and `rt-multi-thread` features as a dev-dependency).
//! Each case is also a public `async fn` here, taking the same factory, for
//! harnesses that want to call them directly. A failure names the method
//! and the clause of its contract (see [`SessionStore`]) that broke, for
//! example `update: a deleted session must not come back (update-only)`.
//!
//! A custom store, end to end (`MyStore` standing for yours):
//!
//! ```ignore
//! #[cfg(test)]
//! mod conformance {
//!     portcullis_session::session_store_conformance!(|clock| async move {
//!         MyStore::connect_for_tests(clock).await
//!     });
//! }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use portcullis_core::store::FaultSwitch;
use portcullis_core::{
    Clock, ManualClock, OpaqueToken, SharedClock, StoreErrorKind, Timestamp, TokenDigest,
};
use serde_json::{Value, json};

use crate::store::{
    CapPolicy, CreateOutcome, InstrumentedStore, SessionCap, SessionMetadata, SessionRecord,
    SessionStore, SessionUpdate,
};

/// Start of every conformance clock (2023-11-14T22:13:20Z).
pub const T0: u64 = 1_700_000_000_000;

/// A fresh store and the manual clock it judges expiry by.
async fn fresh<S, F, Fut>(factory: &F) -> (S, Arc<ManualClock>)
where
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
{
    let clock = Arc::new(ManualClock::new(T0));
    let store = factory(clock.clone()).await;
    (store, clock)
}

fn key() -> TokenDigest {
    OpaqueToken::generate().expect("OS random source").digest()
}

/// A record created at `now`, idle 10 min, absolute 1 h.
#[must_use]
pub fn record(user: Option<&str>, now: Timestamp) -> SessionRecord {
    SessionRecord {
        user_id: user.map(str::to_owned),
        data: BTreeMap::from([("k".to_owned(), json!("v"))]),
        created_at: now,
        last_seen: now,
        idle_deadline: now + Duration::from_secs(600),
        absolute_deadline: now + Duration::from_secs(3600),
        metadata: SessionMetadata {
            user_agent: Some("conformance".into()),
            ip: None,
        },
    }
}

fn update(set: &[(&str, Value)], remove: &[&str], now: Timestamp) -> SessionUpdate {
    SessionUpdate {
        set: set
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        remove: remove.iter().map(|k| (*k).to_owned()).collect(),
        last_seen: now,
        idle_deadline: now + Duration::from_secs(600),
    }
}

async fn create_ok<S: SessionStore>(
    store: &S,
    key: &TokenDigest,
    rec: &SessionRecord,
    cap: Option<SessionCap>,
) -> Vec<TokenDigest> {
    match store
        .create(key, rec, cap)
        .await
        .expect("create: must not fail on a fresh key")
    {
        CreateOutcome::Created { evicted } => evicted,
        CreateOutcome::LimitReached => panic!("create: refused below the cap (cap)"),
    }
}

/// A record reads back as written.
pub async fn round_trip<S: SessionStore, F: Fn(SharedClock) -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let k = key();
    let rec = record(Some("alice"), clock.now());
    create_ok(&store, &k, &rec, None).await;
    assert_eq!(
        store
            .load(&k)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        Some(rec),
        "load: a record must read back as it was written (round trip)"
    );
    assert_eq!(
        store
            .load(&key())
            .await
            .expect("load: an unknown key is Ok(None), not an error"),
        None,
        "load: an unknown key is Ok(None)"
    );
}

/// `create` on an existing live key is a conflict and leaves it untouched.
pub async fn create_fails_on_collision<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let k = key();
    let first = record(Some("alice"), clock.now());
    create_ok(&store, &k, &first, None).await;
    let second = record(Some("mallory"), clock.now());
    let err = store
        .create(&k, &second, None)
        .await
        .expect_err("create: a live key must be refused (collision)");
    assert_eq!(
        err.kind(),
        StoreErrorKind::Conflict,
        "create: a collision is StoreError::conflict (collision)"
    );
    assert_eq!(
        store
            .load(&k)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        Some(first),
        "create: a collision must leave the live record untouched (collision)"
    );
    assert_eq!(
        store
            .count_for_user("mallory")
            .await
            .expect("count_for_user: must not fail"),
        0,
        "create: a refused record must not enter the user index (collision)"
    );
}

/// `load` never returns a record past its idle or absolute deadline.
pub async fn load_never_returns_expired<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let idle = key();
    create_ok(&store, &idle, &record(None, clock.now()), None).await;
    clock.advance(Duration::from_secs(599));
    assert!(
        store
            .load(&idle)
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_some(),
        "load: a record must be live before its idle deadline (round trip)"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store
            .load(&idle)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        None,
        "load: a record past its idle deadline must be Ok(None) (expired is absent)"
    );

    let absolute = key();
    create_ok(&store, &absolute, &record(None, clock.now()), None).await;
    for _ in 0..8 {
        clock.advance(Duration::from_secs(500));
        let _ = store
            .touch(
                &absolute,
                clock.now(),
                clock.now() + Duration::from_secs(600),
            )
            .await;
    }
    assert_eq!(
        store
            .load(&absolute)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        None,
        "load: a record past its absolute deadline must be Ok(None) whatever the touches (expired is absent)"
    );
}

/// `update` is key-level: other keys survive, removed keys go.
pub async fn update_is_key_level<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let k = key();
    create_ok(&store, &k, &record(None, clock.now()), None).await;
    store
        .update(&k, &update(&[("a", json!(1))], &[], clock.now()))
        .await
        .expect("update: a live record must accept it (key-level)");
    store
        .update(
            &k,
            &update(&[("b", json!({"x": [1, 2]}))], &["k"], clock.now()),
        )
        .await
        .expect("update: a live record must accept it (key-level)");
    let rec = store
        .load(&k)
        .await
        .expect("load: must not fail on a live, unknown or expired key")
        .expect("load: a live record must be returned (round trip)");
    assert_eq!(
        rec.data.get("a"),
        Some(&json!(1)),
        "update: a key set by an earlier update must survive a later one (key-level)"
    );
    assert_eq!(
        rec.data.get("b"),
        Some(&json!({"x": [1, 2]})),
        "update: keys in update.set must be written (key-level)"
    );
    assert_eq!(
        rec.data.get("k"),
        None,
        "update: keys in update.remove must be deleted (key-level)"
    );
}

/// `update` never resurrects a deleted or expired session.
pub async fn update_never_resurrects<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let k = key();
    create_ok(&store, &k, &record(Some("alice"), clock.now()), None).await;
    assert!(store.delete(&k).await.expect("delete: must not fail"));
    let err = store
        .update(&k, &update(&[("a", json!(1))], &[], clock.now()))
        .await
        .expect_err("update: a deleted session must not come back (update-only)");
    assert_eq!(
        err.kind(),
        StoreErrorKind::NotFound,
        "update: a deleted session is StoreError::not_found (update-only)"
    );
    assert_eq!(
        store
            .load(&k)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        None,
        "update: a deleted session must not come back (update-only)"
    );
    assert_eq!(
        store
            .count_for_user("alice")
            .await
            .expect("count_for_user: must not fail"),
        0,
        "update: a deleted session must not come back in the user index (update-only)"
    );
    let err = store
        .touch(&k, clock.now(), clock.now())
        .await
        .expect_err("touch: a deleted session must not come back (touch-only)");
    assert_eq!(
        err.kind(),
        StoreErrorKind::NotFound,
        "touch: a deleted session is StoreError::not_found (touch-only)"
    );
    assert_eq!(
        store
            .load(&k)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        None,
        "touch: a deleted session must not come back (touch-only)"
    );

    let expired = key();
    create_ok(&store, &expired, &record(None, clock.now()), None).await;
    clock.advance(Duration::from_secs(601));
    let err = store
        .update(&expired, &update(&[("a", json!(1))], &[], clock.now()))
        .await
        .expect_err("update: an expired session must not come back (update-only)");
    assert_eq!(
        err.kind(),
        StoreErrorKind::NotFound,
        "update: an expired session is StoreError::not_found (update-only)"
    );
    assert_eq!(
        store
            .load(&expired)
            .await
            .expect("load: must not fail on a live, unknown or expired key"),
        None,
        "update: an expired session must not come back (update-only)"
    );
}

/// `touch` extends the idle deadline, never past the absolute one.
pub async fn touch_extends_idle<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let k = key();
    let rec = record(None, clock.now());
    create_ok(&store, &k, &rec, None).await;
    clock.advance(Duration::from_secs(500));
    store
        .touch(&k, clock.now(), clock.now() + Duration::from_secs(600))
        .await
        .expect("touch: a live record must accept it (slides)");
    clock.advance(Duration::from_secs(500));
    let loaded = store
        .load(&k)
        .await
        .expect("load: must not fail on a live, unknown or expired key")
        .expect("touch: the idle deadline must move forward (slides)");
    assert_eq!(
        loaded.last_seen,
        rec.created_at + Duration::from_secs(500),
        "touch: last_seen must be recorded (slides)"
    );
    assert_eq!(
        loaded.data, rec.data,
        "touch: the data must stay as it is (data untouched)"
    );
    store
        .touch(&k, clock.now(), clock.now() + Duration::from_secs(100_000))
        .await
        .expect("touch: a live record must accept it (slides)");
    let loaded = store
        .load(&k)
        .await
        .expect("load: must not fail on a live, unknown or expired key")
        .expect("load: a live record must be returned (round trip)");
    assert_eq!(
        loaded.idle_deadline, rec.absolute_deadline,
        "touch: the idle deadline must never pass the absolute one (slides)"
    );
}

/// `delete` reports whether a live record went; unknown keys are fine.
pub async fn delete_semantics<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let k = key();
    create_ok(&store, &k, &record(None, clock.now()), None).await;
    assert!(
        store.delete(&k).await.expect("delete: must not fail"),
        "delete: deleting a live record must return true (reports)"
    );
    assert!(
        !store
            .delete(&k)
            .await
            .expect("delete: must not fail on a deleted key (unknown is fine)"),
        "delete: deleting it again must return false (reports)"
    );
    assert!(
        !store
            .delete(&key())
            .await
            .expect("delete: must not fail on an unknown key (unknown is fine)"),
        "delete: an unknown key must be Ok(false) (unknown is fine)"
    );
}

/// Concurrent updates of different keys on one session all survive.
pub async fn concurrent_writers<
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let store = Arc::new(store);
    let k = key();
    create_ok(&*store, &k, &record(None, clock.now()), None).await;
    let now = clock.now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .update(&k, &update(&[(&format!("key{i}"), json!(i))], &[], now))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("task")
            .expect("update: a live record must accept it (key-level)");
    }
    let rec = store
        .load(&k)
        .await
        .expect("load: must not fail on a live, unknown or expired key")
        .expect("load: a live record must be returned (round trip)");
    for i in 0..64 {
        assert_eq!(
            rec.data.get(&format!("key{i}")),
            Some(&json!(i)),
            "update: key{i} was lost; concurrent updates of different keys must all survive (concurrent writers)"
        );
    }
}

/// The per-user index: list, count, delete all, delete all but one; other
/// users untouched; expired sessions not listed.
pub async fn user_index<S: SessionStore, F: Fn(SharedClock) -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let a: Vec<_> = (0..3).map(|_| key()).collect();
    for k in &a {
        create_ok(&store, k, &record(Some("alice"), clock.now()), None).await;
    }
    let b = key();
    create_ok(&store, &b, &record(Some("bob"), clock.now()), None).await;
    let anon = key();
    create_ok(&store, &anon, &record(None, clock.now()), None).await;

    assert_eq!(
        store
            .count_for_user("alice")
            .await
            .expect("count_for_user: must not fail"),
        3,
        "count_for_user: must count the user's live sessions only (live only)"
    );
    let mut listed: Vec<_> = store
        .list_for_user("alice")
        .await
        .expect("list_for_user: must not fail")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    listed.sort();
    let mut want = a.clone();
    want.sort();
    assert_eq!(
        listed, want,
        "list_for_user: must list this user's sessions, no other (this user only)"
    );

    assert_eq!(
        store
            .delete_for_user("alice", Some(&a[0]))
            .await
            .expect("delete_for_user: must not fail"),
        2,
        "delete_for_user: must return how many were deleted (reports)"
    );
    assert_eq!(
        store
            .count_for_user("alice")
            .await
            .expect("count_for_user: must not fail"),
        1,
        "delete_for_user: only the kept session may stay (except)"
    );
    assert!(
        store
            .load(&a[0])
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_some(),
        "delete_for_user: the kept session must survive (except)"
    );
    assert!(
        store
            .load(&a[1])
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_none(),
        "delete_for_user: the other sessions must be gone (except)"
    );
    assert!(
        store
            .load(&b)
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_some(),
        "delete_for_user: another user's session must stay (this user only)"
    );
    assert!(
        store
            .load(&anon)
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_some(),
        "delete_for_user: anonymous sessions must stay (this user only)"
    );

    assert_eq!(
        store
            .delete_for_user("alice", None)
            .await
            .expect("delete_for_user: must not fail"),
        1,
        "delete_for_user: must return how many were deleted (reports)"
    );
    assert_eq!(
        store
            .count_for_user("alice")
            .await
            .expect("count_for_user: must not fail"),
        0,
        "delete_for_user: without except every session of the user must go"
    );
    assert!(
        store
            .list_for_user("alice")
            .await
            .expect("list_for_user: must not fail")
            .is_empty(),
        "list_for_user: deleted sessions must not be listed (live only)"
    );
    assert_eq!(
        store
            .count_for_user("nobody")
            .await
            .expect("count_for_user: must not fail"),
        0,
        "count_for_user: an unknown user has none"
    );

    // Expired sessions leave the index.
    let late = key();
    create_ok(&store, &late, &record(Some("carol"), clock.now()), None).await;
    clock.advance(Duration::from_secs(601));
    assert_eq!(
        store
            .count_for_user("carol")
            .await
            .expect("count_for_user: must not fail"),
        0,
        "count_for_user: expired sessions must not count (live only)"
    );
    assert!(
        store
            .list_for_user("carol")
            .await
            .expect("list_for_user: must not fail")
            .is_empty(),
        "list_for_user: expired sessions must not be listed (live only)"
    );
}

/// The per-user cap: evict the oldest, or refuse; the replaced session is
/// not counted.
pub async fn user_cap<S: SessionStore, F: Fn(SharedClock) -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let evict = SessionCap {
        max: 2,
        policy: CapPolicy::EvictOldest,
        replacing: None,
    };
    let first = key();
    create_ok(
        &store,
        &first,
        &record(Some("alice"), clock.now()),
        Some(evict),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let second = key();
    create_ok(
        &store,
        &second,
        &record(Some("alice"), clock.now()),
        Some(evict),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let third = key();
    let evicted = create_ok(
        &store,
        &third,
        &record(Some("alice"), clock.now()),
        Some(evict),
    )
    .await;
    assert_eq!(
        evicted,
        vec![first],
        "create: EvictOldest must evict the oldest session and report it (cap)"
    );
    assert!(
        store
            .load(&first)
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_none(),
        "create: an evicted session must be gone (cap)"
    );
    assert_eq!(
        store
            .count_for_user("alice")
            .await
            .expect("count_for_user: must not fail"),
        2,
        "create: the user must end at the cap (cap)"
    );

    let refuse = SessionCap {
        policy: CapPolicy::Refuse,
        ..evict
    };
    let fourth = key();
    let outcome = store
        .create(&fourth, &record(Some("alice"), clock.now()), Some(refuse))
        .await
        .expect("create: must not fail on a fresh key");
    assert_eq!(
        outcome,
        CreateOutcome::LimitReached,
        "create: Refuse at the cap must answer LimitReached (cap)"
    );
    assert!(
        store
            .load(&fourth)
            .await
            .expect("load: must not fail on a live, unknown or expired key")
            .is_none(),
        "create: a refused login must store nothing (cap)"
    );

    let replacing = SessionCap {
        replacing: Some(third),
        ..refuse
    };
    let fifth = key();
    let outcome = store
        .create(&fifth, &record(Some("alice"), clock.now()), Some(replacing))
        .await
        .expect("create: must not fail on a fresh key");
    assert!(
        matches!(outcome, CreateOutcome::Created { .. }),
        "create: cap.replacing must not count against the cap (cap)"
    );
}

/// Concurrent logins racing against a cap of one leave exactly one session.
pub async fn cap_is_atomic<S: SessionStore, F: Fn(SharedClock) -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let (store, clock) = fresh(&factory).await;
    let store = Arc::new(store);
    let now = clock.now();
    let cap = SessionCap {
        max: 1,
        policy: CapPolicy::Refuse,
        replacing: None,
    };
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create(&key(), &record(Some("alice"), now), Some(cap))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if matches!(
            t.await
                .expect("task")
                .expect("create: must not fail on a fresh key"),
            CreateOutcome::Created { .. }
        ) {
            created += 1;
        }
    }
    assert_eq!(
        created, 1,
        "create: exactly one of racing logins fits a cap of one (atomic cap)"
    );
    assert_eq!(
        store
            .count_for_user("alice")
            .await
            .expect("count_for_user: must not fail"),
        1,
        "create: racing logins must never end above the cap (atomic cap)"
    );
}

/// Runs every case.
pub async fn run_all<S, F, Fut>(factory: F)
where
    S: SessionStore,
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
{
    round_trip(&factory).await;
    create_fails_on_collision(&factory).await;
    load_never_returns_expired(&factory).await;
    update_is_key_level(&factory).await;
    update_never_resurrects(&factory).await;
    touch_extends_idle(&factory).await;
    delete_semantics(&factory).await;
    concurrent_writers(&factory).await;
    user_index(&factory).await;
    user_cap(&factory).await;
    cap_is_atomic(&factory).await;
}

/// Expands to one `#[tokio::test]` per conformance case for the store the
/// factory builds. See the [module docs](crate::testing).
#[macro_export]
macro_rules! session_store_conformance {
    ($factory:expr) => {
        $crate::session_store_conformance!(@cases $factory;
            round_trip, create_fails_on_collision, load_never_returns_expired, update_is_key_level,
            update_never_resurrects, touch_extends_idle, delete_semantics, concurrent_writers,
            user_index, user_cap, cap_is_atomic);
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

/// A store that fails every call with a backend error, reaching nothing,
/// while its switch is on (a store outage, for tests).
pub type FaultyStore<S> = InstrumentedStore<S, FaultSwitch>;

impl<S> InstrumentedStore<S, FaultSwitch> {
    /// Wraps `inner`, healthy.
    pub fn new(inner: S) -> Self {
        Self::with_observer(inner, FaultSwitch::new())
    }

    /// A switch shared with every clone: `true` makes every call fail.
    #[must_use]
    pub fn switch(&self) -> Arc<AtomicBool> {
        self.observer().shared()
    }
}
