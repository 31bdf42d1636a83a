//! The JWT attack suite: each case goes through a real axum server behind
//! `JwtLayer` and asserts the exact status and that the handler never ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis::core::{Clock, ManualClock};
use portcullis::jwt::{Algorithm, JwtLayer, KeySet, VerifyingKey};
use portcullis_tests::jwt_app::{
    AUD, HS_SECRET, ISS, P256_PRIVATE, P256_PUBLIC, RSA_PRIVATE, RSA_PUBLIC, app, b64, forge,
    header, hs256, payload, signing_input,
};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct F {
    server: TestServer,
    hits: Arc<AtomicUsize>,
    http: reqwest::Client,
    now: i64,
}

fn keys() -> KeySet {
    KeySet::new([
        VerifyingKey::from_pem(Some("rsa"), Algorithm::RS256, RSA_PUBLIC).unwrap(),
        VerifyingKey::from_pem(Some("ec"), Algorithm::ES256, P256_PUBLIC).unwrap(),
        VerifyingKey::hmac(Some("hs"), Algorithm::HS256, HS_SECRET).unwrap(),
    ])
    .unwrap()
}

async fn fixture_with(keys: KeySet) -> F {
    let clock = Arc::new(ManualClock::starting_now());
    let now = i64::try_from(clock.now().secs()).unwrap();
    let layer = JwtLayer::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .clock(clock)
        .build()
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(app(layer, hits.clone())).await;
    F {
        server,
        hits,
        http: client(),
        now,
    }
}

async fn fixture() -> F {
    fixture_with(keys()).await
}

