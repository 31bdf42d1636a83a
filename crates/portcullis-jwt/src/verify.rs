//! The verification decision, as plain functions (the layer stays thin).

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aws_lc_rs::hmac;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::alg::Algorithm;
use crate::claims::{Claims, NoCustomClaims, RegisteredClaims, registered_unique};
use crate::error::{JwtError, JwtErrorKind};
use crate::json::check_object_str;
use crate::key::VerifyingKey;
use crate::source::KeyLookup;

/// Default limit on a token's length.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Default clock leeway.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// The largest clock leeway [`Validation::leeway`] accepts. Revocation
/// entries outlive a token's `exp` by this much, so a revoked token cannot
/// come back while any layer would still accept it.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
const MAX_KID_LEN: usize = 256;

/// What a token must satisfy besides its signature.
///
/// Strict by default: `exp` required; `nbf` and `iat` checked; 5 s leeway;
/// header `typ` must be `at+jwt` (RFC 9068); id tokens (`nonce`) and tokens
/// a payload marks as refresh or id tokens refused; `crit`, `b64` and
/// `cty: JWT` refused; duplicate JSON keys refused; at most 8 KiB.
#[derive(Debug, Clone)]
#[must_use]
pub struct Validation {
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: i64,
    pub(crate) typ: Vec<String>,
    pub(crate) required: Vec<&'static str>,
    pub(crate) max_len: usize,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: 5,
            typ: vec!["at+jwt".into()],
            required: Vec::new(),
            max_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }
}

/// A claim [`Validation::require_claim`] can require.
pub const REQUIRABLE_CLAIMS: [&str; 6] = ["sub", "iat", "jti", "sid", "client_id", "nbf"];

impl Validation {
    /// Accepts tokens whose `iss` is `issuer` (call again to trust several).
    /// A token without `iss` is then refused.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` names `audience` (call again for several).
    /// A token without `aud` is then refused.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock leeway for `exp`, `nbf` and `iat` (default 5 s; at most 5 min).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = i64::try_from(leeway.min(MAX_LEEWAY).as_secs()).unwrap_or(300);
        self
    }

    /// Also accepts header `typ` value `typ` (compared case-insensitively,
    /// with or without `application/`). For issuers that label access tokens
    /// `JWT`; id and refresh tokens stay refused by their claims.
    pub fn accept_typ(mut self, typ: impl Into<String>) -> Self {
        self.typ.push(typ.into());
        self
    }

    /// Requires a claim (one of [`REQUIRABLE_CLAIMS`]; others are ignored).
    pub fn require_claim(mut self, claim: &str) -> Self {
        if let Some(c) = REQUIRABLE_CLAIMS.iter().find(|c| **c == claim) {
            self.required.push(c);
        }
        self
    }

    /// The largest token accepted, in bytes (default 8 KiB).
    pub const fn max_token_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    pub(crate) fn has_issuer(&self) -> bool {
        !self.issuers.is_empty()
    }

    pub(crate) fn has_audience(&self) -> bool {
        !self.audiences.is_empty()
    }
}

/// The three segments of a compact JWS, after the cheap checks.
pub(crate) struct Segments<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    /// `header.payload`, the signed bytes.
    pub(crate) signed: &'a str,
}

fn err(kind: JwtErrorKind) -> JwtError {
    JwtError::new(kind)
}

/// Length and character set, before any decoding: exactly three non-empty
/// base64url segments.
pub(crate) fn split(token: &str, max_len: usize) -> Result<Segments<'_>, JwtError> {
    if token.len() > max_len {
        return Err(err(JwtErrorKind::TooLarge));
    }
    // The first dot searched from the start and the last from the end (so
    // the search runs over the short header and signature, not the long
    // payload), and nothing but base64url around and between them (a
    // branch-free pass; a third dot is not base64url).
    let malformed = || err(JwtErrorKind::Malformed);
    let (h, rest) = token.split_once('.').ok_or_else(malformed)?;
    let (p, s) = rest.rsplit_once('.').ok_or_else(malformed)?;
    if !(all_base64url(h) && all_base64url(p) && all_base64url(s)) {
        return Err(malformed());
    }
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(err(JwtErrorKind::Malformed));
    }
    // A base64url length of 1 mod 4 can encode nothing.
    if [h, p, s].iter().any(|x| x.len() % 4 == 1) {
        return Err(err(JwtErrorKind::Malformed));
    }
    Ok(Segments {
        header: h,
        payload: p,
        signature: s,
        signed: &token[..h.len() + 1 + p.len()],
    })
}

