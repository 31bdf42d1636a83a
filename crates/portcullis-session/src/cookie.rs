//! Finding the session cookie in a request, on every request.
//!
//! The same answer as [`portcullis_core::cookie::find_cookie`] (the unit
//! tests compare the two on random headers), found with less work: the
//! `;` separators are searched eight bytes at a time, and a pair is only
//! looked at further when it starts with the cookie's name and `=`.

use http::HeaderMap;
use http::header::COOKIE;

/// Why the session cookie cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieError {
    /// A `Cookie` header that is not visible ASCII.
    NotAscii,
    /// The cookie is present more than once (in one header or several).
    Duplicate,
}

/// The value of the cookie `name`, without surrounding double quotes.
/// `name_has_eq` says whether `name` holds a `=` (then it never matches:
/// a pair's name ends at its first `=`); the layer works it out once.
///
/// # Errors
///
/// As [`portcullis_core::cookie::find_cookie`]: a `Cookie` header that is
/// not visible ASCII, or the cookie present twice.
pub(crate) fn find_cookie<'a>(
    headers: &'a HeaderMap,
    name: &str,
    name_has_eq: bool,
) -> Result<Option<&'a str>, CookieError> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(mut rest) = header.to_str() else {
            return Err(CookieError::NotAscii);
        };
        loop {
            let end = semicolon(rest.as_bytes());
            // `;` is ASCII: both slices fall on character boundaries.
            let pair = rest.get(..end).unwrap_or_default();
            if let Some(value) = value_of(pair, name).filter(|_| !name_has_eq) {
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
    Ok(found)
}

/// The value of `pair` (one `;`-separated part of a `Cookie` header) when
/// its name is `name`: spaces and tabs trimmed around the pair, split at
/// the first `=`, double quotes around the value removed.
fn value_of<'a>(pair: &'a str, name: &str) -> Option<&'a str> {
    let pair = pair.trim_matches(|c| c == ' ' || c == '\t');
    let rest = pair.strip_prefix(name)?.strip_prefix('=')?;
    Some(
        rest.strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(rest),
    )
}

/// The index of the first `;` in `bytes`, or its length.
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
    use http::HeaderValue;

    fn core(headers: &HeaderMap, name: &str) -> Result<Option<String>, CookieError> {
        portcullis_core::cookie::find_cookie(headers, name)
            .map(|v| v.map(str::to_owned))
            .map_err(|e| match e {
                portcullis_core::cookie::CookieError::Duplicate => CookieError::Duplicate,
                _ => CookieError::NotAscii,
            })
    }

    fn mine(headers: &HeaderMap, name: &str) -> Result<Option<String>, CookieError> {
        find_cookie(headers, name, name.contains('=')).map(|v| v.map(str::to_owned))
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
                if let Ok(v) = HeaderValue::from_bytes(v) {
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
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    headers.append(COOKIE, v);
                }
            }
            for n in ["__Host-session", "a", "__Host-session="] {
                assert_eq!(mine(&headers, n), core(&headers, n), "{headers:?} {n:?}");
            }
        }
    }
}
