//! Reading the refresh token from a request, per the [`Transport`]: the
//! cookie, the JSON body (read under a limit), or either but never both;
//! the cross-site check of cookie-borne requests. The choices are plain
//! functions tested by tables at the bottom.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, Method, Uri};
use http_body::Body;
use portcullis_core::cookie::{find_cookie, find_cookies};
use portcullis_core::request::{BodyReadError, read_limited};

use crate::config::Transport;
use crate::error::{RefreshError, RefreshErrorKind};
use crate::refresher::Refresher;
use crate::reply::Carrier;
use crate::token::RefreshToken;

/// The most copies of the refresh cookie a logout looks at; a request with
/// more is refused before any store call.
pub(crate) const MAX_COOKIE_COPIES: usize = 8;

/// The header with which a login asks for the refresh token in the body
/// under [`Transport::Either`].
const TRANSPORT_HEADER: &str = "x-refresh-transport";

/// How a login answers with the refresh token: per the transport; under
/// [`Transport::Either`] the body when the login request carries
/// `x-refresh-transport: body`, the cookie otherwise.
pub(crate) fn login_carrier(transport: Transport, headers: &HeaderMap) -> Carrier {
    match transport {
        Transport::Cookie => Carrier::Cookie,
        Transport::Body => Carrier::Body,
        Transport::Either => {
            if headers
                .get(TRANSPORT_HEADER)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"body"))
            {
                Carrier::Body
            } else {
                Carrier::Cookie
            }
        }
    }
}

/// Where the presented token came from: the cookie or the body, never both
/// (`Err` with the refusal's reason).
fn pick<T>(cookie: Option<T>, body: Option<T>) -> Result<Option<(T, Carrier)>, &'static str> {
    match (cookie, body) {
        (Some(_), Some(_)) => Err("token-in-cookie-and-body"),
        (Some(c), None) => Ok(Some((c, Carrier::Cookie))),
        (None, Some(b)) => Ok(Some((b, Carrier::Body))),
        (None, None) => Ok(None),
    }
}

/// Whether `content_type` is JSON (`application/json`, parameters allowed).
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a cookie-borne request to `uri` with `headers` is refused as
/// cross-site (judged as a `POST` whatever its method).
pub(crate) fn is_cross_site(refresher: &Refresher, uri: &Uri, headers: &HeaderMap) -> bool {
    refresher
        .inner
        .origin
        .check(&Method::POST, uri, headers, true)
        .is_err()
}

/// Finds the refresh token per the transport: `Ok(None)` when absent.
pub(crate) async fn presented_token<B>(
    refresher: &Refresher,
    parts: &Parts,
    body: B,
) -> Result<Option<(RefreshToken, Carrier)>, RefreshError>
where
    B: Body<Data = Bytes>,
{
    let bad = |r| RefreshError::new(RefreshErrorKind::BadRequest, r);
    let config = refresher.config();
    let cookie = if config.transport == Transport::Body {
        None
    } else {
        find_cookie(&parts.headers, config.cookie.full_name())
            .map_err(|_| bad("duplicate-cookie"))?
    };
    let body_token = if config.transport == Transport::Cookie {
        None
    } else {
        body_token(refresher, parts, body).await?
    };
    let Some((raw, carrier)) = pick(cookie.map(str::to_owned), body_token).map_err(bad)? else {
        return Ok(None);
    };
    if carrier == Carrier::Cookie && is_cross_site(refresher, &parts.uri, &parts.headers) {
        return Err(RefreshError::new(RefreshErrorKind::CrossSite, "cross-site"));
    }
    let token = RefreshToken::parse(&raw)
        .ok_or_else(|| RefreshError::new(RefreshErrorKind::InvalidGrant, "malformed"))?;
    Ok(Some((token, carrier)))
}

