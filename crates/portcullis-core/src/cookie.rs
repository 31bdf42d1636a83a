//! Cookie settings shared by every layer, and a strict `Cookie` header reader.
//! (About 500 lines, a third of them docs: the settings and the reader
//! share the name and prefix rules, so they stay together.)
//!
//! The defaults are the ones the OWASP session cheat sheet asks for: the
//! `__Host-` prefix (so the cookie is `Secure`, `Path=/` and host-only, and
//! cannot be planted from a sibling sub-domain), `HttpOnly` (scripts cannot
//! read it), `SameSite=Lax`. Plain-http development on localhost needs
//! [`CookieConfig::insecure_dev_cookies`], which says what it is.
//!
//! ```
//! use portcullis_core::cookie::CookieConfig;
//!
//! let cookie = CookieConfig::new("session");
//! assert_eq!(cookie.full_name(), "__Host-session");
//! let header = cookie.set_cookie("abc", None);
//! assert_eq!(
//!     header.to_str().unwrap(),
//!     "__Host-session=abc; Path=/; Secure; HttpOnly; SameSite=Lax"
//! );
//! ```
//!
//! Reading is strict: a cookie that appears twice is an error, not "the first
//! one wins" (a sibling sub-domain can plant a second cookie of the same
//! name, the "cookie tossing" attack).
//!
//! ```
//! use http::{HeaderMap, HeaderValue, header::COOKIE};
//! use portcullis_core::cookie::{find_cookie, CookieError};
//!
//! let mut headers = HeaderMap::new();
//! headers.append(COOKIE, HeaderValue::from_static("a=1; sid=x"));
//! assert_eq!(find_cookie(&headers, "sid"), Ok(Some("x")));
//! headers.append(COOKIE, HeaderValue::from_static("sid=y"));
//! assert_eq!(find_cookie(&headers, "sid"), Err(CookieError::Duplicate));
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only with same-site requests.
    Strict,
    /// Sent with same-site requests and top-level cross-site navigations.
    Lax,
    /// Sent with every request (requires `Secure`).
    None,
}

impl SameSite {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

/// A name prefix that browsers enforce (RFC 6265bis section 4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookiePrefix {
    /// `__Host-`: `Secure`, `Path=/`, no `Domain`.
    Host,
    /// `__Secure-`: `Secure`.
    Secure,
    /// No prefix (development mode, or an explicit opt-out).
    None,
}

impl CookiePrefix {
    /// The literal prefix.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Host => "__Host-",
            Self::Secure => "__Secure-",
            Self::None => "",
        }
    }
}

/// A cookie configuration that browsers would silently refuse, or that
/// breaks a security property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieConfigError {
    /// The name is empty or holds characters not allowed in a cookie name.
    #[error("cookie name {0:?} is not a valid token")]
    InvalidName(String),
    /// The path is not an absolute path of visible characters.
    #[error("cookie path {0:?} must start with '/' and hold no ';' or control characters")]
    InvalidPath(String),
    /// The domain holds characters not allowed in a domain.
    #[error("cookie domain {0:?} is not a valid domain")]
    InvalidDomain(String),
    /// `__Host-` cookies must have `Path=/` and no `Domain`.
    #[error("the __Host- prefix requires Path=/ and no Domain; use the __Secure- prefix instead")]
    HostPrefixConstraints,
    /// A prefixed cookie must be `Secure`.
    #[error("__Host- and __Secure- cookies must be Secure")]
    PrefixRequiresSecure,
    /// `SameSite=None` without `Secure` is refused by browsers.
    #[error("SameSite=None requires Secure")]
    SameSiteNoneRequiresSecure,
}

/// How a layer's cookie is written.
///
/// Built with secure defaults; each setter returns `Self`. Call
/// [`CookieConfig::validate`] (layers do it when they are built) to catch
/// combinations that browsers would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct CookieConfig {
    name: Cow<'static, str>,
    prefix: CookiePrefix,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    path: Cow<'static, str>,
    domain: Option<String>,
    full_name: String,
}

