//! Keys: each pinned to one algorithm, from secrets, PEM, DER or JWK.
//!
//! (About 600 lines: verifying and signing keys share the strength and
//! fit checks, RSA size, ROCA, curves, that live here once.)
//!
//! ```
//! use portcullis_jwt::{Algorithm, KeySet, VerifyingKey};
//!
//! let key = VerifyingKey::hmac(Some("k1"), Algorithm::HS256, b"a secret of at least thirty-two bytes!!").unwrap();
//! let keys = KeySet::new([key]).unwrap();
//! assert!(VerifyingKey::hmac(None, Algorithm::HS256, b"too short").is_err());
//! # let _ = keys;
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::alg::{Algorithm, KeyFamily};
use crate::kid::{KidError, check_kid};

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than the hash output.
    #[error("{alg} needs a secret of at least {min} bytes, got {got}")]
    SecretTooShort {
        /// The algorithm.
        alg: Algorithm,
        /// Its minimum.
        min: usize,
        /// The secret's length.
        got: usize,
    },
    /// The key material does not parse.
    #[error("the key does not parse: {0}")]
    Parse(String),
    /// The key is of another family or curve than the algorithm needs.
    #[error("the key does not fit algorithm {0}")]
    WrongFamily(Algorithm),
    /// An RSA modulus below 2048 bits.
    #[error("RSA keys must have at least 2048 bits")]
    RsaTooSmall,
    /// An RSA modulus from the flawed Infineon generator (ROCA,
    /// CVE-2017-15361): its private key can be computed from it.
    #[error("the RSA key has the ROCA weakness (CVE-2017-15361)")]
    RsaRoca,
    /// A JWK that says it is not for verifying signatures (`use`, `key_ops`),
    /// names an algorithm we do not verify, or leaves the algorithm
    /// ambiguous.
    #[error("the JWK cannot be used to verify signatures: {0}")]
    JwkNotForVerification(&'static str),
    /// A symmetric key offered where only public keys are acceptable (a
    /// JWKS).
    #[error("symmetric keys are not accepted from a JWKS")]
    SymmetricInJwks,
    /// A JWKS entry that publishes private key material (`d`, or an RSA
    /// private parameter): the key is leaked, so the document is refused.
    #[error("a JWKS must not publish private key material")]
    PrivateInJwks,
    /// A signing key's `kid` that is empty, too long or not visible ASCII.
    #[error("invalid kid: {0}")]
    InvalidKid(#[from] KidError),
    /// Two keys with the same `kid`.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
    /// Several keys, one without a `kid`.
    #[error("every key of a set with several keys needs a kid")]
    MissingKid,
    /// An empty key set.
    #[error("a key set needs at least one key")]
    Empty,
    /// The OS random source failed while generating a key.
    #[error("key generation failed")]
    Generate,
}

/// A key that verifies signatures of exactly one algorithm.
///
/// `Debug` never shows key material.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    public_jwk: Option<Jwk>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn pem_wrap(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

fn parse_err(e: impl fmt::Display) -> KeyError {
    KeyError::Parse(e.to_string())
}

/// Checks that a public key fits `alg` (family, curve, RSA size) and
/// returns its public JWK.
fn check_public(key: &DecodingKey, alg: Algorithm) -> Result<Jwk, KeyError> {
    let jwk = Jwk::from_decoding_key(key, Some(alg.to_jsonwebtoken())).map_err(parse_err)?;
    match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(p), KeyFamily::Rsa) => {
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&p.n)
                .map_err(parse_err)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(KeyError::RsaTooSmall);
            }
            if has_roca_fingerprint(&n) {
                return Err(KeyError::RsaRoca);
            }
            // An even exponent is no RSA key, and with e = 1 every encoded
            // hash is its own signature.
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&p.e)
                .map_err(parse_err)?;
            let e: Vec<u8> = e.into_iter().skip_while(|b| *b == 0).collect();
            if e.last().is_none_or(|b| b % 2 == 0) || e == [1] {
                return Err(KeyError::Parse(
                    "the RSA public exponent must be odd and at least 3".into(),
                ));
            }
        }
        (AlgorithmParameters::EllipticCurve(p), KeyFamily::Ec) => {
            let want = if alg == Algorithm::ES256 {
                EllipticCurve::P256
            } else {
                EllipticCurve::P384
            };
            if p.curve != want {
                return Err(KeyError::WrongFamily(alg));
            }
        }
        (AlgorithmParameters::OctetKeyPair(p), KeyFamily::Ed)
            if p.curve == EllipticCurve::Ed25519 => {}
        _ => return Err(KeyError::WrongFamily(alg)),
    }
    Ok(jwk)
}

