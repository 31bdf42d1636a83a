//! Writes the hand-made part of the seed corpus: real tokens, cookies,
//! JWTs and JWKS documents made with the test keys, and near misses of
//! each. `scripts/fuzz --seeds` runs it; the JOSE test vectors are added
//! by that script.
//!
//! ```text
//! cd fuzz && cargo +nightly run --example seeds -- corpus
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::{ManualClock, OpaqueToken, SharedClock};
use portcullis_fuzz::jwt::{AUD, HS256_SECRET, ISS, NOW, sign_hs256};
use portcullis_jwt::{Algorithm, JwtIssuer, SigningKey};

fn write(dir: &Path, target: &str, name: &str, data: impl AsRef<[u8]>) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("corpus dir");
    fs::write(d.join(name), data).expect("seed");
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let token = OpaqueToken::from_bytes(*b"portcullis fuzz seed token 32 b!").to_encoded();
    let family = URL_SAFE_NO_PAD.encode(b"family id 16 byt");

    // Opaque tokens and digests.
    let digest = OpaqueToken::parse(&token).expect("token").digest().to_hex();
    let mut non_canonical = token.clone();
    non_canonical.pop();
    non_canonical.push('B'); // spare bits set
    for (name, seed) in [
        ("valid", token.clone()),
        ("padded", format!("{token}=")),
        ("non-canonical", non_canonical.clone()),
        (
            "standard-alphabet",
            token.replace('-', "+").replace('_', "/"),
        ),
        ("short", token[..42].to_owned()),
        ("digest", digest.clone()),
        ("digest-upper", digest.to_uppercase()),
    ] {
        write(&dir, "opaque_token", name, seed);
    }

    // Refresh tokens.
    let refresh = format!("{family}.{token}");
    for (name, seed) in [
        ("valid", refresh.clone()),
        ("family", family.clone()),
        ("no-dot", format!("{family}{token}")),
        ("non-canonical-secret", format!("{family}.{non_canonical}")),
        (
            "non-canonical-family",
            format!("{}B.{token}", &family[..21]),
        ),
        ("colon", format!("{family}:{token}")),
    ] {
        write(&dir, "refresh_token", name, seed);
    }

    // Cookies: flags byte, name, path, domain, then Cookie headers.
    for (name, seed) in [
        (
            "host-prefix",
            format!("\x01session\n\n\n__Host-session={token}; theme=dark"),
        ),
        ("quoted", format!("\x11sid\n/\n\nsid=\"{token}\"")),
        (
            "duplicate",
            "\x01id\n\n\n__Host-id=a; __Host-id=b".to_owned(),
        ),
        (
            "two-headers",
            format!("\x05id\n/app\nexample.com\na=1\n__Secure-id={token};b=2"),
        ),
        (
            "spaces",
            "\x31sid\n\n\n  sid = 1 ;\tsid=2 ;;=;sid".to_owned(),
        ),
        ("long", format!("\x01x\n\n\n{}", "k=v; ".repeat(40))),
    ] {
        write(&dir, "cookie", name, seed);
    }

    // JWTs minted by the issuer with the test keys, and near misses.
    let clock: SharedClock = Arc::new(ManualClock::new(NOW.unsigned_abs() * 1000));
    let keys = [
        SigningKey::hmac("hs", Algorithm::HS256, HS256_SECRET).expect("hs"),
        SigningKey::from_pkcs8_pem(
            "es",
            Algorithm::ES256,
            include_bytes!("../../tests/fixtures/p256-private.pem"),
        )
        .expect("es"),
        SigningKey::from_pkcs8_pem(
            "rs",
            Algorithm::RS256,
            include_bytes!("../../tests/fixtures/rsa2048-private.pem"),
        )
        .expect("rs"),
    ];
    for key in keys {
        let alg = key.alg();
        let issuer = JwtIssuer::builder(key)
            .issuer(ISS)
            .audience(AUD)
            .clock(Arc::clone(&clock))
            .build()
            .expect("issuer");
        let t = issuer
            .token("alice")
            .roles(["admin"])
            .scope("read write")
            .mint()
            .expect("mint")
            .token;
        write(&dir, "jwt_compact", &format!("{alg}-valid"), &t);
        let (signed, sig) = t.rsplit_once('.').expect("three parts");
        write(
            &dir,
            "jwt_compact",
            &format!("{alg}-padded"),
            format!("{t}="),
        );
        write(
            &dir,
            "jwt_compact",
            &format!("{alg}-no-signature"),
            format!("{signed}."),
        );
        let mut bad = sig.as_bytes().to_vec();
        bad[0] ^= 1;
        let bad = String::from_utf8(bad).expect("ASCII");
        write(
            &dir,
            "jwt_compact",
            &format!("{alg}-bad-signature"),
            format!("{signed}.{bad}"),
        );
        write(&dir, "jwks", &format!("{alg}-issuer"), issuer.jwks_json());
    }
    let claims = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","exp":{}}}"#,
        NOW + 60
    );
    for (name, header, payload) in [
        (
            "hs-typ-jwt",
            r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#,
            claims.clone(),
        ),
        (
            "alg-none",
            r#"{"alg":"none","typ":"at+jwt"}"#,
            claims.clone(),
        ),
        (
            "crit",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"hs","crit":["exp"]}"#,
            claims.clone(),
        ),
        (
            "b64-false",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"hs","b64":false}"#,
            claims.clone(),
        ),
        (
            "cty-jwt",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"hs","cty":"JWT"}"#,
            claims.clone(),
        ),
        (
            "dup-alg",
            r#"{"alg":"HS256","alg":"HS256","typ":"at+jwt","kid":"hs"}"#,
            claims.clone(),
        ),
        (
            "es-kid-hs-alg",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"es"}"#,
            claims.clone(),
        ),
        (
            "dup-sub",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"hs"}"#,
            format!(
                r#"{{"iss":"{ISS}","aud":["x","{AUD}"],"sub":"a","sub":"b","exp":{}}}"#,
                NOW + 60
            ),
        ),
        (
            "expired-float",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"hs"}"#,
            format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{}.9,"nbf":1e3}}"#,
                NOW - 6
            ),
        ),
        (
            "id-token",
            r#"{"alg":"HS256","typ":"at+jwt","kid":"hs"}"#,
            format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"nonce":null}}"#,
                NOW + 60
            ),
        ),
    ] {
        write(
            &dir,
            "jwt_compact",
            name,
            sign_hs256(header.as_bytes(), payload.as_bytes()),
        );
    }
    for (name, seed) in [
        (
            "url-https",
            "https://auth.example.com/.well-known/jwks.json",
        ),
        ("url-loopback", "http://[::1]:8080/jwks"),
        ("cache-control", "public, max-age=\"600\", must-revalidate"),
        ("empty-set", r#"{"keys":[]}"#),
        (
            "oct",
            r#"{"keys":[{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow","alg":"HS256"}]}"#,
        ),
    ] {
        write(&dir, "jwks", name, seed);
    }
}
