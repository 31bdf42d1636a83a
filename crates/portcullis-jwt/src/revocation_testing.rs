//! The revocation store conformance suite: what every
//! [`RevocationStore`] must do, whatever its backend.
//!
//! Give it an async factory returning two handles on one fresh backend,
//! each ready to serve (their first snapshot loaded): two instances of a
//! shared store, or the same store twice for a single-process one. The
//! suite uses the system clock and ids of its own, unique per run, so a
//! backend shared by several runs works too.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use portcullis_jwt::revocation::MemoryRevocationStore;
//!
//! portcullis_jwt::revocation_testing::run_all(|| async {
//!     let store = MemoryRevocationStore::new();
//!     (store.clone(), store)
//! })
//! .await;
//! # })
//! ```
//!
//! Each case is also a public `async fn` taking the same factory;
//! [`revocation_store_conformance!`](crate::revocation_store_conformance)
//! makes one test per case.

use std::future::Future;
use std::time::{Duration, Instant};

use portcullis_core::{Clock as _, SystemClock};

use crate::claims::RegisteredClaims;
use crate::revocation::{RevocationStore, RevocationView};
use crate::validation::MAX_LEEWAY;

/// How long a change may take to reach the other handle's view.
pub const PROPAGATION: Duration = Duration::from_secs(5);

/// `MAX_LEEWAY` in seconds.
const LEEWAY: i64 = {
    let secs = MAX_LEEWAY.as_secs();
    assert!(secs <= i64::MAX as u64);
    secs as i64
};

fn now_secs() -> i64 {
    i64::try_from(SystemClock.now().secs()).unwrap_or(i64::MAX)
}

/// An id no other run uses: `name` and 16 random hex digits.
fn unique(name: &str) -> String {
    let mut b = [0u8; 8];
    portcullis_core::token::fill_random(&mut b).expect("random");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{name}-{hex}")
}

/// Claims carrying the given `jti`, `sid`, `sub` and `ver`.
#[must_use]
pub fn claims(
    jti: Option<&str>,
    sid: Option<&str>,
    sub: Option<&str>,
    ver: Option<u64>,
) -> RegisteredClaims {
    RegisteredClaims {
        jti: jti.map(Into::into),
        sid: sid.map(Into::into),
        sub: sub.map(Into::into),
        ver,
        ..RegisteredClaims::default()
    }
}

