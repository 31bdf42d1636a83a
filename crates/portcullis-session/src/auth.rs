//! How and when the user authenticated, and how long a login is
//! remembered: kept in the session's data under reserved keys (prefix
//! [`AUTH_PREFIX`]), so that every store keeps them without a change.
//!
//! | key | value |
//! |---|---|
//! | `~auth:at` | when the user last entered credentials: ms since the Unix epoch |
//! | `~auth:amr` | the methods used, as RFC 8176 names: `["pwd", "otp"]` |
//! | `~auth:remember` | a remembered login's idle window: `{"idle_ms": 604800000}` |
//!
//! Application code can read these keys but never write or remove them
//! ([`SessionErrorKind::ReservedKey`](crate::SessionErrorKind::ReservedKey));
//! [`Session::login_with`](crate::Session::login_with),
//! [`Session::reauthenticated`](crate::Session::reauthenticated) and
//! [`Session::password_changed`](crate::Session::password_changed) set them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use portcullis_core::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::SessionRecord;

/// Data keys starting with this prefix are reserved for the
/// authentication state: applications may read them, but
/// [`Session::insert`](crate::Session::insert) and
/// [`Session::remove`](crate::Session::remove) refuse them.
pub const AUTH_PREFIX: &str = "~auth:";

/// When the user last entered credentials (ms since the Unix epoch).
pub(crate) const AT_KEY: &str = "~auth:at";
/// The authentication methods (RFC 8176 names).
pub(crate) const AMR_KEY: &str = "~auth:amr";
/// A remembered login's idle window.
pub(crate) const REMEMBER_KEY: &str = "~auth:remember";

/// Whether `key` is one applications may not write.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with(AUTH_PREFIX)
}

/// A way the user proved who they are, named as in RFC 8176 ("Authentication
/// Method Reference Values"), the names OpenID Connect's `amr` claim uses.
///
/// ```
/// use portcullis_session::AuthMethod;
///
/// assert_eq!(AuthMethod::PASSWORD.as_str(), "pwd");
/// let custom = AuthMethod::new("passkey").unwrap();
/// assert_eq!(custom.as_str(), "passkey");
/// assert!(AuthMethod::new("two words").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuthMethod(Cow<'static, str>);

/// A name that cannot be an [`AuthMethod`]: it must be 1 to 32 ASCII
/// letters, digits, `-`, `_` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an authentication method is 1 to 32 ASCII letters, digits, '-', '_' or '.'")]
pub struct InvalidAuthMethod;

impl AuthMethod {
    /// `pwd`: a password.
    pub const PASSWORD: Self = Self(Cow::Borrowed("pwd"));
    /// `otp`: a one-time password (TOTP, HOTP).
    pub const OTP: Self = Self(Cow::Borrowed("otp"));
    /// `hwk`: proof of possession of a hardware-secured key (a security
    /// key, a passkey on a platform authenticator).
    pub const HARDWARE_KEY: Self = Self(Cow::Borrowed("hwk"));
    /// `swk`: proof of possession of a software-secured key.
    pub const SOFTWARE_KEY: Self = Self(Cow::Borrowed("swk"));
    /// `sms`: a code sent by text message.
    pub const SMS: Self = Self(Cow::Borrowed("sms"));
    /// `mfa`: several factors.
    pub const MULTI_FACTOR: Self = Self(Cow::Borrowed("mfa"));
    /// `pin`: a personal identification number or pattern.
    pub const PIN: Self = Self(Cow::Borrowed("pin"));
    /// `fpt`: a fingerprint.
    pub const FINGERPRINT: Self = Self(Cow::Borrowed("fpt"));
    /// `face`: facial recognition.
    pub const FACE: Self = Self(Cow::Borrowed("face"));
    /// `user`: user presence (a touch, a click).
    pub const USER_PRESENCE: Self = Self(Cow::Borrowed("user"));

    /// A method by name: an RFC 8176 value not among the constants, or one
    /// the application agrees on with its peers.
    ///
    /// # Errors
    ///
    /// [`InvalidAuthMethod`] unless `name` is 1 to 32 ASCII letters,
    /// digits, `-`, `_` or `.`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self, InvalidAuthMethod> {
        let name = name.into();
        if is_method_name(&name) {
            Ok(Self(name))
        } else {
            Err(InvalidAuthMethod)
        }
    }

    /// The method's name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_method_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthMethod({})", self.0)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a user logs in: the methods they used (default: a password) and
