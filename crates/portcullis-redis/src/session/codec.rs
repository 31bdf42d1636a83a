//! A `SessionRecord` as the JSON string Redis keeps, and back.
//!
//! ```json
//! {"u":"alice","c":"1700000000000","l":"1700000000000","i":"1700000600000",
//!  "a":"1700003600000","m":{"user_agent":"..."},"n":"<nonce>",
//!  "d":{"theme":"\"dark\"","cart":"[1,2]"}}
//! ```
//!
//! | field | value |
//! |---|---|
//! | `u` | user id (absent for an anonymous session) |
//! | `c`, `l`, `i`, `a` | created at, last seen, idle deadline, absolute deadline: ms since the Unix epoch, as decimal strings |
//! | `m` | metadata: an object of strings |
//! | `n` | the nonce of the `create` call that wrote the record |
//! | `d` | the data: key -> the value's JSON, as a string |
//!
//! Numbers and data values travel as strings so that the update script,
//! which decodes and re-encodes the record with Redis' `cjson` (doubles,
//! 14 significant digits), never reformats them: the script only ever
//! moves strings. Unknown fields are ignored (room to grow); a missing or
//! unreadable required field makes the record corrupt.

use std::collections::BTreeMap;
use std::fmt;

use portcullis_core::{StoreError, Timestamp};
use portcullis_session::{SessionMetadata, SessionRecord};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize)]
struct Out<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    c: String,
    l: String,
    i: String,
    a: String,
    m: &'a SessionMetadata,
    n: &'a str,
    d: BTreeMap<&'a str, String>,
}

#[derive(Deserialize)]
struct In {
    #[serde(default)]
    u: Option<String>,
    #[serde(deserialize_with = "millis")]
    c: Timestamp,
    #[serde(deserialize_with = "millis")]
    l: Timestamp,
    #[serde(deserialize_with = "millis")]
    i: Timestamp,
    #[serde(deserialize_with = "millis")]
    a: Timestamp,
    #[serde(default, deserialize_with = "metadata")]
    m: SessionMetadata,
    #[serde(default, deserialize_with = "data")]
    d: BTreeMap<String, Value>,
}

/// A timestamp written as a decimal string (or, tolerated, a plain integer).
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    struct Millis;
    impl Visitor<'_> for Millis {
        type Value = Timestamp;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("milliseconds as a decimal string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
            v.parse::<u64>()
                .map(Timestamp::from_millis)
                .map_err(|_| E::custom("not a timestamp"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
            Ok(Timestamp::from_millis(v))
        }
    }
    d.deserialize_any(Millis)
}

/// The metadata object; an empty JSON array is empty metadata (some
/// `cjson` builds encode an empty table so).
fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<SessionMetadata, D::Error> {
    struct Meta;
    impl<'de> Visitor<'de> for Meta {
        type Value = SessionMetadata;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            SessionMetadata::deserialize(de::value::MapAccessDeserializer::new(map))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            match seq.next_element::<de::IgnoredAny>()? {
                None => Ok(SessionMetadata::default()),
                Some(_) => Err(de::Error::custom("metadata is a non-empty array")),
            }
        }
    }
    d.deserialize_any(Meta)
}

/// The data map: key -> the value's JSON as a string, parsed on the fly;
/// an empty JSON array is an empty map.
fn data<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Value>, D::Error> {
    /// One value: a string holding JSON.
    struct Json(Value);
    impl<'de> Deserialize<'de> for Json {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Json;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string holding JSON")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                    serde_json::from_str(v).map(Json).map_err(E::custom)
                }
            }
            d.deserialize_str(V)
        }
    }
    struct Data;
    impl<'de> Visitor<'de> for Data {
        type Value = BTreeMap<String, Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, Json(v))) = map.next_entry::<String, Json>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            match seq.next_element::<de::IgnoredAny>()? {
                None => Ok(BTreeMap::new()),
                Some(_) => Err(de::Error::custom("data is a non-empty array")),
            }
        }
    }
    d.deserialize_any(Data)
}

