//! The operations on all of a user's sessions: log out everywhere, log out
//! the other devices, list them, revoke one.

use portcullis_core::events::AuthEventKind;
use portcullis_core::{ActiveSession, TokenDigest};

use crate::auth::AuthMethod;
use crate::error::SessionError;
use crate::session::Session;
use crate::state::{ClearSiteData, active_session};

/// Newest first; ties broken by id so the order is stable.
fn newest_first(list: &mut [ActiveSession]) {
    list.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}

impl Session {
    /// Ends every session of the logged-in user, this one included; returns
    /// how many were ended.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`](crate::SessionErrorKind::NotAuthenticated)
    /// without a user;
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable)
    /// when the store fails.
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let request = self.request();
        let mut st = request.lock().await?;
        let user = st.require_user()?;
        let n = request
            .store()
            .delete_for_user(&user, None)
            .await
            .map_err(|e| request.unavailable(e, "delete_for_user"))?;
        request.emit(
            AuthEventKind::LogoutEverywhere,
            Some(&user),
            st.current_key().as_ref(),
        );
        st.forget(ClearSiteData::Ask);
        Ok(n)
    }

    /// Ends every other session of the logged-in user, keeping this one;
    /// returns how many were ended.
    ///
    /// Emits [`LogoutEverywhere`](portcullis_core::events::AuthEventKind::LogoutEverywhere)
    /// like [`Session::logout_everywhere`] (the user asked for every other
    /// device to be logged out; the event's device is this session, the one
    /// that stays), even when there was no other session to end.
    ///
    /// # Errors
    ///
    /// As [`Session::logout_everywhere`].
    pub async fn logout_other_sessions(&self) -> Result<u64, SessionError> {
        let request = self.request();
        let st = request.lock().await?;
        let user = st.require_user()?;
        let keep = st.current_key();
        let n = request
            .store()
            .delete_for_user(&user, keep.as_ref())
            .await
            .map_err(|e| request.unavailable(e, "delete_for_user"))?;
        request.emit(AuthEventKind::LogoutEverywhere, Some(&user), keep.as_ref());
        Ok(n)
    }

    /// The session half of a password change: ends every other session of
    /// the logged-in user at once (a thief's copy of an old password, or
    /// of a session cookie, is logged out everywhere), and keeps this one,
    /// under a new id, with a fresh authentication time (`pwd` joins the
    /// recorded methods: the user just gave a password). Returns how many
    /// sessions were ended.
    ///
    /// Order, so that a failure half-way never leaves the user less logged
    /// out than asked: store the new password hash first, then revoke the
    /// user's tokens (refresh families, the access-token version), then
    /// call this. Inside, the other sessions are deleted first, then this
    /// session moves to its new id, then the old id is deleted. Any store
    /// failure is an error (a 503 through `?`, with `Retry-After`), and
    /// calling it again finishes the job; the sessions already ended stay
    /// ended.
    ///
    /// ```
    /// use portcullis_session::{Session, SessionError};
    ///
    /// async fn change_password(session: Session) -> Result<String, SessionError> {
    ///     // ... check the current password, store the new hash,
    ///     // revoke the user's refresh tokens ...
    ///     let ended = session.password_changed().await?;
    ///     Ok(format!("password changed; {ended} other sessions logged out"))
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`](crate::SessionErrorKind::NotAuthenticated)
    /// without a user;
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable)
    /// when the store fails at any step.
    pub async fn password_changed(&self) -> Result<u64, SessionError> {
        let request = self.request();
        let mut st = request.lock().await?;
        let user = st.require_user()?;
        let user_for_event = user.clone();
        let keep = st.current_key();
        let store = request.store();
        let ended = store
            .delete_for_user(&user, keep.as_ref())
            .await
            .map_err(|e| request.unavailable(e, "delete_for_user"))?;
        self.reauthenticate_locked(&mut st, user, [AuthMethod::PASSWORD])
            .await?;
        // The old id must not outlive the call: it is another session now.
        if let Some(old) = st.take_leftover() {
            if let Err(e) = store.delete(&old).await {
                st.set_leftover(old);
                return Err(request.unavailable(e, "delete"));
            }
        }
        request.emit(
            AuthEventKind::PasswordChanged,
            Some(&user_for_event),
            st.current_key().as_ref(),
        );
        Ok(ended)
    }

    /// The logged-in user's live sessions, newest first.
    ///
    /// # Errors
    ///
    /// As [`Session::logout_everywhere`].
    pub async fn active_sessions(&self) -> Result<Vec<ActiveSession>, SessionError> {
        let request = self.request();
        let st = request.lock().await?;
        let user = st.require_user()?;
        let me = st.current_key();
        let mut list: Vec<ActiveSession> = request
            .store()
            .list_for_user(&user)
            .await
            .map_err(|e| request.unavailable(e, "list_for_user"))?
            .iter()
            .map(|(key, rec)| active_session(key, rec, Some(*key) == me))
            .collect();
        newest_first(&mut list);
        Ok(list)
    }

    /// Ends one of the logged-in user's sessions by its
    /// [`ActiveSession::id`]. Returns `false` when no session of this user
    /// has that id (another user's session is never touched).
    ///
    /// # Errors
    ///
    /// As [`Session::logout_everywhere`].
    pub async fn revoke_session(&self, id: &str) -> Result<bool, SessionError> {
        let request = self.request();
        let mut st = request.lock().await?;
        let user = st.require_user()?;
        let Ok(key) = TokenDigest::from_hex(id) else {
            return Ok(false);
        };
        let store = request.store();
        let Some(rec) = store
            .load(&key)
            .await
            .map_err(|e| request.unavailable(e, "load"))?
        else {
            return Ok(false);
        };
        if rec.user_id.as_deref() != Some(user.as_str()) {
            return Ok(false);
        }
        let deleted = store
            .delete(&key)
            .await
            .map_err(|e| request.unavailable(e, "delete"))?;
        if deleted {
            request.emit(AuthEventKind::DeviceRevoked, Some(&user), Some(&key));
        }
        if st.current_key() == Some(key) {
            st.forget(ClearSiteData::No);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Timestamp;

    #[test]
    fn newest_first_table() {
        let at = |id: &str, s: u64| ActiveSession {
            id: id.into(),
            created_at: Timestamp::from_secs(s),
            last_seen: Timestamp::from_secs(s),
            expires_at: Timestamp::from_secs(s + 60),
            user_agent: None,
            ip: None,
            current: false,
        };
        // (input (id, created), expected ids)
        type Case = (&'static [(&'static str, u64)], &'static [&'static str]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[("a", 1), ("b", 2), ("c", 3)], &["c", "b", "a"]),
            (&[("b", 1), ("a", 1)], &["a", "b"]),
        ];
        for (input, want) in cases {
            let mut list: Vec<_> = input.iter().map(|(id, s)| at(id, *s)).collect();
            newest_first(&mut list);
            let ids: Vec<_> = list.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(&ids, want);
        }
    }
}
