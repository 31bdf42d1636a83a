//! `Refresh<S>`: the service [`RefreshLayer`](crate::RefreshLayer) builds.
//! `call` routes: a request for an endpoint is answered by its function,
//! every other request goes to the inner service untouched.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt as _;
use portcullis_core::ResponseBody;
use tower_service::Service;

use crate::endpoints::answer;
use crate::refresher::Refresher;
use crate::route::route;

/// The response future of [`Refresh`]: the inner future for other routes,
/// a boxed one for the endpoints (they await the store).
pub type ResponseFuture<F, B, E> = portcullis_core::LayerFuture<F, B, E>;

/// Serves the refresh, logout and device endpoints in front of `S`; built
/// by [`RefreshLayer`](crate::RefreshLayer).
#[derive(Clone)]
pub struct Refresh<S> {
    inner: S,
    refresher: Refresher,
}

impl<S> Refresh<S> {
    pub(crate) const fn new(inner: S, refresher: Refresher) -> Self {
        Self { inner, refresher }
    }

    portcullis_core::inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Refresh<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Refresh<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let prefix = &self.refresher.config().prefix;
        let Some(route) = route(prefix, req.method(), req.uri().path()) else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        // The endpoints never call the inner service: no clone of it is
        // taken.
        let refresher = self.refresher.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let reply = answer(&refresher, route, req).await;
            let (parts, body) = reply.into_parts();
            let bytes = body
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
        }))
    }
}