/// Whether every byte is in the base64url alphabet. Branch-free, so the
/// compiler checks many bytes per instruction (a token is hundreds of
/// bytes, checked on every request).
fn all_base64url(x: &str) -> bool {
    x.bytes().fold(true, |ok, b| {
        let lower = b | 0x20;
        ok & (lower.is_ascii_lowercase() | b.is_ascii_digit() | (b == b'-') | (b == b'_'))
    })
}

/// Strict base64url: the engine refuses padding and non-canonical trailing
/// bits.
pub(crate) fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| err(JwtErrorKind::Malformed))
}

/// [`b64`], handing the bytes to `f`: decoded into a stack buffer of `N`
/// bytes when they are sure to fit (no allocation on the hot path), into
/// a vector otherwise. The same engine, so the same strictness.
fn with_b64<const N: usize, R>(
    segment: &str,
    f: impl FnOnce(&[u8]) -> Result<R, JwtError>,
) -> Result<R, JwtError> {
    // At most 3 bytes per 4 characters, plus 2 for a partial last group.
    if segment.len() / 4 * 3 + 2 <= N {
        let mut buf = [0u8; N];
        let n = URL_SAFE_NO_PAD
            .decode_slice(segment, &mut buf)
            .map_err(|_| err(JwtErrorKind::Malformed))?;
        f(buf.get(..n).ok_or_else(|| err(JwtErrorKind::Malformed))?)
    } else {
        f(&b64(segment)?)
    }
}

/// Stack room for a decoded payload (a typical access token's is a few
/// hundred bytes; larger ones are decoded into a vector).
const PAYLOAD_STACK: usize = 1024;
/// Stack room for a decoded signature: HMAC and ECDSA ones fit (RSA ones
/// are decoded into a vector).
const SIGNATURE_STACK: usize = 160;

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cty: Option<Cow<'a, str>>,
    /// Present with any value, `null` included: refused.
    #[serde(default, deserialize_with = "crate::claims::present")]
    crit: bool,
    /// Present with any value, `null` included: refused.
    #[serde(default, deserialize_with = "crate::claims::present")]
    b64: bool,
    // `jwk`, `jku`, `x5u`, `x5c` are deliberately not read: keys come from
    // the configured key source only.
}

/// The parsed header: what the key lookup needs.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<Arc<str>>,
}

fn typ_matches(got: &str, allowed: &[String]) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        match (s.get(..12), s.get(12..)) {
            (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("application/") => {
                rest.to_ascii_lowercase()
            }
            _ => s.to_ascii_lowercase(),
        }
    };
    let got = norm(got);
    allowed.iter().any(|a| norm(a) == got)
}

pub(crate) fn parse_header(seg: &Segments<'_>, v: &Validation) -> Result<Header, JwtError> {
    parse_header_typ(seg, Some(&v.typ))
}

/// Parses the protected header; `typ` is checked when `allowed` is given
/// (access tokens), and optional otherwise (plain JWS).
pub(crate) fn parse_header_typ(
    seg: &Segments<'_>,
    allowed: Option<&[String]>,
) -> Result<Header, JwtError> {
    let raw = b64(seg.header)?;
    // UTF-8 once for the whole header, not again inside every string.
    let text = std::str::from_utf8(&raw).map_err(|_| err(JwtErrorKind::BadJson))?;
    check_object_str(text).map_err(|()| err(JwtErrorKind::BadJson))?;
    let h: RawHeader<'_> = serde_json::from_str(text).map_err(|_| err(JwtErrorKind::BadJson))?;
    let alg = Algorithm::parse(&h.alg).ok_or_else(|| err(JwtErrorKind::UnsupportedAlg))?;
    if h.crit || h.b64 {
        return Err(err(JwtErrorKind::UnsupportedHeader));
    }
    if h.cty
        .as_deref()
        .is_some_and(|c| typ_matches(c, &["JWT".to_owned()]))
    {
        return Err(err(JwtErrorKind::UnsupportedHeader));
    }
    if let Some(allowed) = allowed {
        match h.typ.as_deref() {
            Some(t) if typ_matches(t, allowed) => {}
            _ => return Err(err(JwtErrorKind::WrongTokenType)),
        }
    }
    if h.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
        return Err(err(JwtErrorKind::UnknownKey));
    }
    Ok(Header {
        alg,
        kid: h.kid.map(|k| Arc::from(k.as_ref())),
    })
}

