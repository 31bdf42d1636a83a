//! [`ThrottleConfig`]: which counters, their backoff, where the account and
//! the client address come from.

use std::fmt;
use std::time::Duration;

use portcullis_core::events::Events;
use portcullis_core::{SharedClock, SystemClock};

use crate::account::{NormalizeFn, normalize_account};
use crate::address::ClientAddress;
use crate::store::{Backoff, ThrottleScope};

/// How long a counter is remembered after its last failure by default:
/// an hour, well past every default cap.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The strict counter, one account from one address: 5 failures free, then
/// 1 s doubling up to 15 minutes (AWS Cognito's rule, which OWASP's testing
/// guide cites as acceptable).
pub const DEFAULT_ACCOUNT_AT_ADDRESS: Backoff = Backoff {
    free_failures: 5,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(15 * 60),
    forget_after: DEFAULT_FORGET_AFTER,
};

/// One address, every account: 20 failures free (one NAT or office, many
/// users mistyping), then 1 s doubling up to 15 minutes.
pub const DEFAULT_ADDRESS: Backoff = Backoff {
    free_failures: 20,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(15 * 60),
    forget_after: DEFAULT_FORGET_AFTER,
};

/// One account, every address: 10 failures free, then 1 s doubling up to
/// one minute. It slows a guesser spread over many addresses to about one
/// guess a minute per account, and never holds the rightful user back
/// longer than a minute.
pub const DEFAULT_ACCOUNT: Backoff = Backoff {
    free_failures: 10,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
    forget_after: DEFAULT_FORGET_AFTER,
};

/// The body field holding the account name by default.
pub const DEFAULT_ACCOUNT_FIELD: &str = "username";

/// The largest login body read by default: 16 KiB.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024;

/// A configuration the builder refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThrottleConfigError {
    /// A backoff's `base` is zero or above its `cap`.
    #[error("the {0:?} backoff needs 0 < base <= cap")]
    Backoff(ThrottleScope),
    /// A backoff forgets before its cap has passed.
    #[error("the {0:?} backoff needs forget_after >= cap")]
    ForgetAfter(ThrottleScope),
    /// The account field name is empty.
    #[error("the account field name is empty")]
    AccountField,
    /// The body limit is zero.
    #[error("the body limit is zero")]
    MaxBody,
    /// No counter applies to a request (every counter disabled, or only
    /// account counters without an account field).
    #[error("no counter is enabled for the requests this throttle sees")]
    NoCounter,
}

/// The throttle's configuration; build it with [`ThrottleConfig::builder`]
/// (or take [`ThrottleConfig::default`] for a login route, and
/// [`ThrottleConfig::refresh_endpoints`] for refresh endpoints).
///
/// ## The three counters, and what they trade
///
/// Failures are counted per request in up to three counters, each with its
/// own [`Backoff`]; a request is refused while **any** of its counters is
/// blocked:
///
/// | counter | default | stops |
/// |---|---|---|
/// | account at address | 5 free, 1 s doubling, cap 15 min ([`DEFAULT_ACCOUNT_AT_ADDRESS`]) | one source guessing one account |
/// | address | 20 free, 1 s doubling, cap 15 min ([`DEFAULT_ADDRESS`]) | one source trying many accounts (credential stuffing) |
/// | account | 10 free, 1 s doubling, cap 60 s ([`DEFAULT_ACCOUNT`]) | many sources guessing one account |
///
/// Why not one strict counter per account? Because then an attacker who
/// fails once every 15 minutes from anywhere keeps the rightful user locked
/// out for good: the lockout denial of service OWASP warns about. Here the
/// strict counter is bound to the attacker's own address, and the
/// account-wide counter never blocks longer than its cap (a minute by
/// default): the rightful user, from their own address, is slowed by at
/// most that, never locked out (unless the attacker shares that address,
/// one NAT: then the address counter applies to both). The price: a guesser with many addresses
/// gets about one guess per account per minute (525,600 a year against
/// one account, far below what a password of the policy's length yields);
/// raise [`DEFAULT_ACCOUNT`]'s cap to trade the rightful user's wait for
/// fewer guesses. Exempting browsers that logged in before (OWASP's "device
/// cookies") would remove even that wait; it is not part of this crate.
///
/// A blocked request is answered 429 **without** reaching the handler: a
/// right password is not checked while blocked, so the block cannot tell
/// an attacker which guess was right. Counters forget `forget_after` after
/// their last failure (an hour by default).
///
/// ```
/// use std::time::Duration;
/// use portcullis_throttle::{Backoff, ThrottleConfig, ThrottleScope};
///
/// let config = ThrottleConfig::builder()
///     .account_field("email")
///     .backoff(ThrottleScope::Account, Backoff {
///         free_failures: 10,
///         base: Duration::from_secs(1),
///         cap: Duration::from_secs(300),
///         forget_after: Duration::from_secs(3600),
///     })
///     .build()
///     .unwrap();
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ThrottleConfig {
    pub(crate) account_at_address: Option<Backoff>,
    pub(crate) address: Option<Backoff>,
    pub(crate) account: Option<Backoff>,
    pub(crate) account_field: Option<String>,
    pub(crate) normalize: NormalizeFn,
    pub(crate) max_body: usize,
    pub(crate) client_address: ClientAddress,
    pub(crate) clock: SharedClock,
    pub(crate) events: Events,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            account_at_address: Some(DEFAULT_ACCOUNT_AT_ADDRESS),
            address: Some(DEFAULT_ADDRESS),
            account: Some(DEFAULT_ACCOUNT),
            account_field: Some(DEFAULT_ACCOUNT_FIELD.to_owned()),
            normalize: normalize_account,
            max_body: DEFAULT_MAX_BODY,
            client_address: ClientAddress::peer(),
            clock: SystemClock::shared(),
            events: Events::default(),
        }
    }
}

