//! The per-request session state machine and the commit protocol: what the
//! request carried ([`Incoming`]), what the handler did to the session
//! ([`State`]), what is written to the store once the handler is done
//! ([`RequestSession::commit`]) and what the response then says
//! ([`respond`]). No HTTP server here; the tables at the bottom drive it
//! against `MemoryStore` and a manual clock (in `state/tests.rs`).
//!
//! Over 500 lines on purpose: the state machine and its commit are one
//! protocol, and splitting it would put the two halves of each invariant
//! (what `lock` loads, what `commit` writes) in different files.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{CACHE_CONTROL, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use portcullis_core::cookie::find_cookie;
use portcullis_core::events::{AuthEvent, AuthEventKind, Decision, DecisionTimer, PendingContext};
use portcullis_core::lifetime::{MaybeConflict, retry_on_conflict};
use portcullis_core::{
    ActiveSession, Deadlines, Lifetimes, OpaqueToken, ProblemJson, ResponseBody, StoreError,
    StoreErrorKind, Timestamp, TokenDigest,
};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::auth;
use crate::config::{SessionConfig, SessionConfigError, Transport};
use crate::error::{SessionError, SessionErrorKind};
use crate::obs::{LayerSpan, SOURCE};
use crate::store::{
    CreateOutcome, SessionCap, SessionMetadata, SessionRecord, SessionStore, SessionUpdate,
};

/// The store and the resolved configuration one `SessionLayer` shares with
/// its services and every session it hands out.
pub(crate) struct SessionContext {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) config: SessionConfig,
    pub(crate) lifetimes: Lifetimes,
}

impl SessionContext {
    /// Checks `config` and resolves what requests need from it.
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        config: SessionConfig,
    ) -> Result<Self, SessionConfigError> {
        config.validate()?;
        let lifetimes = Lifetimes::new(config.idle_timeout, config.absolute_timeout)
            .map_err(|_| SessionConfigError::Timeouts)?;
        Ok(Self {
            store,
            config,
            lifetimes,
        })
    }

    fn unavailable(&self, e: StoreError) -> SessionError {
        SessionError::unavailable(e, self.config.retry_after)
    }
}

/// The longest session id accepted in a header transport.
const SESSION_HEADER_MAX: usize = 128;

/// What the request carried.
pub(crate) enum Incoming {
    None,
    Token(OpaqueToken),
    /// Malformed, oversized or duplicated: never looked up, always cleared.
    Invalid,
}

impl Incoming {
    /// Reads the session id from the request's headers.
    pub(crate) fn read(config: &SessionConfig, headers: &HeaderMap) -> Self {
        let raw = match &config.transport {
            Transport::Cookie => match find_cookie(headers, config.cookie.full_name()) {
                Ok(v) => v,
                Err(_) => return Self::Invalid,
            },
            Transport::Header(name) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(v), None) if v.len() <= SESSION_HEADER_MAX => match v.to_str() {
                        Ok(s) => Some(s),
                        Err(_) => return Self::Invalid,
                    },
                    _ => return Self::Invalid,
                }
            }
        };
        match raw {
            None => Self::None,
            Some(v) => OpaqueToken::parse(v).map_or(Self::Invalid, Self::Token),
        }
    }

    const fn label(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token(_) => "token(REDACTED)",
            Self::Invalid => "invalid",
        }
    }
}

/// One request's session: what it carried and what its handler did.
pub(crate) struct RequestSession {
    ctx: Arc<SessionContext>,
    incoming: Incoming,
    user_agent: Option<HeaderValue>,
    /// The client address: read when the request arrived, read again
    /// when a handler takes the session (by then a layer inside this one,
    /// the login throttle, may have found the client behind a proxy).
    client: std::sync::Mutex<ClientAddress>,
    /// Set before the state is first locked by a handler's call: while it
    /// is false the state is the default one and the commit is skipped
    /// without locking anything.
    used: AtomicBool,
    state: Mutex<State>,
    /// The request's route, client and trace id: read when it arrived,
    /// and only if something listened then (empty otherwise). Its client
    /// is in `client`.
    event_ctx: PendingContext,
    span: LayerSpan,
}

