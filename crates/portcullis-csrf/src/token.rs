//! Token wire format: per-response masking, constant-time comparison, and
//! the HMAC of signed tokens.
//!
//! A token on the wire is `base64url(pad || (raw XOR pad))`, where `pad` is
//! fresh CSPRNG bytes for every rendering (the BREACH defence Django uses):
//! the same secret never shows the same bytes twice, so a compression
//! oracle learns nothing. `raw` is
//!
//! - in session mode, the 32-byte synchronizer secret kept in the session
//!   (wire token: 64 bytes, 86 characters);
//! - in signed mode, `nonce || HMAC-SHA256(key, context || binding || nonce)`
//!   with a 32-byte random nonce (wire token: 128 bytes, 171 characters).
//!   The binding (the session, or the pre-session cookie) is an input to the
//!   MAC and never appears in the token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use portcullis_core::token::{fill_random, is_base64url};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq as _};

use crate::error::{CsrfError, CsrfErrorKind};

/// Bytes of a synchronizer secret and of a signed token's nonce and MAC.
pub(crate) const PART: usize = 32;
/// Raw bytes of a session-mode token (the secret).
pub(crate) const SESSION_RAW: usize = PART;
/// Raw bytes of a signed token (nonce and MAC).
pub(crate) const SIGNED_RAW: usize = 2 * PART;

/// Domain separation of the MAC input.
const CONTEXT: &[u8] = b"portcullis-csrf-v1\0";

/// What a signed token is bound to. The tag keeps a session binding and a
/// pre-session id from ever producing the same MAC input.
#[derive(Clone, Copy)]
pub(crate) enum Bound<'a> {
    /// The session (or another application-defined identity).
    Session(&'a [u8]),
    /// The pre-session cookie of a visitor without a session.
    PreSession(&'a [u8]),
}

/// Length of the base64url (unpadded) encoding of `n` bytes.
pub(crate) const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

fn random_error<E>(_: E) -> CsrfError {
    CsrfError::new(CsrfErrorKind::Random)
}

/// Masks `raw` with a fresh one-time pad: `base64url(pad || raw ^ pad)`.
pub(crate) fn mask(raw: &[u8]) -> Result<String, CsrfError> {
    let mut out = vec![0u8; raw.len() * 2];
    let (pad, masked) = out.split_at_mut(raw.len());
    fill_random(pad).map_err(random_error)?;
    for ((m, r), p) in masked.iter_mut().zip(raw).zip(pad.iter()) {
        *m = r ^ p;
    }
    Ok(URL_SAFE_NO_PAD.encode(&out))
}

/// Strictly decodes and unmasks a token whose raw form has `N` bytes.
///
/// The length is checked before anything else, then the alphabet, then the
/// canonical encoding; any failure is [`CsrfErrorKind::Malformed`].
pub(crate) fn unmask<const N: usize>(token: &[u8]) -> Result<[u8; N], CsrfError> {
    let malformed = || CsrfError::new(CsrfErrorKind::Malformed);
    if token.len() != encoded_len(2 * N) || !token.iter().all(|&b| is_base64url(b)) {
        return Err(malformed());
    }
    let mut buf = vec![0u8; 2 * N + 3];
    let n = URL_SAFE_NO_PAD
        .decode_slice(token, &mut buf)
        .map_err(|_| malformed())?;
    if n != 2 * N {
        return Err(malformed());
    }
    let (pad, masked) = buf[..n].split_at(N);
    let mut raw = [0u8; N];
    for ((r, m), p) in raw.iter_mut().zip(masked).zip(pad) {
        *r = m ^ p;
    }
    Ok(raw)
}

/// Constant-time equality of two secrets of the same length.
#[cfg_attr(not(feature = "session"), allow(dead_code))]
pub(crate) fn same(a: &[u8; PART], b: &[u8; PART]) -> bool {
    a.ct_eq(b).into()
}

type HmacSha256 = Hmac<Sha256>;

/// A signing key with its HMAC state prepared once (the inner and outer
/// pads are hashed when the layer is built, not per request). `Debug`
/// prints `REDACTED`.
#[derive(Clone)]
pub(crate) struct MacKey(HmacSha256);

impl MacKey {
    /// `None` only if HMAC refused the key, which it never does.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        HmacSha256::new_from_slice(key).ok().map(Self)
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("REDACTED")
    }
}

fn mac(key: &MacKey, bound: Bound<'_>, nonce: &[u8]) -> [u8; PART] {
    let (tag, binding) = match bound {
        Bound::Session(b) => (b's', b),
        Bound::PreSession(b) => (b'p', b),
    };
    let mut m = key.0.clone();
    m.update(CONTEXT);
    m.update(&[tag]);
    m.update(
        &u64::try_from(binding.len())
            .unwrap_or(u64::MAX)
            .to_be_bytes(),
    );
    m.update(binding);
    m.update(nonce);
    m.finalize().into_bytes().into()
}

/// A fresh raw signed token: `nonce || MAC`.
pub(crate) fn sign(key: &MacKey, bound: Bound<'_>) -> Result<[u8; SIGNED_RAW], CsrfError> {
    let mut raw = [0u8; SIGNED_RAW];
    let (nonce, tag) = raw.split_at_mut(PART);
    fill_random(nonce).map_err(random_error)?;
    tag.copy_from_slice(&mac(key, bound, nonce));
    Ok(raw)
}

