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

use crate::claims::{Claims, NoCustomClaims, mark};
use crate::dpop::{DPOP_NONCE, DpopPolicy, DpopVerifier};
use crate::error::{ChallengeMark, Challenges, JwtError, JwtErrorKind};
use crate::events::Observation;
use crate::transport::{extract, extract_dpop};
use crate::verifier::{Decision, Refresh, Verifier};

/// A built layer's configuration: the verifier and how refusals look.
pub(crate) struct Config<T> {
    pub(crate) verifier: Verifier<T>,
    pub(crate) events: portcullis_core::events::Events,
    pub(crate) challenges: Arc<Challenges>,
    /// Whether the challenges differ from plain `Bearer` ones (then the
    /// layer leaves a [`ChallengeMark`] for the route guards).
    pub(crate) mark_challenges: bool,
    pub(crate) retry_after: Duration,
    /// DPoP proofs, when the policy accepts the `DPoP` scheme.
    pub(crate) dpop: Option<DpopVerifier>,
    pub(crate) policy: DpopPolicy,
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
        e.rejection_with(&self.challenges, self.retry_after)
            .into_response(renderer, grpc)
    }

    /// Leaves the challenge mark for the route guards, when needed.
    fn mark_challenges(&self, extensions: &mut http::Extensions) {
        if self.mark_challenges {
            extensions.insert(ChallengeMark(Arc::clone(&self.challenges)));
        }
    }
}

/// The rules for a token that came without the `DPoP` scheme: a token
/// bound to a key (any `cnf`) is refused (whatever the policy), and under
/// [`DpopPolicy::Required`] every token is.
fn bearer_rules<T>(policy: DpopPolicy, claims: Option<&Claims<T>>) -> Result<(), JwtError> {
    match claims {
        // Any confirmation method (`jkt`, an mTLS certificate's `x5t#S256`,
        // ...): the token is sender-constrained, never a bearer token.
        Some(c) if c.registered().cnf.is_some() => {
            Err(JwtError::new(JwtErrorKind::DpopBoundAsBearer))
        }
        Some(_) if policy == DpopPolicy::Required => Err(JwtError::new(JwtErrorKind::DpopRequired)),
        _ => Ok(()),
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
        let decision = if self.config.dpop.is_some() {
            match extract_dpop(req.headers()) {
                Ok(Some(token)) => {
                    let token = token.to_owned();
                    let future = self.dpop_call(req, token, observation);
                    #[cfg(feature = "tracing")]
                    drop(entered);
                    return future;
                }
                Ok(None) if self.config.policy == DpopPolicy::Required => {
                    // A bearer token is refused unread.
                    match extract(&self.config.verifier.transport, req.headers()) {
                        Ok(Some(_)) => Decision::Reject(JwtError::new(JwtErrorKind::DpopRequired)),
                        _ => self.config.verifier.decide_request(req.headers()),
                    }
                }
                Ok(None) => self.config.verifier.decide_request(req.headers()),
                Err(e) => Decision::Reject(e),
            }
        } else {
            self.config.verifier.decide_request(req.headers())
        };
        let decision = match decision {
            Decision::Pass(claims) => match bearer_rules(self.config.policy, claims.as_ref()) {
                Ok(()) => Decision::Pass(claims),
                Err(e) => Decision::Reject(e),
            },
            other => other,
        };
        let future = match decision {
            Decision::Pass(claims) => {
                let parts = (req.extensions(), req.headers());
                observation.decided(events, parts, "jwt", Ok(claims.is_some()), None);
                self.config.mark_challenges(req.extensions_mut());
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
                Decision::Pass(claims) => {
                    bearer_rules(config.policy, claims.as_ref()).map(|()| claims)
                }
                Decision::Reject(e) => Err(e),
                Decision::Wait(..) => Err(JwtError::new(JwtErrorKind::UnknownKey)),
            };
            let parts = (req.extensions(), req.headers());
            let decided = outcome.as_ref().map(Option::is_some);
            observation.decided(events, parts, "jwt", decided, None);
            #[cfg(feature = "tracing")]
            drop(entered);
            match outcome {
                Ok(claims) => {
                    config.mark_challenges(req.extensions_mut());
                    mark(req.extensions_mut(), claims);
                    inner.call(req).await.map(|r| r.map(ResponseBody::inner))
                }
                Err(e) => Ok(config.refuse(&e, &renderer, is_grpc(req.headers()))),
            }
        }))
    }

    /// A request with `Authorization: DPoP <token>`: the token (through the
    /// verified-token cache), its binding, the proof, and last the replay
    /// cache, awaited in a boxed future.
    fn dpop_call<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let renderer = self.renderer.clone();
        // Decided now: everything but the waits (a key refresh, the replay
        // cache).
        let first = config.verifier.decide(&token, Refresh::Allowed);
        ResponseFuture::boxed(Box::pin(async move {
            // Parts, not the request, are borrowed across the waits (the
            // body need not be `Sync`).
            let (mut parts, body) = req.into_parts();
            let decision = match first {
                Decision::Wait(refresh, token) => {
                    refresh.await;
                    config.verifier.decide(&token, Refresh::Done)
                }
                other => other,
            };
            let outcome = match decision {
                Decision::Pass(Some(claims)) => dpop_rules(&config, &parts, &token, claims).await,
                Decision::Pass(None) => Err(JwtError::new(JwtErrorKind::Missing)),
                Decision::Reject(e) => Err(e.via_dpop(true)),
                Decision::Wait(..) => Err(JwtError::new(JwtErrorKind::UnknownKey).via_dpop(true)),
            };
            #[cfg(feature = "tracing")]
            let entered = observation.span.clone().entered();
            let events = &config.events;
            let decided = outcome.as_ref().map(|_| true);
            observation.decided(
                events,
                (&parts.extensions, &parts.headers),
                "jwt",
                decided,
                None,
            );
            #[cfg(feature = "tracing")]
            drop(entered);
            match outcome {
                Ok((claims, proof)) => {
                    // A proof with the previous server nonce: the current
                    // one goes back with the answer (RFC 9449 §8.2).
                    let next_nonce = proof
                        .next_nonce()
                        .and_then(|n| http::HeaderValue::from_str(n).ok());
                    parts.extensions.insert(proof);
                    config.mark_challenges(&mut parts.extensions);
                    mark(&mut parts.extensions, Some(claims));
                    let req = Request::from_parts(parts, body);
                    let mut res = inner.call(req).await?;
                    if let Some(nonce) = next_nonce {
                        res.headers_mut().entry(DPOP_NONCE).or_insert(nonce);
                    }
                    Ok(res.map(ResponseBody::inner))
                }
                Err(e) => Ok(config.refuse(&e, &renderer, is_grpc(&parts.headers))),
            }
        }))
    }
}

