// Reproducer for fuzz/regressions/jwt_compact/crit-null and b64-null, as a
// plain test (public API only: it runs as an integration test as it is, or
// in portcullis-jwt's own tests with `portcullis_jwt::` read as `crate::`).
//
// The header parser reads `crit` and `b64` as `Option<IgnoredAny>`, and
// serde reads a JSON `null` as `None`: `"crit":null` and `"b64":null` pass
// (for `verify_jws` and for access tokens alike), where the crate refuses
// both parameters whatever their value.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use portcullis_jwt::{Algorithm, JwtErrorKind, KeySet, VerifyingKey, verify_jws};

const SECRET: &[u8] = b"a secret of at least thirty-two bytes!!";

fn sign(header: &str, payload: &str) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// `crit` and `b64` are refused whatever their value: a header that names
/// them, even as `null`, is not one this verifier understands.
#[test]
fn crit_and_b64_refused_even_when_null() {
    let keys = KeySet::new([VerifyingKey::hmac(None, Algorithm::HS256, SECRET).unwrap()]).unwrap();
    for header in [
        r#"{"alg":"HS256","crit":null}"#,
        r#"{"alg":"HS256","b64":null}"#,
    ] {
        let token = sign(header, r#"{"exp":1}"#);
        let got = verify_jws(&token, &keys, 8192).map_err(|e| e.kind());
        assert_eq!(got, Err(JwtErrorKind::UnsupportedHeader), "{header}");
    }
}
