//! The account a login request is for: a field of its form or JSON body.

use std::fmt;

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Turns the account name a client sent into the name counters are kept
/// for, so `Alice`, ` alice` and `alice` share one counter.
pub type NormalizeFn = fn(&str) -> String;

/// The default [`NormalizeFn`]: surrounding white space trimmed, then
/// lower-cased (Unicode).
///
/// ```
/// assert_eq!(portcullis_throttle::normalize_account("  Alice@Example.COM "), "alice@example.com");
/// ```
#[must_use]
pub fn normalize_account(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Why the account could not be read from a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountError {
    /// Neither a form nor JSON.
    ContentType,
    /// The body does not parse as its content type says.
    Malformed,
    /// The field is there more than once, or is not text.
    Field,
}

/// The body encodings the account is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Form,
    Json,
}

/// The body's encoding from its one `Content-Type`: urlencoded forms and
/// JSON (`application/json`, `application/*+json`).
pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, AccountError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(AccountError::ContentType);
    };
    let value = value.to_str().map_err(|_| AccountError::ContentType)?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Ok(Encoding::Form);
    }
    let lower = essence.to_ascii_lowercase();
    if lower == "application/json"
        || (lower.starts_with("application/") && lower.ends_with("+json"))
    {
        return Ok(Encoding::Json);
    }
    Err(AccountError::ContentType)
}

/// The value of `field` in the body (`None` when absent). A field sent
/// twice is refused: the handler's parser might read the other copy.
pub(crate) fn find_account(
    encoding: Encoding,
    body: &[u8],
    field: &str,
) -> Result<Option<String>, AccountError> {
    match encoding {
        Encoding::Form => {
            let mut found = None;
            for (k, v) in form_urlencoded::parse(body) {
                if k == field {
                    if found.is_some() {
                        return Err(AccountError::Field);
                    }
                    found = Some(v.into_owned());
                }
            }
            Ok(found)
        }
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let found =
                de.deserialize_map(FieldVisitor { field })
                    .map_err(|e| match e.classify() {
                        serde_json::error::Category::Data => AccountError::Field,
                        _ => AccountError::Malformed,
                    })?;
            de.end().map_err(|_| AccountError::Malformed)?;
            Ok(found)
        }
    }
}

/// Reads one JSON object, keeping the string value of `field` and refusing
/// a repeated or non-string `field`.
struct FieldVisitor<'a> {
    field: &'a str,
}

impl<'de> Visitor<'de> for FieldVisitor<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.field {
                if found.is_some() {
                    return Err(de::Error::custom("repeated account field"));
                }
                found = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encoding(&ct("application/x-www-form-urlencoded")),
            Ok(Encoding::Form)
        );
        assert_eq!(
            encoding(&ct("Application/X-WWW-Form-Urlencoded; charset=UTF-8")),
            Ok(Encoding::Form)
        );
        assert_eq!(
            encoding(&ct("application/json; charset=utf-8")),
            Ok(Encoding::Json)
        );
        assert_eq!(
            encoding(&ct("application/problem+json")),
            Ok(Encoding::Json)
        );
        for bad in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
        ] {
            assert_eq!(encoding(&ct(bad)), Err(AccountError::ContentType), "{bad}");
        }
        assert_eq!(encoding(&HeaderMap::new()), Err(AccountError::ContentType));
        let mut twice = ct("application/json");
        twice.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(encoding(&twice), Err(AccountError::ContentType));
    }

    proptest::proptest! {
        /// Any body bytes: an answer or a typed error, never a panic.
        #[test]
        fn bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = find_account(Encoding::Form, &body, "username");
            let _ = find_account(Encoding::Json, &body, "username");
        }
    }

    #[test]
    fn fields_table() {
        let form = Encoding::Form;
        let json = Encoding::Json;
        type Case<'a> = (Encoding, &'a str, Result<Option<&'a str>, AccountError>);
        let cases: &[Case<'_>] = &[
            (form, "username=alice&password=x", Ok(Some("alice"))),
            (form, "username=Al+ice%21", Ok(Some("Al ice!"))),
            (form, "password=x", Ok(None)),
            (form, "", Ok(None)),
            (form, "username=a&username=b", Err(AccountError::Field)),
            (
                json,
                r#"{"username":"alice","password":"x"}"#,
                Ok(Some("alice")),
            ),
            (
                json,
                r#"{"password":"x","nested":{"username":"no"}}"#,
                Ok(None),
            ),
            (
                json,
                r#"{"username":"a","username":"b"}"#,
                Err(AccountError::Field),
            ),
            (json, r#"{"username":7}"#, Err(AccountError::Field)),
            (json, r#"["username"]"#, Err(AccountError::Field)),
            (json, r#"{"username":"a""#, Err(AccountError::Malformed)),
            (json, r#"{"username":"a"} {}"#, Err(AccountError::Malformed)),
            (json, "", Err(AccountError::Malformed)),
        ];
        for (enc, body, want) in cases {
            let got = find_account(*enc, body.as_bytes(), "username");
            assert_eq!(got, want.map(|o| o.map(str::to_owned)), "{body}");
        }
    }
}
