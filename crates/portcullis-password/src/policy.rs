//! [`PasswordPolicy`]: what a new password must be, per NIST SP 800-63B
//! rev. 4 (§3.1.1.2).
//!
//! | rule | NIST SP 800-63B-4 | here |
//! |---|---|---|
//! | minimum length | SHALL be ≥ 15 for a single-factor password; ≥ 8 when it is only used with a second factor | [`DEFAULT_MIN_CHARS`] = 15; [`min_chars_with_second_factor`](PasswordPolicyBuilder::min_chars_with_second_factor) goes down to 8 |
//! | maximum length | SHOULD permit at least 64 | [`DEFAULT_MAX_CHARS`] = 128, never below 64 |
//! | counting | each Unicode code point is one character | `str::chars().count()` |
//! | composition | SHALL NOT impose composition rules | none ("a digit and a symbol" is not a knob) |
//! | blocklist | SHALL refuse commonly used, expected or compromised values and say why | [`Blocklist`] ([`CommonPasswords`] always, more with [`add_blocklist`](PasswordPolicyBuilder::add_blocklist)) and context words |
//!
//! Passwords are not normalised (no NFKC) before hashing: the same
//! keystrokes on another keyboard layout might give other code points, so
//! apps that expect that should normalise before calling.
//!
//! ```
//! use portcullis_password::{PasswordPolicy, PolicyError};
//!
//! let policy = PasswordPolicy::builder().add_context_word("example shop").build().unwrap();
//! assert_eq!(policy.check("short", &["alice"]), Err(PolicyError::TooShort { min: 15 }));
//! assert_eq!(policy.check("passwordpassword", &["alice"]), Err(PolicyError::Blocklisted));
//! assert_eq!(policy.check("alice-in-wonderland-1865", &["alice"]), Err(PolicyError::ContainsContext));
//! assert_eq!(policy.check("my example shop pass", &["alice"]), Err(PolicyError::ContainsContext));
//! assert_eq!(policy.check("plum orchard at dusk, 1987", &["alice"]), Ok(()));
//! // Every error has a message to show the user.
//! assert_eq!(
//!     PolicyError::TooShort { min: 15 }.to_string(),
//!     "the password must be at least 15 characters long"
//! );
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::error::PasswordConfigError;
pub use crate::error::PolicyError;

/// The default minimum length in code points (NIST SP 800-63B-4 for a
/// password that is the only factor).
pub const DEFAULT_MIN_CHARS: usize = 15;

/// The lowest minimum [`min_chars_with_second_factor`] accepts.
///
/// [`min_chars_with_second_factor`]: PasswordPolicyBuilder::min_chars_with_second_factor
pub const MIN_CHARS_WITH_SECOND_FACTOR: usize = 8;

/// The default maximum length in code points.
pub const DEFAULT_MAX_CHARS: usize = 128;

/// The lowest maximum a policy may set (NIST: permit at least 64).
pub const LOWEST_MAX_CHARS: usize = 64;

/// The highest maximum a policy may set: 1024 code points are at most
/// [`MAX_PASSWORD_BYTES`](crate::MAX_PASSWORD_BYTES) bytes, so every
/// password a policy accepts can be verified.
pub const HIGHEST_MAX_CHARS: usize = 1024;

/// Context words shorter than this (in code points) are ignored: a user
/// named "al" must not forbid every password containing "al".
const MIN_CONTEXT_CHARS: usize = 3;

