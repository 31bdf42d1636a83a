//! [`ActiveSession`]: one signed-in device, as "your active sessions"
//! pages show it. Server sessions and refresh-token families both list
//! themselves with it.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// One of a user's signed-in devices: a server session
/// (`Session::active_sessions`) or a refresh-token family
/// (`Refresher::devices`, `GET /auth/sessions`).
///
/// ```
/// use portcullis_core::{ActiveSession, Timestamp};
///
/// let device = ActiveSession {
///     id: "9f86d081".into(),
///     created_at: Timestamp::from_millis(0),
///     last_seen: Timestamp::from_millis(5_000),
///     expires_at: Timestamp::from_millis(60_000),
///     user_agent: Some("Firefox".into()),
///     ip: None,
///     current: true,
/// };
/// assert!(serde_json::to_string(&device).unwrap().contains("\"current\":true"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSession {
    /// A public handle to revoke it with, never a credential: the hex
    /// SHA-256 of a session id, or a refresh family's id.
    pub id: String,
    /// Login time.
    pub created_at: Timestamp,
    /// The last request (session) or refresh (family) that extended it.
    pub last_seen: Timestamp,
    /// When it ends unless used again.
    pub expires_at: Timestamp,
    /// The user agent it was last seen with (at most 256 characters).
    pub user_agent: Option<String>,
    /// The address it was last seen from, when the app configured a
    /// client-address hook.
    pub ip: Option<String>,
    /// Whether this is the device making the current request.
    pub current: bool,
}
