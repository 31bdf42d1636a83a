//! Errors: what a call refused ([`PasswordError`]), why a stored hash was
//! not used ([`StoredHashError`]), and configuration mistakes
//! ([`PasswordConfigError`]).

use std::time::Duration;

use bytes::Bytes;
use portcullis_core::rejection::{ProblemJson, Rejection, RenderRejection};

/// The detail of the 401 answered for a wrong password, an unknown user and
/// an unusable stored hash alike.
pub const INVALID_CREDENTIALS: &str = "invalid user name or password";

/// The answer to a failed login: 401 problem+json with
/// [`INVALID_CREDENTIALS`], the same for a wrong password, an unknown user
/// and a stored hash that cannot be used (reason `invalid_credentials`).
///
/// ```
/// use portcullis_core::{ProblemJson, RenderRejection};
///
/// let response = ProblemJson.render(&portcullis_password::invalid_credentials(), false);
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
pub fn invalid_credentials() -> Rejection {
    Rejection::unauthenticated(INVALID_CREDENTIALS).with_reason("invalid_credentials")
}

/// Why a call of [`PasswordHasher`](crate::PasswordHasher) did not give an
/// answer. Never carries a password or a hash, in `Debug` or `Display`.
///
/// [`rejection`](Self::rejection) maps it to the response to send:
///
/// | variant | response |
/// |---|---|
/// | [`Busy`](Self::Busy) | 503 + `Retry-After` |
/// | [`Policy`](Self::Policy) | 400 with the policy's message |
/// | [`StoredHash`](Self::StoredHash) | 401 [`invalid_credentials`], the answer to a wrong password |
/// | [`Internal`](Self::Internal) | 500 |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Every hashing slot is taken and the queue is full, or the wait for
    /// a slot ran out: answer 503 and come back after `retry_after`.
    #[error("too many password checks in progress; try again in {}s", retry_after.as_secs().max(1))]
    Busy {
        /// When to try again (`Retry-After`).
        retry_after: Duration,
    },
    /// A new password breaks the [`PasswordPolicy`](crate::PasswordPolicy).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The stored hash was refused before any hashing: malformed, another
    /// algorithm, or a cost above the ceiling. The call still spent the
    /// cost of one verification (against the dummy hash), so its timing
    /// says nothing either.
    #[error("the stored password hash was not used: {0}")]
    StoredHash(#[from] StoredHashError),
    /// Hashing failed (no tokio runtime, the random generator failed, the
    /// blocking task died).
    #[error("password hashing failed: {reason}")]
    Internal {
        /// What failed.
        reason: &'static str,
    },
}

impl PasswordError {
    /// The rejection to answer with (see the table above).
    pub fn rejection(&self) -> Rejection {
        match self {
            Self::Busy { retry_after } => {
                Rejection::unavailable("too many logins are being checked; try again shortly")
                    .with_retry_after(*retry_after)
                    .with_reason("password_busy")
            }
            Self::Policy(e) => Rejection::bad_request(e.to_string()).with_reason("password_policy"),
            Self::StoredHash(_) => invalid_credentials(),
            Self::Internal { .. } => Rejection::internal("the password could not be checked")
                .with_reason("password_internal"),
        }
    }

    /// The problem+json response ([`ProblemJson`] rendering
    /// [`rejection`](Self::rejection)); with the `axum` feature the error
    /// is also `IntoResponse`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use portcullis_password::PasswordError;
    ///
    /// let busy = PasswordError::Busy { retry_after: Duration::from_secs(2) };
    /// let response = busy.to_http_response();
    /// assert_eq!(response.status(), 503);
    /// assert_eq!(response.headers()["retry-after"], "2");
    /// assert_eq!(response.headers()["content-type"], "application/problem+json");
    /// ```
    #[must_use]
    pub fn to_http_response(&self) -> http::Response<Bytes> {
        ProblemJson.render(&self.rejection(), false)
    }
}

/// Why a new password was refused. Each variant's `Display` is a message
/// for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Fewer code points than the policy's minimum.
    #[error("the password must be at least {min} characters long")]
    TooShort {
        /// The minimum, in code points.
        min: usize,
    },
    /// More code points than the policy's maximum.
    #[error("the password must be at most {max} characters long")]
    TooLong {
        /// The maximum, in code points.
        max: usize,
    },
    /// A common or expected password (or one of them with digits around
    /// it, or repeated).
    #[error(
        "this password is too common: it is among the first ones attackers try; choose another"
    )]
    Blocklisted,
    /// Contains the user name, the name of the service, or another
    /// context word the app passed.
    #[error("the password must not contain your user name or the name of this service")]
    ContainsContext,
}