/// Where a request comes from, as the session records it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientAddress {
    /// For the device list (`SessionConfig::client_ip`).
    pub(crate) device: Option<IpAddr>,
    /// For the events (the `Events` handle's client address).
    pub(crate) event: Option<IpAddr>,
}

impl ClientAddress {
    /// The address `config` finds in a request's `extensions` and
    /// `headers`; the event's only while events are enabled.
    #[cfg(feature = "axum")]
    pub(crate) fn read(
        config: &SessionConfig,
        extensions: &http::Extensions,
        headers: &HeaderMap,
    ) -> Self {
        Self {
            device: config.client_ip.and_then(|f| f(extensions, headers)),
            event: config.events.client(extensions, headers),
        }
    }
}

/// What the handler did to the session so far.
#[derive(Default)]
pub(crate) struct State {
    loaded: bool,
    /// Boxed: most requests never load a record, and a small state keeps
    /// the per-request handle cheap to build.
    current: Option<Box<Current>>,
    cookie: CookieAction,
    clear_site_data: bool,
    /// The old id's record, when deleting it after a login failed: retried
    /// once when the request ends.
    leftover: Option<TokenDigest>,
    /// Times the load of the presented session (sampled; see
    /// `Events::start_decision`).
    timer: Option<DecisionTimer>,
}

#[derive(Default)]
enum CookieAction {
    #[default]
    Keep,
    Set(OpaqueToken),
    Remove,
}

/// The session record this request works on.
pub(crate) struct Current {
    key: TokenDigest,
    record: SessionRecord,
    set: BTreeMap<String, Value>,
    remove: BTreeSet<String>,
    /// False for a session created in this request and not yet stored.
    persisted: bool,
    touch_due: bool,
}

/// Whether an ended session's response carries `Clear-Site-Data` (when the
/// configuration allows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClearSiteData {
    Ask,
    No,
}

impl State {
    /// The logged-in user.
    pub(crate) fn user_id(&self) -> Option<&str> {
        self.current.as_ref()?.record.user_id.as_deref()
    }

    /// The logged-in user, or `NotAuthenticated`.
    pub(crate) fn require_user(&self) -> Result<String, SessionError> {
        self.user_id()
            .map(str::to_owned)
            .ok_or_else(|| SessionError::new(SessionErrorKind::NotAuthenticated))
    }

    /// The store key of the current session, stored or not.
    pub(crate) fn current_key(&self) -> Option<TokenDigest> {
        self.current.as_ref().map(|c| c.key)
    }

    /// The store key of the current session once it is stored.
    pub(crate) fn stored_key(&self) -> Option<TokenDigest> {
        self.current
            .as_ref()
            .and_then(|c| c.persisted.then_some(c.key))
    }

    /// The absolute deadline of the current session when its login was
    /// remembered: a new id keeps it.
    pub(crate) fn remembered_until(&self) -> Option<Timestamp> {
        let cur = self.current.as_ref()?;
        auth::remembered_idle(&cur.record.data).map(|_| cur.record.absolute_deadline)
    }

    /// The absolute deadline of the current session: a new id for the same
    /// login keeps it.
    pub(crate) fn absolute_deadline(&self) -> Option<Timestamp> {
        self.current
            .as_ref()
            .map(|cur| cur.record.absolute_deadline)
    }

    /// Takes the old id left over by a renewal whose delete failed.
    pub(crate) const fn take_leftover(&mut self) -> Option<TokenDigest> {
        self.leftover.take()
    }

    /// Puts back an old id whose delete failed again (retried at commit).
    pub(crate) const fn set_leftover(&mut self, key: TokenDigest) {
        self.leftover = Some(key);
    }

    /// The current session's data.
    pub(crate) fn data(&self) -> Option<&BTreeMap<String, Value>> {
        self.current.as_ref().map(|c| &c.record.data)
    }

    /// The value under `key`.
    pub(crate) fn value(&self, key: &str) -> Option<&Value> {
        self.data()?.get(key)
    }

