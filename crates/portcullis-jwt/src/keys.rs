//! Key sets and key sources: a fixed [`KeySet`], the rotating
//! [`SharedKeys`] of an issuer, and the [`KeySource`] trait a layer looks
//! keys up through (a remote JWKS is one too, in `jwks`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use portcullis_core::{SharedClock, SystemClock};

use crate::key::{KeyError, VerifyingKey};

/// A fixed set of verifying keys, looked up by `kid`.
///
/// With one key, a token without `kid` uses it. With several, every key
/// needs a distinct `kid` and a token without one, or with an unknown one,
/// is refused: the set never guesses.
#[derive(Clone, Debug)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    only: Option<Arc<VerifyingKey>>,
    all: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// A set of `keys`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Empty`], [`KeyError::DuplicateKid`], or
    /// [`KeyError::MissingKid`] when one of several keys has no `kid`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<Self, KeyError> {
        Self::from_arcs(keys.into_iter().map(Arc::new).collect())
    }

    /// A set of keys already shared: a key kept from one set into the next
    /// stays the same allocation, so the verified-token cache keeps
    /// serving the tokens it verified.
    pub(crate) fn from_arcs(all: Vec<Arc<VerifyingKey>>) -> Result<Self, KeyError> {
        if all.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut by_kid = HashMap::new();
        for k in &all {
            match k.kid() {
                Some(kid) if by_kid.insert(kid.to_owned(), Arc::clone(k)).is_some() => {
                    return Err(KeyError::DuplicateKid(kid.to_owned()));
                }
                Some(_) => {}
                None if all.len() > 1 => return Err(KeyError::MissingKid),
                None => {}
            }
        }
        let only = (all.len() == 1).then(|| Arc::clone(&all[0]));
        Ok(Self { by_kid, only, all })
    }

    /// The key a token with header `kid` must be verified with, if any.
    #[must_use]
    pub fn find(&self, kid: Option<&str>) -> Option<&Arc<VerifyingKey>> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .or_else(|| self.only.as_ref().filter(|k| k.kid().is_none())),
            None => self.only.as_ref(),
        }
    }

    /// Every key.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VerifyingKey>> {
        self.all.iter()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the set is empty (never, for a set built by [`KeySet::new`]).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A future that completes when a key refresh (started by a lookup) ends.
pub type RefreshFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The outcome of looking a key up.
#[non_exhaustive]
pub enum KeyLookup {
    /// The key to verify with.
    Found(Arc<VerifyingKey>),
    /// No key for this `kid` (or several keys and no `kid`): 401.
    Unknown,
    /// No key set is available at all (a JWKS never loaded): 503.
    Unavailable,
    /// The source is fetching keys (an unknown `kid` started a refresh);
    /// await the future and look up once more.
    Refresh(RefreshFuture),
}

impl fmt::Debug for KeyLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found(k) => f.debug_tuple("Found").field(k).finish(),
            Self::Unknown => f.write_str("Unknown"),
            Self::Unavailable => f.write_str("Unavailable"),
            Self::Refresh(_) => f.write_str("Refresh(..)"),
        }
    }
}

/// A source of verifying keys: a fixed [`KeySet`], the rotating keys of a
/// [`JwtIssuer`](crate::JwtIssuer) ([`SharedKeys`]), or a remote JWKS.
///
/// `lookup` is called on every request: it must be cheap and must not
/// block (no locks held across I/O).
pub trait KeySource: Send + Sync + fmt::Debug + 'static {
    /// The key for a token whose header carries `kid`.
    fn lookup(&self, kid: Option<&str>) -> KeyLookup;

    /// Whether this lookup may start a refresh and so return
    /// [`KeyLookup::Refresh`] (only remote sources). Lets the layer skip
    /// preparing the slow path.
    fn may_refresh(&self) -> bool {
        false
    }
}

impl KeySource for KeySet {
    fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        self.find(kid)
            .map_or(KeyLookup::Unknown, |k| KeyLookup::Found(Arc::clone(k)))
    }
}

/// A key set that can be replaced while readers keep reading, without
/// locks (what a [`JwtIssuer`](crate::JwtIssuer) rotates).
///
/// The keys of a [`JwtIssuer`](crate::JwtIssuer) retired by
/// [`rotate`](crate::JwtIssuer::rotate) carry a deadline: a lookup refuses
/// such a key once the issuer's clock is past it, and the first lookup
/// that sees it refused takes it out of the set (so a clock set back later
/// does not bring it back). Lookups read the clock only for a key with a
/// deadline.
#[derive(Clone)]
pub struct SharedKeys {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    snapshot: ArcSwap<Snapshot>,
    /// Serializes writers (a replacement never loses a concurrent one);
    /// readers never take it.
    writer: Mutex<()>,
    clock: SharedClock,
}

/// One consistent state: the keys and the deadlines of the retiring ones.
struct Snapshot {
    /// Inline, not behind another `Arc`: a lookup on every request
    /// chases one pointer (the snapshot) instead of two.
    set: KeySet,
    /// Keys that verify only until a second (since the epoch), by pointer.
    retiring: Box<[(Arc<VerifyingKey>, i64)]>,
}

impl Snapshot {
    fn plain(set: KeySet) -> Self {
        Self {
            set,
            retiring: Box::default(),
        }
    }

    fn deadline(&self, key: &Arc<VerifyingKey>) -> Option<i64> {
        self.retiring
            .iter()
            .find(|(k, _)| Arc::ptr_eq(k, key))
            .map(|(_, until)| *until)
    }

    fn live(&self, key: &Arc<VerifyingKey>, now: i64) -> bool {
        self.deadline(key).is_none_or(|until| now <= until)
    }

