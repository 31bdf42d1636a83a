//! `Validation`: what a token must satisfy besides its signature (issuer,
//! audiences, leeway, accepted `typ`, required claims, size limit), and the
//! time window a token passes in.

use std::time::Duration;

/// Default limit on a token's length.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Default clock leeway.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// The largest clock leeway [`Validation::leeway`] accepts. Revocation
/// entries outlive a token's `exp` by this much, so a revoked token cannot
/// come back while any layer would still accept it.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

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
