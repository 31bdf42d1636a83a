//! Property tests of every parser that sees untrusted input: the `Cookie`
//! header reader, opaque tokens and their digests, JWS segments (through
//! `verify_jws` and `JwtLayer::verify`), CSRF tokens and form bodies
//! (through `CsrfLayer`, their only public surface), and refresh tokens.
//!
//! Two properties each: no input panics, and nothing is accepted that the
//! strict grammar refuses (checked against a plain reference model, by
//! round trips, or by mutating valid inputs one character at a time).
//! Case counts are kept small so the file runs in a few seconds.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use portcullis::core::cookie::{CookieError, find_cookie};
use portcullis::core::{OpaqueToken, TokenDigest};
use portcullis::jwt::{
    Algorithm, JwtIssuer, JwtLayer, KeySet, SigningKey, VerifyingKey, verify_jws,
};
use portcullis::refresh::RefreshToken;
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use proptest::prelude::*;
use sha2::Sha256;
use tower::ServiceExt as _;

const SECRET: &[u8] = b"proptest secret of at least 32 bytes!!";
const ISS: &str = "https://issuer.test";
const AUD: &str = "api";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Strings over the base64url alphabet with some junk mixed in.
fn b64ish(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
            ),
            1 => proptest::sample::select(b"+/=. \t%\"\\;,".to_vec()),
        ],
        len,
    )
    .prop_map(|v| String::from_utf8(v).unwrap())
}

/// Replaces the character at `pos` (modulo the length) by `c`.
fn mutate(s: &str, pos: usize, c: char) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let i = pos % chars.len();
    chars[i] = c;
    chars.into_iter().collect()
}

// ---- cookies ----------------------------------------------------------------

/// The reference model of `find_cookie`: every `;`-separated pair of every
/// header, trimmed of spaces and tabs, split at the first `=`.
fn cookie_model(values: &[String], name: &str) -> Result<Option<String>, CookieError> {
    let mut found = None;
    for text in values {
        for pair in text.split(';') {
            let pair = pair.trim_matches([' ', '\t']);
            if let Some((k, v)) = pair.split_once('=')
                && k == name
            {
                if found.is_some() {
                    return Err(CookieError::Duplicate);
                }
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                found = Some(v.to_owned());
            }
        }
    }
    Ok(found)
}

fn cookie_pair() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("sid".to_owned()),
        Just("a".to_owned()),
        "[a-z]{1,4}",
        Just("sid ".to_owned()),
        Just(" sid".to_owned()),
        Just("\tsid\t".to_owned()),
        Just(String::new())
    ];
    let value = prop_oneof![
        "[ -:<-~]{0,12}",
        Just("\"quoted\"".to_owned()),
        Just(String::new())
    ];
    (name, value, any::<bool>()).prop_map(|(n, v, eq)| if eq { format!("{n}={v}") } else { n })
}

fn cookie_header() -> impl Strategy<Value = String> {
    proptest::collection::vec(cookie_pair(), 0..5).prop_map(|pairs| pairs.join("; "))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn find_cookie_matches_its_model(
        values in proptest::collection::vec(cookie_header(), 0..3),
        name in proptest::sample::select(vec!["sid", "sid ", " sid", "a=b", "", "s"]),
    ) {
        let mut headers = HeaderMap::new();
        for v in &values {
            headers.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        let got = find_cookie(&headers, name).map(|o| o.map(str::to_owned));
        prop_assert_eq!(got, cookie_model(&values, name));
    }

    #[test]
    fn find_cookie_never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            let mut headers = HeaderMap::new();
            headers.append(COOKIE, v);
            let _ = find_cookie(&headers, "sid");
        }
    }
}

