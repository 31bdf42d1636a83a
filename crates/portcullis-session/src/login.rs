//! Login, id renewal and logout: the operations that move a session to a
//! new id or end it, and the rule for which data a new id carries.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::SessionError;
use crate::session::Session;
use crate::state::ClearSiteData;

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
    /// Logs `user_id` in, under a new session id.
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
    ///   next one in the same browser.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`](crate::SessionErrorKind::Unavailable),
    /// or [`SessionErrorKind::LimitReached`](crate::SessionErrorKind::LimitReached)
    /// when the cap refuses the login.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let request = self.request();
        let mut st = request.lock().await?;
        let data = carried_data(st.user_id(), Some(&user_id), st.data());
        request.renew_id(&mut st, Some(user_id), data).await
    }

    /// Moves this session to a new id (for example after a privilege
    /// change), keeping its data and user. Does nothing without a session.
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
        request.renew_id(&mut st, user, data).await
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
            request
                .store()
                .delete(&key)
                .await
                .map_err(|e| request.unavailable(e))?;
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
