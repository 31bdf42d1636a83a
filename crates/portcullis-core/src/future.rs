//! The response future shared by the layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::body::ResponseBody;

/// A boxed future answering with a layer response (a layer's slow path).
pub type BoxResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pub use projection::LayerFuture;
use projection::LayerFutureProj;

mod projection {
    // pin-project-lite generates an undocumented projection type.
    #![allow(missing_docs, unreachable_pub)]
    use http::Response;
    use pin_project_lite::pin_project;

    use super::BoxResponseFuture;
    use crate::body::ResponseBody;

    pin_project! {
        /// The response future of a portcullis layer: the inner service's
        /// future (the fast path, not boxed), an answer the layer already
        /// has (a refusal), or a boxed future for a slow path that awaits
        /// something first (a key refresh, a store call).
        #[project = LayerFutureProj]
        pub enum LayerFuture<F, B, E> {
            /// The inner service's future; its body is wrapped on the way out.
            Inner { #[pin] fut: F },
            /// A response ready now.
            Ready { resp: Option<Response<ResponseBody<B>>> },
            /// A slow path.
            Boxed { fut: BoxResponseFuture<B, E> },
        }
    }
}

impl<F, B, E> LayerFuture<F, B, E> {
    /// The inner service's future.
    pub const fn inner(fut: F) -> Self {
        Self::Inner { fut }
    }

    /// A response ready now.
    pub const fn ready(resp: Response<ResponseBody<B>>) -> Self {
        Self::Ready { resp: Some(resp) }
    }

    /// A slow path.
    pub fn boxed(fut: BoxResponseFuture<B, E>) -> Self {
        Self::Boxed { fut }
    }
}

impl<F, B, E> fmt::Debug for LayerFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Inner { .. } => "Inner",
            Self::Ready { .. } => "Ready",
            Self::Boxed { .. } => "Boxed",
        };
        f.debug_tuple("LayerFuture").field(&kind).finish()
    }
}

impl<F, B, E> Future for LayerFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LayerFutureProj::Inner { fut } => fut
                .poll(cx)
                .map(|r| r.map(|resp| resp.map(ResponseBody::inner))),
            LayerFutureProj::Ready { resp } => Poll::Ready(Ok(resp
                .take()
                .expect("LayerFuture polled after completion"))),
            LayerFutureProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
