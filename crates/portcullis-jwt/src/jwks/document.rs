//! JWKS documents read from JSON or a file, and the rules for fetching
//! one (allowed URLs, `Cache-Control: max-age`).

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;

use crate::alg::Algorithm;
use crate::key::{KeyError, VerifyingKey};
use crate::keys::KeySet;

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
/// `alg` when `default_rsa_alg` is `None`) are skipped; a document holding
/// a symmetric key or any private key material is refused outright (a
/// published JWKS must never hold a secret: the key is leaked, not
/// trusted).
///
/// # Errors
///
/// [`JwksError`] when the document does not parse, holds a symmetric key
/// or private key material, or holds no usable key.
pub fn key_set_from_json(
    json: &[u8],
    default_rsa_alg: Option<Algorithm>,
) -> Result<KeySet, JwksError> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
    // The typed parse drops members it does not know and, on a repeated or
    // extra member, may give up on an entry's type; the document as plain
    // JSON (where the last of a repeated member wins) is checked as well,
    // so no reading of it publishes a secret we accept.
    let raw: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
    let entries = raw.get("keys").and_then(serde_json::Value::as_array);
    for entry in entries.into_iter().flatten() {
        published_private_material(entry)?;
    }
    let mut keys = Vec::new();
    for jwk in &set.keys {
        match VerifyingKey::from_jwk(jwk, default_rsa_alg, false) {
            Ok(k) => keys.push(k),
            Err(e @ KeyError::SymmetricInJwks) => return Err(e.into()),
            Err(_) => {}
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(KeySet::new(keys)?)
}

/// The members of a JWK that only a key's holder may know (RFC 7518
/// section 6): `k` of a shared secret, `d` of an EC or OKP private key, and
/// the RSA private exponent and CRT parameters.
const PRIVATE_MEMBERS: [&str; 8] = ["k", "d", "p", "q", "dp", "dq", "qi", "oth"];

/// Refuses a JWKS entry that publishes a secret or a private key: a leaked
/// key must not become a trusted one, whatever else the entry says.
fn published_private_material(entry: &serde_json::Value) -> Result<(), KeyError> {
    let says_oct = entry
        .get("kty")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("oct"));
    if says_oct || entry.get("k").is_some() {
        return Err(KeyError::SymmetricInJwks);
    }
    if PRIVATE_MEMBERS.iter().any(|m| entry.get(m).is_some()) {
        return Err(KeyError::PrivateInJwks);
    }
    Ok(())
}

/// Reads a JWKS document from a file.
///
/// # Errors
///
/// As [`key_set_from_json`], plus I/O errors.
pub fn key_set_from_file(
    path: impl AsRef<Path>,
    default_rsa_alg: Option<Algorithm>,
) -> Result<KeySet, JwksError> {
    let bytes = std::fs::read(path)?;
    key_set_from_json(&bytes, default_rsa_alg)
}

/// Whether `url` may be fetched: `https`, or `http` to a loopback host.
///
/// ```
/// use portcullis_jwt::jwks::url_allowed;
///
/// assert!(url_allowed("https://auth.example.com/.well-known/jwks.json"));
/// assert!(url_allowed("http://127.0.0.1:8080/jwks"));
/// assert!(url_allowed("http://localhost/jwks"));
/// assert!(!url_allowed("http://auth.example.com/jwks"));
/// assert!(!url_allowed("ftp://127.0.0.1/jwks"));
/// ```
#[must_use]
pub fn url_allowed(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else { return false };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache` give 0).
#[must_use]
pub fn cache_control_max_age(value: &str) -> Option<std::time::Duration> {
    let mut max_age = None;
    for directive in value.split(',') {
        let d = directive.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(std::time::Duration::ZERO);
        }
        if let Some((k, v)) = d.split_once('=') {
            if k.trim().eq_ignore_ascii_case("max-age") {
                max_age = v
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(std::time::Duration::from_secs);
            }
        }
    }
    max_age
}
