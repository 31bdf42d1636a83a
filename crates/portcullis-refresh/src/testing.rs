//! The refresh store conformance suite, and fault injection (over 500
//! lines: one public function per clause of the store contract).
//!
//! Give the macro an async factory for a fresh, empty store (the suite
//! passes explicit times, so stores need no clock here):
//!
//! ```
//! # mod demo {
//! use portcullis_refresh::MemoryRefreshStore;
//!
//! portcullis_refresh::refresh_store_conformance!(|| async { MemoryRefreshStore::new() });
//! # }
//! ```
//!
//! Each case is also a public `async fn` taking the same factory. The
//! per-user family cap has its own cases
//! ([`refresh_store_family_cap_conformance!`](crate::refresh_store_family_cap_conformance),
//! [`run_family_cap`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use portcullis_core::store::FaultSwitch;
use portcullis_core::{Timestamp, TokenDigest};
use serde_json::Map;

use crate::family::{DeviceInfo, Family, RotateOutcome, Rotation};
use crate::instrumented::InstrumentedRefreshStore;
use crate::store::RefreshStore;
use crate::token::{FamilyId, RefreshToken, RotationKey};

const T0: u64 = 1_700_000_000_000;
const GRACE: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(3600);

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

/// A family for `user` created at `at(secs)`, idle 1 h, absolute 1 day, and
/// its first token.
#[must_use]
pub fn family(user: &str, secs: u64) -> (Family, RefreshToken) {
    let id = FamilyId::generate().expect("random");
    let token = RefreshToken::first(id.clone()).expect("random");
    let now = at(secs);
    let fam = Family {
        id,
        user_id: user.to_owned(),
        claims: Map::new(),
        device: DeviceInfo {
            user_agent: Some("conformance".into()),
            ip: None,
        },
        created_at: now,
        last_used_at: now,
        deadlines: portcullis_core::Deadlines {
            idle: now + IDLE,
            absolute: now + Duration::from_secs(86_400),
        },
        current: token.digest(),
        previous: None,
        history: Vec::new(),
        rotations: 0,
        jkt: None,
    };
    (fam, token)
}

fn rotation(token: &RefreshToken, key: &RotationKey, secs: u64) -> (Rotation, RefreshToken) {
    let next = token.successor(key);
    let r = Rotation {
        family: token.family().clone(),
        presented: token.digest(),
        successor: next.digest(),
        now: at(secs),
        grace: GRACE,
        idle: IDLE,
        history_limit: 8,
        device: DeviceInfo {
            user_agent: Some("rotator".into()),
            ip: Some("192.0.2.1".into()),
        },
    };
    (r, next)
}

fn digest_of(o: &RotateOutcome) -> Option<TokenDigest> {
    match o {
        RotateOutcome::Rotated(f) | RotateOutcome::Repeat(f) => Some(f.current),
        _ => None,
    }
}

/// Create, read back; a second create with the same id is a conflict.
pub async fn create_and_get<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    let store = factory().await;
    let (fam, _) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    assert_eq!(
        store.get(&fam.id, at(1)).await.expect("get"),
        Some(fam.clone())
    );
    let err = store.create(&fam, None).await.expect_err("id collision");
    assert_eq!(err.kind(), portcullis_core::StoreErrorKind::Conflict);
    assert_eq!(
        store
            .get(&FamilyId::generate().expect("random"), at(1))
            .await
            .expect("get"),
        None
    );
}

/// The chain: each rotation makes the old token the previous one; the idle
/// deadline slides, the absolute one never moves; device info updates.
pub async fn rotation_chain<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    let store = factory().await;
    let key = RotationKey::generate().expect("random");
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    let (r1, t1) = rotation(&t0, &key, 100);
    let RotateOutcome::Rotated(f1) = store.rotate(&r1).await.expect("rotate") else {
        panic!("rotation expected")
    };
    assert_eq!(f1.current, t1.digest());
    assert_eq!(f1.previous.map(|p| p.digest), Some(t0.digest()));
    assert_eq!(f1.deadlines.idle, at(100) + IDLE);
    assert_eq!(f1.deadlines.absolute, fam.deadlines.absolute);
    assert_eq!(f1.device.ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(f1.rotations, 1);
    let (r2, t2) = rotation(&t1, &key, 200);
    assert!(matches!(
        store.rotate(&r2).await.expect("rotate"),
        RotateOutcome::Rotated(_)
    ));
    let stored = store
        .get(&fam.id, at(200))
        .await
        .expect("get")
        .expect("live");
    assert_eq!(stored.current, t2.digest());
    assert_eq!(stored.history, vec![t0.digest()]);
}

