//! What happened: [`AuthEvent`] and its [`AuthEventKind`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::context::{EventContext, TraceId};

/// What happened. Reason codes are the same `&'static str` codes the
/// layers put in their problem+json answers (`expired`, `bad-signature`,
/// `csrf-cross-origin`, ...): a closed, documented set per layer, safe as
/// metric attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthEventKind {
    /// A login succeeded: a session or refresh family was created for the
    /// user.
    LoginSucceeded,
    /// A login failed. `reason` is the application's code
    /// (`invalid_credentials` when it gave none), never what was typed.
    LoginFailed {
        /// Why, as a code.
        reason: &'static str,
    },
    /// The user logged out of this device.
    Logout,
    /// Every session or refresh family of the user was ended.
    LogoutEverywhere,
    /// The session was given a new id (`renew`, re-authentication).
    SessionRenewed,
    /// A session was ended because the user reached the per-user cap.
    SessionEvicted,
    /// A request presented a session that has expired.
    SessionExpired,
    /// A request presented a refresh family that has expired.
    FamilyExpired,
    /// A refresh token was rotated.
    RefreshRotated,
    /// A rotated refresh token was presented again: the family was revoked.
    RefreshReuseDetected,
    /// One device (a session or refresh family) was revoked.
    DeviceRevoked,
    /// The user changed their password: their other devices were ended.
    PasswordChanged,
    /// The CSRF layer refused a request.
    CsrfRefused {
        /// `csrf-cross-origin`, `csrf-token-missing`,
        /// `csrf-token-mismatch`, `csrf-token-expired`, ...
        reason: &'static str,
    },
    /// The JWT layer refused a token.
    JwtRefused {
        /// `expired`, `bad-signature`, `unknown-key`, `revoked`,
        /// `bad-audience`, ...
        reason: &'static str,
    },
    /// A login attempt was answered 429 before any check.
    Throttled {
        /// How long the client was told to wait.
        retry_after: Duration,
    },
    /// A route asked for a fresher login than the request had.
    ReauthRequired {
        /// `login-not-fresh`, `insufficient-user-authentication`, ...
        reason: &'static str,
    },
    /// A store call failed: the request was answered 503.
    StoreUnavailable {
        /// The store: its role (`session`, `refresh`, `throttle`,
        /// `revocation`) or the name given to [`StoreEvents`](super::StoreEvents).
        store: &'static str,
        /// The operation (`load`, `save`, `rotate`, ...).
        operation: &'static str,
    },
    /// The revocation view lost its feed and is past its staleness bound.
    RevocationViewStale,
    /// The revocation view is in step again after being stale.
    RevocationViewRecovered,
    /// A new signing key became the current one.
    KeyRotated {
        /// The new key's id (public).
        kid: Arc<str>,
    },
    /// A signing key was retired: tokens it signed no longer verify.
    KeyRetired {
        /// The retired key's id (public).
        kid: Arc<str>,
    },
}

impl AuthEventKind {
    /// Every kind's [`name`](Self::name), in declaration order: the list
    /// documentation and dashboards are checked against.
    pub const NAMES: [&'static str; 21] = [
        "login_succeeded",
        "login_failed",
        "logout",
        "logout_everywhere",
        "session_renewed",
        "session_evicted",
        "session_expired",
        "family_expired",
        "refresh_rotated",
        "refresh_reuse_detected",
        "device_revoked",
        "password_changed",
        "csrf_refused",
        "jwt_refused",
        "throttled",
        "reauth_required",
        "store_unavailable",
        "revocation_view_stale",
        "revocation_view_recovered",
        "key_rotated",
        "key_retired",
    ];

    /// The kind's stable name (`login_failed`, `csrf_refused`, ...): the
    /// `event` field of audit lines and the `portcullis.event` metric
    /// attribute.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        let i = match self {
            Self::LoginSucceeded => 0,
            Self::LoginFailed { .. } => 1,
            Self::Logout => 2,
            Self::LogoutEverywhere => 3,
            Self::SessionRenewed => 4,
            Self::SessionEvicted => 5,
            Self::SessionExpired => 6,
            Self::FamilyExpired => 7,
            Self::RefreshRotated => 8,
            Self::RefreshReuseDetected => 9,
            Self::DeviceRevoked => 10,
            Self::PasswordChanged => 11,
            Self::CsrfRefused { .. } => 12,
            Self::JwtRefused { .. } => 13,
            Self::Throttled { .. } => 14,
            Self::ReauthRequired { .. } => 15,
            Self::StoreUnavailable { .. } => 16,
            Self::RevocationViewStale => 17,
            Self::RevocationViewRecovered => 18,
            Self::KeyRotated { .. } => 19,
            Self::KeyRetired { .. } => 20,
        };
        Self::NAMES[i]
    }

    /// The reason code, for the kinds that have one.
    #[must_use]
    pub const fn reason(&self) -> Option<&'static str> {
        match self {
            Self::LoginFailed { reason }
            | Self::CsrfRefused { reason }
            | Self::JwtRefused { reason }
            | Self::ReauthRequired { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether a compliance reviewer asks for it: logins and their
    /// failures, logouts, revocations, refresh-token reuse, password
    /// changes. These are what the audit trail keeps.
    #[must_use]
    pub const fn is_audit(&self) -> bool {
        matches!(
            self,
            Self::LoginSucceeded
                | Self::LoginFailed { .. }
                | Self::Logout
                | Self::LogoutEverywhere
                | Self::SessionEvicted
                | Self::RefreshReuseDetected
                | Self::DeviceRevoked
                | Self::PasswordChanged
                | Self::Throttled { .. }
        )
    }
}

/// One authentication event.
///
/// `Debug` shows every field: none of them is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthEvent {
    /// When it happened (the system clock).
    pub at: SystemTime,
    /// The layer or store that emitted it: `session`, `jwt`, `csrf`,
    /// `refresh`, `throttle`, `redis`, `postgres`, `sqlite`, ...
    pub source: &'static str,
    /// What happened.
    pub kind: AuthEventKind,
    /// The user id the application gave the library, when known.
    pub user: Option<Arc<str>>,
    /// The device concerned: a refresh family id or a session's public
    /// handle, never a credential.
    pub device: Option<Arc<str>>,
    /// The route template of the request (`/users/{id}`), never the path.
    pub route: Option<Arc<str>>,
    /// The client address, as configured (see
    /// [`EventsBuilder::client_ip`](super::EventsBuilder::client_ip)).
    pub client: Option<IpAddr>,
    /// The W3C trace id of the request, to find its trace.
    pub trace_id: Option<TraceId>,
}

