//! The response body of every portcullis layer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use projection::ResponseBody;
use projection::ResponseBodyProj;

mod projection {
    // pin-project-lite generates an undocumented projection type.
    #![allow(missing_docs, unreachable_pub)]
    use bytes::Bytes;
    use pin_project_lite::pin_project;

    pin_project! {
        /// Either the inner service's body, or a body a layer wrote itself (a
        /// rejection). Layers return `Response<ResponseBody<B>>` so that a
        /// refusal never needs boxing.
        #[project = ResponseBodyProj]
        #[derive(Debug)]
        pub enum ResponseBody<B> {
            /// The inner service's body, untouched.
            Inner {
                #[pin]
                body: B,
            },
            /// A complete body written by the layer.
            Full {
                data: Option<Bytes>,
            },
        }
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub const fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    /// A complete body (empty bytes give an empty body).
    pub fn full(data: Bytes) -> Self {
        Self::Full {
            data: if data.is_empty() { None } else { Some(data) },
        }
    }
}

impl<B> Body for ResponseBody<B>
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
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn both_variants_yield_their_bytes() {
        let full: ResponseBody<Full<Bytes>> = ResponseBody::full(Bytes::from_static(b"abc"));
        assert_eq!(full.size_hint().exact(), Some(3));
        assert_eq!(
            full.collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"abc")
        );
        let empty: ResponseBody<Full<Bytes>> = ResponseBody::full(Bytes::new());
        assert!(empty.is_end_stream());
        let inner = ResponseBody::inner(Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(
            inner.collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"xyz")
        );
    }
}