/// Whether `raw` carries a MAC by any of `keys` over `bound`. Every key is
/// tried (no early exit), each comparison in constant time.
pub(crate) fn verify_signed<'k>(
    keys: impl IntoIterator<Item = &'k MacKey>,
    bound: Bound<'_>,
    raw: &[u8; SIGNED_RAW],
) -> bool {
    let (nonce, tag) = raw.split_at(PART);
    let mut ok = Choice::from(0);
    for key in keys {
        ok |= mac(key, bound, nonce).ct_eq(tag);
    }
    ok.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MacKey {
        MacKey::new(&[b; 32]).unwrap()
    }

    #[test]
    fn encoded_lengths() {
        assert_eq!(encoded_len(2 * SESSION_RAW), 86);
        assert_eq!(encoded_len(2 * SIGNED_RAW), 171);
        let t = mask(&[1; SESSION_RAW]).unwrap();
        assert_eq!(t.len(), 86);
        let t = mask(&[1; SIGNED_RAW]).unwrap();
        assert_eq!(t.len(), 171);
    }

    #[test]
    fn masking_differs_every_time_and_round_trips() {
        let secret = [42u8; SESSION_RAW];
        let a = mask(&secret).unwrap();
        let b = mask(&secret).unwrap();
        assert_ne!(a, b, "a fresh pad per rendering");
        assert_eq!(unmask::<SESSION_RAW>(a.as_bytes()).unwrap(), secret);
        assert_eq!(unmask::<SESSION_RAW>(b.as_bytes()).unwrap(), secret);
    }

    /// A token with a known pad, so the table is deterministic.
    fn fixed(secret: &[u8; SESSION_RAW], pad: u8) -> String {
        let mut out = vec![pad; 2 * SESSION_RAW];
        for (m, s) in out[SESSION_RAW..].iter_mut().zip(secret) {
            *m ^= s;
        }
        URL_SAFE_NO_PAD.encode(out)
    }

    #[test]
    fn unmask_table() {
        let secret = [9u8; SESSION_RAW];
        let good = fixed(&secret, 1);
        let other = fixed(&[10u8; SESSION_RAW], 1);
        let mut altered = good.clone().into_bytes();
        altered[60] = if altered[60] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let mut plus = good.clone().into_bytes();
        plus[10] = b'+';
        let plus = String::from_utf8(plus).unwrap();
        // (input, Ok(unmasks to the secret?) or Err(kind))
        let cases: Vec<(String, Result<bool, CsrfErrorKind>)> = vec![
            (good.clone(), Ok(true)),
            (other, Ok(false)),
            (altered, Ok(false)),
            (String::new(), Err(CsrfErrorKind::Malformed)),
            (good[..85].to_owned(), Err(CsrfErrorKind::Malformed)),
            (good[..43].to_owned(), Err(CsrfErrorKind::Malformed)),
            (format!("{good}A"), Err(CsrfErrorKind::Malformed)),
            (
                URL_SAFE_NO_PAD.encode(secret),
                Err(CsrfErrorKind::Malformed),
            ),
            (format!("{}=", &good[..85]), Err(CsrfErrorKind::Malformed)),
            (plus, Err(CsrfErrorKind::Malformed)),
            (format!(" {}", &good[1..]), Err(CsrfErrorKind::Malformed)),
            ("é".repeat(43), Err(CsrfErrorKind::Malformed)),
        ];
        for (input, want) in cases {
            let got = unmask::<SESSION_RAW>(input.as_bytes())
                .map(|raw| same(&raw, &secret))
                .map_err(|e| e.kind());
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_refused() {
        let good = mask(&[0u8; SESSION_RAW]).unwrap();
        // 64 bytes encode to 86 chars; the last one carries 4 unused bits,
        // so a canonical encoding ends in A, Q, g or w.
        let flipped = match good.as_bytes()[85] {
            b'A' => b'B',
            b'Q' => b'R',
            b'g' => b'h',
            b'w' => b'x',
            other => panic!("non-canonical encoder output {other}"),
        };
        let mut bad = good.into_bytes();
        bad[85] = flipped;
        assert_eq!(
            unmask::<SESSION_RAW>(&bad).unwrap_err().kind(),
            CsrfErrorKind::Malformed
        );
    }

    #[test]
    fn signed_tokens_bind_to_key_and_binding() {
        let raw = sign(&key(7), Bound::Session(b"session-a")).unwrap();
        assert!(verify_signed([&key(7)], Bound::Session(b"session-a"), &raw));
        assert!(!verify_signed(
            [&key(7)],
            Bound::Session(b"session-b"),
            &raw
        ));
        assert!(!verify_signed(
            [&key(7)],
            Bound::PreSession(b"session-a"),
            &raw
        ));
        assert!(!verify_signed(
            [&key(8)],
            Bound::Session(b"session-a"),
            &raw
        ));
        // Rotation: an older key still verifies.
        assert!(verify_signed(
            [&key(8), &key(7)],
            Bound::Session(b"session-a"),
            &raw
        ));
        let mut altered = raw;
        altered[0] ^= 1;
        assert!(!verify_signed(
            [&key(7)],
            Bound::Session(b"session-a"),
            &altered
        ));
        // Length prefix: ("ab", nonce) never collides with ("a", "b"||nonce).
        assert_ne!(
            mac(&key(7), Bound::Session(b"ab"), &[0; 32]),
            mac(&key(7), Bound::Session(b"a"), &[b'b'; 32])
        );
    }
}
