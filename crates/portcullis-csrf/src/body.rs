//! Request bodies: the form encodings the token is read from, finding the
//! token field in a form, and [`RequestBody`], which hands the unchanged
//! bytes on to the inner service.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use http_body::{Body, Frame, SizeHint};
use portcullis_core::request::{BodyReadError, ReadBody, read_limited};

pub use projection::RequestBody;
use projection::RequestBodyProj;

use crate::error::CsrfErrorKind;

mod projection {
    // pin-project-lite generates an undocumented projection type.
    #![allow(missing_docs, unreachable_pub)]
    use bytes::Bytes;
    use http::HeaderMap;
    use pin_project_lite::pin_project;

    pin_project! {
        /// The request body the inner service receives: the original body
        /// when the layer read none of it, or the buffered bytes of a form
        /// body it searched for the token (the same bytes, and trailers,
        /// in the same order).
        #[project = RequestBodyProj]
        #[derive(Debug)]
        pub enum RequestBody<B> {
            /// The original body, untouched.
            Inner {
                #[pin]
                body: B,
            },
            /// A body the layer read in full.
            Buffered {
                data: Option<Bytes>,
                trailers: Option<HeaderMap>,
            },
        }
    }
}

impl<B> RequestBody<B> {
    pub(crate) const fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self::Buffered {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            RequestBodyProj::Inner { body } => body.poll_frame(cx),
            RequestBodyProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Reads a form body in full through core's bounded reader, refusing more
/// than `limit` bytes, and names the failure as the layer reports it.
pub(crate) async fn read_form<B>(body: B, limit: usize) -> Result<ReadBody, CsrfErrorKind>
where
    B: Body<Data = Bytes>,
{
    read_limited(body, limit).await.map_err(|e| match e {
        BodyReadError::TooLarge => CsrfErrorKind::BodyTooLarge,
        _ => CsrfErrorKind::BodyUnreadable,
    })
}

/// The form encodings the token field is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormKind {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data` with this boundary.
    Multipart(String),
}

/// The form encoding of a request, from its `Content-Type`; `None` for any
/// other type (JSON, `text/plain`, none), or a multipart type without a
/// usable boundary.
pub(crate) fn form_kind(headers: &HeaderMap) -> Option<FormKind> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (essence, params) = value.split_once(';').unwrap_or((value, ""));
    let essence = essence.trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Some(FormKind::UrlEncoded);
    }
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = param(params, "boundary")?;
    // RFC 2046: 1 to 70 characters.
    (1..=70)
        .contains(&boundary.len())
        .then_some(FormKind::Multipart(boundary))
}

/// A `name=value` parameter of a header value's parameter list (`; a=b;
/// c="d"`), unquoted. Names are case-insensitive.
fn param(params: &str, name: &str) -> Option<String> {
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &quoted[end?..];
            value = out;
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
    }
}

/// The first value of `field` in a form body (`None` when absent).
pub(crate) fn find_field(kind: &FormKind, body: &[u8], field: &str) -> Option<Vec<u8>> {
    match kind {
        FormKind::UrlEncoded => form_urlencoded::parse(body)
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.into_owned().into_bytes()),
        FormKind::Multipart(boundary) => multipart_field(body, boundary, field).map(<[u8]>::to_vec),
    }
}

/// Finds the first `form-data` part named `field` that is not a file.
fn multipart_field<'a>(body: &'a [u8], boundary: &str, field: &str) -> Option<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let finder = memchr::memmem::Finder::new(next_delimiter.as_bytes());
    // The first delimiter opens the body or follows a preamble line.
    let mut pos = if body.starts_with(delimiter.as_bytes()) {
        delimiter.len()
    } else {
        finder.find(body)? + next_delimiter.len()
    };
    loop {
        let rest = body.get(pos..)?;
        if rest.starts_with(b"--") {
            return None; // close delimiter
        }
        // Transport padding, then the line break ending the delimiter line.
        let skip = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let rest = rest.get(skip..)?.strip_prefix(b"\r\n")?;
        let head_end = memchr::memmem::find(rest, b"\r\n\r\n");
        let (head, content) = match head_end {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            // A part with no header lines at all.
            None if rest.starts_with(b"\r\n") => (&rest[..0], &rest[2..]),
            None => return None,
        };
        let content_len = finder.find(content)?;
        if part_is_field(head, field) {
            return Some(&content[..content_len]);
        }
        let consumed = body.len() - content.len() + content_len + next_delimiter.len();
        pos = consumed;
    }
}

