//! `Introspect<S>`: the service an [`IntrospectionLayer`](super::IntrospectionLayer)
//! builds. A cached answer is decided at once; a call to the endpoint is
//! awaited in a boxed future.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use portcullis_core::events::{AuthEvent, AuthEventKind, Decision, DecisionTimer, Events};
use portcullis_core::rejection::is_grpc;
use portcullis_core::{LayerFuture, ProblemJson, RenderRejection, ResponseBody};
use tower_service::Service;

use super::cache::{Fetched, Introspector, Lookup};
use super::{IntrospectionError, IntrospectionErrorKind};
use crate::claims::{Claims, NoCustomClaims, mark};
use crate::transport::{Transport, extract};

/// The source name of this layer's events.
const SOURCE: &str = "introspection";

/// A built layer's configuration.
pub(crate) struct Config {
    pub(crate) introspector: Arc<Introspector>,
    pub(crate) transport: Transport,
    pub(crate) max_token_len: usize,
    pub(crate) events: Events,
    pub(crate) realm: Option<String>,
    pub(crate) retry_after: Duration,
    pub(crate) endpoint: String,
    pub(crate) client_id: String,
}

impl Config {
    /// Records the decision and, for a refusal, emits its events and
    /// builds the response.
    fn refuse<B, R: RenderRejection>(
        &self,
        e: IntrospectionError,
        parts: (&http::Extensions, &http::HeaderMap),
        timer: Option<DecisionTimer>,
        renderer: &R,
    ) -> Response<ResponseBody<B>> {
        let events = &self.events;
        events.decided(timer, SOURCE, Decision::Failure, Some(e.reason()));
        portcullis_core::event!(debug, reason = e.reason(), "access token refused");
        if events.enabled() {
            let ctx = events.context(parts.0, parts.1);
            let reason = e.reason();
            events.emit(|| {
                AuthEvent::new(SOURCE, AuthEventKind::JwtRefused { reason }).context(&ctx)
            });
            let store = match e.kind() {
                IntrospectionErrorKind::ProviderUnavailable => {
                    Some(("introspection", "introspect"))
                }
                IntrospectionErrorKind::RevocationUnavailable => Some(("revocation", "check")),
                _ => None,
            };
            if let Some((store, operation)) = store {
                events.emit(|| {
                    AuthEvent::new(SOURCE, AuthEventKind::StoreUnavailable { store, operation })
                        .context(&ctx)
                });
            }
        }
        e.rejection(self.realm.as_deref(), self.retry_after)
            .into_response(renderer, is_grpc(parts.1))
    }

    /// The token of a request, checked for size; or why there is none.
    fn token<'a>(&self, headers: &'a http::HeaderMap) -> Result<&'a str, IntrospectionError> {
        match extract(&self.transport, headers) {
            Ok(Some(t)) if t.len() > self.max_token_len => {
                Err(IntrospectionError::new(IntrospectionErrorKind::TooLarge))
            }
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(IntrospectionError::new(IntrospectionErrorKind::Missing)),
            Err(_) => Err(IntrospectionError::new(
                IntrospectionErrorKind::InvalidRequest,
            )),
        }
    }
}

/// The service built by [`IntrospectionLayer`](super::IntrospectionLayer).
pub struct Introspect<S, R = ProblemJson> {
    inner: S,
    config: Arc<Config>,
    renderer: R,
}

impl<S, R> Introspect<S, R> {
    pub(crate) const fn new(inner: S, config: Arc<Config>, renderer: R) -> Self {
        Self {
            inner,
            config,
            renderer,
        }
    }

    portcullis_core::inner_service_accessors!();
}

impl<S: Clone, R: Clone> Clone for Introspect<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            renderer: self.renderer.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for Introspect<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspect")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Passes a request on with its claims.
fn admitted<B>(
    events: &Events,
    timer: Option<DecisionTimer>,
    req: &mut Request<B>,
    claims: Claims<NoCustomClaims>,
) {
    events.decided(timer, SOURCE, Decision::Success, None);
    mark(req.extensions_mut(), Some(claims));
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Introspect<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: RenderRejection,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let timer = config.events.start_decision();
        let lookup = config
            .token(req.headers())
            .and_then(|token| config.introspector.lookup(token));
        let outcome = match lookup {
            Ok(Lookup::Now(outcome)) => outcome,
            Ok(Lookup::Wait(rx)) => return self.after_call(req, rx, timer),
            Err(e) => {
                let parts = (req.extensions(), req.headers());
                return LayerFuture::ready(config.refuse(e, parts, timer, &self.renderer));
            }
        };
        match config.introspector.admit(&outcome) {
            Ok(claims) => {
                admitted(&config.events, timer, &mut req, claims);
                LayerFuture::inner(self.inner.call(req))
            }
            Err(e) => {
                let parts = (req.extensions(), req.headers());
                LayerFuture::ready(config.refuse(e, parts, timer, &self.renderer))
            }
        }
    }
}

impl<S, R> Introspect<S, R>
where
    R: RenderRejection,
{
    /// The slow path: awaits the endpoint's answer (shared with every
    /// request for the same token), then decides.
    fn after_call<ReqBody, ResBody>(
        &mut self,
        mut req: Request<ReqBody>,
        mut rx: tokio::sync::watch::Receiver<Option<Fetched>>,
        timer: Option<DecisionTimer>,
    ) -> LayerFuture<S::Future, ResBody, S::Error>
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
        LayerFuture::boxed(Box::pin(async move {
            let fetched = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            let decided = match fetched {
                Some(Fetched::Done(outcome)) => config.introspector.admit(&outcome),
                Some(Fetched::Failed(reason)) => Err(IntrospectionError::provider(reason)),
                // The call's task went away without an answer (runtime
                // shutting down).
                None => Err(IntrospectionError::provider("provider-gone")),
            };
            match decided {
                Ok(claims) => {
                    admitted(&config.events, timer, &mut req, claims);
                    inner.call(req).await.map(|r| r.map(ResponseBody::inner))
                }
                Err(e) => {
                    let parts = (req.extensions(), req.headers());
                    Ok(config.refuse(e, parts, timer, &renderer))
                }
            }
        }))
    }
}
