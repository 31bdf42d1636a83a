//! Opaque tokens (`OpaqueToken::parse`) and digests
//! (`TokenDigest::from_hex`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::token::{TOKEN_ENCODED_LEN, TokenFormatError};
use portcullis_core::{OpaqueToken, TokenDigest};

/// Checks one case: the input as a token and as a digest.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run(data: &[u8]) {
    let s = crate::text(data);
    let parsed = OpaqueToken::parse(s);
    // The base64 crate's strict decoder (no padding, canonical trailing
    // bits) is the reference for the hand-written fixed-size decoder.
    let reference = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .filter(|b| b.len() == 32 && s.len() == TOKEN_ENCODED_LEN);
    match (&parsed, &reference) {
        (Ok(t), Some(bytes)) => {
            assert_eq!(t.as_bytes().as_slice(), bytes.as_slice());
            // Canonical: the token re-encodes to the very text it came from.
            assert_eq!(t.to_encoded(), s);
            assert_eq!(OpaqueToken::parse(&t.to_encoded()).ok().as_ref(), Some(t));
            assert_eq!(format!("{t:?}"), "OpaqueToken(REDACTED)");
        }
        (Err(e), None) => {
            let want_length = s.len() != TOKEN_ENCODED_LEN;
            assert_eq!(*e == TokenFormatError::Length, want_length, "{e:?}");
        }
        (p, r) => panic!("parse {p:?} but reference decoder {}", r.is_some()),
    }
    // Every 32 bytes are a token, and its text parses back to them.
    if let Ok(bytes) = <[u8; 32]>::try_from(data.get(..32).unwrap_or_default()) {
        let t = OpaqueToken::from_bytes(bytes);
        let wire = t.to_encoded();
        assert_eq!(OpaqueToken::parse(&wire).map(|p| *p.as_bytes()), Ok(bytes));
        let d = TokenDigest::from_bytes(bytes);
        assert_eq!(TokenDigest::from_hex(&d.to_hex()), Ok(d));
    }
    // Digests: exactly 64 lower-case hex digits.
    let digest = TokenDigest::from_hex(s);
    let hex_ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert_eq!(digest.is_ok(), hex_ok);
    if let Ok(d) = digest {
        assert_eq!(d.to_hex(), s);
    }
}