/// HMAC keys with their key schedule computed once, per verifying key.
///
/// `jsonwebtoken::crypto::verify` builds a fresh HMAC key (two SHA-2 block
/// compressions and an allocation) on every call; a layer keeps the
/// prepared key of each HMAC verifying key it has seen instead. An entry
/// holds its `Arc<VerifyingKey>`, so a pointer match is the same key (the
/// allocation cannot be reused while the entry lives). Bounded: the oldest
/// entry goes when a rotation brings more keys than it holds.
#[derive(Default)]
pub(crate) struct HmacKeys {
    keys: RwLock<Vec<(Arc<VerifyingKey>, hmac::Key)>>,
}

const MAX_PREPARED_HMAC_KEYS: usize = 16;

impl HmacKeys {
    /// Verifies `tag` over `msg` with `key` in constant time; `None` when
    /// `key` is not an HMAC key.
    fn verify(&self, key: &Arc<VerifyingKey>, msg: &[u8], tag: &[u8]) -> Option<bool> {
        let alg = match key.alg() {
            Algorithm::HS256 => hmac::HMAC_SHA256,
            Algorithm::HS384 => hmac::HMAC_SHA384,
            Algorithm::HS512 => hmac::HMAC_SHA512,
            _ => return None,
        };
        {
            let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, k)) = keys.iter().find(|(v, _)| Arc::ptr_eq(v, key)) {
                return Some(hmac::verify(k, msg, tag).is_ok());
            }
        }
        let jsonwebtoken::DecodingKeyKind::SecretOrDer(secret) = key.decoding_key().kind() else {
            return None;
        };
        let prepared = hmac::Key::new(alg, secret);
        let ok = hmac::verify(&prepared, msg, tag).is_ok();
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if !keys.iter().any(|(v, _)| Arc::ptr_eq(v, key)) {
            if keys.len() >= MAX_PREPARED_HMAC_KEYS {
                keys.remove(0);
            }
            keys.push((Arc::clone(key), prepared));
        }
        Some(ok)
    }
}

/// Parsed protected headers by their exact base64url segment.
///
/// An issuer puts the same header on every token it mints, and what
/// [`parse_header`] returns is a function of the segment's bytes and of the
/// layer's fixed [`Validation`] alone; so a layer keeps the headers it has
/// already parsed successfully, compared byte for byte, and skips decoding
/// and parsing them again (two JSON passes). Refused headers are never
/// kept. Bounded: the oldest entry goes when it is full.
#[derive(Default)]
pub(crate) struct HeaderCache {
    entries: RwLock<Vec<(Box<str>, Header)>>,
}

const MAX_CACHED_HEADERS: usize = 16;

impl HeaderCache {
    fn parse(&self, seg: &Segments<'_>, v: &Validation) -> Result<Header, JwtError> {
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, h)) = entries.iter().find(|(s, _)| **s == *seg.header) {
                return Ok(h.clone());
            }
        }
        let header = parse_header(seg, v)?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if !entries.iter().any(|(s, _)| **s == *seg.header) {
            if entries.len() >= MAX_CACHED_HEADERS {
                entries.remove(0);
            }
            entries.push((seg.header.into(), header.clone()));
        }
        Ok(header)
    }
}

/// What a layer prepares once and reuses for every token: HMAC key
/// schedules and parsed headers.
#[derive(Default)]
pub(crate) struct Prepared {
    pub(crate) hmac: HmacKeys,
    pub(crate) headers: HeaderCache,
}

