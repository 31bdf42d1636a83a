//! The session stores, [`PgSessionStore`] and [`SqliteSessionStore`], and
//! the row codec they share (the schema and the encoding are documented on
//! [`PgSessionStore`]).
#![cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(unused))]

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod shared_load;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{StoreError, Timestamp, TokenDigest};
use portcullis_session::{SessionMetadata, SessionRecord, SessionUpdate};
use serde_json::Value;
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr};

use crate::names::Names;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgSessionStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteSessionStore;

/// How long a row outlives its end before the purge deletes it, as the
/// Redis stores keep a key past its end: an instance whose clock is behind
/// by less than this still finds the row and judges it by its own clock.
pub(crate) const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// A statement rendered once with the backend's names (cloning it is a
/// reference count).
fn statement(names: &Names, template: &str) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(names.render(template))).into_sql_str()
}

/// A time as the database keeps it.
fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.millis()).unwrap_or(i64::MAX)
}

/// The purge's cut-off: rows that ended before it go.
fn purge_before(now: Timestamp) -> i64 {
    ms(now).saturating_sub(i64::try_from(EXPIRY_GRACE.as_millis()).unwrap_or(i64::MAX))
}

/// A stored row that cannot be read back as a session.
#[derive(Debug)]
struct BadRow(&'static str);

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a stored session does not decode: {}", self.0)
    }
}

impl std::error::Error for BadRow {}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::corrupt(BadRow(what))
}

/// Whether a key character is escaped: `%` (the escape), and everything
/// a JSON string would escape (`"`, `\`, the control characters).
fn escaped(c: char) -> bool {
    matches!(c, '%' | '"' | '\\') || c.is_ascii_control()
}

/// A data key as stored: injective, reversed by [`decode_key`].
fn encode_key(key: &str) -> String {
    if !key.chars().any(escaped) {
        return key.to_owned();
    }
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if escaped(c) {
            // ASCII only: one byte.
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A stored data key back to the application's key.
fn decode_key(stored: &str) -> Result<String, StoreError> {
    if !stored.contains('%') {
        return Ok(stored.to_owned());
    }
    let mut out = String::with_capacity(stored.len());
    let mut rest = stored;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest
            .get(at + 1..at + 3)
            .ok_or_else(|| corrupt("a key escape is cut short"))?;
        let byte =
            u8::from_str_radix(hex, 16).map_err(|_| corrupt("a key escape is not hexadecimal"))?;
        let c = char::from(byte);
        if !byte.is_ascii() || !escaped(c) {
            return Err(corrupt("a key escape names a character never escaped"));
        }
        out.push(c);
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The record's data as stored: `{"<escaped key>": "<value JSON>"}`.
fn encode_data(data: &BTreeMap<String, Value>) -> String {
    let stored: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (encode_key(k), v.to_string()))
        .collect();
    // A map of strings always serializes.
    serde_json::to_string(&stored).unwrap_or_else(|_| "{}".to_owned())
}

/// Stored data back to the record's.
fn decode_data(text: &str) -> Result<BTreeMap<String, Value>, StoreError> {
    let stored: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|_| corrupt("the data is not an object of strings"))?;
    stored
        .into_iter()
        .map(|(k, v)| {
            let value =
                serde_json::from_str(&v).map_err(|_| corrupt("a data value is not JSON text"))?;
            Ok((decode_key(&k)?, value))
        })
        .collect()
}

/// The keys an update sets, as a stored data object (PostgreSQL's `$set`).
#[cfg(feature = "postgres")]
fn update_set(update: &SessionUpdate) -> String {
    encode_data(&update.set)
}

/// The stored keys an update removes (PostgreSQL's `$remove`).
#[cfg(feature = "postgres")]
fn update_remove(update: &SessionUpdate) -> Vec<String> {
    update.remove.iter().map(|k| encode_key(k)).collect()
}

/// An update as one RFC 7396 merge patch (SQLite's `json_patch`): removed
/// keys map to `null`, set keys to their value's JSON text; a key both
/// removed and set ends set, as [`SessionRecord::apply`] leaves it.
#[cfg(feature = "sqlite")]
fn update_patch(update: &SessionUpdate) -> String {
    let mut patch: BTreeMap<String, Option<String>> = update
        .remove
        .iter()
        .map(|k| (encode_key(k), None))
        .collect();
    for (k, v) in &update.set {
        patch.insert(encode_key(k), Some(v.to_string()));
    }
    serde_json::to_string(&patch).unwrap_or_else(|_| "{}".to_owned())
}

fn encode_metadata(metadata: &SessionMetadata) -> Result<String, StoreError> {
    serde_json::to_string(metadata).map_err(StoreError::backend)
}

/// The SHA-256 of a user id: the indexed column.
fn user_digest(user_id: &str) -> TokenDigest {
    TokenDigest::of(user_id.as_bytes())
}

/// One session row as both databases return it (the columns of
/// [`COLUMNS`], in order).
type Row = (Option<Vec<u8>>, i64, i64, i64, i64, String, String);

/// The columns a [`Row`] is read from; `{data}` is the data column as text.
const COLUMNS: &str =
    "user_id, created_at, last_seen, idle_deadline, absolute_deadline, metadata, {data}";

fn timestamp(ms: i64) -> Result<Timestamp, StoreError> {
    u64::try_from(ms)
        .map(Timestamp::from_millis)
        .map_err(|_| corrupt("a negative time"))
}

/// A row back to the record it stores.
fn decode_row(row: Row) -> Result<SessionRecord, StoreError> {
    let (user_id, created_at, last_seen, idle, absolute, metadata, data) = row;
    let user_id = user_id
        .map(|bytes| String::from_utf8(bytes).map_err(|_| corrupt("the user id is not UTF-8")))
        .transpose()?;
    Ok(SessionRecord {
        user_id,
        data: decode_data(&data)?,
        created_at: timestamp(created_at)?,
        last_seen: timestamp(last_seen)?,
        idle_deadline: timestamp(idle)?,
        absolute_deadline: timestamp(absolute)?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|_| corrupt("the metadata is not an object of strings"))?,
    })
}

