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
use portcullis_core::events::Decision;
use tower_service::Service;

use crate::endpoints::answer;
use crate::refresher::Refresher;
use crate::reply::Refused;
use crate::route::{Route, route};

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
        // taken. The handle carries the request's event context.
        let mut refresher = self.refresher.with_context(req.extensions(), req.headers());
        if let Some(template) = route.template() {
            refresher.route_fallback(template);
        }
        let timer = refresher.config().events.start_decision();
        let wrong_method = matches!(route, Route::WrongMethod(_));
        #[cfg(feature = "tracing")]
        let span = {
            let span = tracing::info_span!(
                "portcullis.refresh",
                otel.kind = "internal",
                portcullis.decision = tracing::field::Empty,
                error.type = tracing::field::Empty,
                http.route = tracing::field::Empty,
            );
            if let Some(route) = refresher.event_context().route.as_deref() {
                span.record("http.route", route);
            }
            span
        };
        #[cfg(feature = "tracing")]
        let (span, instrumented) = (span.clone(), span);
        let future = async move {
            let mut reply = answer(&refresher, route, req).await;
            // Success: the endpoint did its work; failure: it refused
            // (reason code); none: a method the endpoint does not serve.
            let (decision, reason) = match reply.extensions_mut().remove::<Refused>() {
                Some(Refused(reason)) => (Decision::Failure, Some(reason)),
                None if wrong_method => (Decision::None, None),
                None => (Decision::Success, None),
            };
            #[cfg(feature = "tracing")]
            {
                span.record("portcullis.decision", decision.as_str());
                if let Some(reason) = reason {
                    span.record("error.type", reason);
                }
            }
            refresher
                .config()
                .events
                .decided(timer, "refresh", decision, reason);
            let (parts, body) = reply.into_parts();
            let bytes = body
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
        };
        #[cfg(feature = "tracing")]
        let future = tracing::Instrument::instrument(future, instrumented);
        ResponseFuture::boxed(Box::pin(future))
    }
}
