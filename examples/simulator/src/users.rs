//! The demo users and the login handlers every strategy shares.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

/// Demo users: name, password, roles. A real app checks a slow password
/// hash (argon2) instead.
const USERS: &[(&str, &str, &[&str])] = &[
    ("alice", "wonderland", &["user"]),
    ("bob", "builder", &["user"]),
];

/// A login request's body.
#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// A user's name and roles.
pub(crate) type User = (&'static str, &'static [&'static str]);

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not `{"username": ..., "password": ...}`: 400.
    Malformed,
    /// Wrong user name or password: 401.
    BadCredentials,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            Self::Malformed => (
                StatusCode::BAD_REQUEST,
                "expected {\"username\": ..., \"password\": ...}",
            ),
            Self::BadCredentials => (StatusCode::UNAUTHORIZED, "wrong user name or password"),
        };
        let body = json!({
            "type": "about:blank",
            "title": status.canonical_reason(),
            "status": status.as_u16(),
            "detail": detail,
        });
        (
            status,
            [("content-type", "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Checks the JSON credentials in `body`.
pub(crate) fn authenticate(body: &[u8]) -> Result<User, Refusal> {
    let creds: Credentials = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    let mut found = None;
    for (name, password, roles) in USERS {
        // Compare every password, so the answer takes as long whoever asks.
        let ok = bool::from(password.as_bytes().ct_eq(creds.password.as_bytes()));
        if ok && *name == creds.username {
            found = Some((*name, *roles));
        }
    }
    found.ok_or(Refusal::BadCredentials)
}
