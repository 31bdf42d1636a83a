//! `Transport`: where a request carries its access token, and reading it
//! from there.

use http::{HeaderMap, HeaderName};
use portcullis_core::cookie::find_cookie;
use portcullis_core::request::{bearer_token, dpop_token, single_header};

use crate::error::{JwtError, JwtErrorKind};

/// Where the layer reads the token. Never from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// `Authorization: Bearer <token>` (the default).
    Bearer,
    /// A cookie of this name (prefix included).
    Cookie(String),
    /// Any header carrying the bare token (gRPC metadata is a header too).
    Header(HeaderName),
}

/// The raw token `transport` finds in `headers`: `Ok(None)` when there is
/// none (another `Authorization` scheme is not ours).
///
/// # Errors
///
/// [`JwtErrorKind::InvalidRequest`] for a credential that cannot be read
/// (a repeated header, a bearer token with spaces, a malformed cookie).
pub(crate) fn extract<'a>(
    transport: &Transport,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, JwtError> {
    let read = match transport {
        Transport::Bearer => bearer_token(headers).map_err(drop),
        Transport::Cookie(name) => find_cookie(headers, name).map_err(drop),
        Transport::Header(name) => single_header(headers, name).map_err(drop),
    };
    read.map_err(|()| JwtError::new(JwtErrorKind::InvalidRequest))
}

/// The token of `Authorization: DPoP <token>` (read only by a layer that
/// accepts DPoP): `Ok(None)` without it.
///
/// # Errors
///
/// [`JwtErrorKind::InvalidRequest`] for a credential that cannot be read
/// (a repeated `Authorization` header, a token with spaces).
pub(crate) fn extract_dpop(headers: &HeaderMap) -> Result<Option<&str>, JwtError> {
    dpop_token(headers).map_err(|_| JwtError::new(JwtErrorKind::InvalidRequest).via_dpop(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (transport, request headers, expected token or error)
    type Case = (
        Transport,
        Vec<(&'static str, &'static str)>,
        Result<Option<&'static str>, JwtErrorKind>,
    );

    #[test]
    fn extraction_table() {
        let x = HeaderName::from_static("x-token");
        let cookie = || Transport::Cookie("at".into());
        let invalid = Err(JwtErrorKind::InvalidRequest);
        // (transport, request headers, expected token or error)
        let cases: Vec<Case> = vec![
            (Transport::Bearer, vec![], Ok(None)),
            (
                Transport::Bearer,
                vec![("authorization", "Bearer t.t.t")],
                Ok(Some("t.t.t")),
            ),
            (
                Transport::Bearer,
                vec![("authorization", "bearer   t.t.t")],
                Ok(Some("t.t.t")),
            ),
            (
                Transport::Bearer,
                vec![("authorization", "Basic dTpw")],
                Ok(None),
            ),
            (
                Transport::Bearer,
                vec![("authorization", "Bearer")],
                invalid,
            ),
            (
                Transport::Bearer,
                vec![("authorization", "Bearer a b")],
                invalid,
            ),
            (
                Transport::Bearer,
                vec![("authorization", "Bearer a"), ("authorization", "Bearer b")],
                invalid,
            ),
            (Transport::Bearer, vec![("cookie", "at=t.t.t")], Ok(None)),
            (
                cookie(),
                vec![("cookie", "a=1; at=t.t.t")],
                Ok(Some("t.t.t")),
            ),
            (cookie(), vec![("authorization", "Bearer t.t.t")], Ok(None)),
            (
                Transport::Header(x.clone()),
                vec![("x-token", "t.t.t")],
                Ok(Some("t.t.t")),
            ),
            (Transport::Header(x.clone()), vec![], Ok(None)),
            (
                Transport::Header(x),
                vec![("x-token", "a"), ("x-token", "b")],
                invalid,
            ),
        ];
        for (i, (transport, pairs, want)) in cases.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(HeaderName::from_static(name), value.parse().unwrap());
            }
            let got = extract(&transport, &headers).map_err(|e| e.kind());
            assert_eq!(got, want, "case {i}: {transport:?}");
        }
    }
}
