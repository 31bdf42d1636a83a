//! The JWT revocation stores: [`PgRevocationStore`] (every instance's
//! in-process view kept current by PostgreSQL `LISTEN/NOTIFY`) and
//! [`SqliteRevocationStore`] (one process's view, kept current by its own
//! writes).
//!
//! Both implement `portcullis_jwt::revocation::RevocationStore`: the
//! `JwtLayer` checks only the [`RevocationView`], in process, so a JWT
//! request costs no database call.
//!
//! | table | key | holds |
//! |---|---|---|
//! | `revoked_tokens` | SHA-256 of the `jti` | the `jti` (bytes), the token's `exp` (ms) |
//! | `revoked_sessions` | SHA-256 of the `sid` | the `sid` (bytes), when its last access token expires (ms) |
//! | `revoked_users` | SHA-256 of the user id | the user id (bytes), the token version |
//!
//! The ids themselves are stored (the views match them against claims:
//! a `jti`, a `sid` and a `sub` are not credentials, each sits readable in
//! every token that carries it); the keys are their digests, so an id of
//! any length and any bytes (NUL, quotes) is stored and found exactly.
//! Denylist rows are kept `portcullis_jwt::MAX_LEEWAY` plus 60 s past
//! their expiry (a layer accepts a token up to its leeway past `exp`), then
//! purged in batches; user versions are never purged (they only go up).
//!
//! Snapshots are read in pages (keyset pagination on each table's digest
//! key, 10,000 rows a page unless the builder's `snapshot_page` says
//! otherwise), each page one statement under the backend's timeout: the
//! time a snapshot takes grows with the tables, and a table of millions of
//! rows still loads. The view is marked ready only once every page of
//! every table is in it.
//!
//! A database restored from an older backup brings back what it held:
//! revocations made after the backup are lost to every view that loads
//! it from then on (a view that saw them keeps them, merged). Run
//! `revoke_user` again for the users revoked since the backup.

