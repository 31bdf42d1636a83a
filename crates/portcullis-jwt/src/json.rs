//! A JSON validator that refuses duplicate object keys at any depth.
//!
//! RFC 7515 section 5.2 lets a JWS parser reject duplicate header
//! parameters, and RFC 7519 section 4 says claim names must be unique. Two
//! parsers that resolve `{"sub":"alice","sub":"admin"}` differently (first
//! wins vs last wins) are an exploitable disagreement; we refuse such
//! input outright.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks that `bytes` is one JSON object with no duplicate keys anywhere.
#[cfg(test)]
pub(crate) fn check_object(bytes: &[u8]) -> Result<(), ()> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(Unique).map_err(|_| ())?;
    de.end().map_err(|_| ())
}

/// [`check_object`] for text already known to be UTF-8 (the parser then
/// skips validating every string again).
pub(crate) fn check_object_str(text: &str) -> Result<(), ()> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Unique).map_err(|_| ())?;
    de.end().map_err(|_| ())
}

/// A seed that accepts any JSON value and refuses duplicate object keys in
/// it, at any depth.
pub(crate) struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON without duplicate object keys")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Objects in tokens are small: a linear scan beats hashing.
        let mut seen: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key::<KeyStr<'de>>()? {
            if seen.contains(&key.0) {
                return Err(de::Error::custom("duplicate key"));
            }
            seen.push(key.0);
            map.next_value_seed(Unique)?;
        }
        Ok(())
    }
}

/// A map key, borrowed when it has no escapes.
pub(crate) struct KeyStr<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(&str, bool)] = &[
            (r#"{}"#, true),
            (r#"{"a":1,"b":{"a":2}}"#, true),
            (r#"{"a":1,"a":1}"#, false),
            (r#"{"a":1,"b":{"c":1,"c":2}}"#, false),
            (r#"{"a":[{"x":1},{"x":1,"x":2}]}"#, false),
            (r#"{"a":1,"\u0061":2}"#, false),
            (r#"{"sub":"alice","sub":"admin"}"#, false),
            (r#"[1,2]"#, false),
            (r#""str""#, false),
            (r#"{"a":1} x"#, false),
            (r#"{"a":1}"#, true),
            (r#"{"a":1,}"#, false),
            ("", false),
        ];
        for (input, ok) in cases {
            assert_eq!(check_object(input.as_bytes()).is_ok(), *ok, "{input}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(check_object(deep.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = check_object(&bytes);
        }

        #[test]
        fn str_and_bytes_agree(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                prop_assert_eq!(check_object_str(text), check_object(&bytes));
            } else {
                prop_assert!(check_object(&bytes).is_err());
            }
        }
    }
}
