//! The introspector: the answer cache, the single flight per token, the
//! checks on an answer and the feed of the revocation view.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use portcullis_core::SharedClock;
use tokio::sync::watch;

use super::client::{ActiveAnswer, Answer, Client};
use super::{IntrospectionError, IntrospectionErrorKind};
use crate::claims::{Claims, NoCustomClaims, RegisteredClaims};
use crate::revocation::{RevocationEvent, RevocationStore, RevocationView};

/// The cache key of a token: its SHA-256.
type Key = [u8; 32];

fn key_of(token: &str) -> Key {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// How long a revocation entry for an answer without `exp` lasts: one
/// day, the largest cache bound a layer accepts.
pub(crate) const MAX_CACHE_BOUND_SECS: i64 = 24 * 3600;

fn hash_key(key: &Key) -> String {
    format!(
        "sha256:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    )
}

/// The revocation-view key under which an [`IntrospectionLayer`](super::IntrospectionLayer)
/// denies an opaque token whose answer carried no `jti`:
/// `sha256:` and the base64url SHA-256 of the token. A token revoked
/// under it is refused by every introspection layer sharing the view.
///
/// ```
/// use portcullis_jwt::introspect::revocation_key;
///
/// assert_eq!(
///     revocation_key("abc"),
///     "sha256:ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
/// );
/// ```
#[must_use]
pub fn revocation_key(token: &str) -> String {
    hash_key(&key_of(token))
}

/// What an introspection endpoint said about an active token, as the
/// layer caches it.
pub struct IntrospectedToken {
    claims: Claims<NoCustomClaims>,
    token_type: Option<String>,
    cnf_jkt: Option<String>,
    confirmed: bool,
    /// `jti` = the token's [`revocation_key`], checked against the view
    /// beside the claims.
    by_hash: RegisteredClaims,
}

impl IntrospectedToken {
    fn new(answer: ActiveAnswer, key: &Key) -> Self {
        let by_hash = RegisteredClaims {
            jti: Some(hash_key(key)),
            ..RegisteredClaims::default()
        };
        Self {
            claims: Claims::new(answer.registered, NoCustomClaims {}),
            token_type: answer.token_type,
            cnf_jkt: answer.cnf_jkt,
            confirmed: answer.confirmed,
            by_hash,
        }
    }

    /// The claims the answer carried (`sub`, `scope`, `client_id`, `exp`,
    /// ...).
    #[must_use]
    pub const fn claims(&self) -> &Claims<NoCustomClaims> {
        &self.claims
    }

    /// The answer's `token_type`.
    #[must_use]
    pub fn token_type(&self) -> Option<&str> {
        self.token_type.as_deref()
    }

    /// The answer's `cnf.jkt`: the RFC 7638 thumbprint of the key the
    /// token is bound to (RFC 9449). Such a token is refused as a bearer
    /// token; a DPoP check compares a proof's key with this.
    #[must_use]
    pub fn cnf_jkt(&self) -> Option<&str> {
        self.cnf_jkt.as_deref()
    }

    /// Whether the token is sender-constrained: a `cnf` member of any
    /// confirmation method (`jkt` of DPoP, `x5t#S256` of a client
    /// certificate, `jwk`, ...), or `token_type` `DPoP`. Such a token is
    /// never accepted as a bearer token.
    #[must_use]
    pub fn is_sender_constrained(&self) -> bool {
        self.confirmed
            || self
                .token_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("dpop"))
    }
}

impl fmt::Debug for IntrospectedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectedToken")
            .field("claims", &self.claims)
            .field("token_type", &self.token_type)
            .field("cnf_jkt", &self.cnf_jkt)
            .finish_non_exhaustive()
    }
}

/// A usable answer.
#[derive(Clone)]
pub(crate) enum Outcome {
    Active(Arc<IntrospectedToken>),
    Inactive,
}

