//! axum extractors (feature `axum`, on axum-core only).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use portcullis_core::{ProblemJson, Rejection, RenderRejection as _};

use crate::claims::Claims;
use crate::issuer::JwtIssuer;

/// The rejection of the [`Claims`] extractor: no claims in the request,
/// because `JwtLayer` is missing on this route or runs in optional mode
/// and the request had no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimsRejection;

impl std::fmt::Display for ClaimsRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no verified access token: is JwtLayer installed on this route?")
    }
}

impl std::error::Error for ClaimsRejection {}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        let r = Rejection::unauthenticated("an access token is required")
            .with_challenge(http::HeaderValue::from_static("Bearer"))
            .with_reason("no-claims");
        ProblemJson
            .render(&r, false)
            .map(axum_core::body::Body::from)
    }
}

impl<S: Send + Sync, T: Send + Sync + 'static> FromRequestParts<S> for Claims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(ClaimsRejection)
    }
}

impl<S: Send + Sync, T: Send + Sync + 'static> OptionalFromRequestParts<S> for Claims<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

/// Claims when a valid token was sent, `None` otherwise (use with
/// [`JwtLayerBuilder::optional`](crate::JwtLayerBuilder::optional)).
/// Equivalent to `Option<Claims<T>>`.
#[derive(Debug, Clone)]
pub struct OptionalClaims<T = crate::claims::NoCustomClaims>(pub Option<Claims<T>>);

impl<S: Send + Sync, T: Send + Sync + 'static> FromRequestParts<S> for OptionalClaims<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Claims<T>>().cloned()))
    }
}

/// The issuer's JWKS document as a response (`application/jwk-set+json`,
/// cacheable for five minutes).
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_jwt::{Algorithm, JwksResponse, JwtIssuer, SigningKey};
///
/// let issuer = JwtIssuer::builder(SigningKey::generate(Some("k1"), Algorithm::EdDSA).unwrap())
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
