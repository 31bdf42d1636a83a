//! Several trusted issuers, each with its own keys and rules, chosen by
//! the token's `iss` before any key is touched.
//!
//! Over 500 lines: the module docs and the set's whole choice in one
//! place, and its unit tests.
//!
//! A service behind more than one identity provider (two tenants, a
//! migration from one provider to another, an internal issuer beside an
//! external one) trusts an [`IssuerSet`]: for every token the layer reads
//! the unverified payload's `iss` first (the payload only, bounded by the
//! largest token size an issuer accepts, duplicate JSON keys refused), and
//! only then looks a key up, in the key source of that issuer alone, and
//! checks the claims by that issuer's rules (audiences, accepted `typ`,
//! required claims, leeway). So:
//!
//! - a token whose `iss` is missing or not in the set is refused (401,
//!   reason `bad-issuer`) without any key lookup, so without any fetch;
//! - a token signed with issuer A's key that claims to come from issuer B
//!   is checked against B's keys only, and refused;
//! - a JWKS URL in a token (`jku`, `x5u`) is never read: keys come from
//!   the configured sources only.
//!
//! The verified-token cache stays on: a cached token is served only while
//! the key source of the issuer that verified it still returns the very
//! key that verified it.
//!
//! ```
//! use portcullis_jwt::issuers::{Issuer, IssuerSet};
//! use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
//!
//! let staff = JwtIssuer::builder(SigningKey::generate("s1", Algorithm::ES256).unwrap())
//!     .issuer("https://staff.example.com")
//!     .audience("api")
//!     .build()
//!     .unwrap();
//! let customers = JwtIssuer::builder(SigningKey::generate("c1", Algorithm::ES256).unwrap())
//!     .issuer("https://login.example.com")
//!     .audience("https://api.example.com")
//!     .build()
//!     .unwrap();
//! let set = IssuerSet::new([
//!     Issuer::new("https://staff.example.com", staff.keys()).audience("api"),
//!     Issuer::new("https://login.example.com", customers.keys())
//!         .audience("https://api.example.com"),
//! ])
//! .unwrap();
//! let jwt = JwtLayer::builder_issuers(set).build().unwrap();
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let token = customers.token("alice").mint().unwrap().token;
//! assert_eq!(jwt.verify(&token).await.unwrap().subject(), Some("alice"));
//! # });
//! ```
//!
//! With the `jwks-remote` feature an issuer can be configured from its
//! URL alone ([`Issuer::discover`]): its keys then come from OpenID
//! Connect discovery, lazily, on the first token that names it.
//!
//! # Audiences and resource indicators (RFC 8707)
//!
//! A client that asked for a token with a `resource` parameter (RFC 8707)
//! gets a token whose `aud` is that resource's URL. Configure that URL as
//! the issuer's audience: `aud` is compared with each configured audience
//! as an exact string (no normalisation: no case folding, no trailing
//! slash added or removed), so `https://api.example.com/v1` accepts a token
//! for `https://api.example.com/v1` and refuses one for
//! `https://api.example.com/v1/` or `https://api.example.com`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::error::{JwtError, JwtErrorKind};
use crate::json::{KeyStr, Unique};
use crate::jws::{PAYLOAD_STACK, err, split, with_b64};
use crate::keys::{KeyLookup, KeySource};
use crate::prepared::Prepared;
use crate::validation::Validation;

/// One trusted issuer: its `iss`, where its keys come from, and the rules
/// its tokens must satisfy.
///
/// Build it with [`Issuer::new`] (or [`Issuer::discover`]) and name at
/// least one audience (or waive the check with
/// [`allow_any_audience`](Self::allow_any_audience)).
#[must_use]
pub struct Issuer {
    iss: String,
    keys: Arc<dyn KeySource>,
    validation: Validation,
    any_audience: bool,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("iss", &self.iss)
            .field("keys", &self.keys)
            .field("validation", &self.validation)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Trusts tokens whose `iss` is exactly `iss` (byte for byte), verified
    /// with keys from `keys`, with the default rules ([`Validation`]).
    pub fn new(iss: impl Into<String>, keys: impl KeySource) -> Self {
        Self::from_arc(iss.into(), Arc::new(keys))
    }