/// A repeat of the previous token inside the grace window gets the same
/// successor and writes nothing; after the window it is reuse.
pub async fn grace_then_reuse<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let key = RotationKey::generate().expect("random");
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    let (r1, t1) = rotation(&t0, &key, 100);
    assert!(matches!(
        store.rotate(&r1).await.expect("rotate"),
        RotateOutcome::Rotated(_)
    ));
    let (repeat, _) = rotation(&t0, &key, 110);
    let out = store.rotate(&repeat).await.expect("repeat");
    assert!(
        matches!(out, RotateOutcome::Repeat(_)),
        "inside grace: {out:?}"
    );
    assert_eq!(digest_of(&out), Some(t1.digest()), "same successor");
    let (late, _) = rotation(&t0, &key, 111);
    assert!(
        matches!(
            store.rotate(&late).await.expect("late"),
            RotateOutcome::Reused(_)
        ),
        "outside grace: reuse"
    );
    assert_eq!(
        store.get(&fam.id, at(111)).await.expect("get"),
        None,
        "family revoked"
    );
    let (newest, _) = rotation(&t1, &key, 112);
    assert_eq!(
        store.rotate(&newest).await.expect("newest"),
        RotateOutcome::Invalid,
        "the newest token died too"
    );
}

/// A grandparent is reuse even inside its grace window.
pub async fn grandparent_is_reuse<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let key = RotationKey::generate().expect("random");
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    let (r1, t1) = rotation(&t0, &key, 100);
    store.rotate(&r1).await.expect("rotate");
    let (r2, _) = rotation(&t1, &key, 101);
    store.rotate(&r2).await.expect("rotate");
    let (old, _) = rotation(&t0, &key, 102);
    assert!(matches!(
        store.rotate(&old).await.expect("grandparent"),
        RotateOutcome::Reused(_)
    ));
    assert_eq!(store.get(&fam.id, at(102)).await.expect("get"), None);
}

/// A token the family never issued changes nothing; a repeat whose
/// successor does not match is a key mismatch, not a revocation.
pub async fn unknown_and_mismatched<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let key = RotationKey::generate().expect("random");
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    let forged = RefreshToken::first(fam.id.clone()).expect("random");
    let (r, _) = rotation(&forged, &key, 10);
    assert_eq!(
        store.rotate(&r).await.expect("forged"),
        RotateOutcome::Invalid
    );
    assert!(
        store.get(&fam.id, at(10)).await.expect("get").is_some(),
        "a forged token revokes nothing"
    );
    let (r1, _) = rotation(&t0, &key, 20);
    store.rotate(&r1).await.expect("rotate");
    let other_key = RotationKey::generate().expect("random");
    let (mismatch, _) = rotation(&t0, &other_key, 21);
    assert_eq!(
        store.rotate(&mismatch).await.expect("mismatch"),
        RotateOutcome::KeyMismatch
    );
    assert!(store.get(&fam.id, at(21)).await.expect("get").is_some());
}

/// Idle and absolute expiry.
pub async fn expiry<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    let store = factory().await;
    let key = RotationKey::generate().expect("random");
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    let (late, _) = rotation(&t0, &key, 3600);
    // `Expired` with the family, or `Invalid`: the contract allows both.
    let outcome = store.rotate(&late).await.expect("idle");
    assert!(
        matches!(&outcome, RotateOutcome::Invalid)
            || matches!(&outcome, RotateOutcome::Expired(f) if f.id == fam.id),
        "idle deadline passed: {outcome:?}"
    );
    assert_eq!(store.get(&fam.id, at(3600)).await.expect("get"), None);

    // Refreshing every 50 min never passes the absolute deadline (1 day).
    let (fam, mut token) = family("bob", 0);
    store.create(&fam, None).await.expect("create");
    let mut secs = 0;
    loop {
        secs += 3000;
        let (r, next) = rotation(&token, &key, secs);
        match store.rotate(&r).await.expect("rotate") {
            RotateOutcome::Rotated(_) => token = next,
            RotateOutcome::Invalid | RotateOutcome::Expired(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(secs, 87_000, "refused at the first refresh past 86 400 s");
}

/// Revoke one family, all of a user's families, or all but one; list only
/// live families; purge expired ones.
pub async fn per_user<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    let store = factory().await;
    let fams: Vec<Family> = (0..3).map(|_| family("alice", 0).0).collect();
    for f in &fams {
        store.create(f, None).await.expect("create");
    }
    let bob = family("bob", 0).0;
    store.create(&bob, None).await.expect("create");
    assert_eq!(
        store.list_user("alice", at(1)).await.expect("list").len(),
        3
    );
    assert_eq!(
        store
            .revoke(&fams[0].id)
            .await
            .expect("revoke")
            .map(|f| f.id),
        Some(fams[0].id.clone())
    );
    assert_eq!(store.revoke(&fams[0].id).await.expect("revoke again"), None);
    let gone = store
        .revoke_user("alice", Some(&fams[1].id))
        .await
        .expect("revoke others");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].id, fams[2].id);
    let left = store.list_user("alice", at(1)).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, fams[1].id);
    assert_eq!(
        store
            .revoke_user("alice", None)
            .await
            .expect("revoke all")
            .len(),
        1
    );
    assert!(
        store
            .list_user("alice", at(1))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store.list_user("bob", at(1)).await.expect("list").len(),
        1,
        "bob untouched"
    );
    assert!(
        store
            .list_user("bob", at(3600))
            .await
            .expect("list")
            .is_empty(),
        "expired families are not listed"
    );
    assert_eq!(store.purge_expired(at(3600)).await.expect("purge"), 1);
}

