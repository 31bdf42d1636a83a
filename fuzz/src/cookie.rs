//! `Cookie` headers (`find_cookie`) and the `Set-Cookie` values a
//! `CookieConfig` writes.

use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use portcullis_core::CookieConfig;
use portcullis_core::SameSite;
use portcullis_core::cookie::{CookieError, CookiePrefix, find_cookie};

/// One fuzz case, from plain bytes so that seeds are real headers:
/// a flags byte (prefix, `SameSite`, dev mode, `Max-Age`), then lines:
/// the cookie name, a `Path` (empty: the default), a `Domain` (empty:
/// none), then `Cookie` header values, each also used as a value for
/// `set_cookie`.
#[derive(Debug)]
pub struct Input {
    name: String,
    headers: Vec<Vec<u8>>,
    config: ConfigInput,
    max_age: Option<u32>,
}

#[derive(Debug)]
struct ConfigInput {
    path: Option<String>,
    domain: Option<String>,
    same_site: u8,
    prefix: u8,
    insecure: bool,
}

impl Input {
    /// Reads the layout above from fuzzer bytes.
    #[must_use]
    pub fn from_bytes(data: &[u8]) -> Self {
        let (flags, rest) = data.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        let mut lines = rest.split(|&b| b == b'\n');
        let mut line = || {
            lines
                .next()
                .map(|l| crate::text(l).to_owned())
                .unwrap_or_default()
        };
        let name = line();
        let path = Some(line()).filter(|p| !p.is_empty());
        let domain = Some(line()).filter(|d| !d.is_empty());
        let headers = lines.map(<[u8]>::to_vec).collect();
        Self {
            name,
            headers,
            config: ConfigInput {
                path,
                domain,
                same_site: flags & 3,
                prefix: (flags >> 2) & 3,
                insecure: flags & 0x10 != 0,
            },
            max_age: (flags & 0x20 != 0).then_some(u32::from(flags) * 3600),
        }
    }
}

/// The plain reading of RFC 6265 section 5.4 that `find_cookie` (which
/// searches for `;` eight bytes at a time) must agree with: pairs split
/// at `;`, blanks trimmed, the name ends at the first `=`, a name found
/// twice is refused, and only the value found must be visible ASCII
/// (foreign pairs may hold any header bytes).
fn reference<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, CookieError> {
    let mut found: Option<&[u8]> = None;
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = trim_blanks(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(CookieError::Duplicate);
            }
            let v = &pair[eq + 1..];
            found = Some(
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v),
            );
        }
    }
    match found {
        None => Ok(None),
        Some(v) if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) => {
            Ok(Some(std::str::from_utf8(v).expect("ASCII")))
        }
        Some(_) => Err(CookieError::NotAscii),
    }
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 6265 `cookie-octet`.
fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Checks one case.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run(input: &Input) {
    let mut headers = HeaderMap::new();
    for raw in &input.headers {
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            headers.append(COOKIE, v);
        }
    }
    let got = find_cookie(&headers, &input.name);
    assert_eq!(
        got,
        reference(&headers, &input.name),
        "find_cookie disagrees"
    );
    if let Ok(Some(v)) = got {
        // A value is a slice of a visible-ASCII header with no `;`.
        assert!(!v.contains(';'));
        assert!(
            v.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        );
    }
    set_cookie_round_trip(input, "");
    for h in &input.headers {
        set_cookie_round_trip(input, crate::text(h));
    }
}

fn set_cookie_round_trip(input: &Input, value: &str) {
    let c = &input.config;
    let mut config = CookieConfig::new(input.name.clone());
    if c.insecure {
        config = config.insecure_dev_cookies();
    }
    config = config.prefix(match c.prefix % 3 {
        0 => CookiePrefix::Host,
        1 => CookiePrefix::Secure,
        _ => CookiePrefix::None,
    });
    config = config.same_site(match c.same_site % 3 {
        0 => SameSite::Strict,
        1 => SameSite::Lax,
        _ => SameSite::None,
    });
    if let Some(p) = &c.path {
        config = config.path(p.clone());
    }
    if let Some(d) = &c.domain {
        config = config.domain(d.clone());
    }
    let max_age = input.max_age.map(|s| Duration::from_secs(u64::from(s)));
    let set = config.set_cookie(value, max_age);
    let removal = config.removal_cookie();
    if config.validate().is_err() {
        return;
    }
    // A valid configuration always yields a header, whatever the value.
    let set = set.to_str().expect("Set-Cookie is visible ASCII");
    assert!(!set.is_empty(), "valid config, empty Set-Cookie");
    assert!(!removal.is_empty(), "valid config, empty removal cookie");
    // No attribute can be injected through the value: exactly the
    // configured attributes follow the pair.
    let attributes = 2
        + usize::from(c.domain.is_some())
        + usize::from(max_age.is_some())
        + usize::from(config.is_secure())
        + 1; // HttpOnly
    assert_eq!(set.matches(';').count(), attributes, "{set}");
    let pair = set.split(';').next().unwrap_or_default();
    let (name, value) = pair.split_once('=').expect("name=value");
    assert_eq!(name, config.full_name());
    let expected = if value.bytes().all(cookie_octet) {
        value
    } else {
        ""
    };
    assert_eq!(value, expected);
    // What a browser sends back finds the same value.
    let mut back = HeaderMap::new();
    back.append(
        COOKIE,
        HeaderValue::from_str(pair).expect("pair is a header"),
    );
    assert_eq!(find_cookie(&back, config.full_name()), Ok(Some(expected)));
}