impl fmt::Debug for ThrottleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleConfig")
            .field("account_at_address", &self.account_at_address)
            .field("address", &self.address)
            .field("account", &self.account)
            .field("account_field", &self.account_field)
            .field("max_body", &self.max_body)
            .field("client_address", &self.client_address)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl ThrottleConfig {
    /// A builder starting from the defaults: the three counters, the
    /// account in the `username` field, the peer address, the system clock.
    pub fn builder() -> ThrottleConfigBuilder {
        ThrottleConfigBuilder {
            config: Self::default(),
        }
    }

    /// For refresh endpoints (no account in the request): the address
    /// counter only, with the default backoff.
    #[must_use]
    pub fn refresh_endpoints() -> Self {
        Self {
            account_field: None,
            ..Self::default()
        }
    }

    /// The backoff of `scope`'s counter, `None` when disabled.
    #[must_use]
    pub const fn backoff(&self, scope: ThrottleScope) -> Option<&Backoff> {
        match scope {
            ThrottleScope::AccountAtAddress => self.account_at_address.as_ref(),
            ThrottleScope::Address => self.address.as_ref(),
            ThrottleScope::Account => self.account.as_ref(),
        }
    }

    /// The body field the account is read from, `None` when not read.
    #[must_use]
    pub fn account_field(&self) -> Option<&str> {
        self.account_field.as_deref()
    }

    /// The largest body read to find the account.
    #[must_use]
    pub const fn max_body(&self) -> usize {
        self.max_body
    }

    /// How the client address is found.
    #[must_use]
    pub const fn client_address(&self) -> &ClientAddress {
        &self.client_address
    }

    /// Where the throttle's events go (see
    /// [`ThrottleConfigBuilder::events`]).
    #[must_use]
    pub const fn events(&self) -> &Events {
        &self.events
    }

    fn slot(&mut self, scope: ThrottleScope) -> &mut Option<Backoff> {
        match scope {
            ThrottleScope::AccountAtAddress => &mut self.account_at_address,
            ThrottleScope::Address => &mut self.address,
            ThrottleScope::Account => &mut self.account,
        }
    }
}

/// Builds a [`ThrottleConfig`]; see there for the defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct ThrottleConfigBuilder {
    config: ThrottleConfig,
}

impl ThrottleConfigBuilder {
    /// Sets (and enables) `scope`'s counter.
    pub fn backoff(mut self, scope: ThrottleScope, backoff: Backoff) -> Self {
        *self.config.slot(scope) = Some(backoff);
        self
    }

    /// Disables `scope`'s counter.
    pub fn disable(mut self, scope: ThrottleScope) -> Self {
        *self.config.slot(scope) = None;
        self
    }

    /// The body field holding the account name (default `username`), in
    /// an urlencoded form or a JSON object.
    pub fn account_field(mut self, name: impl Into<String>) -> Self {
        self.config.account_field = Some(name.into());
        self
    }

    /// Requests carry no account (refresh endpoints): the body is not read
    /// and only the address counter applies.
    pub fn no_account(mut self) -> Self {
        self.config.account_field = None;
        self
    }

    /// How account names are normalised before counting (default
    /// [`normalize_account`]: trimmed, lower-cased). Use the rule the
    /// application's user lookup uses, so two spellings of one account
    /// share its counters.
    pub fn normalize_account(mut self, normalize: NormalizeFn) -> Self {
        self.config.normalize = normalize;
        self
    }

    /// The largest body read to find the account (default 16 KiB); a
    /// longer one gets 413.
    pub const fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// How the client address is found (default: the peer address only).
    pub fn client_address(mut self, client_address: ClientAddress) -> Self {
        self.config.client_address = client_address;
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.config.clock = clock;
        self
    }

