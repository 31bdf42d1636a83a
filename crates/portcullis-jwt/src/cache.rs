//! A bounded cache of verified tokens.
//!
//! Verifying RS256, ES256 or EdDSA costs tens of microseconds, and even
//! HMAC with the strict claim checks costs a few; a client sends the same
//! token on every request until it expires. The cache maps a token to its
//! verified claims. It is keyed by a keyed (SipHash) hash of the signature
//! segment, and a hit compares the whole token byte for byte, so a
//! collision can only cause a miss, never accept a token that was not
//! verified. An entry is served only inside the token's time window (never
//! past `exp` plus leeway, and never before `nbf`/`iat` minus leeway when
//! the clock is set back), and only while the key source still returns the
//! very key that verified it: a key removed from a set or a JWKS, retired
//! by [`JwtIssuer::retire`](crate::JwtIssuer::retire) or past its
//! retirement deadline ends its cached tokens at once, and the first
//! request that finds such an entry drops it.
//! Revocation is checked on every request after the cache, so a revoked
//! token is refused even while cached.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, PoisonError, RwLock};

use crate::claims::Claims;
use crate::key::VerifyingKey;
use crate::keys::{KeyLookup, KeySource};
use crate::validation::Window;

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
    /// Which key source verified it: the index of its issuer in the
    /// layer's issuer set (0 with a single key source).
    pub(crate) issuer: usize,
}

const SHARDS: usize = 16;

struct Entry<T> {
    token: Box<str>,
    claims: Claims<T>,
    /// The seconds the token may be served in.
    window: Window,
    kid: Option<Arc<str>>,
    key: Arc<VerifyingKey>,
    /// The issuer whose key source verified it.
    issuer: usize,
}

type Shard<T> = RwLock<HashMap<u64, Entry<T>>>;

pub(crate) struct TokenCache<T> {
    shards: Box<[Shard<T>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl<T> TokenCache<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    fn locate(&self, token: &str) -> (u64, usize) {
        let sig = token.rsplit('.').next().unwrap_or(token);
        let h = self.hasher.hash_one(sig);
        #[allow(clippy::cast_possible_truncation)]
        let shard = (h >> 60) as usize % SHARDS;
        (h, shard)
    }

    /// The claims of `token` if it was verified, `now` is inside its time
    /// window, and the key source of the issuer that verified it (`keys`
    /// of its index) still returns the key that verified it.
    pub(crate) fn get<'k>(
        &self,
        token: &str,
        now: i64,
        keys: impl FnOnce(usize) -> Option<&'k dyn KeySource>,
    ) -> Option<Claims<T>> {
        let (h, shard) = self.locate(token);
        {
            let map = self.shards[shard]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let e = map.get(&h)?;
            if e.token.as_ref() != token || !e.window.contains(now) {
                return None;
            }
            // Key lookups never block (lock-free sets, no I/O): asked under
            // the read lock, nothing but the claims is cloned on a hit.
            let lookup = keys(e.issuer).map_or(KeyLookup::Unknown, |k| k.lookup(e.kid.as_deref()));
            match lookup {
                KeyLookup::Found(k) if Arc::ptr_eq(&k, &e.key) => return Some(e.claims.clone()),
                // A refresh under way: the key may come back.
                KeyLookup::Refresh(_) => return None,
                // Another key (or none) under that kid now: the entry can
                // never be served again.
                _ => {}
            }
        }
        let mut map = self.shards[shard]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&h).is_some_and(|e| e.token.as_ref() == token) {
            map.remove(&h);
        }
        None
    }

    pub(crate) fn insert(&self, token: &str, v: &Verified<T>, now: i64) {
        let (h, shard) = self.locate(token);
        let mut map = self.shards[shard]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard {
            map.retain(|_, e| e.window.until >= now);
            if map.len() >= self.per_shard {
                // Still full of live entries: drop an arbitrary one.
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            h,
            Entry {
                token: token.into(),
                claims: v.claims.clone(),
                window: v.window,
                kid: v.kid.clone(),
                key: Arc::clone(&v.key),
                issuer: v.issuer,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::Algorithm;
    use crate::claims::{NoCustomClaims, RegisteredClaims};
    use crate::keys::KeySet;

    fn keys(kid: &str, secret: u8) -> KeySet {
        let key = VerifyingKey::hmac(Some(kid), Algorithm::HS256, &[secret; 32]).unwrap();
        KeySet::new([key]).unwrap()
    }

    fn verified(keys: &KeySet, kid: &str, serve_until: i64) -> Verified<NoCustomClaims> {
        Verified {
            claims: Claims::new(RegisteredClaims::default(), NoCustomClaims {}),
            window: Window {
                from: 0,
                until: serve_until,
            },
            kid: Some(Arc::from(kid)),
            key: Arc::clone(keys.find(Some(kid)).unwrap()),
            issuer: 0,
        }
    }

    /// `c.get` with one key source.
    fn get(c: &TokenCache<NoCustomClaims>, token: &str, now: i64, ks: &KeySet) -> bool {
        c.get(token, now, |_| Some(ks as &dyn KeySource)).is_some()
    }

    #[test]
    fn hit_needs_the_whole_token_and_a_live_exp() {
        let ks = keys("a", 1);
        let c = TokenCache::new(100);
        c.insert("h.p.sig", &verified(&ks, "a", 100), 0);
        assert!(get(&c, "h.p.sig", 100, &ks));
        assert!(!get(&c, "h.p.sig", 101, &ks), "never past exp");
        assert!(!get(&c, "h.p.sig", -1, &ks), "never before iat");
        assert!(
            !get(&c, "h.OTHER.sig", 50, &ks),
            "same signature, other payload: miss"
        );
    }

    #[test]
    fn hit_needs_the_key_that_verified_it() {
        let ks = keys("a", 1);
        let c = TokenCache::new(100);
        c.insert("h.p.sig", &verified(&ks, "a", 100), 0);
        assert!(get(&c, "h.p.sig", 10, &ks));
        // The kid removed, or the same kid now naming another key: miss,
        // and the entry is dropped.
        assert!(!get(&c, "h.p.sig", 10, &keys("b", 1)));
        assert!(!get(&c, "h.p.sig", 10, &keys("a", 2)));
        assert_eq!(c.len(), 0, "dropped");
        assert!(!get(&c, "h.p.sig", 10, &ks), "gone for good");
    }

    /// With several issuers, a hit asks the source of the issuer that
    /// verified the token, never another one's.
    #[test]
    fn hit_asks_the_issuer_that_verified_it() {
        let a = keys("k", 1);
        let b = keys("k", 2);
        let sources = [&a as &dyn KeySource, &b as &dyn KeySource];
        let c = TokenCache::new(100);
        let mut v = verified(&b, "k", 100);
        v.issuer = 1;
        c.insert("h.p.sig", &v, 0);
        assert!(c.get("h.p.sig", 10, |i| sources.get(i).copied()).is_some());
        // Issuer 1's source asked for another issuer's key set: miss.
        let swapped = [&b as &dyn KeySource, &a as &dyn KeySource];
        assert!(c.get("h.p.sig", 10, |i| swapped.get(i).copied()).is_none());
        // No such issuer: miss.
        c.insert("h.p.sig", &v, 0);
        assert!(c.get("h.p.sig", 10, |_| None).is_none());
    }

    #[test]
    fn bounded() {
        let ks = keys("a", 1);
        let c = TokenCache::new(32);
        for i in 0..1000 {
            c.insert(&format!("h.p.{i}"), &verified(&ks, "a", 1_000_000), 0);
        }
        assert!(c.len() <= 32);
    }
}
