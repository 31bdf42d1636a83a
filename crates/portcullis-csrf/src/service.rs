//! `Csrf<S>`, the service [`CsrfLayer`](crate::CsrfLayer) builds: it asks
//! the [`Policy`] for a decision and hands the request on, refuses it, or
//! verifies its token first; and [`AddResponseHeaders`], the hook that
//! finishes every response it hands back.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderValue, Request, Response};
use http_body::Body;
use portcullis_core::events::{
    AuthEvent, AuthEventKind, Decision as Verdict, DecisionTimer, EventContext, Events,
};
use portcullis_core::future::{After, AfterResponse, LayerFuture};
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, RenderRejection, ResponseBody};
use tower_service::Service;

use crate::body::{FormKind, RequestBody, find_field, read_form};
use crate::error::{CsrfError, CsrfErrorKind};
use crate::handle::CsrfHandle;
use crate::obs::{LayerSpan, SOURCE};
use crate::policy::{Decision, Policy, Presented};

/// The service built by [`CsrfLayer`](crate::CsrfLayer): CSRF protection
/// in front of `S`.
#[derive(Clone)]
pub struct Csrf<S, R = ProblemJson> {
    inner: S,
    policy: Arc<Policy>,
    renderer: R,
}

impl<S: fmt::Debug, R> fmt::Debug for Csrf<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Csrf")
            .field("inner", &self.inner)
            .field("config", &self.policy)
            .finish()
    }
}

impl<S, R> Csrf<S, R> {
    pub(crate) const fn new(inner: S, policy: Arc<Policy>, renderer: R) -> Self {
        Self {
            inner,
            policy,
            renderer,
        }
    }

    portcullis_core::inner_service_accessors!();
}

/// The response future of [`Csrf`]: core's [`LayerFuture`] with the
/// [`AddResponseHeaders`] hook. It polls the inner future in place when the
/// request needs no token check, answers a refusal at once, and boxes only
/// when a token must be verified (reading the session or the body is
/// asynchronous).
pub type ResponseFuture<F, B, E> = LayerFuture<F, B, E, AddResponseHeaders>;

const VARY_VALUE: HeaderValue = HeaderValue::from_static("Origin, Sec-Fetch-Site");

/// What [`Csrf`] adds to the inner service's response: `Vary: Origin,
/// Sec-Fetch-Site` when the decision read those headers, and, when a token
/// was rendered for the request, the new pre-session cookie (signed mode)
/// and `Cache-Control: no-store` (unless the handler set its own).
pub struct AddResponseHeaders {
    handle: Option<CsrfHandle>,
    vary: bool,
}

impl fmt::Debug for AddResponseHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddResponseHeaders")
            .field("vary", &self.vary)
            .finish_non_exhaustive()
    }
}