    fn from_arc(iss: String, keys: Arc<dyn KeySource>) -> Self {
        Self {
            iss,
            keys,
            validation: Validation::default(),
            any_audience: false,
        }
    }

    /// Trusts the issuer `iss` with keys found by OpenID Connect discovery
    /// (`{iss}/.well-known/openid-configuration`, then its `jwks_uri`),
    /// lazily: nothing is fetched until a token names this issuer. The
    /// discovery document's `issuer` must equal `iss`. See
    /// [`Discovery`](crate::jwks::Discovery) for the rules, and
    /// [`from_discovery`](Self::from_discovery) to set them.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError`](crate::jwks::DiscoveryError) when `iss` is not an
    /// allowed URL (`https`, or `http` to a loopback host; no query or
    /// fragment) or no HTTP client can be built.
    #[cfg(feature = "jwks-remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwks-remote")))]
    pub fn discover(iss: impl Into<String>) -> Result<Self, crate::jwks::DiscoveryError> {
        Ok(Self::from_discovery(
            crate::jwks::Discovery::builder(iss).build()?,
        ))
    }

    /// Trusts the issuer a [`Discovery`](crate::jwks::Discovery) was
    /// configured for, with the keys it discovers.
    #[cfg(feature = "jwks-remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwks-remote")))]
    pub fn from_discovery(discovery: crate::jwks::Discovery) -> Self {
        let iss = discovery.issuer().to_owned();
        Self::new(iss, discovery)
    }

    /// Accepts this issuer's tokens whose `aud` names `audience` (call
    /// again for several). Compared as exact strings: an RFC 8707
    /// resource indicator URL is configured as it is sent.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.validation = self.validation.audience(audience);
        self
    }

    /// Replaces this issuer's rules (audiences, accepted `typ`, required
    /// claims, leeway, size limit). The issuers named in `validation` are
    /// ignored: this issuer's tokens must carry this issuer's `iss`.
    pub fn validation(mut self, validation: Validation) -> Self {
        self.validation = validation;
        self
    }

    /// **Weaker.** Accepts this issuer's tokens for any audience: a token
    /// it minted for another service is then accepted here.
    pub const fn allow_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// The `iss` this issuer's tokens carry.
    #[must_use]
    pub fn iss(&self) -> &str {
        &self.iss
    }
}

/// Why an [`IssuerSet`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerSetError {
    /// No issuer at all.
    #[error("an issuer set needs at least one issuer")]
    Empty,
    /// An issuer with an empty `iss`.
    #[error("an issuer's iss must not be empty")]
    EmptyIssuer,
    /// Two issuers with the same `iss`.
    #[error("the issuer {0} is configured twice")]
    Duplicate(String),
    /// An issuer without an audience, and no explicit
    /// [`Issuer::allow_any_audience`].
    #[error("configure an audience for the issuer {0} (or call allow_any_audience explicitly)")]
    AudienceNotConfigured(String),
    /// An issuer whose token size limit is zero.
    #[error("the token size limit of the issuer {0} must be positive")]
    MaxLen(String),
}

/// One issuer as the verifier uses it.
pub(crate) struct Trusted {
    pub(crate) keys: Arc<dyn KeySource>,
    pub(crate) validation: Validation,
    /// Parsed headers and HMAC key schedules, per issuer (a header is
    /// parsed against this issuer's accepted `typ`).
    pub(crate) prepared: Prepared,
}

/// The issuers a layer trusts, each with its own keys and rules. Give it
/// to [`JwtLayer::builder_issuers`](crate::JwtLayer::builder_issuers); see the [module docs](self).
pub struct IssuerSet {
    trusted: Box<[Trusted]>,
    by_iss: HashMap<Box<str>, usize>,
    /// The largest token any issuer accepts: the bound of the `iss` peek.
    max_len: usize,
}

