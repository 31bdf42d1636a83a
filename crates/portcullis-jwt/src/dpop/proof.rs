//! Reading a proof: the JWS rules of the house, the proof's own header
//! (`typ`, an asymmetric `alg`, a public `jwk`), its signature and its
//! claims. Everything here is synchronous; only the replay cache waits.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::signature::{self, ParsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::thumbprint::{has_private_members, thumbprint_members};
use super::{DpopError, DpopErrorKind};
use crate::alg::Algorithm;
use crate::json::check_object_str;
use crate::jws::{Header, SIGNATURE_STACK, Segments, b64, typ_matches, with_b64};
use crate::key::VerifyingKey;
use crate::prepared::check_signature;

/// The longest proof read: the house's token size limit.
pub(crate) const MAX_PROOF_LEN: usize = crate::validation::DEFAULT_MAX_TOKEN_LEN;

#[derive(Deserialize)]
struct RawProofHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    jwk: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "crate::claims::present")]
    crit: bool,
    #[serde(default, deserialize_with = "crate::claims::present")]
    b64: bool,
    #[serde(default, deserialize_with = "crate::claims::present")]
    cty: bool,
    // The key is the embedded `jwk` and nothing else.
    #[serde(default, deserialize_with = "crate::claims::present")]
    kid: bool,
    #[serde(default, deserialize_with = "crate::claims::present")]
    jku: bool,
    #[serde(default, deserialize_with = "crate::claims::present")]
    x5u: bool,
    #[serde(default, deserialize_with = "crate::claims::present")]
    x5c: bool,
}

/// A proof's header, checked, with its key: what every proof from one
/// client shares.
pub(crate) struct ProofKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: Arc<VerifyingKey>,
    pub(crate) jkt: Arc<str>,
    /// The EC or Ed25519 public key parsed once (its point validated), so
    /// a client's every proof is checked without parsing it again.
    parsed: Option<ParsedPublicKey>,
}

/// The public key of an EC (uncompressed point) or OKP JWK, parsed for
/// `alg`; `None` for RSA (verified through jsonwebtoken).
fn parse_public(alg: Algorithm, jwk: &Map<String, Value>) -> Option<ParsedPublicKey> {
    let member = |m: &str| jwk.get(m).and_then(Value::as_str).and_then(|v| b64(v).ok());
    let (verifier, raw): (&'static dyn signature::VerificationAlgorithm, Vec<u8>) = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let mut raw = vec![0x04];
            raw.extend(member("x")?);
            raw.extend(member("y")?);
            let v: &'static dyn signature::VerificationAlgorithm = if alg == Algorithm::ES256 {
                &signature::ECDSA_P256_SHA256_FIXED
            } else {
                &signature::ECDSA_P384_SHA384_FIXED
            };
            (v, raw)
        }
        Algorithm::EdDSA => (&signature::ED25519, member("x")?),
        _ => return None,
    };
    ParsedPublicKey::new(verifier, raw).ok()
}

fn fail(kind: DpopErrorKind) -> DpopError {
    DpopError::bare(kind)
}

/// A header `alg` name: the JWS names, plus RFC 9864's fully-specified
/// `Ed25519`, which is exactly this crate's `EdDSA` (Ed25519 is the only
/// EdDSA curve it verifies).
pub(crate) fn parse_alg(name: &str) -> Option<Algorithm> {
    match name {
        "Ed25519" => Some(Algorithm::EdDSA),
        other => Algorithm::parse(other),
    }
}