/// The JSON Redis keeps for `record`, carrying `nonce`.
pub(super) fn encode(record: &SessionRecord, nonce: &str) -> Result<String, StoreError> {
    let out = Out {
        u: record.user_id.as_deref(),
        c: record.created_at.millis().to_string(),
        l: record.last_seen.millis().to_string(),
        i: record.idle_deadline.millis().to_string(),
        a: record.absolute_deadline.millis().to_string(),
        m: &record.metadata,
        n: nonce,
        d: record
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect(),
    };
    serde_json::to_string(&out).map_err(StoreError::backend)
}

/// The record a `GET` returned; `None` for an absent key.
pub(super) fn decode(value: Option<&[u8]>) -> Result<Option<SessionRecord>, StoreError> {
    let Some(bytes) = value else {
        return Ok(None);
    };
    let stored: In = serde_json::from_slice(bytes).map_err(StoreError::corrupt)?;
    Ok(Some(SessionRecord {
        user_id: stored.u,
        data: stored.d,
        created_at: stored.c,
        last_seen: stored.l,
        idle_deadline: stored.i,
        absolute_deadline: stored.a,
        metadata: stored.m,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::StoreErrorKind;
    use serde_json::json;

    fn record() -> SessionRecord {
        SessionRecord {
            user_id: Some("alice".into()),
            data: BTreeMap::from([
                ("k".to_owned(), json!("v")),
                (
                    "nested".to_owned(),
                    json!({"a": [1, 2, null], "big": 12_345_678_901_234_567_u64}),
                ),
                ("".to_owned(), json!(true)),
                ("é/\"q".to_owned(), json!(0.1)),
            ]),
            created_at: Timestamp::from_millis(1),
            last_seen: Timestamp::from_millis(2),
            idle_deadline: Timestamp::from_millis(3),
            absolute_deadline: Timestamp::from_millis(u64::MAX),
            metadata: SessionMetadata {
                user_agent: Some("ua \u{e9}".into()),
                ip: Some("::1".into()),
            },
        }
    }

    #[test]
    fn round_trip() {
        let rec = record();
        let json = encode(&rec, "n1").unwrap();
        assert_eq!(decode(Some(json.as_bytes())).unwrap(), Some(rec.clone()));
        let anon = SessionRecord {
            user_id: None,
            data: BTreeMap::new(),
            ..record()
        };
        let json = encode(&anon, "n2").unwrap();
        assert_eq!(decode(Some(json.as_bytes())).unwrap(), Some(anon));
    }

    #[test]
    fn what_the_update_script_writes_reads_back() {
        // cjson escapes '/', may reorder fields, writes an empty map as {}
        // (or, some builds, []), and adds nothing else.
        let json = r#"{"d":[],"a":"9","n":"x","i":"3","m":{"ip":"1\/2"},"c":"1","l":"2","u":"bob","later":1}"#;
        let rec = decode(Some(json.as_bytes())).unwrap().unwrap();
        assert_eq!(rec.user_id.as_deref(), Some("bob"));
        assert!(rec.data.is_empty());
        assert_eq!(rec.metadata.ip.as_deref(), Some("1/2"));
        assert_eq!(rec.absolute_deadline, Timestamp::from_millis(9));
        let json = r#"{"d":{"k\/1":"[1,\"\/\"]"},"a":"9","i":"3","c":"1","l":"2","m":[]}"#;
        let rec = decode(Some(json.as_bytes())).unwrap().unwrap();
        assert_eq!(rec.data.get("k/1"), Some(&json!([1, "/"])));
        assert_eq!(rec.metadata, SessionMetadata::default());
    }

    #[test]
    fn absent_and_corrupt() {
        assert_eq!(decode(None).unwrap(), None);
        for bad in [
            "",
            "{nope",
            "[]",
            r#"{"c":"1","l":"2","i":"3"}"#,
            r#"{"c":"-1","l":"2","i":"3","a":"4"}"#,
            r#"{"c":"1","l":"2","i":"3","a":"4","d":{"k":"{bad json"}}"#,
            r#"{"c":"1","l":"2","i":"3","a":"4","d":[1]}"#,
            r#"{"c":"1","l":"2","i":"3","a":"4","m":"nope"}"#,
            r#"{"c":"1","l":"2","i":"3","a":"4","m":[1]}"#,
            r#"{"c":"1","l":"2","i":"3","a":"4","d":{"k":1}}"#,
        ] {
            let err = decode(Some(bad.as_bytes())).unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{bad}");
        }
    }
}
