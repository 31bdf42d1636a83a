//! [`RequestBody`]: what the inner service receives, the body intact.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

pub use projection::RequestBody;
use projection::RequestBodyProj;

mod projection {
    // pin-project-lite generates an undocumented projection type.
    #![allow(missing_docs, unreachable_pub)]
    use bytes::Bytes;
    use http::HeaderMap;
    use pin_project_lite::pin_project;

    pin_project! {
        /// The request body the inner service receives: the original body
        /// when the throttle read none of it, or the bytes (and trailers)
        /// it read to find the account, unchanged and in order.
        #[project = RequestBodyProj]
        #[derive(Debug)]
        pub enum RequestBody<B> {
            /// The original body, untouched.
            Inner {
                #[pin]
                body: B,
            },
            /// A body the throttle read in full.
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