impl F {
    async fn send(&self, token: &str) -> reqwest::Response {
        self.http
            .get(self.server.url("/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Asserts `token` is refused with `status` and the handler did not run;
    /// returns the body.
    async fn refused(&self, token: &str, status: StatusCode, case: &str) -> String {
        let before = self.hits.load(Ordering::SeqCst);
        let resp = self.send(token).await;
        assert_eq!(resp.status(), status, "{case}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer error=\"invalid_token\"",
                "{case}"
            );
        }
        let body = resp.text().await.unwrap();
        assert_eq!(
            self.hits.load(Ordering::SeqCst),
            before,
            "{case}: the handler must not run"
        );
        body
    }

    fn valid(&self, alg: Algorithm) -> String {
        let (kid, key) = match alg {
            Algorithm::RS256 => ("rsa", RSA_PRIVATE),
            Algorithm::ES256 => ("ec", P256_PRIVATE),
            _ => ("hs", HS_SECRET),
        };
        forge(
            &header(alg.as_str(), Some(kid)).to_string(),
            &payload("alice", self.now).to_string(),
            alg,
            key,
        )
    }
}

fn spki_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = String::from_utf8_lossy(pem)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn assert_uniform_401(body: &str) {
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v,
        json!({"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "the access token is invalid"})
    );
}

#[tokio::test]
async fn valid_tokens_pass_for_every_key() {
    let f = fixture().await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256] {
        let resp = f.send(&f.valid(alg)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{alg}");
        assert_eq!(resp.text().await.unwrap(), "alice");
    }
    assert_eq!(f.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn alg_none_in_every_capitalisation() {
    let f = fixture().await;
    let p = payload("alice", f.now).to_string();
    for alg in ["none", "None", "NONE", "nOnE", "NoNe"] {
        for kid in [None, Some("hs"), Some("rsa")] {
            let input = signing_input(&header(alg, kid).to_string(), &p);
            // No signature at all, and a bogus one.
            for token in [format!("{input}."), format!("{input}.c2lnbmF0dXJl")] {
                let body = f
                    .refused(
                        &token,
                        StatusCode::UNAUTHORIZED,
                        &format!("alg {alg} kid {kid:?}"),
                    )
                    .await;
                assert_uniform_401(&body);
            }
        }
    }
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_key_confusion() {
    let f = fixture().await;
    let p = payload("alice", f.now).to_string();
    let rsa_der_b64: String = String::from_utf8_lossy(RSA_PUBLIC)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for (kid, secret) in [
        (Some("rsa"), RSA_PUBLIC.to_vec()),
        (Some("ec"), P256_PUBLIC.to_vec()),
        (Some("rsa"), rsa_der_b64.into_bytes()),
        (None, RSA_PUBLIC.to_vec()),
        // What a jsonwebtoken DecodingKey holds: PKCS#1 DER for RSA (after the
        // 24-byte SPKI header), the raw point for EC (the last 65 bytes).
        (Some("rsa"), spki_der(RSA_PUBLIC)[24..].to_vec()),
        (None, spki_der(RSA_PUBLIC)[24..].to_vec()),
        (
            Some("ec"),
            spki_der(P256_PUBLIC)[spki_der(P256_PUBLIC).len() - 65..].to_vec(),
        ),
    ] {
        let input = signing_input(&header("HS256", kid).to_string(), &p);
        let token = format!("{input}.{}", b64(&hs256(&secret, input.as_bytes())));
        f.refused(
            &token,
            StatusCode::UNAUTHORIZED,
            &format!("HS256 with public key, kid {kid:?}"),
        )
        .await;
    }
    // Same with a single-key (RSA only) server: no kid at all.
    let single = fixture_with(
        KeySet::new([VerifyingKey::from_pem(None, Algorithm::RS256, RSA_PUBLIC).unwrap()]).unwrap(),
    )
    .await;
    let input = signing_input(&header("HS256", None).to_string(), &p);
    let token = format!("{input}.{}", b64(&hs256(RSA_PUBLIC, input.as_bytes())));
    single
        .refused(
            &token,
            StatusCode::UNAUTHORIZED,
            "HS256 with the only key's PEM",
        )
        .await;
}

#[tokio::test]
async fn embedded_jwk_jku_x5u_are_ignored_and_never_fetched() {
    use portcullis_tests::jwt_app::JwksServer;
    let f = fixture().await;
    // An attacker's own key, offered in the header; the token is signed with it.
    let attacker = portcullis::jwt::SigningKey::generate("evil", Algorithm::ES256).unwrap();
    let jwk = serde_json::to_value(attacker.verifying_key().public_jwk().unwrap()).unwrap();
    let attacker_pem = portcullis::jwt::generate_pkcs8_pem(Algorithm::ES256).unwrap();
    let trap = JwksServer::new(json!({"keys": [jwk.clone()]}).to_string());
    let trap_server = trap.start().await;
    let p = payload("alice", f.now).to_string();
    for (name, extra) in [
        ("jwk", json!({"jwk": jwk})),
        ("jku", json!({"jku": trap_server.url("/jwks.json")})),
        ("x5u", json!({"x5u": trap_server.url("/jwks.json")})),
        (
            "jku+kid",
            json!({"jku": trap_server.url("/jwks.json"), "kid": "evil"}),
        ),
    ] {
        let mut h = header("ES256", None);
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        let token = forge(&h.to_string(), &p, Algorithm::ES256, &attacker_pem);
        f.refused(&token, StatusCode::UNAUTHORIZED, name).await;
    }
    assert_eq!(
        trap.hits.load(Ordering::SeqCst),
        0,
        "no outbound request to jku/x5u"
    );
}

#[tokio::test]
async fn kid_path_traversal_and_sql() {
    let f = fixture().await;
    let p = payload("alice", f.now).to_string();
    for kid in [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "rsa'; DROP TABLE keys; --",
        "/dev/null",
        "",
        "\u{0000}",
        &"k".repeat(1000),
    ] {
        let token = forge(
            &header("HS256", Some(kid)).to_string(),
            &p,
            Algorithm::HS256,
            HS_SECRET,
        );
        f.refused(&token, StatusCode::UNAUTHORIZED, &format!("kid {kid:?}"))
            .await;
    }
    // Several keys and no kid: never guess.
    let token = forge(
        &header("HS256", None).to_string(),
        &p,
        Algorithm::HS256,
        HS_SECRET,
    );
    f.refused(
        &token,
        StatusCode::UNAUTHORIZED,
        "missing kid with several keys",
    )
    .await;
}

#[tokio::test]
async fn ecdsa_all_zero_signature_cve_2022_21449() {
    let f = fixture().await;
    let input = signing_input(
        &header("ES256", Some("ec")).to_string(),
        &payload("alice", f.now).to_string(),
    );
    for sig in [
        vec![0u8; 64],
        vec![0u8; 0],
        [vec![0u8; 32], vec![1u8; 32]].concat(),
        vec![0u8; 72],
    ] {
        let token = format!("{input}.{}", b64(&sig));
        f.refused(
            &token,
            StatusCode::UNAUTHORIZED,
            &format!("ECDSA signature of {} bytes", sig.len()),
        )
        .await;
    }
}

#[tokio::test]
async fn stripped_altered_signature_and_tampered_payload() {
    let f = fixture().await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256] {
        let token = f.valid(alg);
        let (input, sig) = token.rsplit_once('.').unwrap();
        f.refused(&format!("{input}."), StatusCode::UNAUTHORIZED, "stripped")
            .await;
        f.refused(input, StatusCode::UNAUTHORIZED, "two segments")
            .await;
        let mut altered = sig.as_bytes().to_vec();
        altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
        f.refused(
            &format!("{input}.{}", String::from_utf8(altered).unwrap()),
            StatusCode::UNAUTHORIZED,
            "altered",
        )
        .await;
        let (h, _) = input.split_once('.').unwrap();
        let mut evil = payload("alice", f.now);
        evil["sub"] = json!("admin");
        f.refused(
            &format!("{h}.{}.{sig}", b64(evil.to_string().as_bytes())),
            StatusCode::UNAUTHORIZED,
            "tampered",
        )
        .await;
    }
}

#[tokio::test]
async fn time_claims() {
    let f = fixture().await;
    let h = header("HS256", Some("hs")).to_string();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut p = payload("alice", f.now);
    p["exp"] = json!(f.now - 6);
    cases.push(("expired beyond leeway", p));
    let mut p = payload("alice", f.now);
    p["nbf"] = json!(f.now + 60);
    cases.push(("nbf in the future", p));
    let mut p = payload("alice", f.now);
    p["iat"] = json!(f.now + 60);
    cases.push(("iat in the future", p));
    let mut p = payload("alice", f.now);
    p.as_object_mut().unwrap().remove("exp");
    cases.push(("missing exp", p));
    let mut p = payload("alice", f.now);
    p["exp"] = json!(format!("{}", f.now + 600));
    cases.push(("exp as a string", p));
    for (case, p) in cases {
        let token = forge(&h, &p.to_string(), Algorithm::HS256, HS_SECRET);
        f.refused(&token, StatusCode::UNAUTHORIZED, case).await;
    }
    // Inside the 5 s leeway is fine.
    let mut p = payload("alice", f.now);
    p["exp"] = json!(f.now - 4);
    assert_eq!(
        f.send(&forge(&h, &p.to_string(), Algorithm::HS256, HS_SECRET))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn issuer_and_audience_wrong_or_absent() {
    let f = fixture().await;
    let h = header("HS256", Some("hs")).to_string();
    for (case, edit) in [
        ("wrong iss", json!({"iss": "https://evil.test"})),
        ("absent iss", json!({"iss": null})),
        ("wrong aud", json!({"aud": "other-api"})),
        ("wrong aud list", json!({"aud": ["a", "b"]})),
        ("absent aud", json!({"aud": null})),
    ] {
        let mut p = payload("alice", f.now);
        for (k, v) in edit.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        f.refused(
            &forge(&h, &p.to_string(), Algorithm::HS256, HS_SECRET),
            StatusCode::UNAUTHORIZED,
            case,
        )
        .await;
    }
    let mut p = payload("alice", f.now);
    p["aud"] = json!(["other", AUD]);
    assert_eq!(
        f.send(&forge(&h, &p.to_string(), Algorithm::HS256, HS_SECRET))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn refresh_and_id_tokens_are_not_access_tokens() {
    let f = fixture().await;
    let p = payload("alice", f.now);
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "typ refresh+jwt",
            json!({"alg": "HS256", "kid": "hs", "typ": "refresh+jwt"}),
            p.clone(),
        ),
        (
            "typ JWT (an id token's)",
            json!({"alg": "HS256", "kid": "hs", "typ": "JWT"}),
            p.clone(),
        ),
        ("no typ", json!({"alg": "HS256", "kid": "hs"}), p.clone()),
        ("id token: nonce", header("HS256", Some("hs")), {
            let mut q = p.clone();
            q["nonce"] = json!("n");
            q
        }),
        ("token_use refresh", header("HS256", Some("hs")), {
            let mut q = p.clone();
            q["token_use"] = json!("refresh");
            q
        }),
        ("payload typ Refresh", header("HS256", Some("hs")), {
            let mut q = p.clone();
            q["typ"] = json!("Refresh");
            q
        }),
        ("payload typ ID", header("HS256", Some("hs")), {
            let mut q = p.clone();
            q["typ"] = json!("ID");
            q
        }),
    ];
    for (case, h, p) in cases {
        f.refused(
            &forge(&h.to_string(), &p.to_string(), Algorithm::HS256, HS_SECRET),
            StatusCode::UNAUTHORIZED,
            case,
        )
        .await;
    }
}

#[tokio::test]
async fn crit_b64_and_nested_tokens() {
    let f = fixture().await;
    let p = payload("alice", f.now).to_string();
    for (case, extra) in [
        ("unknown crit", json!({"crit": ["exp-ext"], "exp-ext": 1})),
        ("empty crit", json!({"crit": []})),
        ("b64 false", json!({"b64": false, "crit": ["b64"]})),
        ("b64 false without crit", json!({"b64": false})),
        ("cty JWT", json!({"cty": "JWT"})),
        ("cty jwt lower", json!({"cty": "jwt"})),
    ] {
        let mut h = header("HS256", Some("hs"));
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        f.refused(
            &forge(&h.to_string(), &p, Algorithm::HS256, HS_SECRET),
            StatusCode::UNAUTHORIZED,
            case,
        )
        .await;
    }
}

#[tokio::test]
async fn oversized_token() {
    let f = fixture().await;
    let mut p = payload("alice", f.now);
    p["padding"] = json!("x".repeat(9000));
    let token = forge(
        &header("HS256", Some("hs")).to_string(),
        &p.to_string(),
        Algorithm::HS256,
        HS_SECRET,
    );
    assert!(token.len() > 8192);
    f.refused(&token, StatusCode::UNAUTHORIZED, "oversized")
        .await;
}

#[tokio::test]
async fn padding_whitespace_and_non_canonical_base64() {
    let f = fixture().await;
    let token = f.valid(Algorithm::HS256);
    let parts: Vec<&str> = token.split('.').collect();
    let pad = |s: &str| format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4));
    for (case, bad) in [
        (
            "padded header",
            format!("{}.{}.{}", pad(parts[0]), parts[1], parts[2]),
        ),
        (
            "padded signature",
            format!("{}.{}.{}", parts[0], parts[1], pad(parts[2])),
        ),
        (
            "tab inside",
            format!("{}.{}\t.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "std base64 chars",
            format!(
                "{}.{}.{}+/",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 2]
            ),
        ),
    ] {
        f.refused(&bad, StatusCode::UNAUTHORIZED, case).await;
    }
    // A space splits the credentials: a malformed request, not a token.
    let spaced = format!("{}. {}.{}", parts[0], parts[1], parts[2]);
    f.refused(&spaced, StatusCode::BAD_REQUEST, "space inside")
        .await;
    // Non-canonical: flip the unused low bits of the signature's last character.
    let sig = parts[2];
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    // A 32-byte HMAC is 43 chars: the last char carries 2 unused bits.
    let twin = alphabet.chars().nth(idx | 1).unwrap();
    assert_ne!(twin, last);
    let bad = format!("{}.{}.{}{twin}", parts[0], parts[1], &sig[..sig.len() - 1]);
    f.refused(
        &bad,
        StatusCode::UNAUTHORIZED,
        "non-canonical trailing bits",
    )
    .await;
}

#[tokio::test]
async fn duplicated_claims_and_header_parameters() {
    let f = fixture().await;
    let good = payload("alice", f.now).to_string();
    let h = header("HS256", Some("hs")).to_string();
    let dup_sub = good.replacen('{', "{\"sub\":\"admin\",", 1);
    let dup_custom = good.replacen(
        '{',
        "{\"profile\":{\"role\":\"user\",\"role\":\"admin\"},",
        1,
    );
    let dup_exp = good.replacen('{', &format!("{{\"exp\":{},", f.now + 99_999), 1);
    for (case, p) in [
        ("duplicate sub", dup_sub),
        ("duplicate nested custom claim", dup_custom),
        ("duplicate exp", dup_exp),
    ] {
        f.refused(
            &forge(&h, &p, Algorithm::HS256, HS_SECRET),
            StatusCode::UNAUTHORIZED,
            case,
        )
        .await;
    }
    let dup_alg = h.replacen('{', "{\"alg\":\"none\",", 1);
    f.refused(
        &forge(&dup_alg, &good, Algorithm::HS256, HS_SECRET),
        StatusCode::UNAUTHORIZED,
        "duplicate alg",
    )
    .await;
}

#[tokio::test]
async fn token_in_the_query_string_is_ignored() {
    let f = fixture().await;
    let token = f.valid(Algorithm::HS256);
    for q in ["access_token", "token", "jwt"] {
        let resp = f
            .http
            .get(format!("{}?{q}={token}", f.server.url("/me")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{q}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer",
            "treated as no token at all"
        );
    }
    assert_eq!(f.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_credentials() {
    let f = fixture().await;
    let token = f.valid(Algorithm::HS256);
    let send = |values: Vec<String>| {
        let mut req = f.http.get(f.server.url("/me"));
        for v in values {
            req = req.header("authorization", v);
        }
        req.send()
    };
    let resp = send(vec![format!("Bearer {token}"), format!("Bearer {token}")])
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "two Authorization headers"
    );
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"invalid_request\""
    );
    let resp = send(vec![format!("Bearer {token} extra")]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "token with a space");
    let resp = send(vec!["Bearer ".into()]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "empty bearer");
    let resp = send(vec![format!("Basic {token}")]).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "another scheme is no token"
    );
    let resp = send(vec![format!("bearer {token}")]).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_token_failure_has_the_same_body() {
    let f = fixture().await;
    let p = payload("alice", f.now).to_string();
    let mut expired = payload("alice", f.now);
    expired["exp"] = json!(f.now - 100);
    let bodies = [
        f.refused(
            "garbage.garbage.garbage",
            StatusCode::UNAUTHORIZED,
            "garbage",
        )
        .await,
        f.refused(
            &forge(
                &header("HS256", Some("nope")).to_string(),
                &p,
                Algorithm::HS256,
                HS_SECRET,
            ),
            StatusCode::UNAUTHORIZED,
            "unknown kid",
        )
        .await,
        f.refused(
            &forge(
                &header("HS256", Some("hs")).to_string(),
                &expired.to_string(),
                Algorithm::HS256,
                HS_SECRET,
            ),
            StatusCode::UNAUTHORIZED,
            "expired",
        )
        .await,
        f.refused(
            &forge(
                &header("HS256", Some("hs")).to_string(),
                &p,
                Algorithm::HS256,
                b"wrong secret of thirty-two bytes!",
            ),
            StatusCode::UNAUTHORIZED,
            "bad signature",
        )
        .await,
    ];
    for b in &bodies {
        assert_uniform_401(b);
    }
}