/// A list of passwords to refuse.
///
/// The policy asks about the password lower-cased and about what is left
/// after obvious decorations are taken off (digits and punctuation at
/// either end, spaces, a repeated part: `Password123!` asks about
/// `password123!` and `password`), so a list only needs the bare words,
/// in lower case. A check against a remote service (such as a k-anonymity
/// breach API) does not belong here, as the policy is synchronous: call it
/// before [`PasswordHasher::hash`](crate::PasswordHasher::hash).
///
/// ```
/// use portcullis_password::{Blocklist, PasswordPolicy, PolicyError, WordList};
///
/// #[derive(Debug)]
/// struct NoSeasons;
///
/// impl Blocklist for NoSeasons {
///     fn contains(&self, candidate: &str) -> bool {
///         ["spring", "summer", "autumn", "winter"].iter().any(|s| candidate.contains(s))
///     }
/// }
///
/// let policy = PasswordPolicy::builder()
///     .add_blocklist(NoSeasons)
///     .add_blocklist(WordList::from_lines("acme corporation\nacmeacme"))
///     .build()
///     .unwrap();
/// assert_eq!(policy.check("Winter is coming 2026", &[]), Err(PolicyError::Blocklisted));
/// assert_eq!(policy.check("2026 ACME Corporation!", &[]), Err(PolicyError::Blocklisted));
/// ```
pub trait Blocklist: fmt::Debug + Send + Sync + 'static {
    /// Whether `candidate` (lower case) is on the list.
    fn contains(&self, candidate: &str) -> bool;
}

/// The embedded list of common passwords (a few hundred entries from
/// public breach corpora, plus the long ones people pick when asked for
/// 15 characters). Every policy checks it; add a larger list with
/// [`add_blocklist`](PasswordPolicyBuilder::add_blocklist).
#[derive(Debug, Clone, Copy, Default)]
pub struct CommonPasswords;

impl CommonPasswords {
    fn set() -> &'static HashSet<&'static str> {
        static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
        SET.get_or_init(|| {
            include_str!("common.txt")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        })
    }

    /// How many passwords the list holds.
    #[must_use]
    pub fn len() -> usize {
        Self::set().len()
    }
}

impl Blocklist for CommonPasswords {
    fn contains(&self, candidate: &str) -> bool {
        Self::set().contains(candidate)
    }
}

/// A blocklist from text, one password per line (lower-cased, blank lines
/// and lines starting with `#` skipped): a larger breach list an app ships
/// or downloads.
#[derive(Clone, Default)]
pub struct WordList(HashSet<Box<str>>);

impl WordList {
    /// Reads `text`, one password per line.
    #[must_use]
    pub fn from_lines(text: &str) -> Self {
        Self(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.to_lowercase().into_boxed_str())
                .collect(),
        )
    }

    /// How many passwords the list holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for WordList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WordList")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Blocklist for WordList {
    fn contains(&self, candidate: &str) -> bool {
        self.0.contains(candidate)
    }
}

/// The rules for new passwords; see the [module docs](self). Cheap to
/// clone. `PasswordPolicy::default()` is the NIST single-factor policy
/// with the embedded [`CommonPasswords`].
#[derive(Clone)]
pub struct PasswordPolicy {
    min_chars: usize,
    max_chars: usize,
    context: Arc<[Box<str>]>,
    blocklists: Arc<[Arc<dyn Blocklist>]>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: DEFAULT_MIN_CHARS,
            max_chars: DEFAULT_MAX_CHARS,
            context: Arc::new([]),
            blocklists: Arc::new([Arc::new(CommonPasswords) as Arc<dyn Blocklist>]),
        }
    }
}

impl fmt::Debug for PasswordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordPolicy")
            .field("min_chars", &self.min_chars)
            .field("max_chars", &self.max_chars)
            .field("context_words", &self.context.len())
            .field("blocklists", &self.blocklists)
            .finish()
    }
}

