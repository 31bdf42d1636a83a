//! `JwtIssuer`: mints access tokens, rotates keys, publishes its JWKS.
//!
//! (About 520 lines: minting, rotation and retirement share the one lock
//! that orders a rotation after the last `exp` its key signed.)

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
use portcullis_core::{OpaqueToken, SharedClock, SystemClock};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::key::{KeyError, SigningKey, VerifyingKey};
use crate::keys::KeySet;
use crate::keys::{SharedKeys, Update};
use crate::revocation::RevocationView;

/// Default access token lifetime: 15 minutes.
pub const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Why a token could not be minted or an issuer built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
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
    /// [`JwtIssuer::retire`] was asked to retire the key that signs: rotate
    /// to a new key first.
    #[error("the signing key cannot be retired; rotate to a new key first")]
    SigningKeyInUse,
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
    /// The key the token is bound to (its `cnf.jkt`, RFC 9449): the
    /// RFC 7638 SHA-256 thumbprint of the client's DPoP key, or `None` for
    /// a bearer token. A bound token is answered with `token_type: DPoP`
    /// ([`TokenResponse`](crate::TokenResponse)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"REDACTED")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .field("jkt", &self.jkt)
            .finish()
    }
}

/// The leeway a retired key's deadline allows past the last `exp` it
/// signed: the layer's default.
const RETIRE_LEEWAY: i64 = 5;

struct Keys {
    current: SigningKey,
    /// The latest `exp` the current key has signed (`i64::MIN` before its
    /// first token).
    last_exp: i64,
}

/// Mints access tokens (`typ: at+jwt`, `kid`, `jti`, `iat`, `exp`, `iss`,
/// `aud`, `sub`, and your claims), rotates signing keys, and publishes the
/// public keys as a JWKS.
///
/// ```
/// use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
///
/// let issuer = JwtIssuer::builder(SigningKey::generate("2026-11", Algorithm::ES256).unwrap())
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
    events: Events,
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
    events: Events,
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

    /// Reports to `events` (default: nothing listens): `key_rotated` from
    /// [`JwtIssuer::rotate`], `key_retired` from [`JwtIssuer::retire`]
    /// (with the key id, which is public) and `login_succeeded` (user =
    /// `sub`) for every token [`JwtIssuer::login_token`] mints. They happen
    /// outside any request: no route, client or trace id.
    ///
    /// ```
    /// use portcullis_core::events::{AuthEventKind, Events};
    /// use portcullis_jwt::{Algorithm, JwtIssuer, SigningKey};
    ///
    /// let events = Events::new();
    /// let mut audit = events.subscribe("audit", 16);
    /// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    ///     .issuer("https://auth.example.com")
    ///     .audience("api")
    ///     .events(events)
    ///     .build()
    ///     .unwrap();
    /// issuer.rotate(SigningKey::generate("k2", Algorithm::ES256).unwrap()).unwrap();
    /// let event = audit.try_recv().unwrap();
    /// assert_eq!(event.kind, AuthEventKind::KeyRotated { kid: "k2".into() });
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The issuer.
    ///
    /// # Errors
    ///
    /// [`IssueError::Key`] when the key cannot start a key set.
    pub fn build(self) -> Result<JwtIssuer, IssueError> {
        let set = KeySet::new([self.key.verifying_key().clone()])?;
        Ok(JwtIssuer {
            inner: Arc::new(Inner {
                keys: Mutex::new(Keys {
                    current: self.key,
                    last_exp: i64::MIN,
                }),
                shared: SharedKeys::with_clock(set, Arc::clone(&self.clock)),
                iss: self.iss,
                aud: self.aud,
                lifetime: self.lifetime,
                clock: self.clock,
                revocation: self.revocation,
                events: self.events,
            }),
        })
    }
}

/// The claims the issuer controls: an application cannot set them through
/// [`TokenBuilder::claims`] (only through the builder's typed setters), so
/// user-controlled data copied into custom claims cannot forge, say, a
/// fresh `auth_time`.
pub(crate) const REGISTERED: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "sid",
    "ver",
    "scope",
    "roles",
    "auth_time",
    "amr",
    "acr",
    "cnf",
];

/// The `amr` of a [`JwtIssuer::login_token`] unless
/// [`TokenBuilder::methods`] says otherwise: a password (RFC 8176).
pub const DEFAULT_AMR: &str = "pwd";

