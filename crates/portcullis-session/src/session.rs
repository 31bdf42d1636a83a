//! The `Session` handle a handler works with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderValue;
use portcullis_core::{OpaqueToken, StoreError, StoreErrorKind, Timestamp, TokenDigest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{SessionError, SessionErrorKind};
use crate::layer::LayerShared;
use crate::record::{CreateOutcome, SessionCap, SessionMetadata, SessionRecord, SessionUpdate};
use crate::store::SessionStore;

/// Data keys starting with this prefix are dropped whenever the session id
/// is renewed (login, [`Session::renew`]). Secrets bound to one id, such as
/// a CSRF synchronizer token, live under it so that renewal also renews
/// them.
pub const RENEW_SCOPED_PREFIX: &str = "~renew:";

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
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// The store and the configuration, shared by the layer's sessions.
    layer: Arc<LayerShared>,
    incoming: Incoming,
    user_agent: Option<HeaderValue>,
    ip: Option<std::net::IpAddr>,
    /// Set before the state is first locked by a handler's call: while it
    /// is false the state is the default one and the layer skips the
    /// commit without locking anything.
    used: AtomicBool,
    state: Mutex<State>,
}

/// What the request carried.
pub(crate) enum Incoming {
    None,
    Token(OpaqueToken),
    /// Malformed, oversized or duplicated: never looked up, always cleared.
    Invalid,
}

#[derive(Default)]
struct State {
    loaded: bool,
    /// Boxed: most requests never load a record, and a small state keeps
    /// the per-request handle cheap to build.
    current: Option<Box<Current>>,
    cookie: CookieAction,
    clear_site_data: bool,
    /// The old id's record, when deleting it after a login failed: retried
    /// once when the request ends.
    leftover: Option<TokenDigest>,
}

#[derive(Default)]
enum CookieAction {
    #[default]
    Keep,
    Set(OpaqueToken),
    Remove,
}

struct Current {
    key: TokenDigest,
    record: SessionRecord,
    set: BTreeMap<String, Value>,
    remove: BTreeSet<String>,
    /// False for a session created in this request and not yet stored.
    persisted: bool,
    touch_due: bool,
}

/// One of a user's sessions, as "your active sessions" pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// A public handle: hex of the SHA-256 of the session id. Not usable as
    /// a credential; pass it to [`Session::revoke_session`].
    pub id: String,
    /// When the session was created (login).
    pub created_at: Timestamp,
    /// The last request that extended it.
    pub last_seen: Timestamp,
    /// When it ends unless extended.
    pub expires_at: Timestamp,
    /// The user agent it was created with.
    pub user_agent: Option<String>,
    /// The address it was created from.
    pub ip: Option<String>,
    /// Whether this is the session of the current request.
    pub current: bool,
}

