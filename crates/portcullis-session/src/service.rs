//! [`SessionManager`]: the service that hands each request a lazy
//! [`Session`] and commits it once the response exists.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::USER_AGENT;
use http::{Request, Response};
use portcullis_core::ResponseBody;
use portcullis_core::events::PendingContext;
use portcullis_core::future::{After, AfterResponse, LayerFuture};
use portcullis_core::rejection::is_grpc;
use tower_service::Service;

use crate::session::Session;
use crate::state::{ClientAddress, Incoming, RequestSession, SessionContext, respond};

/// The service built by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionManager<S> {
    inner: S,
    ctx: Arc<SessionContext>,
}

impl<S: fmt::Debug> fmt::Debug for SessionManager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> SessionManager<S> {
    pub(crate) const fn new(inner: S, ctx: Arc<SessionContext>) -> Self {
        Self { inner, ctx }
    }

    portcullis_core::inner_service_accessors!();
}

/// The response future of [`SessionManager`]: the inner service's future,
/// polled in place, then [`CommitSession`]. Only when the handler left
/// something to write (a changed key, a new id, a logout, an idle
/// extension, an invalid cookie to clear) is the store write boxed; an
/// untouched or merely read session costs no allocation and no lock.
pub type ResponseFuture<F, B, E> = LayerFuture<F, B, E, CommitSession>;

/// The after-response hook of [`SessionManager`]: writes what the request
/// changed to the store and says so in the response (a cookie, a header),
/// or answers 503 when the store cannot be written.
pub struct CommitSession {
    session: Session,
    grpc: bool,
}

impl fmt::Debug for CommitSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitSession")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl<B: Send + 'static> AfterResponse<B> for CommitSession {
    fn after(mut self, response: Response<ResponseBody<B>>) -> After<B> {
        // A handler that never used the session, or only read it with
        // nothing to write back: no store call, no header, no allocation.
        if self.session.nothing_to_commit() {
            return After::Done(response);
        }
        After::Later(Box::pin(async move {
            let request = self.session.request();
            let outcome = request.commit().await;
            respond(request.ctx(), outcome, self.grpc, response)
        }))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionManager<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.ctx.config;
        let headers = req.headers();
        // Read once, and only while something listens: handlers emit
        // later (login, logout) with what the request carried.
        let event_ctx = if config.events.enabled() {
            config.events.pending_context(req.extensions(), headers)
        } else {
            PendingContext::default()
        };
        let client = ClientAddress {
            device: config.client_ip.and_then(|f| f(req.extensions(), headers)),
            event: event_ctx.client(),
        };
        let request = RequestSession::new(
            Arc::clone(&self.ctx),
            Incoming::read(config, headers),
            headers.get(USER_AGENT).cloned(),
            client,
            event_ctx,
        );
        let grpc = is_grpc(headers);
        let session = Session::new(request);
        req.extensions_mut().insert(session.clone());
        // The inner service is ready (poll_ready) and is called now: no
        // clone of it per request.
        LayerFuture::inner_then(self.inner.call(req), CommitSession { session, grpc })
    }
}
