//! `JwtIssuer`: mints access tokens, rotates keys, publishes its JWKS.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use portcullis_core::{OpaqueToken, SharedClock, SystemClock};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::key::{KeyError, KeySet, SigningKey, VerifyingKey};
use crate::revocation::RevocationView;
use crate::source::SharedKeys;

/// Default access token lifetime: 15 minutes.
pub const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Why a token could not be minted or an issuer built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A signing key without a `kid` (tokens must name their key so that
    /// rotation works).
    #[error("signing keys need a kid")]
    MissingKid,
    /// A key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Custom claims that are not a JSON object, or that set a registered
    /// claim the issuer controls.
    #[error("custom claims must be a JSON object without registered claim names ({0})")]
    Claims(String),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// The OS random source failed.
    #[error("random source failed")]
    Random,
}

/// A freshly minted access token.
#[derive(Clone, Serialize)]
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"REDACTED")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

struct Keys {
    current: SigningKey,
    /// Retired keys and the second until which their tokens may live.
    retired: Vec<(VerifyingKey, i64)>,
}

/// Mints access tokens (`typ: at+jwt`, `kid`, `jti`, `iat`, `exp`, `iss`,
/// `aud`, `sub`, and your claims), rotates signing keys, and publishes the
/// public keys as a JWKS.
///
/// ```
/// use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
///
/// let issuer = JwtIssuer::builder(SigningKey::generate(Some("2026-11"), Algorithm::ES256).unwrap())
///     .issuer("https://auth.example.com")
///     .audience("api")
///     .build()
///     .unwrap();
/// let token = issuer.token("alice").roles(["admin"]).mint().unwrap();
/// // The layer verifies with the issuer's rotating key set.
/// let jwt = JwtLayer::builder(issuer.keys()).issuer("https://auth.example.com").audience("api").build().unwrap();
/// # let _ = (token, jwt);
/// ```
#[derive(Clone)]
pub struct JwtIssuer {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Mutex<Keys>,
    shared: SharedKeys,
    iss: String,
    aud: Vec<String>,
    lifetime: Duration,
    clock: SharedClock,
    revocation: Option<RevocationView>,
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("iss", &self.inner.iss)
            .field("aud", &self.inner.aud)
            .field("lifetime", &self.inner.lifetime)
            .finish_non_exhaustive()
    }
}

/// Builds a [`JwtIssuer`].
#[must_use]
#[derive(Debug)]
pub struct JwtIssuerBuilder {
    key: SigningKey,
    iss: String,
    aud: Vec<String>,
    lifetime: Duration,
    clock: SharedClock,
    revocation: Option<RevocationView>,
}

impl JwtIssuerBuilder {
    /// The `iss` of every token.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = iss.into();
        self
    }

    /// An `aud` of every token (call again for several).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.aud.push(aud.into());
        self
    }

    /// Access token lifetime (default 15 minutes).
    pub const fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Reads the time from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Stamps each token's `ver` with the user's current version from
    /// `view` (so that "log out everywhere" spares tokens minted after it).
    pub fn revocation(mut self, view: RevocationView) -> Self {
        self.revocation = Some(view);
        self
    }

    /// The issuer.
    ///
    /// # Errors
    ///
    /// [`IssueError::MissingKid`] for a key without `kid`.
    pub fn build(self) -> Result<JwtIssuer, IssueError> {
        if self.key.kid().is_none() {
            return Err(IssueError::MissingKid);
        }
        let set = KeySet::new([self.key.verifying_key().clone()])?;
        Ok(JwtIssuer {
            inner: Arc::new(Inner {
                keys: Mutex::new(Keys {
                    current: self.key,
                    retired: Vec::new(),
                }),
                shared: SharedKeys::new(set),
                iss: self.iss,
                aud: self.aud,
                lifetime: self.lifetime,
                clock: self.clock,
                revocation: self.revocation,
            }),
        })
    }
}

const REGISTERED: [&str; 11] = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "ver", "scope", "roles",
];

/// A token being minted; see [`JwtIssuer::token`].
#[must_use]
pub struct TokenBuilder<'a> {
    issuer: &'a JwtIssuer,
    sub: String,
    claims: Map<String, Value>,
    error: Option<IssueError>,
    lifetime: Option<Duration>,
}

impl fmt::Debug for TokenBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("sub", &self.sub)
            .finish_non_exhaustive()
    }
}

