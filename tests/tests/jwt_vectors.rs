//! Public test vectors through portcullis-jwt's verification path.
//!
//! The data files are vendored under `tests/vectors/` (sources, commits and
//! licences in `tests/vectors/README.md`). What each file exercises:
//!
//! - Wycheproof `json_web_signature_test.json`: every vector is a compact
//!   JWS (or a JSON serialization that must be refused) and goes through
//!   [`verify_jws`], the JWS-level check with the same structural, header
//!   and signature rules as access tokens. The group's key comes from its
//!   JWK: public keys through the JWKS path ([`key_set_from_json`]),
//!   shared secrets through [`VerifyingKey::from_jwk`] with symmetric keys
//!   allowed (how an application configures a secret given as a JWK). Each
//!   valid vector also goes through [`JwtLayer::verify`], which must refuse
//!   it: a signed `foo` is not an access token.
//! - Wycheproof `json_web_key_test.json`: the group's key *set* is built key
//!   by key (one unusable key refuses the set), then the vector goes
//!   through [`verify_jws`].
//! - Wycheproof `ecdsa_secp256r1_sha256_p1363_test.json`: these sign raw
//!   messages, not JWS signing inputs (`base64url(header).base64url(payload)`),
//!   so no token can carry them faithfully. They run through the exact
//!   primitive [`verify_jws`] ends in, `jsonwebtoken::crypto::verify` with
//!   ES256, given a `DecodingKey` built the way [`VerifyingKey::from_pem`]
//!   and [`VerifyingKey::from_jwk`] build theirs, after checking that
//!   `from_der`, `from_pem` and `from_jwk` accept the key.
//! - The IETF JOSE cookbook: RFC 7520 section 4 (4.1 to 4.8), RFC 7797
//!   (`b64: false`) and RFC 8037 A.4 (Ed25519), as compact JWS where the
//!   example has or admits a compact form, through [`verify_jws`].
//!
//! Every valid vector must verify and every invalid one must be refused,
//! except the cases listed by `jws_deviations` and `jwk_deviations`, where
//! the test asserts our exact outcome and the entry says why we differ. The
//! number of vectors run is asserted per file, so a parsing change that
//! silently drops vectors fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::jwt::jwk::Jwk;
use portcullis::jwt::jwks::{JwksError, key_set_from_json};
use portcullis::jwt::{
    Algorithm, DEFAULT_MAX_TOKEN_LEN, JwtErrorKind, JwtLayer, KeyError, KeySet, VerifyingKey,
    verify_jws,
};
use serde_json::{Value, json};

/// What happened to one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The signature verified.
    Verified,
    /// The key or key set was refused before any token was looked at (the
    /// variant name of the key error).
    KeyRefused(String),
    /// The token was refused.
    Refused(JwtErrorKind),
}

