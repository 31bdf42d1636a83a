//! The response future every layer returns, with an "after the response"
//! hook.
//!
//! A layer's `Service::call` decides at once
//! whether to pass the request on (the inner future, polled in place), to
//! answer now (a refusal), or to await something first (a boxed slow path:
//! a key refresh, a store call). A layer that must act on the inner
//! service's response (write a session, add a cookie) gives the future an
//! [`AfterResponse`] hook: it runs once, with the response, and either
//! finishes it at once or returns a boxed future (a store write).
//!
//! Polled again after it completed, the future answers a 500 problem
//! response instead of panicking: the same rule for every layer.
//!
//! ```
//! use http::Response;
//! use portcullis_core::future::{After, AfterResponse, LayerFuture};
//! use portcullis_core::ResponseBody;
//!
//! /// Adds a header to every response.
//! struct Stamp;
//!
//! impl<B> AfterResponse<B> for Stamp {
//!     fn after(self, mut response: Response<ResponseBody<B>>) -> After<B> {
//!         response.headers_mut().insert("x-stamped", "1".parse().unwrap());
//!         After::Done(response)
//!     }
//! }
//!
//! # tokio_test_block_on(async {
//! let inner = async { Ok::<_, std::convert::Infallible>(Response::new(String::from("hi"))) };
//! let response = LayerFuture::inner_then(inner, Stamp).await.unwrap();
//! assert_eq!(response.headers()["x-stamped"], "1");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::body::ResponseBody;
use crate::rejection::{ProblemJson, Rejection};

/// A boxed future answering with a layer response (a layer's slow path).
pub type BoxResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

/// A boxed future finishing a response after the inner service answered
/// (a store write); it cannot fail: a failure becomes the response.
pub type BoxAfterFuture<B> = Pin<Box<dyn Future<Output = Response<ResponseBody<B>>> + Send>>;

/// What a layer does with the inner service's response, once.
pub trait AfterResponse<B> {
    /// Finishes `response` now, or returns the future that will.
    fn after(self, response: Response<ResponseBody<B>>) -> After<B>;
}

/// The answer of an [`AfterResponse`] hook.
pub enum After<B> {
    /// The response is final.
    Done(Response<ResponseBody<B>>),
    /// The response is final once this future completes.
    Later(BoxAfterFuture<B>),
}

impl<B> fmt::Debug for After<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Done(_) => "After::Done",
            Self::Later(_) => "After::Later",
        })
    }
}

/// The hook of a layer with nothing to do after the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl<B> AfterResponse<B> for NoHook {
    fn after(self, response: Response<ResponseBody<B>>) -> After<B> {
        After::Done(response)
    }
}

pub use projection::LayerFuture;
use projection::{LayerFutureProj, LayerFutureReplace};

mod projection {
    // pin-project-lite generates undocumented projection types.
    #![allow(missing_docs, unreachable_pub)]
    use http::Response;
    use pin_project_lite::pin_project;

    use super::{BoxAfterFuture, BoxResponseFuture, NoHook};
    use crate::body::ResponseBody;

    pin_project! {
        /// The response future of a portcullis layer: the inner service's
        /// future (the fast path, polled in place) followed by the layer's
        /// hook, an answer the layer already has (a refusal), or a boxed
        /// future for a slow path that awaits something first (a key
        /// refresh, a store call).
        #[project = LayerFutureProj]
        #[project_replace = LayerFutureReplace]
        pub enum LayerFuture<F, B, E, H = NoHook> {
            /// The inner service's future; then the hook.
            Inner { #[pin] fut: F, hook: H },
            /// The hook's own future, after the inner response.
            After { fut: BoxAfterFuture<B> },
            /// A response ready now.
            Ready { resp: Response<ResponseBody<B>> },
            /// A slow path.
            Boxed { fut: BoxResponseFuture<B, E> },
            /// Completed.
            Done,
        }
    }
}

impl<F, B, E> LayerFuture<F, B, E, NoHook> {
    /// The inner service's future, with nothing to do after it.
    pub const fn inner(fut: F) -> Self {
        Self::Inner { fut, hook: NoHook }
    }
}

impl<F, B, E, H> LayerFuture<F, B, E, H> {
    /// The inner service's future, then `hook` with its response.
    pub const fn inner_then(fut: F, hook: H) -> Self {
        Self::Inner { fut, hook }
    }

    /// A response ready now.
    pub const fn ready(resp: Response<ResponseBody<B>>) -> Self {
        Self::Ready { resp }
    }

