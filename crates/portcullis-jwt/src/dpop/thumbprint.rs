//! RFC 7638 JWK thumbprints, computed from the canonical members only.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Why a JWK has no thumbprint here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the JWK is not a well-formed EC, RSA or OKP public key")]
pub struct ThumbprintError;

/// The RFC 7638 SHA-256 thumbprint (base64url, no padding) of a public
/// JWK, for binding tokens to a key (`cnf.jkt`, RFC 9449 §6.1).
///
/// Only the required members count (EC: `crv`, `kty`, `x`, `y`; RSA: `e`,
/// `kty`, `n`; OKP: `crv`, `kty`, `x`), and each must be canonical
/// base64url of the right length for its curve (RSA: no leading zero
/// byte), so one key has exactly one thumbprint.
///
/// ```
/// use portcullis_jwt::dpop::thumbprint;
/// use portcullis_jwt::jwk::Jwk;
///
/// // RFC 7638 §3.1.
/// let jwk: Jwk = serde_json::from_str(r#"{"kty":"RSA","e":"AQAB","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#).unwrap();
/// assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
/// ```
///
/// # Errors
///
/// [`ThumbprintError`] for an `oct` key, a private member, or a member
/// that is missing, not canonical base64url or of the wrong length.
pub fn thumbprint(jwk: &jsonwebtoken::jwk::Jwk) -> Result<String, ThumbprintError> {
    let value = serde_json::to_value(jwk).map_err(|_| ThumbprintError)?;
    let Value::Object(members) = value else {
        return Err(ThumbprintError);
    };
    thumbprint_members(&members)
}

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Whether a JWK object carries private or secret key material.
pub(crate) fn has_private_members(members: &Map<String, Value>) -> bool {
    PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m))
}

fn member<'a>(members: &'a Map<String, Value>, name: &str) -> Result<&'a str, ThumbprintError> {
    members
        .get(name)
        .and_then(Value::as_str)
        .ok_or(ThumbprintError)
}

/// The decoded length of a canonical base64url member (`None`: not
/// canonical base64url).
fn decoded(s: &str) -> Result<Vec<u8>, ThumbprintError> {
    crate::jws::b64(s).map_err(|_| ThumbprintError)
}

/// The thumbprint of a JWK given as its JSON members.
pub(crate) fn thumbprint_members(members: &Map<String, Value>) -> Result<String, ThumbprintError> {
    if has_private_members(members) {
        return Err(ThumbprintError);
    }
    let canonical = match member(members, "kty")? {
        "EC" => {
            let crv = member(members, "crv")?;
            let len = match crv {
                "P-256" => 32,
                "P-384" => 48,
                _ => return Err(ThumbprintError),
            };
            let (x, y) = (member(members, "x")?, member(members, "y")?);
            if decoded(x)?.len() != len || decoded(y)?.len() != len {
                return Err(ThumbprintError);
            }
            format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
        }
        "OKP" => {
            let crv = member(members, "crv")?;
            if crv != "Ed25519" {
                return Err(ThumbprintError);
            }
            let x = member(members, "x")?;
            if decoded(x)?.len() != 32 {
                return Err(ThumbprintError);
            }
            format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#)
        }
        "RSA" => {
            let (e, n) = (member(members, "e")?, member(members, "n")?);
            let (eb, nb) = (decoded(e)?, decoded(n)?);
            let minimal = |b: &[u8]| !b.is_empty() && b[0] != 0;
            if !minimal(&eb) || !minimal(&nb) {
                return Err(ThumbprintError);
            }
            format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#)
        }
        _ => return Err(ThumbprintError),
    };
    let hash = digest::digest(&digest::SHA256, canonical.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(hash.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn ec_thumbprint_ignores_extra_members_and_order() {
        let a = thumbprint_members(&members(&format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{X}","y":"{Y}"}}"#
        )))
        .unwrap();
        let b = thumbprint_members(&members(&format!(
            r#"{{"y":"{Y}","use":"sig","kid":"k","x":"{X}","crv":"P-256","kty":"EC","alg":"ES256"}}"#
        )))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn refusals() {
        let bad = [
            // Private material.
            format!(r#"{{"kty":"EC","crv":"P-256","x":"{X}","y":"{Y}","d":"AAAA"}}"#),
            // Secret key.
            r#"{"kty":"oct","k":"AAAA"}"#.to_owned(),
            // Non-canonical base64url (trailing bits) and padding.
            format!(
                r#"{{"kty":"EC","crv":"P-256","x":"{}F","y":"{Y}"}}"#,
                &X[..42]
            ),
            format!(r#"{{"kty":"EC","crv":"P-256","x":"{X}=","y":"{Y}"}}"#),
            // Wrong length for the curve.
            format!(r#"{{"kty":"EC","crv":"P-384","x":"{X}","y":"{Y}"}}"#),
            // Unknown curve, missing member.
            format!(r#"{{"kty":"EC","crv":"P-521","x":"{X}","y":"{Y}"}}"#),
            format!(r#"{{"kty":"EC","crv":"P-256","x":"{X}"}}"#),
            // RSA with a leading zero byte.
            r#"{"kty":"RSA","e":"AQAB","n":"AAEC"}"#.to_owned(),
            r#"{"kty":"RSA","e":"AQAB","n":"AQAB","p":"AQAB"}"#.to_owned(),
            // An OKP key on an X25519 curve.
            format!(r#"{{"kty":"OKP","crv":"X25519","x":"{X}"}}"#),
        ];
        for json in bad {
            assert_eq!(
                thumbprint_members(&members(&json)),
                Err(ThumbprintError),
                "{json}"
            );
        }
    }
}
