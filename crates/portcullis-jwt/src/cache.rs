//! A bounded cache of verified asymmetric tokens.
//!
//! Verifying RS256, ES256 or EdDSA costs tens of microseconds; a client
//! sends the same token on every request until it expires. The cache maps a
//! token to its verified claims. It is keyed by a keyed (SipHash) hash of
//! the signature segment, and a hit compares the whole token byte for byte,
//! so a collision can only cause a miss, never accept a token that was not
//! verified. An entry is never served past the token's `exp`; revocation
//! is checked on every request after the cache, so a revoked token is
//! refused even while cached.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{PoisonError, RwLock};

use crate::claims::Claims;

const SHARDS: usize = 16;

struct Entry<T> {
    token: Box<str>,
    claims: Claims<T>,
    /// `exp` plus leeway: the last second the token may be served.
    serve_until: i64,
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

    pub(crate) fn get(&self, token: &str, now: i64) -> Option<Claims<T>> {
        let (h, shard) = self.locate(token);
        let map = self.shards[shard]
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let e = map.get(&h)?;
        (e.token.as_ref() == token && now <= e.serve_until).then(|| e.claims.clone())
    }

    pub(crate) fn insert(&self, token: &str, claims: Claims<T>, serve_until: i64, now: i64) {
        let (h, shard) = self.locate(token);
        let mut map = self.shards[shard]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard {
            map.retain(|_, e| e.serve_until >= now);
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
                claims,
                serve_until,
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
    use crate::claims::{NoCustomClaims, RegisteredClaims};

    fn claims() -> Claims<NoCustomClaims> {
        Claims::new(RegisteredClaims::default(), NoCustomClaims {})
    }

    #[test]
    fn hit_needs_the_whole_token_and_a_live_exp() {
        let c = TokenCache::new(100);
        c.insert("h.p.sig", claims(), 100, 0);
        assert!(c.get("h.p.sig", 100).is_some());
        assert!(c.get("h.p.sig", 101).is_none(), "never past exp");
        assert!(
            c.get("h.OTHER.sig", 50).is_none(),
            "same signature, other payload: miss"
        );
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(32);
        for i in 0..1000 {
            c.insert(&format!("h.p.{i}"), claims(), 1_000_000, 0);
        }
        assert!(c.len() <= 32);
    }
}
