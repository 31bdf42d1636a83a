//! The JWS parser: the compact serialization's three segments, strict
//! base64url, and the protected header (algorithm, `kid`, `typ`), checked
//! before any key is looked up.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::alg::Algorithm;
use crate::error::{JwtError, JwtErrorKind};
use crate::json::check_object_str;
use crate::kid::MAX_KID_LEN;
use crate::validation::Validation;

/// The three segments of a compact JWS, after the cheap checks.
pub(crate) struct Segments<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    /// `header.payload`, the signed bytes.
    pub(crate) signed: &'a str,
}

pub(crate) fn err(kind: JwtErrorKind) -> JwtError {
    JwtError::new(kind)
}

/// Length and character set, before any decoding: exactly three non-empty
/// base64url segments.
pub(crate) fn split(token: &str, max_len: usize) -> Result<Segments<'_>, JwtError> {
    if token.len() > max_len {
        return Err(err(JwtErrorKind::TooLarge));
    }
    // The first dot searched from the start and the last from the end (so
    // the search runs over the short header and signature, not the long
    // payload), and nothing but base64url around and between them (a
    // branch-free pass; a third dot is not base64url).
    let malformed = || err(JwtErrorKind::Malformed);
    let (h, rest) = token.split_once('.').ok_or_else(malformed)?;
    let (p, s) = rest.rsplit_once('.').ok_or_else(malformed)?;
    if !(all_base64url(h) && all_base64url(p) && all_base64url(s)) {
        return Err(malformed());
    }
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(err(JwtErrorKind::Malformed));
    }
    // A base64url length of 1 mod 4 can encode nothing.
    if [h, p, s].iter().any(|x| x.len() % 4 == 1) {
        return Err(err(JwtErrorKind::Malformed));
    }
    Ok(Segments {
        header: h,
        payload: p,
        signature: s,
        signed: &token[..h.len() + 1 + p.len()],
    })
}

/// Whether every byte is in the base64url alphabet. Branch-free, so the
/// compiler checks many bytes per instruction (a token is hundreds of
/// bytes, checked on every request).
fn all_base64url(x: &str) -> bool {
    x.bytes().fold(true, |ok, b| {
        let lower = b | 0x20;
        ok & (lower.is_ascii_lowercase() | b.is_ascii_digit() | (b == b'-') | (b == b'_'))
    })
}

/// Strict base64url: the engine refuses padding and non-canonical trailing
/// bits.
pub(crate) fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| err(JwtErrorKind::Malformed))
}

/// [`b64`], handing the bytes to `f`: decoded into a stack buffer of `N`
/// bytes when they are sure to fit (no allocation on the hot path), into
/// a vector otherwise. The same engine, so the same strictness.
pub(crate) fn with_b64<const N: usize, R>(
    segment: &str,
    f: impl FnOnce(&[u8]) -> Result<R, JwtError>,
) -> Result<R, JwtError> {
    // At most 3 bytes per 4 characters, plus 2 for a partial last group.
    if segment.len() / 4 * 3 + 2 <= N {
        let mut buf = [0u8; N];
        let n = URL_SAFE_NO_PAD
            .decode_slice(segment, &mut buf)
            .map_err(|_| err(JwtErrorKind::Malformed))?;
        f(buf.get(..n).ok_or_else(|| err(JwtErrorKind::Malformed))?)
    } else {
        f(&b64(segment)?)
    }
}

/// Stack room for a decoded payload (a typical access token's is a few
/// hundred bytes; larger ones are decoded into a vector).
pub(crate) const PAYLOAD_STACK: usize = 1024;
/// Stack room for a decoded signature: HMAC and ECDSA ones fit (RSA ones
/// are decoded into a vector).
pub(crate) const SIGNATURE_STACK: usize = 160;

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cty: Option<Cow<'a, str>>,
    /// Present with any value, `null` included: refused.
    #[serde(default, deserialize_with = "crate::claims::present")]
    crit: bool,
    /// Present with any value, `null` included: refused.
    #[serde(default, deserialize_with = "crate::claims::present")]
    b64: bool,
    // `jwk`, `jku`, `x5u`, `x5c` are deliberately not read: keys come from
    // the configured key source only.
}

/// The parsed header: what the key lookup needs.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<Arc<str>>,
}

pub(crate) fn typ_matches(got: &str, allowed: &[String]) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        match (s.get(..12), s.get(12..)) {
            (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("application/") => {
                rest.to_ascii_lowercase()
            }
            _ => s.to_ascii_lowercase(),
        }
    };
    let got = norm(got);
    allowed.iter().any(|a| norm(a) == got)
}

