//! `RequireClaims`: per-route scope and role requirements.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, ResponseBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::{Claims, NoCustomClaims};
use crate::error::{JwtError, JwtErrorKind};
use crate::service::ResponseFuture;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Scope(String),
    Role(String),
}

/// Refuses requests whose verified [`Claims`] lack a scope or a role: 403
/// with `WWW-Authenticate: Bearer error="insufficient_scope"`. Put it inside
/// a [`JwtLayer`](crate::JwtLayer) (for example with axum's `route_layer`);
/// a request that reaches it without claims gets 401.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_jwt::RequireClaims;
///
/// let admin: Router = Router::new()
///     .route("/admin", get(|| async { "secret" }))
///     .route_layer(RequireClaims::role("admin"));
/// ```
pub struct RequireClaims<T = NoCustomClaims> {
    needs: Arc<Vec<Need>>,
    _claims: PhantomData<fn() -> T>,
}

impl<T> Clone for RequireClaims<T> {
    fn clone(&self) -> Self {
        Self {
            needs: Arc::clone(&self.needs),
            _claims: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RequireClaims<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireClaims")
            .field("needs", &self.needs)
            .finish()
    }
}

impl RequireClaims {
    /// Requires the scope `scope`.
    #[must_use]
    pub fn scope(scope: impl Into<String>) -> Self {
        Self {
            needs: Arc::new(vec![Need::Scope(scope.into())]),
            _claims: PhantomData,
        }
    }

    /// Requires the role `role`.
    #[must_use]
    pub fn role(role: impl Into<String>) -> Self {
        Self {
            needs: Arc::new(vec![Need::Role(role.into())]),
            _claims: PhantomData,
        }
    }
}

impl<T> RequireClaims<T> {
    /// Also requires the scope `scope`.
    #[must_use]
    pub fn and_scope(self, scope: impl Into<String>) -> Self {
        let mut needs = (*self.needs).clone();
        needs.push(Need::Scope(scope.into()));
        Self {
            needs: Arc::new(needs),
            _claims: PhantomData,
        }
    }

    /// Also requires the role `role`.
    #[must_use]
    pub fn and_role(self, role: impl Into<String>) -> Self {
        let mut needs = (*self.needs).clone();
        needs.push(Need::Role(role.into()));
        Self {
            needs: Arc::new(needs),
            _claims: PhantomData,
        }
    }

    /// For layers that decode application claims as `U`.
    #[must_use]
    pub fn for_claims<U>(self) -> RequireClaims<U> {
        RequireClaims {
            needs: self.needs,
            _claims: PhantomData,
        }
    }

    fn decide(&self, claims: Option<&Claims<T>>) -> Result<(), JwtError> {
        let Some(claims) = claims else {
            return Err(JwtError::new(JwtErrorKind::Missing));
        };
        for need in self.needs.iter() {
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
}

impl<S, T> Layer<S> for RequireClaims<T> {
    type Service = RequireClaimsService<S, T>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireClaimsService {
            inner,
            require: self.clone(),
        }
    }
}

/// The service built by [`RequireClaims`].
pub struct RequireClaimsService<S, T = NoCustomClaims> {
    inner: S,
    require: RequireClaims<T>,
}

impl<S: Clone, T> Clone for RequireClaimsService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            require: self.require.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for RequireClaimsService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireClaimsService")
            .field("inner", &self.inner)
            .field("require", &self.require)
            .finish()
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for RequireClaimsService<S, T>
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
        match self.require.decide(req.extensions().get::<Claims<T>>()) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(e) => {
                let grpc = is_grpc(req.headers());
                let rejection = e.rejection(None, std::time::Duration::from_secs(1));
                ResponseFuture::ready(rejection.into_response(&ProblemJson, grpc))
            }
        }
    }
}
