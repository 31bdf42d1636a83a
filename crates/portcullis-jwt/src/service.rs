//! `Jwt<S>`: the service a [`JwtLayer`](crate::JwtLayer) builds. Its `call`
//! asks the [`Verifier`] and passes the request on, refuses it, or (rarely)
//! awaits a key refresh first.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, RenderRejection, ResponseBody};
use serde::de::DeserializeOwned;
use tower_service::Service;

use crate::claims::{NoCustomClaims, mark};
use crate::error::JwtError;
use crate::events::Observation;
use crate::verifier::{Decision, Refresh, Verifier};

/// A built layer's configuration: the verifier and how refusals look.
pub(crate) struct Config<T> {
    pub(crate) verifier: Verifier<T>,
    pub(crate) events: portcullis_core::events::Events,
    pub(crate) realm: Option<String>,
    pub(crate) retry_after: Duration,
}

impl<T> Config<T> {
    /// The refusal response for `e`, logged.
    fn refuse<B, R: RenderRejection>(
        &self,
        e: &JwtError,
        renderer: &R,
        grpc: bool,
    ) -> Response<ResponseBody<B>> {
        portcullis_core::event!(debug, reason = e.reason(), "access token refused");
        e.rejection(self.realm.as_deref(), self.retry_after)
            .into_response(renderer, grpc)
    }
}

/// The response future of [`Jwt`] (and of
/// [`RequireClaims`](crate::RequireClaims)): the inner future, a refusal,
/// or the boxed wait for a JWKS refresh.
pub type ResponseFuture<F, B, E> = portcullis_core::LayerFuture<F, B, E>;

/// The service built by [`JwtLayer`](crate::JwtLayer).
pub struct Jwt<S, T = NoCustomClaims, R = ProblemJson> {
    inner: S,
    config: Arc<Config<T>>,
    renderer: R,
}

impl<S, T, R> Jwt<S, T, R> {
    pub(crate) const fn new(inner: S, config: Arc<Config<T>>, renderer: R) -> Self {
        Self {
            inner,
            config,
            renderer,
        }
    }

    portcullis_core::inner_service_accessors!();
}

impl<S: Clone, T, R: Clone> Clone for Jwt<S, T, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            renderer: self.renderer.clone(),
        }
    }
}

impl<S: fmt::Debug, T, R> fmt::Debug for Jwt<S, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T, R, ReqBody, ResBody> Service<Request<ReqBody>> for Jwt<S, T, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    T: DeserializeOwned + Send + Sync + 'static,
    R: RenderRejection,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let events = &self.config.events;
        let observation = Observation::start(events, (req.extensions(), req.headers()), true);
        #[cfg(feature = "tracing")]
        let entered = observation.span.clone().entered();
        let decision = self.config.verifier.decide_request(req.headers());
        let future = match decision {
            Decision::Pass(claims) => {
                let parts = (req.extensions(), req.headers());
                observation.decided(events, parts, "jwt", Ok(claims.is_some()), None);
                mark(req.extensions_mut(), claims);
                ResponseFuture::inner(self.inner.call(req))
            }
            Decision::Reject(e) => {
                let parts = (req.extensions(), req.headers());
                observation.decided(events, parts, "jwt", Err(&e), None);
                let grpc = is_grpc(req.headers());
                ResponseFuture::ready(self.config.refuse(&e, &self.renderer, grpc))
            }
            Decision::Wait(refresh, token) => self.after_refresh(req, refresh, token, observation),
        };
        #[cfg(feature = "tracing")]
        drop(entered);
        future
    }
}

impl<S, T, R> Jwt<S, T, R>
where
    T: DeserializeOwned + Send + Sync + 'static,
    R: RenderRejection,
{
    /// The slow path: awaits the key source's refresh, then decides again.
    fn after_refresh<ReqBody, ResBody>(
        &mut self,
        mut req: Request<ReqBody>,
        refresh: crate::keys::RefreshFuture,
        token: String,
        observation: Observation,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Send + 'static,
    {
        // The ready service moves into the future and a fresh clone takes
        // its place; see tower's "Be careful when cloning inner services".
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let renderer = self.renderer.clone();
        ResponseFuture::boxed(Box::pin(async move {
            refresh.await;
            #[cfg(feature = "tracing")]
            let entered = observation.span.clone().entered();
            let events = &config.events;
            let outcome = match config.verifier.decide(&token, Refresh::Done) {
                Decision::Pass(claims) => Ok(claims),
                Decision::Reject(e) => Err(e),
                Decision::Wait(..) => Err(JwtError::new(crate::error::JwtErrorKind::UnknownKey)),
            };
            let parts = (req.extensions(), req.headers());
            let decided = outcome.as_ref().map(Option::is_some);
            observation.decided(events, parts, "jwt", decided, None);
            #[cfg(feature = "tracing")]
            drop(entered);
            match outcome {
                Ok(claims) => {
                    mark(req.extensions_mut(), claims);
                    inner.call(req).await.map(|r| r.map(ResponseBody::inner))
                }
                Err(e) => Ok(config.refuse(&e, &renderer, is_grpc(req.headers()))),
            }
        }))
    }
}
