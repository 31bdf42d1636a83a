//! Reading what a request carries: credentials in headers, the user agent,
//! the client address, and bodies read in full under a limit.
//!
//! Every layer reads requests through these functions, so the rules (one
//! `Authorization` header, no bearer token with spaces, a bounded body) are
//! the same everywhere.
//!
//! ```
//! use http::HeaderMap;
//! use portcullis_core::request::bearer_token;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
//! assert_eq!(bearer_token(&headers), Ok(Some("abc.def.ghi")));
//!
//! headers.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
//! assert_eq!(bearer_token(&headers), Ok(None)); // not our scheme
//! ```

use std::future::poll_fn;
use std::net::IpAddr;
use std::pin::pin;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{Extensions, HeaderMap, HeaderName};
use http_body::Body;

/// Finds the client's address for a request: reads what the app's server
/// put in the extensions (axum's `ConnectInfo`) or, behind a proxy the app
/// trusts, a header that proxy sets. Stored with sessions and refresh
/// families so that users can recognise their devices.
pub type ClientIpFn = fn(&Extensions, &HeaderMap) -> Option<IpAddr>;

/// The longest user agent kept with a session or device, in characters.
pub const USER_AGENT_MAX_CHARS: usize = 256;

/// A credential header that cannot be read: sent twice, not visible ASCII,
/// or a bearer token that is empty or has spaces in it. Layers answer 400
/// (`invalid_request`), never "anonymous".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed credential header")]
pub struct MalformedCredential;

/// The value of `name` when it is sent at most once.
///
/// # Errors
///
/// [`MalformedCredential`] when the header is repeated or is not visible
/// ASCII.
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, MalformedCredential> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| MalformedCredential),
        _ => Err(MalformedCredential),
    }
}

/// The token of `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme
/// is case-insensitive). `Ok(None)` without the header or with another
/// scheme (`Basic`, `DPoP`): those are not bearer credentials.
///
/// # Errors
///
/// [`MalformedCredential`] for a repeated or unreadable header, or a bearer
/// token that is empty or contains a space.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, MalformedCredential> {
    scheme_token(headers, "bearer")
}

/// The token of `Authorization: DPoP <token>` (RFC 9449 §7.1; the scheme
/// is case-insensitive), with the same rules as [`bearer_token`]: one
/// `Authorization` header, a token without spaces. `Ok(None)` without the
/// header or with another scheme (`Bearer` included).
///
/// ```
/// use http::HeaderMap;
/// use portcullis_core::request::{bearer_token, dpop_token};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("authorization", "DPoP abc.def.ghi".parse().unwrap());
/// assert_eq!(dpop_token(&headers), Ok(Some("abc.def.ghi")));
/// assert_eq!(bearer_token(&headers), Ok(None));
/// ```
///
/// # Errors
///
/// [`MalformedCredential`] for a repeated or unreadable header, or a DPoP
/// token that is empty or contains a space.
pub fn dpop_token(headers: &HeaderMap) -> Result<Option<&str>, MalformedCredential> {
    scheme_token(headers, "dpop")
}

/// The token after `scheme` (lowercase) in the one `Authorization` header.
fn scheme_token<'a>(
    headers: &'a HeaderMap,
    scheme: &str,
) -> Result<Option<&'a str>, MalformedCredential> {
    let Some(value) = single_header(headers, &AUTHORIZATION)? else {
        return Ok(None);
    };
    let (got, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !got.eq_ignore_ascii_case(scheme) {
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Err(MalformedCredential);
    }
    Ok(Some(token))
}

/// The request's `User-Agent`, cut to [`USER_AGENT_MAX_CHARS`] characters;
/// `None` when absent or not valid text.
#[must_use]
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(USER_AGENT_MAX_CHARS).collect())
}

/// Why a body could not be read in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyReadError {
    /// The body is longer than the limit (answer 413).
    #[error("request body exceeds the limit")]
    TooLarge,
    /// The body failed while being read (answer 400).
    #[error("request body could not be read")]
    Unreadable,
}

/// A body read in full: its bytes and its trailers, to replay to the inner
/// service or to parse. Its `Debug` shows sizes only: a body carries
/// passwords, refresh tokens and CSRF tokens.
#[derive(Clone, Default)]
pub struct ReadBody {
    /// Every data frame, concatenated.
    pub data: Bytes,
    /// The trailers, when the body had any.
    pub trailers: Option<HeaderMap>,
}

impl std::fmt::Debug for ReadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBody")
            .field("data_len", &self.data.len())
            .field("trailers", &self.trailers.as_ref().map(HeaderMap::len))
            .finish()
    }
}