/// Whether a part's header block says `form-data; name="<field>"` without a
/// file name.
fn part_is_field(head: &[u8], field: &str) -> bool {
    let Ok(head) = std::str::from_utf8(head) else {
        return false;
    };
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let (kind, params) = value.split_once(';').unwrap_or((value, ""));
        return kind.trim().eq_ignore_ascii_case("form-data")
            && param(params, "name").as_deref() == Some(field)
            && param(params, "filename").is_none()
            && param(params, "filename*").is_none();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::{BodyExt as _, Full};

    fn ct(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn content_types() {
        let cases: &[(&str, Option<FormKind>)] = &[
            (
                "application/x-www-form-urlencoded",
                Some(FormKind::UrlEncoded),
            ),
            (
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
                Some(FormKind::UrlEncoded),
            ),
            (
                "multipart/form-data; boundary=abc",
                Some(FormKind::Multipart("abc".into())),
            ),
            (
                "multipart/form-data; charset=x; BOUNDARY=\"a b;c\"",
                Some(FormKind::Multipart("a b;c".into())),
            ),
            ("multipart/form-data", None),
            ("multipart/form-data; boundary=", None),
            ("application/json", None),
            ("text/plain", None),
        ];
        for (v, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            assert_eq!(form_kind(&h), *want, "{v}");
        }
        assert_eq!(form_kind(&HeaderMap::new()), None);
        let mut two = ct("application/x-www-form-urlencoded");
        two.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(form_kind(&two), None, "ambiguous content types");
    }

    #[test]
    fn urlencoded_fields() {
        let k = FormKind::UrlEncoded;
        let f = |b: &str| {
            find_field(&k, b.as_bytes(), "csrf_token").map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(f("a=1&csrf_token=abc&b=2").as_deref(), Some("abc"));
        assert_eq!(
            f("csrf_token=first&csrf_token=second").as_deref(),
            Some("first")
        );
        assert_eq!(f("csrf%5Ftoken=enc").as_deref(), Some("enc"));
        assert_eq!(f("csrf_token=a%2Db").as_deref(), Some("a-b"));
        assert_eq!(f("xcsrf_token=no").as_deref(), None);
        assert_eq!(f("").as_deref(), None);
        assert_eq!(f("%FF%FE=1&&&=").as_deref(), None);
    }

    #[test]
    fn multipart_fields() {
        let body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"csrf_token\"\r\nContent-Type: text/plain\r\n\r\nnot it\r\n--XyZ\r\ncontent-disposition: form-data; name=\"csrf_token\"; filename=\"x\"\r\n\r\nstill a file\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nTOKEN\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nSECOND\r\n--XyZ--\r\n";
        let k = FormKind::Multipart("XyZ".into());
        assert_eq!(
            find_field(&k, body.as_bytes(), "csrf_token").as_deref(),
            Some(&b"TOKEN"[..])
        );
        assert_eq!(find_field(&k, body.as_bytes(), "other"), None);
        // Truncated and garbage bodies never panic.
        for cut in 0..body.len() {
            let _ = find_field(&k, &body.as_bytes()[..cut], "csrf_token");
        }
        for junk in [
            "--XyZ",
            "--XyZ\r\n",
            "--XyZ\r\n\r\n",
            "--XyZ--",
            "\r\n--XyZ  \r\n\r\n\r\n--XyZ",
        ] {
            let _ = find_field(&k, junk.as_bytes(), "csrf_token");
        }
    }

    #[tokio::test]
    async fn buffering_keeps_bytes_and_enforces_the_limit() {
        let data = read_form(Full::new(Bytes::from_static(b"abc")), 3)
            .await
            .unwrap()
            .data;
        assert_eq!(data, Bytes::from_static(b"abc"));
        assert_eq!(
            read_form(Full::new(Bytes::from_static(b"abcd")), 3)
                .await
                .unwrap_err(),
            CsrfErrorKind::BodyTooLarge
        );
        // Without a length: chunks, counted as they come.
        let chunks = futures_stream(vec![b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(
            read_form(chunks, 3).await.unwrap_err(),
            CsrfErrorKind::BodyTooLarge
        );
        let chunks = futures_stream(vec![b"ab".to_vec(), b"cd".to_vec()]);
        let data = read_form(chunks, 4).await.unwrap().data;
        assert_eq!(data, Bytes::from_static(b"abcd"));
        let rebuilt: RequestBody<Full<Bytes>> = RequestBody::buffered(data, None);
        assert_eq!(rebuilt.size_hint().exact(), Some(4));
        assert_eq!(
            rebuilt.collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"abcd")
        );
    }

    /// A body that fails while it is read (a client that aborted).
    struct Broken;

    impl Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("aborted"))))
        }
    }

    #[tokio::test]
    async fn an_aborted_body_is_unreadable() {
        assert_eq!(
            read_form(Broken, 10).await.unwrap_err(),
            CsrfErrorKind::BodyUnreadable
        );
    }

    /// A body of several chunks with no length: like a chunked upload.
    struct Chunks(std::collections::VecDeque<Bytes>);

    fn futures_stream(parts: Vec<Vec<u8>>) -> Chunks {
        Chunks(parts.into_iter().map(Bytes::from).collect())
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }
}
