//! [`LoginOutcome`]: how the handler tells the throttle what happened.

/// What a login attempt came to, set by the handler as a response
/// extension (with the `axum` feature, return it as a response part).
///
/// | the response carries | the throttle does |
/// |---|---|
/// | `LoginOutcome::Failed` | records a failure on every counter of the request |
/// | `LoginOutcome::Succeeded` | resets the account's counters (account at address, account) |
/// | nothing, status 401 | records a failure (refresh endpoints answer a bad token with 401) |
/// | nothing, another status | nothing |
///
/// A success leaves the address counter alone: one good login from an
/// address does not forgive the guesses it made at other accounts.
///
/// ```
/// use portcullis_throttle::LoginOutcome;
///
/// let mut response = http::Response::new(());
/// response.extensions_mut().insert(LoginOutcome::Failed);
/// # let _ = response;
/// ```
///
/// With the `axum` feature it is a response part:
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::response::{Html, IntoResponse, Redirect, Response};
/// use portcullis_throttle::LoginOutcome;
///
/// fn answer(right: bool) -> Response {
///     if right {
///         (LoginOutcome::Succeeded, Redirect::to("/")).into_response()
///     } else {
///         (LoginOutcome::Failed, Html("wrong user name or password")).into_response()
///     }
/// }
/// let r = answer(false);
/// assert_eq!(r.extensions().get::<LoginOutcome>(), Some(&LoginOutcome::Failed));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoginOutcome {
    /// The credentials were wrong (or the account unknown).
    Failed,
    /// The credentials were right: the user is logged in.
    Succeeded,
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponseParts for LoginOutcome {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum_core::response::ResponseParts,
    ) -> Result<axum_core::response::ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for LoginOutcome {
    fn into_response(self) -> axum_core::response::Response {
        let mut res = ().into_response();
        res.extensions_mut().insert(self);
        res
    }
}