/// A 32-byte digest column.
fn digest(bytes: &[u8]) -> Result<TokenDigest, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(TokenDigest::from_bytes)
        .map_err(|_| corrupt("a digest is not 32 bytes"))
}

/// A record's columns, ready to bind.
struct Bound {
    user_digest: Option<Vec<u8>>,
    user_id: Option<Vec<u8>>,
    created_at: i64,
    last_seen: i64,
    idle_deadline: i64,
    absolute_deadline: i64,
    metadata: String,
    data: String,
}

impl Bound {
    fn of(record: &SessionRecord) -> Result<Self, StoreError> {
        Ok(Self {
            user_digest: record
                .user_id
                .as_deref()
                .map(|u| user_digest(u).as_bytes().to_vec()),
            user_id: record.user_id.as_ref().map(|u| u.as_bytes().to_vec()),
            created_at: ms(record.created_at),
            last_seen: ms(record.last_seen),
            idle_deadline: ms(record.idle_deadline),
            absolute_deadline: ms(record.absolute_deadline),
            metadata: encode_metadata(&record.metadata)?,
            data: encode_data(&record.data),
        })
    }
}

/// Keeps the rows of a user listing that decode; a row that does not is
/// left out (and left alone: loading it reports it corrupt).
fn listed(rows: Vec<(Vec<u8>, Row)>) -> Vec<(TokenDigest, SessionRecord)> {
    rows.into_iter()
        .filter_map(|(id, row)| match (digest(&id), decode_row(row)) {
            (Ok(k), Ok(rec)) => Some((k, rec)),
            _ => {
                portcullis_core::event!(
                    warn,
                    reason = "corrupt-session",
                    "a stored session does not decode; not listed"
                );
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::StoreErrorKind;
    use serde_json::json;
    use std::collections::BTreeSet;

    #[test]
    fn keys_escape_injectively() {
        for (key, stored) in [
            ("theme", "theme"),
            ("", ""),
            ("100%", "100%25"),
            ("%25", "%2525"),
            ("a\0b", "a%00b"),
            ("we\"ird.key", "we%22ird.key"),
            ("back\\slash", "back%5Cslash"),
            ("line\nfeed\u{7f}", "line%0Afeed%7F"),
            ("é/日本", "é/日本"),
            ("'; DROP TABLE x; --", "'; DROP TABLE x; --"),
        ] {
            assert_eq!(encode_key(key), stored, "{key:?}");
            assert_eq!(decode_key(stored).unwrap(), key, "{stored:?}");
            assert!(!stored.contains('\0') && !stored.contains('"'));
        }
        // Distinct keys stay distinct.
        let keys = ["%", "%25", "%2525", "\0", "%00", "%2500", "\"", "%22"];
        let stored: BTreeSet<String> = keys.iter().map(|k| encode_key(k)).collect();
        assert_eq!(stored.len(), keys.len());
        for bad in ["%", "%2", "%zz", "%41", "%C3%A9", "a%0"] {
            let err = decode_key(bad).unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{bad:?}");
        }
    }

    #[test]
    fn data_round_trips_without_a_nul() {
        let data = BTreeMap::from([
            ("k".to_owned(), json!("v")),
            ("n\0ul".to_owned(), json!("x\u{0}y")),
            (
                "nested".to_owned(),
                json!({"a": [1, 2, null], "big": 12_345_678_901_234_567_u64}),
            ),
            (String::new(), json!(true)),
            ("é/\"q".to_owned(), json!(0.1)),
        ]);
        let text = encode_data(&data);
        assert!(!text.contains('\0'), "{text}");
        // No key needs a JSON escape: both databases compare keys as text.
        let object: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        for key in object.keys() {
            assert_eq!(serde_json::to_string(key).unwrap(), format!("\"{key}\""));
        }
        assert_eq!(decode_data(&text).unwrap(), data);
        // What PostgreSQL's `jsonb` prints back (spaces, reordered keys).
        let pg = r#"{"k": "\"v\"", "": "true"}"#;
        let back = decode_data(pg).unwrap();
        assert_eq!(back.get("k"), Some(&json!("v")));
        assert_eq!(back.get(""), Some(&json!(true)));
    }

    #[test]
    fn corrupt_data_is_corrupt() {
        for bad in [
            "",
            "[]",
            "{nope",
            r#"{"k": 1}"#,
            r#"{"k": "{bad json"}"#,
            r#"{"%zz": "1"}"#,
        ] {
            assert_eq!(
                decode_data(bad).unwrap_err().kind(),
                StoreErrorKind::Corrupt,
                "{bad}"
            );
        }
        let row = |user: Option<Vec<u8>>, created: i64, meta: &str| -> Row {
            (user, created, 1, 2, 3, meta.to_owned(), "{}".to_owned())
        };
        assert!(decode_row(row(Some(b"alice".to_vec()), 0, "{}")).is_ok());
        for bad in [
            row(Some(vec![0xff]), 0, "{}"),
            row(None, -1, "{}"),
            row(None, 0, "nope"),
            row(None, 0, r#"{"ip": 1}"#),
        ] {
            assert_eq!(decode_row(bad).unwrap_err().kind(), StoreErrorKind::Corrupt);
        }
        assert!(digest(&[0; 31]).is_err());
    }

    #[test]
    fn updates_render_as_set_remove_and_patch() {
        let update = SessionUpdate {
            set: BTreeMap::from([
                ("a".to_owned(), json!(1)),
                ("both".to_owned(), json!("new")),
            ]),
            remove: ["gone\0".to_owned(), "both".to_owned()].into(),
            ..SessionUpdate::default()
        };
        #[cfg(feature = "postgres")]
        {
            assert_eq!(update_set(&update), r#"{"a":"1","both":"\"new\""}"#);
            assert_eq!(update_remove(&update), ["both", "gone%00"]);
        }
        // Set wins over remove, as `SessionRecord::apply` has it.
        #[cfg(feature = "sqlite")]
        assert_eq!(
            update_patch(&update),
            r#"{"a":"1","both":"\"new\"","gone%00":null}"#
        );
    }

    #[test]
    fn times_saturate() {
        assert_eq!(ms(Timestamp::from_millis(u64::MAX)), i64::MAX);
        assert_eq!(ms(Timestamp::from_millis(7)), 7);
        assert_eq!(purge_before(Timestamp::from_millis(10)), 10 - 60_000);
        assert_eq!(
            purge_before(Timestamp::from_secs(100)),
            40_000,
            "60 s of grace"
        );
    }
}
