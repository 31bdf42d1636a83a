// Reproducer for fuzz/regressions/jwks/oct-key-unknown-alg.json, as a plain
// test (public API only: it runs as an integration test as it is, or in
// portcullis-jwt's own tests with `portcullis_jwt::` read as `crate::`).
//
// `key_set_from_json` promises that a JWKS holding a symmetric key is
// refused outright; an `oct` key whose `alg` is absent (and no default
// applies) or not a JWS algorithm is skipped instead, and the document is
// accepted with its other keys.

use portcullis_jwt::KeyError;
use portcullis_jwt::jwks::{JwksError, key_set_from_json};

/// A published JWKS that holds a shared secret is refused, whatever the
/// secret's `alg` says: the secret is leaked either way.
#[test]
fn a_jwks_holding_a_secret_is_refused_whatever_its_alg() {
    let ec = r#"{"kty":"EC","crv":"P-256","kid":"ec","use":"sig",
        "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
        "y":"UI8exy-C06a7dUnjIdENkxeFtHM4-l_41LqEw9nVgmw"}"#;
    let k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    for secret in [
        format!(r#"{{"kty":"oct","kid":"s","k":"{k}"}}"#),
        format!(r#"{{"kty":"oct","kid":"s","k":"{k}","alg":"HS196"}}"#),
        format!(r#"{{"kty":"oct","kid":"s","k":"{k}","use":"sig","alg":"none"}}"#),
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
