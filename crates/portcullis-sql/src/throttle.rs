//! The login throttle's counter stores: [`PgThrottleStore`] (PostgreSQL)
//! and [`SqliteThrottleStore`] (SQLite), each a
//! [`portcullis_throttle::ThrottleStore`] shared by every instance on the
//! database. The shared part is here (the row codec, the order of keys);
//! each database's statements are in its own file.
//!
//! # Table
//!
//! `<schema>.throttle_counters` (PostgreSQL) or `<prefix>throttle_counters`
//! (SQLite), created by the backend's `migrate` (migration 5): one row per
//! counter, keyed by `(key_digest, scope)`: the SHA-256 digest of what the
//! counter counts (computed by the throttle: no account name or address is
//! ever stored) and the scope's name (`account`, `address`,
//! `account_at_address`); `failures`, `last_failure` (the application
//! clock's ms) and `expires_at` (`last_failure` plus the throttle's
//! `forget_after`).
//!
//! # Statements
//!
//! | call | statements |
//! |---|---|
//! | `check` (every request the throttle guards) | **one** `SELECT` of every counter of the request, by primary key |
//! | `record_failure` | **one** `INSERT .. ON CONFLICT DO UPDATE .. RETURNING` over every counter of the request: a counter forgotten by `now` starts again from 1, any other goes up by one (saturating at `u32::MAX`); the last failure becomes `now` (a stamp from an instance whose clock runs ahead is replaced by the next failure anywhere, so it cannot silence the counter for the others) |
//! | `reset` | one `DELETE` of the given counters |
//!
//! The upsert is atomic per row: racing failures from any number of
//! instances are each counted (PostgreSQL's row lock, SQLite's write lock
//! serialise them). PostgreSQL takes the rows' locks in one fixed order
//! (by digest, then scope), so two requests touching the same counters
//! never deadlock.
//!
//! # Purge
//!
//! Counters past `expires_at` count as zero at once (judged by the `now`
//! the throttle passes); the store deletes them 60 s later, in the
//! background, in batches ([`PurgeConfig`](crate::PurgeConfig)), started by
//! a `record_failure` at most once per interval, by the earlier of the
//! caller's clock and the database's (PostgreSQL). `purge_expired` deletes
//! them at once, for applications that schedule it.
//!
//! # Failures
//!
//! Every call is bounded by the backend's timeout and fails with a
//! `StoreError` (the throttle answers 503: it fails closed).
// Without a database feature there is no store to use the shared part.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

use std::time::Duration;

use portcullis_core::{StoreError, Timestamp};
use portcullis_throttle::{ThrottleKey, ThrottleState};

#[cfg(feature = "postgres")]
#[path = "throttle_pg.rs"]
mod postgres;
#[cfg(feature = "sqlite")]
#[path = "throttle_sqlite.rs"]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "throttle", feature = "postgres"))))]
pub use postgres::PgThrottleStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "throttle", feature = "sqlite"))))]
pub use sqlite::SqliteThrottleStore;

/// The table's base name.
const TABLE: &str = "throttle_counters";

/// How long after it is forgotten the background purge leaves a counter:
/// room for the clocks of other instances.
const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// The longest `forget_after` stored (about 35 years): keeps every sum of
/// times far from `i64::MAX`.
const MAX_FORGET_MS: i64 = 1 << 40;

/// The columns every statement returns, in [`RawRow`] order.
const COLUMNS: &str = "key_digest, scope, failures, last_failure";

/// A row as read: [`COLUMNS`], untrusted until decoded.
type RawRow = (Vec<u8>, String, i64, i64);

/// A counter's row key: its digest and its scope's name.
type RowKey = ([u8; 32], &'static str);

/// A row that does not decode; the message names the column, never a value.
#[derive(Debug, thiserror::Error)]
#[error("unreadable throttle counter row: {0}")]
struct Corrupt(&'static str);

/// The database left out a counter the upsert must return.
#[derive(Debug, thiserror::Error)]
#[error("the throttle upsert did not return every counter")]
struct MissingRow;

/// A time as stored: milliseconds, saturated at `i64::MAX`.
fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.millis()).unwrap_or(i64::MAX)
}

/// `forget_after` as stored: milliseconds, at least 0, at most
/// [`MAX_FORGET_MS`].
fn forget_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(MAX_FORGET_MS, |m| m.min(MAX_FORGET_MS))
}

fn row_key(key: &ThrottleKey) -> RowKey {
    (*key.digest().as_bytes(), key.scope().as_str())
}

