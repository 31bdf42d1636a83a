//! Verified claims: the registered ones, typed, and the application's own.
//!
//! Over 500 lines: the one-pass reader of the registered claims (every
//! claim typed, duplicate keys refused) and their accessors belong together.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::json::{KeyStr, Unique};

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
pub(crate) fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
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
    /// `auth_time`: when the user last actively authenticated (entered a
    /// password, a one-time code, ...), seconds since the epoch. A refresh
    /// copies it unchanged; only a new login moves it.
    #[serde(default, deserialize_with = "numeric_date")]
    pub auth_time: Option<i64>,
    /// `amr`: how the user authenticated, as RFC 8176 method names
    /// (`pwd`, `otp`, `mfa`, `hwk`, ...).
    #[serde(default)]
    pub amr: Option<Vec<String>>,
    /// `acr`: the authentication context class the login satisfied.
    #[serde(default)]
    pub acr: Option<String>,
    /// `cnf`: the key the token is bound to (RFC 7800; `jkt` for DPoP,
    /// RFC 9449 §6.1).
    #[serde(default)]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` (confirmation) claim: the key a token is bound to. Only
/// `jkt` is read; other members are checked for duplicate keys and
/// otherwise ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmation {
    /// `jkt`: the RFC 7638 SHA-256 thumbprint of the DPoP key.
    pub jkt: Option<String>,
}

impl<'de> Deserialize<'de> for Confirmation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Confirmation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a confirmation object without duplicate keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Confirmation, A::Error> {
                let mut c = Confirmation::default();
                let mut seen: Vec<std::borrow::Cow<'de, str>> = Vec::new();
                while let Some(KeyStr(key)) = map.next_key::<KeyStr<'de>>()? {
                    if seen.contains(&key) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    if key == "jkt" {
                        c.jkt = Some(map.next_value()?);
                    } else {
                        map.next_value_seed(Unique)?;
                    }
                    seen.push(key);
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
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

    /// The thumbprint of the key the token is bound to (`cnf.jkt`): a
    /// DPoP-bound token, usable only with a proof signed by that key.
    #[must_use]
    pub fn cnf_jkt(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.jkt.as_deref())
    }

    /// Whether `amr` names the authentication method `method` (RFC 8176:
    /// `pwd`, `otp`, `mfa`, ...).
    #[must_use]
    pub fn has_method(&self, method: &str) -> bool {
        self.amr
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x == method))
    }
}

/// The registered claims of a payload, in one pass that also refuses
/// duplicate object keys at any depth.
///
/// Accepts exactly the texts that `json::check_object_str` and then the
/// derived `Deserialize` both accept, with the same result, in one parse
/// instead of two: the known claims are typed as the derive types them
/// (`scope` and `scp` are one claim, so both together are refused, as the
/// derive refuses them); every other value, `nonce`'s included, goes
/// through [`Unique`]. The typed claims cannot hold an object, so no
/// duplicate key can hide in them.
pub(crate) fn registered_unique(text: &str) -> Result<RegisteredClaims, ()> {
    let mut de = serde_json::Deserializer::from_str(text);
    let claims = de.deserialize_map(RegisteredUnique).map_err(|_| ())?;
    de.end().map_err(|_| ())?;
    Ok(claims)
}

struct RegisteredUnique;

/// [`numeric_date`] as a seed.
struct Date;

impl<'de> DeserializeSeed<'de> for Date {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        numeric_date(d)
    }
}

/// [`scopes`] as a seed.
struct Scopes;

impl<'de> DeserializeSeed<'de> for Scopes {
    type Value = Option<Vec<String>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Vec<String>>, D::Error> {
        scopes(d)
    }
}