impl CookieConfig {
    /// Secure defaults: `__Host-{name}`, `Secure`, `HttpOnly`,
    /// `SameSite=Lax`, `Path=/`, no `Domain`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        let full_name = format!("{}{}", CookiePrefix::Host.as_str(), name);
        Self {
            name,
            prefix: CookiePrefix::Host,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: Cow::Borrowed("/"),
            domain: None,
            full_name,
        }
    }

    /// **Insecure.** For plain-http development on `localhost` only: drops
    /// the `__Host-` prefix and the `Secure` attribute, which browsers would
    /// otherwise refuse over http. Keeps `HttpOnly` and `SameSite`. Never
    /// use it in production: the cookie then travels in clear text.
    pub fn insecure_dev_cookies(mut self) -> Self {
        self.prefix = CookiePrefix::None;
        self.secure = false;
        self.refresh_name();
        self
    }

    /// Sets the name prefix explicitly (`__Secure-` is what a cookie scoped
    /// to a path other than `/` or to a domain needs).
    pub fn prefix(mut self, prefix: CookiePrefix) -> Self {
        self.prefix = prefix;
        self.refresh_name();
        self
    }

    /// Sets the `SameSite` attribute.
    pub const fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Sets the `Path` attribute.
    pub fn path(mut self, path: impl Into<Cow<'static, str>>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the `Domain` attribute (makes the cookie visible to
    /// sub-domains; incompatible with `__Host-`).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sets the base name (without prefix).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self.refresh_name();
        self
    }

    fn refresh_name(&mut self) {
        self.full_name = format!("{}{}", self.prefix.as_str(), self.name);
    }

    /// The name on the wire, prefix included.
    #[must_use]
    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// Whether the `Secure` attribute is set.
    #[must_use]
    pub const fn is_secure(&self) -> bool {
        self.secure
    }

    /// The `SameSite` attribute.
    #[must_use]
    pub const fn same_site_value(&self) -> SameSite {
        self.same_site
    }

    /// The `Path` attribute.
    #[must_use]
    pub fn path_value(&self) -> &str {
        &self.path
    }

    /// Checks the combination against what browsers accept.
    ///
    /// # Errors
    ///
    /// [`CookieConfigError`] names the broken rule.
    pub fn validate(&self) -> Result<(), CookieConfigError> {
        if self.name.is_empty() || !self.name.bytes().all(is_token_char) {
            return Err(CookieConfigError::InvalidName(self.name.to_string()));
        }
        if !self.path.starts_with('/')
            || !self
                .path
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && b != b';')
        {
            return Err(CookieConfigError::InvalidPath(self.path.to_string()));
        }
        if let Some(d) = &self.domain {
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(CookieConfigError::InvalidDomain(d.clone()));
            }
        }
        if self.prefix != CookiePrefix::None && !self.secure {
            return Err(CookieConfigError::PrefixRequiresSecure);
        }
        if self.prefix == CookiePrefix::Host && (self.path != "/" || self.domain.is_some()) {
            return Err(CookieConfigError::HostPrefixConstraints);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(CookieConfigError::SameSiteNoneRequiresSecure);
        }
        Ok(())
    }

    fn attributes(&self, out: &mut String) {
        out.push_str("; Path=");
        out.push_str(&self.path);
        if let Some(d) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(d);
        }
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        out.push_str("; SameSite=");
        out.push_str(self.same_site.as_str());
    }

    /// A `Set-Cookie` value carrying `value`, with `Max-Age` when given.
    ///
    /// `value` must be a cookie-safe string (the tokens portcullis writes
    /// are base64url); anything else is percent-free ASCII checked here, and
    /// a value that is not is replaced by an empty one rather than panicking.
    #[must_use]
    pub fn set_cookie(&self, value: &str, max_age: Option<Duration>) -> HeaderValue {
        let mut out = String::with_capacity(self.full_name.len() + value.len() + 64);
        out.push_str(&self.full_name);
        out.push('=');
        if value.bytes().all(is_cookie_value_char) {
            out.push_str(value);
        }
        if let Some(age) = max_age {
            let _ = write!(out, "; Max-Age={}", age.as_secs());
        }
        self.attributes(&mut out);
        HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// A `Set-Cookie` value that removes the cookie: same name, path and
    /// domain, empty value, `Max-Age=0` and an `Expires` in the past.
    #[must_use]
    pub fn removal_cookie(&self) -> HeaderValue {
        let mut out = String::with_capacity(self.full_name.len() + 96);
        out.push_str(&self.full_name);
        out.push_str("=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        self.attributes(&mut out);
        HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// RFC 7230 `tchar`: what a cookie name may hold.
const fn is_token_char(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ) || b.is_ascii_alphanumeric()
}

/// RFC 6265 `cookie-octet`.
const fn is_cookie_value_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Why a `Cookie` header could not give one value for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The cookie appears more than once.
    #[error("the cookie appears more than once")]
    Duplicate,
    /// The cookie's value is not visible ASCII.
    #[error("the cookie's value is not visible ASCII")]
    NotAscii,
}

/// Finds the value of the cookie `name` across every `Cookie` header.
///
/// Returns `Ok(None)` when it is absent. Values are returned as sent (with
/// surrounding double quotes removed); callers parse them strictly. Only
/// pairs named `name` can change the outcome: another cookie holding bytes
/// that are not visible ASCII (a UTF-8 value set by some other app of the
/// site) is skipped like any other.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::COOKIE};
/// use portcullis_core::cookie::{CookieError, find_cookie};
///
/// let mut headers = HeaderMap::new();
/// headers.append(COOKIE, HeaderValue::from_bytes(b"lang=fran\xc3\xa7ais; sid=abc").unwrap());
/// assert_eq!(find_cookie(&headers, "sid"), Ok(Some("abc")));
/// headers.append(COOKIE, HeaderValue::from_static("sid=planted"));
/// assert_eq!(find_cookie(&headers, "sid"), Err(CookieError::Duplicate));
/// ```
///
/// # Errors
///
/// [`CookieError::Duplicate`] when the name appears more than once (browsers
/// send both cookies when a second one was planted with another path or
/// domain; neither can be trusted), [`CookieError::NotAscii`] when the
/// value of the cookie `name` is not visible ASCII.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, CookieError> {
    // A pair's name ends at its first `=`: a name holding one never matches.
    if name.contains('=') {
        return Ok(None);
    }
    let name = name.as_bytes();
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        // Bytes, not `to_str`: a foreign pair's bytes never matter, and the
        // whole header is not scanned twice.
        let mut rest = header.as_bytes();
        loop {
            let end = semicolon(rest);
            let pair = rest.get(..end).unwrap_or_default();
            if let Some(value) = value_of(pair, name) {
                if found.is_some() {
                    return Err(CookieError::Duplicate);
                }
                found = Some(value);
            }
            match rest.get(end + 1..) {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
    match found {
        None => Ok(None),
        // Visible ASCII (and tab, as `HeaderValue::to_str` allows) is UTF-8.
        Some(v) if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) => {
            std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| CookieError::NotAscii)
        }
        Some(_) => Err(CookieError::NotAscii),
    }
}

