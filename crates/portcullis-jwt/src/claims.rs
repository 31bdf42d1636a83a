//! Verified claims: the registered ones, typed, and the application's own.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// The `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is among the audiences.
    #[must_use]
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(list) => list.iter().any(|a| a == aud),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Audience::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A NumericDate (RFC 7519): seconds since the epoch, integer or not. Kept
/// as whole seconds (rounded down); strings and non-finite values are
/// refused.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a NumericDate")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("NumericDate out of range"))
        }
        #[allow(clippy::cast_possible_truncation)]
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() && v.abs() < 1e15 {
                Ok(Some(v.floor() as i64))
            } else {
                Err(E::custom("NumericDate out of range"))
            }
        }
    }
    d.deserialize_any(V)
}

/// A space-separated `scope` string, or an `scp` array.
fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a space-separated string or an array of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(V)
}

/// The registered and well-known claims of a verified access token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RegisteredClaims {
    /// `iss`: who issued the token.
    #[serde(default)]
    pub iss: Option<String>,
    /// `sub`: whom the token is about (the user).
    #[serde(default)]
    pub sub: Option<String>,
    /// `aud`: whom the token is for.
    #[serde(default)]
    pub aud: Option<Audience>,
    /// `exp`: expiry, seconds since the epoch.
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<i64>,
    /// `nbf`: not valid before, seconds since the epoch.
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<i64>,
    /// `iat`: issued at, seconds since the epoch.
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<i64>,
    /// `jti`: the token's unique id (the denylist key).
    #[serde(default)]
    pub jti: Option<String>,
    /// `sid`: the session or refresh family the token belongs to.
    #[serde(default)]
    pub sid: Option<String>,
    /// `ver`: the user's token version when the token was minted.
    #[serde(default)]
    pub ver: Option<u64>,
    /// `client_id` (RFC 9068).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Scopes, from `scope` (space separated) or `scp` (array).
    #[serde(default, alias = "scp", deserialize_with = "scopes")]
    pub scope: Option<Vec<String>>,
    /// Roles, from `roles`.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// `token_use` (some issuers mark access vs id vs refresh tokens here).
    #[serde(default)]
    pub token_use: Option<String>,
    /// A payload `typ` (some issuers put "Bearer", "Refresh" or "ID" here).
    #[serde(default, rename = "typ")]
    pub payload_typ: Option<String>,
    /// Whether a `nonce` claim is present (only OpenID Connect id tokens
    /// carry one).
    #[serde(default, rename = "nonce", deserialize_with = "present")]
    pub has_nonce: bool,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

impl RegisteredClaims {
    /// Whether the token grants `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x == scope))
    }

    /// Whether the token carries `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_some_and(|r| r.iter().any(|x| x == role))
    }
}

/// No application claims: the default `T` of [`Claims`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct NoCustomClaims {}

/// A verified token's claims, as the layer puts them in the request
/// extensions: the registered claims plus the application's `T`.
///
/// Cheap to clone. Derefs to `T`.
pub struct Claims<T = NoCustomClaims> {
    inner: Arc<ClaimsInner<T>>,
}

struct ClaimsInner<T> {
    registered: RegisteredClaims,
    custom: T,
}

impl<T> Clone for Claims<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Claims<T> {
    pub(crate) fn new(registered: RegisteredClaims, custom: T) -> Self {
        Self {
            inner: Arc::new(ClaimsInner { registered, custom }),
        }
    }

    /// The registered claims.
    #[must_use]
    pub fn registered(&self) -> &RegisteredClaims {
        &self.inner.registered
    }

    /// The application's claims.
    #[must_use]
    pub fn custom(&self) -> &T {
        &self.inner.custom
    }

    /// `sub`, the user.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.inner.registered.sub.as_deref()
    }

    /// Whether the token grants `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.registered.has_scope(scope)
    }

    /// Whether the token carries `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.registered.has_role(role)
    }
}

impl<T> Deref for Claims<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.custom
    }
}

impl<T: fmt::Debug> fmt::Debug for Claims<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("registered", &self.inner.registered)
            .field("custom", &self.inner.custom)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_parsing() {
        let c: RegisteredClaims = serde_json::from_str(
            r#"{"sub":"a","aud":["x","y"],"exp":10.9,"iat":5,"scope":"read  write","roles":["admin"],"nonce":"n"}"#,
        )
        .unwrap();
        assert_eq!(c.exp, Some(10));
        assert!(c.aud.as_ref().unwrap().contains("y"));
        assert!(c.has_scope("write") && !c.has_scope(""));
        assert!(c.has_role("admin"));
        assert!(c.has_nonce);
        let c: RegisteredClaims = serde_json::from_str(r#"{"scp":["a","b"],"aud":"x"}"#).unwrap();
        assert!(c.has_scope("b"));
        assert_eq!(c.aud, Some(Audience::One("x".into())));
        assert!(serde_json::from_str::<RegisteredClaims>(r#"{"exp":"10"}"#).is_err());
        assert!(serde_json::from_str::<RegisteredClaims>(r#"{"exp":1e300}"#).is_err());
        assert!(serde_json::from_str::<RegisteredClaims>(r#"{"aud":5}"#).is_err());
    }
}