impl<'de> Visitor<'de> for RegisteredUnique {
    type Value = RegisteredClaims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims set without duplicate keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RegisteredClaims, A::Error> {
        let mut c = RegisteredClaims::default();
        // Known claims: one bit each (a known name never equals another
        // key, so the two sets are checked apart). Other keys: a linear
        // scan, as in `Unique` (claim sets are small).
        let mut seen: u32 = 0;
        let mut others: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        while let Some(KeyStr(key)) = map.next_key::<KeyStr<'de>>()? {
            let bit: u16 = match &*key {
                "iss" => 0,
                "sub" => 1,
                "aud" => 2,
                "exp" => 3,
                "nbf" => 4,
                "iat" => 5,
                "jti" => 6,
                "sid" => 7,
                "ver" => 8,
                "client_id" => 9,
                "scope" | "scp" => 10,
                "roles" => 11,
                "token_use" => 12,
                "typ" => 13,
                "nonce" => 14,
                "auth_time" => 15,
                "amr" => 16,
                "acr" => 17,
                "cnf" => 18,
                _ => {
                    if others.contains(&key) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    others.push(key);
                    map.next_value_seed(Unique)?;
                    continue;
                }
            };
            if seen & (1 << bit) != 0 {
                return Err(de::Error::custom("duplicate key"));
            }
            seen |= 1 << bit;
            match bit {
                0 => c.iss = map.next_value()?,
                1 => c.sub = map.next_value()?,
                2 => c.aud = map.next_value()?,
                3 => c.exp = map.next_value_seed(Date)?,
                4 => c.nbf = map.next_value_seed(Date)?,
                5 => c.iat = map.next_value_seed(Date)?,
                6 => c.jti = map.next_value()?,
                7 => c.sid = map.next_value()?,
                8 => c.ver = map.next_value()?,
                9 => c.client_id = map.next_value()?,
                10 => c.scope = map.next_value_seed(Scopes)?,
                11 => c.roles = map.next_value()?,
                12 => c.token_use = map.next_value()?,
                13 => c.payload_typ = map.next_value()?,
                15 => c.auth_time = map.next_value_seed(Date)?,
                16 => c.amr = map.next_value()?,
                17 => c.acr = map.next_value()?,
                18 => c.cnf = map.next_value()?,
                _ => {
                    map.next_value_seed(Unique)?;
                    c.has_nonce = true;
                }
            }
        }
        Ok(c)
    }
}

/// No application claims: the default `T` of [`Claims`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct NoCustomClaims {}

/// In the extensions of a request a JWT service let through when its
/// claims alone do not say so (a custom claims type, or no token): tells
/// the extractors that the layer runs on this route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerRan;

/// In the extensions of a request an optional JWT service let through
/// without a token, for its claims type `T` (so an extractor for another
/// type knows the layer decodes something else).
pub(crate) struct NoToken<T>(PhantomData<fn() -> T>);

impl<T> NoToken<T> {
    pub(crate) const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Clone for NoToken<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

/// Puts what a JWT service let through into the request's extensions:
/// the claims (or the no-token mark) and, where the claims alone do not
/// say that a layer ran, the layer mark. Claims of the default type need
/// no mark (an extractor that misses its type looks for them), so the
/// common request makes one insert, as it did before the marks existed.
/// Zero-sized marks: no allocation beyond the claims'.
pub(crate) fn mark<T: Send + Sync + 'static>(
    extensions: &mut http::Extensions,
    claims: Option<Claims<T>>,
) {
    let default_type = std::any::TypeId::of::<T>() == std::any::TypeId::of::<NoCustomClaims>();
    match claims {
        Some(c) => {
            extensions.insert(c);
            if default_type {
                return;
            }
        }
        None => {
            // Claims an outer layer verified (for its own audience, from
            // its own transport) are not this layer's: a route behind an
            // optional layer that saw no token has no claims.
            extensions.remove::<Claims<T>>();
            extensions.insert(NoToken::<T>::new());
        }
    }
    extensions.insert(LayerRan);
}

