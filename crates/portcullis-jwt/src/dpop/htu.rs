//! `htu` comparison (RFC 9449 §4.3): both URLs normalised per RFC 3986
//! §6.2.2 and §6.2.3, without query and fragment.
//!
//! Normalisation: scheme and host lowercased, the scheme's default port
//! dropped (an empty port too), an empty path made `/`, percent-encoded
//! unreserved characters decoded and every other percent-encoding's hex
//! digits uppercased. Dot segments are not resolved: a URL that has them
//! must match byte for byte after the rest of the normalisation. Userinfo,
//! a percent sign in the host, schemes other than `http`/`https`, and any
//! byte outside visible ASCII are refused.

/// `scheme://host[:port]` of `url`, normalised, and the rest (path, query,
/// fragment) as given. `None` when `url` is not an absolute http(s) URL
/// this module accepts.
fn split_origin(url: &str) -> Option<(String, &str)> {
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains(['@', '%']) {
        return None;
    }
    // The port follows the last colon, unless that colon is inside an
    // IPv6 literal.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u16 = p.parse().ok()?;
            (n != default_port).then_some(n)
        }
    };
    let mut origin = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(p) = port {
        origin.push(':');
        origin.push_str(&p.to_string());
    }
    Some((origin, tail))
}

/// A configured public origin, normalised: `scheme://host[:port]`, with
/// nothing after it but an optional `/`.
pub(crate) fn normalize_origin(origin: &str) -> Option<String> {
    let (origin, tail) = split_origin(origin)?;
    matches!(tail, "" | "/").then_some(origin)
}

/// A path, normalised: percent-encoded unreserved characters decoded, the
/// other percent-encodings uppercased, empty made `/`. `None` for a broken
/// percent-encoding or a byte outside visible ASCII.
pub(crate) fn normalize_path(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("/".to_owned());
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !b.is_ascii_graphic() {
            return None;
        }
        if b == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out)
}

/// An `htu` claim, normalised, without query and fragment.
pub(crate) fn normalize_htu(htu: &str) -> Option<String> {
    let (mut origin, tail) = split_origin(htu)?;
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    if !(path.is_empty() || path.starts_with('/')) {
        return None;
    }
    origin.push_str(&normalize_path(path)?);
    Some(origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn htu_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "https://api.example.com/r",
                Some("https://api.example.com/r"),
            ),
            (
                "HTTPS://API.Example.COM/r",
                Some("https://api.example.com/r"),
            ),
            (
                "https://api.example.com:443/r",
                Some("https://api.example.com/r"),
            ),
            (
                "https://api.example.com:/r",
                Some("https://api.example.com/r"),
            ),
            (
                "https://api.example.com:8443/r",
                Some("https://api.example.com:8443/r"),
            ),
            (
                "https://api.example.com:08443/r",
                Some("https://api.example.com:8443/r"),
            ),
            (
                "http://api.example.com:80/r",
                Some("http://api.example.com/r"),
            ),
            (
                "http://api.example.com:443/r",
                Some("http://api.example.com:443/r"),
            ),
            ("https://api.example.com", Some("https://api.example.com/")),
            (
                "https://api.example.com?x=1",
                Some("https://api.example.com/"),
            ),
            (
                "https://api.example.com/r?x=1#f",
                Some("https://api.example.com/r"),
            ),
            (
                "https://api.example.com/r#f?x",
                Some("https://api.example.com/r"),
            ),
            (
                "https://api.example.com/%7euser/%2f",
                Some("https://api.example.com/~user/%2F"),
            ),
            (
                "https://api.example.com/%41",
                Some("https://api.example.com/A"),
            ),
            ("https://[::1]:8080/r", Some("https://[::1]:8080/r")),
            ("https://[::1]/r", Some("https://[::1]/r")),
            (
                "https://api.example.com/R",
                Some("https://api.example.com/R"),
            ),
            ("ftp://api.example.com/r", None),
            ("https://user@api.example.com/r", None),
            ("https:///r", None),
            ("https://api.example.com:99999/r", None),
            ("https://api.example.com:x/r", None),
            ("https://api.example.com/%zz", None),
            ("https://api.example.com/%4", None),
            ("https://api.example.com/a b", None),
            ("https://api.example.com/é", None),
            ("https://a%2ecom/r", None),
            ("/r", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_htu(input).as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn origin_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://API.example.com", Some("https://api.example.com")),
            ("https://api.example.com/", Some("https://api.example.com")),
            (
                "https://api.example.com:443",
                Some("https://api.example.com"),
            ),
            ("http://127.0.0.1:3000", Some("http://127.0.0.1:3000")),
            ("https://api.example.com/v1", None),
            ("https://api.example.com?x", None),
            ("api.example.com", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_origin(input).as_deref(), *want, "{input}");
        }
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent_and_never_panics(s in "\\PC{0,80}") {
            if let Some(n) = normalize_htu(&s) {
                prop_assert_eq!(normalize_htu(&n), Some(n.clone()));
            }
            let _ = normalize_path(&s);
            let _ = normalize_origin(&s);
        }
    }
}