/// The distinct row keys of `keys`, sorted (the order the upsert locks
/// rows in).
fn distinct_sorted(keys: &[ThrottleKey]) -> Vec<RowKey> {
    let mut rows: Vec<RowKey> = keys.iter().map(row_key).collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// A row as the key it belongs to and its counter.
fn decode(row: RawRow) -> Result<(([u8; 32], String), ThrottleState), Corrupt> {
    let (digest, scope, failures, last) = row;
    let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| Corrupt("key_digest"))?;
    let failures = u32::try_from(failures).map_err(|_| Corrupt("failures"))?;
    let last = u64::try_from(last).map_err(|_| Corrupt("last_failure"))?;
    Ok((
        (digest, scope),
        ThrottleState {
            failures,
            last_failure: Some(Timestamp::from_millis(last)),
        },
    ))
}

/// Each key's counter from `rows`, in the order of `keys`. With `forget`
/// (a check), a missing row or one forgotten by `now` is the default; else
/// (an upsert) every key must have its row.
fn assemble(
    keys: &[ThrottleKey],
    rows: Vec<RawRow>,
    forget: Option<(Timestamp, Duration)>,
) -> Result<Vec<ThrottleState>, StoreError> {
    let rows = rows
        .into_iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::corrupt)?;
    keys.iter()
        .map(|key| {
            let (digest, scope) = row_key(key);
            let found = rows
                .iter()
                .find(|((d, s), _)| *d == digest && s == scope)
                .map(|(_, state)| *state);
            match (found, forget) {
                (Some(state), Some((now, after))) => Ok(match state.last_failure {
                    Some(last) if last + after > now && state.failures > 0 => state,
                    _ => ThrottleState::default(),
                }),
                (None, Some(_)) => Ok(ThrottleState::default()),
                (Some(state), None) => Ok(state),
                (None, None) => Err(StoreError::backend(MissingRow)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::TokenDigest;
    use portcullis_throttle::ThrottleScope;

    #[test]
    fn rows_decode_in_key_order_and_forget() {
        let a = ThrottleKey::new(ThrottleScope::Account, TokenDigest::of(b"x"));
        let b = ThrottleKey::new(ThrottleScope::Address, TokenDigest::of(b"x"));
        let c = ThrottleKey::new(ThrottleScope::Account, TokenDigest::of(b"y"));
        let row = |k: &ThrottleKey, n: i64, l: i64| {
            (
                k.digest().as_bytes().to_vec(),
                k.scope().as_str().to_owned(),
                n,
                l,
            )
        };
        let rows = vec![row(&b, 2, 9_000), row(&a, 7, 1_000)];
        let now = Timestamp::from_millis(10_000);
        let got = assemble(
            &[a, b, c],
            rows.clone(),
            Some((now, Duration::from_secs(9))),
        )
        .unwrap();
        let state = |n, l| ThrottleState {
            failures: n,
            last_failure: Some(Timestamp::from_millis(l)),
        };
        // `a` forgotten at exactly forget_after; `c` never seen.
        assert_eq!(
            got,
            [
                ThrottleState::default(),
                state(2, 9_000),
                ThrottleState::default()
            ]
        );
        let got = assemble(&[b, a, b], rows.clone(), None).unwrap();
        assert_eq!(got, [state(2, 9_000), state(7, 1_000), state(2, 9_000)]);
        assert!(assemble(&[c], rows, None).is_err());

        for bad in [
            (vec![0; 31], "account".to_owned(), 1, 1),
            (vec![0; 32], "account".to_owned(), -1, 1),
            (vec![0; 32], "account".to_owned(), 1 << 33, 1),
            (vec![0; 32], "account".to_owned(), 1, -5),
        ] {
            let e = assemble(&[a], vec![bad], None).unwrap_err();
            assert_eq!(e.kind(), portcullis_core::StoreErrorKind::Corrupt);
        }
    }

    #[test]
    fn keys_lock_in_one_order_and_times_stay_bounded() {
        let a = ThrottleKey::new(ThrottleScope::Account, TokenDigest::from_bytes([2; 32]));
        let b = ThrottleKey::new(ThrottleScope::Address, TokenDigest::from_bytes([1; 32]));
        assert_eq!(distinct_sorted(&[a, b, a]), distinct_sorted(&[b, a]));
        assert_eq!(distinct_sorted(&[a, b]).len(), 2);
        assert_eq!(forget_ms(Duration::MAX), MAX_FORGET_MS);
        assert_eq!(forget_ms(Duration::from_millis(1500)), 1500);
    }
}
