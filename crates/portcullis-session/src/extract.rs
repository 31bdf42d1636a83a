//! axum extractors (feature `axum`, built on axum-core only).

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use portcullis_core::{ProblemJson, RenderRejection as _};

use crate::error::{SessionError, SessionErrorKind};
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| SessionError::new(SessionErrorKind::LayerMissing))
    }
}

/// The logged-in user's id; answers 401 when nobody is logged in, 503 when
/// the store is unavailable.
///
/// ```
/// use portcullis_session::CurrentUser;
///
/// async fn me(CurrentUser(user): CurrentUser) -> String {
///     format!("hello {user}")
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        session
            .user_id()
            .await?
            .map(CurrentUser)
            .ok_or_else(|| SessionError::new(SessionErrorKind::NotAuthenticated))
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let rejection = self.rejection();
        ProblemJson
            .render(&rejection, false)
            .map(axum_core::body::Body::from)
    }
}
