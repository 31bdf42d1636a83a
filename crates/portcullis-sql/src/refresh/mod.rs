//! The refresh-family stores: [`PgRefreshStore`] (PostgreSQL) and
//! [`SqliteRefreshStore`] (SQLite), each a
//! [`portcullis_refresh::RefreshStore`] as strong as the Redis one. The
//! shared part is here: the row codec and the rotation's classification
//! ([`Family::classify`], the rules every store shares); each database's
//! statements are in its own file. The documentation below is also that
//! of both stores.
//!
#![doc = include_str!("docs.md")]
// Without a database feature there is no store to use the shared part.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{Deadlines, StoreError, Timestamp, TokenDigest};
use portcullis_refresh::{Family, FamilyId, Presented, RotateOutcome, Rotated, Rotation};

#[macro_use]
mod shared;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "refresh", feature = "postgres"))))]
pub use postgres::PgRefreshStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "refresh", feature = "sqlite"))))]
pub use sqlite::SqliteRefreshStore;

/// The table's base name.
const TABLE: &str = "refresh_families";

/// How long after its end the background purge leaves a family: room for
/// the clocks of other instances (the Redis stores keep the same).
const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// The class of the per-user advisory locks (`pg_advisory_xact_lock(int4,
/// int4)`): `pcrf`.
#[cfg(feature = "postgres")]
const LOCK_CLASS: i32 = 0x7063_7266;

/// How many times a rotation reads again after the family changed between
/// its statements (each time another rotation of the family committed).
const ATTEMPTS: usize = 4;

/// The columns every read returns, in [`RawRow`] order.
const COLUMNS: &str = "family_digest, family_id, user_id, current_digest, previous_digest, \
                       previous_at, history, rotations, created_at, last_used_at, idle_deadline, \
                       absolute_deadline, claims, device, dpop_jkt";

/// A row as read: [`COLUMNS`], untrusted until [`decode`]d.
type RawRow = (
    Vec<u8>,
    String,
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<i64>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    String,
    Option<String>,
);

/// The columns the rotation's read returns: [`COLUMNS`], then whether a
/// rotation found reuse ([`ReadRow`]).
const READ_COLUMNS: &str = "family_digest, family_id, user_id, current_digest, previous_digest, \
                            previous_at, history, rotations, created_at, last_used_at, \
                            idle_deadline, absolute_deadline, claims, device, dpop_jkt, \
                            reused_at IS NOT NULL";

/// A row as the rotation's read returns it: [`READ_COLUMNS`].
type ReadRow = (
    Vec<u8>,
    String,
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<i64>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    String,
    Option<String>,
    bool,
);

/// A read row as the family's columns and whether it was reused.
fn split(r: ReadRow) -> (RawRow, bool) {
    (
        (
            r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, r.13, r.14,
        ),
        r.15,
    )
}

/// A row that does not decode; the message names the column, never a value.
#[derive(Debug, thiserror::Error)]
#[error("unreadable refresh family row: {0}")]
struct Corrupt(&'static str);

impl From<Corrupt> for StoreError {
    fn from(e: Corrupt) -> Self {
        StoreError::corrupt(e)
    }
}

/// A family changed under a rotation more often than it reads again.
#[derive(Debug, thiserror::Error)]
#[error("the refresh family kept changing during the rotation")]
struct KeptChanging;

/// A time as stored: milliseconds, saturated at `i64::MAX` (about 292
/// million years).
fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.millis()).unwrap_or(i64::MAX)
}

fn time(v: i64, column: &'static str) -> Result<Timestamp, Corrupt> {
    u64::try_from(v)
        .map(Timestamp::from_millis)
        .map_err(|_| Corrupt(column))
}

fn digest(bytes: &[u8], column: &'static str) -> Result<TokenDigest, Corrupt> {
    <[u8; 32]>::try_from(bytes)
        .map(TokenDigest::from_bytes)
        .map_err(|_| Corrupt(column))
}

/// The key of a family's row: SHA-256 of its id.
fn family_key(id: &FamilyId) -> [u8; 32] {
    *TokenDigest::of(id.as_str().as_bytes()).as_bytes()
}

/// The indexed digest of a user id.
fn user_key(user_id: &str) -> [u8; 32] {
    *TokenDigest::of(user_id.as_bytes()).as_bytes()
}

