//! JWTs: the compact form (`verify_jws`, `JwtLayer::verify`), the
//! protected header and the claims JSON.
//!
//! The key set holds an HS256 key the harness knows, so a target can sign
//! whatever header and claims the fuzzer builds and reach the claim rules
//! past the signature check; and the ES256 and RS256 test keys of
//! `tests/fixtures`, for the asymmetric paths.

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use portcullis_core::{ManualClock, SharedClock};
use portcullis_jwt::{
    Algorithm, Claims, JwtError, JwtErrorKind, JwtLayer, KeySet, VerifyingKey, verify_jws,
};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// The HS256 secret the harness signs with.
pub const HS256_SECRET: &[u8] = b"portcullis fuzz HS256 key: 32+ bytes long";
/// The fixed clock, seconds since the epoch.
pub const NOW: i64 = 1_700_000_000;
/// [`NOW`] as a float, for claims read as JSON numbers.
const NOW_F64: f64 = 1_700_000_000.0;
/// The issuer and audience the layers require.
pub const ISS: &str = "https://auth.example.com";
/// See [`ISS`].
pub const AUD: &str = "api";
/// The size limit given to `verify_jws`.
pub const MAX_LEN: usize = 8 * 1024;

/// The key set and the layers every JWT target verifies with.
pub struct Setup {
    /// `hs` (HS256), `es` (ES256), `rs` (RS256).
    pub keys: KeySet,
    /// No token cache.
    pub plain: JwtLayer,
    /// With the token cache: every decision must equal `plain`'s.
    pub cached: JwtLayer,
    /// Custom claims as a JSON value (the second, custom-claims pass).
    pub valued: JwtLayer<Value>,
}

/// Builds the shared setup once.
///
/// # Panics
///
/// When the test keys do not load.
pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let hs = VerifyingKey::hmac(Some("hs"), Algorithm::HS256, HS256_SECRET).expect("hs");
        let es = VerifyingKey::from_pem(
            Some("es"),
            Algorithm::ES256,
            include_bytes!("../../tests/fixtures/p256-public.pem"),
        )
        .expect("es");
        let rs = VerifyingKey::from_pem(
            Some("rs"),
            Algorithm::RS256,
            include_bytes!("../../tests/fixtures/rsa2048-public.pem"),
        )
        .expect("rs");
        let keys = KeySet::new([hs, es, rs]).expect("key set");
        let clock: SharedClock = Arc::new(ManualClock::new(NOW.unsigned_abs() * 1000));
        let builder = |cache| {
            JwtLayer::builder(keys.clone())
                .issuer(ISS)
                .audience(AUD)
                .cache(cache)
                .clock(Arc::clone(&clock))
        };
        Setup {
            plain: builder(0).build().expect("layer"),
            cached: builder(64).build().expect("layer"),
            valued: builder(0).claims::<Value>().build().expect("layer"),
            keys,
        }
    })
}

