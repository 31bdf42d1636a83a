//! The refresh token's wire form: `<family id>.<secret>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use portcullis_core::token::{RandomError, fill_random, is_base64url};
use portcullis_core::{OpaqueToken, TokenDigest};
use subtle::ConstantTimeEq;

use crate::error::RefreshConfigError;

/// Length of a family id: 16 random bytes as unpadded base64url.
pub const FAMILY_ID_LEN: usize = 22;
/// Length of a refresh token: family id, a dot, a 43-character secret.
pub const REFRESH_TOKEN_LEN: usize = FAMILY_ID_LEN + 1 + 43;

/// A family id: one login on one device. It is the `sid` of the access
/// tokens minted for the family and the device's id in device lists; it is
/// not a credential on its own.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct FamilyId(String);

impl FamilyId {
    /// A fresh random id.
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn generate() -> Result<Self, RandomError> {
        let mut b = [0u8; 16];
        fill_random(&mut b)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(b)))
    }

    /// Parses an id strictly (22 base64url characters, canonical).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == FAMILY_ID_LEN
            && s.bytes().all(is_base64url)
            && URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() == 16);
        ok.then(|| Self(s.to_owned()))
    }

    /// The id's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FamilyId({})", self.0)
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A refresh token as the client holds it. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    family: FamilyId,
    secret: OpaqueToken,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("family", &self.family)
            .field("secret", &"REDACTED")
            .finish()
    }
}

impl RefreshToken {
    /// A first token for a new family.
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn first(family: FamilyId) -> Result<Self, RandomError> {
        Ok(Self {
            family,
            secret: OpaqueToken::generate()?,
        })
    }

    /// Parses the wire form strictly: exactly `<22 chars>.<43 chars>` of
    /// canonical base64url.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        // ASCII first: the split below must fall on a character boundary
        // whatever the client sent.
        if s.len() != REFRESH_TOKEN_LEN || !s.is_ascii() {
            return None;
        }
        let (fam, secret) = s.split_at(FAMILY_ID_LEN);
        let secret = secret.strip_prefix('.')?;
        Some(Self {
            family: FamilyId::parse(fam)?,
            secret: OpaqueToken::parse(secret).ok()?,
        })
    }

    /// The wire form.
    #[must_use]
    pub fn to_encoded(&self) -> String {
        format!("{}.{}", self.family, self.secret.to_encoded())
    }

    /// The family.
    #[must_use]
    pub const fn family(&self) -> &FamilyId {
        &self.family
    }

    /// What the store keeps: SHA-256 of the secret.
    #[must_use]
    pub fn digest(&self) -> TokenDigest {
        self.secret.digest()
    }

    /// The successor of this token: HMAC-SHA256 under the server's
    /// rotation key of the family id and this token's secret. The same
    /// token always has the same successor, so a repeated refresh (several
    /// tabs, a lost response, a retry after a store failure) gets the same
    /// new token instead of forking the chain; without the key nobody can
    /// compute it, and the store never sees it.
    #[must_use]
    pub fn successor(&self, key: &RotationKey) -> Self {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&key.0).expect("HMAC accepts keys of any length");
        mac.update(b"portcullis-refresh-v1\0");
        mac.update(self.family.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(self.secret.as_bytes());
        let bytes: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            family: self.family.clone(),
            secret: OpaqueToken::from_bytes(bytes),
        }
    }
}

/// The server-side key that derives successor tokens. Every instance that
/// shares a refresh store must share this key. `Debug` is redacted.
#[derive(Clone)]
pub struct RotationKey([u8; 32]);

impl fmt::Debug for RotationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotationKey(REDACTED)")
    }
}

impl PartialEq for RotationKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl RotationKey {
    /// A random key (for a single instance, or tests).
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn generate() -> Result<Self, RandomError> {
        let mut b = [0u8; 32];
        fill_random(&mut b)?;
        Ok(Self(b))
    }

    /// A key from 32 or more bytes of secret material (only the SHA-256 of
    /// longer input is kept).
    ///
    /// # Errors
    ///
    /// Fewer than 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RefreshConfigError> {
        if bytes.len() < 32 {
            return Err(RefreshConfigError::RotationKeyTooShort);
        }
        Ok(Self(*TokenDigest::of(bytes).as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_successor() {
        let key = RotationKey::generate().unwrap();
        let t = RefreshToken::first(FamilyId::generate().unwrap()).unwrap();
        let s = t.to_encoded();
        assert_eq!(s.len(), REFRESH_TOKEN_LEN);
        assert_eq!(RefreshToken::parse(&s).unwrap(), t);
        let next = t.successor(&key);
        assert_eq!(next, t.successor(&key), "deterministic");
        assert_ne!(next, t);
        assert_eq!(next.family(), t.family());
        assert_ne!(
            next,
            t.successor(&RotationKey::generate().unwrap()),
            "keyed"
        );
        assert!(!format!("{t:?}").contains(&s[23..]));
    }

    #[test]
    fn strict_parse() {
        let t = RefreshToken::first(FamilyId::generate().unwrap())
            .unwrap()
            .to_encoded();
        for bad in [
            String::new(),
            t.replace('.', "_"),
            format!("{t}="),
            format!(" {}", &t[1..]),
            t[..REFRESH_TOKEN_LEN - 1].to_string(),
            format!("{}+{}", &t[..10], &t[11..]),
        ] {
            assert!(RefreshToken::parse(&bad).is_none(), "{bad:?}");
        }
        assert!(RotationKey::from_bytes(&[1; 31]).is_err());
    }

    #[test]
    fn multibyte_input_at_the_split_point_is_refused() {
        // 21 ASCII bytes, then a two-byte character straddling byte 22.
        let s = format!("{}é{}", "A".repeat(21), "B".repeat(REFRESH_TOKEN_LEN - 23));
        assert_eq!(s.len(), REFRESH_TOKEN_LEN);
        assert!(RefreshToken::parse(&s).is_none());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            if let Some(t) = RefreshToken::parse(&s) {
                prop_assert_eq!(t.to_encoded(), s);
            }
        }
    }
}
