//! What a layer prepares once and reuses for every token (HMAC key
//! schedules, parsed headers), and the signature check that uses it, for
//! access tokens and DPoP proofs alike.

use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::hmac;

use crate::alg::Algorithm;
use crate::error::{JwtError, JwtErrorKind};
use crate::jws::{Header, SIGNATURE_STACK, Segments, err, parse_header, with_b64};
use crate::key::VerifyingKey;
use crate::validation::Validation;

/// HMAC keys with their key schedule computed once, per verifying key.
///
/// `jsonwebtoken::crypto::verify` builds a fresh HMAC key (two SHA-2 block
/// compressions and an allocation) on every call; a layer keeps the
/// prepared key of each HMAC verifying key it has seen instead. An entry
/// holds its `Arc<VerifyingKey>`, so a pointer match is the same key (the
/// allocation cannot be reused while the entry lives). Bounded: the oldest
/// entry goes when a rotation brings more keys than it holds.
#[derive(Default)]
pub(crate) struct HmacKeys {
    keys: RwLock<Vec<(Arc<VerifyingKey>, hmac::Key)>>,
}

const MAX_PREPARED_HMAC_KEYS: usize = 16;

impl HmacKeys {
    /// Verifies `tag` over `msg` with `key` in constant time; `None` when
    /// `key` is not an HMAC key.
    pub(crate) fn verify(&self, key: &Arc<VerifyingKey>, msg: &[u8], tag: &[u8]) -> Option<bool> {
        let alg = match key.alg() {
            Algorithm::HS256 => hmac::HMAC_SHA256,
            Algorithm::HS384 => hmac::HMAC_SHA384,
            Algorithm::HS512 => hmac::HMAC_SHA512,
            _ => return None,
        };
        {
            let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, k)) = keys.iter().find(|(v, _)| Arc::ptr_eq(v, key)) {
                return Some(hmac::verify(k, msg, tag).is_ok());
            }
        }
        let jsonwebtoken::DecodingKeyKind::SecretOrDer(secret) = key.decoding_key().kind() else {
            return None;
        };
        let prepared = hmac::Key::new(alg, secret);
        let ok = hmac::verify(&prepared, msg, tag).is_ok();
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if !keys.iter().any(|(v, _)| Arc::ptr_eq(v, key)) {
            if keys.len() >= MAX_PREPARED_HMAC_KEYS {
                keys.remove(0);
            }
            keys.push((Arc::clone(key), prepared));
        }
        Some(ok)
    }
}

/// Parsed protected headers by their exact base64url segment.
///
/// An issuer puts the same header on every token it mints, and what
/// [`parse_header`] returns is a function of the segment's bytes and of the
/// layer's fixed [`Validation`] alone; so a layer keeps the headers it has
/// already parsed successfully, compared byte for byte, and skips decoding
/// and parsing them again (two JSON passes). Refused headers are never
/// kept. Bounded: the oldest entry goes when it is full.
#[derive(Default)]
pub(crate) struct HeaderCache {
    entries: RwLock<Vec<(Box<str>, Header)>>,
}

const MAX_CACHED_HEADERS: usize = 16;

impl HeaderCache {
    pub(crate) fn parse(&self, seg: &Segments<'_>, v: &Validation) -> Result<Header, JwtError> {
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, h)) = entries.iter().find(|(s, _)| **s == *seg.header) {
                return Ok(h.clone());
            }
        }
        let header = parse_header(seg, v)?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if !entries.iter().any(|(s, _)| **s == *seg.header) {
            if entries.len() >= MAX_CACHED_HEADERS {
                entries.remove(0);
            }
            entries.push((seg.header.into(), header.clone()));
        }
        Ok(header)
    }
}

/// What a layer prepares once and reuses for every token: HMAC key
/// schedules and parsed headers.
#[derive(Default)]
pub(crate) struct Prepared {
    pub(crate) hmac: HmacKeys,
    pub(crate) headers: HeaderCache,
}

/// Signature check with the key the source gave; the token's `alg` must
/// equal the key's pinned algorithm. HMAC keys go through `prepared` when
/// given (same check, the key schedule computed once).
pub(crate) fn check_signature(
    seg: &Segments<'_>,
    header: &Header,
    key: &Arc<VerifyingKey>,
    prepared: Option<&HmacKeys>,
) -> Result<(), JwtError> {
    if key.alg() != header.alg {
        return Err(err(JwtErrorKind::AlgMismatch));
    }
    // Canonical base64url is checked here.
    let prepared_ok = with_b64::<SIGNATURE_STACK, _>(seg.signature, |tag| {
        Ok(prepared.and_then(|p| p.verify(key, seg.signed.as_bytes(), tag)))
    })?;
    if let Some(ok) = prepared_ok {
        return if ok {
            Ok(())
        } else {
            Err(err(JwtErrorKind::BadSignature))
        };
    }
    // jsonwebtoken decodes the signature again.
    match jsonwebtoken::crypto::verify(
        seg.signature,
        seg.signed.as_bytes(),
        key.decoding_key(),
        key.alg().to_jsonwebtoken(),
    ) {
        Ok(true) => Ok(()),
        _ => Err(err(JwtErrorKind::BadSignature)),
    }
}