/// Two (or twenty) tasks rotating the same token: one rotation, everyone
/// gets the same successor, one live token.
pub async fn racing_rotations<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = Arc::new(factory().await);
    let key = RotationKey::generate().expect("random");
    let (fam, t0) = family("alice", 0);
    store.create(&fam, None).await.expect("create");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let (r, _) = rotation(&t0, &key, 100);
            tokio::spawn(async move { store.rotate(&r).await })
        })
        .collect();
    let mut rotated = 0;
    for t in tasks {
        let out = t.await.expect("task").expect("rotate");
        match out {
            RotateOutcome::Rotated(_) => rotated += 1,
            RotateOutcome::Repeat(_) => {}
            other => panic!("a racer was refused: {other:?}"),
        }
    }
    assert_eq!(rotated, 1, "exactly one rotation");
    let stored = store
        .get(&fam.id, at(100))
        .await
        .expect("get")
        .expect("live");
    assert_eq!(stored.current, t0.successor(&key).digest());
    assert_eq!(stored.rotations, 1);
}

fn ids(families: &[Family]) -> Vec<FamilyId> {
    let mut ids: Vec<FamilyId> = families.iter().map(|f| f.id.clone()).collect();
    ids.sort();
    ids
}

/// The per-user family cap: a create beyond it deletes and returns the
/// user's oldest families (by `created_at`, then id); other users and
/// `None` are untouched.
pub async fn family_cap_evicts_oldest<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(
    factory: F,
) {
    let store = factory().await;
    let bob = family("bob", 0).0;
    store.create(&bob, Some(1)).await.expect("create");
    let fams: Vec<Family> = (0..3).map(|i| family("alice", i).0).collect();
    for f in &fams {
        assert!(
            store.create(f, Some(3)).await.expect("create").is_empty(),
            "under the cap nothing is evicted"
        );
    }
    let fourth = family("alice", 3).0;
    let evicted = store.create(&fourth, Some(3)).await.expect("create");
    assert_eq!(ids(&evicted), vec![fams[0].id.clone()], "the oldest goes");
    assert_eq!(evicted[0], fams[0], "returned as it was stored");
    assert_eq!(store.get(&fams[0].id, at(4)).await.expect("get"), None);
    let left = store.list_user("alice", at(4)).await.expect("list");
    assert_eq!(
        ids(&left),
        ids(&[fams[1].clone(), fams[2].clone(), fourth.clone()])
    );
    // A lower cap evicts several at once, oldest first.
    let fifth = family("alice", 4).0;
    let evicted = store.create(&fifth, Some(2)).await.expect("create");
    assert_eq!(ids(&evicted), ids(&[fams[1].clone(), fams[2].clone()]));
    let left = store.list_user("alice", at(5)).await.expect("list");
    assert_eq!(ids(&left), ids(&[fourth.clone(), fifth.clone()]));
    // Same creation time: the smaller id is the older.
    let twins: Vec<Family> = (0..2).map(|_| family("carol", 10).0).collect();
    for f in &twins {
        store.create(f, Some(2)).await.expect("create");
    }
    let evicted = store
        .create(&family("carol", 10).0, Some(2))
        .await
        .expect("create");
    let smaller = twins.iter().map(|f| f.id.clone()).min().expect("two");
    assert_eq!(ids(&evicted), vec![smaller]);
    // Without a cap, nothing is evicted.
    let sixth = family("alice", 6).0;
    assert!(store.create(&sixth, None).await.expect("create").is_empty());
    assert_eq!(
        store.list_user("alice", at(7)).await.expect("list").len(),
        3
    );
    assert_eq!(
        store.list_user("bob", at(7)).await.expect("list").len(),
        1,
        "bob untouched"
    );
}