impl PasswordPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> PasswordPolicyBuilder {
        PasswordPolicyBuilder::default()
    }

    /// The minimum length in code points.
    #[must_use]
    pub const fn min_chars(&self) -> usize {
        self.min_chars
    }

    /// The maximum length in code points.
    #[must_use]
    pub const fn max_chars(&self) -> usize {
        self.max_chars
    }

    /// Checks a new `password`; `context` holds words of this user that the
    /// password must not contain (user name, e-mail address: its local part
    /// is checked too), on top of the policy's own context words.
    ///
    /// # Errors
    ///
    /// The first rule the password breaks, in the order length, context,
    /// blocklist.
    pub fn check(&self, password: &str, context: &[&str]) -> Result<(), PolicyError> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(PolicyError::TooShort {
                min: self.min_chars,
            });
        }
        if chars > self.max_chars {
            return Err(PolicyError::TooLong {
                max: self.max_chars,
            });
        }
        let lower = password.to_lowercase();
        let words = self
            .context
            .iter()
            .map(AsRef::as_ref)
            .chain(context.iter().copied());
        if words.flat_map(context_forms).any(|w| lower.contains(&w)) {
            return Err(PolicyError::ContainsContext);
        }
        if is_trivial(&lower)
            || candidates(&lower)
                .iter()
                .any(|c| self.blocklists.iter().any(|b| b.contains(c)))
        {
            return Err(PolicyError::Blocklisted);
        }
        Ok(())
    }
}

/// The forms of a context word the password must not contain: lower case,
/// and for an e-mail address its local part; words under
/// [`MIN_CONTEXT_CHARS`] are skipped.
fn context_forms(word: &str) -> Vec<String> {
    let word = word.trim().to_lowercase();
    let mut forms = Vec::with_capacity(2);
    if let Some((local, _)) = word.split_once('@') {
        forms.push(local.to_owned());
    }
    forms.push(word);
    forms.retain(|w| w.chars().count() >= MIN_CONTEXT_CHARS);
    forms
}

/// One character repeated, or a run of consecutive digits
/// ("123456789012345").
fn is_trivial(lower: &str) -> bool {
    let mut chars = lower.chars();
    let Some(first) = chars.next() else {
        return true;
    };
    if lower.chars().all(|c| c == first) {
        return true;
    }
    let digits: Vec<u32> = lower.chars().filter_map(|c| c.to_digit(10)).collect();
    digits.len() == lower.chars().count()
        && (digits.windows(2).all(|w| w[1] == (w[0] + 1) % 10)
            || digits.windows(2).all(|w| w[0] == (w[1] + 1) % 10))
}

/// What the blocklists are asked about: the lower-cased password, without
/// spaces, without punctuation (then also digits) at either end, and the
/// unit of a repetition of any of these.
fn candidates(lower: &str) -> Vec<String> {
    let mut out = vec![lower.to_owned()];
    let no_space: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    out.push(no_space.clone());
    for s in [lower, no_space.as_str()] {
        for core in [
            s.trim_matches(|c: char| !c.is_alphanumeric()),
            s.trim_matches(|c: char| !c.is_alphabetic()),
        ] {
            if !core.is_empty() {
                out.push(core.to_owned());
            }
        }
    }
    let repeated: Vec<String> = out.iter().filter_map(|s| repetition_unit(s)).collect();
    out.extend(repeated);
    out.sort_unstable();
    out.dedup();
    out
}

/// The shortest unit `s` is two or more copies of, if any.
fn repetition_unit(s: &str) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    (1..=n / 2)
        .filter(|len| n % len == 0)
        .find(|&len| chars.chunks(len).all(|c| c == &chars[..len]))
        .map(|len| chars[..len].iter().collect())
}

/// Builds a [`PasswordPolicy`]; [`build`](Self::build) refuses a policy
/// that breaks NIST's floors.
#[derive(Debug)]
#[must_use]
pub struct PasswordPolicyBuilder {
    min_chars: usize,
    second_factor: bool,
    max_chars: usize,
    context: Vec<Box<str>>,
    blocklists: Vec<Arc<dyn Blocklist>>,
}

impl Default for PasswordPolicyBuilder {
    fn default() -> Self {
        Self {
            min_chars: DEFAULT_MIN_CHARS,
            second_factor: false,
            max_chars: DEFAULT_MAX_CHARS,
            context: Vec::new(),
            blocklists: vec![Arc::new(CommonPasswords)],
        }
    }
}