/// Why a stored hash was not used. Holds the parameters it asked for (not
/// secret), never the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoredHashError {
    /// Not a PHC string, or one without salt or output.
    #[error("not a PHC string with salt and hash")]
    Malformed,
    /// Another algorithm or version than argon2id v19 (argon2i, argon2d,
    /// bcrypt, ...).
    #[error("not argon2id version 19")]
    Unsupported,
    /// A cost above the configured ceiling.
    #[error("its cost (m={m_kib} KiB, t={t}, p={p}) is above the configured ceiling")]
    AboveCeiling {
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
}

/// A configuration mistake, found when the hasher or policy is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordConfigError {
    /// Parameters cheaper than every set OWASP lists as equal (m ≥ 7168
    /// KiB and m × t ≥ 7168 × 5).
    #[error(
        "argon2 parameters m={m_kib} KiB, t={t}, p={p} are below OWASP's minimum (m >= 7168 KiB and m x t >= 35840)"
    )]
    ParamsTooWeak {
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// Parameters argon2 refuses, or beyond the sanity bounds (m ≤ 4 GiB,
    /// t ≤ 64, p ≤ 64).
    #[error("argon2 parameters m={m_kib} KiB, t={t}, p={p} are out of range")]
    ParamsOutOfRange {
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// A stored-hash ceiling below the current parameters would refuse the
    /// hashes this hasher makes.
    #[error("the stored-hash ceiling is below the current parameters")]
    CeilingBelowParams,
    /// `max_in_flight` must be at least 1.
    #[error("max_in_flight must be between 1 and {max}, got {value}")]
    MaxInFlight {
        /// The value given.
        value: usize,
        /// The largest accepted.
        max: usize,
    },
    /// `queue_length` too large for the semaphore.
    #[error("queue_length must be at most {max}, got {value}")]
    QueueLength {
        /// The value given.
        value: usize,
        /// The largest accepted.
        max: usize,
    },
    /// The minimum length is below NIST's floor (15, or 8 with a second
    /// factor).
    #[error("a minimum password length of {min} is below {floor}")]
    MinChars {
        /// The value given.
        min: usize,
        /// The lowest accepted.
        floor: usize,
    },
    /// The maximum length is outside 64..=1024 or below the minimum.
    #[error(
        "a maximum password length of {max} must be between 64 and 1024 and not below the minimum"
    )]
    MaxChars {
        /// The value given.
        max: usize,
    },
    /// The dummy hash for unknown users could not be made.
    #[error("the dummy hash could not be made: {reason}")]
    DummyHash {
        /// What failed.
        reason: &'static str,
    },
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for PasswordError {
    fn into_response(self) -> axum_core::response::Response {
        self.to_http_response().map(axum_core::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let secs = Duration::from_secs;
        let cases = [
            (
                PasswordError::Busy {
                    retry_after: secs(3),
                },
                503,
                Some("3"),
            ),
            (
                PasswordError::Policy(PolicyError::TooShort { min: 15 }),
                400,
                None,
            ),
            (
                PasswordError::StoredHash(StoredHashError::Malformed),
                401,
                None,
            ),
            (PasswordError::Internal { reason: "x" }, 500, None),
        ];
        for (e, status, retry) in cases {
            let r = e.to_http_response();
            assert_eq!(r.status().as_u16(), status, "{e:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert_eq!(
                r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
                retry
            );
        }
        // An unusable stored hash answers exactly what a wrong password does.
        let stored = PasswordError::StoredHash(StoredHashError::Unsupported).to_http_response();
        let wrong = ProblemJson.render(&invalid_credentials(), false);
        assert_eq!(stored.body(), wrong.body());
        assert_eq!(stored.headers(), wrong.headers());
        // The policy's message reaches the client.
        let body: serde_json::Value = serde_json::from_slice(
            PasswordError::Policy(PolicyError::TooShort { min: 15 })
                .to_http_response()
                .body(),
        )
        .unwrap();
        assert_eq!(
            body["detail"],
            "the password must be at least 15 characters long"
        );
    }
}