/// A token being minted; see [`JwtIssuer::token`].
#[must_use]
pub struct TokenBuilder<'a> {
    issuer: &'a JwtIssuer,
    sub: String,
    claims: Map<String, Value>,
    error: Option<IssueError>,
    lifetime: Option<Duration>,
    /// A login token: `auth_time` is the minting time unless set.
    login: bool,
    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`).
    jkt: Option<String>,
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

    /// Sets `auth_time`: when the user last actively authenticated,
    /// seconds since the epoch (for a token minted later than the login,
    /// such as one minted from a session that recorded its login time).
    /// [`JwtIssuer::login_token`] sets it to the minting time.
    pub fn auth_time(mut self, secs: i64) -> Self {
        self.claims.insert("auth_time".into(), Value::from(secs));
        self
    }

    /// Sets `amr`, how the user authenticated: RFC 8176 method names such
    /// as `pwd`, `otp`, `mfa`, `hwk` (replaces earlier methods). An empty
    /// list is refused at [`mint`](Self::mint).
    pub fn methods<I: IntoIterator<Item = S>, S: Into<String>>(mut self, methods: I) -> Self {
        let methods: Vec<Value> = methods
            .into_iter()
            .map(|m| Value::String(m.into()))
            .collect();
        if methods.is_empty() {
            self.error = Some(IssueError::Claims("amr must name a method".into()));
        }
        self.claims.insert("amr".into(), Value::Array(methods));
        self
    }

    /// Sets `acr`, the authentication context class the login satisfied
    /// (checked by [`RequireFreshAuthLayer::acr`](crate::RequireFreshAuthLayer::acr)).
    pub fn acr(mut self, acr: impl Into<String>) -> Self {
        self.claims.insert("acr".into(), Value::String(acr.into()));
        self
    }

    /// Binds the token to the client's DPoP key (RFC 9449 §6.1): adds
    /// `cnf: {"jkt": jkt}`, where `jkt` is the RFC 7638 SHA-256 thumbprint
    /// of the public key in the client's verified DPoP proof
    /// ([`DpopProof::jkt`](crate::dpop::DpopProof::jkt)), base64url
    /// without padding (43 characters). A layer that checks DPoP refuses
    /// the token without a proof signed by that key, and refuses it as a
    /// bearer token. The minted [`AccessToken::jkt`] is set, and its
    /// response says `token_type: DPoP`.
    ///
    /// A value that is not 43 base64url characters makes
    /// [`mint`](Self::mint) fail with [`IssueError::Claims`].
    ///
    /// ```
    /// use portcullis_jwt::{Algorithm, JwtIssuer, SigningKey};
    ///
    /// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    ///     .issuer("https://auth.example.com")
    ///     .audience("api")
    ///     .build()
    ///     .unwrap();
    /// let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    /// let access = issuer.token("alice").dpop_jkt(jkt).mint().unwrap();
    /// assert_eq!(access.jkt.as_deref(), Some(jkt));
    /// assert_eq!(access.to_response().token_type, "DPoP");
    /// assert!(issuer.token("alice").dpop_jkt("not a thumbprint").mint().is_err());
    /// ```
    pub fn dpop_jkt(mut self, jkt: impl Into<String>) -> Self {
        let jkt = jkt.into();
        if is_thumbprint(&jkt) {
            self.jkt = Some(jkt);
        } else {
            self.error = Some(IssueError::Claims(
                "cnf.jkt must be a base64url SHA-256 thumbprint".into(),
            ));
        }
        self
    }

    /// A shorter (or longer) lifetime for this token.
    pub const fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Adds the application's claims (a struct serializing to a JSON object
    /// whose names are not registered claims). A name the issuer controls
    /// (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `sid`, `ver`,
    /// `scope`, `roles`, `auth_time`, `amr`, `acr`, `cnf`) makes
    /// [`mint`](Self::mint) fail with [`IssueError::Claims`]: set those
    /// through the typed setters.
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
        if let Some(jkt) = &self.jkt {
            claims.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
        }
        if self.login && !claims.contains_key("auth_time") {
            claims.insert("auth_time".into(), Value::from(now));
        }
        if !claims.contains_key("ver") {
            if let Some(view) = &inner.revocation {
                claims.insert("ver".into(), Value::from(view.user_version(&self.sub)));
            }
        }
        let mut keys = inner.keys.lock().unwrap_or_else(PoisonError::into_inner);
        // A later rotation retires this key no earlier than this `exp`.
        keys.last_exp = keys.last_exp.max(exp);
        let key = &keys.current;
        let mut header = jsonwebtoken::Header::new(key.alg().to_jsonwebtoken());
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())
            .map_err(|_| IssueError::Sign)?;
        drop(keys);
        if self.login {
            let sub = self.sub.as_str();
            inner.events.emit(|| {
                AuthEvent::new(crate::events::SOURCE, AuthEventKind::LoginSucceeded).user(sub)
            });
        }
        Ok(AccessToken {
            token,
            jti,
            expires_at: exp,
            expires_in: lifetime.as_secs(),
            jkt: self.jkt,
        })
    }
}