/// Whether a JWT service ran on this request (see [`mark`]).
#[cfg(feature = "axum")]
pub(crate) fn layer_ran(extensions: &http::Extensions) -> bool {
    extensions.get::<LayerRan>().is_some() || extensions.get::<Claims>().is_some()
}

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
    use proptest::prelude::*;

    /// The two passes `registered_unique` replaces.
    fn two_passes(text: &str) -> Result<RegisteredClaims, ()> {
        crate::json::check_object_str(text)?;
        serde_json::from_str(text).map_err(|_| ())
    }

    #[test]
    fn one_pass_matches_two_passes() {
        let cases = [
            r#"{"sub":"a","aud":["x","y"],"exp":10.9,"iat":5,"scope":"read  write","roles":["admin"],"nonce":"n"}"#,
            r#"{"sub":"a","sub":"b"}"#,
            r#"{"sub":"a","\u0073ub":"b"}"#,
            r#"{"scope":"a","scp":["b"]}"#,
            r#"{"x":1,"x":2}"#,
            r#"{"x":{"y":1,"y":2}}"#,
            r#"{"x":[{"y":1},{"y":1,"y":2}]}"#,
            r#"{"nonce":{"y":1,"y":2}}"#,
            r#"{"nonce":null,"iss":null,"ver":null}"#,
            r#"{"exp":null}"#,
            r#"{"aud":{"a":1}}"#,
            r#"[1]"#,
            r#"{"exp":1} x"#,
            r#"{"client_id":"c","token_use":"access","typ":"Bearer","jti":"j","sid":"s","ver":3,"nbf":1}"#,
            r#"{"auth_time":1700000000.5,"amr":["pwd","otp"],"acr":"urn:example:gold"}"#,
            r#"{"cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I","x5t#S256":"x"}}"#,
            r#"{"cnf":null}"#,
            r#"{"cnf":{}}"#,
            r#"{"auth_time":1,"auth_time":2}"#,
            r#"{"amr":"pwd"}"#,
            r#"{"acr":1}"#,
            r#"{"auth_time":"1"}"#,
            r#"{"cnf":{"jkt":"a","jkt":"b"}}"#,
            r#"{"cnf":{"x5t#S256":{"a":1,"a":2}}}"#,
            r#"{"cnf":{"jkt":1}}"#,
            r#"{"cnf":"jkt"}"#,
            r#"{"cnf":{"jkt":"a"},"cnf":{"jkt":"b"}}"#,
        ];
        for text in cases {
            assert_eq!(registered_unique(text), two_passes(text), "{text}");
        }
        assert!(registered_unique(cases[0]).is_ok_and(|c| c.has_nonce && c.exp == Some(10)));
        assert!(registered_unique(cases[13]).is_ok_and(|c| c.ver == Some(3) && c.nbf == Some(1)));
        assert!(registered_unique(cases[14]).is_ok_and(|c| {
            c.auth_time == Some(1_700_000_000)
                && c.has_method("otp")
                && !c.has_method("hwk")
                && c.acr.as_deref() == Some("urn:example:gold")
        }));
        assert!(
            registered_unique(cases[15]).is_ok_and(|c| {
                c.cnf_jkt() == Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
            })
        );
        assert!(registered_unique(cases[16]).is_ok_and(|c| c.cnf_jkt().is_none()));
        assert!(registered_unique(cases[17]).is_ok_and(|c| c.cnf_jkt().is_none()));
        for bad in &cases[18..] {
            assert!(registered_unique(bad).is_err(), "{bad}");
        }
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "iss",
                "sub",
                "aud",
                "exp",
                "nbf",
                "iat",
                "jti",
                "sid",
                "ver",
                "client_id",
                "scope",
                "scp",
                "roles",
                "token_use",
                "typ",
                "nonce",
                "auth_time",
                "amr",
                "acr",
                "cnf",
                "jkt",
                "x",
                "y",
                "\\u0078",
                "\\u0073ub",
            ])
            .prop_map(str::to_owned),
            "[a-z]{0,3}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop::sample::select(vec![
            "null",
            "true",
            "1",
            "-1",
            "1.5",
            "1e300",
            "18446744073709551615",
            "\"a b\"",
            "\"\"",
            "[]",
            "[\"a\"]",
            "[1]",
            "{}",
        ])
        .prop_map(str::to_owned);
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                    let kv: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", kv.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn one_pass_agrees_with_two(kv in prop::collection::vec((key(), value()), 0..8)) {
            let kv: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let text = format!("{{{}}}", kv.join(","));
            prop_assert_eq!(registered_unique(&text), two_passes(&text), "{}", text);
        }

        #[test]
        fn one_pass_never_panics(s in "\\PC{0,200}") {
            prop_assert_eq!(registered_unique(&s), two_passes(&s));
        }
    }

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