/// Expired families do not count against the cap and are never returned
/// as evicted.
pub async fn family_cap_ignores_expired<
    S: RefreshStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    let store = factory().await;
    // Idle 1 h: the first two have ended at 4000 s, the third has not.
    let old: Vec<Family> = (0..2).map(|_| family("alice", 0).0).collect();
    for f in &old {
        store.create(f, Some(2)).await.expect("create");
    }
    let live = family("alice", 3000).0;
    store.create(&live, Some(2)).await.expect("create");
    let new = family("alice", 4000).0;
    let evicted = store.create(&new, Some(2)).await.expect("create");
    assert!(
        evicted.is_empty(),
        "expired families neither count nor are returned: {evicted:?}"
    );
    let left = store.list_user("alice", at(4000)).await.expect("list");
    assert_eq!(ids(&left), ids(&[live, new]));
}

/// Concurrent creates for one user never leave more than the cap, and
/// every family is either live or returned as evicted exactly once.
pub async fn family_cap_concurrent_creates<
    S: RefreshStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
>(
    factory: F,
) {
    const CAP: usize = 5;
    let store = Arc::new(factory().await);
    let fams: Vec<Family> = (0..24).map(|i| family("alice", i % 3).0).collect();
    let tasks: Vec<_> = fams
        .iter()
        .cloned()
        .map(|f| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create(&f, Some(CAP)).await })
        })
        .collect();
    let mut evicted = Vec::new();
    for t in tasks {
        evicted.extend(t.await.expect("task").expect("create"));
    }
    let left = store.list_user("alice", at(10)).await.expect("list");
    assert_eq!(left.len(), CAP, "exactly the cap remains");
    let mut all = ids(&evicted);
    all.extend(ids(&left));
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(
        before,
        all.len(),
        "no family evicted twice or both kept and evicted"
    );
    assert_eq!(all, ids(&fams), "every family accounted for");
}

/// Runs the per-user family cap cases
/// ([`RefreshStore::create`] with `Some(max)`).
pub async fn run_family_cap<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    family_cap_evicts_oldest(&factory).await;
    family_cap_ignores_expired(&factory).await;
    family_cap_concurrent_creates(&factory).await;
}

/// Runs every case.
pub async fn run_all<S: RefreshStore, F: Fn() -> Fut, Fut: Future<Output = S>>(factory: F) {
    create_and_get(&factory).await;
    rotation_chain(&factory).await;
    grace_then_reuse(&factory).await;
    grandparent_is_reuse(&factory).await;
    unknown_and_mismatched(&factory).await;
    expiry(&factory).await;
    per_user(&factory).await;
    racing_rotations(&factory).await;
}

/// Expands to one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! refresh_store_conformance {
    ($factory:expr) => {
        $crate::refresh_store_conformance!(@cases $factory;
            create_and_get, rotation_chain, grace_then_reuse, grandparent_is_reuse,
            unknown_and_mismatched, expiry, per_user, racing_rotations);
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

/// Expands to one `#[tokio::test]` per case of the per-user family cap
/// ([`RefreshStore::create`] with `Some(max)`), like
/// [`refresh_store_conformance!`](crate::refresh_store_conformance).
///
/// ```
/// # mod demo {
/// use portcullis_refresh::MemoryRefreshStore;
///
/// portcullis_refresh::refresh_store_family_cap_conformance!(|| async { MemoryRefreshStore::new() });
/// # }
/// ```
#[macro_export]
macro_rules! refresh_store_family_cap_conformance {
    ($factory:expr) => {
        $crate::refresh_store_conformance!(@cases $factory;
            family_cap_evicts_oldest, family_cap_ignores_expired, family_cap_concurrent_creates);
    };
}

/// A refresh store that fails every call with a backend error, reaching
/// nothing, while its switch is on: [`InstrumentedRefreshStore`] with a
/// [`FaultSwitch`] observer.
pub type FaultyRefreshStore<S> = InstrumentedRefreshStore<S, FaultSwitch>;

impl<S> InstrumentedRefreshStore<S, FaultSwitch> {
    /// The shared switch: `true` makes every call fail.
    #[must_use]
    pub fn switch(&self) -> Arc<AtomicBool> {
        self.observer().shared()
    }
}