    /// The current session as a device list entry.
    pub(crate) fn active(&self) -> Option<ActiveSession> {
        let c = self.current.as_ref()?;
        Some(active_session(&c.key, &c.record, true))
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        if cur.record.data.remove(key).is_none() {
            return false;
        }
        cur.set.remove(key);
        cur.remove.insert(key.to_owned());
        true
    }

    /// The session is gone (logged out, revoked, deleted elsewhere): the
    /// response removes the cookie.
    pub(crate) fn forget(&mut self, clear: ClearSiteData) {
        self.current = None;
        self.cookie = CookieAction::Remove;
        if clear == ClearSiteData::Ask {
            self.clear_site_data = true;
        }
    }

    /// Whether [`RequestSession::commit`] would do nothing.
    fn nothing_to_commit(&self) -> bool {
        self.leftover.is_none()
            && !self.clear_site_data
            && matches!(self.cookie, CookieAction::Keep)
            && self.current.as_ref().is_none_or(|cur| {
                cur.persisted && cur.set.is_empty() && cur.remove.is_empty() && !cur.touch_due
            })
    }
}

/// What the commit did, and what the response must say.
#[derive(Debug, Default)]
pub(crate) struct CommitOutcome {
    set_token: Option<OpaqueToken>,
    /// The new cookie's `Max-Age`: for a remembered login only.
    max_age: Option<Duration>,
    remove: bool,
    clear_site_data: bool,
    error: Option<SessionError>,
}

/// A fresh id could not be had: the random source failed, or the store.
enum CreateError {
    Random(SessionError),
    Store(StoreError),
}

impl MaybeConflict for CreateError {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_conflict())
    }
}

fn new_token() -> Result<OpaqueToken, SessionError> {
    OpaqueToken::generate().map_err(|e| SessionError::with_source(SessionErrorKind::Random, e))
}

impl RequestSession {
    /// The state of a request that carried `incoming`. A request without
    /// a session id, or with one that cannot be a session id, is decided
    /// here; a session id is decided when its record is loaded.
    pub(crate) fn new(
        ctx: Arc<SessionContext>,
        incoming: Incoming,
        user_agent: Option<HeaderValue>,
        client: ClientAddress,
        event_ctx: PendingContext,
    ) -> Self {
        let events = &ctx.config.events;
        let timer = events.start_decision();
        let span = LayerSpan::new(event_ctx.route());
        let decided = match &incoming {
            Incoming::None => Some((Decision::None, None)),
            Incoming::Invalid => Some((Decision::Failure, Some("session-malformed"))),
            Incoming::Token(_) => None,
        };
        let mut state = State::default();
        match decided {
            Some((decision, reason)) => {
                events.decided(timer, SOURCE, decision, reason);
                span.decided(decision, reason);
            }
            None => state.timer = timer,
        }
        Self {
            ctx,
            incoming,
            user_agent,
            client: std::sync::Mutex::new(client),
            used: AtomicBool::new(false),
            state: Mutex::new(state),
            event_ctx,
            span,
        }
    }

    /// The client address as last read.
    fn client(&self) -> ClientAddress {
        *self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the client address again from the request as a handler gets
    /// it (`extensions` and `headers` after every layer inside this one).
    #[cfg(feature = "axum")]
    pub(crate) fn observe_client(&self, extensions: &http::Extensions, headers: &HeaderMap) {
        let client = ClientAddress::read(&self.ctx.config, extensions, headers);
        *self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }

    /// Emits `kind` with this request's context, `user` and the session
    /// handle `device` (the public id of a device list, never the
    /// session id).
    pub(crate) fn emit(
        &self,
        kind: AuthEventKind,
        user: Option<&str>,
        device: Option<&TokenDigest>,
    ) {
        self.ctx.config.events.emit(|| {
            let mut event = AuthEvent::new(SOURCE, kind)
                .context(&self.event_ctx.resolve())
                .maybe_user(user);
            event.client = self.client().event;
            match device {
                Some(d) => event.device(d.to_hex()),
                None => event,
            }
        });
    }

    /// Records the layer's decision on the presented session.
    fn decided(&self, st: &mut State, decision: Decision, reason: Option<&'static str>) {
        self.ctx
            .config
            .events
            .decided(st.timer.take(), SOURCE, decision, reason);
        self.span.decided(decision, reason);
    }

    /// The layer's store and configuration.
    pub(crate) fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// What the request carried, for `Debug`.
    pub(crate) const fn incoming_label(&self) -> &'static str {
        self.incoming.label()
    }

