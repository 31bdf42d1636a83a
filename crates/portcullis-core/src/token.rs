//! Opaque bearer tokens and their digests.
//!
//! Session ids, refresh tokens and CSRF secrets are all [`OpaqueToken`]s: 32
//! bytes from the operating system's CSPRNG, written as 43 characters of
//! unpadded base64url. A store never sees the token itself, only its
//! [`TokenDigest`] (SHA-256), so a leaked store dump holds nothing that can be
//! replayed as a cookie.
//!
//! ```
//! use portcullis_core::token::OpaqueToken;
//!
//! let token = OpaqueToken::generate().expect("OS random source");
//! let wire = token.to_encoded();
//! assert_eq!(wire.len(), 43);
//!
//! let parsed = OpaqueToken::parse(&wire).unwrap();
//! assert_eq!(parsed.digest(), token.digest());
//!
//! // Anything that is not exactly a well-formed token is refused.
//! assert!(OpaqueToken::parse("not-a-token").is_err());
//! assert!(OpaqueToken::parse(&format!("{wire}=")).is_err());
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in an [`OpaqueToken`].
pub const TOKEN_BYTES: usize = 32;

/// Length of an encoded [`OpaqueToken`]: 32 bytes as unpadded base64url.
pub const TOKEN_ENCODED_LEN: usize = 43;

/// Why a string was refused as an [`OpaqueToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFormatError {
    /// The value is not exactly 43 characters long.
    #[error("token has the wrong length")]
    Length,
    /// The value holds a character outside the base64url alphabet.
    #[error("token holds a character outside the base64url alphabet")]
    Alphabet,
    /// The value is not the canonical encoding of 32 bytes.
    #[error("token is not canonical base64url")]
    NonCanonical,
}

/// The operating system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError(#[source] getrandom::Error);

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Errors
///
/// Fails only when the OS random source is unavailable.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

/// A 256-bit random token, shown to clients and never stored.
///
/// Its `Debug` output is redacted; the only way to see its text is
/// [`OpaqueToken::to_encoded`]. Equality is constant time.
#[derive(Clone)]
pub struct OpaqueToken {
    bytes: [u8; TOKEN_BYTES],
}

impl OpaqueToken {
    /// Draws a fresh token from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// Fails only when the OS random source is unavailable.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        fill_random(&mut bytes)?;
        Ok(Self { bytes })
    }

    /// Parses the wire form strictly: exactly 43 base64url characters with no
    /// padding, no whitespace and no non-canonical trailing bits.
    ///
    /// # Errors
    ///
    /// [`TokenFormatError`] says which rule the value broke.
    pub fn parse(s: &str) -> Result<Self, TokenFormatError> {
        let raw: &[u8; TOKEN_ENCODED_LEN] = s
            .as_bytes()
            .try_into()
            .map_err(|_| TokenFormatError::Length)?;
        // A fixed-size decoder (this runs on every request that carries a
        // session cookie): one table lookup per character, then 10 groups
        // of 4 characters to 3 bytes and a last group of 3 characters to 2
        // bytes whose 2 spare bits must be zero (canonical encoding).
        let mut sextets = [0u8; TOKEN_ENCODED_LEN];
        let mut invalid = 0u8;
        for (v, &b) in sextets.iter_mut().zip(raw) {
            *v = BASE64URL_VALUES[usize::from(b)];
            invalid |= *v;
        }
        if invalid & INVALID != 0 {
            return Err(TokenFormatError::Alphabet);
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        for (out, quad) in bytes.chunks_exact_mut(3).zip(sextets.chunks_exact(4)) {
            let n = (u32::from(quad[0]) << 18)
                | (u32::from(quad[1]) << 12)
                | (u32::from(quad[2]) << 6)
                | u32::from(quad[3]);
            out.copy_from_slice(&n.to_be_bytes()[1..]);
        }
        let n =
            (u32::from(sextets[40]) << 12) | (u32::from(sextets[41]) << 6) | u32::from(sextets[42]);
        if n & 0b11 != 0 {
            return Err(TokenFormatError::NonCanonical);
        }
        let [_, _, hi, lo] = (n >> 2).to_be_bytes();
        bytes[30] = hi;
        bytes[31] = lo;
        Ok(Self { bytes })
    }

    /// Builds a token from raw bytes (for stores and tests that hold them).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self { bytes }
    }

    /// The wire form: 43 characters of unpadded base64url.
    #[must_use]
    pub fn to_encoded(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes)
    }

    /// The raw random bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; TOKEN_BYTES] {
        &self.bytes
    }

    /// SHA-256 of the raw bytes: the key a store keeps instead of the token.
    #[must_use]
    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.bytes).into())
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken(REDACTED)")
    }
}

impl PartialEq for OpaqueToken {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for OpaqueToken {}

/// Marks a byte outside the base64url alphabet in [`BASE64URL_VALUES`].
const INVALID: u8 = 0x80;

/// The value of each base64url character (RFC 4648 section 5), [`INVALID`]
/// for every other byte.
const BASE64URL_VALUES: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < 64 {
        #[allow(clippy::cast_possible_truncation)]
        {
            t[alphabet[i] as usize] = i as u8;
        }
        i += 1;
    }
    t
};

