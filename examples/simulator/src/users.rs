//! The demo users and the login handlers every strategy shares.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portcullis::password::{PasswordHasher, Verification};
use serde::Deserialize;
use serde_json::json;

/// Demo users as a user table stores them: name, argon2id PHC string (never
/// the password), roles. `alice` / `wonderland`, `bob` / `builder`.
const USERS: &[(&str, &str, &[&str])] = &[
    (
        "alice",
        "$argon2id$v=19$m=19456,t=2,p=1$SKNIe9Qv37UkvGtgT0BKhA$tCXZtDFrZJ2oq2MyC3XNsklOKMYWSvzViShADKeaXDg",
        &["user"],
    ),
    (
        "bob",
        "$argon2id$v=19$m=12288,t=3,p=1$gyONp0l0Rkw7LppCn+pSXA$A3V9W57TaK6FS6ebnjGqEhMITZLVQIkX0jFkJecKKc4",
        &["user"],
    ),
];

/// The one hasher of the process (argon2id on a bounded blocking pool).
fn hasher() -> Option<&'static PasswordHasher> {
    static HASHER: OnceLock<Option<PasswordHasher>> = OnceLock::new();
    HASHER
        .get_or_init(|| PasswordHasher::builder().build().ok())
        .as_ref()
}

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
    /// Too many logins being checked at once: 503.
    Busy,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            Self::Malformed => (
                StatusCode::BAD_REQUEST,
                "expected {\"username\": ..., \"password\": ...}",
            ),
            Self::BadCredentials => (StatusCode::UNAUTHORIZED, "wrong user name or password"),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins at once; try again in a second",
            ),
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

/// Checks the JSON credentials in `body` against the stored hash, with one
/// verification whether the user exists or not (the hasher checks a dummy
/// hash for unknown users), so the answer takes as long whoever asks.
pub(crate) async fn authenticate(body: &[u8]) -> Result<User, Refusal> {
    let creds: Credentials = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    let user = USERS.iter().find(|(name, _, _)| *name == creds.username);
    let hasher = hasher().ok_or(Refusal::Busy)?;
    match hasher.verify(user.map(|u| u.1), creds.password).await {
        Ok(Verification::Verified { .. }) => user
            .map(|(name, _, roles)| (*name, *roles))
            .ok_or(Refusal::BadCredentials),
        Ok(_) => Err(Refusal::BadCredentials),
        Err(_) => Err(Refusal::Busy),
    }
}