    /// A slow path.
    pub fn boxed(fut: BoxResponseFuture<B, E>) -> Self {
        Self::Boxed { fut }
    }
}

impl<F, B, E, H> fmt::Debug for LayerFuture<F, B, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Inner { .. } => "Inner",
            Self::After { .. } => "After",
            Self::Ready { .. } => "Ready",
            Self::Boxed { .. } => "Boxed",
            Self::Done => "Done",
        };
        f.debug_tuple("LayerFuture").field(&kind).finish()
    }
}

/// The answer to a poll after completion: a 500, never a panic.
fn polled_after_completion<B>() -> Response<ResponseBody<B>> {
    Rejection::internal("response future polled after completion")
        .into_response(&ProblemJson, false)
}

impl<F, B, E, H> Future for LayerFuture<F, B, E, H>
where
    F: Future<Output = Result<Response<B>, E>>,
    H: AfterResponse<B>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                LayerFutureProj::Inner { fut, .. } => {
                    let result = std::task::ready!(fut.poll(cx));
                    let replaced = self.as_mut().project_replace(Self::Done);
                    let response = match result {
                        Ok(r) => r.map(ResponseBody::inner),
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    let LayerFutureReplace::Inner { hook, .. } = replaced else {
                        return Poll::Ready(Ok(response));
                    };
                    match hook.after(response) {
                        After::Done(r) => return Poll::Ready(Ok(r)),
                        After::Later(fut) => self.set(Self::After { fut }),
                    }
                }
                LayerFutureProj::After { fut } => {
                    let response = std::task::ready!(fut.as_mut().poll(cx));
                    self.set(Self::Done);
                    return Poll::Ready(Ok(response));
                }
                LayerFutureProj::Ready { .. } => {
                    return Poll::Ready(Ok(match self.as_mut().project_replace(Self::Done) {
                        LayerFutureReplace::Ready { resp } => resp,
                        _ => polled_after_completion(),
                    }));
                }
                LayerFutureProj::Boxed { fut } => {
                    let result = std::task::ready!(fut.as_mut().poll(cx));
                    self.set(Self::Done);
                    return Poll::Ready(result);
                }
                LayerFutureProj::Done => return Poll::Ready(Ok(polled_after_completion())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;
    use std::convert::Infallible;
    use std::pin::pin;
    use std::task::Waker;

    fn poll_now<T>(f: Pin<&mut impl Future<Output = T>>) -> Poll<T> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    struct Later;

    impl<B: Send + 'static> AfterResponse<B> for Later {
        fn after(self, mut response: Response<ResponseBody<B>>) -> After<B> {
            After::Later(Box::pin(async move {
                response
                    .headers_mut()
                    .insert("x-later", "1".parse().unwrap());
                response
            }))
        }
    }

    fn ok() -> std::future::Ready<Result<Response<Bytes>, Infallible>> {
        std::future::ready(Ok(Response::new(Bytes::from_static(b"inner"))))
    }

    #[test]
    fn every_variant_answers_once_then_a_500() {
        let futures: Vec<(&str, LayerFuture<_, Bytes, Infallible, Later>)> = vec![
            ("inner", LayerFuture::inner_then(ok(), Later)),
            (
                "ready",
                LayerFuture::ready(Response::new(ResponseBody::full(Bytes::new()))),
            ),
            (
                "boxed",
                LayerFuture::boxed(Box::pin(async {
                    Ok(Response::new(ResponseBody::full(Bytes::new())))
                })),
            ),
        ];
        for (name, f) in futures {
            let mut f = pin!(f);
            let Poll::Ready(Ok(first)) = poll_now(f.as_mut()) else {
                panic!("{name}: not ready");
            };
            assert_eq!(first.status(), StatusCode::OK, "{name}");
            if name == "inner" {
                assert_eq!(first.headers()["x-later"], "1");
            }
            let Poll::Ready(Ok(second)) = poll_now(f.as_mut()) else {
                panic!("{name}: second poll not ready");
            };
            assert_eq!(second.status(), StatusCode::INTERNAL_SERVER_ERROR, "{name}");
        }
    }

    #[test]
    fn an_inner_error_skips_the_hook() {
        struct Boom;
        impl<B> AfterResponse<B> for Boom {
            fn after(self, _: Response<ResponseBody<B>>) -> After<B> {
                panic!("hook ran after an error")
            }
        }
        let inner = std::future::ready(Err::<Response<Bytes>, _>("down"));
        let mut f = pin!(LayerFuture::<_, Bytes, _, _>::inner_then(inner, Boom));
        assert!(matches!(poll_now(f.as_mut()), Poll::Ready(Err("down"))));
    }
}