/// What one call to the endpoint gave its waiters.
#[derive(Clone)]
pub(crate) enum Fetched {
    Done(Outcome),
    Failed(&'static str),
}

struct Entry {
    outcome: Outcome,
    /// Served until this time (ms); kept after it (until replaced or
    /// evicted) so an inactive answer can tell a token seen active.
    until_ms: i64,
}

#[derive(Default)]
struct State {
    answers: HashMap<Key, Entry>,
    in_flight: HashMap<Key, watch::Receiver<Option<Fetched>>>,
}

/// The layer's cache and checks; shared by every clone of the layer.
pub(crate) struct Introspector {
    client: Client,
    state: Mutex<State>,
    clock: SharedClock,
    capacity: usize,
    max_calls: usize,
    active_bound_ms: i64,
    inactive_bound_ms: i64,
    leeway_secs: i64,
    issuer: Option<String>,
    audiences: Vec<String>,
    revocation: Option<RevocationView>,
    store: Option<Arc<dyn RevocationStore>>,
    calls: AtomicU64,
}

/// The answer for a request: known now, or after the endpoint's call.
pub(crate) enum Lookup {
    Now(Outcome),
    Wait(watch::Receiver<Option<Fetched>>),
}

/// The settings of an [`Introspector`].
pub(crate) struct Settings {
    pub(crate) client: Client,
    pub(crate) clock: SharedClock,
    pub(crate) capacity: usize,
    pub(crate) max_calls: usize,
    pub(crate) active_bound: std::time::Duration,
    pub(crate) inactive_bound: std::time::Duration,
    pub(crate) leeway: std::time::Duration,
    pub(crate) issuer: Option<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) revocation: Option<RevocationView>,
    pub(crate) store: Option<Arc<dyn RevocationStore>>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Introspector {
    pub(crate) fn new(s: Settings) -> Self {
        Self {
            client: s.client,
            state: Mutex::new(State::default()),
            clock: s.clock,
            capacity: s.capacity,
            max_calls: s.max_calls,
            active_bound_ms: ms(s.active_bound),
            inactive_bound_ms: ms(s.inactive_bound),
            leeway_secs: i64::try_from(s.leeway.as_secs()).unwrap_or(i64::MAX),
            issuer: s.issuer,
            audiences: s.audiences,
            revocation: s.revocation,
            store: s.store,
            calls: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().millis()).unwrap_or(i64::MAX)
    }

    /// Calls made to the endpoint so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) const fn timeout(&self) -> std::time::Duration {
        self.client.timeout()
    }

    pub(crate) fn has_revocation(&self) -> bool {
        self.revocation.is_some()
    }

    /// The cached answer for `token`, or the call that will give it: one
    /// per token at a time, however many requests wait for it, and at most
    /// `max_calls` at once (then a 503 at once). The call
    /// runs on a task of its own, so a request that goes away does not
    /// cancel it for the others.
    pub(crate) fn lookup(self: &Arc<Self>, token: &str) -> Result<Lookup, IntrospectionError> {
        let key = key_of(token);
        let now = self.now_ms();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let seen_active = match state.answers.get(&key) {
            Some(e) if e.until_ms > now => return Ok(Lookup::Now(e.outcome.clone())),
            Some(Entry {
                outcome: Outcome::Active(t),
                ..
            }) => Some(Arc::clone(t)),
            _ => None,
        };
        if let Some(rx) = state.in_flight.get(&key) {
            return Ok(Lookup::Wait(rx.clone()));
        }
        if state.in_flight.len() >= self.max_calls {
            // A flood of tokens never seen: no more calls open at once.
            return Err(IntrospectionError::provider("provider-busy"));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| IntrospectionError::provider("provider-gone"))?;
        let (tx, rx) = watch::channel(None);
        state.in_flight.insert(key, rx.clone());
        drop(state);
        let this = Arc::clone(self);
        let token = token.to_owned();
        runtime.spawn(async move {
            let fetched = this.call(&token, key, seen_active).await;
            drop(token);
            let _ = tx.send(Some(fetched));
        });
        Ok(Lookup::Wait(rx))
    }