/// whether the browser keeps the login after it closes. For
/// [`Session::login_with`](crate::Session::login_with).
///
/// ```
/// use std::time::Duration;
/// use portcullis_session::{AuthMethod, LoginOptions};
///
/// # let remember_me_box_checked = true;
/// let mut options = LoginOptions::new().methods([AuthMethod::PASSWORD, AuthMethod::OTP]);
/// if remember_me_box_checked {
///     options = options.remember(Duration::from_secs(30 * 24 * 3600));
/// }
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct LoginOptions {
    pub(crate) methods: Vec<AuthMethod>,
    pub(crate) remember: Option<Duration>,
}

impl Default for LoginOptions {
    fn default() -> Self {
        Self {
            methods: vec![AuthMethod::PASSWORD],
            remember: None,
        }
    }
}

impl LoginOptions {
    /// A password login, not remembered.
    pub fn new() -> Self {
        Self::default()
    }

    /// The methods the user authenticated with (replaces the default
    /// `pwd`; duplicates are dropped).
    pub fn methods(mut self, methods: impl IntoIterator<Item = AuthMethod>) -> Self {
        self.methods = Vec::new();
        merge_methods(&mut self.methods, methods);
        self
    }

    /// Remembers the login for `lifetime` (the "remember me" box): the
    /// session cookie becomes persistent, with `Max-Age` set to the
    /// session's absolute deadline, and the session's idle window becomes
    /// [`SessionConfig::remembered_idle_timeout`](crate::SessionConfig::remembered_idle_timeout).
    /// `lifetime` is capped at
    /// [`SessionConfig::max_remember`](crate::SessionConfig::max_remember);
    /// zero means not remembered.
    ///
    /// Without it the cookie is a browser-session cookie (no `Max-Age`),
    /// and the session has the configured idle timeout and absolute
    /// lifetime. See [`SessionConfig::max_remember`](crate::SessionConfig::max_remember)
    /// for what remembering trades.
    pub const fn remember(mut self, lifetime: Duration) -> Self {
        self.remember = if lifetime.is_zero() {
            None
        } else {
            Some(lifetime)
        };
        self
    }
}

/// Appends the methods of `new` not yet in `into`, in order.
pub(crate) fn merge_methods(into: &mut Vec<AuthMethod>, new: impl IntoIterator<Item = AuthMethod>) {
    for m in new {
        if !into.contains(&m) {
            into.push(m);
        }
    }
}

/// A remembered login's idle window, as stored under [`REMEMBER_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    idle_ms: u64,
}

/// Reads the authentication time from session data.
pub(crate) fn authenticated_at(data: &BTreeMap<String, Value>) -> Option<Timestamp> {
    data.get(AT_KEY)?.as_u64().map(Timestamp::from_millis)
}