impl fmt::Debug for IssuerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_index: Vec<(&str, usize)> =
            self.by_iss.iter().map(|(k, v)| (&**k, *v)).collect();
        by_index.sort_by_key(|(_, i)| *i);
        let mut list = f.debug_list();
        for (iss, i) in by_index {
            let t = &self.trusted[i];
            list.entry(&format_args!(
                "{iss:?}: {:?}, audiences {:?}",
                t.keys, t.validation.audiences
            ));
        }
        list.finish()
    }
}

impl IssuerSet {
    /// A set of `issuers`.
    ///
    /// # Errors
    ///
    /// [`IssuerSetError`] when the set is empty, an `iss` is empty or
    /// configured twice, an issuer has no audience (and no explicit
    /// [`Issuer::allow_any_audience`]), or a size limit is zero.
    pub fn new(issuers: impl IntoIterator<Item = Issuer>) -> Result<Self, IssuerSetError> {
        let mut trusted = Vec::new();
        let mut by_iss = HashMap::new();
        let mut max_len = 0;
        for issuer in issuers {
            let Issuer {
                iss,
                keys,
                mut validation,
                any_audience,
            } = issuer;
            if iss.is_empty() {
                return Err(IssuerSetError::EmptyIssuer);
            }
            if !validation.has_audience() && !any_audience {
                return Err(IssuerSetError::AudienceNotConfigured(iss));
            }
            if validation.max_len == 0 {
                return Err(IssuerSetError::MaxLen(iss));
            }
            max_len = max_len.max(validation.max_len);
            validation.issuers = vec![iss.clone()];
            if by_iss
                .insert(iss.clone().into_boxed_str(), trusted.len())
                .is_some()
            {
                return Err(IssuerSetError::Duplicate(iss));
            }
            trusted.push(Trusted {
                keys,
                validation,
                prepared: Prepared::default(),
            });
        }
        if trusted.is_empty() {
            return Err(IssuerSetError::Empty);
        }
        Ok(Self {
            trusted: trusted.into_boxed_slice(),
            by_iss,
            max_len,
        })
    }

    /// The number of issuers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.trusted.len()
    }

    /// Whether the set is empty (never, for a set [`IssuerSet::new`]
    /// built).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.trusted.is_empty()
    }

    /// Whether `iss` is one of the issuers (exact string).
    #[must_use]
    pub fn contains(&self, iss: &str) -> bool {
        self.by_iss.contains_key(iss)
    }

    /// The issuer at `index` (as [`pick`](Self::pick) returned it).
    pub(crate) fn get(&self, index: usize) -> Option<&Trusted> {
        self.trusted.get(index)
    }

    /// The key source of the issuer at `index`.
    pub(crate) fn keys(&self, index: usize) -> Option<&dyn KeySource> {
        self.trusted.get(index).map(|t| &*t.keys)
    }

    /// The issuer `token` claims, from its unverified payload, before any
    /// key is looked up: its index, or why the token is refused (too
    /// large, malformed, a payload that is not one duplicate-free JSON
    /// object, or an `iss` that is missing or not in the set).
    pub(crate) fn pick(&self, token: &str) -> Result<usize, JwtError> {
        let seg = split(token, self.max_len)?;
        with_b64::<PAYLOAD_STACK, _>(seg.payload, |raw| {
            let text = std::str::from_utf8(raw).map_err(|_| err(JwtErrorKind::BadJson))?;
            let found = peek_iss(text, |iss| iss.and_then(|i| self.by_iss.get(i).copied()))
                .map_err(|()| err(JwtErrorKind::BadJson))?;
            found.ok_or_else(|| err(JwtErrorKind::BadIssuer))
        })
    }
}