impl PasswordPolicyBuilder {
    /// The minimum length in code points for a password that is the only
    /// factor: at least [`DEFAULT_MIN_CHARS`] (15), or `build` fails.
    pub const fn min_chars(mut self, min: usize) -> Self {
        self.min_chars = min;
        self.second_factor = false;
        self
    }

    /// A lower minimum, from [`MIN_CHARS_WITH_SECOND_FACTOR`] (8), for an
    /// app where this password is **always** combined with a second factor
    /// (an OTP, a passkey). NIST allows it only then: with the password as
    /// the only factor, keep [`min_chars`](Self::min_chars).
    pub const fn min_chars_with_second_factor(mut self, min: usize) -> Self {
        self.min_chars = min;
        self.second_factor = true;
        self
    }

    /// The maximum length in code points, from [`LOWEST_MAX_CHARS`] (64)
    /// to [`HIGHEST_MAX_CHARS`] (1024); default [`DEFAULT_MAX_CHARS`].
    pub const fn max_chars(mut self, max: usize) -> Self {
        self.max_chars = max;
        self
    }

    /// A word no password may contain, whoever the user: the name of the
    /// service, its domain.
    pub fn add_context_word(mut self, word: impl Into<String>) -> Self {
        self.context.push(word.into().into_boxed_str());
        self
    }

    /// One more list of passwords to refuse (the embedded
    /// [`CommonPasswords`] is always checked).
    pub fn add_blocklist(mut self, list: impl Blocklist) -> Self {
        self.blocklists.push(Arc::new(list));
        self
    }

