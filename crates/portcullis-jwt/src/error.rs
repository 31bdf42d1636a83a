//! Why a token was refused.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use http::header::WWW_AUTHENTICATE;
use portcullis_core::Rejection;

use crate::dpop::types::{DPOP_NONCE, DpopError, DpopErrorKind, DpopPolicy};

/// Why a token was refused. Logged and attached to responses (inside the
/// [`Rejection`]), never shown to the client, which sees one uniform body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtErrorKind {
    /// No token where the layer looks for one.
    Missing,
    /// The request's credentials are malformed (two `Authorization`
    /// headers, a scheme other than `Bearer`).
    InvalidRequest,
    /// Larger than the configured limit.
    TooLarge,
    /// Not three base64url segments of the JWS compact form, or a segment
    /// that is not canonical base64url.
    Malformed,
    /// A header or payload that is not one JSON object, or has duplicate
    /// keys.
    BadJson,
    /// `alg` is `none` or not a supported algorithm.
    UnsupportedAlg,
    /// The `kid` is unknown, or missing while several keys could apply.
    UnknownKey,
    /// The token's `alg` differs from the algorithm pinned to its key.
    AlgMismatch,
    /// The signature does not verify.
    BadSignature,
    /// `crit`, `b64: false` or `cty: JWT` (nested tokens): refused.
    UnsupportedHeader,
    /// The header `typ` is not an access token's, or the payload marks an
    /// id or refresh token.
    WrongTokenType,
    /// `exp` is missing or not a NumericDate.
    MissingExp,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `iss` is missing or not a trusted issuer.
    BadIssuer,
    /// `aud` is missing or does not name this service.
    BadAudience,
    /// A claim the configuration requires is missing.
    MissingClaim,
    /// The application's claims type does not match the payload.
    BadClaims,
    /// The token, its session or its user has been revoked.
    Revoked,
    /// The keys cannot be obtained right now (JWKS endpoint down before
    /// any key was ever loaded): 503.
    KeysUnavailable,
    /// The revocation view has not loaded yet (its store is still
    /// fetching its first snapshot): 503, never a pass.
    RevocationUnavailable,
    /// A valid token without the required scope or role: 403.
    InsufficientScope,
    /// A valid token whose login is too old, or whose authentication
    /// context class (`acr`) is not one the route accepts: 401 with RFC
    /// 9470's `insufficient_user_authentication` challenge. The client
    /// logs in again (step-up) and retries.
    InsufficientUserAuthentication,
    /// The DPoP proof is missing or broke a rule (RFC 9449 §4.3; the
    /// reason says which): 401 `invalid_dpop_proof`.
    InvalidDpopProof,
    /// Server nonces are on and the proof carries no valid one: 401
    /// `use_dpop_nonce` with a `DPoP-Nonce` header.
    UseDpopNonce,
    /// The DPoP replay cache cannot answer (down, or full of live
    /// entries): 503, never a pass.
    DpopUnavailable,
    /// A sender-constrained token (one with `cnf`: DPoP's `cnf.jkt`, or any
    /// other confirmation method) presented as a bearer token: 401
    /// `invalid_token`, whatever the layer's policy.
    DpopBoundAsBearer,
    /// A bearer token where DPoP is required (the layer's
    /// [`DpopPolicy::Required`], or a `RequireDpopLayer`): 401
    /// `invalid_token` on the `DPoP` challenge.
    DpopRequired,
    /// A token without `cnf.jkt` presented with the `DPoP` scheme: 401
    /// `invalid_token`.
    NotDpopBound,
    /// The proof's key already holds its share of the replay cache (a
    /// client sending proofs faster than any honest one): 429.
    DpopTooManyProofs,
}

/// What a refused DPoP proof adds to a [`JwtError`].
#[derive(Clone, PartialEq, Eq)]
struct DpopDetail {
    reason: &'static str,
    description: &'static str,
    nonce: Option<String>,
}

/// A refused token: its [`JwtErrorKind`] and, for scope and step-up
/// failures, what was required.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtError {
    kind: JwtErrorKind,
    /// The missing scope or role; for a step-up refusal, the challenge's
    /// parameters after the error code, already rendered.
    required: Option<String>,
    /// For a refused proof: its reason, description and nonce.
    dpop: Option<DpopDetail>,
    /// The request used the `DPoP` scheme (its challenge gets the error).
    via_dpop: bool,
}

