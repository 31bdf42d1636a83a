//! [`LoginOutcome`]: how the handler tells the throttle what happened;
//! [`LoginFailure`]: why a login failed, for the throttle's events.

use std::sync::Arc;

/// What a login attempt came to, set by the handler as a response
/// extension (with the `axum` feature, return it as a response part).
///
/// | the response carries | the throttle does |
/// |---|---|
/// | `LoginOutcome::Failed` | records a failure on every counter of the request |
/// | a [`LoginFailure`] (no `LoginOutcome`) | the same: records a failure |
/// | `LoginOutcome::Succeeded` | resets the account's counters (account at address, account) |
/// | nothing, status 401 | records a failure (refresh endpoints answer a bad token with 401) |
/// | nothing, another status | nothing |
///
/// Every failure is a `login_failed` event when the throttle has
/// [`events`](crate::ThrottleConfigBuilder::events); a [`LoginFailure`]
/// beside the outcome gives it a reason code and the user id.
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

impl LoginOutcome {
    /// A failure with a reason code, for the `login_failed` event: the
    /// [`LoginFailure`] to put in the response (it marks the attempt
    /// failed by itself).
    ///
    /// ```
    /// use portcullis_throttle::{LoginFailure, LoginOutcome};
    ///
    /// let failure = LoginOutcome::failed_because("account_locked").user("user-42");
    /// assert_eq!(failure.reason(), "account_locked");
    /// assert_eq!(failure.user_id(), Some("user-42"));
    /// ```
    #[must_use]
    pub const fn failed_because(reason: &'static str) -> LoginFailure {
        LoginFailure::new(reason)
    }
}

/// Why a login failed, as the handler tells it, for the throttle's
/// `login_failed` event: a reason code (a closed set of the application's
/// own, safe as a metric attribute; [`INVALID_CREDENTIALS`](Self::INVALID_CREDENTIALS)
/// by default) and, when the handler resolved the account, the user id.
///
/// Put it in the response's extensions (with the `axum` feature, return it
/// as a response part): it marks the attempt failed, like
/// [`LoginOutcome::Failed`], which may stand beside it. Give the user id
/// the application knows the account by, never the name the request typed
/// (that is user input, and may be someone's password typed in the wrong
/// field): the throttle never puts the typed name in an event.
///
/// ```
/// use portcullis_throttle::LoginFailure;
///
/// let mut response = http::Response::new(());
/// response
///     .extensions_mut()
///     .insert(LoginFailure::invalid_credentials().user("user-42"));
/// # let _ = response;
/// ```
///
/// With the `axum` feature:
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::response::{IntoResponse, Response};
/// use http::StatusCode;
/// use portcullis_throttle::{LoginFailure, LoginOutcome};
///
/// fn wrong_password(user_id: &str) -> Response {
///     (StatusCode::UNAUTHORIZED, LoginFailure::invalid_credentials().user(user_id)).into_response()
/// }
/// fn locked(user_id: &str) -> Response {
///     (StatusCode::FORBIDDEN, LoginOutcome::failed_because("account_locked").user(user_id))
///         .into_response()
/// }
/// let r = locked("user-42");
/// assert_eq!(r.extensions().get::<LoginOutcome>(), Some(&LoginOutcome::Failed));
/// assert_eq!(r.extensions().get::<LoginFailure>().unwrap().reason(), "account_locked");
/// # let _ = wrong_password("user-42");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginFailure {
    reason: &'static str,
    user: Option<Arc<str>>,
}

impl Default for LoginFailure {
    fn default() -> Self {
        Self::invalid_credentials()
    }
}

impl LoginFailure {
    /// The reason code of a failure the handler gave no reason for, and of
    /// a 401 without a marker.
    pub const INVALID_CREDENTIALS: &'static str = "invalid_credentials";

    /// A failure with the reason code `reason` (`snake_case` by
    /// convention: `account_locked`, `mfa_failed`, ...). It goes into
    /// events and metric attributes as is: a code, never user input.
    #[must_use]
    pub const fn new(reason: &'static str) -> Self {
        Self { reason, user: None }
    }

    /// Wrong credentials (or an unknown account): `invalid_credentials`.
    #[must_use]
    pub const fn invalid_credentials() -> Self {
        Self::new(Self::INVALID_CREDENTIALS)
    }

    /// The user id of the account the attempt was at, when the handler
    /// resolved it: the id the application knows the user by, never the
    /// name typed.
    #[must_use]
    pub fn user(mut self, id: impl Into<Arc<str>>) -> Self {
        self.user = Some(id.into());
        self
    }

    /// The reason code.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        self.reason
    }

    /// The user id, when given.
    #[must_use]
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponseParts for LoginFailure {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum_core::response::ResponseParts,
    ) -> Result<axum_core::response::ResponseParts, Self::Error> {
        res.extensions_mut().insert(LoginOutcome::Failed);
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for LoginFailure {
    fn into_response(self) -> axum_core::response::Response {
        let mut res = ().into_response();
        res.extensions_mut().insert(LoginOutcome::Failed);
        res.extensions_mut().insert(self);
        res
    }
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
