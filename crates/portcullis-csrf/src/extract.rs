//! axum extractors (feature `axum`, built on axum-core only):
//! [`CsrfHandle`] and [`CsrfToken`], and `IntoResponse` for [`CsrfError`].

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use portcullis_core::{ProblemJson, RenderRejection as _};

use crate::error::{CsrfError, CsrfErrorKind};
use crate::handle::{CsrfHandle, CsrfToken};

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for CsrfHandle {
    type Rejection = CsrfError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| CsrfError::new(CsrfErrorKind::LayerMissing))
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = CsrfError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        CsrfHandle::from_request_parts(parts, state)
            .await?
            .token()
            .await
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl IntoResponse for CsrfError {
    fn into_response(self) -> Response {
        let mut response = ProblemJson
            .render(&self.rejection(), false)
            .map(axum_core::body::Body::from);
        response.extensions_mut().insert(self);
        response
    }
}