    /// The policy.
    ///
    /// # Errors
    ///
    /// [`PasswordConfigError::MinChars`] or
    /// [`PasswordConfigError::MaxChars`] for lengths outside NIST's bounds.
    pub fn build(self) -> Result<PasswordPolicy, PasswordConfigError> {
        let floor = if self.second_factor {
            MIN_CHARS_WITH_SECOND_FACTOR
        } else {
            DEFAULT_MIN_CHARS
        };
        if self.min_chars < floor {
            return Err(PasswordConfigError::MinChars {
                min: self.min_chars,
                floor,
            });
        }
        if !(LOWEST_MAX_CHARS..=HIGHEST_MAX_CHARS).contains(&self.max_chars)
            || self.max_chars < self.min_chars
        {
            return Err(PasswordConfigError::MaxChars {
                max: self.max_chars,
            });
        }
        Ok(PasswordPolicy {
            min_chars: self.min_chars,
            max_chars: self.max_chars,
            context: self.context.into(),
            blocklists: self.blocklists.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy::builder()
            .add_context_word("Portcullis Demo")
            .build()
            .unwrap()
    }

    #[test]
    fn table() {
        use PolicyError::{Blocklisted, ContainsContext, TooLong, TooShort};
        let long_ok = "äb".repeat(64);
        let too_long = "ä".repeat(129);
        let cases: &[(&str, Result<(), PolicyError>)] = &[
            ("", Err(TooShort { min: 15 })),
            ("fourteen chars", Err(TooShort { min: 15 })),
            // 15 code points, 30 bytes: code points count, not bytes.
            ("ééééééééééééééé", Err(Blocklisted)),
            ("éèêëēėęîïíīįìôö", Ok(())),
            ("fifteen chars!!", Ok(())),
            (&long_ok, Ok(())),
            (&too_long, Err(TooLong { max: 128 })),
            // No composition rules: all lower case, no digit, is fine.
            ("plum orchard at dusk", Ok(())),
            // Blocklist and its derivatives.
            ("passwordpassword", Err(Blocklisted)),
            ("Password123456789", Err(Blocklisted)),
            ("!!!Password!!!!!!", Err(Blocklisted)),
            ("Correct Horse Battery Staple", Err(Blocklisted)),
            ("correct-horse-battery-staple", Ok(())),
            ("qwertyuiopasdfghjkl", Err(Blocklisted)),
            ("iloveyouiloveyou", Err(Blocklisted)),
            ("aaaaaaaaaaaaaaaaaaa", Err(Blocklisted)),
            ("123456789012345", Err(Blocklisted)),
            ("987654321098765", Err(Blocklisted)),
            ("12345123451234512345", Err(Blocklisted)),
            ("4729104857382910", Ok(())),
            // Context words: the app's name (case-insensitive), the user.
            ("my portcullis demo pw", Err(ContainsContext)),
            ("xX-ALICE-Xx-and-more", Err(ContainsContext)),
            ("bob.smith is my name", Err(ContainsContext)),
            ("al is a short name ok", Ok(())),
        ];
        let p = policy();
        for (pw, want) in cases {
            assert_eq!(
                p.check(pw, &["alice", "bob.smith@example.com", "al"]),
                *want,
                "{pw:?}"
            );
        }
    }

    #[test]
    fn second_factor_allows_eight() {
        let p = PasswordPolicy::builder()
            .min_chars_with_second_factor(8)
            .build()
            .unwrap();
        assert_eq!(p.check("k7#pQ2zw", &[]), Ok(()));
        assert_eq!(
            p.check("k7#pQ2z", &[]),
            Err(PolicyError::TooShort { min: 8 })
        );
        // Common short passwords are now reachable, and refused.
        assert_eq!(p.check("password1", &[]), Err(PolicyError::Blocklisted));
        assert_eq!(p.check("Trustno1!", &[]), Err(PolicyError::Blocklisted));
    }

    #[test]
    fn builder_refuses_what_nist_forbids() {
        let cases = [
            (
                PasswordPolicy::builder().min_chars(14),
                PasswordConfigError::MinChars { min: 14, floor: 15 },
            ),
            (
                PasswordPolicy::builder().min_chars_with_second_factor(7),
                PasswordConfigError::MinChars { min: 7, floor: 8 },
            ),
            (
                PasswordPolicy::builder().max_chars(63),
                PasswordConfigError::MaxChars { max: 63 },
            ),
            (
                PasswordPolicy::builder().max_chars(1025),
                PasswordConfigError::MaxChars { max: 1025 },
            ),
            (
                PasswordPolicy::builder().min_chars(100).max_chars(64),
                PasswordConfigError::MaxChars { max: 64 },
            ),
        ];
        for (b, want) in cases {
            assert_eq!(b.build().unwrap_err(), want);
        }
        assert!(PasswordPolicy::builder().max_chars(64).build().is_ok());
        assert!(PasswordPolicy::builder().max_chars(1024).build().is_ok());
    }

    #[test]
    fn messages_are_for_people() {
        let cases = [
            (
                PolicyError::TooShort { min: 15 },
                "the password must be at least 15 characters long",
            ),
            (
                PolicyError::TooLong { max: 128 },
                "the password must be at most 128 characters long",
            ),
            (
                PolicyError::ContainsContext,
                "the password must not contain your user name or the name of this service",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        assert!(PolicyError::Blocklisted.to_string().contains("too common"));
    }

    #[test]
    fn embedded_list_is_loaded() {
        assert!(CommonPasswords::len() > 150);
        assert!(CommonPasswords.contains("password"));
        assert!(!CommonPasswords.contains("# the most common"));
        let w = WordList::from_lines("# comment\n\nHunter2\n");
        assert_eq!(w.len(), 1);
        assert!(w.contains("hunter2"));
        assert_eq!(format!("{w:?}"), "WordList { len: 1 }");
    }

    #[test]
    fn repetition() {
        assert_eq!(repetition_unit("abab").as_deref(), Some("ab"));
        assert_eq!(repetition_unit("aba"), None);
        assert_eq!(repetition_unit("a"), None);
        assert_eq!(repetition_unit("ääää").as_deref(), Some("ä"));
    }
}
