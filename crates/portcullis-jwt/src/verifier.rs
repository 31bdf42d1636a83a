//! The verification pipeline and the one [`Verifier`] every path uses (the
//! layer's service, `JwtLayer::verify` and `verify_request`): the verified
//! token cache, the JWS checks, the key lookup, the signature, the claim
//! rules, then revocation.

use std::any::{Any, TypeId};
use std::sync::Arc;

use http::HeaderMap;
use portcullis_core::SharedClock;
use serde::de::DeserializeOwned;

use crate::cache::{TokenCache, Verified};
use crate::claims::{Claims, NoCustomClaims, RegisteredClaims, registered_unique};
use crate::error::{JwtError, JwtErrorKind};
use crate::issuers::IssuerSet;
use crate::jws::{
    PAYLOAD_STACK, Segments, b64, err, parse_header, parse_header_typ, split, typ_matches, with_b64,
};
use crate::keys::{KeyLookup, KeySource, RefreshFuture};
use crate::prepared::{Prepared, check_signature};
use crate::revocation::RevocationView;
use crate::transport::{Transport, extract};
use crate::validation::{Validation, Window};

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

/// One verification attempt: done, or wait for a key refresh and retry.
pub(crate) enum Step<T> {
    Done(Result<Verified<T>, JwtError>),
    Wait(RefreshFuture),
}

