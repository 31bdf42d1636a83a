//! axum extractors (feature `axum`, on axum-core only).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use portcullis_core::{ProblemJson, Rejection, RenderRejection as _};

use crate::claims::{Claims, NoToken, layer_ran};
use crate::issuer::JwtIssuer;

/// Why the [`Claims`] extractor found no claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimsRejectionKind {
    /// No `JwtLayer` ran on this route (500: a wiring mistake).
    LayerMissing,
    /// The layer on this route decodes another claims type (500: build it
    /// with `.claims::<T>()`).
    OtherClaimsType,
    /// The layer is optional and the request carried no token (401).
    NoToken,
}

/// The rejection of the [`Claims`] extractor: 401 when an optional
/// `JwtLayer` let a request without a token through; 500 naming the fix
/// when no `JwtLayer` runs on the route or it decodes another claims type
/// (a valid token would otherwise be refused without a hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimsRejection {
    kind: ClaimsRejectionKind,
    claims_type: &'static str,
}

impl ClaimsRejection {
    /// Why no claims were found.
    #[must_use]
    pub const fn kind(&self) -> ClaimsRejectionKind {
        self.kind
    }

    /// The HTTP status this rejection answers.
    #[must_use]
    pub const fn status(&self) -> http::StatusCode {
        match self.kind {
            ClaimsRejectionKind::NoToken => http::StatusCode::UNAUTHORIZED,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The rejection for a request whose extensions hold no `Claims<T>`.
    fn classify<T: 'static>(extensions: &http::Extensions) -> Self {
        let kind = if !layer_ran(extensions) {
            ClaimsRejectionKind::LayerMissing
        } else if extensions.get::<NoToken<T>>().is_some() {
            ClaimsRejectionKind::NoToken
        } else {
            ClaimsRejectionKind::OtherClaimsType
        };
        Self {
            kind,
            claims_type: std::any::type_name::<T>(),
        }
    }
}

impl std::fmt::Display for ClaimsRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ClaimsRejectionKind::LayerMissing => {
                f.write_str("JwtLayer is not installed on this route")
            }
            ClaimsRejectionKind::OtherClaimsType => write!(
                f,
                "JwtLayer on this route does not decode claims as {0}: build it with .claims::<{0}>()",
                self.claims_type
            ),
            ClaimsRejectionKind::NoToken => f.write_str("no access token was sent"),
        }
    }
}

impl std::error::Error for ClaimsRejection {}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        let r = match self.kind {
            ClaimsRejectionKind::NoToken => {
                Rejection::unauthenticated("an access token is required")
                    .with_challenge(http::HeaderValue::from_static("Bearer"))
                    .with_reason("no-claims")
            }
            ClaimsRejectionKind::LayerMissing => {
                Rejection::internal(self.to_string()).with_reason("jwt-layer-missing")
            }
            ClaimsRejectionKind::OtherClaimsType => {
                Rejection::internal(self.to_string()).with_reason("claims-type")
            }
        };
        ProblemJson
            .render(&r, false)
            .map(axum_core::body::Body::from)
    }
}

impl<S: Send + Sync, T: Send + Sync + 'static> FromRequestParts<S> for Claims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Self>() {
            Some(claims) => Ok(claims.clone()),
            None => Err(ClaimsRejection::classify::<T>(&parts.extensions)),
        }
    }
}

/// `None` when an optional layer let a request without a token through; a
/// 500 when no layer runs on the route or it decodes another claims type.
impl<S: Send + Sync, T: Send + Sync + 'static> OptionalFromRequestParts<S> for Claims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        optional::<T>(parts)
    }
}

fn optional<T: Send + Sync + 'static>(parts: &Parts) -> Result<Option<Claims<T>>, ClaimsRejection> {
    match parts.extensions.get::<Claims<T>>() {
        Some(claims) => Ok(Some(claims.clone())),
        None => match ClaimsRejection::classify::<T>(&parts.extensions) {
            r if r.kind == ClaimsRejectionKind::NoToken => Ok(None),
            r => Err(r),
        },
    }
}

/// Claims when a valid token was sent, `None` otherwise (use with
/// [`JwtLayerBuilder::optional`](crate::JwtLayerBuilder::optional)).
/// Equivalent to `Option<Claims<T>>`; a 500 [`ClaimsRejection`] when
/// no layer runs on the route or it decodes another claims type.
#[derive(Debug, Clone)]
pub struct OptionalClaims<T = crate::claims::NoCustomClaims>(pub Option<Claims<T>>);

impl<S: Send + Sync, T: Send + Sync + 'static> FromRequestParts<S> for OptionalClaims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        optional::<T>(parts).map(Self)
    }
}

/// The issuer's JWKS document as a response (`application/jwk-set+json`,
/// cacheable for five minutes).
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_jwt::{Algorithm, JwksResponse, JwtIssuer, SigningKey};
///
/// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::EdDSA).unwrap())
///     .issuer("https://auth.example.com").audience("api").build().unwrap();
/// let app: Router = Router::new()
///     .route("/.well-known/jwks.json", get(move || async move { JwksResponse::from(&issuer) }));
/// ```
#[derive(Debug, Clone)]
pub struct JwksResponse(String);

impl From<&JwtIssuer> for JwksResponse {
    fn from(issuer: &JwtIssuer) -> Self {
        Self(issuer.jwks_json())
    }
}

impl IntoResponse for JwksResponse {
    fn into_response(self) -> Response {
        (
            [
                (http::header::CONTENT_TYPE, "application/jwk-set+json"),
                (http::header::CACHE_CONTROL, "public, max-age=300"),
            ],
            self.0,
        )
            .into_response()
    }
}