/// Signature check with the key the source gave; the token's `alg` must
/// equal the key's pinned algorithm. HMAC keys go through `prepared` when
/// given (same check, the key schedule computed once).
pub(crate) fn check_signature(
    seg: &Segments<'_>,
    header: &Header,
    key: &Arc<VerifyingKey>,
    prepared: Option<&HmacKeys>,
) -> Result<(), JwtError> {
    if key.alg() != header.alg {
        return Err(err(JwtErrorKind::AlgMismatch));
    }
    // Canonical base64url is checked here.
    let prepared_ok = with_b64::<SIGNATURE_STACK, _>(seg.signature, |tag| {
        Ok(prepared.and_then(|p| p.verify(key, seg.signed.as_bytes(), tag)))
    })?;
    if let Some(ok) = prepared_ok {
        return if ok {
            Ok(())
        } else {
            Err(err(JwtErrorKind::BadSignature))
        };
    }
    // jsonwebtoken decodes the signature again.
    match jsonwebtoken::crypto::verify(
        seg.signature,
        seg.signed.as_bytes(),
        key.decoding_key(),
        key.alg().to_jsonwebtoken(),
    ) {
        Ok(true) => Ok(()),
        _ => Err(err(JwtErrorKind::BadSignature)),
    }
}

/// Decodes the payload and checks every claim rule; returns the claims.
pub(crate) fn check_claims<T: DeserializeOwned + 'static>(
    seg: &Segments<'_>,
    v: &Validation,
    now: i64,
) -> Result<(Claims<T>, Window), JwtError> {
    with_b64::<PAYLOAD_STACK, _>(seg.payload, |raw| {
        let text = std::str::from_utf8(raw).map_err(|_| err(JwtErrorKind::BadJson))?;
        // Duplicate keys (at any depth) and the registered claims, in one
        // pass.
        let reg = registered_unique(text).map_err(|()| err(JwtErrorKind::BadJson))?;
        let window = check_registered(&reg, v, now)?;
        let custom: T = custom_claims(text)?;
        Ok((Claims::new(reg, custom), window))
    })
}

/// The seconds during which a token passes the time rules (`nbf`, `iat`,
/// `exp`, each with the leeway): what the verified-token cache may serve
/// it in, whichever way the clock moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The first second: the later of `nbf` and `iat`, minus the leeway.
    pub(crate) from: i64,
    /// The last second: `exp` plus the leeway.
    pub(crate) until: i64,
}

impl Window {
    pub(crate) const fn contains(self, now: i64) -> bool {
        self.from <= now && now <= self.until
    }
}

/// Every claim rule on the registered claims; returns the seconds the
/// token passes the time rules in.
fn check_registered(reg: &RegisteredClaims, v: &Validation, now: i64) -> Result<Window, JwtError> {
    let exp = reg.exp.ok_or_else(|| err(JwtErrorKind::MissingExp))?;
    if now > exp.saturating_add(v.leeway) {
        return Err(err(JwtErrorKind::Expired));
    }
    if reg
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(v.leeway))
    {
        return Err(err(JwtErrorKind::NotYetValid));
    }
    if reg
        .iat
        .is_some_and(|iat| iat > now.saturating_add(v.leeway))
    {
        return Err(err(JwtErrorKind::IssuedInFuture));
    }
    if v.has_issuer()
        && !reg
            .iss
            .as_ref()
            .is_some_and(|i| v.issuers.iter().any(|t| t == i))
    {
        return Err(err(JwtErrorKind::BadIssuer));
    }
    if v.has_audience()
        && !reg
            .aud
            .as_ref()
            .is_some_and(|a| v.audiences.iter().any(|t| a.contains(t)))
    {
        return Err(err(JwtErrorKind::BadAudience));
    }
    let not_access = reg.has_nonce
        || reg
            .token_use
            .as_deref()
            .is_some_and(|u| !u.eq_ignore_ascii_case("access"))
        || reg
            .payload_typ
            .as_deref()
            .is_some_and(|t| !(t.eq_ignore_ascii_case("bearer") || typ_matches(t, &v.typ)));
    if not_access {
        return Err(err(JwtErrorKind::WrongTokenType));
    }
    for claim in &v.required {
        let present = match *claim {
            "sub" => reg.sub.is_some(),
            "iat" => reg.iat.is_some(),
            "jti" => reg.jti.is_some(),
            "sid" => reg.sid.is_some(),
            "client_id" => reg.client_id.is_some(),
            "nbf" => reg.nbf.is_some(),
            _ => true,
        };
        if !present {
            return Err(err(JwtErrorKind::MissingClaim));
        }
    }
    let start = reg.nbf.max(reg.iat).unwrap_or(i64::MIN);
    Ok(Window {
        from: start.saturating_sub(v.leeway),
        until: exp.saturating_add(v.leeway),
    })
}