/// Every copy of the cookie `name` across the `Cookie` headers, in the
/// order sent, for the one caller that must act on all of them (a logout
/// that ends every family a planted copy could hide the genuine one
/// behind). Double quotes around a value are removed; empty values and
/// values that are not visible ASCII are skipped (they cannot be tokens).
/// Stops after `limit + 1` copies, so that a caller can refuse "more than
/// `limit`" without reading the rest.
///
/// Everything else reads one value with [`find_cookie`], which refuses a
/// duplicate.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::COOKIE};
/// use portcullis_core::cookie::find_cookies;
///
/// let mut headers = HeaderMap::new();
/// headers.append(COOKIE, HeaderValue::from_static("rt=a; lang=fr; rt=\"b\""));
/// headers.append(COOKIE, HeaderValue::from_static("rt=c"));
/// assert_eq!(find_cookies(&headers, "rt", 8), ["a", "b", "c"]);
/// assert_eq!(find_cookies(&headers, "rt", 1), ["a", "b"]); // stopped at limit + 1
/// ```
#[must_use]
pub fn find_cookies<'a>(headers: &'a HeaderMap, name: &str, limit: usize) -> Vec<&'a str> {
    let mut out = Vec::new();
    if name.contains('=') {
        return out;
    }
    let name = name.as_bytes();
    for header in headers.get_all(COOKIE) {
        let mut rest = header.as_bytes();
        loop {
            let end = semicolon(rest);
            let pair = rest.get(..end).unwrap_or_default();
            if let Some(value) = value_of(pair, name) {
                let visible = !value.is_empty() && value.iter().all(|b| (0x21..0x7f).contains(b));
                if let (true, Ok(v)) = (visible, std::str::from_utf8(value)) {
                    out.push(v);
                    if out.len() > limit {
                        return out;
                    }
                }
            }
            match rest.get(end + 1..) {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
    out
}

/// The value of `pair` (one `;`-separated part of a `Cookie` header) when
/// its name is `name`: spaces and tabs trimmed around the pair, split at
/// the first `=`, double quotes around the value removed.
fn value_of<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = pair.iter().position(|b| !blank(b))?;
    let end = pair
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |e| e + 1);
    let pair = pair.get(start..end)?;
    let rest = pair.strip_prefix(name)?.strip_prefix(b"=")?;
    Some(
        rest.strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(rest),
    )
}