/// Reads the authentication methods from session data (unknown or
/// malformed entries are skipped).
pub(crate) fn auth_methods(data: &BTreeMap<String, Value>) -> Vec<AuthMethod> {
    data.get(AMR_KEY)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| AuthMethod::new(s.to_owned()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The idle window of a remembered login, `None` when not remembered.
pub(crate) fn remembered_idle(data: &BTreeMap<String, Value>) -> Option<Duration> {
    let v = data.get(REMEMBER_KEY)?;
    let r: Remembered = serde_json::from_value(v.clone()).ok()?;
    (r.idle_ms > 0).then(|| Duration::from_millis(r.idle_ms))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes the authentication time and methods.
pub(crate) fn set_authenticated(
    data: &mut BTreeMap<String, Value>,
    at: Timestamp,
    methods: &[AuthMethod],
) {
    data.insert(AT_KEY.to_owned(), json!(at.millis()));
    data.insert(AMR_KEY.to_owned(), json!(methods));
}

/// Marks the data as a remembered login with this idle window, or as not
/// remembered.
pub(crate) fn set_remembered(data: &mut BTreeMap<String, Value>, idle: Option<Duration>) {
    match idle {
        Some(idle) => {
            data.insert(
                REMEMBER_KEY.to_owned(),
                json!(Remembered {
                    idle_ms: millis(idle)
                }),
            );
        }
        None => {
            data.remove(REMEMBER_KEY);
        }
    }
}

/// Drops every reserved key (a new login starts its own record).
pub(crate) fn strip_reserved(data: &mut BTreeMap<String, Value>) {
    data.retain(|k, _| !is_reserved(k));
}

impl SessionRecord {
    /// When the user last entered credentials: at login, or at
    /// [`Session::reauthenticated`](crate::Session::reauthenticated).
    /// `None` for an anonymous session (and for sessions created before
    /// portcullis recorded it).
    #[must_use]
    pub fn authenticated_at(&self) -> Option<Timestamp> {
        authenticated_at(&self.data)
    }

    /// How the user authenticated (RFC 8176 names), in the order first
    /// used; empty for an anonymous session.
    #[must_use]
    pub fn auth_methods(&self) -> Vec<AuthMethod> {
        auth_methods(&self.data)
    }

    /// Whether the login was remembered ("remember me").
    #[must_use]
    pub fn is_remembered(&self) -> bool {
        remembered_idle(&self.data).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_table() {
        for ok in ["pwd", "otp", "hwk", "x-passkey", "a.b_c", &"m".repeat(32)] {
            assert!(AuthMethod::new(ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in ["", "two words", "pwd\"", "é", &"m".repeat(33), "a/b"] {
            assert!(AuthMethod::new(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_keys_round_trip_through_json() {
        let mut data = BTreeMap::from([("cart".to_owned(), json!([1]))]);
        let at = Timestamp::from_millis(1_700_000_000_123);
        set_authenticated(&mut data, at, &[AuthMethod::PASSWORD, AuthMethod::OTP]);
        set_remembered(&mut data, Some(Duration::from_secs(7 * 86_400)));
        // As a store that keeps JSON text would.
        let text = serde_json::to_string(&data).unwrap();
        let back: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(authenticated_at(&back), Some(at));
        assert_eq!(
            auth_methods(&back),
            vec![AuthMethod::PASSWORD, AuthMethod::OTP]
        );
        assert_eq!(
            remembered_idle(&back),
            Some(Duration::from_secs(7 * 86_400))
        );
        strip_reserved(&mut data);
        assert_eq!(data.keys().collect::<Vec<_>>(), ["cart"]);
    }

    #[test]
    fn malformed_reserved_values_read_as_absent() {
        let data = BTreeMap::from([
            (AT_KEY.to_owned(), json!("soon")),
            (AMR_KEY.to_owned(), json!(["pwd", 3, "bad name", "otp"])),
            (REMEMBER_KEY.to_owned(), json!({ "idle_ms": 0 })),
        ]);
        assert_eq!(authenticated_at(&data), None);
        assert_eq!(
            auth_methods(&data),
            vec![AuthMethod::PASSWORD, AuthMethod::OTP]
        );
        assert_eq!(remembered_idle(&data), None);
    }

    #[test]
    fn record_accessors_read_the_reserved_keys() {
        let t = Timestamp::from_secs(1_700_000_000);
        let mut rec = SessionRecord {
            user_id: Some("alice".into()),
            data: BTreeMap::new(),
            created_at: t,
            last_seen: t,
            idle_deadline: t,
            absolute_deadline: t,
            metadata: crate::store::SessionMetadata::default(),
        };
        assert_eq!(rec.authenticated_at(), None);
        assert!(rec.auth_methods().is_empty());
        assert!(!rec.is_remembered());
        set_authenticated(&mut rec.data, t, &[AuthMethod::HARDWARE_KEY]);
        set_remembered(&mut rec.data, Some(Duration::from_secs(60)));
        assert_eq!(rec.authenticated_at(), Some(t));
        assert_eq!(rec.auth_methods(), vec![AuthMethod::HARDWARE_KEY]);
        assert!(rec.is_remembered());
        set_remembered(&mut rec.data, None);
        assert!(!rec.is_remembered());
    }

    #[test]
    fn methods_merge_without_duplicates() {
        let opts =
            LoginOptions::new().methods([AuthMethod::OTP, AuthMethod::PASSWORD, AuthMethod::OTP]);
        assert_eq!(opts.methods, vec![AuthMethod::OTP, AuthMethod::PASSWORD]);
        assert_eq!(LoginOptions::new().methods, vec![AuthMethod::PASSWORD]);
        assert_eq!(LoginOptions::new().remember(Duration::ZERO).remember, None);
    }
}