#[cfg(feature = "postgres")]
mod listener;
#[cfg(feature = "postgres")]
mod pg_state;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PgRevocationStore, PgRevocationStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteRevocationStore, SqliteRevocationStoreBuilder};

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub use shared::RevocationStartError;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use shared::*;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod shared {
    use std::time::Duration;

    use portcullis_core::{SharedClock, TokenDigest};
    use portcullis_jwt::revocation::{RevocationEvent, RevocationView};

    /// Room for clock skew, in seconds, on top of the leeway: rows stay in
    /// the database (and in snapshots) this much longer.
    const SKEW_MARGIN_SECS: i64 = 60;

    /// `portcullis_jwt::MAX_LEEWAY` in seconds (300).
    #[allow(clippy::cast_possible_wrap)]
    const LEEWAY_SECS: i64 = portcullis_jwt::MAX_LEEWAY.as_secs() as i64;

    /// How long past its expiry a denylist row is kept, in milliseconds:
    /// the largest leeway plus the skew margin. Counted from the earlier
    /// of the caller's clock and the database's, never from one instance's
    /// clock alone.
    pub(crate) const KEEP_MS: i64 = (LEEWAY_SECS + SKEW_MARGIN_SECS) * 1000;

    /// The rows a snapshot reads per statement unless the builder says
    /// otherwise (`snapshot_page`): each page is one statement under the
    /// backend's timeout.
    pub(crate) const DEFAULT_SNAPSHOT_PAGE: u32 = 10_000;

    /// The first pause before the listener (or the SQLite snapshot) tries
    /// again; it doubles up to the store's maximum backoff.
    pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(50);

    /// What a store's sync state says: whether the view is current, and
    /// how many snapshots have loaded.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub(crate) struct SyncState {
        /// Listening (PostgreSQL), with a snapshot loaded since the last
        /// (re)connect; for SQLite, the snapshot has loaded.
        pub(crate) connected: bool,
        /// Snapshots loaded so far.
        pub(crate) snapshots: u64,
    }

    /// Why a revocation store could not start.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum RevocationStartError {
        /// There is no Tokio runtime to spawn the store's task on.
        #[error(
            "a revocation store must start inside a Tokio runtime (it spawns its listener or snapshot task)"
        )]
        NoRuntime,
        /// The ping interval or the backoff is zero.
        #[error("the ping interval and the maximum backoff must be non-zero")]
        Interval,
        /// The staleness bound is not longer than the ping interval plus
        /// the backend's timeout: a healthy connection would be reported
        /// stale between two pings.
        #[error("max_staleness must be longer than the ping interval plus the backend's timeout")]
        Staleness,
        /// The snapshot page size is zero.
        #[error("the snapshot page size must be at least one row")]
        SnapshotPage,
    }

    /// One page of a snapshot read: `(key, id, value)` rows in key order.
    pub(crate) type PageRows = Vec<(Vec<u8>, Vec<u8>, i64)>;

    /// Applies one page of a snapshot to `view` (each row through
    /// `event`; rows that are not ours are skipped) and returns the key to
    /// read the next page after, or `None` when this page was the last (it
    /// held fewer than `page` rows).
    pub(crate) fn apply_page(
        view: &RevocationView,
        rows: PageRows,
        page: u32,
        event: impl Fn(Vec<u8>, i64) -> Option<RevocationEvent>,
    ) -> Option<Vec<u8>> {
        let full = u32::try_from(rows.len()).is_ok_and(|n| n >= page);
        let mut last = None;
        for (key, id, value) in rows {
            if let Some(e) = event(id, value) {
                view.apply(&e);
            }
            last = Some(key);
        }
        last.filter(|_| full)
    }

    /// The event of a denylist row, if its id is ours.
    pub(crate) fn entry_event(entry: Entry) -> impl Fn(Vec<u8>, i64) -> Option<RevocationEvent> {
        move |id, expires_at| Some(entry.event(id_of(id)?, expires_at))
    }

    /// Which denylist a row or a message is about.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Entry {
        /// `revoked_tokens` (`jti`).
        Token,
        /// `revoked_sessions` (`sid`).
        Session,
    }

    impl Entry {
        /// The table's base name.
        pub(crate) const fn table(self) -> &'static str {
            match self {
                Self::Token => "revoked_tokens",
                Self::Session => "revoked_sessions",
            }
        }

        /// The event denying `id` until `expires_at_ms`.
        pub(crate) fn event(self, id: String, expires_at_ms: i64) -> RevocationEvent {
            let expires_at = secs_of(expires_at_ms);
            match self {
                Self::Token => RevocationEvent::Token {
                    jti: id,
                    expires_at,
                },
                Self::Session => RevocationEvent::Session {
                    sid: id,
                    expires_at,
                },
            }
        }
    }

    /// The SHA-256 of an id: the key of its row.
    pub(crate) fn digest(id: &str) -> [u8; 32] {
        *TokenDigest::of(id.as_bytes()).as_bytes()
    }

    /// An expiry in seconds (a JWT's `exp`) as stored: milliseconds,
    /// saturating (an absurdly far expiry stays far).
    pub(crate) const fn ms_of(secs: i64) -> i64 {
        secs.saturating_mul(1000)
    }

    /// A stored expiry (ms) as seconds (rounded down).
    pub(crate) const fn secs_of(ms: i64) -> i64 {
        ms.div_euclid(1000)
    }

    /// The clock's reading in milliseconds.
    pub(crate) fn now_ms(clock: &SharedClock) -> i64 {
        i64::try_from(clock.now().millis()).unwrap_or(i64::MAX)
    }

    /// The version this instance's view holds for `user`: a revocation
    /// sets the next version above it and above the stored one, so
    /// versions keep going up even if the database lost the row.
    pub(crate) fn version_floor(view: &RevocationView, user: &str) -> i64 {
        i64::try_from(view.user_version(user)).unwrap_or(i64::MAX - 1)
    }

    /// A stored id as the view keeps it (ids are written from `&str`, so
    /// anything else is not ours and is skipped).
    pub(crate) fn id_of(bytes: Vec<u8>) -> Option<String> {
        String::from_utf8(bytes).ok()
    }

    /// A user-version row as an event (a version below 1 is not ours).
    pub(crate) fn user_event(user_id: Vec<u8>, version: i64) -> Option<RevocationEvent> {
        Some(RevocationEvent::User {
            user: id_of(user_id)?,
            version: u64::try_from(version).ok().filter(|v| *v > 0)?,
        })
    }

    /// `backoff` plus up to a quarter more, so that instances that lost
    /// the database together do not all come back in the same millisecond.
    pub(crate) fn jitter(backoff: Duration) -> Duration {
        let mut b = [0u8; 1];
        if portcullis_core::token::fill_random(&mut b).is_err() {
            return backoff;
        }
        backoff + backoff / 4 * u32::from(b[0]) / 255
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn expiries_round_trip_and_saturate() {
            for secs in [0, 1, -5, 1_700_000_000, i64::MAX / 1000] {
                assert_eq!(secs_of(ms_of(secs)), secs, "{secs}");
            }
            assert_eq!(ms_of(i64::MAX), i64::MAX);
            assert!(secs_of(ms_of(i64::MAX)) > 9_000_000_000_000_000 / 1000);
            assert_eq!(KEEP_MS, 360_000);
        }

        #[test]
        fn rows_become_events_only_when_they_are_ours() {
            assert_eq!(
                user_event(b"a\0b".to_vec(), 3),
                Some(RevocationEvent::User {
                    user: "a\0b".into(),
                    version: 3
                })
            );
            assert_eq!(user_event(vec![0xff], 3), None);
            assert_eq!(user_event(b"a".to_vec(), 0), None);
            assert_eq!(user_event(b"a".to_vec(), -1), None);
            assert_eq!(
                Entry::Session.event("s".into(), 1_500),
                RevocationEvent::Session {
                    sid: "s".into(),
                    expires_at: 1
                }
            );
        }

        #[test]
        fn pages_continue_after_their_last_key_until_a_short_one() {
            let view = RevocationView::new(portcullis_core::SystemClock::shared());
            let row = |k: u8, user: &[u8]| (vec![k; 32], user.to_vec(), 1);
            let full = vec![row(1, b"a"), row(2, &[0xff]), row(3, b"c")];
            assert_eq!(
                apply_page(&view, full, 3, user_event),
                Some(vec![3; 32]),
                "a full page: the next one starts after its last key, skipped rows included"
            );
            assert_eq!(apply_page(&view, vec![row(4, b"d")], 3, user_event), None);
            assert_eq!(apply_page(&view, Vec::new(), 3, user_event), None);
            assert_eq!(view.len(), (0, 0, 3));
            assert_eq!(view.user_version("d"), 1);
        }

        #[test]
        fn jitter_adds_at_most_a_quarter() {
            let b = Duration::from_millis(100);
            for _ in 0..100 {
                let j = jitter(b);
                assert!(j >= b && j <= b + b / 4, "{j:?}");
            }
        }
    }
}