/// Whether an RSA modulus has the fingerprint of Infineon's flawed key
/// generator (ROCA, CVE-2017-15361): such moduli are `k * M + (65537^a mod M)`
/// with `M` a product of the first small primes, so `n mod p` lies in the
/// subgroup generated by 65537 for every one of them. A random modulus
/// passes all 38 checks with negligible probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let r = n.iter().fold(0, |acc, &b| (acc * 256 + u32::from(b)) % p);
        let g = 65537 % p;
        // Walk the cyclic subgroup <g> of the units mod p.
        let mut x = 1;
        loop {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                return false;
            }
        }
    })
}

/// The curve an EC or OKP JWK must declare for `alg`.
const fn curve_of(alg: Algorithm) -> Option<EllipticCurve> {
    match alg {
        Algorithm::ES256 => Some(EllipticCurve::P256),
        Algorithm::ES384 => Some(EllipticCurve::P384),
        Algorithm::EdDSA => Some(EllipticCurve::Ed25519),
        _ => None,
    }
}

fn public_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, KeyError> {
    match alg.family() {
        KeyFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        KeyFamily::Ec => DecodingKey::from_ec_pem(pem),
        KeyFamily::Ed => DecodingKey::from_ed_pem(pem),
        KeyFamily::Hmac => return Err(KeyError::WrongFamily(alg)),
    }
    .map_err(parse_err)
}

impl VerifyingKey {
    /// An HMAC key. The secret must be at least as long as the hash output
    /// (32, 48 or 64 bytes).
    ///
    /// # Errors
    ///
    /// [`KeyError::SecretTooShort`], or [`KeyError::WrongFamily`] for a
    /// non-HMAC algorithm.
    pub fn hmac(kid: Option<&str>, alg: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        crate::ensure_crypto_provider();
        check_secret(alg, secret)?;
        Ok(Self {
            kid: kid.map(str::to_owned),
            alg,
            key: DecodingKey::from_secret(secret),
            public_jwk: None,
        })
    }

    /// A public key from PEM (`PUBLIC KEY`, or `RSA PUBLIC KEY` for RSA).
    ///
    /// # Errors
    ///
    /// The PEM does not parse or does not fit `alg`.
    pub fn from_pem(kid: Option<&str>, alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        crate::ensure_crypto_provider();
        let key = public_from_pem(alg, pem)?;
        let jwk = check_public(&key, alg)?;
        Ok(Self {
            kid: kid.map(str::to_owned),
            alg,
            key,
            public_jwk: Some(with_kid(jwk, kid, alg)),
        })
    }

    /// A public key from DER (SubjectPublicKeyInfo).
    ///
    /// # Errors
    ///
    /// The DER does not parse or does not fit `alg`.
    pub fn from_der(kid: Option<&str>, alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        Self::from_pem(kid, alg, &pem_wrap("PUBLIC KEY", der))
    }

