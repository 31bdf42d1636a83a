//! axum extractors (feature `axum`, built on axum-core only): [`Session`],
//! [`CurrentUser`] and `Option<CurrentUser>`.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use portcullis_core::{ProblemJson, RenderRejection as _};

use crate::error::{SessionError, SessionErrorKind};
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| SessionError::new(SessionErrorKind::LayerMissing))?;
        // The layers inside the session layer have run: a login throttle
        // there has put the client it found behind a trusted proxy in the
        // extensions.
        session
            .request()
            .observe_client(&parts.extensions, &parts.headers);
        Ok(session)
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
///
/// As `Option<CurrentUser>` it is `None` when nobody is logged in (never a
/// 401), for pages that greet a visitor either way; a missing
/// `SessionLayer` (500) and an unavailable store (503) still refuse.
///
/// ```
/// use portcullis_session::CurrentUser;
///
/// async fn home(user: Option<CurrentUser>) -> String {
///     match user {
///         Some(CurrentUser(user)) => format!("welcome back, {user}"),
///         None => "welcome, visitor".to_owned(),
///     }
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

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentUser {
    type Rejection = SessionError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let session = <Session as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        Ok(session.user_id().await?.map(CurrentUser))
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
