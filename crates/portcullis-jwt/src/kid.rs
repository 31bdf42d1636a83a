//! Key ids: the rule every signing key's `kid` follows, and why one was
//! refused.
//!
//! A signing key always has a `kid`: tokens name the key that signed them,
//! so a JWKS can carry the old and the new key while they rotate.
//!
//! ```
//! use portcullis_jwt::{Algorithm, KeyError, KidError, SigningKey};
//!
//! let secret = b"a secret of at least thirty-two bytes!!";
//! let key = SigningKey::hmac("k1", Algorithm::HS256, secret).unwrap();
//! assert_eq!(key.kid(), "k1");
//! assert_eq!(
//!     SigningKey::hmac("", Algorithm::HS256, secret).unwrap_err(),
//!     KeyError::InvalidKid(KidError::Empty)
//! );
//! ```

/// The longest `kid` a signing key takes, in bytes (a token whose header
/// names a longer one is refused as naming an unknown key).
pub const MAX_KID_LEN: usize = 256;

/// Why a key id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KidError {
    /// The key id is the empty string.
    #[error("the kid is empty")]
    Empty,
    /// The key id is longer than [`MAX_KID_LEN`] bytes.
    #[error("the kid is {got} bytes long, more than {max}")]
    TooLong {
        /// [`MAX_KID_LEN`].
        max: usize,
        /// The key id's length in bytes.
        got: usize,
    },
    /// The key id holds a byte other than visible ASCII (`!` to `~`):
    /// spaces, control characters and non-ASCII text are refused, so that
    /// two ids that look alike are alike.
    #[error("the kid has a character other than visible ASCII at byte {at}")]
    NotPrintable {
        /// The offset of the first such byte.
        at: usize,
    },
}

/// Checks a signing key's `kid`: non-empty, at most [`MAX_KID_LEN`] bytes,
/// visible ASCII only.
pub(crate) fn check_kid(kid: &str) -> Result<(), KidError> {
    if kid.is_empty() {
        return Err(KidError::Empty);
    }
    if kid.len() > MAX_KID_LEN {
        return Err(KidError::TooLong {
            max: MAX_KID_LEN,
            got: kid.len(),
        });
    }
    match kid.bytes().position(|b| !b.is_ascii_graphic()) {
        Some(at) => Err(KidError::NotPrintable { at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_checked() {
        let longest = "k".repeat(MAX_KID_LEN);
        let too_long = "k".repeat(MAX_KID_LEN + 1);
        let cases: [(&str, Result<(), KidError>); 11] = [
            ("k1", Ok(())),
            ("2024-06-rotation", Ok(())),
            ("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", Ok(())),
            ("~!#$%&'()*+,./:;<=>?@[]^_`{|}", Ok(())),
            (&longest, Ok(())),
            ("", Err(KidError::Empty)),
            (
                &too_long,
                Err(KidError::TooLong {
                    max: MAX_KID_LEN,
                    got: MAX_KID_LEN + 1,
                }),
            ),
            ("key 1", Err(KidError::NotPrintable { at: 3 })),
            (" k1", Err(KidError::NotPrintable { at: 0 })),
            ("k1\n", Err(KidError::NotPrintable { at: 2 })),
            ("clé", Err(KidError::NotPrintable { at: 2 })),
        ];
        for (kid, want) in cases {
            assert_eq!(check_kid(kid), want, "{kid:?}");
        }
    }
}