impl Outcome {
    const fn accepted(&self) -> bool {
        matches!(self, Self::Verified)
    }
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn load(rel: &str) -> Value {
    let path = vectors_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The variant name of an error's `Debug` form (`Parse("...")` -> `Parse`).
fn variant(debug: &str) -> String {
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn key_err(e: &KeyError) -> String {
    variant(&format!("{e:?}"))
}

fn jwks_err(e: &JwksError) -> String {
    match e {
        JwksError::Key(k) => key_err(k),
        other => variant(&format!("{other:?}")),
    }
}

fn jwk(value: &Value) -> Result<Jwk, String> {
    serde_json::from_value(value.clone()).map_err(|_| "JwkParse".to_owned())
}

/// A key set from JWK values. A set holding a symmetric key is a configured
/// secret: every key goes through `from_jwk` (symmetric allowed) and any
/// unusable key refuses the set. A set of public keys goes through the JWKS
/// path, as a published document would.
fn key_set(keys: &[Value], default_alg: Option<Algorithm>) -> Result<KeySet, String> {
    let symmetric = keys.iter().any(|k| k["kty"] == "oct");
    if symmetric {
        let mut built = Vec::new();
        for k in keys {
            built.push(
                VerifyingKey::from_jwk(&jwk(k)?, default_alg, true).map_err(|e| key_err(&e))?,
            );
        }
        KeySet::new(built).map_err(|e| key_err(&e))
    } else {
        let doc = serde_json::to_vec(&json!({ "keys": keys })).unwrap();
        key_set_from_json(&doc, default_alg).map_err(|e| match e {
            // The JWKS path skips unusable keys; say why each was skipped.
            JwksError::NoUsableKey => {
                let why: Vec<String> = keys
                    .iter()
                    .map(|k| match jwk(k) {
                        Ok(j) => VerifyingKey::from_jwk(&j, default_alg, false)
                            .err()
                            .map_or_else(String::new, |e| key_err(&e)),
                        Err(e) => e,
                    })
                    .collect();
                format!("NoUsableKey:{}", why.join(","))
            }
            other => jwks_err(&other),
        })
    }
}

fn run(token: &str, keys: &Result<KeySet, String>) -> Outcome {
    match keys {
        Err(e) => Outcome::KeyRefused(e.clone()),
        Ok(keys) => match verify_jws(token, keys, DEFAULT_MAX_TOKEN_LEN) {
            Ok(_) => Outcome::Verified,
            Err(e) => Outcome::Refused(e.kind()),
        },
    }
}

/// A vector where our outcome differs from the file's expectation.
struct Deviation {
    tc_id: u64,
    ours: Outcome,
    why: &'static str,
}

fn refused(kind: JwtErrorKind) -> Outcome {
    Outcome::Refused(kind)
}

fn key_refused(name: &str) -> Outcome {
    Outcome::KeyRefused(name.to_owned())
}

/// Tallies per expected result, and checks each vector against its
/// expectation or its listed deviation.
#[derive(Default)]
struct Tally {
    /// result -> (run, agreed with the file, listed deviations)
    by_result: BTreeMap<String, (usize, usize, usize)>,
    deviations_seen: Vec<u64>,
    failures: Vec<String>,
}

impl Tally {
    fn check(
        &mut self,
        file: &str,
        tc_id: u64,
        result: &str,
        comment: &str,
        ours: &Outcome,
        deviations: &[Deviation],
    ) {
        let entry = self.by_result.entry(result.to_owned()).or_default();
        entry.0 += 1;
        if let Some(d) = deviations.iter().find(|d| d.tc_id == tc_id) {
            entry.2 += 1;
            self.deviations_seen.push(tc_id);
            if *ours != d.ours {
                self.failures.push(format!(
                    "{file} tcId {tc_id} ({result}, {comment}): listed deviation expects {:?} ({}), got {ours:?}",
                    d.ours, d.why
                ));
            }
            return;
        }
        let agrees = match result {
            "valid" => ours.accepted(),
            "invalid" => !ours.accepted(),
            other => {
                self.failures.push(format!(
                    "{file} tcId {tc_id}: result {other:?} needs a listed decision"
                ));
                return;
            }
        };
        if agrees {
            entry.1 += 1;
        } else {
            self.failures.push(format!(
                "{file} tcId {tc_id} ({result}, {comment}): got {ours:?}"
            ));
        }
    }

    fn finish(
        self,
        file: &str,
        deviations: &[Deviation],
    ) -> BTreeMap<String, (usize, usize, usize)> {
        for d in deviations {
            assert!(
                self.deviations_seen.contains(&d.tc_id),
                "{file}: listed deviation tcId {} was never run",
                d.tc_id
            );
        }
        eprintln!(
            "{file}: result -> (run, as expected, listed deviations) {:?}",
            self.by_result
        );
        assert!(
            self.failures.is_empty(),
            "{file}:\n{}",
            self.failures.join("\n")
        );
        self.by_result
    }
}

fn tests_of(group: &Value) -> &Vec<Value> {
    group["tests"].as_array().expect("tests array")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Wycheproof's JWS vectors where we knowingly differ.
fn jws_deviations() -> Vec<Deviation> {
    let empty_payload = "an empty payload segment is refused as malformed: in compact form it is \
                         indistinguishable from a detached payload (RFC 7515 appendix F), which we refuse";
    let es521 = "RFC 7520 figure 27 is ES512 on P-521 (the JWK says `alg: ES521`), which portcullis does \
                 not support: the JWK names no algorithm we verify, so the key is refused";
    let mut d = vec![
        Deviation {
            tc_id: 347,
            ours: key_refused("NoUsableKey:JwkNotForVerification"),
            why: es521,
        },
        Deviation {
            tc_id: 351,
            ours: key_refused("NoUsableKey:JwkNotForVerification"),
            why: es521,
        },
        Deviation {
            tc_id: 346,
            ours: refused(JwtErrorKind::AlgMismatch),
            why: "RFC 7520 figure 20 is signed PS384 but Wycheproof's JWK for it says `alg: PS256`; we honour \
                  a JWK's `alg` (the key verifies PS256 only), so the PS384 token does not match its key",
        },
        Deviation {
            tc_id: 350,
            ours: refused(JwtErrorKind::AlgMismatch),
            why: "as 346, the key_ops variant",
        },
        Deviation {
            tc_id: 372,
            ours: refused(JwtErrorKind::Malformed),
            why: "Wycheproof marks a `?` inserted into the header valid (lenient base64 decoders skip it; \
                  the signature is tcId 357's, over the unaltered input); we refuse any byte outside the \
                  base64url alphabet before decoding",
        },
        Deviation {
            tc_id: 373,
            ours: refused(JwtErrorKind::Malformed),
            why: "as 372, with the `?` in the payload",
        },
    ];
    for tc_id in [367, 370] {
        d.push(Deviation {
            tc_id,
            ours: Outcome::Verified,
            why: "byte for byte the token of tcId 357, which the same file marks valid: the padding the \
                  comment names is not in the data (reported upstream as C2SP/wycheproof#236). With `=` \
                  padding added we refuse it \
                  (`padded_base64_refused` asserts that)",
        });
    }
    for tc_id in EMPTY_PAYLOAD_VALID {
        d.push(Deviation {
            tc_id,
            ours: refused(JwtErrorKind::Malformed),
            why: empty_payload,
        });
    }
    d
}

/// The valid Wycheproof JWS vectors with an empty payload.
const EMPTY_PAYLOAD_VALID: [u64; 6] = [259, 264, 268, 272, 320, 325];

#[tokio::test]
async fn wycheproof_json_web_signature() {
    let file = "wycheproof/json_web_signature_test.json";
    let doc = load(file);
    let deviations = jws_deviations();
    let mut tally = Tally::default();
    let mut valid_as_access_tokens = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let keys = key_set(std::slice::from_ref(key), None);
        for t in tests_of(group) {
            let tc_id = t["tcId"].as_u64().unwrap();
            let token = str_of(t, "jws");
            let ours = run(token, &keys);
            tally.check(
                file,
                tc_id,
                str_of(t, "result"),
                str_of(t, "comment"),
                &ours,
                &deviations,
            );
            if ours.accepted() {
                // A verified JWS is still no access token: no `typ: at+jwt`,
                // and a payload that is not a claim set.
                let layer = JwtLayer::builder(keys.clone().unwrap())
                    .issuer("https://issuer.example")
                    .audience("api")
                    .build()
                    .unwrap();
                let err = layer
                    .verify(token)
                    .await
                    .expect_err("a plain JWS passed as an access token");
                assert_eq!(err.kind(), JwtErrorKind::WrongTokenType, "tcId {tc_id}");
                valid_as_access_tokens += 1;
            }
        }
    }
    let counts = tally.finish(file, &deviations);
    assert_eq!(doc["numberOfTests"], 401);
    assert_eq!(
        counts["valid"],
        (46, 34, 12),
        "valid vectors: run, verified, listed deviations"
    );
    assert_eq!(
        counts["invalid"],
        (355, 353, 2),
        "invalid vectors: run, refused, listed deviations"
    );
    assert_eq!(counts.len(), 2, "no other result class in this file");
    // The 34 verified valid vectors and 367/370, their byte-identical copies.
    assert_eq!(valid_as_access_tokens, 36);
}

/// Wycheproof's JWK-set vectors where we knowingly differ.
fn jwk_deviations() -> Vec<Deviation> {
    vec![Deviation {
        tc_id: 1,
        ours: Outcome::Verified,
        why: "a configured key set may hold an HMAC secret next to an EC public key: every key is pinned \
              to its own algorithm, so the EC key can never be used as an HMAC secret (Wycheproof flags \
              this case `Ambiguous`). A published JWKS with a secret in it is refused outright, which \
              `mixed_key_set_refused_as_jwks` asserts",
    }]
}

#[test]
fn wycheproof_json_web_key() {
    let file = "wycheproof/json_web_key_test.json";
    let doc = load(file);
    let deviations = jwk_deviations();
    let mut tally = Tally::default();
    let mut key_refusals = BTreeMap::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let set = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let keys = key_set(set["keys"].as_array().unwrap(), None);
        for t in tests_of(group) {
            let tc_id = t["tcId"].as_u64().unwrap();
            let ours = run(str_of(t, "jws"), &keys);
            if let Outcome::KeyRefused(why) = &ours {
                key_refusals.insert(tc_id, why.clone());
            }
            tally.check(
                file,
                tc_id,
                str_of(t, "result"),
                str_of(t, "comment"),
                &ours,
                &deviations,
            );
        }
    }
    let counts = tally.finish(file, &deviations);
    assert_eq!(doc["numberOfTests"], 26);
    assert_eq!(counts["valid"], (5, 5, 0));
    assert_eq!(counts["invalid"], (21, 20, 1));
    // Which vectors were refused at the key, and why (the others reached
    // the token checks).
    let expected: BTreeMap<u64, String> = [
        // The second secret is not canonical base64url (its last character
        // sets unused bits); `duplicate_kids_refused` checks the kid rule.
        (4, "Parse"),
        (6, "NoUsableKey:JwkNotForVerification"),
        (7, "NoUsableKey:RsaRoca"),
        (8, "NoUsableKey:RsaTooSmall"),
        (9, "NoUsableKey:Parse"),
        (10, "SecretTooShort"),
        (11, "SecretTooShort"),
        (12, "SecretTooShort"),
        (16, "SecretTooShort"),
        (17, "SecretTooShort"),
        (18, "SecretTooShort"),
        (19, "NoUsableKey:JwkNotForVerification"),
        (20, "NoUsableKey:JwkNotForVerification"),
        (21, "NoUsableKey:JwkNotForVerification"),
        (23, "NoUsableKey:WrongFamily"),
        (24, "NoUsableKey:Parse"),
        (25, "JwkNotForVerification"),
        (26, "JwkNotForVerification"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(key_refusals, expected);
}

#[test]
fn mixed_key_set_refused_as_jwks() {
    let doc = load("wycheproof/json_web_key_test.json");
    let group = &doc["testGroups"][0];
    assert_eq!(group["comment"], "jws_mixedSymmetryKeyset");
    let bytes = serde_json::to_vec(&group["private"]).unwrap();
    let err = key_set_from_json(&bytes, None).expect_err("a JWKS holding a shared secret");
    assert!(
        matches!(err, JwksError::Key(KeyError::SymmetricInJwks)),
        "{err:?}"
    );
}

/// Individual key checks behind the JWK vectors whose token alone would be
/// refused anyway (an empty payload): the key must be refused too.
#[test]
fn wycheproof_weak_rsa_keys_refused() {
    let doc = load("wycheproof/json_web_key_test.json");
    let group = |comment: &str| {
        doc["testGroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["comment"] == comment)
            .unwrap()
            .clone()
    };
    let small = jwk(&group("keysize_too_small")["public"]["keys"][0]).unwrap();
    assert_eq!(
        VerifyingKey::from_jwk(&small, None, false).unwrap_err(),
        KeyError::RsaTooSmall
    );
    let e1 = jwk(&group("exponentOne")["public"]["keys"][0]).unwrap();
    assert!(
        VerifyingKey::from_jwk(&e1, None, false).is_err(),
        "RSA public exponent 1"
    );
}

/// Wycheproof's ECDSA P-256 (IEEE P1363) vectors: see the module comment
/// for the path they take.
#[test]
fn wycheproof_ecdsa_p256_p1363() {
    use jsonwebtoken::{Algorithm as JwtAlg, DecodingKey};
    portcullis::jwt::ensure_crypto_provider();
    let file = "wycheproof/ecdsa_secp256r1_sha256_p1363_test.json";
    let doc = load(file);
    let mut tally = Tally::default();
    let mut with_jwk = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        assert_eq!(group["type"], "EcdsaP1363Verify");
        assert_eq!(group["sha"], "SHA-256");
        let der = hex(str_of(group, "publicKeyDer"));
        let pem = str_of(group, "publicKeyPem").as_bytes();
        // Our constructors accept every key in the file.
        VerifyingKey::from_der(None, Algorithm::ES256, &der).expect("from_der");
        VerifyingKey::from_pem(None, Algorithm::ES256, pem).expect("from_pem");
        let pem_key = DecodingKey::from_ec_pem(pem).unwrap();
        let jwk_key = if group["publicKeyJwk"].is_object() {
            let j = jwk(&group["publicKeyJwk"]).unwrap();
            let vk = VerifyingKey::from_jwk(&j, None, false).expect("from_jwk");
            assert_eq!(
                vk.alg(),
                Algorithm::ES256,
                "a P-256 JWK without alg is ES256"
            );
            with_jwk += 1;
            Some(DecodingKey::from_jwk(&j).unwrap())
        } else {
            None
        };
        for t in tests_of(group) {
            let tc_id = t["tcId"].as_u64().unwrap();
            let msg = hex(str_of(t, "msg"));
            let sig = URL_SAFE_NO_PAD.encode(hex(str_of(t, "sig")));
            let verify = |key: &DecodingKey| {
                matches!(
                    jsonwebtoken::crypto::verify(&sig, &msg, key, JwtAlg::ES256),
                    Ok(true)
                )
            };
            let ok = verify(&pem_key);
            if let Some(k) = &jwk_key {
                assert_eq!(verify(k), ok, "tcId {tc_id}: the JWK and PEM keys disagree");
            }
            let ours = if ok {
                Outcome::Verified
            } else {
                refused(JwtErrorKind::BadSignature)
            };
            tally.check(
                file,
                tc_id,
                str_of(t, "result"),
                str_of(t, "comment"),
                &ours,
                &[],
            );
        }
    }
    let counts = tally.finish(file, &[]);
    assert_eq!(doc["numberOfTests"], 262);
    assert_eq!(counts["valid"], (173, 173, 0));
    assert_eq!(counts["invalid"], (89, 89, 0));
    assert_eq!(counts.len(), 2);
    assert_eq!(with_jwk, 103, "groups with a JWK");
}

fn hex(s: &str) -> Vec<u8> {
    let pairs = s.as_bytes().chunks_exact(2);
    assert!(pairs.remainder().is_empty(), "odd hex length");
    pairs
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ASCII"), 16).expect("hex"))
        .collect()
}

/// One cookbook case.
struct Case {
    name: &'static str,
    token: String,
    keys: Result<KeySet, String>,
    want: Outcome,
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// The public members of a JWK (drops `d`, `p`, `q`, ...).
fn public_jwk(key: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in key.as_object().unwrap() {
        if [
            "kty", "kid", "use", "alg", "key_ops", "crv", "x", "y", "n", "e",
        ]
        .contains(&k.as_str())
        {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[test]
fn jose_cookbook() {
    let dir = "jose-cookbook";
    let ex = |name: &str| load(&format!("{dir}/{name}.json"));
    let rsa_pub = ex("jwk/3_3.rsa_public_key");
    let ec_p521_pub = ex("jwk/3_1.ec_public_key");
    let hmac = ex("jwk/3_5.symmetric_key_mac_computation");
    let aes = ex("jwk/3_6.symmetric_key_encryption");
    let rsa_for = |alg| key_set(std::slice::from_ref(&rsa_pub), Some(alg));
    let hmac_keys = || key_set(std::slice::from_ref(&hmac), None);

    let e41 = ex("jws/4_1.rsa_v15_signature");
    let e42 = ex("jws/4_2.rsa-pss_signature");
    let e43 = ex("jws/4_3.ecdsa_signature");
    let e44 = ex("jws/4_4.hmac-sha2_integrity_protection");
    let e45 = ex("jws/4_5.signature_with_detached_content");
    let e46 = ex("jws/4_6.protecting_specific_header_fields");
    let e47 = ex("jws/4_7.protecting_content_only");
    let e48 = ex("jws/4_8.multiple_signatures");
    let b64f = ex("rfc7797/hmac-sha2_b64_false");
    let ed = ex("curve25519/jws");

    // The cookbook's keys are the ones in the examples.
    assert_eq!(public_jwk(&e41["input"]["key"]), rsa_pub);
    assert_eq!(e44["input"]["key"], hmac);
    assert_eq!(public_jwk(&e43["input"]["key"]), ec_p521_pub);

    let payload = str_of(&e41["input"], "payload");
    let payload_b64 = b64(payload);
    let compact = |e: &Value| str_of(&e["output"], "compact").to_owned();
    let json_ser = |e: &Value| serde_json::to_string(&e["output"]["json"]).unwrap();
    let sig_input_and = |s: &Value| format!("{}.{}", str_of(s, "sig-input"), str_of(s, "sig"));

    let cases = vec![
        // 4.1 RSA v1.5 (RS256).
        Case {
            name: "4.1 compact",
            token: compact(&e41),
            keys: rsa_for(Algorithm::RS256),
            want: Outcome::Verified,
        },
        Case {
            name: "4.1 general JSON serialization",
            token: json_ser(&e41),
            keys: rsa_for(Algorithm::RS256),
            want: refused(JwtErrorKind::Malformed),
        },
        Case {
            name: "4.1 under a key pinned to PS256",
            token: compact(&e41),
            keys: rsa_for(Algorithm::PS256),
            want: refused(JwtErrorKind::AlgMismatch),
        },
        // 4.2 RSA-PSS (PS384).
        Case {
            name: "4.2 compact",
            token: compact(&e42),
            keys: rsa_for(Algorithm::PS384),
            want: Outcome::Verified,
        },
        // 4.3 ECDSA: ES512 on P-521, which portcullis does not support.
        Case {
            name: "4.3 P-521 key",
            token: compact(&e43),
            keys: key_set(std::slice::from_ref(&ec_p521_pub), None),
            want: key_refused("NoUsableKey:JwkNotForVerification"),
        },
        Case {
            name: "4.3 ES512 token",
            token: compact(&e43),
            keys: hmac_keys(),
            want: refused(JwtErrorKind::UnsupportedAlg),
        },
        // 4.4 HMAC-SHA2 (HS256).
        Case {
            name: "4.4 compact",
            token: compact(&e44),
            keys: hmac_keys(),
            want: Outcome::Verified,
        },
        // 4.5 detached content: the compact form has an empty payload.
        Case {
            name: "4.5 detached",
            token: compact(&e45),
            keys: hmac_keys(),
            want: refused(JwtErrorKind::Malformed),
        },
        Case {
            name: "4.5 payload reattached",
            token: sig_input_and(&e45["signing"]),
            keys: hmac_keys(),
            want: Outcome::Verified,
        },
        // 4.6 kid in the unprotected header: JSON serialization only; its
        // compact equivalent (protected header only) verifies with the one
        // key.
        Case {
            name: "4.6 compact equivalent",
            token: format!(
                "{}.{payload_b64}.{}",
                str_of(&e46["signing"], "protected_b64u"),
                str_of(&e46["signing"], "sig")
            ),
            keys: hmac_keys(),
            want: Outcome::Verified,
        },
        Case {
            name: "4.6 flattened JSON serialization",
            token: serde_json::to_string(&e46["output"]["json_flat"]).unwrap(),
            keys: hmac_keys(),
            want: refused(JwtErrorKind::Malformed),
        },
        // 4.7 no protected header at all: a compact form would start with an
        // empty header segment.
        Case {
            name: "4.7 empty protected header",
            token: sig_input_and(&e47["signing"]),
            keys: hmac_keys(),
            want: refused(JwtErrorKind::Malformed),
        },
        // 4.8 three signatures: each one alone, as a compact JWS where it has
        // a protected header.
        Case {
            name: "4.8 signature 1 (RS256) compact equivalent",
            token: sig_input_and(&e48["signing"][0]),
            keys: rsa_for(Algorithm::RS256),
            want: Outcome::Verified,
        },
        Case {
            name: "4.8 signature 2 (ES512, unprotected header only)",
            token: sig_input_and(&e48["signing"][1]),
            keys: hmac_keys(),
            want: refused(JwtErrorKind::Malformed),
        },
        Case {
            name: "4.8 signature 3 (HS256) compact equivalent",
            token: sig_input_and(&e48["signing"][2]),
            keys: hmac_keys(),
            want: Outcome::Verified,
        },
        Case {
            name: "4.8 general JSON serialization",
            token: json_ser(&e48),
            keys: hmac_keys(),
            want: refused(JwtErrorKind::Malformed),
        },
        // RFC 7797: `b64: false` with `crit: ["b64"]`. The literal compact
        // form carries the payload unencoded (spaces): refused before any
        // decoding. With the payload base64url-encoded (constructed, so that
        // the header is reached) the header is refused; detached, the empty
        // payload is refused.
        Case {
            name: "RFC 7797 compact, unencoded payload",
            token: compact(&b64f),
            keys: key_set(std::slice::from_ref(&b64f["input"]["key"]), None),
            want: refused(JwtErrorKind::Malformed),
        },
        Case {
            name: "RFC 7797 header, payload encoded",
            token: {
                let c = compact(&b64f);
                let parts: Vec<&str> = c.split('.').collect();
                format!(
                    "{}.{}.{}",
                    parts[0],
                    b64(str_of(&b64f["input"], "payload")),
                    parts[2]
                )
            },
            keys: key_set(std::slice::from_ref(&b64f["input"]["key"]), None),
            want: refused(JwtErrorKind::UnsupportedHeader),
        },
        Case {
            name: "RFC 7797 detached",
            token: {
                let c = compact(&b64f);
                let parts: Vec<&str> = c.split('.').collect();
                format!("{}..{}", parts[0], parts[2])
            },
            keys: key_set(std::slice::from_ref(&b64f["input"]["key"]), None),
            want: refused(JwtErrorKind::Malformed),
        },
        // RFC 8037 A.4: Ed25519.
        Case {
            name: "RFC 8037 Ed25519 compact",
            token: compact(&ed),
            keys: key_set(&[public_jwk(&ed["input"]["key"])], None),
            want: Outcome::Verified,
        },
        // Keys: a secret is never taken from a published JWKS; an
        // encryption key is never a verification key.
        Case {
            name: "3.5 HMAC key in a JWKS",
            token: compact(&e44),
            keys: key_set_from_json(
                &serde_json::to_vec(&json!({ "keys": [hmac] })).unwrap(),
                None,
            )
            .map_err(|e| jwks_err(&e)),
            want: key_refused("SymmetricInJwks"),
        },
        Case {
            name: "3.6 AES key (use enc)",
            token: compact(&e44),
            keys: key_set(std::slice::from_ref(&aes), None),
            want: key_refused("JwkNotForVerification"),
        },
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let got = run(&c.token, &c.keys);
        if got != c.want {
            failures.push(format!("{}: want {:?}, got {got:?}", c.name, c.want));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 22, "cookbook cases run");

    // The verified payloads are the examples' payloads.
    let keys = rsa_for(Algorithm::RS256).unwrap();
    assert_eq!(
        verify_jws(&compact(&e41), &keys, DEFAULT_MAX_TOKEN_LEN).unwrap(),
        payload.as_bytes()
    );
    let keys = key_set(&[public_jwk(&ed["input"]["key"])], None).unwrap();
    assert_eq!(
        verify_jws(&compact(&ed), &keys, DEFAULT_MAX_TOKEN_LEN).unwrap(),
        str_of(&ed["input"], "payload").as_bytes()
    );
}

/// With `e = 1`, "RSA verification" is the identity: the PKCS#1 v1.5
/// encoding of the hash is a valid signature of anything. Wycheproof's
/// exponentOne vector carries such a forgery (over an empty payload, which
/// we refuse anyway); this one is over a non-empty payload, so only the key
/// and crypto checks stand between it and acceptance.
#[test]
fn rsa_exponent_one_forgery_refused() {
    use sha2::Digest as _;
    portcullis::jwt::ensure_crypto_provider();
    let doc = load("wycheproof/json_web_key_test.json");
    let group = doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["comment"] == "exponentOne")
        .unwrap();
    let key_json = &group["public"]["keys"][0];
    let signing_input = format!(
        "{}.{}",
        b64(r#"{"alg":"RS256","kid":"RS256_2048"}"#),
        b64("foo")
    );
    let mut em = vec![0x00, 0x01];
    // DigestInfo for SHA-256, then the hash.
    let digest_info: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    em.resize(256 - 1 - digest_info.len() - 32, 0xff);
    em.push(0x00);
    em.extend_from_slice(&digest_info);
    em.extend_from_slice(&sha2::Sha256::digest(signing_input.as_bytes()));
    assert_eq!(em.len(), 256);
    let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&em));

    // Our key constructors refuse the key ...
    let j = jwk(key_json).unwrap();
    assert!(VerifyingKey::from_jwk(&j, None, false).is_err());
    assert!(
        matches!(key_set(std::slice::from_ref(key_json), None), Err(e) if e.starts_with("NoUsableKey"))
    );
    // ... and the crypto backend refuses the forgery even given the key.
    let raw = jsonwebtoken::DecodingKey::from_jwk(&j).unwrap();
    let sig = forged.rsplit('.').next().unwrap();
    assert!(
        !matches!(
            jsonwebtoken::crypto::verify(
                sig,
                signing_input.as_bytes(),
                &raw,
                jsonwebtoken::Algorithm::RS256
            ),
            Ok(true)
        ),
        "e = 1 forgery verified in the crypto backend"
    );
}

/// Wycheproof tcIds 367 and 370 are named for base64 padding but carry the
/// unpadded valid token; the padded forms they describe are refused.
#[test]
fn padded_base64_refused() {
    let doc = load("wycheproof/json_web_signature_test.json");
    let group = doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["comment"] == "base64")
        .unwrap();
    let valid = str_of(&tests_of(group)[0], "jws");
    assert_eq!(tests_of(group)[0]["tcId"], 357);
    let keys = key_set(std::slice::from_ref(&group["private"]), None);
    assert_eq!(run(valid, &keys), Outcome::Verified);
    for (i, t) in tests_of(group).iter().enumerate() {
        if [367, 370].contains(&t["tcId"].as_u64().unwrap()) {
            assert_eq!(
                str_of(t, "jws"),
                valid,
                "tcId {} differs from 357 after all (index {i})",
                t["tcId"]
            );
        }
    }
    let parts: Vec<&str> = valid.split('.').collect();
    for padded in [
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        format!("{}.{}==.{}", parts[0], parts[1], parts[2]),
    ] {
        assert_eq!(
            run(&padded, &keys),
            refused(JwtErrorKind::Malformed),
            "{padded}"
        );
    }
}

/// The kid rule behind Wycheproof's duplicate-kid vector, whose second
/// secret is refused for its encoding before the rule is reached.
#[test]
fn duplicate_kids_refused() {
    let doc = load("wycheproof/json_web_key_test.json");
    let group = doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["comment"] == "jws_duplicate_kid")
        .unwrap();
    let first = &group["private"]["keys"][0];
    assert_eq!(
        key_set(&[first.clone(), first.clone()], None).unwrap_err(),
        "DuplicateKid"
    );
}