impl AuthEvent {
    /// An event of `kind` from `source`, now, with nothing else known.
    #[must_use]
    pub fn new(source: &'static str, kind: AuthEventKind) -> Self {
        Self {
            at: SystemTime::now(),
            source,
            kind,
            user: None,
            device: None,
            route: None,
            client: None,
            trace_id: None,
        }
    }

    /// With the user id.
    #[must_use]
    pub fn user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// With the user id, when there is one.
    #[must_use]
    pub fn maybe_user(mut self, user: Option<&str>) -> Self {
        self.user = user.map(Arc::from);
        self
    }

    /// With the device id (refresh family, session handle).
    #[must_use]
    pub fn device(mut self, device: impl Into<Arc<str>>) -> Self {
        self.device = Some(device.into());
        self
    }

    /// With the request's route, client address and trace id.
    #[must_use]
    pub fn context(mut self, context: &EventContext) -> Self {
        self.route.clone_from(&context.route);
        self.client = context.client;
        self.trace_id = context.trace_id;
        self
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn at_millis(&self) -> u64 {
        self.at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The event as one JSON object: the audit-trail line.
    ///
    /// ```
    /// use portcullis_core::events::{AuthEvent, AuthEventKind};
    ///
    /// let event = AuthEvent::new("jwt", AuthEventKind::JwtRefused { reason: "expired" });
    /// let json = event.to_json();
    /// assert_eq!(json["event"], "jwt_refused");
    /// assert_eq!(json["reason"], "expired");
    /// assert_eq!(json["source"], "jwt");
    /// ```
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("at_ms".into(), self.at_millis().into());
        map.insert("event".into(), self.kind.name().into());
        map.insert("source".into(), self.source.into());
        if let Some(reason) = self.kind.reason() {
            map.insert("reason".into(), reason.into());
        }
        match &self.kind {
            AuthEventKind::Throttled { retry_after } => {
                map.insert("retry_after_s".into(), retry_after.as_secs().into());
            }
            AuthEventKind::StoreUnavailable { store, operation } => {
                map.insert("store".into(), (*store).into());
                map.insert("operation".into(), (*operation).into());
            }
            AuthEventKind::KeyRotated { kid } | AuthEventKind::KeyRetired { kid } => {
                map.insert("kid".into(), (**kid).into());
            }
            _ => {}
        }
        let text = |v: &Option<Arc<str>>| v.as_deref().map(serde_json::Value::from);
        for (key, value) in [
            ("user", text(&self.user)),
            ("device", text(&self.device)),
            ("route", text(&self.route)),
            ("client", self.client.map(|ip| ip.to_string().into())),
            ("trace_id", self.trace_id.map(|t| t.to_string().into())),
        ] {
            if let Some(value) = value {
                map.insert(key.into(), value);
            }
        }
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut names = AuthEventKind::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuthEventKind::NAMES.len());
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        assert_eq!(
            AuthEventKind::KeyRetired { kid: "k".into() }.name(),
            "key_retired"
        );
        assert_eq!(AuthEventKind::LoginSucceeded.name(), "login_succeeded");
    }

    #[test]
    fn json_lines_carry_the_context() {
        let context = EventContext {
            route: Some("/users/{id}".into()),
            client: Some("203.0.113.9".parse().unwrap()),
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736"),
        };
        let event = AuthEvent::new("session", AuthEventKind::Logout)
            .user("alice")
            .context(&context);
        let json = event.to_json();
        assert_eq!(json["user"], "alice");
        assert_eq!(json["route"], "/users/{id}");
        assert_eq!(json["client"], "203.0.113.9");
        assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(json.get("device").is_none());
    }
}