/// Waits until `check` holds on `view`, for [`PROPAGATION`] at most.
///
/// # Panics
///
/// When it never holds, naming `what`.
pub async fn eventually(
    what: &str,
    view: &RevocationView,
    check: impl Fn(&RevocationView) -> bool,
) {
    let start = Instant::now();
    while !check(view) {
        assert!(
            start.elapsed() < PROPAGATION,
            "never within {PROPAGATION:?}: {what} ({view:?})"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Both handles' views are ready (the factory's promise).
fn ready<S: RevocationStore>(a: &S, b: &S) {
    assert!(a.view().is_ready(), "the first handle's view is not ready");
    assert!(b.view().is_ready(), "the second handle's view is not ready");
}

/// A revoked token id is refused at once by this handle's view and soon
/// by the other's; another id, and the same token's session and user, are
/// not affected.
pub async fn revoke_token<S: RevocationStore, F: Fn() -> Fut, Fut: Future<Output = (S, S)>>(
    factory: F,
) {
    let (a, b) = factory().await;
    ready(&a, &b);
    let (jti, sid, sub) = (unique("jti"), unique("sid"), unique("sub"));
    let token = claims(Some(&jti), Some(&sid), Some(&sub), Some(0));
    assert_eq!(a.view().check(&token), None);
    a.revoke_token(&jti, now_secs() + 600)
        .await
        .expect("revoke_token");
    assert_eq!(
        a.view().check(&token),
        Some("token-revoked"),
        "refused by the revoking handle when the call returns"
    );
    eventually("the token on the other handle", &b.view(), |v| {
        v.check(&token).is_some()
    })
    .await;
    let other = claims(Some(&unique("jti")), Some(&sid), Some(&sub), Some(0));
    for view in [a.view(), b.view()] {
        assert_eq!(view.check(&other), None, "another jti of the same session");
        assert!(!view.is_session_revoked(&sid));
        assert_eq!(view.user_version(&sub), 0);
    }
}

/// A revoked session refuses every token carrying its `sid`, on both
/// handles; tokens of other sessions pass.
pub async fn revoke_session<S: RevocationStore, F: Fn() -> Fut, Fut: Future<Output = (S, S)>>(
    factory: F,
) {
    let (a, b) = factory().await;
    ready(&a, &b);
    let sid = unique("sid");
    let first = claims(Some(&unique("jti")), Some(&sid), Some("u"), Some(0));
    let second = claims(Some(&unique("jti")), Some(&sid), None, None);
    let elsewhere = claims(
        Some(&unique("jti")),
        Some(&unique("sid")),
        Some("u"),
        Some(0),
    );
    b.revoke_session(&sid, now_secs() + 600)
        .await
        .expect("revoke_session");
    assert!(b.view().is_session_revoked(&sid));
    assert_eq!(b.view().check(&first), Some("session-revoked"));
    eventually("the session on the other handle", &a.view(), |v| {
        v.is_session_revoked(&sid)
    })
    .await;
    for view in [a.view(), b.view()] {
        assert_eq!(view.check(&first), Some("session-revoked"));
        assert_eq!(view.check(&second), Some("session-revoked"));
        assert_eq!(view.check(&elsewhere), None);
    }
}

/// `revoke_user` bumps the user's version by one, from either handle
/// (1, 2, 3 for a user never revoked); tokens whose `ver` is below the
/// current version (or missing) are refused, tokens minted at the current
/// version pass; other users are not affected.
pub async fn revoke_user<S: RevocationStore, F: Fn() -> Fut, Fut: Future<Output = (S, S)>>(
    factory: F,
) {
    let (a, b) = factory().await;
    ready(&a, &b);
    let (user, bystander) = (unique("user"), unique("user"));
    let at = |ver| claims(None, None, Some(&user), ver);
    assert_eq!(a.view().user_version(&user), 0);
    assert_eq!(a.revoke_user(&user).await.expect("revoke_user"), 1);
    assert_eq!(a.view().user_version(&user), 1);
    assert_eq!(a.revoke_user(&user).await.expect("revoke_user"), 2);
    eventually("version 2 on the other handle", &b.view(), |v| {
        v.user_version(&user) == 2
    })
    .await;
    assert_eq!(b.revoke_user(&user).await.expect("revoke_user"), 3);
    eventually("version 3 on the first handle", &a.view(), |v| {
        v.user_version(&user) == 3
    })
    .await;
    for view in [a.view(), b.view()] {
        assert_eq!(view.user_version(&user), 3);
        for ver in [None, Some(0), Some(2)] {
            assert_eq!(view.check(&at(ver)), Some("user-revoked"), "ver {ver:?}");
        }
        assert_eq!(
            view.check(&at(Some(3))),
            None,
            "minted after the revocation"
        );
        assert_eq!(view.user_version(&bystander), 0);
        assert_eq!(
            view.check(&claims(None, None, Some(&bystander), None)),
            None
        );
    }
}

/// An entry lasts until its expiry plus [`MAX_LEEWAY`] (a layer accepts a
/// token up to its leeway past `exp`), and ends there: a token revoked
/// with an expiry further back than that is not refused, one within it
/// is; a second revocation of the same id never shortens the first.
pub async fn expiry<S: RevocationStore, F: Fn() -> Fut, Fut: Future<Output = (S, S)>>(factory: F) {
    let (a, b) = factory().await;
    ready(&a, &b);
    let now = now_secs();
    let (ended, within, kept, marker) = (
        unique("ended"),
        unique("within"),
        unique("kept"),
        unique("marker"),
    );
    let (ended_sid, within_sid) = (unique("ended-sid"), unique("within-sid"));
    a.revoke_token(&ended, now - LEEWAY - 5)
        .await
        .expect("revoke");
    a.revoke_session(&ended_sid, now - LEEWAY - 5)
        .await
        .expect("revoke");
    a.revoke_token(&within, now - LEEWAY + 60)
        .await
        .expect("revoke");
    a.revoke_session(&within_sid, now - LEEWAY + 60)
        .await
        .expect("revoke");
    a.revoke_token(&kept, now + 600).await.expect("revoke");
    a.revoke_token(&kept, now - LEEWAY - 5)
        .await
        .expect("revoke");
    a.revoke_token(&marker, now + 600).await.expect("revoke");
    let jti = |j: &str| claims(Some(j), None, None, None);
    // Changes reach the other handle in order: once the last is there,
    // every earlier one has been applied.
    eventually("the last change on the other handle", &b.view(), |v| {
        v.check(&jti(&marker)).is_some()
    })
    .await;
    for view in [a.view(), b.view()] {
        assert_eq!(view.check(&jti(&ended)), None, "past exp + MAX_LEEWAY");
        assert!(
            !view.is_session_revoked(&ended_sid),
            "past exp + MAX_LEEWAY"
        );
        assert_eq!(view.check(&jti(&within)), Some("token-revoked"));
        assert!(view.is_session_revoked(&within_sid));
        assert_eq!(
            view.check(&jti(&kept)),
            Some("token-revoked"),
            "a later, shorter revocation does not shorten the first"
        );
    }
}

/// Ids are matched exactly, whatever they hold: a 10 KB user id, NUL
/// bytes, quotes, percent signs, spaces, non-ASCII; an id that differs by
/// one character is not refused.
pub async fn awkward_ids<S: RevocationStore, F: Fn() -> Fut, Fut: Future<Output = (S, S)>>(
    factory: F,
) {
    let (a, b) = factory().await;
    ready(&a, &b);
    let tail = unique("");
    let long_user = format!("{}{tail}", "u".repeat(10 * 1024));
    let users = [
        long_user.clone(),
        format!("a\0b{tail}"),
        format!("o'brien \"x\" %s %% \\ {tail}"),
        format!("ünïcødé 用户 {tail}"),
    ];
    let ids = [
        format!("jti\0with nul {tail}"),
        format!("'; DROP TABLE x; -- {tail}"),
        format!("{}{tail}", "j".repeat(4096)),
    ];
    let exp = now_secs() + 600;
    for user in &users {
        assert_eq!(a.revoke_user(user).await.expect("revoke_user"), 1);
    }
    for id in &ids {
        a.revoke_token(id, exp).await.expect("revoke_token");
        a.revoke_session(id, exp).await.expect("revoke_session");
    }
    let last = ids.last().expect("ids");
    eventually("the last change on the other handle", &b.view(), |v| {
        v.is_session_revoked(last)
    })
    .await;
    for view in [a.view(), b.view()] {
        for user in &users {
            assert_eq!(
                view.user_version(user),
                1,
                "{:?}",
                &user[..user.len().min(40)]
            );
            let near: String = user.chars().skip(1).collect();
            assert_eq!(view.user_version(&near), 0);
        }
        assert_eq!(view.user_version(&long_user[..long_user.len() - 1]), 0);
        for id in &ids {
            assert_eq!(
                view.check(&claims(Some(id), None, None, None)),
                Some("token-revoked")
            );
            assert!(view.is_session_revoked(id));
            let near = format!("{id} ");
            assert_eq!(
                view.check(&claims(Some(&near), Some(&near), None, None)),
                None
            );
        }
    }
}

/// Runs every case.
pub async fn run_all<S: RevocationStore, F: Fn() -> Fut, Fut: Future<Output = (S, S)>>(factory: F) {
    revoke_token(&factory).await;
    revoke_session(&factory).await;
    revoke_user(&factory).await;
    expiry(&factory).await;
    awkward_ids(&factory).await;
}

/// Expands to one `#[tokio::test]` per conformance case (the calling
/// crate needs tokio with `macros` and `rt-multi-thread`).
///
/// ```
/// # mod demo {
/// use portcullis_jwt::revocation::MemoryRevocationStore;
///
/// portcullis_jwt::revocation_store_conformance!(|| async {
///     let store = MemoryRevocationStore::new();
///     (store.clone(), store)
/// });
/// # }
/// ```
#[macro_export]
macro_rules! revocation_store_conformance {
    ($factory:expr) => {
        $crate::revocation_store_conformance!(@cases $factory;
            revoke_token, revoke_session, revoke_user, expiry, awkward_ids);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::revocation_testing::$case($factory).await;
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use crate::revocation::MemoryRevocationStore;

    #[tokio::test]
    async fn the_memory_store_conforms() {
        super::run_all(|| async {
            let store = MemoryRevocationStore::new();
            (store.clone(), store)
        })
        .await;
    }
}