    /// A public key from a JWK. The JWK's `alg` is honoured (and must be a
    /// signature algorithm we verify); without one, `default_alg` is used,
    /// or the curve decides for EC and OKP keys. A `use` other than `sig`,
    /// or `key_ops` without `verify`, makes the key unusable. Symmetric
    /// (`oct`) keys are accepted only when `allow_symmetric` is set.
    ///
    /// # Errors
    ///
    /// [`KeyError`] says why the JWK cannot be used.
    pub fn from_jwk(
        jwk: &Jwk,
        default_alg: Option<Algorithm>,
        allow_symmetric: bool,
    ) -> Result<Self, KeyError> {
        crate::ensure_crypto_provider();
        // A published secret is leaked whatever its `use`, `key_ops` or
        // `alg` say: refused before anything else is looked at.
        if holds_secret(&jwk.algorithm) && !allow_symmetric {
            return Err(KeyError::SymmetricInJwks);
        }
        if let Some(u) = &jwk.common.public_key_use {
            if *u != PublicKeyUse::Signature {
                return Err(KeyError::JwkNotForVerification("use is not sig"));
            }
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                return Err(KeyError::JwkNotForVerification("key_ops lacks verify"));
            }
        }
        let alg = match &jwk.common.key_algorithm {
            Some(a) => jwk_alg(*a).ok_or(KeyError::JwkNotForVerification(
                "alg is not a signature algorithm",
            ))?,
            None => match (&jwk.algorithm, default_alg) {
                (AlgorithmParameters::EllipticCurve(p), _) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                (AlgorithmParameters::EllipticCurve(p), _) if p.curve == EllipticCurve::P384 => {
                    Algorithm::ES384
                }
                (AlgorithmParameters::OctetKeyPair(p), _) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                (_, Some(a)) => a,
                _ => {
                    return Err(KeyError::JwkNotForVerification(
                        "no alg, and the key type does not fix one",
                    ));
                }
            },
        };
        let kid = jwk.common.key_id.as_deref();
        if let AlgorithmParameters::OctetKey(p) = &jwk.algorithm {
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&p.value)
                .map_err(parse_err)?;
            return Self::hmac(kid, alg, &secret);
        }
        if alg.family() == KeyFamily::Hmac {
            return Err(KeyError::WrongFamily(alg));
        }
        // The decoding key is built from the coordinates alone: the JWK's
        // declared curve must be the algorithm's, or the JWK contradicts
        // itself.
        let declared = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) => Some(&p.curve),
            AlgorithmParameters::OctetKeyPair(p) => Some(&p.curve),
            _ => None,
        };
        if declared.is_some_and(|c| Some(c) != curve_of(alg).as_ref()) {
            return Err(KeyError::WrongFamily(alg));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(parse_err)?;
        let public = check_public(&key, alg)?;
        Ok(Self {
            kid: kid.map(str::to_owned),
            alg,
            key,
            public_jwk: Some(with_kid(public, kid, alg)),
        })
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    #[must_use]
    pub const fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK (`None` for HMAC keys, which are never published).
    #[must_use]
    pub const fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }

    pub(crate) const fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

fn with_kid(mut jwk: Jwk, kid: Option<&str>, alg: Algorithm) -> Jwk {
    jwk.common.key_id = kid.map(str::to_owned);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(to_jwk_alg(alg));
    jwk
}

fn check_secret(alg: Algorithm, secret: &[u8]) -> Result<(), KeyError> {
    if alg.family() != KeyFamily::Hmac {
        return Err(KeyError::WrongFamily(alg));
    }
    if secret.len() < alg.min_secret_len() {
        return Err(KeyError::SecretTooShort {
            alg,
            min: alg.min_secret_len(),
            got: secret.len(),
        });
    }
    Ok(())
}

const fn jwk_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

const fn to_jwk_alg(a: Algorithm) -> KeyAlgorithm {
    match a {
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::HS384 => KeyAlgorithm::HS384,
        Algorithm::HS512 => KeyAlgorithm::HS512,
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
    }
}

/// A key that signs tokens with exactly one algorithm, and its verifying
/// half. `Debug` never shows key material.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.verifying.kid)
            .field("alg", &self.verifying.alg)
            .finish_non_exhaustive()
    }
}

/// Re-encodes an Ed25519 PKCS#8 key (v1 or v2) as v1 PEM.
fn ed25519_pkcs8_v1(pem: &[u8]) -> Result<Vec<u8>, KeyError> {
    let der = pem_body(pem)?;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(parse_err)?;
    let v1 = pair
        .to_pkcs8v1()
        .map_err(|_| KeyError::Parse("Ed25519 key cannot be re-encoded".into()))?;
    Ok(pem_wrap("PRIVATE KEY", v1.as_ref()))
}

/// Decodes the body of a PEM block (any label).
fn pem_body(pem: &[u8]) -> Result<Vec<u8>, KeyError> {
    let text = std::str::from_utf8(pem).map_err(parse_err)?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).map_err(parse_err)
}

