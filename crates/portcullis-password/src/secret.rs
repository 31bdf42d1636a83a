//! [`Password`]: a password in memory, never printed.

use std::fmt;

/// A password as the user typed it: `Debug` prints `Password(REDACTED)`,
/// and there is no `Display`, so it cannot reach a log by accident.
///
/// Every method of [`PasswordHasher`](crate::PasswordHasher) and
/// [`PasswordPolicy`](crate::PasswordPolicy) takes `impl Into<Password>`, so
/// a `&str` or a `String` from a form works as is.
///
/// ```
/// use portcullis_password::Password;
///
/// let password = Password::from("correct horse battery staple");
/// assert_eq!(format!("{password:?}"), "Password(REDACTED)");
/// assert_eq!(password.expose(), "correct horse battery staple");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Box<str>);

impl Password {
    /// The password itself. Named so that a reader sees where it leaves
    /// the wrapper.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in Unicode code points (what NIST SP 800-63B counts).
    #[must_use]
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(REDACTED)")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self(s.into_boxed_str())
    }
}

impl From<&String> for Password {
    fn from(s: &String) -> Self {
        Self(s.as_str().into())
    }
}

impl From<Box<str>> for Password {
    fn from(s: Box<str>) -> Self {
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::from(String::from("hunter2-but-longer-than-15"));
        let shown = format!("{p:?} {p:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn counts_code_points() {
        assert_eq!(Password::from("pässwörd").chars(), 8);
        assert_eq!(Password::from("🔑🔑").chars(), 2);
    }
}