/// How a layer's challenges look: set once per layer, and left in the
/// request extensions (see [`ChallengeMark`]) for the route guards behind
/// it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Challenges {
    pub(crate) realm: Option<String>,
    /// RFC 9728 §5.1 `resource_metadata`.
    pub(crate) resource_metadata: Option<String>,
    /// Which schemes are challenged.
    pub(crate) policy: DpopPolicy,
    /// The DPoP proof algorithms (`algs="..."`).
    pub(crate) dpop_algs: Option<Arc<str>>,
}

/// In the extensions of a request a `JwtLayer` let through when its
/// challenges differ from the plain `Bearer` ones: the route guards behind
/// it challenge the same way.
#[derive(Debug, Clone)]
pub(crate) struct ChallengeMark(pub(crate) Arc<Challenges>);

/// A guard's refusal: challenged as the layer in front of it challenges,
/// on the scheme the request used.
pub(crate) fn guard_rejection(e: JwtError, extensions: &http::Extensions) -> Rejection {
    let retry = std::time::Duration::from_secs(1);
    match extensions.get::<ChallengeMark>() {
        Some(ChallengeMark(c)) => {
            let via_dpop = extensions.get::<crate::dpop::types::DpopProof>().is_some();
            e.via_dpop(via_dpop).rejection_with(c, retry)
        }
        None => e.rejection(None, retry),
    }
}

impl JwtError {
    pub(crate) const fn new(kind: JwtErrorKind) -> Self {
        Self {
            kind,
            required: None,
            dpop: None,
            via_dpop: false,
        }
    }

    pub(crate) fn insufficient(required: String) -> Self {
        Self {
            required: Some(required),
            ..Self::new(JwtErrorKind::InsufficientScope)
        }
    }

    /// A refused DPoP proof.
    pub(crate) fn from_dpop(e: &DpopError) -> Self {
        let kind = if e.kind() == DpopErrorKind::TooManyProofs {
            JwtErrorKind::DpopTooManyProofs
        } else if e.is_unavailable() {
            JwtErrorKind::DpopUnavailable
        } else if e.kind() == DpopErrorKind::NonceRequired {
            JwtErrorKind::UseDpopNonce
        } else {
            JwtErrorKind::InvalidDpopProof
        };
        Self {
            dpop: Some(DpopDetail {
                reason: e.reason(),
                description: e.description(),
                nonce: e.nonce().map(str::to_owned),
            }),
            via_dpop: true,
            ..Self::new(kind)
        }
    }

    /// Marks the refusal as one of a request that used the `DPoP` scheme.
    #[must_use]
    pub(crate) fn via_dpop(mut self, via: bool) -> Self {
        self.via_dpop = via;
        self
    }

    /// A step-up refusal; `params` are the challenge's parameters after
    /// `error="insufficient_user_authentication"` (`error_description`,
    /// `max_age`, `acr_values`), rendered by the guard.
    pub(crate) fn step_up(params: String) -> Self {
        Self {
            required: Some(params),
            ..Self::new(JwtErrorKind::InsufficientUserAuthentication)
        }
    }

    /// Why.
    #[must_use]
    pub const fn kind(&self) -> JwtErrorKind {
        self.kind
    }