impl SigningKey {
    /// An HMAC signing key named `kid` (the same secret verifies).
    ///
    /// ```
    /// use portcullis_jwt::{Algorithm, SigningKey};
    ///
    /// let key = SigningKey::hmac("k1", Algorithm::HS256, b"a secret of at least thirty-two bytes!!")?;
    /// assert_eq!(key.kid(), "k1");
    /// # Ok::<(), portcullis_jwt::KeyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKid`] (see [`KidError`]), or as
    /// [`VerifyingKey::hmac`].
    pub fn hmac(kid: &str, alg: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let verifying = VerifyingKey::hmac(Some(kid), alg, secret)?;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            verifying,
        })
    }

    /// A private key named `kid` from PKCS#8 PEM, used with `alg`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKid`], or the PEM does not parse or does not fit
    /// `alg`.
    pub fn from_pkcs8_pem(kid: &str, alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        crate::ensure_crypto_provider();
        let encoding = match alg.family() {
            KeyFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            KeyFamily::Ec => EncodingKey::from_ec_pem(pem),
            // jsonwebtoken reads Ed25519 keys as PKCS#8 v1; accept v2 too.
            KeyFamily::Ed => EncodingKey::from_ed_pem(&ed25519_pkcs8_v1(pem)?),
            KeyFamily::Hmac => return Err(KeyError::WrongFamily(alg)),
        }
        .map_err(parse_err)?;
        let jwk = Jwk::from_encoding_key(&encoding, alg.to_jsonwebtoken())
            .map_err(|_| KeyError::WrongFamily(alg))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(parse_err)?;
        let public = check_public(&decoding, alg)?;
        let verifying = VerifyingKey {
            kid: Some(kid.to_owned()),
            alg,
            key: decoding,
            public_jwk: Some(with_kid(public, Some(kid), alg)),
        };
        Ok(Self {
            encoding,
            verifying,
        })
    }

    /// A private key named `kid` from PKCS#8 PEM, its algorithm chosen by
    /// its type: RSA gives RS256, P-256 gives ES256, P-384 gives ES384,
    /// Ed25519 gives EdDSA.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKid`], or the PEM is not a PKCS#8 key of one of
    /// those types.
    pub fn from_pkcs8_pem_detect(kid: &str, pem: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
            Ed25519KeyPair, RsaKeyPair,
        };
        let der = pem_body(pem)?;
        let alg = if RsaKeyPair::from_pkcs8(&der).is_ok() {
            Algorithm::RS256
        } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok() {
            Algorithm::ES256
        } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der).is_ok() {
            Algorithm::ES384
        } else if Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).is_ok() {
            Algorithm::EdDSA
        } else {
            return Err(KeyError::Parse(
                "not a PKCS#8 RSA, P-256, P-384 or Ed25519 private key".into(),
            ));
        };
        Self::from_pkcs8_pem(kid, alg, pem)
    }

    /// A fresh key pair named `kid` for ES256, ES384 or EdDSA (RSA and HMAC
    /// keys are not generated here).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKid`]; [`KeyError::WrongFamily`] for other
    /// algorithms; [`KeyError::Generate`] when the random source fails.
    pub fn generate(kid: &str, alg: Algorithm) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let pem = generate_pkcs8_pem(alg)?;
        Self::from_pkcs8_pem(kid, alg, &pem)
    }

    /// The key id, which every token this key signs names in its header.
    #[must_use]
    pub fn kid(&self) -> &str {
        // Every constructor sets it.
        self.verifying.kid().unwrap_or_default()
    }

    /// The algorithm.
    #[must_use]
    pub const fn alg(&self) -> Algorithm {
        self.verifying.alg
    }

    /// The verifying half.
    #[must_use]
    pub const fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    pub(crate) const fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// PKCS#8 PEM of a fresh ES256, ES384 or EdDSA private key.
///
/// # Errors
///
/// [`KeyError::WrongFamily`] for other algorithms; [`KeyError::Generate`]
/// when the random source fails.
pub fn generate_pkcs8_pem(alg: Algorithm) -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair,
    };
    let rng = SystemRandom::new();
    let doc = match alg {
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        Algorithm::ES384 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng),
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
        _ => return Err(KeyError::WrongFamily(alg)),
    }
    .map_err(|_| KeyError::Generate)?;
    Ok(pem_wrap("PRIVATE KEY", doc.as_ref()))
}