    /// This state without the keys whose deadline is before `now` (`None`
    /// when there is none, or when nothing would be left).
    fn without_expired(&self, now: i64) -> Option<Self> {
        if self.retiring.iter().all(|(_, until)| now <= *until) {
            return None;
        }
        let keep: Vec<Arc<VerifyingKey>> = self
            .set
            .iter()
            .filter(|k| self.live(k, now))
            .cloned()
            .collect();
        let set = KeySet::from_arcs(keep).ok()?;
        Some(Self {
            set,
            retiring: self
                .retiring
                .iter()
                .filter(|(_, until)| now <= *until)
                .cloned()
                .collect(),
        })
    }
}

impl fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.snapshot.load();
        f.debug_struct("SharedKeys")
            .field("keys", &snapshot.set.len())
            .field("retiring", &snapshot.retiring.len())
            .finish()
    }
}

fn now_secs(clock: &SharedClock) -> i64 {
    i64::try_from(clock.now().secs()).unwrap_or(i64::MAX)
}

impl SharedKeys {
    /// Starts with `keys`.
    #[must_use]
    pub fn new(keys: KeySet) -> Self {
        Self::with_clock(keys, SystemClock::shared())
    }

    /// Starts with `keys`; deadlines of retiring keys are judged by `clock`.
    pub(crate) fn with_clock(keys: KeySet, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(SharedInner {
                snapshot: ArcSwap::from_pointee(Snapshot::plain(keys)),
                writer: Mutex::new(()),
                clock,
            }),
        }
    }

    fn write(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the set (no key of it has a deadline); lookups already
    /// under way finish with the old one.
    pub fn replace(&self, keys: KeySet) {
        let _w = self.write();
        self.inner.snapshot.store(Arc::new(Snapshot::plain(keys)));
    }

    /// Replaces the state with the one `f` makes of the current set and
    /// deadlines, atomically for readers; `f` runs with writers excluded.
    pub(crate) fn update<E>(
        &self,
        f: impl FnOnce(&KeySet, &[(Arc<VerifyingKey>, i64)]) -> Result<Update, E>,
    ) -> Result<(), E> {
        let _w = self.write();
        let old = self.inner.snapshot.load_full();
        match f(&old.set, &old.retiring)? {
            Update::Keep => {}
            Update::Replace(set, retiring) => {
                self.inner.snapshot.store(Arc::new(Snapshot {
                    set,
                    retiring: retiring.into_boxed_slice(),
                }));
            }
        }
        Ok(())
    }

    /// The keys lookups accept now (a key past its deadline is left out;
    /// the signing key of an issuer has none, so the set is never empty).
    #[must_use]
    pub fn current(&self) -> Arc<KeySet> {
        let snapshot = self.inner.snapshot.load();
        match snapshot.without_expired(now_secs(&self.inner.clock)) {
            Some(live) => Arc::new(live.set),
            None => Arc::new(snapshot.set.clone()),
        }
    }

    /// The keys lookups accept at `now`, in set order.
    pub(crate) fn live_at(&self, now: i64) -> Vec<Arc<VerifyingKey>> {
        let snapshot = self.inner.snapshot.load();
        snapshot
            .set
            .iter()
            .filter(|k| snapshot.live(k, now))
            .cloned()
            .collect()
    }

    /// Takes the keys past their deadline out of the set (once a lookup
    /// has refused one).
    fn prune(&self, now: i64) {
        let Ok(_w) = self.inner.writer.try_lock() else {
            // A writer is busy; the deadline check refuses the key anyway.
            return;
        };
        if let Some(pruned) = self.inner.snapshot.load().without_expired(now) {
            self.inner.snapshot.store(Arc::new(pruned));
        }
    }
}

/// What [`SharedKeys::update`] does with the state.
pub(crate) enum Update {
    /// Leaves it.
    Keep,
    /// Replaces it with a set and the deadlines of its retiring keys.
    Replace(KeySet, Vec<(Arc<VerifyingKey>, i64)>),
}

impl KeySource for SharedKeys {
    fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        let snapshot = self.inner.snapshot.load();
        let Some(key) = snapshot.set.find(kid) else {
            return KeyLookup::Unknown;
        };
        if let Some(until) = snapshot.deadline(key) {
            let now = now_secs(&self.inner.clock);
            if now > until {
                drop(snapshot);
                self.prune(now);
                return KeyLookup::Unknown;
            }
        }
        KeyLookup::Found(Arc::clone(key))
    }
}

impl<K: KeySource + ?Sized> KeySource for Arc<K> {
    fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        (**self).lookup(kid)
    }
    fn may_refresh(&self) -> bool {
        (**self).may_refresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::Algorithm;

    #[test]
    fn key_set_rules() {
        let k = |kid: Option<&str>| VerifyingKey::hmac(kid, Algorithm::HS256, &[7; 32]).unwrap();
        assert_eq!(KeySet::new([]).unwrap_err(), KeyError::Empty);
        assert_eq!(
            KeySet::new([k(Some("a")), k(None)]).unwrap_err(),
            KeyError::MissingKid
        );
        assert_eq!(
            KeySet::new([k(Some("a")), k(Some("a"))]).unwrap_err(),
            KeyError::DuplicateKid("a".into())
        );
        let one = KeySet::new([k(None)]).unwrap();
        assert!(one.find(None).is_some());
        let one_kid = KeySet::new([k(Some("a"))]).unwrap();
        assert!(one_kid.find(None).is_some());
        assert!(one_kid.find(Some("b")).is_none());
        let two = KeySet::new([k(Some("a")), k(Some("b"))]).unwrap();
        assert!(two.find(None).is_none(), "never guess");
        assert!(two.find(Some("b")).is_some());
        assert!(two.find(Some("../../etc/passwd")).is_none());
    }
}