/// A verified token that came with the `DPoP` scheme: it must be bound to
/// a key, and the proof must be valid, signed by that key, and new.
async fn dpop_rules<T>(
    config: &Config<T>,
    req: &http::request::Parts,
    token: &str,
    claims: Claims<T>,
) -> Result<(Claims<T>, crate::dpop::DpopProof), JwtError> {
    let Some(dpop) = &config.dpop else {
        return Err(JwtError::new(JwtErrorKind::Missing));
    };
    let Some(jkt) = claims.registered().cnf_jkt() else {
        return Err(JwtError::new(JwtErrorKind::NotDpopBound).via_dpop(true));
    };
    // Under axum's `Router::nest` the layer sees the path with the
    // prefix stripped; `htu` names the whole path the client called.
    let uri = crate::dpop::called_uri(req);
    let checked = dpop
        .verify(&req.method, uri, &req.headers, Some(token))
        .map_err(|e| JwtError::from_dpop(&e))?;
    if checked.jkt() != jkt {
        let e = crate::dpop::DpopError::bare(crate::dpop::DpopErrorKind::KeyMismatch);
        return Err(JwtError::from_dpop(&e));
    }
    // The replay cache's share is one per user, not one per key: logins
    // with fresh keys cannot multiply it.
    let reg = claims.registered();
    let owner = reg
        .sub
        .as_deref()
        .map(|sub| (reg.iss.as_deref().unwrap_or(""), sub));
    let proof = dpop
        .commit_for(checked, owner)
        .await
        .map_err(|e| JwtError::from_dpop(&e))?;
    Ok((claims, proof))
}