// ---- opaque tokens and digests ------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// The hand-written decoder agrees with the base64 crate's strict one:
    /// accepted exactly when the string is 43 base64url characters that
    /// canonically encode 32 bytes, and then to the same bytes.
    #[test]
    fn opaque_token_parse_matches_strict_base64(s in b64ish(41..=45)) {
        let strict = (s.len() == 43 && s.bytes().all(portcullis::core::token::is_base64url))
            .then(|| URL_SAFE_NO_PAD.decode(&s).ok())
            .flatten()
            .filter(|b| b.len() == 32);
        match (OpaqueToken::parse(&s), strict) {
            (Ok(t), Some(bytes)) => {
                prop_assert_eq!(&t.as_bytes()[..], &bytes[..]);
                prop_assert_eq!(t.to_encoded(), s);
            }
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{s:?}: parse {:?}, strict decoder {:?}", got.is_ok(), want.is_some()),
        }
    }

    #[test]
    fn opaque_token_near_misses_refused(bytes in proptest::array::uniform32(any::<u8>()), pos in 0usize..43, c in any::<char>()) {
        let good = OpaqueToken::from_bytes(bytes).to_encoded();
        let bad = mutate(&good, pos, c);
        match OpaqueToken::parse(&bad) {
            Ok(t) => prop_assert_eq!(t.to_encoded(), bad),
            Err(_) => prop_assert_ne!(bad, good),
        }
    }

    #[test]
    fn digest_hex_accepts_only_lower_hex(s in "[0-9a-fA-Fg-z]{62,66}") {
        match TokenDigest::from_hex(&s) {
            Ok(d) => prop_assert_eq!(d.to_hex(), s),
            Err(_) => prop_assert!(s.len() != 64 || s.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
        }
    }
}

// ---- refresh tokens --------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn refresh_token_round_trips_or_refuses(s in prop_oneof![b64ish(64..=68), ".{0,80}"]) {
        if let Some(t) = RefreshToken::parse(&s) {
            prop_assert_eq!(t.to_encoded(), s);
        }
    }

    #[test]
    fn refresh_token_near_misses_refused(pos in 0usize..66, c in any::<char>()) {
        let family = portcullis::refresh::FamilyId::generate().unwrap();
        let good = RefreshToken::first(family).unwrap().to_encoded();
        let bad = mutate(&good, pos, c);
        match RefreshToken::parse(&bad) {
            Some(t) => prop_assert_eq!(t.to_encoded(), bad),
            None => prop_assert_ne!(bad, good),
        }
    }
}

// ---- JWS segments ------------------------------------------------------------------

fn hs256(signed: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signed.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A compact JWS over arbitrary header and payload bytes, correctly signed.
fn signed_jws(header: &[u8], payload: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = hs256(&signed);
    format!("{signed}.{sig}")
}

fn keys() -> KeySet {
    KeySet::new([VerifyingKey::hmac(Some("k"), Algorithm::HS256, SECRET).unwrap()]).unwrap()
}

fn layer() -> &'static JwtLayer {
    static LAYER: OnceLock<JwtLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        JwtLayer::builder(keys())
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap()
    })
}

fn issuer() -> &'static JwtIssuer {
    static ISSUER: OnceLock<JwtIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, SECRET).unwrap())
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap()
    })
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// JSON-ish text: mostly objects with the fields that matter, sometimes
/// broken, duplicated or of the wrong type.
fn json_object(fields: Vec<(&'static str, serde_json::Value)>) -> impl Strategy<Value = Vec<u8>> {
    let n = fields.len();
    (
        proptest::sample::subsequence(fields, 0..=n),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(fields, dup, breakage)| {
            let mut parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
                .collect();
            if dup && let Some(first) = parts.first().cloned() {
                parts.push(first);
            }
            let text = format!("{{{}}}", parts.join(","));
            match breakage {
                0 | 1 => text.into_bytes(),
                _ => text.as_bytes()[..text.len() / 2].to_vec(),
            }
        })
}

fn header_strategy() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::json;
    json_object(vec![
        ("alg", json!("HS256")),
        ("typ", json!("at+jwt")),
        ("alg", json!("none")),
        ("crit", json!(["exp"])),
        ("cty", json!("JWT")),
        ("b64", json!(false)),
        ("kid", json!("k")),
    ])
}

