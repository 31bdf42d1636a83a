//! A family as a Redis hash, field by field, so that the rotation script
//! reads and writes only the fields it needs and never re-encodes the
//! application's claims (Lua's JSON would reformat large numbers).
//!
//! | field | holds |
//! |---|---|
//! | `u` | the user id |
//! | `k` | the claims (JSON object, written once, never read by Lua) |
//! | `d` | the device (JSON) |
//! | `c`, `l`, `i`, `a` | created, last used, idle deadline, absolute deadline (ms since the epoch) |
//! | `cur` | the current token's digest (hex) |
//! | `p`, `pa` | the previous token's digest and when it was rotated (absent before the first rotation) |
//! | `h` | older digests, hex, concatenated, oldest first |
//! | `r` | rotations |
//! | `j` | the DPoP key thumbprint the family is bound to (absent: unbound) |
//! | `n` | the nonce of the create call (a resent create recognises its record) |
//! | `x` | tombstone: `<presented digest>:<now>` of the rotation that found reuse |

use std::collections::HashMap;

use portcullis_core::{Deadlines, StoreError, Timestamp, TokenDigest};
use portcullis_refresh::{DeviceInfo, Family, FamilyId, Rotated};

/// Length of one digest in hex.
pub(super) const HEX: usize = 64;

/// A family record that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable refresh family record: {0}")]
pub(super) struct Corrupt(pub(super) &'static str);

impl From<Corrupt> for StoreError {
    fn from(e: Corrupt) -> Self {
        StoreError::corrupt(e)
    }
}

/// The hash fields of a new family (its `n` is `nonce`).
pub(super) fn encode(
    family: &Family,
    nonce: &str,
) -> Result<Vec<(&'static str, String)>, StoreError> {
    let claims = serde_json::to_string(&family.claims).map_err(StoreError::corrupt)?;
    let device = serde_json::to_string(&family.device).map_err(StoreError::corrupt)?;
    let mut fields = vec![
        ("u", family.user_id.clone()),
        ("k", claims),
        ("d", device),
        ("c", family.created_at.millis().to_string()),
        ("l", family.last_used_at.millis().to_string()),
        ("i", family.deadlines.idle.millis().to_string()),
        ("a", family.deadlines.absolute.millis().to_string()),
        ("cur", family.current.to_hex()),
        (
            "h",
            family.history.iter().map(TokenDigest::to_hex).collect(),
        ),
        ("r", family.rotations.to_string()),
        ("n", nonce.to_owned()),
    ];
    if let Some(jkt) = &family.jkt {
        fields.push(("j", jkt.clone()));
    }
    if let Some(prev) = &family.previous {
        fields.push(("p", prev.digest.to_hex()));
        fields.push(("pa", prev.at.millis().to_string()));
    }
    Ok(fields)
}

/// A record as read: the fields, by name.
pub(super) type Fields = HashMap<String, String>;

/// Whether the record is a tombstone (a family deleted for reuse).
pub(super) fn is_tombstone(fields: &Fields) -> bool {
    fields.contains_key("x")
}

fn millis(fields: &Fields, name: &'static str) -> Result<Timestamp, Corrupt> {
    fields
        .get(name)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Timestamp::from_millis)
        .ok_or(Corrupt(name))
}

fn digest(hex: &str, name: &'static str) -> Result<TokenDigest, Corrupt> {
    TokenDigest::from_hex(hex).map_err(|_| Corrupt(name))
}

/// The family `id` from its fields.
pub(super) fn decode(id: &FamilyId, fields: &Fields) -> Result<Family, Corrupt> {
    let user_id = fields.get("u").ok_or(Corrupt("u"))?.clone();
    let claims = match fields.get("k") {
        Some(k) => serde_json::from_str(k).map_err(|_| Corrupt("k"))?,
        None => serde_json::Map::new(),
    };
    let device: DeviceInfo = match fields.get("d") {
        Some(d) => serde_json::from_str(d).map_err(|_| Corrupt("d"))?,
        None => DeviceInfo::default(),
    };
    let current = digest(fields.get("cur").ok_or(Corrupt("cur"))?, "cur")?;
    let previous = match fields.get("p") {
        Some(p) => Some(Rotated {
            digest: digest(p, "p")?,
            at: millis(fields, "pa")?,
        }),
        None => None,
    };
    let h = fields.get("h").map_or("", String::as_str);
    if h.len() % HEX != 0 || !h.is_ascii() {
        return Err(Corrupt("h"));
    }
    let history = (0..h.len() / HEX)
        .map(|j| digest(&h[j * HEX..(j + 1) * HEX], "h"))
        .collect::<Result<Vec<_>, _>>()?;
    let rotations = match fields.get("r") {
        Some(r) => r.parse().map_err(|_| Corrupt("r"))?,
        None => 0,
    };
    Ok(Family {
        id: id.clone(),
        user_id,
        claims,
        device,
        created_at: millis(fields, "c")?,
        last_used_at: millis(fields, "l")?,
        deadlines: Deadlines {
            idle: millis(fields, "i")?,
            absolute: millis(fields, "a")?,
        },
        current,
        previous,
        history,
        rotations,
        jkt: fields.get("j").cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_refresh::RefreshToken;
    use serde_json::json;

    fn family() -> Family {
        let id = FamilyId::generate().unwrap();
        let t = RefreshToken::first(id.clone()).unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("big".into(), json!(12_345_678_901_234_567_u64));
        claims.insert("roles".into(), json!(["a", "b"]));
        Family {
            id,
            user_id: "alice \u{e9}".into(),
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

    fn fields(f: &Family) -> Fields {
        encode(f, "nonce")
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn round_trip() {
        let f = family();
        let m = fields(&f);
        assert_eq!(decode(&f.id, &m).unwrap(), f);
        assert!(!is_tombstone(&m));
        let mut fresh = f.clone();
        fresh.previous = None;
        fresh.history.clear();
        fresh.claims.clear();
        fresh.jkt = None;
        assert_eq!(decode(&f.id, &fields(&fresh)).unwrap(), fresh);
    }

    #[test]
    fn corrupt_records_are_refused() {
        let f = family();
        for (field, value) in [
            ("c", Some("x")),
            ("a", None),
            ("cur", Some("zz")),
            ("h", Some("abc")),
            ("pa", None),
            ("k", Some("[1]")),
            ("d", Some("{")),
            ("u", None),
            ("r", Some("-1")),
        ] {
            let mut m = fields(&f);
            match value {
                Some(v) => m.insert(field.into(), v.into()),
                None => m.remove(field),
            };
            assert!(decode(&f.id, &m).is_err(), "{field}");
        }
    }
}