/// `header.payload` signed with [`HS256_SECRET`] (the `hmac` crate, not
/// the verifier's aws-lc-rs).
#[must_use]
pub fn sign_hs256(header: &[u8], payload: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(HS256_SECRET).expect("any key length");
    mac.update(signed.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn same_verdict<A, B>(a: &Result<Claims<A>, JwtError>, b: &Result<Claims<B>, JwtError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a.registered() == b.registered(),
        (Err(a), Err(b)) => a.kind() == b.kind(),
        _ => false,
    }
}

/// Every layer's verdict on `token`, checked against each other and
/// against `verify_jws`; returns the plain layer's verdict and
/// `verify_jws`'s.
fn verdicts(token: &str) -> (Result<Claims, JwtError>, Result<Vec<u8>, JwtError>) {
    let s = setup();
    let jws = verify_jws(token, &s.keys, MAX_LEN);
    let plain = crate::block_on(s.plain.verify(token));
    let cached = crate::block_on(s.cached.verify(token));
    let again = crate::block_on(s.cached.verify(token));
    let valued = crate::block_on(s.valued.verify(token));
    assert!(
        same_verdict(&plain, &cached),
        "the token cache changed a verdict"
    );
    assert!(
        same_verdict(&plain, &again),
        "a cache hit changed a verdict"
    );
    assert!(
        same_verdict(&plain, &valued),
        "custom claims changed a verdict"
    );
    if let Ok(claims) = &plain {
        // Access-token rules only add to the plain JWS rules.
        let payload = jws.as_ref().expect("an access token is a valid JWS");
        check_accepted_claims(claims, payload);
        let value: Value = serde_json::from_slice(payload).expect("JSON");
        let custom = valued.as_ref().expect("same verdict");
        assert_eq!(custom.custom(), &value, "custom claims are the payload");
    }
    if let Ok(payload) = &jws {
        check_accepted_jws(token, payload);
    }
    (plain, jws)
}

/// What any JWS `verify_jws` accepts satisfies, checked independently.
fn check_accepted_jws(token: &str, payload: &[u8]) {
    assert!(token.len() <= MAX_LEN);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "three segments");
    let decoded: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| URL_SAFE_NO_PAD.decode(p).expect("strict base64url"))
        .collect();
    for (p, d) in parts.iter().zip(&decoded) {
        assert!(!p.is_empty());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(d),
            *p,
            "non-canonical base64url accepted"
        );
    }
    assert_eq!(decoded[1], payload, "payload is the middle segment");
    let header: Value = serde_json::from_slice(&decoded[0]).expect("header is JSON");
    assert_eq!(
        duplicate_keys(&decoded[0]),
        Some(false),
        "header with duplicate keys"
    );
    let header = header.as_object().expect("header is an object");
    for refused in ["crit", "b64"] {
        assert!(!header.contains_key(refused), "{refused} accepted");
    }
    let alg = header.get("alg").and_then(Value::as_str).expect("alg");
    assert_ne!(alg.to_ascii_lowercase(), "none");
    // The harness can recompute HMAC signatures: an HS256 token is
    // accepted only with the right one.
    if alg == "HS256" {
        let mut mac = Hmac::<Sha256>::new_from_slice(HS256_SECRET).expect("any key length");
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert!(
            mac.verify_slice(&decoded[2]).is_ok(),
            "bad HS256 signature accepted"
        );
    }
}

/// What any accepted access token satisfies, checked against the payload
/// read with `serde_json` alone.
fn check_accepted_claims(claims: &Claims, payload: &[u8]) {
    assert_eq!(
        duplicate_keys(payload),
        Some(false),
        "claims with duplicate keys"
    );
    let value: Map<String, Value> = serde_json::from_slice(payload).expect("an object");
    let reg = claims.registered();
    assert_eq!(reg.sub.as_deref(), value.get("sub").and_then(Value::as_str));
    assert_eq!(reg.iss.as_deref(), Some(ISS));
    assert_eq!(value.get("iss").and_then(Value::as_str), Some(ISS));
    let aud = value.get("aud").expect("aud");
    assert!(
        aud.as_str() == Some(AUD)
            || aud
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(AUD))),
        "audience"
    );
    let date = |name: &str| value.get(name).and_then(Value::as_f64).map(f64::floor);
    let exp = date("exp").expect("exp");
    assert!(exp + 5.0 >= NOW_F64, "expired token accepted");
    // The verifier's whole seconds are the JSON number rounded down.
    let whole: f64 = reg.exp.expect("exp").to_string().parse().expect("a number");
    assert_eq!(whole, exp, "exp is not the JSON number rounded down");
    for name in ["nbf", "iat"] {
        if let Some(t) = date(name) {
            assert!(t <= NOW_F64 + 5.0, "{name} in the future accepted");
        }
    }
    assert!(!value.contains_key("nonce"), "id token accepted");
}