/// Reads `body` in full, refusing more than `limit` bytes: a declared
/// length over the limit is refused before anything is read, and reading
/// stops at the first byte past it.
///
/// # Errors
///
/// [`BodyReadError::TooLarge`] past the limit, [`BodyReadError::Unreadable`]
/// when the body fails.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<ReadBody, BodyReadError>
where
    B: Body<Data = Bytes>,
{
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if body.size_hint().lower() > limit64 {
        return Err(BodyReadError::TooLarge);
    }
    let mut body = pin!(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|_| BodyReadError::Unreadable)?;
        match frame.into_data() {
            Ok(data) => {
                total = total.saturating_add(data.len());
                if total > limit {
                    return Err(BodyReadError::TooLarge);
                }
                if !data.is_empty() {
                    chunks.push(data);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
    let data = if chunks.len() == 1 {
        chunks.pop().unwrap_or_default()
    } else {
        let mut all = BytesMut::with_capacity(total);
        for c in &chunks {
            all.extend_from_slice(c);
        }
        all.freeze()
    };
    Ok(ReadBody { data, trailers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::Full;

    fn auth(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_table() {
        type Case<'a> = (&'a [&'a [u8]], Result<Option<&'a str>, MalformedCredential>);
        let cases: &[Case<'_>] = &[
            (&[], Ok(None)),
            (&[b"Bearer abc"], Ok(Some("abc"))),
            (&[b"bearer abc"], Ok(Some("abc"))),
            (&[b"BEARER   abc"], Ok(Some("abc"))),
            (&[b"Basic abc"], Ok(None)),
            (&[b"DPoP abc"], Ok(None)),
            (&[b"Bearer"], Err(MalformedCredential)),
            (&[b"Bearer "], Err(MalformedCredential)),
            (&[b"Bearer a b"], Err(MalformedCredential)),
            (&[b"Bearer abc", b"Bearer abc"], Err(MalformedCredential)),
            (&[b"Bearer \xff"], Err(MalformedCredential)),
        ];
        for (values, want) in cases {
            let h = auth(values);
            assert_eq!(bearer_token(&h), *want, "{values:?}");
        }
    }

    #[test]
    fn dpop_table() {
        type Case<'a> = (&'a [&'a [u8]], Result<Option<&'a str>, MalformedCredential>);
        let cases: &[Case<'_>] = &[
            (&[], Ok(None)),
            (&[b"DPoP abc"], Ok(Some("abc"))),
            (&[b"dpop abc"], Ok(Some("abc"))),
            (&[b"DPOP   abc"], Ok(Some("abc"))),
            (&[b"Bearer abc"], Ok(None)),
            (&[b"DPoPx abc"], Ok(None)),
            (&[b"DPoP"], Err(MalformedCredential)),
            (&[b"DPoP "], Err(MalformedCredential)),
            (&[b"DPoP a b"], Err(MalformedCredential)),
            (&[b"DPoP abc", b"DPoP abc"], Err(MalformedCredential)),
            (&[b"DPoP abc", b"Bearer abc"], Err(MalformedCredential)),
            (&[b"DPoP \xff"], Err(MalformedCredential)),
        ];
        for (values, want) in cases {
            let h = auth(values);
            assert_eq!(dpop_token(&h), *want, "{values:?}");
        }
    }

    #[test]
    fn read_body_debug_shows_no_bytes() {
        let body = ReadBody {
            data: Bytes::from_static(b"password=hunter2"),
            trailers: None,
        };
        let shown = format!("{body:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("16"), "{shown}");
    }

    #[test]
    fn user_agent_is_cut_and_text_only() {
        let mut h = HeaderMap::new();
        assert_eq!(user_agent(&h), None);
        h.insert(
            USER_AGENT,
            HeaderValue::from_str(&"a".repeat(1000)).unwrap(),
        );
        assert_eq!(user_agent(&h).unwrap().len(), USER_AGENT_MAX_CHARS);
        h.insert(USER_AGENT, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(user_agent(&h), None);
    }

    #[tokio::test]
    async fn read_limited_bounds_and_concatenates() {
        let body = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(read_limited(body, 5).await.unwrap().data, "hello");
        let body = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(
            read_limited(body, 4).await.unwrap_err(),
            BodyReadError::TooLarge
        );
        let frames = futures_stream(vec![b"ab".as_slice(), b"cd", b"ef"]);
        assert_eq!(read_limited(frames, 6).await.unwrap().data, "abcdef");
        let frames = futures_stream(vec![b"ab".as_slice(), b"cd", b"ef"]);
        assert_eq!(
            read_limited(frames, 5).await.unwrap_err(),
            BodyReadError::TooLarge
        );
    }

    /// A body of several data frames.
    struct Frames(Vec<&'static [u8]>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            let next = if self.0.is_empty() {
                None
            } else {
                Some(Ok(http_body::Frame::data(Bytes::from_static(
                    self.0.remove(0),
                ))))
            };
            std::task::Poll::Ready(next)
        }
    }

    fn futures_stream(parts: Vec<&'static [u8]>) -> Frames {
        Frames(parts)
    }
}