    /// A short machine-readable reason, for logs. For a refused DPoP
    /// proof, the proof's (`dpop-htu`, `dpop-replay`, ...).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        if let Some(d) = &self.dpop {
            return d.reason;
        }
        match self.kind {
            JwtErrorKind::Missing => "missing",
            JwtErrorKind::InvalidRequest => "invalid-request",
            JwtErrorKind::TooLarge => "too-large",
            JwtErrorKind::Malformed => "malformed",
            JwtErrorKind::BadJson => "bad-json",
            JwtErrorKind::UnsupportedAlg => "unsupported-alg",
            JwtErrorKind::UnknownKey => "unknown-key",
            JwtErrorKind::AlgMismatch => "alg-mismatch",
            JwtErrorKind::BadSignature => "bad-signature",
            JwtErrorKind::UnsupportedHeader => "unsupported-header",
            JwtErrorKind::WrongTokenType => "wrong-token-type",
            JwtErrorKind::MissingExp => "missing-exp",
            JwtErrorKind::Expired => "expired",
            JwtErrorKind::NotYetValid => "not-yet-valid",
            JwtErrorKind::IssuedInFuture => "issued-in-future",
            JwtErrorKind::BadIssuer => "bad-issuer",
            JwtErrorKind::BadAudience => "bad-audience",
            JwtErrorKind::MissingClaim => "missing-claim",
            JwtErrorKind::BadClaims => "bad-claims",
            JwtErrorKind::Revoked => "revoked",
            JwtErrorKind::KeysUnavailable => "keys-unavailable",
            JwtErrorKind::RevocationUnavailable => "revocation-unavailable",
            JwtErrorKind::InsufficientScope => "insufficient-scope",
            JwtErrorKind::InsufficientUserAuthentication => "insufficient-user-authentication",
            JwtErrorKind::InvalidDpopProof => "dpop-invalid",
            JwtErrorKind::UseDpopNonce => "dpop-nonce",
            JwtErrorKind::DpopUnavailable => "dpop-replay-unavailable",
            JwtErrorKind::DpopBoundAsBearer => "dpop-bound-as-bearer",
            JwtErrorKind::DpopRequired => "dpop-required",
            JwtErrorKind::NotDpopBound => "not-dpop-bound",
            JwtErrorKind::DpopTooManyProofs => "dpop-key-share",
        }
    }

    /// The refusal: 401 `invalid_token` with one uniform body for every
    /// token failure, 401 without an error code when no token was sent
    /// (RFC 6750 section 3.1), 400 `invalid_request` for malformed
    /// credentials, 403 `insufficient_scope`, 401
    /// `insufficient_user_authentication` (RFC 9470) for a login too old or
    /// too weak, 401 `invalid_dpop_proof` or `use_dpop_nonce` (RFC 9449)
    /// for a refused proof, 503 when keys or the replay cache are
    /// unavailable. The challenge is `Bearer`.
    pub fn rejection(&self, realm: Option<&str>, retry_after: std::time::Duration) -> Rejection {
        let challenges = Challenges {
            realm: realm.map(str::to_owned),
            ..Challenges::default()
        };
        self.rejection_with(&challenges, retry_after)
    }

    /// [`rejection`](Self::rejection) with a layer's challenges: the
    /// schemes its policy accepts (both `Bearer` and `DPoP` when both are
    /// accepted, the error on the scheme the request used), `realm` and
    /// `resource_metadata` in each.
    pub(crate) fn rejection_with(
        &self,
        challenges: &Challenges,
        retry_after: std::time::Duration,
    ) -> Rejection {
        let rejection = match self.kind {
            JwtErrorKind::Missing => Rejection::unauthenticated("an access token is required"),
            JwtErrorKind::InvalidRequest => {
                Rejection::bad_request("the request's credentials are malformed")
            }
            JwtErrorKind::KeysUnavailable
            | JwtErrorKind::RevocationUnavailable
            | JwtErrorKind::DpopUnavailable => {
                return Rejection::unavailable("a backing store is unavailable; retry shortly")
                    .with_retry_after(retry_after)
                    .with_reason(self.reason());
            }
            JwtErrorKind::DpopTooManyProofs => {
                return Rejection::too_many_requests("too many DPoP proofs; retry shortly")
                    .with_retry_after(retry_after)
                    .with_reason(self.reason());
            }
            JwtErrorKind::InsufficientScope => {
                Rejection::forbidden("the access token does not grant this")
            }
            JwtErrorKind::InsufficientUserAuthentication => Rejection::unauthenticated(
                "a more recent or stronger login is required: log in again",
            ),
            JwtErrorKind::InvalidDpopProof | JwtErrorKind::UseDpopNonce => {
                Rejection::unauthenticated("the DPoP proof is invalid")
            }
            _ => Rejection::unauthenticated("the access token is invalid"),
        };
        let mut values = self
            .challenges(challenges)
            .into_iter()
            .filter_map(|v| HeaderValue::try_from(v).ok());
        let first = values
            .next()
            .unwrap_or_else(|| HeaderValue::from_static("Bearer"));
        let mut rejection = rejection.with_challenge(first).with_reason(self.reason());
        for more in values {
            rejection = rejection.with_header(WWW_AUTHENTICATE, more);
        }
        if let Some(nonce) = self.dpop.as_ref().and_then(|d| d.nonce.as_deref()) {
            if let Ok(v) = HeaderValue::try_from(nonce) {
                rejection = rejection.with_header(DPOP_NONCE, v);
            }
        }
        rejection
    }

    /// Whether the error belongs on the `DPoP` challenge.
    const fn on_dpop(&self) -> bool {
        self.via_dpop
            || matches!(
                self.kind,
                JwtErrorKind::InvalidDpopProof
                    | JwtErrorKind::UseDpopNonce
                    | JwtErrorKind::DpopRequired
                    | JwtErrorKind::NotDpopBound
            )
    }

    /// The error's parameters (`error=...` and what follows it).
    fn error_params(&self) -> Vec<String> {
        let mut params = Vec::with_capacity(2);
        match self.kind {
            JwtErrorKind::Missing => {}
            JwtErrorKind::InvalidRequest => params.push("error=\"invalid_request\"".into()),
            JwtErrorKind::InsufficientScope => {
                params.push("error=\"insufficient_scope\"".into());
                params.push(format!(
                    "scope=\"{}\"",
                    self.required.as_deref().unwrap_or_default()
                ));
            }
            JwtErrorKind::InsufficientUserAuthentication => {
                params.push("error=\"insufficient_user_authentication\"".into());
                if let Some(rest) = &self.required {
                    params.push(rest.clone());
                }
            }
            JwtErrorKind::InvalidDpopProof | JwtErrorKind::UseDpopNonce => {
                let code = if self.kind == JwtErrorKind::UseDpopNonce {
                    "use_dpop_nonce"
                } else {
                    "invalid_dpop_proof"
                };
                params.push(format!("error=\"{code}\""));
                let description = self
                    .dpop
                    .as_ref()
                    .map_or("the DPoP proof is invalid", |d| d.description);
                params.push(format!("error_description=\"{description}\""));
            }
            JwtErrorKind::DpopRequired => {
                params.push("error=\"invalid_token\"".into());
                params.push(
                    "error_description=\"a DPoP-bound access token and proof are required\"".into(),
                );
            }
            _ => params.push("error=\"invalid_token\"".into()),
        }
        params
    }

    /// Every `WWW-Authenticate` value of the refusal, in order.
    fn challenges(&self, c: &Challenges) -> Vec<String> {
        let dpop_shown = c.policy != DpopPolicy::Bearer || self.kind == JwtErrorKind::DpopRequired;
        let bearer_shown = c.policy != DpopPolicy::Required;
        // The error goes on the scheme the request used; with one scheme
        // shown, on that one.
        let error_on_dpop = dpop_shown && (!bearer_shown || self.on_dpop());
        let mut out = Vec::with_capacity(2);
        let render = |scheme: &str, with_error: bool, algs: Option<&str>| {
            let mut params: Vec<String> = Vec::with_capacity(5);
            if let Some(realm) = &c.realm {
                params.push(format!("realm=\"{realm}\""));
            }
            if let Some(algs) = algs {
                params.push(format!("algs=\"{algs}\""));
            }
            if with_error {
                params.extend(self.error_params());
            }
            if let Some(url) = &c.resource_metadata {
                params.push(format!("resource_metadata=\"{url}\""));
            }
            if params.is_empty() {
                scheme.to_owned()
            } else {
                format!("{scheme} {}", params.join(", "))
            }
        };
        if bearer_shown {
            out.push(render("Bearer", !error_on_dpop, None));
        }
        if dpop_shown {
            out.push(render("DPoP", error_on_dpop, c.dpop_algs.as_deref()));
        }
        out
    }
}

