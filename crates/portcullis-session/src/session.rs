//! The [`Session`] handle a handler works with: reading and writing keys.
//! Login, renewal and logout are in `login.rs`, the per-user operations in
//! `per_user.rs`; the state behind the handle is in `state.rs`.

use std::fmt;
use std::sync::Arc;

use portcullis_core::{ActiveSession, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::{self, AuthMethod};
use crate::error::{SessionError, SessionErrorKind};
use crate::state::RequestSession;

/// Refuses a key under the reserved prefix.
fn refuse_reserved(key: &str) -> Result<(), SessionError> {
    if auth::is_reserved(key) {
        return Err(SessionError::new(SessionErrorKind::ReservedKey));
    }
    Ok(())
}

/// The session of the current request.
///
/// Installed in the request's extensions by
/// [`SessionLayer`](crate::SessionLayer) (an axum extractor behind the
/// `axum` feature; for tonic or hyper, `req.extensions().get::<Session>()`).
/// Cheap to clone; clones share state.
///
/// Lazy: nothing is read from the store until a method needs the record,
/// and a request that never calls one costs no store call. Changes are
/// written once, after the handler returns, and only the keys that changed.
/// [`login`](Session::login), [`logout`](Session::logout) and the per-user
/// operations act on the store at once, so their failure reaches the
/// handler. Changes made after the response was produced (from a task that
/// outlives the handler) are not written.
///
/// ```
/// # async fn handler(session: portcullis_session::Session) -> Result<(), portcullis_session::SessionError> {
/// let visits: u64 = session.get("visits").await?.unwrap_or(0);
/// session.insert("visits", visits + 1).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    request: Arc<RequestSession>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("incoming", &self.request.incoming_label())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(request: RequestSession) -> Self {
        Self {
            request: Arc::new(request),
        }
    }

    /// The request's session state.
    pub(crate) fn request(&self) -> &RequestSession {
        &self.request
    }

    /// Whether the commit would do nothing (see
    /// [`RequestSession::nothing_to_commit`]); never allocates.
    pub(crate) fn nothing_to_commit(&mut self) -> bool {
        RequestSession::nothing_to_commit(&mut self.request)
    }

    /// Reads `key` as `T`.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read,
    /// [`SessionErrorKind::Serialization`] when the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        match self.get_value(key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| SessionError::with_source(SessionErrorKind::Serialization, e)),
        }
    }

    /// Reads `key` as raw JSON.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>, SessionError> {
        Ok(self.request.lock().await?.value(key).cloned())
    }

    /// Sets `key` to `value`. Creates an anonymous session if there is none.
    /// Setting a key to the value it already has writes nothing.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read,
    /// [`SessionErrorKind::Serialization`] when `value` does not serialize,
    /// [`SessionErrorKind::ReservedKey`] when `key` starts with
    /// [`AUTH_PREFIX`](crate::AUTH_PREFIX) (nothing is written).
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        refuse_reserved(key)?;
        let value = serde_json::to_value(value)
            .map_err(|e| SessionError::with_source(SessionErrorKind::Serialization, e))?;
        let mut st = self.request.lock().await?;
        self.request.insert(&mut st, key, value)
    }

    /// Removes `key`; returns whether it was present.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read,
    /// [`SessionErrorKind::ReservedKey`] when `key` starts with
    /// [`AUTH_PREFIX`](crate::AUTH_PREFIX) (nothing is removed).
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        refuse_reserved(key)?;
        Ok(self.request.lock().await?.remove(key))
    }

    /// The logged-in user, if any.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        Ok(self.request.lock().await?.user_id().map(str::to_owned))
    }

    /// When the user last entered credentials: at login, or at
    /// [`Session::reauthenticated`] (never moved by [`Session::renew`]).
    /// `None` without a logged-in user.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn authenticated_at(&self) -> Result<Option<Timestamp>, SessionError> {
        let st = self.request.lock().await?;
        Ok(st
            .user_id()
            .and_then(|_| st.data().and_then(auth::authenticated_at)))
    }

    /// How the user authenticated, as RFC 8176 names (`pwd`, `otp`, ...),
    /// in the order first used; empty without a logged-in user.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn auth_methods(&self) -> Result<Vec<AuthMethod>, SessionError> {
        let st = self.request.lock().await?;
        Ok(match (st.user_id(), st.data()) {
            (Some(_), Some(data)) => auth::auth_methods(data),
            _ => Vec::new(),
        })
    }

    /// This session as an [`ActiveSession`], if there is one.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn info(&self) -> Result<Option<ActiveSession>, SessionError> {
        Ok(self.request.lock().await?.active())
    }
}