/// Whether a JSON text holds an object with a repeated key at any depth
/// (`None` when it is not JSON). Written apart from the crate's check.
#[must_use]
pub fn duplicate_keys(json: &[u8]) -> Option<bool> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Dup(bool);
    impl<'de> Visitor<'de> for &mut Dup {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(&mut *self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !keys.insert(k) {
                    self.0 = true;
                }
                map.next_value_seed(&mut *self)?;
            }
            Ok(())
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for &mut Dup {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    let _ = IgnoredAny;
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut dup = Dup(false);
    (&mut de).deserialize_any(&mut dup).ok()?;
    de.end().ok()?;
    Some(dup.0)
}

/// `jwt_compact`: any string, as a compact JWS and as an access token.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run_compact(data: &[u8]) {
    let _ = verdicts(crate::text(data));
}

/// The protected headers the claims target signs with: (header, whether
/// the access-token layer accepts it).
const HEADERS: &[(&str, bool)] = &[
    (r#"{"alg":"HS256","typ":"at+jwt","kid":"hs"}"#, true),
    (
        r#"{"typ":"application/at+jwt","kid":"hs","alg":"HS256"}"#,
        true,
    ),
    (
        r#" { "kid" : "hs" , "alg" : "HS256" , "typ" : "AT+JWT" } "#,
        true,
    ),
    (r#"{"alg":"HS256","kid":"hs"}"#, false),
    (r#"{"alg":"HS256","kid":"hs","typ":"JWT"}"#, false),
];

/// `jwt_claims` input: a header and claims the harness signs.
#[derive(Debug, Arbitrary)]
pub struct ClaimsInput {
    header: HeaderInput,
    payload: PayloadInput,
}

#[derive(Debug, Arbitrary)]
enum HeaderInput {
    /// One of [`HEADERS`].
    Known(u8),
    /// Any bytes.
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum PayloadInput {
    /// Any bytes as the payload.
    Raw(Vec<u8>),
    /// A claims object built from parts, with a known verdict.
    Built(Built),
}

#[derive(Debug, Arbitrary)]
struct Built {
    exp: Option<Time>,
    nbf: Option<Time>,
    iat: Option<Time>,
    iss: Option<Choice>,
    aud: Option<AudInput>,
    sub: Option<String>,
    nonce: bool,
    token_use: Option<Choice>,
    typ: Option<Choice>,
    extra: Vec<(String, ExtraValue)>,
}

#[derive(Debug, Arbitrary)]
enum Time {
    Relative(i16),
    Fraction(i16),
    Absolute(i64),
}

impl Time {
    fn json(&self) -> Value {
        match *self {
            Self::Relative(d) => json!(NOW + i64::from(d)),
            Self::Fraction(d) => json!(NOW_F64 + f64::from(d) + 0.5),
            Self::Absolute(t) => json!(t),
        }
    }

    /// The whole seconds the verifier must see.
    fn secs(&self) -> i64 {
        match *self {
            Self::Relative(d) | Self::Fraction(d) => NOW + i64::from(d),
            Self::Absolute(t) => t,
        }
    }
}

/// A string: one the layer expects, or any.
#[derive(Debug, Arbitrary)]
enum Choice {
    Expected(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum AudInput {
    One(Choice),
    Many(Vec<Choice>),
}

#[derive(Debug, Arbitrary)]
enum ExtraValue {
    Int(i64),
    Text(String),
    List(Vec<String>),
    Object(Vec<(String, i64)>),
}

impl ExtraValue {
    fn json(&self) -> Value {
        match self {
            Self::Int(i) => json!(i),
            Self::Text(s) => json!(s),
            Self::List(l) => json!(l),
            // A map: no duplicate keys by construction.
            Self::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
            }
        }
    }
}

fn choose(c: &Choice, expected: &[&str]) -> String {
    match c {
        Choice::Expected(i) => expected[usize::from(*i) % expected.len()].to_owned(),
        Choice::Other(s) => s.clone(),
    }
}

/// RFC 9068 `typ` as the verifier compares it: trimmed, without an
/// `application/` prefix, case-insensitive.
fn typ_norm(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    s.strip_prefix("application/")
        .map_or(s.clone(), str::to_owned)
}

impl Built {
    /// The claims object and whether the claim rules accept it.
    fn build(&self) -> (Value, bool) {
        let mut m = Map::new();
        let mut ok = true;
        match &self.exp {
            Some(t) => {
                m.insert("exp".into(), t.json());
                ok &= NOW <= t.secs().saturating_add(5);
            }
            None => ok = false,
        }
        for (name, t) in [("nbf", &self.nbf), ("iat", &self.iat)] {
            if let Some(t) = t {
                m.insert(name.into(), t.json());
                ok &= t.secs() <= NOW + 5;
            }
        }
        let iss = self.iss.as_ref().map(|c| choose(c, &[ISS]));
        ok &= iss.as_deref() == Some(ISS);
        if let Some(iss) = iss {
            m.insert("iss".into(), json!(iss));
        }
        match &self.aud {
            Some(AudInput::One(c)) => {
                let a = choose(c, &[AUD]);
                ok &= a == AUD;
                m.insert("aud".into(), json!(a));
            }
            Some(AudInput::Many(cs)) => {
                let a: Vec<String> = cs.iter().map(|c| choose(c, &[AUD, "other"])).collect();
                ok &= a.iter().any(|x| x == AUD);
                m.insert("aud".into(), json!(a));
            }
            None => ok = false,
        }
        if let Some(sub) = &self.sub {
            m.insert("sub".into(), json!(sub));
        }
        if self.nonce {
            m.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
            ok = false;
        }
        if let Some(c) = &self.token_use {
            let u = choose(c, &["access", "ACCESS", "id", "refresh"]);
            ok &= u.eq_ignore_ascii_case("access");
            m.insert("token_use".into(), json!(u));
        }
        if let Some(c) = &self.typ {
            let t = choose(
                c,
                &["Bearer", "at+jwt", "application/AT+JWT", "Refresh", "ID"],
            );
            ok &= t.eq_ignore_ascii_case("bearer") || typ_norm(&t) == "at+jwt";
            m.insert("typ".into(), json!(t));
        }
        for (k, v) in &self.extra {
            // Extra claims under names no rule reads.
            m.entry(format!("x_{k}")).or_insert_with(|| v.json());
        }
        (Value::Object(m), ok)
    }
}

/// `jwt_claims`: a header and claims JSON signed with the harness's
/// HS256 key, so every input reaches the header and claim rules.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run_claims(input: &ClaimsInput) {
    let (header, header_ok): (Vec<u8>, Option<bool>) = match &input.header {
        HeaderInput::Known(i) => {
            let (h, ok) = HEADERS[usize::from(*i) % HEADERS.len()];
            (h.as_bytes().to_vec(), Some(ok))
        }
        HeaderInput::Raw(raw) => (raw.clone(), None),
    };
    let (payload, claims_ok) = match &input.payload {
        PayloadInput::Raw(raw) => (raw.clone(), None),
        PayloadInput::Built(b) => {
            let (v, ok) = b.build();
            (serde_json::to_vec(&v).expect("JSON"), Some(ok))
        }
    };
    let token = sign_hs256(&header, &payload);
    let (plain, jws) = verdicts(&token);
    let fits = token.len() <= MAX_LEN && !header.is_empty() && !payload.is_empty();
    if header_ok.is_some() && fits {
        // A known good header and a valid signature: a JWS, whatever the
        // payload.
        assert_eq!(
            jws.as_ref().ok(),
            Some(&payload),
            "{:?}",
            jws.as_ref().err()
        );
    }
    if let (Some(h), Some(c), true) = (header_ok, claims_ok, fits) {
        {
            match &plain {
                Ok(_) => assert!(h && c, "accepted against the rules"),
                Err(e) => {
                    assert!(!(h && c), "refused a valid token: {:?}", e.kind());
                    if h {
                        assert!(
                            matches!(
                                e.kind(),
                                JwtErrorKind::MissingExp
                                    | JwtErrorKind::Expired
                                    | JwtErrorKind::NotYetValid
                                    | JwtErrorKind::IssuedInFuture
                                    | JwtErrorKind::BadIssuer
                                    | JwtErrorKind::BadAudience
                                    | JwtErrorKind::WrongTokenType
                            ),
                            "claims refused for {:?}",
                            e.kind()
                        );
                    }
                }
            }
        }
    }
}