pub(crate) fn verify<T: DeserializeOwned + 'static>(
    token: &str,
    v: &Validation,
    lookup: impl FnOnce(Option<&str>) -> KeyLookup,
    prepared: Option<&Prepared>,
    now: i64,
) -> Step<T> {
    let run = || -> Result<Result<Verified<T>, RefreshFuture>, JwtError> {
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
            issuer: 0,
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
pub fn verify_jws(token: &str, keys: &dyn KeySource, max_len: usize) -> Result<Vec<u8>, JwtError> {
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

/// What the verifier decided for one request or token.
pub(crate) enum Decision<T> {
    /// Let the request through with these claims (`None`: no token, and
    /// the layer is optional).
    Pass(Option<Claims<T>>),
    /// Refuse it.
    Reject(JwtError),
    /// Wait for the key source's refresh, then decide again on this token
    /// with [`Refresh::Done`].
    Wait(RefreshFuture, String),
}

/// Whether a decision may wait for a key refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// A key the source does not have yet may be waited for.
    Allowed,
    /// The refresh already ran: a key still missing is unknown.
    Done,
}

/// Whether a request without a token passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anonymous {
    /// Refused: 401.
    Refused,
    /// Let through without claims.
    Allowed,
}

/// The one verification pipeline: where to read the token, the keys, the
/// rules, revocation, and the caches. The layer's service, `JwtLayer::verify`
/// and `JwtLayer::verify_request` all decide through it.
pub(crate) struct Verifier<T> {
    pub(crate) keys: Arc<dyn KeySource>,
    pub(crate) validation: Validation,
    pub(crate) transport: Transport,
    pub(crate) anonymous: Anonymous,
    pub(crate) revocation: Option<RevocationView>,
    pub(crate) cache: Option<TokenCache<T>>,
    pub(crate) prepared: Prepared,
    pub(crate) clock: SharedClock,
    /// Several issuers, chosen by the token's `iss` before any key is
    /// touched; `None`: `keys` and `validation` alone.
    pub(crate) issuers: Option<Arc<IssuerSet>>,
}

fn now_secs(clock: &SharedClock) -> i64 {
    i64::try_from(clock.now().secs()).unwrap_or(i64::MAX)
}

/// Revocation's verdict on verified claims: no view, or not revoked,
/// passes; a view not loaded yet fails closed (503).
fn revocation_check(
    view: Option<&RevocationView>,
    claims: &RegisteredClaims,
) -> Result<(), JwtError> {
    let Some(view) = view else {
        return Ok(());
    };
    if !view.is_ready() {
        return Err(err(JwtErrorKind::RevocationUnavailable));
    }
    match view.check(claims) {
        Some(_) => Err(err(JwtErrorKind::Revoked)),
        None => Ok(()),
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Verifier<T> {
    fn passes(&self, claims: Claims<T>) -> Decision<T> {
        match revocation_check(self.revocation.as_ref(), claims.registered()) {
            Ok(()) => Decision::Pass(Some(claims)),
            Err(e) => Decision::Reject(e),
        }
    }

    /// The whole decision for one token: cache, verification, revocation.
    /// The clock is read once.
    pub(crate) fn decide(&self, token: &str, refresh: Refresh) -> Decision<T> {
        let now = now_secs(&self.clock);
        if let Some(issuers) = &self.issuers {
            return self.decide_among(issuers, token, refresh, now);
        }
        if let Some(cache) = &self.cache {
            if let Some(claims) = cache.get(token, now, |_| Some(&*self.keys)) {
                return self.passes(claims);
            }
        }
        let keys = &self.keys;
        let step = verify::<T>(
            token,
            &self.validation,
            |kid| keys.lookup(kid),
            Some(&self.prepared),
            now,
        );
        self.conclude(step, 0, token, refresh, now)
    }

    /// [`decide`](Self::decide) with several issuers: the token's `iss`
    /// (read from the unverified payload) picks the issuer before any key
    /// is looked up; its key source and rules alone then apply. A missing
    /// or unknown `iss` is refused without a lookup (so without a fetch).
    /// Kept out of line: the single-issuer path's code stays as it was.
    #[inline(never)]
    fn decide_among(
        &self,
        issuers: &IssuerSet,
        token: &str,
        refresh: Refresh,
        now: i64,
    ) -> Decision<T> {
        if let Some(cache) = &self.cache {
            // An entry remembers the issuer that verified it; the same
            // token bytes always name that issuer.
            if let Some(claims) = cache.get(token, now, |i| issuers.keys(i)) {
                return self.passes(claims);
            }
        }
        let index = match issuers.pick(token) {
            Ok(index) => index,
            Err(e) => return Decision::Reject(e),
        };
        let Some(issuer) = issuers.get(index) else {
            return Decision::Reject(err(JwtErrorKind::BadIssuer));
        };
        let step = verify::<T>(
            token,
            &issuer.validation,
            |kid| issuer.keys.lookup(kid),
            Some(&issuer.prepared),
            now,
        );
        self.conclude(step, index, token, refresh, now)
    }

    /// The decision after one verification attempt by the key source of
    /// issuer `issuer`.
    #[inline]
    fn conclude(
        &self,
        step: Step<T>,
        issuer: usize,
        token: &str,
        refresh: Refresh,
        now: i64,
    ) -> Decision<T> {
        match step {
            Step::Done(Ok(mut verified)) => {
                if let Some(cache) = &self.cache {
                    verified.issuer = issuer;
                    cache.insert(token, &verified, now);
                }
                self.passes(verified.claims)
            }
            Step::Done(Err(e)) => Decision::Reject(e),
            Step::Wait(f) if refresh == Refresh::Allowed => Decision::Wait(f, token.to_owned()),
            // Still no key after a refresh: the kid is unknown.
            Step::Wait(_) => Decision::Reject(err(JwtErrorKind::UnknownKey)),
        }
    }

    /// The decision for a request: its token read per the transport.
    pub(crate) fn decide_request(&self, headers: &HeaderMap) -> Decision<T> {
        match extract(&self.transport, headers) {
            Ok(Some(token)) => self.decide(token, Refresh::Allowed),
            Ok(None) if self.anonymous == Anonymous::Allowed => Decision::Pass(None),
            Ok(None) => Decision::Reject(err(JwtErrorKind::Missing)),
            Err(e) => Decision::Reject(e),
        }
    }

    /// Verifies `token`, awaiting a key refresh when one is needed.
    pub(crate) async fn verify(&self, token: &str) -> Result<Claims<T>, JwtError> {
        let decision = match self.decide(token, Refresh::Allowed) {
            Decision::Wait(refresh, _) => {
                refresh.await;
                self.decide(token, Refresh::Done)
            }
            done => done,
        };
        match decision {
            Decision::Pass(Some(c)) => Ok(c),
            Decision::Pass(None) => Err(err(JwtErrorKind::Missing)),
            Decision::Reject(e) => Err(e),
            Decision::Wait(..) => Err(err(JwtErrorKind::UnknownKey)),
        }
    }

    /// Reads the token of a request per the transport and verifies it; no
    /// token is [`JwtErrorKind::Missing`] even when anonymous requests pass.
    pub(crate) async fn verify_request(&self, headers: &HeaderMap) -> Result<Claims<T>, JwtError> {
        match extract(&self.transport, headers)? {
            Some(token) => self.verify(token).await,
            None => Err(err(JwtErrorKind::Missing)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