/// The index of the first `;` in `bytes`, or its length. Eight bytes at a
/// time: `str::split`'s searcher set-up dominates on headers this short,
/// and every request of every cookie-reading layer comes through here.
fn semicolon(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    const SEMI: u64 = ONES * b';' as u64;
    let mut i = 0;
    while let Some(Ok(word)) = bytes.get(i..i + 8).map(<[u8; 8]>::try_from) {
        // A zero byte where `;` was; the lowest flag is the first `;`
        // (flags above a zero byte may be spurious, never below it).
        let x = u64::from_le_bytes(word) ^ SEMI;
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return i + (zero.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    bytes
        .get(i..)
        .and_then(|tail| tail.iter().position(|&b| b == b';'))
        .map_or(bytes.len(), |p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain implementation `find_cookie` must agree with: every
    /// `;`-separated pair of every header, trimmed of spaces and tabs,
    /// split at the first `=`; only the matched value must be visible
    /// ASCII.
    fn reference<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, CookieError> {
        let mut found: Option<&[u8]> = None;
        for header in headers.get_all(COOKIE) {
            for pair in header.as_bytes().split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (k, v) = (&pair[..eq], &pair[eq + 1..]);
                if k != name.as_bytes() {
                    continue;
                }
                if found.is_some() {
                    return Err(CookieError::Duplicate);
                }
                found = Some(
                    v.strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(v),
                );
            }
        }
        match found {
            None => Ok(None),
            Some(v) => HeaderValue::from_bytes(v)
                .ok()
                .and_then(|h| h.to_str().ok().map(str::len))
                .map(|_| Some(std::str::from_utf8(v).unwrap_or_default()))
                .ok_or(CookieError::NotAscii),
        }
    }

    fn core(headers: &HeaderMap, name: &str) -> Result<Option<String>, CookieError> {
        reference(headers, name).map(|v| v.map(str::to_owned))
    }

    fn mine(headers: &HeaderMap, name: &str) -> Result<Option<String>, CookieError> {
        find_cookie(headers, name).map(|v| v.map(str::to_owned))
    }

    #[test]
    fn find_cookies_table() {
        let n = "__Host-refresh";
        let cases: &[(&[&[u8]], &[&str])] = &[
            (&[], &[]),
            (&[b"a=1"], &[]),
            (&[b"__Host-refresh=a"], &["a"]),
            (&[b"__Host-refresh=a; __Host-refresh=b"], &["a", "b"]),
            (
                &[b"__Host-refresh=a", b" __Host-refresh=\"b\" "],
                &["a", "b"],
            ),
            (&[b"x=1;__Host-refresh=a;;__Host-refreshx=c"], &["a"]),
            (&[b"__host-refresh=a; x__Host-refresh=b"], &[]),
            (&[b"__Host-refresh=caf\xc3\xa9; __Host-refresh=b"], &["b"]),
            (&[b"__Host-refresh=; __Host-refresh=a b"], &[]),
            (&[b"__Host-refresh==a"], &["=a"]),
            (&[b"\t__Host-refresh=a\t"], &["a"]),
        ];
        for (values, want) in cases {
            let mut map = HeaderMap::new();
            for h in *values {
                map.append(COOKIE, HeaderValue::from_bytes(h).unwrap());
            }
            assert_eq!(find_cookies(&map, n, 8), *want, "{values:?}");
        }
        let mut many = HeaderMap::new();
        many.append(
            COOKIE,
            HeaderValue::from_static("__Host-refresh=a; __Host-refresh=b; __Host-refresh=c"),
        );
        assert_eq!(
            find_cookies(&many, n, 1),
            ["a", "b"],
            "stops after limit + 1"
        );
        assert!(find_cookies(&many, "__Host-refresh=", 8).is_empty());
    }

    #[test]
    fn semicolon_every_position() {
        for len in 0..40 {
            let none = vec![b'a'; len];
            assert_eq!(semicolon(&none), len);
            for at in 0..len {
                let mut b = none.clone();
                b[at] = b';';
                assert_eq!(semicolon(&b), at);
                // Later ones and spurious flags do not hide the first.
                for later in at..len {
                    let mut c = b.clone();
                    c[later] = b';';
                    assert_eq!(semicolon(&c), at);
                }
            }
        }
    }

    #[test]
    fn same_answer_as_core_on_known_cases() {
        let name = "__Host-session";
        let cases: &[&[&[u8]]] = &[
            &[],
            &[b""],
            &[b"__Host-session=abc"],
            &[b"__Host-session=\"abc\""],
            &[b"__Host-session=\""],
            &[b"__Host-session=\"\""],
            &[b"__Host-session="],
            &[b"__Host-session"],
            &[b" \t__Host-session=abc \t; x=1"],
            &[b"a=1; __Host-session=abc; b=2"],
            &[b"a=1;__Host-session=abc;"],
            &[b"__Host-session=a; __Host-session=b"],
            &[b"__Host-session=a", b"__Host-session=b"],
            &[b"__Host-session=a", b"x=\x80"],
            &[b"x=\x7f", b"__Host-session=a"],
            &[b"__Host-session =abc"],
            &[b"__host-session=abc"],
            &[b"__Host-sessionx=abc"],
            &[b"x__Host-session=abc"],
            &[b"__Host-session==abc="],
            &[b";;;__Host-session=abc;;;"],
            &[b"a=\tb; __Host-session=c\t"],
        ];
        for case in cases {
            let mut headers = HeaderMap::new();
            for v in *case {
                // (DEL is refused by `HeaderValue` itself.)
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    headers.append(COOKIE, v);
                }
            }
            for n in [name, "a", "x", "__Host-session=", "=", ""] {
                assert_eq!(mine(&headers, n), core(&headers, n), "{case:?} {n:?}");
            }
        }
    }

    #[test]
    fn same_answer_as_core_on_random_headers() {
        const PIECES: &[&[u8]] = &[
            b"__Host-session",
            b"__Host-session=",
            b"=",
            b";",
            b"; ",
            b" ",
            b"\t",
            b"\"",
            b"a",
            b"Zz09-_",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            b"\x7f",
            b"\xc3\xa9",
            b"\x01",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap()
        };
        for _ in 0..20_000 {
            let mut headers = HeaderMap::new();
            for _ in 0..next(3) + 1 {
                let mut v = Vec::new();
                for _ in 0..next(12) {
                    v.extend_from_slice(PIECES[next(PIECES.len())]);
                }
                if let Ok(v) = http::HeaderValue::from_bytes(&v) {
                    headers.append(COOKIE, v);
                }
            }
            for n in ["__Host-session", "a", "__Host-session="] {
                assert_eq!(mine(&headers, n), core(&headers, n), "{headers:?} {n:?}");
            }
        }
    }

    #[test]
    fn secure_defaults_exact() {
        let c = CookieConfig::new("id");
        c.validate().unwrap();
        assert_eq!(
            c.set_cookie("v", Some(Duration::from_secs(60)))
                .to_str()
                .unwrap(),
            "__Host-id=v; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            c.removal_cookie().to_str().unwrap(),
            "__Host-id=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn dev_mode_exact() {
        let c = CookieConfig::new("id").insecure_dev_cookies();
        c.validate().unwrap();
        assert_eq!(
            c.set_cookie("v", None).to_str().unwrap(),
            "id=v; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn invalid_combinations_refused() {
        assert_eq!(
            CookieConfig::new("id").path("/auth").validate(),
            Err(CookieConfigError::HostPrefixConstraints)
        );
        assert_eq!(
            CookieConfig::new("id").domain("example.com").validate(),
            Err(CookieConfigError::HostPrefixConstraints)
        );
        CookieConfig::new("id")
            .prefix(CookiePrefix::Secure)
            .path("/auth")
            .validate()
            .unwrap();
        assert!(matches!(
            CookieConfig::new("a b").validate(),
            Err(CookieConfigError::InvalidName(_))
        ));
        assert!(matches!(
            CookieConfig::new("").validate(),
            Err(CookieConfigError::InvalidName(_))
        ));
        assert!(matches!(
            CookieConfig::new("id")
                .prefix(CookiePrefix::Secure)
                .path("/a;b")
                .validate(),
            Err(CookieConfigError::InvalidPath(_))
        ));
        assert_eq!(
            CookieConfig::new("id")
                .insecure_dev_cookies()
                .same_site(SameSite::None)
                .validate(),
            Err(CookieConfigError::SameSiteNoneRequiresSecure)
        );
        assert_eq!(
            CookieConfig::new("id")
                .insecure_dev_cookies()
                .prefix(CookiePrefix::Host)
                .validate(),
            Err(CookieConfigError::PrefixRequiresSecure)
        );
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn find_cookie_table() {
        type Case<'a> = (&'a [&'a str], Result<Option<&'a str>, CookieError>);
        let cases: &[Case<'_>] = &[
            (&[], Ok(None)),
            (&["a=1"], Ok(None)),
            (&["sid=x"], Ok(Some("x"))),
            (&["a=1; sid=x; b=2"], Ok(Some("x"))),
            (&["a=1;sid=x"], Ok(Some("x"))),
            (&["sid=\"x\""], Ok(Some("x"))),
            (&["sid=x; sid=y"], Err(CookieError::Duplicate)),
            (&["sid=x", "sid=x"], Err(CookieError::Duplicate)),
            (&["xsid=1; sidx=2"], Ok(None)),
            (&["sid"], Ok(None)),
            (&["sid="], Ok(Some(""))),
            (&["sid= x"], Ok(Some(" x"))),
            (&["sid =x"], Ok(None)),
        ];
        for (input, want) in cases {
            assert_eq!(
                find_cookie(&headers(input), "sid"),
                *want,
                "input {input:?}"
            );
        }
    }

    /// Bytes that are not visible ASCII count only in the matched pair's
    /// value; duplicates of the name are refused wherever they sit.
    #[test]
    fn find_cookie_non_ascii_table() {
        type Case<'a> = (&'a [&'a [u8]], Result<Option<&'a str>, CookieError>);
        let cases: &[Case<'_>] = &[
            (&[b"lang=fran\xc3\xa7ais; sid=x"], Ok(Some("x"))),
            (&[b"sid=x; lang=fran\xc3\xa7ais"], Ok(Some("x"))),
            (&[b"\xff\xfe=\x80; sid=x"], Ok(Some("x"))),
            (&[b"sid=x", b"caf\xc3\xa9=1"], Ok(Some("x"))),
            (&[b"caf\xc3\xa9=1", b"sid=x"], Ok(Some("x"))),
            (&[b"caf\xc3\xa9=1"], Ok(None)),
            (&[b"sid\xc3\xa9=1; sid=x"], Ok(Some("x"))),
            (&[b"sid=caf\xc3\xa9"], Err(CookieError::NotAscii)),
            (&[b"a=1; sid=\x80"], Err(CookieError::NotAscii)),
            (
                &[b"lang=\xc3\xa7; sid=x; sid=y"],
                Err(CookieError::Duplicate),
            ),
            (
                &[b"sid=x; lang=\xc3\xa7", b"sid=y"],
                Err(CookieError::Duplicate),
            ),
            (&[b"sid=\x80; sid=x"], Err(CookieError::Duplicate)),
        ];
        for (input, want) in cases {
            let mut h = HeaderMap::new();
            for v in *input {
                h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
            }
            assert_eq!(find_cookie(&h, "sid"), *want, "input {input:?}");
            assert_eq!(mine(&h, "sid"), core(&h, "sid"), "input {input:?}");
        }
    }

    proptest! {
        #[test]
        fn find_cookie_never_panics(v in "[ -~]{0,200}") {
            if let Ok(hv) = HeaderValue::from_str(&v) {
                let mut h = HeaderMap::new();
                h.append(COOKIE, hv);
                let _ = find_cookie(&h, "sid");
            }
        }

        #[test]
        fn set_cookie_never_panics(v in ".{0,64}") {
            let c = CookieConfig::new("id");
            let out = c.set_cookie(&v, None);
            prop_assert!(out.to_str().is_ok());
        }
    }
}