    /// The store as a trait object: calls go straight to its methods.
    /// (Through the `Arc`, method resolution would pick the blanket
    /// `impl SessionStore for Arc<S>`, boxing every store future twice.)
    pub(crate) fn store(&self) -> &dyn SessionStore {
        &*self.ctx.store
    }

    /// A store failure as the 503 it becomes; `operation` is the store
    /// call that failed (the `StoreUnavailable` event says so).
    pub(crate) fn unavailable(&self, e: StoreError, operation: &'static str) -> SessionError {
        portcullis_core::event!(
            warn,
            reason = "store-unavailable",
            operation = operation,
            "session store unavailable; answering 503"
        );
        self.emit(
            AuthEventKind::StoreUnavailable {
                store: SOURCE,
                operation,
            },
            None,
            None,
        );
        self.ctx.unavailable(e)
    }

    /// Locks the state, loading the record first if needed.
    pub(crate) async fn lock(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        // Before locking: a lock held elsewhere (another clone in a task
        // still loading) is never taken for an untouched session.
        self.used.store(true, Ordering::Release);
        // Uncontended (the usual case): no lock future to build and poll.
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(_) => self.state.lock().await,
        };
        if st.loaded {
            return Ok(st);
        }
        let Incoming::Token(token) = &self.incoming else {
            st.loaded = true;
            return Ok(st);
        };
        let key = token.digest();
        let config = &self.ctx.config;
        let load = self.store().load(&key);
        #[cfg(feature = "tracing")]
        let load = tracing::Instrument::instrument(load, self.span.span().clone());
        match load.await {
            Ok(Some(record)) => {
                let now = config.clock.now();
                if record.is_expired(now) {
                    // Only a store that still returns it (see the crate
                    // docs): the others make it an unknown id, below.
                    self.emit(
                        AuthEventKind::SessionExpired,
                        record.user_id.as_deref(),
                        Some(&key),
                    );
                    self.decided(&mut st, Decision::Failure, Some("session-expired"));
                    st.cookie = CookieAction::Remove;
                } else {
                    self.decided(&mut st, Decision::Success, None);
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
            Ok(None) => {
                self.decided(&mut st, Decision::Failure, Some("session-unknown"));
                st.cookie = CookieAction::Remove;
            }
            Err(e) if e.kind() == StoreErrorKind::Corrupt => {
                portcullis_core::event!(
                    warn,
                    reason = "corrupt-record",
                    "session record is corrupt; treating it as absent"
                );
                self.decided(&mut st, Decision::Failure, Some("session-corrupt"));
                st.cookie = CookieAction::Remove;
            }
            Err(e) => {
                self.decided(
                    &mut st,
                    Decision::Failure,
                    Some("session-store-unavailable"),
                );
                return Err(self.unavailable(e, "load"));
            }
        }
        st.loaded = true;
        Ok(st)
    }

    /// A record for a session starting now: with the configured lifetimes,
    /// or, for a remembered login (`data` says so), ending at
    /// `remembered_until` with the remembered idle window.
    fn fresh_record(
        &self,
        user_id: Option<String>,
        mut data: BTreeMap<String, Value>,
        remembered_until: Option<Timestamp>,
        same_login_until: Option<Timestamp>,
    ) -> SessionRecord {
        let now = self.ctx.config.clock.now();
        let deadlines = match (auth::remembered_idle(&data), remembered_until) {
            (Some(idle), Some(absolute)) => Deadlines {
                idle: (now + idle).min(absolute),
                absolute,
            },
            _ => {
                auth::set_remembered(&mut data, None);
                let mut d = self.ctx.lifetimes.start(now);
                // The same login under a new id ends when it would have:
                // the absolute lifetime counts from the login.
                if let Some(until) = same_login_until {
                    d.absolute = d.absolute.min(until);
                    d.idle = d.idle.min(d.absolute);
                }
                d
            }
        };
        let user_agent = self.user_agent.as_ref().and_then(|v| {
            let mut headers = HeaderMap::with_capacity(1);
            headers.insert(http::header::USER_AGENT, v.clone());
            portcullis_core::request::user_agent(&headers)
        });
        SessionRecord {
            user_id,
            data,
            created_at: now,
            last_seen: now,
            idle_deadline: deadlines.idle,
            absolute_deadline: deadlines.absolute,
            metadata: SessionMetadata {
                user_agent,
                ip: self.client().device.map(|ip| ip.to_string()),
            },
        }
    }

    /// Sets `key` to `value`, starting an anonymous session (stored at
    /// commit) when there is none. The value it already has writes nothing.
    pub(crate) fn insert(
        &self,
        st: &mut State,
        key: &str,
        value: Value,
    ) -> Result<(), SessionError> {
        if st.current.is_none() {
            let token = new_token()?;
            st.current = Some(Box::new(Current {
                key: token.digest(),
                record: self.fresh_record(None, BTreeMap::new(), None, None),
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

    /// Moves the session to a new id carrying `user_id` and `data`: the new
    /// record is stored first (under the per-user cap), then the old one
    /// deleted (retried at commit when that fails). When storing fails the
    /// old session stays as it was. A remembered login (see
    /// [`State::remembered_until`]) ends at `remembered_until`.
    pub(crate) async fn renew_id(
        &self,
        st: &mut State,
        user_id: Option<String>,
        data: BTreeMap<String, Value>,
        remembered_until: Option<Timestamp>,
        same_login_until: Option<Timestamp>,
    ) -> Result<(), SessionError> {
        let old_key = st.stored_key();
        let record = self.fresh_record(user_id, data, remembered_until, same_login_until);
        let cap = match (self.ctx.config.cap, &record.user_id) {
            (Some((max, policy)), Some(_)) => Some(SessionCap {
                max,
                policy,
                replacing: old_key,
            }),
            _ => None,
        };
        let store = self.store();
        let created = retry_on_conflict(|| async {
            let token = new_token().map_err(CreateError::Random)?;
            let outcome = store
                .create(&token.digest(), &record, cap)
                .await
                .map_err(CreateError::Store)?;
            Ok((token, outcome))
        })
        .await;
        let token = match created {
            Ok((token, CreateOutcome::Created { evicted })) => {
                // The per-user cap ended these to make room.
                for key in &evicted {
                    self.emit(
                        AuthEventKind::SessionEvicted,
                        record.user_id.as_deref(),
                        Some(key),
                    );
                }
                token
            }
            Ok((_, CreateOutcome::LimitReached)) => {
                return Err(SessionError::new(SessionErrorKind::LimitReached));
            }
            Err(CreateError::Random(e)) => return Err(e),
            Err(CreateError::Store(e)) => return Err(self.unavailable(e, "create")),
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

    /// Writes what the request changed; run once the handler is done.
    pub(crate) async fn commit(&self) -> CommitOutcome {
        let mut st = self.state.lock().await;
        let mut outcome = CommitOutcome::default();
        let store = self.store();
        if let Some(old) = st.leftover.take() {
            let _ = store.delete(&old).await;
        }
        if matches!(self.incoming, Incoming::Invalid) {
            outcome.remove = true;
        }
        let now = self.ctx.config.clock.now();
        let mut gone = false;
        if let Some(cur) = st.current.as_mut() {
            let idle_deadline = match auth::remembered_idle(&cur.record.data) {
                Some(idle) => now + idle,
                None => self.ctx.lifetimes.idle_from(now),
            };
            if !cur.persisted {
                match store.create(&cur.key, &cur.record, None).await {
                    Ok(_) => cur.persisted = true,
                    Err(e) => outcome.error = Some(self.unavailable(e, "create")),
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
                    Err(e) => outcome.error = Some(self.unavailable(e, "update")),
                }
            } else if cur.touch_due {
                match store.touch(&cur.key, now, idle_deadline).await {
                    Ok(()) => cur.touch_due = false,
                    Err(e) if e.kind() == StoreErrorKind::NotFound => gone = true,
                    // Best effort: a missed extension must not fail a read.
                    Err(_) => {
                        portcullis_core::event!(
                            debug,
                            reason = "touch-failed",
                            "idle extension not written"
                        );
                    }
                }
            }
        }
        if gone {
            st.forget(ClearSiteData::No);
        }
        if outcome.error.is_none() {
            match std::mem::take(&mut st.cookie) {
                CookieAction::Keep => {}
                CookieAction::Set(token) => {
                    outcome.max_age = st
                        .remembered_until()
                        .map(|until| until.saturating_since(now));
                    outcome.set_token = Some(token);
                    outcome.remove = false;
                }
                CookieAction::Remove => outcome.remove = true,
            }
            outcome.clear_site_data = st.clear_site_data;
        }
        outcome
    }

    /// Whether [`RequestSession::commit`] would do nothing: no store call,
    /// no cookie, no header (a session never used, or only read with no
    /// idle extension due). `false` when the state is locked elsewhere
    /// (then the commit decides).
    ///
    /// Takes the handle: when it is the last one (the request and the
    /// handler's clones are gone, as they normally are once the response
    /// exists) the state is read without locking. Never allocates.
    pub(crate) fn nothing_to_commit(this: &mut Arc<Self>) -> bool {
        if matches!(this.incoming, Incoming::Invalid) {
            return false;
        }
        // Never used: the state is the default one, nothing to write.
        if !this.used.load(Ordering::Acquire) {
            return true;
        }
        match Arc::get_mut(this) {
            Some(me) => me.state.get_mut().nothing_to_commit(),
            None => this.state.try_lock().is_ok_and(|st| st.nothing_to_commit()),
        }
    }
}

/// The response once the commit ran: the handler's, with the cookie or
/// header the outcome calls for, or a 503 in its place when the store
/// could not be written (the change would otherwise be silently lost).
pub(crate) fn respond<B>(
    ctx: &SessionContext,
    outcome: CommitOutcome,
    grpc: bool,
    response: Response<ResponseBody<B>>,
) -> Response<ResponseBody<B>> {
    if let Some(err) = outcome.error {
        portcullis_core::event!(
            warn,
            reason = "session-write-failed",
            "session store unavailable; answering 503"
        );
        return err.rejection().into_response(&ProblemJson, grpc);
    }
    let mut response = response;
    let config = &ctx.config;
    let headers = response.headers_mut();
    let wrote = outcome.set_token.is_some() || outcome.remove;
    match (&config.transport, outcome.set_token) {
        (Transport::Cookie, Some(token)) => {
            headers.append(
                SET_COOKIE,
                config
                    .cookie
                    .set_cookie(&token.to_encoded(), outcome.max_age),
            );
        }
        (Transport::Cookie, None) if outcome.remove => {
            headers.append(SET_COOKIE, config.cookie.removal_cookie());
        }
        (Transport::Header(name), Some(token)) => {
            if let Ok(v) = HeaderValue::try_from(token.to_encoded()) {
                headers.insert(name.clone(), v);
            }
        }
        _ => {}
    }
    if wrote {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if outcome.clear_site_data && config.clear_site_data {
        headers.insert(
            HeaderName::from_static("clear-site-data"),
            HeaderValue::from_static("\"cookies\""),
        );
    }
    response
}

/// A stored session as a device list entry.
pub(crate) fn active_session(
    key: &TokenDigest,
    rec: &SessionRecord,
    current: bool,
) -> ActiveSession {
    ActiveSession {
        id: key.to_hex(),
        created_at: rec.created_at,
        last_seen: rec.last_seen,
        expires_at: rec.expires_at(),
        user_agent: rec.metadata.user_agent.clone(),
        ip: rec.metadata.ip.clone(),
        current,
    }
}

#[cfg(test)]
mod tests;
