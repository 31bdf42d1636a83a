//! The `ThrottleStore` trait, its counters and the backoff rule.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp, TokenDigest};

/// What a counter counts failures of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleScope {
    /// One account, from every address: slows a guesser spread over many
    /// addresses.
    Account,
    /// One client address (an IPv6 /64), every account: slows one source
    /// trying many accounts.
    Address,
    /// One account from one address: the strict counter.
    AccountAtAddress,
}

impl ThrottleScope {
    /// Every scope, in a fixed order.
    pub const ALL: [Self; 3] = [Self::Account, Self::Address, Self::AccountAtAddress];

    /// A short stable name (`"account"`, `"address"`, `"account_at_address"`)
    /// that stores may use in their keys or columns.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Address => "address",
            Self::AccountAtAddress => "account_at_address",
        }
    }
}

/// A counter's key: its scope and a SHA-256 digest of what it counts
/// (never the account name or the address in clear). `Debug` shows the
/// scope only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThrottleKey {
    scope: ThrottleScope,
    digest: TokenDigest,
}

impl ThrottleKey {
    /// A key from its scope and the digest of what it counts.
    ///
    /// ```
    /// use portcullis_core::TokenDigest;
    /// use portcullis_throttle::{ThrottleKey, ThrottleScope};
    ///
    /// let key = ThrottleKey::new(ThrottleScope::Account, TokenDigest::of(b"alice"));
    /// assert_eq!(key.scope(), ThrottleScope::Account);
    /// assert_eq!(format!("{key:?}"), "ThrottleKey(Account)");
    /// ```
    #[must_use]
    pub const fn new(scope: ThrottleScope, digest: TokenDigest) -> Self {
        Self { scope, digest }
    }

    /// The key of an account's counter (every address). `account` is the
    /// normalised name ([`normalize_account`](crate::normalize_account) by
    /// default); only its SHA-256 digest is kept.
    #[must_use]
    pub fn for_account(account: &str) -> Self {
        let mut input = Vec::with_capacity(account.len() + 32);
        input.extend_from_slice(b"portcullis-throttle/account\0");
        input.extend_from_slice(account.as_bytes());
        Self::new(ThrottleScope::Account, TokenDigest::of(&input))
    }

    /// The key of a client address's counter (every account): IPv4
    /// addresses whole, IPv6 by their /64
    /// ([`counted_address`](crate::address::counted_address)).
    ///
    /// ```
    /// use portcullis_throttle::ThrottleKey;
    ///
    /// let a = ThrottleKey::for_address("2001:db8::1".parse().unwrap());
    /// let b = ThrottleKey::for_address("2001:db8::ffff".parse().unwrap());
    /// assert_eq!(a, b);
    /// ```
    #[must_use]
    pub fn for_address(ip: IpAddr) -> Self {
        let mut input = Vec::with_capacity(48);
        input.extend_from_slice(b"portcullis-throttle/address\0");
        push_address(&mut input, ip);
        Self::new(ThrottleScope::Address, TokenDigest::of(&input))
    }

    /// The key of an account's counter at one client address.
    #[must_use]
    pub fn for_account_at_address(account: &str, ip: IpAddr) -> Self {
        let mut input = Vec::with_capacity(account.len() + 64);
        input.extend_from_slice(b"portcullis-throttle/account-at-address\0");
        input.extend_from_slice(&(account.len() as u64).to_be_bytes());
        input.extend_from_slice(account.as_bytes());
        push_address(&mut input, ip);
        Self::new(ThrottleScope::AccountAtAddress, TokenDigest::of(&input))
    }

    /// What the counter counts failures of.
    #[must_use]
    pub const fn scope(&self) -> ThrottleScope {
        self.scope
    }

    /// The digest of what the counter counts.
    #[must_use]
    pub const fn digest(&self) -> &TokenDigest {
        &self.digest
    }
}

fn push_address(out: &mut Vec<u8>, ip: IpAddr) {
    match crate::address::counted_address(ip) {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets()[..8]);
        }
    }
}

impl fmt::Debug for ThrottleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ThrottleKey").field(&self.scope).finish()
    }
}

