//! What may serve as a redirect target (the login and re-authentication
//! URLs): a path on this site.

use http::HeaderValue;

/// A login URL that cannot serve as a redirect target: it must be a path
/// on this site (`/login`, `/auth/login?x=1`), not `//host/..`, not a full
/// URL, and a valid header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the login URL must be a path on this site, such as \"/login\"")]
pub struct InvalidLoginUrl;

/// Checks that `url` can serve as a redirect target: a same-site path and
/// a valid header value.
pub(crate) fn check_redirect_url(url: &str) -> Result<(), InvalidLoginUrl> {
    if !is_same_site_path(url) || HeaderValue::from_str(url).is_err() {
        return Err(InvalidLoginUrl);
    }
    Ok(())
}

/// A path on this site: `/...`, never `//host` nor `/\host` (which
/// browsers read as another host).
pub(crate) fn is_same_site_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\'))
}