/// The refresh tokens a logout acts on. Usually what [`presented_token`]
/// finds; when the cookie arrives more than once (a copy planted under the
/// same name by a sibling sub-domain, possible with a cookie name without
/// the `__Host-` prefix), every copy that parses as a refresh token, up to
/// [`MAX_COOKIE_COPIES`]: each one only reaches a family it is a token of,
/// so the genuine one is ended and a planted one ends at most the
/// planter's own family.
pub(crate) async fn logout_tokens<B>(
    refresher: &Refresher,
    parts: &Parts,
    body: B,
) -> Result<Vec<RefreshToken>, RefreshError>
where
    B: Body<Data = Bytes>,
{
    let config = refresher.config();
    if config.transport != Transport::Body {
        let copies = find_cookies(&parts.headers, config.cookie.full_name(), MAX_COOKIE_COPIES);
        if copies.len() > MAX_COOKIE_COPIES {
            return Err(RefreshError::new(
                RefreshErrorKind::BadRequest,
                "too-many-cookies",
            ));
        }
        if copies.len() > 1 {
            if is_cross_site(refresher, &parts.uri, &parts.headers) {
                return Err(RefreshError::new(RefreshErrorKind::CrossSite, "cross-site"));
            }
            let mut tokens: Vec<RefreshToken> = Vec::new();
            for t in copies.into_iter().filter_map(RefreshToken::parse) {
                if !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
            return Ok(tokens);
        }
    }
    Ok(presented_token(refresher, parts, body)
        .await?
        .map(|(t, _)| t)
        .into_iter()
        .collect())
}

/// `{"refresh_token": "..."}` from a JSON body, read up to the limit.
async fn body_token<B>(
    refresher: &Refresher,
    parts: &Parts,
    body: B,
) -> Result<Option<String>, RefreshError>
where
    B: Body<Data = Bytes>,
{
    #[derive(serde::Deserialize)]
    struct Wire {
        refresh_token: Option<String>,
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !is_json(content_type) {
        return Ok(None);
    }
    let bytes = match read_limited(body, refresher.config().max_body).await {
        Ok(read) => read.data,
        Err(BodyReadError::TooLarge) => {
            return Err(RefreshError::new(
                RefreshErrorKind::TooLarge,
                "body-too-large",
            ));
        }
        Err(_) => {
            return Err(RefreshError::new(
                RefreshErrorKind::BadRequest,
                "body-unreadable",
            ));
        }
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let wire: Wire = serde_json::from_slice(&bytes)
        .map_err(|_| RefreshError::new(RefreshErrorKind::BadRequest, "body-json"))?;
    Ok(wire.refresh_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_carrier_table() {
        let cases: &[(Transport, Option<&str>, Carrier)] = &[
            (Transport::Cookie, None, Carrier::Cookie),
            (Transport::Cookie, Some("body"), Carrier::Cookie),
            (Transport::Body, None, Carrier::Body),
            (Transport::Body, Some("cookie"), Carrier::Body),
            (Transport::Either, None, Carrier::Cookie),
            (Transport::Either, Some("body"), Carrier::Body),
            (Transport::Either, Some("BODY"), Carrier::Body),
            (Transport::Either, Some("cookie"), Carrier::Cookie),
            (Transport::Either, Some("bodyx"), Carrier::Cookie),
        ];
        for (transport, header, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(h) = header {
                headers.insert(TRANSPORT_HEADER, h.parse().unwrap());
            }
            assert_eq!(
                login_carrier(*transport, &headers),
                *want,
                "{transport:?} {header:?}"
            );
        }
    }

    #[test]
    fn pick_table() {
        type Case = (
            Option<u8>,
            Option<u8>,
            Result<Option<(u8, Carrier)>, &'static str>,
        );
        let cases: &[Case] = &[
            (None, None, Ok(None)),
            (Some(1), None, Ok(Some((1, Carrier::Cookie)))),
            (None, Some(2), Ok(Some((2, Carrier::Body)))),
            (Some(1), Some(2), Err("token-in-cookie-and-body")),
        ];
        for (cookie, body, want) in cases {
            assert_eq!(pick(*cookie, *body), *want, "{cookie:?} {body:?}");
        }
    }

    #[test]
    fn is_json_table() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some(" application/json ;x"), true),
            (Some("text/plain"), false),
            (Some("application/json-patch+json"), false),
            (Some(""), false),
        ];
        for (value, want) in cases {
            assert_eq!(is_json(*value), *want, "{value:?}");
        }
    }
}