fn payload_strategy() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::json;
    let t = now();
    json_object(vec![
        ("iss", json!(ISS)),
        ("aud", json!(AUD)),
        ("exp", json!(t + 600)),
        ("sub", json!("alice")),
        ("iat", json!(t)),
        ("exp", json!(t - 600)),
        ("nbf", json!(t + 600)),
        ("aud", json!(["other", AUD])),
        ("iss", json!("https://evil.test")),
        ("nonce", json!("n")),
        ("token_use", json!("refresh")),
        ("exp", json!("soon")),
    ])
}

/// What the strict rules say about a correctly signed token.
fn strictly_acceptable(header: &[u8], payload: &[u8]) -> bool {
    let unique = |b: &[u8]| -> Option<serde_json::Map<String, serde_json::Value>> {
        let v: serde_json::Value = serde_json::from_slice(b).ok()?;
        let map = v.as_object()?.clone();
        // Duplicate keys: the map would have lost one.
        let text = std::str::from_utf8(b).ok()?;
        let keys = map
            .keys()
            .filter(|k| text.matches(&format!("\"{k}\":")).count() > 1)
            .count();
        (keys == 0).then_some(map)
    };
    let (Some(h), Some(p)) = (unique(header), unique(payload)) else {
        return false;
    };
    let t = now();
    let aud_ok = match p.get("aud") {
        Some(serde_json::Value::String(a)) => a == AUD,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x == AUD),
        _ => false,
    };
    h.get("alg") == Some(&serde_json::json!("HS256"))
        && h.get("typ") == Some(&serde_json::json!("at+jwt"))
        && !h.contains_key("crit")
        && !h.contains_key("b64")
        && !h.contains_key("cty")
        && p.get("exp")
            .and_then(serde_json::Value::as_i64)
            .is_some_and(|e| e + 5 >= t)
        && p.get("nbf")
            .and_then(serde_json::Value::as_i64)
            .is_none_or(|n| n <= t + 5)
        && p.get("iss") == Some(&serde_json::json!(ISS))
        && aud_ok
        && !p.contains_key("nonce")
        && !p.contains_key("token_use")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn verify_jws_never_panics(s in prop_oneof![b64ish(0..=120), ".{0,200}"]) {
        let _ = verify_jws(&s, &keys(), 8192);
        let _ = rt().block_on(layer().verify(&s));
    }

    /// Correctly signed tokens over arbitrary headers and payloads: the
    /// layer accepts exactly those the strict rules accept.
    #[test]
    fn layer_accepts_only_strictly_valid_claims(h in header_strategy(), p in payload_strategy()) {
        let token = signed_jws(&h, &p);
        let accepted = rt().block_on(layer().verify(&token)).is_ok();
        prop_assert_eq!(accepted, strictly_acceptable(&h, &p),
            "header {} payload {}", String::from_utf8_lossy(&h), String::from_utf8_lossy(&p));
        // verify_jws checks structure, header and signature only.
        if accepted {
            prop_assert_eq!(verify_jws(&token, &keys(), 8192).unwrap(), p);
        }
    }

    /// One character changed anywhere in a valid token: refused (the
    /// trailing bits of each segment included, by the canonical encoding).
    #[test]
    fn near_valid_tokens_refused(pos in any::<usize>(), c in prop_oneof![
        proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.".to_vec()).prop_map(char::from),
        any::<char>(),
    ]) {
        let good = issuer().token("alice").mint().unwrap().token;
        prop_assert!(rt().block_on(layer().verify(&good)).is_ok());
        let bad = mutate(&good, pos, c);
        if bad != good {
            prop_assert!(rt().block_on(layer().verify(&bad)).is_err(), "accepted {bad}");
            prop_assert!(verify_jws(&bad, &keys(), 8192).is_err(), "verify_jws accepted {bad}");
        }
    }
}

// ---- CSRF tokens and form bodies (through the layer) ----------------------------

