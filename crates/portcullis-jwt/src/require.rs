//! `RequireClaimsLayer`: per-route scope and role requirements, checked
//! by the `RequireClaims` service against the claims a `JwtLayer` verified.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_core::events::Events;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, ResponseBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::{Claims, NoCustomClaims};
use crate::dpop::DpopProof;
use crate::error::{JwtError, JwtErrorKind, guard_rejection};
use crate::events::Observation;
use crate::service::ResponseFuture;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Scope(String),
    Role(String),
}

/// Builds [`RequireClaims`], which refuses requests whose verified
/// [`Claims`] lack a scope or a role: 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope"`. Put it inside a
/// [`JwtLayer`](crate::JwtLayer) (for example with axum's `route_layer`); a
/// request that reaches it without claims gets 401.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_jwt::RequireClaimsLayer;
///
/// let admin: Router = Router::new()
///     .route("/admin", get(|| async { "secret" }))
///     .route_layer(RequireClaimsLayer::role("admin").and_scope("admin:write"));
/// ```
pub struct RequireClaimsLayer<T = NoCustomClaims> {
    needs: Arc<Vec<Need>>,
    events: Events,
    _claims: PhantomData<fn() -> T>,
}

impl<T> Clone for RequireClaimsLayer<T> {
    fn clone(&self) -> Self {
        Self {
            needs: Arc::clone(&self.needs),
            events: self.events.clone(),
            _claims: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RequireClaimsLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireClaimsLayer")
            .field("needs", &self.needs)
            .finish()
    }
}

impl RequireClaimsLayer {
    /// Requires the scope `scope`.
    #[must_use]
    pub fn scope(scope: impl Into<String>) -> Self {
        Self {
            needs: Arc::new(vec![Need::Scope(scope.into())]),
            events: Events::default(),
            _claims: PhantomData,
        }
    }

    /// Requires the role `role`.
    #[must_use]
    pub fn role(role: impl Into<String>) -> Self {
        Self {
            needs: Arc::new(vec![Need::Role(role.into())]),
            events: Events::default(),
            _claims: PhantomData,
        }
    }
}

impl<T> RequireClaimsLayer<T> {
    /// Also requires the scope `scope`.
    #[must_use]
    pub fn and_scope(self, scope: impl Into<String>) -> Self {
        self.and(Need::Scope(scope.into()))
    }

    /// Also requires the role `role`.
    #[must_use]
    pub fn and_role(self, role: impl Into<String>) -> Self {
        self.and(Need::Role(role.into()))
    }

    fn and(self, need: Need) -> Self {
        let mut needs = (*self.needs).clone();
        needs.push(need);
        Self {
            needs: Arc::new(needs),
            events: self.events,
            _claims: PhantomData,
        }
    }

    /// Reports to `events` (default: nothing listens): a `jwt_refused`
    /// event for every refusal (`insufficient-scope` with the user, or
    /// `missing` when no `JwtLayer` verified a token), and the time each
    /// decision took (layer `require_claims`).
    ///
    /// ```
    /// use portcullis_core::events::Events;
    /// use portcullis_jwt::RequireClaimsLayer;
    ///
    /// let events = Events::new();
    /// let mut audit = events.subscribe("audit", 1024);
    /// let admins = RequireClaimsLayer::role("admin").events(events);
    /// # let _ = (admins, audit.try_recv());
    /// ```
    #[must_use]
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// For layers that decode application claims as `U`.
    #[must_use]
    pub fn for_claims<U>(self) -> RequireClaimsLayer<U> {
        RequireClaimsLayer {
            needs: self.needs,
            events: self.events,
            _claims: PhantomData,
        }
    }
}

/// Whether `claims` meet every need: the first unmet one is a 403
/// naming it, no claims at all a 401.
fn decide<T>(needs: &[Need], claims: Option<&Claims<T>>) -> Result<(), JwtError> {
    let Some(claims) = claims else {
        return Err(JwtError::new(JwtErrorKind::Missing));
    };
    for need in needs {
        match need {
            Need::Scope(s) if !claims.has_scope(s) => {
                return Err(JwtError::insufficient(s.clone()));
            }
            Need::Role(r) if !claims.has_role(r) => {
                return Err(JwtError::insufficient(r.clone()));
            }
            _ => {}
        }
    }
    Ok(())
}

impl<S, T> Layer<S> for RequireClaimsLayer<T> {
    type Service = RequireClaims<S, T>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireClaims {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`RequireClaimsLayer`]: passes a request whose
/// claims meet the requirements to the inner service, refuses the others.
pub struct RequireClaims<S, T = NoCustomClaims> {
    inner: S,
    layer: RequireClaimsLayer<T>,
}

impl<S, T> RequireClaims<S, T> {
    portcullis_core::inner_service_accessors!();
}

impl<S: Clone, T> Clone for RequireClaims<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for RequireClaims<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireClaims")
            .field("inner", &self.inner)
            .field("needs", &self.layer.needs)
            .finish()
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for RequireClaims<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    T: Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let needs = &self.layer.needs;
        guard_step(
            &mut self.inner,
            req,
            &self.layer.events,
            "require_claims",
            |_, claims: Option<&Claims<T>>| decide(needs, claims),
        )
    }
}

