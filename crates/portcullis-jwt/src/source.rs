//! Where the layer finds verifying keys.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::key::{KeySet, VerifyingKey};

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
#[derive(Clone)]
pub struct SharedKeys {
    inner: Arc<ArcSwap<KeySet>>,
}

impl fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeys")
            .field("keys", &self.inner.load().len())
            .finish()
    }
}

impl SharedKeys {
    /// Starts with `keys`.
    #[must_use]
    pub fn new(keys: KeySet) -> Self {
        Self {
            inner: Arc::new(ArcSwap::from_pointee(keys)),
        }
    }

    /// Replaces the set; lookups already under way finish with the old one.
    pub fn replace(&self, keys: KeySet) {
        self.inner.store(Arc::new(keys));
    }

    /// The current set.
    #[must_use]
    pub fn current(&self) -> Arc<KeySet> {
        self.inner.load_full()
    }
}

impl KeySource for SharedKeys {
    fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        self.inner.load().lookup(kid)
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