/// The backoff rule, pure, shared by every store.
///
/// After `free_failures` failures, each further failure doubles the wait,
/// from `base` up to `cap`. A counter whose last failure is
/// `forget_after` old or older is forgotten (counts as no failure).
///
/// ```
/// use std::time::Duration;
/// use portcullis_throttle::Backoff;
///
/// let b = Backoff {
///     free_failures: 5,
///     base: Duration::from_secs(1),
///     cap: Duration::from_secs(900),
///     forget_after: Duration::from_secs(3600),
/// };
/// assert_eq!(b.delay(4), Duration::ZERO);
/// assert_eq!(b.delay(5), Duration::from_secs(1));
/// assert_eq!(b.delay(6), Duration::from_secs(2));
/// assert_eq!(b.delay(50), Duration::from_secs(900));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The first wait, after `free_failures` failures.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// A counter whose last failure is this old is forgotten.
    pub forget_after: Duration,
}

impl Backoff {
    /// 0 when `failures < free_failures`, else
    /// `min(base * 2^(min(failures - free_failures, 30)), cap)`.
    #[must_use]
    pub fn delay(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(30);
        self.base
            .checked_mul(1_u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

/// A counter as a store returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottleState {
    /// Failures counted since the counter was last forgotten or reset.
    pub failures: u32,
    /// When the last of them happened (`None`: no failure).
    pub last_failure: Option<Timestamp>,
}

impl ThrottleState {
    /// `last_failure + backoff.delay(failures)`, when that is after `now`
    /// and the counter is not forgotten (`last_failure + forget_after <=
    /// now` counts as 0 failures).
    ///
    /// A `last_failure` after `now` (written by an instance whose clock runs
    /// ahead) blocks nothing: a wait measured from a time that has not come
    /// would hold the rightful user back for the whole skew, past every
    /// cap. Instances sharing a store need synchronised clocks; skew only
    /// weakens the throttle by its length, it never locks anyone out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use portcullis_core::Timestamp;
    /// use portcullis_throttle::{Backoff, ThrottleState};
    ///
    /// let b = Backoff {
    ///     free_failures: 1,
    ///     base: Duration::from_secs(1),
    ///     cap: Duration::from_secs(60),
    ///     forget_after: Duration::from_secs(3600),
    /// };
    /// let s = ThrottleState { failures: 2, last_failure: Some(Timestamp::from_secs(100)) };
    /// assert_eq!(s.blocked_until(&b, Timestamp::from_secs(101)), Some(Timestamp::from_secs(102)));
    /// assert_eq!(s.blocked_until(&b, Timestamp::from_secs(102)), None);
    /// // A failure from the future (a fast clock elsewhere) blocks nothing.
    /// assert_eq!(s.blocked_until(&b, Timestamp::from_secs(99)), None);
    /// ```
    #[must_use]
    pub fn blocked_until(&self, backoff: &Backoff, now: Timestamp) -> Option<Timestamp> {
        let last = self.last_failure?;
        if last > now || last + backoff.forget_after <= now {
            return None;
        }
        let until = last + backoff.delay(self.failures);
        (until > now).then_some(until)
    }
}

/// A throttle backend: failure counters keyed by [`ThrottleKey`].
///
/// Object safe (the layer holds an `Arc<dyn ThrottleStore>`); every method
/// must be safe to call concurrently, and racing failures on one key must
/// each be counted. Stores judge forgetting by the `now` callers pass, never
/// by wall time alone. Errors: [`StoreError::backend`] or
/// [`StoreError::timeout`] when the outcome is unknown; the layer then
/// answers 503 (fails closed).
///
/// The [`testing`](crate::testing) module (feature `testing`) has the
/// conformance suite.
#[async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// Each key's counter, in order (unknown or forgotten: `Default`). One
    /// round trip.
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError>;

    /// Atomically, per key: forget the counter when `last_failure +
    /// forget_after <= now`, then `failures += 1` (saturating) and
    /// `last_failure = now`; returns the new states in order. The stored
    /// counter expires by itself `forget_after` after `now`.
    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError>;

    /// Forgets the counters (an account's successful login).
    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: ThrottleStore + ?Sized> ThrottleStore for Arc<S> {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        (**self).check(keys, now, forget_after).await
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        (**self).record_failure(keys, now, forget_after).await
    }

    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        (**self).reset(keys).await
    }
}