/// A route guard's whole step: `decide` on the request's claims (and its
/// extensions), timed and reported for the recorder as `layer`; then the
/// request goes on, or is refused as the [`JwtLayer`](crate::JwtLayer) in
/// front challenges.
pub(crate) fn guard_step<T, S, ReqBody, ResBody>(
    inner: &mut S,
    req: Request<ReqBody>,
    events: &Events,
    layer: &'static str,
    decide: impl FnOnce(&http::Extensions, Option<&Claims<T>>) -> Result<(), JwtError>,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    T: Send + Sync + 'static,
{
    let observation = Observation::start(events, (req.extensions(), req.headers()), false);
    let claims = req.extensions().get::<Claims<T>>();
    let decision = decide(req.extensions(), claims);
    observation.decided(
        events,
        (req.extensions(), req.headers()),
        layer,
        decision.as_ref().map(|()| true),
        claims.and_then(Claims::subject),
    );
    match decision {
        Ok(()) => ResponseFuture::inner(inner.call(req)),
        Err(e) => {
            let grpc = is_grpc(req.headers());
            let rejection = guard_rejection(e, req.extensions());
            ResponseFuture::ready(rejection.into_response(&ProblemJson, grpc))
        }
    }
}

/// Builds [`RequireDpop`], a route guard that lets through only requests
/// whose token came with the `DPoP` scheme and a verified proof (a
/// [`DpopProof`] in the extensions): "DPoP required" for some routes
/// behind a [`JwtLayer`](crate::JwtLayer) whose policy is
/// [`DpopPolicy::Accepted`](crate::dpop::DpopPolicy::Accepted). A bearer
/// token gets 401 with `WWW-Authenticate: DPoP ... error="invalid_token"`
/// (and `resource_metadata` when the layer has one); a request without
/// claims gets 401.
///
/// ```
/// use axum::{Router, routing::post};
/// use portcullis_jwt::RequireDpopLayer;
///
/// let payments: Router = Router::new()
///     .route("/payments", post(|| async { "paid" }))
///     .route_layer(RequireDpopLayer::new());
/// ```
pub struct RequireDpopLayer<T = NoCustomClaims> {
    events: Events,
    _claims: PhantomData<fn() -> T>,
}

impl<T> Clone for RequireDpopLayer<T> {
    fn clone(&self) -> Self {
        Self {
            events: self.events.clone(),
            _claims: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RequireDpopLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireDpopLayer").finish_non_exhaustive()
    }
}

impl Default for RequireDpopLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequireDpopLayer {
    /// The guard.
    #[must_use]
    pub fn new() -> Self {
        Self {
            events: Events::default(),
            _claims: PhantomData,
        }
    }
}

impl<T> RequireDpopLayer<T> {
    /// Reports to `events` (default: nothing listens): a `jwt_refused`
    /// event for every refusal (`dpop-required`, or `missing`), and the
    /// time each decision took (layer `require_dpop`).
    #[must_use]
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// For layers that decode application claims as `U`.
    #[must_use]
    pub fn for_claims<U>(self) -> RequireDpopLayer<U> {
        RequireDpopLayer {
            events: self.events,
            _claims: PhantomData,
        }
    }
}

impl<S, T> Layer<S> for RequireDpopLayer<T> {
    type Service = RequireDpop<S, T>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireDpop {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`RequireDpopLayer`].
pub struct RequireDpop<S, T = NoCustomClaims> {
    inner: S,
    layer: RequireDpopLayer<T>,
}

impl<S, T> RequireDpop<S, T> {
    portcullis_core::inner_service_accessors!();
}

impl<S: Clone, T> Clone for RequireDpop<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for RequireDpop<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireDpop")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for RequireDpop<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    T: Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        guard_step(
            &mut self.inner,
            req,
            &self.layer.events,
            "require_dpop",
            |extensions, claims: Option<&Claims<T>>| match (claims, extensions.get::<DpopProof>()) {
                (None, _) => Err(JwtError::new(JwtErrorKind::Missing)),
                (Some(_), None) => Err(JwtError::new(JwtErrorKind::DpopRequired)),
                (Some(_), Some(_)) => Ok(()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::RegisteredClaims;

    fn claims(json: &str) -> Claims<NoCustomClaims> {
        let registered: RegisteredClaims = serde_json::from_str(json).unwrap();
        Claims::new(registered, NoCustomClaims {})
    }

    #[test]
    fn decisions() {
        let scope = |s: &str| Need::Scope(s.into());
        let role = |r: &str| Need::Role(r.into());
        let admin = claims(r#"{"roles":["admin"],"scope":"read write"}"#);
        let reader = claims(r#"{"scope":"read"}"#);
        let nobody = claims("{}");
        let insufficient = |name: &str| {
            Some(format!(
                r#"Bearer error="insufficient_scope", scope="{name}""#
            ))
        };
        // (needs, claims, the refusal's WWW-Authenticate; None = passes)
        let cases: [(Vec<Need>, Option<&Claims>, Option<String>); 8] = [
            (vec![role("admin")], Some(&admin), None),
            (vec![scope("read"), scope("write")], Some(&admin), None),
            (vec![role("admin"), scope("read")], Some(&admin), None),
            (vec![], Some(&nobody), None),
            (vec![role("admin")], Some(&reader), insufficient("admin")),
            (
                vec![scope("read"), scope("write")],
                Some(&reader),
                insufficient("write"),
            ),
            (vec![scope("admin")], Some(&admin), insufficient("admin")),
            (vec![role("admin")], None, Some("Bearer".to_owned())),
        ];
        for (needs, claims, want) in cases {
            let got = decide(&needs, claims).err().map(|e| {
                let rejection = e.rejection(None, std::time::Duration::ZERO);
                let challenge = rejection.challenge().unwrap().to_str().unwrap();
                challenge.to_owned()
            });
            assert_eq!(got, want, "{needs:?}");
        }
    }
}