/// Whether `b` belongs to the base64url alphabet (RFC 4648 section 5).
#[must_use]
pub const fn is_base64url(b: u8) -> bool {
    BASE64URL_VALUES[b as usize] & INVALID == 0
}

/// SHA-256 of an [`OpaqueToken`]: what stores use as a key.
///
/// A digest cannot be turned back into a usable token, so it may appear in
/// store keys, file names and "your active sessions" pages. `Debug` shows
/// only its first 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// SHA-256 of arbitrary bytes (for index keys such as a user id).
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps 32 bytes that are already a digest.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        // Store keys are built from this on every request (Redis): fill a
        // byte buffer, then one allocation.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0x0f)];
        }
        // ASCII hex digits only: always UTF-8.
        std::str::from_utf8(&out).unwrap_or_default().to_owned()
    }

    /// Parses 64 lower-case hex digits.
    ///
    /// # Errors
    ///
    /// Anything but exactly 64 lower-case hex digits is refused.
    pub fn from_hex(s: &str) -> Result<Self, TokenFormatError> {
        let raw = s.as_bytes();
        if raw.len() != 64 {
            return Err(TokenFormatError::Length);
        }
        let mut out = [0u8; 32];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(TokenFormatError::Alphabet)?;
            let lo = hex_value(pair[1]).ok_or(TokenFormatError::Alphabet)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl std::hash::Hash for TokenDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The digest is uniformly distributed already; eight bytes are plenty
        // for a hash table and keep hashing cheap.
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "TokenDigest({}..)", &hex[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let t = OpaqueToken::generate().unwrap();
        let s = t.to_encoded();
        assert_eq!(s.len(), TOKEN_ENCODED_LEN);
        assert_eq!(OpaqueToken::parse(&s).unwrap(), t);
        assert_ne!(OpaqueToken::generate().unwrap(), t);
    }

    #[test]
    fn strict_parsing_table() {
        let good = OpaqueToken::from_bytes([7; 32]).to_encoded();
        let cases: Vec<(String, Option<TokenFormatError>)> = vec![
            (good.clone(), None),
            (String::new(), Some(TokenFormatError::Length)),
            (format!("{good}="), Some(TokenFormatError::Length)),
            (format!(" {}", &good[1..]), Some(TokenFormatError::Alphabet)),
            (
                format!("{}=", &good[..42]),
                Some(TokenFormatError::Alphabet),
            ),
            (
                good.replace('B', "+").replace('H', "/"),
                Some(TokenFormatError::Alphabet),
            ),
            (
                format!("{}é", &good[..41]),
                Some(TokenFormatError::Alphabet),
            ),
            (good[..42].to_string(), Some(TokenFormatError::Length)),
        ];
        for (input, want) in cases {
            let got = OpaqueToken::parse(&input).err();
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_refused() {
        let good = OpaqueToken::from_bytes([0; 32]).to_encoded();
        assert!(good.ends_with('A'));
        // 'B' sets a trailing bit beyond the 256 bits of data.
        let bad = format!("{}B", &good[..42]);
        assert_eq!(
            OpaqueToken::parse(&bad),
            Err(TokenFormatError::NonCanonical)
        );
    }

    #[test]
    fn debug_is_redacted() {
        let t = OpaqueToken::generate().unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.to_encoded()));
        assert!(dbg.contains("REDACTED"));
        let d = format!("{:?}", t.digest());
        assert!(!d.contains(&t.digest().to_hex()));
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = OpaqueToken::generate().unwrap().digest();
        assert_eq!(TokenDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(TokenDigest::from_hex(&d.to_hex().to_uppercase()).is_err());
        assert!(TokenDigest::from_hex("../../etc/passwd").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical(s in ".{0,64}") {
            if let Ok(t) = OpaqueToken::parse(&s) {
                prop_assert_eq!(t.to_encoded(), s);
            }
        }

        #[test]
        fn parse_accepts_every_encoding(bytes in proptest::array::uniform32(any::<u8>())) {
            let t = OpaqueToken::from_bytes(bytes);
            let parsed = OpaqueToken::parse(&t.to_encoded()).unwrap();
            prop_assert_eq!(parsed.as_bytes(), &bytes);
        }

        #[test]
        fn near_miss_alphabet_refused(pos in 0usize..43, c in prop::sample::select(vec!['+', '/', '=', ' ', '.', '\n', '%'])) {
            let mut s: Vec<char> = OpaqueToken::from_bytes([9; 32]).to_encoded().chars().collect();
            s[pos] = c;
            let s: String = s.into_iter().collect();
            prop_assert!(OpaqueToken::parse(&s).is_err());
        }

        #[test]
        fn digest_from_hex_never_panics(s in ".{0,80}") {
            let _ = TokenDigest::from_hex(&s);
        }
    }
}