/// Whether `jkt` has the shape of an RFC 7638 SHA-256 thumbprint:
/// 43 base64url characters, the last one of the 4 that end 256 bits.
fn is_thumbprint(jkt: &str) -> bool {
    let b = jkt.as_bytes();
    b.len() == 43
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && matches!(
            b[42],
            b'A' | b'E'
                | b'I'
                | b'M'
                | b'Q'
                | b'U'
                | b'Y'
                | b'c'
                | b'g'
                | b'k'
                | b'o'
                | b's'
                | b'w'
                | b'0'
                | b'4'
                | b'8'
        )
}

impl JwtIssuer {
    /// Starts a builder; `key` signs, and its `kid` names it in every token.
    pub fn builder(key: SigningKey) -> JwtIssuerBuilder {
        JwtIssuerBuilder {
            key,
            iss: String::new(),
            aud: Vec::new(),
            lifetime: DEFAULT_ACCESS_LIFETIME,
            clock: SystemClock::shared(),
            revocation: None,
            events: Events::default(),
        }
    }

    /// Starts a token for user `sub`. It carries no `auth_time` (unless
    /// [`TokenBuilder::auth_time`] sets one), so
    /// [`RequireFreshAuthLayer`](crate::RequireFreshAuthLayer) never takes
    /// it for a fresh login: use [`login_token`](Self::login_token) in the
    /// handler that has just checked the user's credentials.
    pub fn token(&self, sub: impl Into<String>) -> TokenBuilder<'_> {
        TokenBuilder {
            issuer: self,
            sub: sub.into(),
            claims: Map::new(),
            error: None,
            lifetime: None,
            login: false,
            jkt: None,
        }
    }

    /// Starts a token for user `sub`, who has just authenticated: its
    /// `auth_time` is the minting time and its `amr` is `["pwd"]`
    /// ([`DEFAULT_AMR`]) unless [`TokenBuilder::methods`] names other
    /// methods; [`TokenBuilder::acr`] adds an `acr`.
    ///
    /// Step-up (asking for the password again before a sensitive action)
    /// is a new login: a token minted here again, with a new `auth_time`.
    /// A token minted later for the same login (from a session, or by a
    /// refresh) keeps the login's time: [`TokenBuilder::auth_time`].
    ///
    /// ```
    /// use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    ///     .issuer("https://auth.example.com")
    ///     .audience("api")
    ///     .build()
    ///     .unwrap();
    /// // The password and a one-time code were checked.
    /// let token = issuer.login_token("alice").methods(["pwd", "otp"]).acr("gold").mint().unwrap();
    /// let claims = JwtLayer::builder_for(&issuer).build().unwrap().verify(&token.token).await.unwrap();
    /// assert!(claims.registered().auth_time.is_some());
    /// assert!(claims.registered().has_method("otp"));
    /// assert_eq!(claims.registered().acr.as_deref(), Some("gold"));
    /// # }
    /// ```
    pub fn login_token(&self, sub: impl Into<String>) -> TokenBuilder<'_> {
        let mut t = self.token(sub).methods([DEFAULT_AMR]);
        t.login = true;
        t
    }

    /// The verifying keys: the signing key and the retired ones whose tokens
    /// may still be live. Give it to [`JwtLayer::builder`](crate::JwtLayer::builder);
    /// rotation and retirement reach the layer at once. A retired key is
    /// refused from its deadline on (see [`rotate`](Self::rotate)), judged
    /// by this issuer's clock.
    #[must_use]
    pub fn keys(&self) -> SharedKeys {
        self.inner.shared.clone()
    }

    /// The `iss` of minted tokens.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.iss
    }

    /// The `aud` values of minted tokens.
    #[must_use]
    pub fn audiences(&self) -> &[String] {
        &self.inner.aud
    }

    /// The clock the issuer reads.
    #[must_use]
    pub fn clock(&self) -> SharedClock {
        Arc::clone(&self.inner.clock)
    }

    /// The access token lifetime.
    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    /// Makes `key` the signing key. The old one keeps verifying the tokens
    /// it signed until they have all expired, then stops.
    ///
    /// Its deadline is the later of "now plus the issuer's lifetime" and
    /// the latest `exp` it signed, plus 5 s (the layer's default leeway).
    /// While the issuer's clock is at or before that second, the old key
    /// is in [`keys`](Self::keys) and [`jwks`](Self::jwks); from the next
    /// second on, every lookup through [`keys`](Self::keys) refuses it
    /// (401, unknown key; cached tokens it signed are no longer served),
    /// and [`jwks`](Self::jwks) no longer lists it. Nothing needs to call
    /// the issuer for that to happen. A layer with a leeway above 5 s
    /// refuses old tokens from that deadline on, although their own
    /// leeway would still run.
    ///
    /// For a compromised key, do not wait: [`retire`](Self::retire) it
    /// after the rotation.
    ///
    /// # Errors
    ///
    /// [`KeyError::DuplicateKid`] when the `kid` is still in use.
    pub fn rotate(&self, key: SigningKey) -> Result<(), IssueError> {
        let kid = key.kid().to_owned();
        let now = i64::try_from(self.inner.clock.now().secs()).unwrap_or(i64::MAX);
        let lifetime = i64::try_from(self.inner.lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let until = now
            .saturating_add(lifetime)
            .max(keys.last_exp)
            .saturating_add(RETIRE_LEEWAY);
        let old_kid = keys.current.kid();
        self.inner.shared.update(|set, retiring| {
            // The keys still live, the same allocations (so the layers'
            // caches keep serving their tokens), the old signing key last.
            let mut next: Vec<(Arc<VerifyingKey>, i64)> = retiring
                .iter()
                .filter(|(_, u)| now <= *u)
                .cloned()
                .collect();
            if next.iter().any(|(k, _)| k.kid() == Some(kid.as_str())) {
                return Err(IssueError::Key(KeyError::DuplicateKid(kid.clone())));
            }
            if let Some(old) = set.find(Some(old_kid)) {
                next.push((Arc::clone(old), until));
            }
            let all = std::iter::once(Arc::new(key.verifying_key().clone()))
                .chain(next.iter().map(|(k, _)| Arc::clone(k)))
                .collect();
            let set = KeySet::from_arcs(all)?;
            Ok(Update::Replace(set, next))
        })?;
        keys.current = key;
        keys.last_exp = i64::MIN;
        drop(keys);
        self.inner.events.emit(|| {
            AuthEvent::new(
                crate::events::SOURCE,
                AuthEventKind::KeyRotated {
                    kid: kid.as_str().into(),
                },
            )
        });
        Ok(())
    }

    /// Retires the key `kid` now, for a compromised key: from the moment
    /// this returns, no lookup through [`keys`](Self::keys) finds it (every
    /// token it signed gets a 401, cached ones included, on every layer
    /// built from [`keys`](Self::keys)) and [`jwks`](Self::jwks) no longer
    /// lists it. The signing key cannot be retired: [`rotate`](Self::rotate)
    /// first. Returns whether the key was still in the set.
    ///
    /// ```
    /// use portcullis_jwt::{Algorithm, JwtIssuer, SigningKey};
    ///
    /// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
    ///     .issuer("https://auth.example.com")
    ///     .audience("api")
    ///     .build()
    ///     .unwrap();
    /// // k1 leaked: sign with k2 from now on, and refuse k1's tokens at once.
    /// issuer.rotate(SigningKey::generate("k2", Algorithm::ES256).unwrap()).unwrap();
    /// assert!(issuer.retire("k1").unwrap());
    /// assert_eq!(issuer.jwks().keys.len(), 1);
    /// assert!(issuer.retire("k2").is_err(), "the signing key");
    /// ```
    ///
    /// # Errors
    ///
    /// [`IssueError::SigningKeyInUse`] for the signing key's `kid`.
    pub fn retire(&self, kid: &str) -> Result<bool, IssueError> {
        let keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if keys.current.kid() == kid {
            return Err(IssueError::SigningKeyInUse);
        }
        let mut removed = false;
        self.inner.shared.update(|set, retiring| {
            let Some(gone) = set.iter().find(|k| k.kid() == Some(kid)) else {
                return Ok(Update::Keep);
            };
            removed = true;
            let all = set
                .iter()
                .filter(|k| !Arc::ptr_eq(k, gone))
                .cloned()
                .collect();
            let retiring = retiring
                .iter()
                .filter(|(k, _)| !Arc::ptr_eq(k, gone))
                .cloned()
                .collect();
            Ok::<_, IssueError>(Update::Replace(KeySet::from_arcs(all)?, retiring))
        })?;
        drop(keys);
        if removed {
            self.inner.events.emit(|| {
                AuthEvent::new(
                    crate::events::SOURCE,
                    AuthEventKind::KeyRetired { kid: kid.into() },
                )
            });
        }
        Ok(removed)
    }

    /// The public keys as a JWKS (HMAC keys are never published): exactly
    /// the keys a lookup through [`keys`](Self::keys) accepts at this
    /// instant, the signing key first.
    #[must_use]
    pub fn jwks(&self) -> JwkSet {
        let now = i64::try_from(self.inner.clock.now().secs()).unwrap_or(i64::MAX);
        JwkSet {
            keys: self
                .inner
                .shared
                .live_at(now)
                .iter()
                .filter_map(|k| k.public_jwk().cloned())
                .collect(),
        }
    }

    /// The JWKS document as JSON.
    #[must_use]
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwks()).unwrap_or_else(|_| "{\"keys\":[]}".into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portcullis_core::ManualClock;
    use serde_json::json;

    use super::*;
    use crate::alg::Algorithm;

    fn payload(token: &str) -> Value {
        use base64::Engine as _;
        let part = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn issuer(clock: Arc<ManualClock>) -> JwtIssuer {
        JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[1; 32]).unwrap())
            .issuer("https://i.test")
            .clock(clock)
            .build()
            .unwrap()
    }

    #[test]
    fn login_tokens_carry_the_login_and_plain_tokens_do_not() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let issuer = issuer(clock.clone());
        let p = payload(&issuer.login_token("alice").mint().unwrap().token);
        assert_eq!(p["auth_time"], json!(1_700_000_000));
        assert_eq!(p["auth_time"], p["iat"]);
        assert_eq!(p["amr"], json!(["pwd"]));
        assert!(p.get("acr").is_none());

        let p = payload(
            &issuer
                .login_token("alice")
                .methods(["pwd", "otp"])
                .acr("gold")
                .mint()
                .unwrap()
                .token,
        );
        assert_eq!(p["amr"], json!(["pwd", "otp"]));
        assert_eq!(p["acr"], json!("gold"));

        let p = payload(&issuer.token("alice").mint().unwrap().token);
        for name in ["auth_time", "amr", "acr"] {
            assert!(p.get(name).is_none(), "{name}");
        }
        // A token minted later for an earlier login keeps its time.
        let p = payload(
            &issuer
                .login_token("alice")
                .auth_time(1_600_000_000)
                .mint()
                .unwrap()
                .token,
        );
        assert_eq!(p["auth_time"], json!(1_600_000_000));
        assert!(matches!(
            issuer
                .login_token("alice")
                .methods(Vec::<String>::new())
                .mint(),
            Err(IssueError::Claims(_))
        ));
    }

    #[test]
    fn a_bound_token_carries_its_key_and_custom_claims_cannot_bind() {
        let issuer = issuer(Arc::new(ManualClock::new(1_700_000_000_000)));
        let jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let access = issuer.token("alice").dpop_jkt(jkt).mint().unwrap();
        assert_eq!(payload(&access.token)["cnf"], json!({ "jkt": jkt }));
        assert_eq!(access.jkt.as_deref(), Some(jkt));
        let plain = issuer.token("alice").mint().unwrap();
        assert!(payload(&plain.token).get("cnf").is_none());
        assert!(plain.jkt.is_none());
        // Only a thumbprint's shape: 43 base64url characters ending 256 bits.
        for bad in [
            "",
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X",
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs=",
            "NzbLsXh8uDCcd+6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xt",
            "\"},\"x\":{\"",
        ] {
            let got = issuer.token("alice").dpop_jkt(bad).mint();
            assert!(matches!(got, Err(IssueError::Claims(_))), "{bad:?}");
        }
        let forged = issuer
            .token("alice")
            .claims(&json!({"cnf": {"jkt": jkt}}))
            .mint();
        assert!(matches!(forged, Err(IssueError::Claims(_))));
    }

    #[test]
    fn custom_claims_cannot_forge_the_login() {
        let issuer = issuer(Arc::new(ManualClock::new(1_700_000_000_000)));
        for forged in [
            json!({"auth_time": 4_000_000_000_i64}),
            json!({"amr": ["hwk", "mfa"]}),
            json!({"acr": "gold"}),
            json!({"tenant": "acme", "auth_time": 1}),
        ] {
            let got = issuer.login_token("alice").claims(&forged).mint();
            assert!(
                matches!(got, Err(IssueError::Claims(_))),
                "{forged}: {got:?}"
            );
        }
        assert!(
            issuer
                .login_token("alice")
                .claims(&json!({"tenant": "acme"}))
                .mint()
                .is_ok()
        );
    }
}
