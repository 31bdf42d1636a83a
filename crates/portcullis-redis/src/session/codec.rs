//! A `SessionRecord` as the fields of a Redis hash, and back.
//!
//! | field | value |
//! |---|---|
//! | `u` | user id (absent for an anonymous session) |
//! | `c` | created at (ms since the Unix epoch, decimal) |
//! | `l` | last seen (ms) |
//! | `i` | idle deadline (ms) |
//! | `a` | absolute deadline (ms) |
//! | `m` | metadata, JSON |
//! | `d:<key>` | one data key, its value as JSON |
//! | `n` | the nonce of the `create` call that wrote the record |
//!
//! Unknown fields are ignored (room to grow); a missing or unreadable
//! required field makes the record corrupt.

use std::collections::BTreeMap;

use deadpool_redis::redis::Value;
use portcullis_core::{StoreError, Timestamp};
use portcullis_session::{SessionMetadata, SessionRecord};

/// Prefix of the hash fields that hold data keys.
pub(super) const DATA: &str = "d:";

/// The hash field of data key `key`.
pub(super) fn data_field(key: &str) -> String {
    let mut field = String::with_capacity(DATA.len() + key.len());
    field.push_str(DATA);
    field.push_str(key);
    field
}

/// The hash fields of `record`, as (field, value) pairs.
pub(super) fn encode(record: &SessionRecord) -> Result<Vec<(String, String)>, StoreError> {
    let mut fields = Vec::with_capacity(6 + record.data.len());
    if let Some(user) = &record.user_id {
        fields.push(("u".to_owned(), user.clone()));
    }
    fields.push(("c".to_owned(), record.created_at.millis().to_string()));
    fields.push(("l".to_owned(), record.last_seen.millis().to_string()));
    fields.push(("i".to_owned(), record.idle_deadline.millis().to_string()));
    fields.push((
        "a".to_owned(),
        record.absolute_deadline.millis().to_string(),
    ));
    let metadata = serde_json::to_string(&record.metadata).map_err(StoreError::backend)?;
    fields.push(("m".to_owned(), metadata));
    for (key, value) in &record.data {
        fields.push((data_field(key), value.to_string()));
    }
    Ok(fields)
}

/// A hash field and its value.
pub(super) type Pair = (Vec<u8>, Vec<u8>);

/// The flat (field, value) pairs of an `HGETALL` reply (RESP2 array or
/// RESP3 map).
pub(super) fn pairs(value: Value) -> Result<Vec<Pair>, StoreError> {
    let bytes = |v: Value| match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        _ => Err(corrupt("a hash field is not a string")),
    };
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(corrupt("odd HGETALL reply"));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                out.push((bytes(f)?, bytes(v)?));
            }
            Ok(out)
        }
        Value::Map(items) => items
            .into_iter()
            .map(|(f, v)| Ok((bytes(f)?, bytes(v)?)))
            .collect(),
        _ => Err(corrupt("HGETALL reply is not a hash")),
    }
}

fn corrupt(why: &'static str) -> StoreError {
    StoreError::corrupt(why)
}

fn text(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| corrupt("a session field is not UTF-8"))
}

fn millis(bytes: &[u8]) -> Result<Timestamp, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Timestamp::from_millis)
        .ok_or_else(|| corrupt("a session deadline is not a number"))
}

/// The record in an `HGETALL` reply; `None` for an absent key.
pub(super) fn decode(value: Value) -> Result<Option<SessionRecord>, StoreError> {
    let pairs = pairs(value)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut user_id = None;
    let (mut created, mut last, mut idle, mut absolute) = (None, None, None, None);
    let mut metadata = SessionMetadata::default();
    let mut data = BTreeMap::new();
    for (field, value) in pairs {
        match field.as_slice() {
            b"u" => user_id = Some(text(value)?),
            b"c" => created = Some(millis(&value)?),
            b"l" => last = Some(millis(&value)?),
            b"i" => idle = Some(millis(&value)?),
            b"a" => absolute = Some(millis(&value)?),
            b"m" => metadata = serde_json::from_slice(&value).map_err(StoreError::corrupt)?,
            f if f.starts_with(DATA.as_bytes()) => {
                let key = text(f[DATA.len()..].to_vec())?;
                let value = serde_json::from_slice(&value).map_err(StoreError::corrupt)?;
                data.insert(key, value);
            }
            _ => {}
        }
    }
    match (created, last, idle, absolute) {
        (Some(created_at), Some(last_seen), Some(idle_deadline), Some(absolute_deadline)) => {
            Ok(Some(SessionRecord {
                user_id,
                data,
                created_at,
                last_seen,
                idle_deadline,
                absolute_deadline,
                metadata,
            }))
        }
        _ => Err(corrupt("a session deadline is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> SessionRecord {
        SessionRecord {
            user_id: Some("alice".into()),
            data: BTreeMap::from([
                ("k".to_owned(), json!("v")),
                ("nested".to_owned(), json!({"a": [1, 2, null]})),
                ("".to_owned(), json!(true)),
            ]),
            created_at: Timestamp::from_millis(1),
            last_seen: Timestamp::from_millis(2),
            idle_deadline: Timestamp::from_millis(3),
            absolute_deadline: Timestamp::from_millis(u64::MAX),
            metadata: SessionMetadata {
                user_agent: Some("ua".into()),
                ip: Some("::1".into()),
            },
        }
    }

    fn as_reply(fields: &[(String, String)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(f, v)| {
                    [
                        Value::BulkString(f.clone().into_bytes()),
                        Value::BulkString(v.clone().into_bytes()),
                    ]
                })
                .collect(),
        )
    }

    #[test]
    fn round_trip_resp2_and_resp3() {
        let rec = record();
        let fields = encode(&rec).unwrap();
        assert_eq!(decode(as_reply(&fields)).unwrap(), Some(rec.clone()));
        let map = Value::Map(
            fields
                .iter()
                .map(|(f, v)| {
                    (
                        Value::BulkString(f.clone().into_bytes()),
                        Value::BulkString(v.clone().into_bytes()),
                    )
                })
                .collect(),
        );
        assert_eq!(decode(map).unwrap(), Some(rec));
        let anon = SessionRecord {
            user_id: None,
            ..record()
        };
        assert_eq!(
            decode(as_reply(&encode(&anon).unwrap())).unwrap(),
            Some(anon)
        );
    }

    #[test]
    fn absent_and_corrupt() {
        assert_eq!(decode(Value::Array(vec![])).unwrap(), None);
        assert_eq!(decode(Value::Nil).unwrap(), None);
        let mut fields = encode(&record()).unwrap();
        fields.retain(|(f, _)| f != "i");
        let err = decode(as_reply(&fields)).unwrap_err();
        assert_eq!(err.kind(), portcullis_core::StoreErrorKind::Corrupt);
        let mut fields = encode(&record()).unwrap();
        fields.push(("d:bad".into(), "{not json".into()));
        assert!(decode(as_reply(&fields)).is_err());
        let mut fields = encode(&record()).unwrap();
        fields.push(("c".into(), "-1".into()));
        assert!(decode(as_reply(&fields)).is_err());
        assert!(decode(Value::Array(vec![Value::Nil])).is_err());
        assert!(decode(Value::Int(3)).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut fields = encode(&record()).unwrap();
        fields.push(("zz".into(), "later".into()));
        assert_eq!(decode(as_reply(&fields)).unwrap(), Some(record()));
    }
}