struct Csrf {
    app: Router,
    cookie: String,
    token: String,
    accepted: Arc<AtomicUsize>,
}

fn csrf() -> &'static Csrf {
    static CSRF: OnceLock<Csrf> = OnceLock::new();
    CSRF.get_or_init(|| {
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let config = CsrfConfig::signed([0x5a; 32], SignedBinding::pre_session_only());
        let app = Router::new()
            .route(
                "/token",
                get(|t: CsrfToken| async move { t.as_str().to_owned() }),
            )
            .route(
                "/act",
                post(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "done" }
                }),
            )
            .layer(CsrfLayer::new(config).unwrap());
        let (cookie, token) = rt().block_on(async {
            let resp = app
                .clone()
                .oneshot(Request::get("/token").body(Body::empty()).unwrap())
                .await
                .unwrap();
            let cookie = resp.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            (cookie, String::from_utf8(body.to_vec()).unwrap())
        });
        Csrf {
            app,
            cookie,
            token,
            accepted,
        }
    })
}

/// Posts to `/act`; returns whether the handler ran.
fn csrf_post(header_token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> bool {
    let c = csrf();
    let before = c.accepted.load(Ordering::SeqCst);
    let mut req = Request::post("/act")
        .header("cookie", &c.cookie)
        .header("sec-fetch-site", "same-origin");
    if let Some(t) = header_token {
        match HeaderValue::from_str(t) {
            Ok(v) => req = req.header("x-csrf-token", v),
            Err(_) => return false,
        }
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let status = rt().block_on(async {
        let resp = c
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        resp.status()
    });
    let ran = c.accepted.load(Ordering::SeqCst) > before;
    assert_eq!(ran, status == StatusCode::OK, "status {status}");
    ran
}

fn form_fields() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[a-z]{1,6}=[a-zA-Z0-9%+]{0,8}", 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn csrf_header_tokens(t in prop_oneof![b64ish(168..=174), ".{0,40}"]) {
        let ran = csrf_post(Some(&t), None, Vec::new());
        prop_assert_eq!(ran, t == csrf().token);
    }

    #[test]
    fn csrf_near_valid_header_tokens_refused(pos in any::<usize>(), c in prop_oneof![
        proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()).prop_map(char::from),
        any::<char>(),
    ]) {
        let good = csrf().token.clone();
        let bad = mutate(&good, pos, c);
        prop_assume!(bad != good);
        prop_assert!(!csrf_post(Some(&bad), None, Vec::new()));
    }

    #[test]
    fn csrf_arbitrary_form_bodies_refused(body in proptest::collection::vec(any::<u8>(), 0..300), multipart in any::<bool>()) {
        let ct = if multipart { "multipart/form-data; boundary=XyZ" } else { "application/x-www-form-urlencoded" };
        prop_assert!(!csrf_post(None, Some(ct), body));
    }

    #[test]
    fn csrf_form_token_found_among_other_fields(before in form_fields(), after in form_fields()) {
        let token = csrf().token.clone();
        let mut fields = before;
        fields.push(format!("csrf_token={token}"));
        fields.extend(after);
        prop_assert!(csrf_post(None, Some("application/x-www-form-urlencoded"), fields.join("&").into_bytes()));
        // The same body with the token one character off: refused.
        let body = fields.join("&").replace(&token, &mutate(&token, 7, if token.as_bytes()[7] == b'A' { 'B' } else { 'A' }));
        prop_assert!(!csrf_post(None, Some("application/x-www-form-urlencoded"), body.into_bytes()));
    }

    #[test]
    fn csrf_multipart_token_found(pre in "[a-z]{0,10}") {
        let token = csrf().token.clone();
        let body = format!(
            "--XyZ\r\ncontent-disposition: form-data; name=\"note\"\r\n\r\n{pre}\r\n--XyZ\r\ncontent-disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--XyZ--\r\n"
        );
        prop_assert!(csrf_post(None, Some("multipart/form-data; boundary=XyZ"), body.into_bytes()));
    }
}