/// Parses and checks the protected header, and builds the key.
pub(crate) fn parse_header(
    seg: &Segments<'_>,
    allowed: &[Algorithm],
) -> Result<ProofKey, DpopError> {
    let malformed = || fail(DpopErrorKind::Malformed);
    let raw = b64(seg.header).map_err(|_| malformed())?;
    let text = std::str::from_utf8(&raw).map_err(|_| malformed())?;
    check_object_str(text).map_err(|()| malformed())?;
    let h: RawProofHeader<'_> = serde_json::from_str(text).map_err(|_| malformed())?;
    if !h
        .typ
        .as_deref()
        .is_some_and(|t| typ_matches(t, &["dpop+jwt".to_owned()]))
    {
        return Err(fail(DpopErrorKind::WrongType));
    }
    let alg = parse_alg(&h.alg)
        .filter(|a| a.is_asymmetric() && allowed.contains(a))
        .ok_or_else(|| fail(DpopErrorKind::UnsupportedAlg))?;
    if h.crit || h.b64 || h.cty || h.kid || h.jku || h.x5u || h.x5c {
        return Err(fail(DpopErrorKind::Malformed));
    }
    let mut jwk = h.jwk.ok_or_else(|| fail(DpopErrorKind::BadKey))?;
    if has_private_members(&jwk) {
        return Err(fail(DpopErrorKind::PrivateKey));
    }
    let jkt = thumbprint_members(&jwk).map_err(|_| fail(DpopErrorKind::BadKey))?;
    let parsed = parse_public(alg, &jwk);
    // A key's own `alg` must name the header's algorithm; it is then left
    // out (its spelling may be one the JWK parser does not know).
    if let Some(own) = jwk.remove("alg") {
        if own.as_str().and_then(parse_alg) != Some(alg) {
            return Err(fail(DpopErrorKind::BadKey));
        }
    }
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(Value::Object(jwk)).map_err(|_| fail(DpopErrorKind::BadKey))?;
    let key =
        VerifyingKey::from_jwk(&jwk, Some(alg), false).map_err(|_| fail(DpopErrorKind::BadKey))?;
    if key.alg() != alg {
        return Err(fail(DpopErrorKind::BadKey));
    }
    Ok(ProofKey {
        alg,
        key: Arc::new(key),
        jkt: Arc::from(jkt),
        parsed,
    })
}

/// Checked proof headers by their exact base64url segment: a client sends
/// the same header (its key) with every proof, so the key is parsed,
/// validated and hashed once. Only headers whose proof verified are kept;
/// bounded (emptied when full).
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<Box<str>, Arc<ProofKey>>>,
}

const MAX_CACHED_KEYS: usize = 1024;

impl KeyCache {
    pub(crate) fn get(&self, header: &str) -> Option<Arc<ProofKey>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(header).cloned()
    }

    pub(crate) fn insert(&self, header: &str, key: Arc<ProofKey>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_CACHED_KEYS {
            entries.clear();
        }
        entries.insert(header.into(), key);
    }
}

/// Verifies the signature with the proof's key.
pub(crate) fn check_proof_signature(seg: &Segments<'_>, key: &ProofKey) -> Result<(), DpopError> {
    if let Some(parsed) = &key.parsed {
        // Canonical base64url, as for every signature.
        let ok = with_b64::<SIGNATURE_STACK, _>(seg.signature, |sig| {
            Ok(parsed.verify_sig(seg.signed.as_bytes(), sig).is_ok())
        })
        .map_err(|_| fail(DpopErrorKind::BadSignature))?;
        return if ok {
            Ok(())
        } else {
            Err(fail(DpopErrorKind::BadSignature))
        };
    }
    let header = Header {
        alg: key.alg,
        kid: None,
    };
    check_signature(seg, &header, &key.key, None).map_err(|_| fail(DpopErrorKind::BadSignature))
}

/// The proof's claims (RFC 9449 §4.2).
#[derive(Deserialize)]
pub(crate) struct ProofClaims {
    #[serde(default)]
    pub(crate) jti: Option<String>,
    #[serde(default)]
    pub(crate) htm: Option<String>,
    #[serde(default)]
    pub(crate) htu: Option<String>,
    #[serde(default, deserialize_with = "crate::claims::numeric_date")]
    pub(crate) iat: Option<i64>,
    #[serde(default)]
    pub(crate) ath: Option<String>,
    #[serde(default)]
    pub(crate) nonce: Option<String>,
}

/// The longest `jti` accepted.
const MAX_JTI_LEN: usize = 256;

pub(crate) fn parse_claims(seg: &Segments<'_>) -> Result<ProofClaims, DpopError> {
    let malformed = || fail(DpopErrorKind::Malformed);
    let raw = b64(seg.payload).map_err(|_| malformed())?;
    let text = std::str::from_utf8(&raw).map_err(|_| malformed())?;
    check_object_str(text).map_err(|()| malformed())?;
    let claims: ProofClaims =
        serde_json::from_str(text).map_err(|_| fail(DpopErrorKind::MissingClaim))?;
    let jti_ok = claims
        .jti
        .as_ref()
        .is_some_and(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN);
    if !jti_ok || claims.htm.is_none() || claims.htu.is_none() || claims.iat.is_none() {
        return Err(fail(DpopErrorKind::MissingClaim));
    }
    Ok(claims)
}