pub(crate) fn parse_header(seg: &Segments<'_>, v: &Validation) -> Result<Header, JwtError> {
    parse_header_typ(seg, Some(&v.typ))
}

/// Parses the protected header; `typ` is checked when `allowed` is given
/// (access tokens), and optional otherwise (plain JWS).
pub(crate) fn parse_header_typ(
    seg: &Segments<'_>,
    allowed: Option<&[String]>,
) -> Result<Header, JwtError> {
    let raw = b64(seg.header)?;
    // UTF-8 once for the whole header, not again inside every string.
    let text = std::str::from_utf8(&raw).map_err(|_| err(JwtErrorKind::BadJson))?;
    check_object_str(text).map_err(|()| err(JwtErrorKind::BadJson))?;
    let h: RawHeader<'_> = serde_json::from_str(text).map_err(|_| err(JwtErrorKind::BadJson))?;
    let alg = Algorithm::parse(&h.alg).ok_or_else(|| err(JwtErrorKind::UnsupportedAlg))?;
    if h.crit || h.b64 {
        return Err(err(JwtErrorKind::UnsupportedHeader));
    }
    if h.cty
        .as_deref()
        .is_some_and(|c| typ_matches(c, &["JWT".to_owned()]))
    {
        return Err(err(JwtErrorKind::UnsupportedHeader));
    }
    if let Some(allowed) = allowed {
        match h.typ.as_deref() {
            Some(t) if typ_matches(t, allowed) => {}
            _ => return Err(err(JwtErrorKind::WrongTokenType)),
        }
    }
    if h.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
        return Err(err(JwtErrorKind::UnknownKey));
    }
    Ok(Header {
        alg,
        kid: h.kid.map(|k| Arc::from(k.as_ref())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_table() {
        let cases: &[(&str, Option<JwtErrorKind>)] = &[
            ("aaaa.bbbb.cccc", None),
            ("aaaa.bbbb.", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.cccc.dddd", Some(JwtErrorKind::Malformed)),
            ("aaaa.bb=b.cccc", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.cc cc", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.cc+c", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.c\ncc", Some(JwtErrorKind::Malformed)),
            ("aaaaa.bbbb.cccc", Some(JwtErrorKind::Malformed)),
            ("", Some(JwtErrorKind::Malformed)),
        ];
        for (t, want) in cases {
            assert_eq!(split(t, 100).err().map(|e| e.kind()), *want, "{t:?}");
        }
        assert_eq!(
            split(&"a".repeat(101), 100).err().map(|e| e.kind()),
            Some(JwtErrorKind::TooLarge)
        );
    }

    #[test]
    fn alphabet_check_matches_core() {
        for b in 0..=255u8 {
            let s = [b'A', b, b'z'];
            if let Ok(s) = std::str::from_utf8(&s) {
                assert_eq!(
                    all_base64url(s),
                    portcullis_core::token::is_base64url(b),
                    "{b}"
                );
            }
        }
    }

    #[test]
    fn non_canonical_base64_refused() {
        assert!(b64("QQ").is_ok());
        assert!(b64("QR").is_err(), "trailing bits set");
        assert!(b64("QQ==").is_err(), "padding");
    }

    #[test]
    fn typ_matching() {
        let allowed = vec!["at+jwt".to_owned()];
        assert!(typ_matches("at+jwt", &allowed));
        assert!(typ_matches("AT+JWT", &allowed));
        assert!(typ_matches("application/at+jwt", &allowed));
        assert!(!typ_matches("JWT", &allowed));
        assert!(!typ_matches("refresh+jwt", &allowed));
        assert!(!typ_matches("", &allowed));
        assert!(
            !typ_matches("applicatioé/at+jwt", &allowed),
            "multibyte input near the prefix"
        );
    }

    proptest! {
        #[test]
        fn split_never_panics(s in ".{0,300}") {
            let _ = split(&s, 8192);
        }

        #[test]
        fn header_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let h = URL_SAFE_NO_PAD.encode(&bytes);
            let tok = format!("{h}.e30.c2ln");
            if let Ok(seg) = split(&tok, 8192) {
                let _ = parse_header(&seg, &Validation::default());
            }
        }

        #[test]
        fn accepted_segments_are_canonical(s in "[A-Za-z0-9_-]{1,40}") {
            if let Ok(bytes) = b64(&s) {
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(bytes), s.as_str());
            }
            // The stack path (large N) and the vector path (small N)
            // accept and produce the same.
            let want = b64(&s).ok();
            prop_assert_eq!(&with_b64::<64, _>(&s, |b| Ok(b.to_vec())).ok(), &want);
            prop_assert_eq!(&with_b64::<4, _>(&s, |b| Ok(b.to_vec())).ok(), &want);
        }
    }
}
