//! Refresh tokens (`RefreshToken::parse`) and family ids
//! (`FamilyId::parse`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_refresh::{FAMILY_ID_LEN, FamilyId, REFRESH_TOKEN_LEN, RefreshToken, RotationKey};

/// Strict unpadded base64url of exactly `n` bytes in exactly `len`
/// characters (the base64 crate refuses padding and non-canonical bits).
fn canonical(s: &str, len: usize, n: usize) -> bool {
    s.len() == len && URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() == n)
}

/// Checks one case.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run(data: &[u8]) {
    let s = crate::text(data);
    let token = RefreshToken::parse(s);
    let reference = s.len() == REFRESH_TOKEN_LEN
        && s.is_char_boundary(FAMILY_ID_LEN)
        && s.is_char_boundary(FAMILY_ID_LEN + 1)
        && canonical(&s[..FAMILY_ID_LEN], FAMILY_ID_LEN, 16)
        && &s[FAMILY_ID_LEN..=FAMILY_ID_LEN] == "."
        && canonical(&s[FAMILY_ID_LEN + 1..], 43, 32);
    assert_eq!(token.is_some(), reference, "parse and reference disagree");
    if let Some(t) = &token {
        // Canonical: the token re-encodes to the very text it came from.
        assert_eq!(t.to_encoded(), s);
        assert_eq!(RefreshToken::parse(&t.to_encoded()).as_ref(), Some(t));
        assert_eq!(t.family().as_str(), &s[..FAMILY_ID_LEN]);
        assert!(
            !format!("{t:?}").contains(&s[FAMILY_ID_LEN + 1..]),
            "secret in Debug"
        );
        // A successor is a well-formed token of the same family.
        let key = RotationKey::from_bytes(&[7u8; 32]).expect("32 bytes");
        let next = t.successor(&key);
        assert_eq!(next.family(), t.family());
        assert_eq!(
            RefreshToken::parse(&next.to_encoded()).as_ref(),
            Some(&next)
        );
        assert_ne!(next.to_encoded(), t.to_encoded());
    }
    let family = FamilyId::parse(s);
    assert_eq!(family.is_some(), canonical(s, FAMILY_ID_LEN, 16));
    if let Some(f) = family {
        assert_eq!(f.as_str(), s);
        assert_eq!(f.to_string(), s);
    }
}