    /// Where the throttle's [`AuthEvent`](portcullis_core::events::AuthEvent)s
    /// go (default [`Events::default`]: nothing listens, nothing is built).
    /// Source `throttle`:
    ///
    /// | kind | when | carries |
    /// |---|---|---|
    /// | `throttled` | a 429 before the handler (a blocked counter, or an attempt at the same account already in flight) | `retry_after`, the request's context |
    /// | `login_failed` | the handler marked the attempt failed ([`LoginOutcome::Failed`](crate::LoginOutcome), a [`LoginFailure`](crate::LoginFailure)), or answered 401 without a marker | the [`LoginFailure`](crate::LoginFailure)'s reason (`invalid_credentials` by default) and user id, when the handler gave one |
    /// | `store_unavailable` | a store error answered 503 | store `throttle`, operation `check` (before the handler), `record` (a failure) or `reset` (a success) |
    ///
    /// An event never carries the account name the request typed: it is
    /// user input. Only the user id the handler resolved and handed over
    /// in a [`LoginFailure`](crate::LoginFailure).
    ///
    /// No `login_succeeded` comes from the throttle: the session or refresh
    /// login that creates the session or family emits it, with the user.
    ///
    /// Layer decisions (for a recorder's timing histogram) are `Success`
    /// for an attempt let through to the handler, `Failure` for a refusal
    /// (reason `throttled`, `throttle-store`, or the 400/413 codes), and
    /// `None` for a request not counted (`GET`, `HEAD`, `OPTIONS`).
    ///
    /// ```
    /// use portcullis_core::events::Events;
    /// use portcullis_throttle::ThrottleConfig;
    ///
    /// let events = Events::new();
    /// let audit = events.subscribe("audit", 1024);
    /// let config = ThrottleConfig::builder().events(events.clone()).build().unwrap();
    /// assert!(config.events().enabled());
    /// # drop(audit);
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.config.events = events;
        self
    }

    /// Checks and builds the configuration.
    ///
    /// # Errors
    ///
    /// [`ThrottleConfigError`] for a backoff with a zero base, a base above
    /// its cap or a `forget_after` below its cap; an empty field name; a
    /// zero body limit; or no counter left for the requests.
    pub fn build(self) -> Result<ThrottleConfig, ThrottleConfigError> {
        let c = self.config;
        for scope in ThrottleScope::ALL {
            if let Some(b) = c.backoff(scope) {
                if b.base.is_zero() || b.base > b.cap {
                    return Err(ThrottleConfigError::Backoff(scope));
                }
                if b.forget_after < b.cap {
                    return Err(ThrottleConfigError::ForgetAfter(scope));
                }
            }
        }
        if c.account_field.as_deref() == Some("") {
            return Err(ThrottleConfigError::AccountField);
        }
        if c.max_body == 0 {
            return Err(ThrottleConfigError::MaxBody);
        }
        let any = if c.account_field.is_some() {
            c.account_at_address.is_some() || c.address.is_some() || c.account.is_some()
        } else {
            c.address.is_some()
        };
        if !any {
            return Err(ThrottleConfigError::NoCounter);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(base: u64, cap: u64, forget: u64) -> Backoff {
        Backoff {
            free_failures: 1,
            base: Duration::from_secs(base),
            cap: Duration::from_secs(cap),
            forget_after: Duration::from_secs(forget),
        }
    }

    #[test]
    fn validation_table() {
        let s = ThrottleScope::Account;
        let cases = [
            (ThrottleConfig::builder(), None),
            (
                ThrottleConfig::builder().backoff(s, b(0, 1, 1)),
                Some(ThrottleConfigError::Backoff(s)),
            ),
            (
                ThrottleConfig::builder().backoff(s, b(2, 1, 1)),
                Some(ThrottleConfigError::Backoff(s)),
            ),
            (
                ThrottleConfig::builder().backoff(s, b(1, 10, 9)),
                Some(ThrottleConfigError::ForgetAfter(s)),
            ),
            (
                ThrottleConfig::builder().account_field(""),
                Some(ThrottleConfigError::AccountField),
            ),
            (
                ThrottleConfig::builder().max_body(0),
                Some(ThrottleConfigError::MaxBody),
            ),
            (
                ThrottleConfig::builder()
                    .no_account()
                    .disable(ThrottleScope::Address),
                Some(ThrottleConfigError::NoCounter),
            ),
            (
                ThrottleConfig::builder()
                    .disable(ThrottleScope::Address)
                    .disable(ThrottleScope::Account)
                    .disable(ThrottleScope::AccountAtAddress),
                Some(ThrottleConfigError::NoCounter),
            ),
            (
                ThrottleConfig::builder()
                    .no_account()
                    .disable(ThrottleScope::Account),
                None,
            ),
        ];
        for (builder, want) in cases {
            assert_eq!(builder.build().err(), want);
        }
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let d = ThrottleConfig::default();
        assert_eq!(
            d.backoff(ThrottleScope::AccountAtAddress),
            Some(&DEFAULT_ACCOUNT_AT_ADDRESS)
        );
        assert_eq!(d.account_field(), Some("username"));
        assert!(ThrottleConfig::builder().build().is_ok());
        assert_eq!(ThrottleConfig::refresh_endpoints().account_field(), None);
        // The rightful user is never held back longer than the account cap.
        assert_eq!(DEFAULT_ACCOUNT.delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(
            DEFAULT_ACCOUNT_AT_ADDRESS.delay(14),
            Duration::from_secs(512)
        );
        assert_eq!(
            DEFAULT_ACCOUNT_AT_ADDRESS.delay(15),
            Duration::from_secs(900)
        );
    }
}
