//! JWKS documents (`key_set_from_json`), single JWKs
//! (`VerifyingKey::from_jwk`) and the two header parsers of the remote
//! JWKS client (`url_allowed`, `cache_control_max_age`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_jwt::jwk::{AlgorithmParameters, Jwk, JwkSet};
use portcullis_jwt::jwks::{JwksError, cache_control_max_age, key_set_from_json, url_allowed};
use portcullis_jwt::{Algorithm, KeyError, KeyFamily, VerifyingKey};
use serde_json::Value;

/// Whether a JWK is a shared secret (`kty: oct`), whatever its `use`,
/// `key_ops` or `alg`: a JWKS holding one is refused outright (a published
/// secret is leaked). fuzz/regressions/jwks/ holds documents that once got
/// through.
fn verification_secret(k: &Value) -> bool {
    // An entry that says `oct` or carries a private member (`k`, `d`, an
    // RSA prime...) publishes a secret,
    // whether or not the JWK parser can type it (a repeated or extra member
    // sends it to `Other`; fuzz/regressions/jwks/ has such documents).
    let says_oct = k
        .get("kty")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("oct"));
    says_oct
        || ["k", "d", "p", "q", "dp", "dq", "qi", "oth"]
            .iter()
            .any(|m| k.get(m).is_some())
        || serde_json::from_value::<Jwk>(k.clone())
            .is_ok_and(|jwk| matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
}

/// Checks one case.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run(data: &[u8]) {
    let doc: Option<Value> = serde_json::from_slice(data).ok();
    let entries: Vec<Value> = doc
        .as_ref()
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for default in [None, Some(Algorithm::RS256), Some(Algorithm::PS512)] {
        match key_set_from_json(data, default) {
            Ok(set) => {
                assert!(!set.is_empty());
                assert!(
                    !entries.iter().any(verification_secret),
                    "a JWKS with a shared secret for signatures was accepted"
                );
                // Every key re-exports as a public JWK that loads back to
                // the same key.
                let keys: Vec<Jwk> = set
                    .iter()
                    .map(|k| {
                        assert!(k.alg().is_asymmetric(), "symmetric key from a JWKS");
                        k.public_jwk().expect("public JWK").clone()
                    })
                    .collect();
                let again = serde_json::to_vec(&JwkSet { keys }).expect("JSON");
                let back = key_set_from_json(&again, None).expect("re-exported JWKS loads");
                let ids = |s: &portcullis_jwt::KeySet| {
                    let mut v: Vec<_> = s
                        .iter()
                        .map(|k| (k.kid().map(str::to_owned), k.alg()))
                        .collect();
                    v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                    v
                };
                assert_eq!(ids(&set), ids(&back), "round trip changed the keys");
            }
            Err(JwksError::Json(_)) => {
                // Not a JWKS, or not JSON at all (the typed parse skips
                // unknown members without checking their UTF-8).
                assert!(serde_json::from_slice::<JwkSet>(data).is_err() || doc.is_none());
            }
            Err(_) => {}
        }
    }
    // Single JWKs, symmetric ones allowed (a configured secret, not a
    // published set).
    for entry in &entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        for default in [
            None,
            Some(Algorithm::HS256),
            Some(Algorithm::HS512),
            Some(Algorithm::ES256),
        ] {
            let key = VerifyingKey::from_jwk(&jwk, default, true);
            if let (AlgorithmParameters::OctetKey(p), Ok(k)) = (&jwk.algorithm, &key) {
                assert_eq!(k.alg().family(), KeyFamily::Hmac);
                let secret = URL_SAFE_NO_PAD.decode(&p.value).expect("strict base64url");
                assert!(
                    secret.len() >= k.alg().min_secret_len(),
                    "short HMAC secret"
                );
            }
            if let Some(k) = key.as_ref().ok().filter(|k| k.alg().is_asymmetric()) {
                let public = k.public_jwk().expect("public JWK");
                let back = VerifyingKey::from_jwk(public, None, false).expect("reloads");
                assert_eq!((back.kid(), back.alg()), (k.kid(), k.alg()));
            }
            if let Err(KeyError::SymmetricInJwks) = VerifyingKey::from_jwk(&jwk, default, false) {
                assert!(verification_secret(entry), "a key refused as a secret");
            }
        }
    }
    let text = crate::text(data);
    if url_allowed(text) {
        let uri: http::Uri = text.parse().expect("an allowed URL parses");
        assert!(matches!(uri.scheme_str(), Some("https" | "http")));
        assert!(uri.host().is_some());
    }
    if let Some(age) = cache_control_max_age(text) {
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("max-age") || (age.is_zero() && lower.contains("no-")),
            "max-age from nothing"
        );
    }
}