/// Whether a JWK carries a shared secret: a well-formed `oct` key, or an
/// entry the JWK parser could not type (an extra or repeated member sends
/// it to `Other`) whose `kty` says `oct` or that has a `k` member. Either
/// way the secret is published, so the whole JWKS is refused; an `Other`
/// entry is never a usable key in any case.
fn holds_secret(params: &AlgorithmParameters) -> bool {
    match params {
        AlgorithmParameters::OctetKey(_) => true,
        AlgorithmParameters::Other(other) => {
            other.fields.contains_key("k")
                || other
                    .fields
                    .get("kty")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("oct"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published JWKS holding a shared secret is refused whatever the
    /// secret's `alg`, `use` or `key_ops` say (found by the `jwks` fuzz
    /// target; fuzz/regressions/jwks/).
    #[test]
    fn a_jwks_holding_a_secret_is_refused_whatever_its_alg() {
        use crate::jwks::{JwksError, key_set_from_json};
        let ec = r#"{"kty":"EC","crv":"P-256","kid":"ec","use":"sig",
            "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
            "y":"UI8exy-C06a7dUnjIdENkxeFtHM4-l_41LqEw9nVgmw"}"#;
        let k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        for secret in [
            format!(r#"{{"kty":"oct","kid":"s","k":"{k}"}}"#),
            format!(r#"{{"kty":"oct","kid":"s","k":"{k}","alg":"HS196"}}"#),
            format!(r#"{{"kty":"oct","kid":"s","k":"{k}","use":"sig","alg":"none"}}"#),
            format!(r#"{{"kty":"oct","kid":"s","k":"{k}","use":"enc"}}"#),
            format!(r#"{{"kty":"oct","kid":"s","k":"{k}","alg":"HS256"}}"#),
            // A repeated or an extra member makes the JWK parser give up on
            // the entry's type; the secret is published all the same.
            format!(r#"{{"kty":"oct","kid":"s","k":"{k}","k":"{k}"}}"#),
            format!(r#"{{"kty":"oct","kty":"oct","k":"{k}"}}"#),
            format!(r#"{{"kty":"oct","k":"{k}","crv":"P-256"}}"#),
            format!(r#"{{"kty":"OCT","k":"{k}"}}"#),
            format!(r#"{{"kty":"EC","crv":"P-256","k":"{k}","x":"x","y":"y"}}"#),
        ] {
            let doc = format!(r#"{{"keys":[{secret},{ec}]}}"#);
            let got = key_set_from_json(doc.as_bytes(), None);
            assert!(
                matches!(got, Err(JwksError::Key(KeyError::SymmetricInJwks))),
                "{secret}: {:?}",
                got.map(|s| s.len())
            );
        }
    }

    /// A JWKS entry that publishes a private key (an EC key with `d`, an
    /// RSA key with its primes) is refused, though the typed JWK parser
    /// drops those members and would read a valid public key.
    #[test]
    fn a_jwks_publishing_a_private_key_is_refused() {
        use crate::jwks::{JwksError, key_set_from_json};
        let ec = r#""kty":"EC","crv":"P-256","use":"sig",
            "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
            "y":"UI8exy-C06a7dUnjIdENkxeFtHM4-l_41LqEw9nVgmw""#;
        let public = format!(r#"{{"keys":[{{"kid":"a",{ec}}}]}}"#);
        assert_eq!(key_set_from_json(public.as_bytes(), None).unwrap().len(), 1);
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
            let doc = format!(r#"{{"keys":[{{"kid":"a",{ec},"{member}":"AAAA"}}]}}"#);
            let got = key_set_from_json(doc.as_bytes(), None);
            assert!(
                matches!(got, Err(JwksError::Key(KeyError::PrivateInJwks))),
                "{member}: {:?}",
                got.map(|s| s.len())
            );
        }
    }

    #[test]
    fn hmac_minimum_lengths() {
        for (alg, min) in [
            (Algorithm::HS256, 32),
            (Algorithm::HS384, 48),
            (Algorithm::HS512, 64),
        ] {
            assert!(VerifyingKey::hmac(None, alg, &vec![1; min]).is_ok());
            assert_eq!(
                VerifyingKey::hmac(None, alg, &vec![1; min - 1]).unwrap_err(),
                KeyError::SecretTooShort {
                    alg,
                    min,
                    got: min - 1
                }
            );
        }
        assert!(VerifyingKey::hmac(None, Algorithm::RS256, &[1; 64]).is_err());
    }

    #[test]
    fn generated_keys_fit_their_algorithm_only() {
        for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
            let pem = generate_pkcs8_pem(alg).unwrap();
            let key = SigningKey::from_pkcs8_pem_detect("k", &pem).unwrap();
            assert_eq!(key.alg(), alg);
            assert!(key.verifying_key().public_jwk().is_some());
        }
        let p256 = generate_pkcs8_pem(Algorithm::ES256).unwrap();
        assert!(
            SigningKey::from_pkcs8_pem("k", Algorithm::ES384, &p256).is_err(),
            "curve mismatch"
        );
        assert!(
            SigningKey::from_pkcs8_pem("k", Algorithm::RS256, &p256).is_err(),
            "family mismatch"
        );
    }

    #[test]
    fn every_signing_constructor_checks_the_kid() {
        let pem = generate_pkcs8_pem(Algorithm::ES256).unwrap();
        let spaced = KeyError::InvalidKid(KidError::NotPrintable { at: 3 });
        for (got, want) in [
            (
                SigningKey::hmac("", Algorithm::HS256, &[1; 32]).unwrap_err(),
                KeyError::InvalidKid(KidError::Empty),
            ),
            (
                SigningKey::from_pkcs8_pem("key 1", Algorithm::ES256, &pem).unwrap_err(),
                spaced.clone(),
            ),
            (
                SigningKey::from_pkcs8_pem_detect("key 1", &pem).unwrap_err(),
                spaced.clone(),
            ),
            (
                SigningKey::generate("key 1", Algorithm::ES256).unwrap_err(),
                spaced,
            ),
        ] {
            assert_eq!(got, want);
        }
        let key = SigningKey::from_pkcs8_pem("k1", Algorithm::ES256, &pem).unwrap();
        assert_eq!(key.kid(), "k1");
        assert_eq!(key.verifying_key().kid(), Some("k1"));
        let jwk = key.verifying_key().public_jwk().unwrap();
        assert_eq!(jwk.common.key_id.as_deref(), Some("k1"));
    }

    #[test]
    fn jwk_use_and_key_ops_honoured() {
        let key = SigningKey::generate("k", Algorithm::ES256).unwrap();
        let mut jwk = key.verifying_key().public_jwk().unwrap().clone();
        assert!(VerifyingKey::from_jwk(&jwk, None, false).is_ok());
        jwk.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(VerifyingKey::from_jwk(&jwk, None, false).is_err());
        jwk.common.public_key_use = None;
        jwk.common.key_operations = Some(vec![KeyOperations::Encrypt]);
        assert!(VerifyingKey::from_jwk(&jwk, None, false).is_err());
        jwk.common.key_operations = Some(vec![KeyOperations::Verify]);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RSA_OAEP);
        assert!(VerifyingKey::from_jwk(&jwk, None, false).is_err());
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES384);
        assert_eq!(
            VerifyingKey::from_jwk(&jwk, None, false).unwrap_err(),
            KeyError::WrongFamily(Algorithm::ES384)
        );
    }

    #[test]
    fn jwk_curve_must_fit_the_algorithm() {
        // Wycheproof json_web_key_test tcId 23: P-256 coordinates and
        // `alg: ES256`, but `crv: P-384`.
        let key = SigningKey::generate("k", Algorithm::ES256).unwrap();
        let mut jwk = key.verifying_key().public_jwk().unwrap().clone();
        let AlgorithmParameters::EllipticCurve(p) = &mut jwk.algorithm else {
            panic!("an EC JWK")
        };
        p.curve = EllipticCurve::P384;
        let err = VerifyingKey::from_jwk(&jwk, None, false).unwrap_err();
        assert_eq!(err, KeyError::WrongFamily(Algorithm::ES256));
        let ed = SigningKey::generate("e", Algorithm::EdDSA).unwrap();
        let mut jwk = ed.verifying_key().public_jwk().unwrap().clone();
        assert!(VerifyingKey::from_jwk(&jwk, None, false).is_ok());
        let AlgorithmParameters::OctetKeyPair(p) = &mut jwk.algorithm else {
            panic!("an OKP JWK")
        };
        p.curve = EllipticCurve::P256;
        let err = VerifyingKey::from_jwk(&jwk, None, false).unwrap_err();
        assert_eq!(err, KeyError::WrongFamily(Algorithm::EdDSA));
    }

    fn rsa_jwk(n: &str, e: &str) -> Jwk {
        serde_json::from_value(serde_json::json!({ "kty": "RSA", "alg": "RS256", "n": n, "e": e }))
            .unwrap()
    }

    #[test]
    fn roca_moduli_refused() {
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        // The ROCA modulus of Wycheproof json_web_key_test tcId 7.
        let roca = concat!(
            "AanFpofbj7KjD4Lf-N2hVMKR7yewSyXhhbirIMTGpfYEhZ_lnt5UoK98DnKIgArXGTu3MaW_HhFw16HGaTDUHqPrId7fe4r11CqRw09y",
            "BFuW79V8sYIwHdzCaWflUI6auImYbVfoN9_nD5n8N8SY9DwXw7mwZM9wREPXoDPgOoIWl6q_MPsp7n0zs3Z5ZaiQWOOzl1S9OhwAfSii",
            "Owz6efnXEaxuTEtPd7BjSx7NaFka8Dx9U7YqXy2RFj1O9PjyaDGuRh7YXsX3iMUSP_wSyHQg_c_qHRtKUsNSGCT7OZg0hzm2KphtjnayK",
            "JvC64vAbROBR4Ubg6Bxg9IQVZ-QYyE",
        );
        assert!(has_roca_fingerprint(&b64(roca)));
        let err = VerifyingKey::from_jwk(&rsa_jwk(roca, "AQAB"), None, false).unwrap_err();
        assert_eq!(err, KeyError::RsaRoca);
        // Ordinary moduli (RFC 7520's, Wycheproof's RS256 key) pass.
        for n in [
            concat!(
                "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFK",
                "rKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD",
                "5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig",
                "3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",
            ),
            WYCHEPROOF_RS256_N,
        ] {
            assert!(!has_roca_fingerprint(&b64(n)));
            assert!(VerifyingKey::from_jwk(&rsa_jwk(n, "AQAB"), None, false).is_ok());
        }
    }

    const WYCHEPROOF_RS256_N: &str = concat!(
        "kqGboBfAWttWPCA-0cGRgsY6SaYoIARt0B_PkaEcIq9HPYNdu9n6UuWHuuTHrjF_ZoQW97r5HaAorNvrMEGTGdxCHZdEtkHvNVVmrtxTBLi",
        "QCbCozXhFoIrVcr3qUBrdGnNn_M3jJi7Wg7p_-x62nS5gNG875oyheRkutHsQXikFZwsN3q_TsPNOVlCiHy8mxzaFTUQGm-X8UYexFyAivl",
        "DSjgDJLAZSWfxd7k9Gxuwa3AUfQqQcVcegmgKGCaErQ3qQbh1x7WB6iopE3_-GZ8HMAVtR9AmrVscqYsnjhaCehfAI0iKKs8zXr8tISc0OR",
        "baalrkk03H1ZrsEnDKEWQ",
    );

    #[test]
    fn rsa_exponent_must_be_odd_and_above_one() {
        // Wycheproof json_web_key_test tcId 9 pairs a 2048-bit modulus with
        // e = 1.
        for (e, ok) in [
            ("AQ", false),
            ("Ag", false),
            ("AAE", false),
            ("Aw", true),
            ("AQAB", true),
        ] {
            let got = VerifyingKey::from_jwk(&rsa_jwk(WYCHEPROOF_RS256_N, e), None, false);
            assert_eq!(got.is_ok(), ok, "e = {e}");
        }
    }
}