impl TokenBuilder<'_> {
    /// Sets `roles`.
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        let roles: Vec<Value> = roles.into_iter().map(|r| Value::String(r.into())).collect();
        self.claims.insert("roles".into(), Value::Array(roles));
        self
    }

    /// Sets `scope` (space separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.claims
            .insert("scope".into(), Value::String(scope.into()));
        self
    }

    /// Sets `sid`, the session or refresh family the token belongs to.
    pub fn sid(mut self, sid: impl Into<String>) -> Self {
        self.claims.insert("sid".into(), Value::String(sid.into()));
        self
    }

    /// Sets `ver` explicitly (otherwise the revocation view's current
    /// version, or nothing).
    pub fn ver(mut self, ver: u64) -> Self {
        self.claims.insert("ver".into(), Value::from(ver));
        self
    }

    /// A shorter (or longer) lifetime for this token.
    pub const fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Adds the application's claims (a struct serializing to a JSON object
    /// whose names are not registered claims).
    pub fn claims(mut self, custom: &impl Serialize) -> Self {
        match serde_json::to_value(custom) {
            Ok(Value::Object(map)) => {
                for (k, v) in map {
                    if REGISTERED.contains(&k.as_str()) {
                        self.error = Some(IssueError::Claims(k));
                        break;
                    }
                    self.claims.insert(k, v);
                }
            }
            Ok(_) => self.error = Some(IssueError::Claims("not an object".into())),
            Err(e) => self.error = Some(IssueError::Claims(e.to_string())),
        }
        self
    }

    /// Signs the token.
    ///
    /// # Errors
    ///
    /// [`IssueError`] for bad custom claims, or a signing failure.
    pub fn mint(self) -> Result<AccessToken, IssueError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let inner = &self.issuer.inner;
        let now = i64::try_from(inner.clock.now().secs()).unwrap_or(i64::MAX);
        let lifetime = self.lifetime.unwrap_or(inner.lifetime);
        let exp = now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
        let jti = OpaqueToken::generate()
            .map_err(|_| IssueError::Random)?
            .to_encoded();
        let mut claims = self.claims;
        claims.insert("iss".into(), Value::String(inner.iss.clone()));
        claims.insert("sub".into(), Value::String(self.sub.clone()));
        match inner.aud.as_slice() {
            [] => {}
            [one] => {
                claims.insert("aud".into(), Value::String(one.clone()));
            }
            many => {
                claims.insert("aud".into(), Value::from(many.to_vec()));
            }
        }
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(exp));
        claims.insert("jti".into(), Value::String(jti.clone()));
        if !claims.contains_key("ver") {
            if let Some(view) = &inner.revocation {
                claims.insert("ver".into(), Value::from(view.user_version(&self.sub)));
            }
        }
        let keys = inner.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let key = &keys.current;
        let mut header = jsonwebtoken::Header::new(key.alg().to_jsonwebtoken());
        header.typ = Some("at+jwt".into());
        header.kid = key.kid().map(str::to_owned);
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())
            .map_err(|_| IssueError::Sign)?;
        Ok(AccessToken {
            token,
            jti,
            expires_at: exp,
            expires_in: lifetime.as_secs(),
        })
    }
}

impl JwtIssuer {
    /// Starts a builder; `key` signs (it needs a `kid`).
    pub fn builder(key: SigningKey) -> JwtIssuerBuilder {
        JwtIssuerBuilder {
            key,
            iss: String::new(),
            aud: Vec::new(),
            lifetime: DEFAULT_ACCESS_LIFETIME,
            clock: SystemClock::shared(),
            revocation: None,
        }
    }

    /// Starts a token for user `sub`.
    pub fn token(&self, sub: impl Into<String>) -> TokenBuilder<'_> {
        TokenBuilder {
            issuer: self,
            sub: sub.into(),
            claims: Map::new(),
            error: None,
            lifetime: None,
        }
    }

    /// The verifying keys: the signing key and the retired ones whose tokens
    /// may still be live. Give it to [`JwtLayer::builder`](crate::JwtLayer::builder);
    /// rotation reaches the layer at once.
    #[must_use]
    pub fn keys(&self) -> SharedKeys {
        self.inner.shared.clone()
    }

    /// The `iss` of minted tokens.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.iss
    }

    /// The access token lifetime.
    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    /// Makes `key` the signing key. The old one keeps verifying until every
    /// token it signed has expired (lifetime plus 5 s leeway), then leaves
    /// the key set and the JWKS.
    ///
    /// # Errors
    ///
    /// [`IssueError::MissingKid`], or [`KeyError::DuplicateKid`] when the
    /// `kid` is still in use.
    pub fn rotate(&self, key: SigningKey) -> Result<(), IssueError> {
        if key.kid().is_none() {
            return Err(IssueError::MissingKid);
        }
        let now = i64::try_from(self.inner.clock.now().secs()).unwrap_or(i64::MAX);
        let until =
            now.saturating_add(i64::try_from(self.inner.lifetime.as_secs()).unwrap_or(0) + 5);
        let mut keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut retired: Vec<(VerifyingKey, i64)> = keys
            .retired
            .iter()
            .filter(|(_, u)| *u >= now)
            .cloned()
            .collect();
        retired.push((keys.current.verifying_key().clone(), until));
        let set = KeySet::new(
            std::iter::once(key.verifying_key().clone())
                .chain(retired.iter().map(|(k, _)| k.clone())),
        )?;
        self.inner.shared.replace(set);
        keys.current = key;
        keys.retired = retired;
        Ok(())
    }

    /// The public keys as a JWKS (HMAC keys are never published).
    #[must_use]
    pub fn jwks(&self) -> JwkSet {
        let now = i64::try_from(self.inner.clock.now().secs()).unwrap_or(i64::MAX);
        let keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let live = std::iter::once(keys.current.verifying_key()).chain(
            keys.retired
                .iter()
                .filter(|(_, u)| *u >= now)
                .map(|(k, _)| k),
        );
        JwkSet {
            keys: live.filter_map(|k| k.public_jwk().cloned()).collect(),
        }
    }

    /// The JWKS document as JSON.
    #[must_use]
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwks()).unwrap_or_else(|_| "{\"keys\":[]}".into())
    }
}