/// Reads the `iss` of a JSON claims set, refusing duplicate keys at any
/// depth and anything but one object; `iss` must be a string or `null`.
/// Hands the issuer (if any) to `f` (it may borrow from `text`).
fn peek_iss<R>(text: &str, f: impl FnOnce(Option<&str>) -> R) -> Result<R, ()> {
    let mut de = serde_json::Deserializer::from_str(text);
    let iss = de.deserialize_map(IssOnly).map_err(|_| ())?;
    de.end().map_err(|_| ())?;
    Ok(f(iss.as_deref()))
}

struct IssOnly;

impl<'de> Visitor<'de> for IssOnly {
    type Value = Option<std::borrow::Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims set without duplicate keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut iss = None;
        let mut seen: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        while let Some(KeyStr(key)) = map.next_key::<KeyStr<'de>>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom("duplicate key"));
            }
            if key == "iss" {
                iss = map.next_value::<Option<KeyStr<'de>>>()?.map(|k| k.0);
            } else {
                map.next_value_seed(Unique)?;
            }
            seen.push(key);
        }
        Ok(iss)
    }
}

/// The key source a layer over an [`IssuerSet`] holds in place of one
/// (never asked: every lookup goes to the token's issuer's source). Fails
/// closed if it ever were.
pub(crate) struct Chosen(pub(crate) Arc<IssuerSet>);

impl fmt::Debug for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IssuerSet").field(&self.0).finish()
    }
}