/// The application's claims. [`NoCustomClaims`] (the default) reads
/// nothing: it deserializes from any JSON object, and `raw` was checked to
/// be one, so the second pass over the payload is skipped.
fn custom_claims<T: DeserializeOwned + 'static>(raw: &str) -> Result<T, JwtError> {
    if TypeId::of::<T>() == TypeId::of::<NoCustomClaims>() {
        let none: Box<dyn Any> = Box::new(NoCustomClaims {});
        if let Ok(t) = none.downcast::<T>() {
            return Ok(*t);
        }
    }
    serde_json::from_str(raw).map_err(|_| err(JwtErrorKind::BadClaims))
}

/// A token that passed every check.
pub(crate) struct Verified<T> {
    pub(crate) claims: Claims<T>,
    /// The seconds the token may be served in (`nbf`/`iat` to `exp`, with
    /// the leeway).
    pub(crate) window: Window,
    /// The header's `kid`, and the key it found: a cached token is served
    /// only while its key source still returns this very key.
    pub(crate) kid: Option<Arc<str>>,
    pub(crate) key: Arc<VerifyingKey>,
}

/// One verification attempt: done, or wait for a key refresh and retry.
pub(crate) enum Step<T> {
    Done(Result<Verified<T>, JwtError>),
    Wait(crate::source::RefreshFuture),
}

pub(crate) fn verify<T: DeserializeOwned + 'static>(
    token: &str,
    v: &Validation,
    lookup: impl FnOnce(Option<&str>) -> KeyLookup,
    prepared: Option<&Prepared>,
    now: i64,
) -> Step<T> {
    let run = || -> Result<Result<Verified<T>, crate::source::RefreshFuture>, JwtError> {
        let seg = split(token, v.max_len)?;
        let header = match prepared {
            Some(p) => p.headers.parse(&seg, v)?,
            None => parse_header(&seg, v)?,
        };
        let key = match lookup(header.kid.as_deref()) {
            KeyLookup::Found(k) => k,
            KeyLookup::Unknown => return Err(err(JwtErrorKind::UnknownKey)),
            KeyLookup::Unavailable => return Err(err(JwtErrorKind::KeysUnavailable)),
            KeyLookup::Refresh(f) => return Ok(Err(f)),
        };
        check_signature(&seg, &header, &key, prepared.map(|p| &p.hmac))?;
        let (claims, window) = check_claims(&seg, v, now)?;
        Ok(Ok(Verified {
            claims,
            window,
            kid: header.kid,
            key,
        }))
    };
    match run() {
        Ok(Ok(done)) => Step::Done(Ok(done)),
        Ok(Err(wait)) => Step::Wait(wait),
        Err(e) => Step::Done(Err(e)),
    }
}