impl fmt::Debug for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtError")
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access token refused: {}", self.reason())
    }
}

impl std::error::Error for JwtError {}

/// The `WWW-Authenticate` value for a refusal of `kind` (RFC 6750 §3):
/// no error code when no token was sent, and no trailing space when there
/// is nothing after the scheme.
#[cfg_attr(not(any(test, feature = "jwks-remote")), allow(dead_code))]
pub(crate) fn challenge(kind: JwtErrorKind, realm: Option<&str>, required: Option<&str>) -> String {
    let e = JwtError {
        required: required.map(str::to_owned),
        ..JwtError::new(kind)
    };
    let c = Challenges {
        realm: realm.map(str::to_owned),
        ..Challenges::default()
    };
    e.challenges(&c).remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_table() {
        use JwtErrorKind as K;
        let cases: [(K, Option<&str>, Option<&str>, &str); 8] = [
            (K::Missing, None, None, "Bearer"),
            (K::Missing, Some("api"), None, "Bearer realm=\"api\""),
            (
                K::InvalidRequest,
                None,
                None,
                "Bearer error=\"invalid_request\"",
            ),
            (
                K::InvalidRequest,
                Some("api"),
                None,
                "Bearer realm=\"api\", error=\"invalid_request\"",
            ),
            (K::Expired, None, None, "Bearer error=\"invalid_token\""),
            (
                K::BadSignature,
                Some("api"),
                None,
                "Bearer realm=\"api\", error=\"invalid_token\"",
            ),
            (
                K::InsufficientScope,
                None,
                Some("admin"),
                "Bearer error=\"insufficient_scope\", scope=\"admin\"",
            ),
            (
                K::InsufficientScope,
                Some("api"),
                Some("read"),
                "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read\"",
            ),
        ];
        for (kind, realm, scope, want) in cases {
            assert_eq!(challenge(kind, realm, scope), want, "{kind:?} {realm:?}");
        }
    }

    #[test]
    fn dpop_and_metadata_challenge_table() {
        use JwtErrorKind as K;
        let algs: Option<Arc<str>> = Some(Arc::from("ES256 EdDSA"));
        let md = Some("https://rs.example/.well-known/oauth-protected-resource".to_owned());
        let with = |policy, resource_metadata: Option<String>| Challenges {
            realm: None,
            resource_metadata,
            policy,
            dpop_algs: if policy == DpopPolicy::Bearer {
                None
            } else {
                algs.clone()
            },
        };
        let proof = |kind| JwtError::from_dpop(&crate::dpop::DpopError::bare(kind));
        let rm = r#"resource_metadata="https://rs.example/.well-known/oauth-protected-resource""#;
        // (error, challenges, every WWW-Authenticate value)
        let cases: Vec<(JwtError, Challenges, Vec<String>)> = vec![
            (
                JwtError::new(K::Missing),
                with(DpopPolicy::Bearer, md.clone()),
                vec![format!("Bearer {rm}")],
            ),
            (
                JwtError::new(K::Expired),
                with(DpopPolicy::Bearer, md.clone()),
                vec![format!(r#"Bearer error="invalid_token", {rm}"#)],
            ),
            (
                JwtError::new(K::Missing),
                with(DpopPolicy::Accepted, None),
                vec!["Bearer".into(), r#"DPoP algs="ES256 EdDSA""#.into()],
            ),
            (
                JwtError::new(K::Expired),
                with(DpopPolicy::Accepted, None),
                vec![
                    r#"Bearer error="invalid_token""#.into(),
                    r#"DPoP algs="ES256 EdDSA""#.into(),
                ],
            ),
            (
                JwtError::new(K::Expired).via_dpop(true),
                with(DpopPolicy::Accepted, md.clone()),
                vec![
                    format!("Bearer {rm}"),
                    format!(r#"DPoP algs="ES256 EdDSA", error="invalid_token", {rm}"#),
                ],
            ),
            (
                proof(crate::dpop::DpopErrorKind::WrongUrl),
                with(DpopPolicy::Accepted, None),
                vec![
                    "Bearer".into(),
                    r#"DPoP algs="ES256 EdDSA", error="invalid_dpop_proof", error_description="the DPoP proof is for another request""#.into(),
                ],
            ),
            (
                proof(crate::dpop::DpopErrorKind::NonceRequired),
                with(DpopPolicy::Required, md.clone()),
                vec![format!(
                    r#"DPoP algs="ES256 EdDSA", error="use_dpop_nonce", error_description="a DPoP nonce from the server is required", {rm}"#
                )],
            ),
            (
                JwtError::new(K::DpopRequired),
                with(DpopPolicy::Required, None),
                vec![r#"DPoP algs="ES256 EdDSA", error="invalid_token", error_description="a DPoP-bound access token and proof are required""#.into()],
            ),
            (
                JwtError::insufficient("admin".into()),
                with(DpopPolicy::Required, md.clone()),
                vec![format!(
                    r#"DPoP algs="ES256 EdDSA", error="insufficient_scope", scope="admin", {rm}"#
                )],
            ),
            (
                JwtError::new(K::DpopBoundAsBearer),
                with(DpopPolicy::Bearer, None),
                vec![r#"Bearer error="invalid_token""#.into()],
            ),
        ];
        for (i, (e, c, want)) in cases.into_iter().enumerate() {
            let r: http::Response<portcullis_core::ResponseBody<String>> = e
                .rejection_with(&c, std::time::Duration::from_secs(1))
                .into_response(&portcullis_core::ProblemJson, false);
            let got: Vec<&str> = r
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn replay_store_down_is_503_without_a_challenge() {
        let e = JwtError::from_dpop(&crate::dpop::DpopError::bare(
            crate::dpop::DpopErrorKind::ReplayUnavailable,
        ));
        let r = e.rejection(None, std::time::Duration::from_secs(2));
        assert_eq!(r.status(), 503);
        assert_eq!(e.reason(), "dpop-replay-unavailable");
        assert!(r.challenge().is_none());
    }

    #[test]
    fn a_missing_token_challenge_has_no_trailing_space() {
        let r: http::Response<portcullis_core::ResponseBody<String>> =
            JwtError::new(JwtErrorKind::Missing)
                .rejection(None, std::time::Duration::from_secs(1))
                .into_response(&portcullis_core::ProblemJson, false);
        assert_eq!(r.headers()[http::header::WWW_AUTHENTICATE], "Bearer");
    }
}