    /// One call to the endpoint: its answer cached (never a failure),
    /// the in-flight mark removed, the revocation view fed.
    async fn call(
        &self,
        token: &str,
        key: Key,
        seen_active: Option<Arc<IntrospectedToken>>,
    ) -> Fetched {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = self.client.introspect(token).await;
        let now = self.now_ms();
        let (fetched, until_ms) = match answer {
            Ok(Answer::Active(a)) => {
                let exp_ms = a
                    .registered
                    .exp
                    .map_or(i64::MAX, |e| e.saturating_mul(1000));
                let until = now.saturating_add(self.active_bound_ms).min(exp_ms);
                let token = Arc::new(IntrospectedToken::new(*a, &key));
                (Fetched::Done(Outcome::Active(token)), Some(until))
            }
            Ok(Answer::Inactive) => {
                if let Some(was) = seen_active {
                    self.revoke(&was, now).await;
                }
                let until = now.saturating_add(self.inactive_bound_ms);
                (Fetched::Done(Outcome::Inactive), Some(until))
            }
            Err(e) => {
                portcullis_core::event!(warn, reason = e.reason(), "token introspection failed");
                (Fetched::Failed(e.reason()), None)
            }
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(until_ms), Fetched::Done(outcome)) = (until_ms, &fetched) {
            if until_ms > now {
                self.insert(&mut state, key, outcome.clone(), until_ms, now);
            }
        }
        state.in_flight.remove(&key);
        fetched
    }

    /// Caches an answer, making room first: expired entries go, then, while
    /// the cache is still full, arbitrary ones.
    fn insert(&self, state: &mut State, key: Key, outcome: Outcome, until_ms: i64, now: i64) {
        if !state.answers.contains_key(&key) && state.answers.len() >= self.capacity {
            state.answers.retain(|_, e| e.until_ms > now);
            while state.answers.len() >= self.capacity {
                let Some(victim) = state.answers.keys().next().copied() else {
                    break;
                };
                state.answers.remove(&victim);
            }
        }
        state.answers.insert(key, Entry { outcome, until_ms });
    }

    /// Denies a token seen active that the endpoint now calls inactive:
    /// under its `jti`, or its hash key without one, until its `exp` (a
    /// day from now without one); in the view at once, then in the store
    /// when there is one (which tells every instance's view).
    async fn revoke(&self, was: &IntrospectedToken, now_ms: i64) {
        let Some(view) = &self.revocation else {
            return;
        };
        let registered = was.claims.registered();
        let expires_at = registered
            .exp
            .unwrap_or_else(|| (now_ms / 1000).saturating_add(MAX_CACHE_BOUND_SECS));
        let jti = registered
            .jti
            .clone()
            .or_else(|| was.by_hash.jti.clone())
            .unwrap_or_default();
        view.apply(&RevocationEvent::Token {
            jti: jti.clone(),
            expires_at,
        });
        if let Some(store) = &self.store {
            if let Err(_e) = store.revoke_token(&jti, expires_at).await {
                portcullis_core::event!(
                    warn,
                    error = %_e,
                    "an inactive token could not be written to the revocation store; only this instance refuses it"
                );
            }
        }
    }

    /// The checks every request makes on an answer, cached or fresh: the
    /// claims the request gets, or why it is refused.
    pub(crate) fn admit(
        &self,
        outcome: &Outcome,
    ) -> Result<Claims<NoCustomClaims>, IntrospectionError> {
        use IntrospectionErrorKind as K;
        let refuse = |kind| Err(IntrospectionError::new(kind));
        let Outcome::Active(token) = outcome else {
            return refuse(K::Inactive);
        };
        let reg = token.claims.registered();
        let now = self.now_ms() / 1000;
        if reg
            .exp
            .is_some_and(|exp| now > exp.saturating_add(self.leeway_secs))
        {
            return refuse(K::Expired);
        }
        if reg
            .nbf
            .is_some_and(|nbf| now.saturating_add(self.leeway_secs) < nbf)
        {
            return refuse(K::NotYetValid);
        }
        if token.is_sender_constrained() {
            return refuse(K::SenderConstrained);
        }
        if token
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return refuse(K::WrongTokenType);
        }
        if let Some(iss) = &self.issuer {
            if reg.iss.as_deref() != Some(iss.as_str()) {
                return refuse(K::BadIssuer);
            }
        }
        if !self.audiences.is_empty()
            && !reg
                .aud
                .as_ref()
                .is_some_and(|aud| self.audiences.iter().any(|a| aud.contains(a)))
        {
            return refuse(K::BadAudience);
        }
        if let Some(view) = &self.revocation {
            if !view.is_ready() {
                return refuse(K::RevocationUnavailable);
            }
            if view.check(reg).is_some() || view.check(&token.by_hash).is_some() {
                return refuse(K::Revoked);
            }
        }
        Ok(token.claims.clone())
    }
}