/// Verifies a JWS in compact serialization and returns its payload bytes:
/// the same structural, header and signature rules as for access tokens
/// (pinned algorithm, no `none`, no `crit`/`b64`/`cty: JWT`, canonical
/// base64url, duplicate-free JSON header, size limit), without the
/// access-token rules (`typ`, claims). For payloads that are not JWT claim
/// sets, and for test vectors.
///
/// ```
/// use portcullis_jwt::{Algorithm, KeySet, VerifyingKey, verify_jws};
///
/// let key = VerifyingKey::hmac(None, Algorithm::HS256, &[0u8; 32]).unwrap();
/// let keys = KeySet::new([key]).unwrap();
/// assert!(verify_jws("e30.e30.c2ln", &keys, 8192).is_err());
/// ```
///
/// # Errors
///
/// [`JwtError`] says which rule the token broke.
pub fn verify_jws(
    token: &str,
    keys: &dyn crate::source::KeySource,
    max_len: usize,
) -> Result<Vec<u8>, JwtError> {
    let seg = split(token, max_len)?;
    let header = parse_header_typ(&seg, None)?;
    let key = match keys.lookup(header.kid.as_deref()) {
        KeyLookup::Found(k) => k,
        KeyLookup::Unavailable => return Err(err(JwtErrorKind::KeysUnavailable)),
        KeyLookup::Unknown | KeyLookup::Refresh(_) => return Err(err(JwtErrorKind::UnknownKey)),
    };
    check_signature(&seg, &header, &key, None)?;
    b64(seg.payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `crit` and `b64` are refused whatever their value, `null` included
    /// (found by the `jwt_compact` fuzz target's invariant;
    /// fuzz/regressions/jwt_compact/).
    #[test]
    fn crit_and_b64_refused_even_when_null() {
        use base64::Engine as _;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let secret = b"a secret of at least thirty-two bytes!!";
        let keys =
            crate::KeySet::new([
                crate::VerifyingKey::hmac(None, crate::Algorithm::HS256, secret).unwrap(),
            ])
            .unwrap();
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        for header in [
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"alg":"HS256","b64":null}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","b64":false}"#,
        ] {
            let signed = format!("{}.{}", enc(header), enc(r#"{"exp":1}"#));
            let tag = aws_lc_rs::hmac::sign(&mac_key, signed.as_bytes());
            let token = format!(
                "{signed}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
            );
            let got = verify_jws(&token, &keys, 8192).map_err(|e| e.kind());
            assert_eq!(got.err(), Some(JwtErrorKind::UnsupportedHeader), "{header}");
        }
    }

    #[test]
    fn split_table() {
        let cases: &[(&str, Option<JwtErrorKind>)] = &[
            ("aaaa.bbbb.cccc", None),
            ("aaaa.bbbb.", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.cccc.dddd", Some(JwtErrorKind::Malformed)),
            ("aaaa.bb=b.cccc", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.cc cc", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.cc+c", Some(JwtErrorKind::Malformed)),
            ("aaaa.bbbb.c\ncc", Some(JwtErrorKind::Malformed)),
            ("aaaaa.bbbb.cccc", Some(JwtErrorKind::Malformed)),
            ("", Some(JwtErrorKind::Malformed)),
        ];
        for (t, want) in cases {
            assert_eq!(split(t, 100).err().map(|e| e.kind()), *want, "{t:?}");
        }
        assert_eq!(
            split(&"a".repeat(101), 100).err().map(|e| e.kind()),
            Some(JwtErrorKind::TooLarge)
        );
    }

    #[test]
    fn alphabet_check_matches_core() {
        for b in 0..=255u8 {
            let s = [b'A', b, b'z'];
            if let Ok(s) = std::str::from_utf8(&s) {
                assert_eq!(
                    all_base64url(s),
                    portcullis_core::token::is_base64url(b),
                    "{b}"
                );
            }
        }
    }

    #[test]
    fn non_canonical_base64_refused() {
        assert!(b64("QQ").is_ok());
        assert!(b64("QR").is_err(), "trailing bits set");
        assert!(b64("QQ==").is_err(), "padding");
    }

    #[test]
    fn typ_matching() {
        let allowed = vec!["at+jwt".to_owned()];
        assert!(typ_matches("at+jwt", &allowed));
        assert!(typ_matches("AT+JWT", &allowed));
        assert!(typ_matches("application/at+jwt", &allowed));
        assert!(!typ_matches("JWT", &allowed));
        assert!(!typ_matches("refresh+jwt", &allowed));
        assert!(!typ_matches("", &allowed));
        assert!(
            !typ_matches("applicatioé/at+jwt", &allowed),
            "multibyte input near the prefix"
        );
    }

    proptest! {
        #[test]
        fn split_never_panics(s in ".{0,300}") {
            let _ = split(&s, 8192);
        }

        #[test]
        fn header_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let h = URL_SAFE_NO_PAD.encode(&bytes);
            let tok = format!("{h}.e30.c2ln");
            if let Ok(seg) = split(&tok, 8192) {
                let _ = parse_header(&seg, &Validation::default());
            }
        }

        #[test]
        fn accepted_segments_are_canonical(s in "[A-Za-z0-9_-]{1,40}") {
            if let Ok(bytes) = b64(&s) {
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(bytes), s.as_str());
            }
            // The stack path (large N) and the vector path (small N)
            // accept and produce the same.
            let want = b64(&s).ok();
            prop_assert_eq!(&with_b64::<64, _>(&s, |b| Ok(b.to_vec())).ok(), &want);
            prop_assert_eq!(&with_b64::<4, _>(&s, |b| Ok(b.to_vec())).ok(), &want);
        }
    }
}