/// Decodes a row; every column is checked, nothing panics.
fn decode(row: RawRow) -> Result<Family, Corrupt> {
    let (
        key,
        id,
        user_id,
        current,
        previous,
        previous_at,
        history,
        rotations,
        created_at,
        last_used_at,
        idle,
        absolute,
        claims,
        device,
        jkt,
    ) = row;
    let id = FamilyId::parse(&id).ok_or(Corrupt("family_id"))?;
    if family_key(&id)[..] != key[..] {
        return Err(Corrupt("family_id"));
    }
    let user_id = String::from_utf8(user_id).map_err(|_| Corrupt("user_id"))?;
    let previous = match (previous, previous_at) {
        (Some(d), Some(at)) => Some(Rotated {
            digest: digest(&d, "previous_digest")?,
            at: time(at, "previous_at")?,
        }),
        (None, None) => None,
        _ => return Err(Corrupt("previous_at")),
    };
    if history.len() % 64 != 0 || !history.is_ascii() {
        return Err(Corrupt("history"));
    }
    let history = history
        .as_bytes()
        .chunks_exact(64)
        .map(|hex| {
            std::str::from_utf8(hex)
                .ok()
                .and_then(|h| TokenDigest::from_hex(h).ok())
                .ok_or(Corrupt("history"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Family {
        id,
        user_id,
        claims: serde_json::from_str(&claims).map_err(|_| Corrupt("claims"))?,
        device: serde_json::from_str(&device).map_err(|_| Corrupt("device"))?,
        created_at: time(created_at, "created_at")?,
        last_used_at: time(last_used_at, "last_used_at")?,
        deadlines: Deadlines {
            idle: time(idle, "idle_deadline")?,
            absolute: time(absolute, "absolute_deadline")?,
        },
        current: digest(&current, "current_digest")?,
        previous,
        history,
        rotations: u64::try_from(rotations).map_err(|_| Corrupt("rotations"))?,
        jkt,
    })
}

/// Decodes the rows of a list; unreadable ones are left out (and logged).
fn decode_all(rows: Vec<RawRow>) -> Vec<Family> {
    rows.into_iter()
        .filter_map(|row| match decode(row) {
            Ok(f) => Some(f),
            Err(_e) => {
                portcullis_core::event!(
                    warn,
                    reason = "corrupt-row",
                    column = _e.0,
                    "an unreadable refresh family row was skipped"
                );
                None
            }
        })
        .collect()
}

/// The values of a new family's row, in insert order.
struct NewRow {
    key: [u8; 32],
    id: String,
    user_key: [u8; 32],
    user_id: Vec<u8>,
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    previous_at: Option<i64>,
    history: String,
    rotations: i64,
    created_at: i64,
    last_used_at: i64,
    idle: i64,
    absolute: i64,
    claims: String,
    device: String,
    jkt: Option<String>,
}

impl NewRow {
    fn of(f: &Family) -> Result<Self, StoreError> {
        Ok(Self {
            key: family_key(&f.id),
            id: f.id.as_str().to_owned(),
            user_key: user_key(&f.user_id),
            user_id: f.user_id.as_bytes().to_vec(),
            current: *f.current.as_bytes(),
            previous: f.previous.map(|p| *p.digest.as_bytes()),
            previous_at: f.previous.map(|p| ms(p.at)),
            history: f.history.iter().map(TokenDigest::to_hex).collect(),
            rotations: i64::try_from(f.rotations).unwrap_or(i64::MAX),
            created_at: ms(f.created_at),
            last_used_at: ms(f.last_used_at),
            idle: ms(f.deadlines.idle),
            absolute: ms(f.deadlines.absolute),
            claims: serde_json::to_string(&f.claims).map_err(StoreError::corrupt)?,
            device: serde_json::to_string(&f.device).map_err(StoreError::corrupt)?,
            jkt: f.jkt.clone(),
        })
    }
}

/// The binds of the rotation's `UPDATE`.
struct Swap {
    key: [u8; 32],
    presented: [u8; 32],
    successor: [u8; 32],
    /// How many history characters to keep (64 per digest).
    keep: i32,
    now: i64,
    /// `now + idle`, before the absolute deadline bounds it.
    idle: i64,
    /// The device as JSON, or `None` to keep the stored one.
    device: Option<String>,
}

impl Swap {
    fn of(r: &Rotation) -> Result<Self, StoreError> {
        let device = if r.device.user_agent.is_some() || r.device.ip.is_some() {
            Some(serde_json::to_string(&r.device).map_err(StoreError::corrupt)?)
        } else {
            None
        };
        Ok(Self {
            key: family_key(&r.family),
            presented: *r.presented.as_bytes(),
            successor: *r.successor.as_bytes(),
            keep: i32::try_from(r.history_limit.saturating_mul(64)).unwrap_or(i32::MAX / 64 * 64),
            now: ms(r.now),
            idle: ms(r.now + r.idle),
            device,
        })
    }
}

/// The statements of a rotation, on one connection.
#[async_trait]
trait RotationRows: Send {
    /// The compare-and-swap `UPDATE`: the rotated row, if it matched.
    async fn swap(&mut self, swap: &Swap) -> Result<Option<RawRow>, StoreError>;
    /// The row, live or not, and whether a rotation found reuse in it.
    async fn read(&mut self, key: &[u8; 32]) -> Result<Option<(RawRow, bool)>, StoreError>;
    /// Marks the row reused at `now` if it still has `rotations` and
    /// `current` and is not marked yet; returns it.
    async fn mark_reused(
        &mut self,
        key: &[u8; 32],
        rotations: i64,
        current: &[u8; 32],
        now: i64,
    ) -> Result<Option<RawRow>, StoreError>;
    /// Deletes the row if it has ended at `now`.
    async fn delete_ended(&mut self, key: &[u8; 32], now: i64) -> Result<(), StoreError>;
}

/// [`RefreshStore::rotate`](portcullis_refresh::RefreshStore::rotate) on
/// either database: the swap, and when it matched nothing, the shared
/// classification of what the row holds.
async fn rotate<R: RotationRows>(rows: &mut R, r: &Rotation) -> Result<RotateOutcome, StoreError> {
    let swap = Swap::of(r)?;
    for _ in 0..ATTEMPTS {
        if let Some(row) = rows.swap(&swap).await? {
            return Ok(RotateOutcome::Rotated(decode(row)?));
        }
        let Some((row, reused)) = rows.read(&swap.key).await? else {
            return Ok(RotateOutcome::Invalid);
        };
        let family = decode(row)?;
        if family.is_expired(r.now) {
            rows.delete_ended(&swap.key, swap.now).await?;
            return Ok(RotateOutcome::Invalid);
        }
        if reused {
            // Ended by a reuse, kept until its end: every token it had
            // replaced is reuse again (so a caller whose answer was lost
            // still revokes the family's access tokens); its current token
            // finds it gone.
            return Ok(match family.classify(&r.presented, r.now, r.grace) {
                Presented::Reused | Presented::InGrace => RotateOutcome::Reused(family),
                Presented::Current | Presented::Unknown => RotateOutcome::Invalid,
            });
        }
        match family.classify(&r.presented, r.now, r.grace) {
            // Rotated back to it between the two statements: only a
            // family deleted and created again under the same id does.
            Presented::Current => {}
            Presented::InGrace if family.current == r.successor => {
                return Ok(RotateOutcome::Repeat(family));
            }
            Presented::InGrace => return Ok(RotateOutcome::KeyMismatch),
            Presented::Unknown => return Ok(RotateOutcome::Invalid),
            Presented::Reused => {
                let seen = i64::try_from(family.rotations).unwrap_or(i64::MAX);
                if let Some(row) = rows
                    .mark_reused(&swap.key, seen, family.current.as_bytes(), swap.now)
                    .await?
                {
                    return Ok(RotateOutcome::Reused(decode(row)?));
                }
                // Rotated, marked or deleted since it was read: look again.
            }
        }
    }
    Err(StoreError::backend(KeptChanging))
}

/// The families to evict so that at most `max` (at least 1) remain with
/// the new one: the oldest by `created_at`, then id.
fn victims(mut live: Vec<Family>, max: usize) -> Vec<Family> {
    live.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let excess = (live.len() + 1).saturating_sub(max.max(1));
    live.truncate(excess);
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_refresh::{DeviceInfo, RefreshToken};

    fn family() -> Family {
        let id = FamilyId::generate().unwrap();
        let t = RefreshToken::first(id.clone()).unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("big".into(), serde_json::json!(12_345_678_901_234_567_u64));
        claims.insert("nul".into(), serde_json::json!("a\u{0}b"));
        Family {
            id,
            user_id: "alice \u{0} \u{e9}".into(),
            claims,
            device: DeviceInfo {
                user_agent: Some("ua".into()),
                ip: None,
            },
            created_at: Timestamp::from_millis(1),
            last_used_at: Timestamp::from_millis(2),
            deadlines: Deadlines {
                idle: Timestamp::from_millis(3),
                absolute: Timestamp::from_millis(4),
            },
            current: t.digest(),
            previous: Some(Rotated {
                digest: TokenDigest::of(b"p"),
                at: Timestamp::from_millis(5),
            }),
            history: vec![TokenDigest::of(b"h1"), TokenDigest::of(b"h2")],
            rotations: 7,
            jkt: Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()),
        }
    }

    /// A row as the database would return it for `f`.
    fn row(f: &Family) -> RawRow {
        let n = NewRow::of(f).unwrap();
        (
            n.key.to_vec(),
            n.id,
            n.user_id,
            n.current.to_vec(),
            n.previous.map(|p| p.to_vec()),
            n.previous_at,
            n.history,
            n.rotations,
            n.created_at,
            n.last_used_at,
            n.idle,
            n.absolute,
            n.claims,
            n.device,
            n.jkt,
        )
    }

    #[test]
    fn rows_round_trip() {
        let f = family();
        assert_eq!(decode(row(&f)).unwrap(), f);
        let mut fresh = f.clone();
        fresh.previous = None;
        fresh.history.clear();
        fresh.claims.clear();
        fresh.jkt = None;
        assert_eq!(decode(row(&fresh)).unwrap(), fresh);
    }

    #[test]
    fn unreadable_rows_are_refused_by_column() {
        let f = family();
        let other = FamilyId::generate().unwrap();
        type Damage = Box<dyn Fn(&mut RawRow)>;
        let cases: Vec<(&str, Damage)> = vec![
            ("family_id", Box::new(|r| r.1 = "short".into())),
            ("family_id", Box::new(move |r| r.1 = other.to_string())),
            ("family_id", Box::new(|r| r.0 = vec![0; 31])),
            ("user_id", Box::new(|r| r.2 = vec![0xff, 0xfe])),
            ("current_digest", Box::new(|r| r.3 = vec![1; 33])),
            ("previous_digest", Box::new(|r| r.4 = Some(vec![]))),
            ("previous_at", Box::new(|r| r.5 = None)),
            ("previous_at", Box::new(|r| r.5 = Some(-1))),
            ("history", Box::new(|r| r.6.push('a'))),
            ("history", Box::new(|r| r.6 = "g".repeat(64))),
            ("history", Box::new(|r| r.6 = "\u{e9}".repeat(32))),
            ("history", Box::new(|r| r.6 = "A".repeat(64))),
            ("rotations", Box::new(|r| r.7 = -1)),
            ("created_at", Box::new(|r| r.8 = i64::MIN)),
            ("last_used_at", Box::new(|r| r.9 = -5)),
            ("idle_deadline", Box::new(|r| r.10 = -1)),
            ("absolute_deadline", Box::new(|r| r.11 = -1)),
            ("claims", Box::new(|r| r.12 = "[1]".into())),
            ("claims", Box::new(|r| r.12 = "{".into())),
            ("device", Box::new(|r| r.13 = "7".into())),
        ];
        for (column, corrupt) in cases {
            let mut r = row(&f);
            corrupt(&mut r);
            let err = decode(r).expect_err(column);
            assert_eq!(err.0, column);
        }
    }

    #[test]
    fn times_saturate_instead_of_wrapping() {
        assert_eq!(ms(Timestamp::from_millis(u64::MAX)), i64::MAX);
        assert_eq!(ms(Timestamp::from_millis(42)), 42);
        assert!(time(-1, "t").is_err());
    }

    #[test]
    fn victims_are_the_oldest_then_the_smallest_id() {
        let mut fams: Vec<Family> = (0..4).map(|_| family()).collect();
        for (i, f) in fams.iter_mut().enumerate() {
            f.created_at = Timestamp::from_millis(if i < 2 { 10 } else { 20 + i as u64 });
        }
        let mut twins = [fams[0].id.clone(), fams[1].id.clone()];
        twins.sort();
        let ids = |v: Vec<Family>| v.into_iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(ids(victims(fams.clone(), 4)), vec![twins[0].clone()]);
        assert_eq!(ids(victims(fams.clone(), 3)), twins.to_vec());
        assert!(victims(fams.clone(), 5).is_empty());
        assert_eq!(
            victims(fams.clone(), 0).len(),
            4,
            "a cap of 0 keeps the new one"
        );
        assert!(victims(Vec::new(), 1).is_empty());
    }

    #[test]
    fn swap_binds_clamp() {
        let id = FamilyId::generate().unwrap();
        let r = Rotation {
            family: id.clone(),
            presented: TokenDigest::of(b"a"),
            successor: TokenDigest::of(b"b"),
            now: Timestamp::from_millis(1_000),
            grace: Duration::from_secs(10),
            idle: Duration::MAX,
            history_limit: usize::MAX,
            device: DeviceInfo::default(),
        };
        let s = Swap::of(&r).unwrap();
        assert_eq!(s.idle, i64::MAX);
        assert_eq!(s.keep % 64, 0);
        assert!(s.device.is_none(), "no device: the stored one stays");
        assert_eq!(s.key, family_key(&id));
    }
}