impl KeySource for Chosen {
    fn lookup(&self, _kid: Option<&str>) -> KeyLookup {
        KeyLookup::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JwtLayer;
    use crate::{Algorithm, JwtIssuer, KeySet, SigningKey, VerifyingKey};

    fn peek(text: &str) -> Result<Option<String>, ()> {
        peek_iss(text, |i| i.map(str::to_owned))
    }

    #[test]
    fn peek_table() {
        let cases: &[(&str, Result<Option<&str>, ()>)] = &[
            (r#"{"iss":"https://a"}"#, Ok(Some("https://a"))),
            (
                r#"{"sub":"x","iss":"https://a","aud":"api"}"#,
                Ok(Some("https://a")),
            ),
            (r#"{"iss":"https:\/\/a"}"#, Ok(Some("https://a"))),
            (r#"{"sub":"x"}"#, Ok(None)),
            (r#"{"iss":null}"#, Ok(None)),
            (r#"{"iss":1}"#, Err(())),
            (r#"{"iss":["https://a"]}"#, Err(())),
            (r#"{"iss":"https://a","iss":"https://b"}"#, Err(())),
            (r#"{"iss":"https://a","\u0069ss":"https://b"}"#, Err(())),
            (r#"{"iss":"https://a","x":{"y":1,"y":2}}"#, Err(())),
            (r#"{"sub":"a","sub":"b","iss":"https://a"}"#, Err(())),
            (r#"["iss"]"#, Err(())),
            (r#"{"iss":"https://a"} x"#, Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            let want = want.map(|w| w.map(str::to_owned));
            assert_eq!(peek(text), want, "{text}");
        }
    }

    fn hmac_keys(kid: &str, secret: u8) -> KeySet {
        KeySet::new([VerifyingKey::hmac(Some(kid), Algorithm::HS256, &[secret; 32]).unwrap()])
            .unwrap()
    }

    #[test]
    fn set_rules() {
        let k = || hmac_keys("a", 1);
        assert_eq!(
            IssuerSet::new([]).unwrap_err(),
            IssuerSetError::Empty,
            "empty"
        );
        assert_eq!(
            IssuerSet::new([Issuer::new("", k()).audience("api")]).unwrap_err(),
            IssuerSetError::EmptyIssuer
        );
        assert_eq!(
            IssuerSet::new([Issuer::new("https://a", k())]).unwrap_err(),
            IssuerSetError::AudienceNotConfigured("https://a".into())
        );
        assert_eq!(
            IssuerSet::new([
                Issuer::new("https://a", k()).audience("api"),
                Issuer::new("https://a", k()).audience("other"),
            ])
            .unwrap_err(),
            IssuerSetError::Duplicate("https://a".into())
        );
        assert_eq!(
            IssuerSet::new([Issuer::new("https://a", k())
                .validation(Validation::default().audience("api").max_token_len(0))])
            .unwrap_err(),
            IssuerSetError::MaxLen("https://a".into())
        );
        let set = IssuerSet::new([
            Issuer::new("https://a", k()).allow_any_audience(),
            Issuer::new("https://a/", k()).audience("api"),
        ])
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains("https://a/") && !set.contains("https://A"));
    }

    /// An issuer's `validation` cannot widen the `iss` it trusts.
    #[tokio::test]
    async fn the_validation_of_an_issuer_cannot_add_issuers() {
        let key = SigningKey::hmac("k", Algorithm::HS256, &[3; 32]).unwrap();
        let other = JwtIssuer::builder(key)
            .issuer("https://other")
            .audience("api")
            .build()
            .unwrap();
        let set = IssuerSet::new([Issuer::new("https://a", other.keys()).validation(
            Validation::default()
                .issuer("https://other")
                .audience("api"),
        )])
        .unwrap();
        let jwt = JwtLayer::builder_issuers(set).build().unwrap();
        let token = other.token("mallory").mint().unwrap().token;
        assert_eq!(
            jwt.verify(&token).await.unwrap_err().kind(),
            JwtErrorKind::BadIssuer
        );
    }

    /// The payload is read within the largest limit of any issuer, then the
    /// token's issuer's own limit applies.
    #[tokio::test]
    async fn size_limits_per_issuer() {
        let key = |secret| SigningKey::hmac("k", Algorithm::HS256, &[secret; 32]).unwrap();
        let small = JwtIssuer::builder(key(1))
            .issuer("https://small")
            .audience("api")
            .build()
            .unwrap();
        let large = JwtIssuer::builder(key(2))
            .issuer("https://large")
            .audience("api")
            .build()
            .unwrap();
        let v = |n| Validation::default().audience("api").max_token_len(n);
        let set = IssuerSet::new([
            Issuer::new("https://small", small.keys()).validation(v(300)),
            Issuer::new("https://large", large.keys()).validation(v(4000)),
        ])
        .unwrap();
        let jwt = JwtLayer::builder_issuers(set).build().unwrap();
        let pad = "x".repeat(400);
        let big_small = small.token(pad.clone()).mint().unwrap().token;
        let big_large = large.token(pad).mint().unwrap().token;
        assert_eq!(
            jwt.verify(&big_small).await.unwrap_err().kind(),
            JwtErrorKind::TooLarge
        );
        assert!(jwt.verify(&big_large).await.is_ok());
    }

    /// A single-issuer rule given to a builder over an issuer set would be
    /// unused: the build is refused instead.
    #[test]
    fn single_issuer_rules_on_an_issuer_set_are_refused() {
        use crate::JwtConfigError;
        let key = SigningKey::hmac("k", Algorithm::HS256, &[3; 32]).unwrap();
        let keys = JwtIssuer::builder(key)
            .issuer("https://a")
            .audience("api")
            .build()
            .unwrap()
            .keys();
        let set =
            || IssuerSet::new([Issuer::new("https://a", keys.clone()).audience("api")]).unwrap();
        let refused = [
            JwtLayer::builder_issuers(set()).audience("other").build(),
            JwtLayer::builder_issuers(set()).issuer("https://b").build(),
            JwtLayer::builder_issuers(set())
                .allow_any_audience()
                .build(),
            JwtLayer::builder_issuers(set()).allow_any_issuer().build(),
            JwtLayer::builder_issuers(set())
                .validation(Validation::default())
                .build(),
        ];
        for built in refused {
            assert_eq!(built.unwrap_err(), JwtConfigError::RulesOutsideIssuerSet);
        }
        assert!(JwtLayer::builder_issuers(set()).cache(0).build().is_ok());
    }
}