impl AddResponseHeaders {
    fn apply<B>(self, mut response: Response<B>) -> Response<B> {
        let headers = response.headers_mut();
        if self.vary {
            headers.append(VARY, VARY_VALUE);
        }
        if let Some(handle) = self.handle.filter(CsrfHandle::rendered) {
            if let Some(cookie) = handle.new_pre_session_cookie() {
                headers.append(SET_COOKIE, cookie);
            }
            // A page carrying a token is for this visitor only.
            if !headers.contains_key(CACHE_CONTROL) {
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        response
    }
}

impl<B> AfterResponse<B> for AddResponseHeaders {
    fn after(self, response: Response<ResponseBody<B>>) -> After<B> {
        After::Done(self.apply(response))
    }
}

/// What the layer reports about one request: the event context (read when
/// the request arrives, only while something listens), the sampled
/// decision timer and the `portcullis.csrf` span.
struct Report {
    events: Events,
    ctx: EventContext,
    timer: Option<DecisionTimer>,
    span: LayerSpan,
}

impl Report {
    fn new<B>(events: &Events, req: &Request<B>) -> Self {
        let timer = events.start_decision();
        let ctx = if events.enabled() {
            events.context(req.extensions(), req.headers())
        } else {
            EventContext::default()
        };
        let span = LayerSpan::new(ctx.route.as_deref());
        Self {
            events: events.clone(),
            ctx,
            timer,
            span,
        }
    }

    /// Records the decision (recorder, span).
    fn decided(&mut self, decision: Verdict, reason: Option<&'static str>) {
        self.events
            .decided(self.timer.take(), SOURCE, decision, reason);
        self.span.decided(decision, reason);
    }

    /// Records a refusal: the decision, and a `CsrfRefused` event unless
    /// the session store was out (the session layer reports the outage as
    /// `store_unavailable`; nothing was refused as a forgery).
    fn refused(&mut self, kind: CsrfErrorKind) {
        let reason = kind.as_str();
        self.decided(Verdict::Failure, Some(reason));
        if kind == CsrfErrorKind::SessionUnavailable {
            return;
        }
        let ctx = &self.ctx;
        self.events
            .emit(|| AuthEvent::new(SOURCE, AuthEventKind::CsrfRefused { reason }).context(ctx));
    }
}

/// The refusal of a request: the renderer's response, `Vary` when the
/// decision read the origin headers, the [`CsrfError`] in the extensions,
/// a debug event with the reason and the route template (never the path:
/// paths carry ids and sometimes tokens), and a `CsrfRefused` event
/// (none for an unavailable session store).
fn refuse<B, R: RenderRejection>(
    renderer: &R,
    error: CsrfError,
    vary: bool,
    grpc: bool,
    report: &mut Report,
) -> Response<ResponseBody<B>> {
    portcullis_core::event!(
        debug,
        reason = error.kind().as_str(),
        route = report.ctx.route.as_deref(),
        "request refused by CSRF protection"
    );
    report.refused(error.kind());
    let mut response = error.rejection().into_response(renderer, grpc);
    if vary {
        response.headers_mut().append(VARY, VARY_VALUE);
    }
    response.extensions_mut().insert(error);
    response
}

/// Reads the form body of `req` under the limit and verifies the token
/// field; on success, the request to hand on with its body replayed byte
/// for byte.
async fn verify_form<B>(
    req: Request<B>,
    kind: FormKind,
    handle: &CsrfHandle,
    policy: &Policy,
) -> Result<Request<RequestBody<B>>, CsrfError>
where
    B: Body<Data = Bytes>,
{
    let (parts, body) = req.into_parts();
    let form = read_form(body, policy.max_body)
        .await
        .map_err(CsrfError::new)?;
    let token = find_field(&kind, &form.data, &policy.field_name)
        .ok_or(CsrfError::new(CsrfErrorKind::Missing))?;
    handle.verify(&token).await?;
    Ok(Request::from_parts(
        parts,
        RequestBody::buffered(form.data, form.trailers),
    ))
}

/// The slow path: verify the token, then call `inner` (or refuse).
async fn verify_then_call<S, R, ReqBody, ResBody>(
    mut inner: S,
    req: Request<ReqBody>,
    presented: Presented,
    handle: CsrfHandle,
    policy: Arc<Policy>,
    renderer: R,
    mut report: Report,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    R: RenderRejection,
    ReqBody: Body<Data = Bytes>,
{
    let grpc = is_grpc(req.headers());
    // A header token is checked without moving the request through a
    // nested future; a form token needs the body read first.
    let verified = match presented {
        Presented::Header(value) => handle
            .verify(value.as_bytes())
            .await
            .map(|()| req.map(RequestBody::inner)),
        Presented::Form(kind) => verify_form(req, kind, &handle, &policy).await,
    };
    match verified {
        Err(error) => Ok(refuse(&renderer, error, true, grpc, &mut report)),
        Ok(req) => {
            report.decided(Verdict::Success, None);
            drop(report);
            let response = inner.call(req).await?;
            let finish = AddResponseHeaders {
                handle: Some(handle),
                vary: true,
            };
            Ok(finish.apply(response.map(ResponseBody::inner)))
        }
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Csrf<S, R>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: RenderRejection,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let mut report = Report::new(&self.policy.events, &req);
        #[cfg(feature = "tracing")]
        let span = report.span.span().clone();
        #[cfg(feature = "tracing")]
        let _entered = span.enter();
        let decision = self.policy.decide(req.method(), req.uri(), req.headers());
        let handle = self.policy.tokens().then(|| {
            let h = CsrfHandle::new(Arc::clone(&self.policy), &req);
            req.extensions_mut().insert(h.clone());
            h
        });
        match (decision, handle) {
            (Decision::Pass { vary }, handle) => {
                // `vary`: the origin check ran, and passed.
                let verdict = if vary {
                    Verdict::Success
                } else {
                    Verdict::None
                };
                report.decided(verdict, None);
                drop(report);
                LayerFuture::inner_then(
                    self.inner.call(req.map(RequestBody::inner)),
                    AddResponseHeaders { handle, vary },
                )
            }
            (Decision::Verify(presented), Some(handle)) => {
                let inner = self.take_ready_inner();
                let policy = Arc::clone(&self.policy);
                let renderer = self.renderer.clone();
                let verify =
                    verify_then_call(inner, req, presented, handle, policy, renderer, report);
                #[cfg(feature = "tracing")]
                let verify = tracing::Instrument::instrument(verify, span.clone());
                LayerFuture::boxed(Box::pin(verify))
            }
            (
                Decision::Refuse {
                    kind,
                    protection,
                    vary,
                },
                _,
            ) => self.refuse_now(
                &req,
                CsrfError::with_protection(kind, protection),
                vary,
                &mut report,
            ),
            // A token is verified only when tokens are on, and then every
            // request has a handle.
            (Decision::Verify(_), None) => self.refuse_now(
                &req,
                CsrfError::new(CsrfErrorKind::LayerMissing),
                true,
                &mut report,
            ),
        }
    }
}

impl<S: Clone, R: RenderRejection> Csrf<S, R> {
    /// The ready inner service, for a future to own; a fresh clone takes
    /// its place (see tower's "Be careful when cloning inner services").
    fn take_ready_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    /// A refusal answered at once, without calling the inner service.
    fn refuse_now<ReqBody, F, B, E>(
        &self,
        req: &Request<ReqBody>,
        error: CsrfError,
        vary: bool,
        report: &mut Report,
    ) -> ResponseFuture<F, B, E> {
        let grpc = is_grpc(req.headers());
        LayerFuture::ready(refuse(&self.renderer, error, vary, grpc, report))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use tower_layer::Layer as _;

    use crate::body::RequestBody;
    use crate::{CsrfConfig, CsrfError, CsrfErrorKind, CsrfLayer};

    /// A second poll of a refusal answers a 500 (core's rule), never a
    /// panic.
    #[test]
    fn a_refusal_polled_twice_answers_500() {
        use std::future::Future as _;
        use std::pin::pin;
        use std::task::{Context, Waker};
        use tower_service::Service as _;

        let layer = CsrfLayer::new(CsrfConfig::origin_check_only()).unwrap();
        let inner = tower::service_fn(|_: http::Request<RequestBody<String>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
        let mut svc = layer.layer(inner);
        let req = http::Request::post("/")
            .header("sec-fetch-site", "cross-site")
            .body(String::new())
            .unwrap();
        let mut fut = pin!(svc.call(req));
        let mut cx = Context::from_waker(Waker::noop());
        let std::task::Poll::Ready(Ok(first)) = fut.as_mut().poll(&mut cx) else {
            panic!("not ready");
        };
        assert_eq!(first.status(), 403);
        assert_eq!(
            first.extensions().get::<CsrfError>().map(CsrfError::kind),
            Some(CsrfErrorKind::CrossOrigin)
        );
        assert_eq!(
            first.headers().get("vary"),
            Some(&HeaderValue::from_static("Origin, Sec-Fetch-Site"))
        );
        let std::task::Poll::Ready(Ok(second)) = fut.as_mut().poll(&mut cx) else {
            panic!("second poll not ready");
        };
        assert_eq!(second.status(), 500);
    }
}