/// What the layer must do to the response once the handler is done.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    pub(crate) set_token: Option<OpaqueToken>,
    pub(crate) remove: bool,
    pub(crate) clear_site_data: bool,
    pub(crate) error: Option<SessionError>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let incoming = match self.shared.incoming {
            Incoming::None => "none",
            Incoming::Token(_) => "token(REDACTED)",
            Incoming::Invalid => "invalid",
        };
        f.debug_struct("Session")
            .field("incoming", &incoming)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        layer: Arc<LayerShared>,
        incoming: Incoming,
        user_agent: Option<HeaderValue>,
        ip: Option<std::net::IpAddr>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                layer,
                incoming,
                user_agent,
                ip,
                used: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The store as a trait object: calls go straight to its methods.
    /// (Through the `Arc`, method resolution would pick the blanket
    /// `impl SessionStore for Arc<S>`, boxing every store future twice.)
    fn store(&self) -> &dyn SessionStore {
        &*self.shared.layer.store
    }

    /// What the layer shares with its sessions.
    pub(crate) fn layer(&self) -> &LayerShared {
        &self.shared.layer
    }

    fn unavailable(&self, e: StoreError) -> SessionError {
        SessionError::unavailable(e, self.shared.layer.config.retry_after)
    }

    /// Locks the state, loading the record first if needed.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        // Before locking: a lock held elsewhere (another clone in a task
        // still loading) is never taken for an untouched session.
        self.shared.used.store(true, Ordering::Release);
        // Uncontended (the usual case): no lock future to build and poll.
        let mut st = match self.shared.state.try_lock() {
            Ok(st) => st,
            Err(_) => self.shared.state.lock().await,
        };
        if st.loaded {
            return Ok(st);
        }
        let Incoming::Token(token) = &self.shared.incoming else {
            st.loaded = true;
            return Ok(st);
        };
        let key = token.digest();
        let config = &self.shared.layer.config;
        match self.store().load(&key).await {
            Ok(Some(record)) => {
                let now = config.clock.now();
                if record.is_expired(now) {
                    st.cookie = CookieAction::Remove;
                } else {
                    let touch_due =
                        now.saturating_since(record.last_seen) >= config.effective_touch_interval();
                    st.current = Some(Box::new(Current {
                        key,
                        record,
                        set: BTreeMap::new(),
                        remove: BTreeSet::new(),
                        persisted: true,
                        touch_due,
                    }));
                }
            }
            // Unknown or expired id: strict mode, never adopt it; clear it.
            Ok(None) => st.cookie = CookieAction::Remove,
            Err(e) if e.kind() == StoreErrorKind::Corrupt => {
                portcullis_core::event!(
                    warn,
                    reason = "corrupt-record",
                    "session record is corrupt; treating it as absent"
                );
                st.cookie = CookieAction::Remove;
            }
            Err(e) => return Err(self.unavailable(e)),
        }
        st.loaded = true;
        Ok(st)
    }

    fn fresh_record(
        &self,
        user_id: Option<String>,
        data: BTreeMap<String, Value>,
    ) -> SessionRecord {
        let config = &self.shared.layer.config;
        let now = config.clock.now();
        let absolute = now + config.absolute_timeout;
        SessionRecord {
            user_id,
            data,
            created_at: now,
            last_seen: now,
            idle_deadline: (now + config.idle_timeout).min(absolute),
            absolute_deadline: absolute,
            metadata: SessionMetadata {
                user_agent: self
                    .shared
                    .user_agent
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.chars().take(256).collect()),
                ip: self.shared.ip.map(|ip| ip.to_string()),
            },
        }
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
        let st = self.loaded().await?;
        Ok(st
            .current
            .as_ref()
            .and_then(|c| c.record.data.get(key).cloned()))
    }

    /// Sets `key` to `value`. Creates an anonymous session if there is none.
    /// Setting a key to the value it already has writes nothing.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read,
    /// [`SessionErrorKind::Serialization`] when `value` does not serialize.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value)
            .map_err(|e| SessionError::with_source(SessionErrorKind::Serialization, e))?;
        let mut st = self.loaded().await?;
        if st.current.is_none() {
            let token = OpaqueToken::generate()
                .map_err(|e| SessionError::with_source(SessionErrorKind::Random, e))?;
            st.current = Some(Box::new(Current {
                key: token.digest(),
                record: self.fresh_record(None, BTreeMap::new()),
                set: BTreeMap::new(),
                remove: BTreeSet::new(),
                persisted: false,
                touch_due: false,
            }));
            st.cookie = CookieAction::Set(token);
        }
        let Some(cur) = st.current.as_mut() else {
            return Ok(());
        };
        if cur.record.data.get(key) == Some(&value) {
            return Ok(());
        }
        cur.record.data.insert(key.to_owned(), value.clone());
        cur.remove.remove(key);
        cur.set.insert(key.to_owned(), value);
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        let mut st = self.loaded().await?;
        let Some(cur) = st.current.as_mut() else {
            return Ok(false);
        };
        if cur.record.data.remove(key).is_none() {
            return Ok(false);
        }
        cur.set.remove(key);
        cur.remove.insert(key.to_owned());
        Ok(true)
    }

    /// The logged-in user, if any.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        let st = self.loaded().await?;
        Ok(st.current.as_ref().and_then(|c| c.record.user_id.clone()))
    }

    /// This session as a [`SessionInfo`], if there is one.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot be read.
    pub async fn info(&self) -> Result<Option<SessionInfo>, SessionError> {
        let st = self.loaded().await?;
        Ok(st.current.as_ref().map(|c| info(&c.key, &c.record, true)))
    }

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
    /// [`SessionErrorKind::Unavailable`], or [`SessionErrorKind::LimitReached`]
    /// when the cap refuses the login.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let mut st = self.loaded().await?;
        let other_user = st.current.as_ref().is_some_and(|c| {
            c.record
                .user_id
                .as_deref()
                .is_some_and(|u| u != user_id.as_str())
        });
        self.renew_locked(&mut st, Some(user_id), !other_user).await
    }

    /// Moves this session to a new id (for example after a privilege
    /// change), keeping its data and user. Does nothing without a session.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store fails.
    pub async fn renew(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        let Some(cur) = st.current.as_ref() else {
            return Ok(());
        };
        let user = cur.record.user_id.clone();
        self.renew_locked(&mut st, user, true).await
    }

    async fn renew_locked(
        &self,
        st: &mut State,
        user_id: Option<String>,
        keep_data: bool,
    ) -> Result<(), SessionError> {
        let config = &self.shared.layer.config;
        let store = self.store();
        let (old_key, mut data) = match &st.current {
            Some(cur) if keep_data => (cur.persisted.then_some(cur.key), cur.record.data.clone()),
            Some(cur) => (cur.persisted.then_some(cur.key), BTreeMap::new()),
            None => (None, BTreeMap::new()),
        };
        data.retain(|k, _| !k.starts_with(RENEW_SCOPED_PREFIX));
        let record = self.fresh_record(user_id, data);
        let cap = match (config.cap, &record.user_id) {
            (Some((max, policy)), Some(_)) => Some(SessionCap {
                max,
                policy,
                replacing: old_key,
            }),
            _ => None,
        };
        let mut attempts = 0;
        let token = loop {
            let token = OpaqueToken::generate()
                .map_err(|e| SessionError::with_source(SessionErrorKind::Random, e))?;
            match store.create(&token.digest(), &record, cap).await {
                Ok(CreateOutcome::Created { .. }) => break token,
                Ok(CreateOutcome::LimitReached) => {
                    return Err(SessionError::new(SessionErrorKind::LimitReached));
                }
                Err(e) if e.kind() == StoreErrorKind::Conflict && attempts < 2 => attempts += 1,
                Err(e) => return Err(self.unavailable(e)),
            }
        };
        if let Some(old) = old_key {
            if store.delete(&old).await.is_err() {
                st.leftover = Some(old);
            }
        }
        st.current = Some(Box::new(Current {
            key: token.digest(),
            record,
            set: BTreeMap::new(),
            remove: BTreeSet::new(),
            persisted: true,
            touch_due: false,
        }));
        st.cookie = CookieAction::Set(token);
        Ok(())
    }

    /// Ends this session: deletes it from the store, and the response
    /// removes the cookie (and carries `Clear-Site-Data: "cookies"` when
    /// [`SessionConfig::clear_site_data_on_logout`](crate::SessionConfig::clear_site_data_on_logout)
    /// is on).
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Unavailable`] when the store cannot delete it; the
    /// session then stays valid (retry).
    pub async fn logout(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        if let Some(cur) = &st.current {
            if cur.persisted {
                self.store()
                    .delete(&cur.key)
                    .await
                    .map_err(|e| self.unavailable(e))?;
            }
        }
        st.current = None;
        st.cookie = CookieAction::Remove;
        st.clear_site_data = true;
        Ok(())
    }

    /// Ends every session of the logged-in user, this one included; returns
    /// how many were ended.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`] without a user;
    /// [`SessionErrorKind::Unavailable`] when the store fails.
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let mut st = self.loaded().await?;
        let user = current_user(&st)?;
        let n = self
            .store()
            .delete_for_user(&user, None)
            .await
            .map_err(|e| self.unavailable(e))?;
        st.current = None;
        st.cookie = CookieAction::Remove;
        st.clear_site_data = true;
        Ok(n)
    }

    /// Ends every other session of the logged-in user, keeping this one;
    /// returns how many were ended.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`] without a user;
    /// [`SessionErrorKind::Unavailable`] when the store fails.
    pub async fn logout_other_sessions(&self) -> Result<u64, SessionError> {
        let st = self.loaded().await?;
        let user = current_user(&st)?;
        let keep = st.current.as_ref().map(|c| c.key);
        self.store()
            .delete_for_user(&user, keep.as_ref())
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// The logged-in user's live sessions, newest first.
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`] without a user;
    /// [`SessionErrorKind::Unavailable`] when the store fails.
    pub async fn active_sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let st = self.loaded().await?;
        let user = current_user(&st)?;
        let me = st.current.as_ref().map(|c| c.key);
        let mut list: Vec<SessionInfo> = self
            .store()
            .list_for_user(&user)
            .await
            .map_err(|e| self.unavailable(e))?
            .iter()
            .map(|(key, rec)| info(key, rec, Some(*key) == me))
            .collect();
        list.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(list)
    }

    /// Ends one of the logged-in user's sessions by its [`SessionInfo::id`].
    /// Returns `false` when no session of this user has that id (another
    /// user's session is never touched).
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::NotAuthenticated`] without a user;
    /// [`SessionErrorKind::Unavailable`] when the store fails.
    pub async fn revoke_session(&self, id: &str) -> Result<bool, SessionError> {
        let mut st = self.loaded().await?;
        let user = current_user(&st)?;
        let Ok(key) = TokenDigest::from_hex(id) else {
            return Ok(false);
        };
        let store = self.store();
        let Some(rec) = store.load(&key).await.map_err(|e| self.unavailable(e))? else {
            return Ok(false);
        };
        if rec.user_id.as_deref() != Some(user.as_str()) {
            return Ok(false);
        }
        let deleted = store.delete(&key).await.map_err(|e| self.unavailable(e))?;
        if st.current.as_ref().is_some_and(|c| c.key == key) {
            st.current = None;
            st.cookie = CookieAction::Remove;
        }
        Ok(deleted)
    }

    /// Writes what the request changed; called by the layer after the
    /// handler returned.
    pub(crate) async fn commit(&self) -> Commit {
        let mut st = self.shared.state.lock().await;
        let mut commit = Commit::default();
        if let Some(old) = st.leftover.take() {
            let _ = self.store().delete(&old).await;
        }
        if matches!(self.shared.incoming, Incoming::Invalid) {
            commit.remove = true;
        }
        let now = self.shared.layer.config.clock.now();
        let idle_deadline = now + self.shared.layer.config.idle_timeout;
        let mut gone = false;
        if let Some(cur) = st.current.as_mut() {
            let store = self.store();
            if !cur.persisted {
                match store.create(&cur.key, &cur.record, None).await {
                    Ok(_) => cur.persisted = true,
                    Err(e) => commit.error = Some(self.unavailable(e)),
                }
            } else if !cur.set.is_empty() || !cur.remove.is_empty() {
                let update = SessionUpdate {
                    set: std::mem::take(&mut cur.set),
                    remove: std::mem::take(&mut cur.remove),
                    last_seen: now,
                    idle_deadline,
                };
                match store.update(&cur.key, &update).await {
                    Ok(()) => {}
                    // Deleted meanwhile (logout elsewhere): never resurrect it.
                    Err(e) if e.kind() == StoreErrorKind::NotFound => gone = true,
                    Err(e) => commit.error = Some(self.unavailable(e)),
                }
            } else if cur.touch_due {
                match store.touch(&cur.key, now, idle_deadline).await {
                    Ok(()) => cur.touch_due = false,
                    Err(e) if e.kind() == StoreErrorKind::NotFound => gone = true,
                    // Best effort: a missed extension must not fail a read.
                    Err(_) => {
                        portcullis_core::event!(debug, reason = "touch-failed", "idle extension not written");
                    }
                }
            }
        }
        if gone {
            st.current = None;
            st.cookie = CookieAction::Remove;
        }
        if commit.error.is_none() {
            match std::mem::take(&mut st.cookie) {
                CookieAction::Keep => {}
                CookieAction::Set(token) => {
                    commit.set_token = Some(token);
                    commit.remove = false;
                }
                CookieAction::Remove => commit.remove = true,
            }
            commit.clear_site_data = st.clear_site_data;
        }
        commit
    }

    /// Whether [`Session::commit`] would do nothing: no store call, no
    /// cookie, no header (a session never used, or only read with no idle
    /// extension due). `false` when the state is locked elsewhere (then
    /// commit decides).
    ///
    /// Takes the handle: when it is the last one (the request and the
    /// handler's clones are gone, as they normally are once the response
    /// exists) the state is read without locking.
    pub(crate) fn nothing_to_commit(&mut self) -> bool {
        if matches!(self.shared.incoming, Incoming::Invalid) {
            return false;
        }
        // Never used: the state is the default one, nothing to write.
        if !self.shared.used.load(Ordering::Acquire) {
            return true;
        }
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => nothing_to_commit(shared.state.get_mut()),
            None => self
                .shared
                .state
                .try_lock()
                .is_ok_and(|st| nothing_to_commit(&st)),
        }
    }
}

fn nothing_to_commit(st: &State) -> bool {
    st.leftover.is_none()
        && !st.clear_site_data
        && matches!(st.cookie, CookieAction::Keep)
        && st.current.as_ref().is_none_or(|cur| {
            cur.persisted && cur.set.is_empty() && cur.remove.is_empty() && !cur.touch_due
        })
}

fn current_user(st: &State) -> Result<String, SessionError> {
    st.current
        .as_ref()
        .and_then(|c| c.record.user_id.clone())
        .ok_or_else(|| SessionError::new(SessionErrorKind::NotAuthenticated))
}

fn info(key: &TokenDigest, rec: &SessionRecord, current: bool) -> SessionInfo {
    SessionInfo {
        id: key.to_hex(),
        created_at: rec.created_at,
        last_seen: rec.last_seen,
        expires_at: rec.expires_at(),
        user_agent: rec.metadata.user_agent.clone(),
        ip: rec.metadata.ip.clone(),
        current,
    }
}
