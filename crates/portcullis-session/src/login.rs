//! Login, id renewal and logout: the operations that move a session to a
//! new id or end it, and the rule for which data a new id carries.

use std::collections::BTreeMap;

use portcullis_core::events::AuthEventKind;
use serde_json::Value;

use crate::auth::{self, AuthMethod, LoginOptions};
use crate::error::SessionError;
use crate::session::Session;
use crate::state::{ClearSiteData, State};

/// Data keys starting with this prefix are dropped whenever the session id
/// is renewed (login, [`Session::renew`]). Secrets bound to one id, such as
/// a CSRF synchronizer token, live under it so that renewal also renews
/// them.
pub const RENEW_SCOPED_PREFIX: &str = "~renew:";

/// The data a new id carries: the old session's data minus the keys bound
/// to the old id, or nothing when the session changes hands (another user
/// logs in on a browser where someone was logged in).
fn carried_data(
    old_user: Option<&str>,
    new_user: Option<&str>,
    data: Option<&BTreeMap<String, Value>>,
) -> BTreeMap<String, Value> {
    let changes_hands = matches!((old_user, new_user), (Some(old), Some(new)) if old != new);
    match data {
        Some(data) if !changes_hands => data
            .iter()
            .filter(|(k, _)| !k.starts_with(RENEW_SCOPED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

impl Session {
    /// Logs `user_id` in, under a new session id, as a password login
    /// that is not remembered: [`Session::login_with`] with
    /// [`LoginOptions::default`].
    ///
    /// # Errors
    ///
    /// As [`Session::login_with`].
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        self.login_with(user_id, LoginOptions::default()).await
    }

    /// Logs `user_id` in, under a new session id, recording how
    /// (`options`: the methods used, and whether the login is remembered).
    ///
    /// The new record is stored first, then the old one deleted; if storing
    /// fails the old session stays as it was. Whatever id the client sent
    /// is never the id after login (session fixation). The per-user cap
    /// applies.
    ///
    /// What the new record carries:
    ///
    /// - from an anonymous session, or from a session of the same user: its
    ///   data, minus keys under [`RENEW_SCOPED_PREFIX`] (a cart filled
    ///   before logging in survives the login);
    /// - from a session of **another** user: nothing. The new session
    ///   starts from empty data, so nothing the previous user stored (an
    ///   `mfa_verified` flag, a cart, a pending action) is ever seen by the
    ///   next one in the same browser;
    /// - always: the authentication time (now) and methods
    ///   ([`Session::authenticated_at`], [`Session::auth_methods`]) under
    ///   [`AUTH_PREFIX`](crate::AUTH_PREFIX), replacing those of an earlier
    ///   login.
    ///
    /// A remembered login ([`LoginOptions::remember`]) ends at
    /// `now + min(lifetime, max_remember)` and after
    /// [`SessionConfig::remembered_idle_timeout`](crate::SessionConfig::remembered_idle_timeout)
    /// without a request, and its cookie carries `Max-Age` up to that
    /// deadline. Any other login gets the configured idle timeout and
    /// absolute lifetime and a browser-session cookie (no `Max-Age`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use portcullis_session::{LoginOptions, Session, SessionError};
    ///
    /// async fn login(session: Session, remember_me: bool) -> Result<(), SessionError> {
    ///     // ... check the credentials first ...
    ///     let mut options = LoginOptions::new();
    ///     if remember_me {
    ///         options = options.remember(Duration::from_secs(14 * 24 * 3600));
    ///     }
    ///     session.login_with("alice", options).await
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable),
    /// or [`SessionErrorKind::LimitReached`](crate::SessionErrorKind::LimitReached)
    /// when the cap refuses the login.
    pub async fn login_with(
        &self,
        user_id: impl Into<String>,
        options: LoginOptions,
    ) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let request = self.request();
        let config = &request.ctx().config;
        let mut st = request.lock().await?;
        let mut data = carried_data(st.user_id(), Some(&user_id), st.data());
        auth::strip_reserved(&mut data);
        let now = config.clock.now();
        auth::set_authenticated(&mut data, now, &options.methods);
        let remembered_until = options.remember.map(|lifetime| {
            let lifetime = lifetime.min(config.max_remember);
            auth::set_remembered(&mut data, Some(config.remembered_idle.min(lifetime)));
            now + lifetime
        });
        request
            .renew_id(&mut st, Some(user_id.clone()), data, remembered_until, None)
            .await?;
        request.emit(
            AuthEventKind::LoginSucceeded,
            Some(&user_id),
            st.current_key().as_ref(),
        );
        Ok(())
    }

    /// Moves this session to a new id (for example after a privilege
    /// change), keeping its data and user. Does nothing without a session.
    ///
    /// The authentication time and methods move unchanged: a renewal never
    /// makes a login fresh (that takes [`Session::reauthenticated`]). A
    /// remembered login keeps its deadlines and its cookie's lifetime.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable)
    /// when the store fails.
    pub async fn renew(&self) -> Result<(), SessionError> {
        let request = self.request();
        let mut st = request.lock().await?;
        let Some(old) = st.data() else {
            return Ok(());
        };
        let user = st.user_id().map(str::to_owned);
        let data = carried_data(user.as_deref(), user.as_deref(), Some(old));
        let remembered_until = st.remembered_until();
        let same_login_until = st.absolute_deadline();
        request
            .renew_id(&mut st, user, data, remembered_until, same_login_until)
            .await?;
        request.emit(
            AuthEventKind::SessionRenewed,
            st.user_id(),
            st.current_key().as_ref(),
        );
        Ok(())
    }

    /// Records that the logged-in user just proved who they are again (for
    /// example re-entered their password on the form a
    /// [`RequireFreshLogin`](crate::RequireFreshLogin) guard sent them to):
    /// the authentication time becomes now and `methods` join those already
    /// recorded. The session moves to a new id, as after any change of
    /// privilege (OWASP's session management guidance), keeping its data; it
    /// is the same login, not a new one: a remembered login keeps its
    /// deadlines.
    ///
    /// Check the credentials before calling it, through the same brute-force
    /// throttle as the login form.
    ///
    /// ```
    /// use portcullis_session::{AuthMethod, Session, SessionError};
    ///
    /// async fn reauth(session: Session) -> Result<(), SessionError> {
    ///     // ... verify the password the form sent ...
    ///     session.reauthenticated([AuthMethod::PASSWORD]).await
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`](crate::SessionErrorKind::NotAuthenticated)
    /// without a logged-in user (nothing changes);
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable)
    /// when the store fails (the session stays as it was).
    pub async fn reauthenticated(
        &self,
        methods: impl IntoIterator<Item = AuthMethod>,
    ) -> Result<(), SessionError> {
        let request = self.request();
        let mut st = request.lock().await?;
        let user = st.require_user()?;
        self.reauthenticate_locked(&mut st, user, methods).await?;
        request.emit(
            AuthEventKind::SessionRenewed,
            st.user_id(),
            st.current_key().as_ref(),
        );
        Ok(())
    }

    /// [`Session::reauthenticated`] with the state locked.
    pub(crate) async fn reauthenticate_locked(
        &self,
        st: &mut State,
        user: String,
        methods: impl IntoIterator<Item = AuthMethod>,
    ) -> Result<(), SessionError> {
        let request = self.request();
        let mut data = carried_data(Some(&user), Some(&user), st.data());
        let mut recorded = auth::auth_methods(&data);
        auth::merge_methods(&mut recorded, methods);
        auth::set_authenticated(&mut data, request.ctx().config.clock.now(), &recorded);
        let remembered_until = st.remembered_until();
        let same_login_until = st.absolute_deadline();
        request
            .renew_id(st, Some(user), data, remembered_until, same_login_until)
            .await
    }

    /// Ends this session: deletes it from the store, and the response
    /// removes the cookie (and carries `Clear-Site-Data: "cookies"` when
    /// [`SessionConfig::clear_site_data_on_logout`](crate::SessionConfig::clear_site_data_on_logout)
    /// is on).
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable)
    /// when the store cannot delete it; the session then stays valid
    /// (retry).
    pub async fn logout(&self) -> Result<(), SessionError> {
        let request = self.request();
        let mut st = request.lock().await?;
        if let Some(key) = st.stored_key() {
            let deleted = request
                .store()
                .delete(&key)
                .await
                .map_err(|e| request.unavailable(e, "delete"))?;
            // A logout racing another one (or a revocation) ends nothing:
            // only the one that deleted the session says so.
            if deleted {
                request.emit(AuthEventKind::Logout, st.user_id(), Some(&key));
            }
        }
        st.forget(ClearSiteData::Ask);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn carried_data_table() {
        let data = BTreeMap::from([
            ("cart".to_owned(), json!([1])),
            (format!("{RENEW_SCOPED_PREFIX}csrf"), json!("secret")),
        ]);
        let cart_only = BTreeMap::from([("cart".to_owned(), json!([1]))]);
        // (old user, new user, data, carried)
        type Data = BTreeMap<String, Value>;
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a Data>, &'a Data);
        let cases: &[Case<'_>] = &[
            (None, Some("alice"), Some(&data), &cart_only),
            (Some("alice"), Some("alice"), Some(&data), &cart_only),
            (Some("alice"), None, Some(&data), &cart_only),
            (Some("alice"), Some("bob"), Some(&data), &BTreeMap::new()),
            (None, Some("alice"), None, &BTreeMap::new()),
        ];
        for (old, new, data, want) in cases {
            assert_eq!(
                &carried_data(*old, *new, *data),
                *want,
                "{old:?} -> {new:?}"
            );
        }
    }
}
