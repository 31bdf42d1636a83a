//! JWKS documents: from JSON or a file (and from a URL with the
//! `jwks-remote` feature).

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;

use crate::alg::Algorithm;
use crate::key::{KeyError, KeySet, VerifyingKey};

/// Why a JWKS document could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Json(String),
    /// The file cannot be read.
    #[error("cannot read the JWKS file: {0}")]
    Io(#[from] std::io::Error),
    /// No usable signature key in the document.
    #[error("the JWKS holds no usable signature key")]
    NoUsableKey,
    /// A key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The URL is not HTTPS (only loopback may use plain HTTP).
    #[error("JWKS URLs must be https (plain http only for loopback)")]
    InsecureUrl,
    /// Fetching failed.
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
}

/// Parses a JWKS document into a key set. Keys that cannot verify
/// signatures (encryption keys, unsupported algorithms, RSA keys without
/// `alg` when `default_rsa_alg` is `None`) are skipped; symmetric keys are
/// refused outright (a published JWKS must never hold a shared secret).
///
/// # Errors
///
/// [`JwksError`] when the document does not parse, holds a symmetric key,
/// or holds no usable key.
pub fn key_set_from_json(json: &[u8], default_rsa_alg: Option<Algorithm>) -> Result<KeySet, JwksError> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        match VerifyingKey::from_jwk(jwk, default_rsa_alg, false) {
            Ok(k) => keys.push(k),
            Err(KeyError::SymmetricInJwks) => return Err(KeyError::SymmetricInJwks.into()),
            Err(_) => {}
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(KeySet::new(keys)?)
}

/// Reads a JWKS document from a file.
///
/// # Errors
///
/// As [`key_set_from_json`], plus I/O errors.
pub fn key_set_from_file(path: impl AsRef<Path>, default_rsa_alg: Option<Algorithm>) -> Result<KeySet, JwksError> {
    let bytes = std::fs::read(path)?;
    key_set_from_json(&bytes, default_rsa_alg)
}
