//! The audit trail: audit events as JSON lines, and the last events of
//! each user.
//!
//! An [`AuditTrail`] takes the events of one subscriber
//! ([`Events::subscribe`](super::Events::subscribe)) and keeps those a
//! compliance reviewer asks for ([`AuthEventKind::is_audit`](super::AuthEventKind::is_audit)):
//!
//! - as **JSON lines** ([`AuditTrail::json_lines`]): one
//!   [`AuthEvent::to_json`] object per line, to any [`Write`] (a file in
//!   production);
//! - in a **recent-activity log** ([`RecentActivity`]): the last events of
//!   each user, in memory, for a "your security activity" page.
//!
//! The core crate has no runtime: [`AuditTrail::drain`] is a future the
//! application spawns on its own.
//!
//! ```
//! use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
//! use portcullis_core::events::audit::{AuditTrail, RecentActivity};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let events = Events::new();
//! let recent = RecentActivity::new();
//! let trail = AuditTrail::new()
//!     .json_lines(Vec::new()) // std::fs::File + BufWriter in production
//!     .recent(recent.clone());
//! let drain = trail.drain(events.subscribe("audit", 1024));
//! // In an application: tokio::spawn(drain);
//!
//! events.emit(|| AuthEvent::new("session", AuthEventKind::LoginSucceeded).user("alice"));
//! drop(events); // every handle gone: the drain ends
//! drain.await.unwrap();
//! assert_eq!(recent.recent("alice")[0].kind.name(), "login_succeeded");
//! # });
//! ```
//!
//! # The audit file: personal data
//!
//! Audit lines carry the user id and the client address: personal data.
//! How long they are kept, and who reads them, is the operator's duty.
//! The trail only appends; rotate and expire the file outside the process
//! (logrotate with `copytruncate`, or the platform's log collector reading
//! stdout), and keep it no longer than the retention period the operator
//! has set and documented (for example 90 days). A line is written whole
//! with one `write_all`, and the writer is flushed whenever no event is
//! waiting, so a truncating rotation loses at most the line being written.
//!
//! # What may be missed
//!
//! The drain reads a bounded channel like every subscriber: when it falls
//! behind by more than the channel's capacity, events are dropped and
//! counted ([`EventStream::dropped`]); give the audit subscriber a roomy
//! capacity (thousands) and a buffered writer. [`RecentActivity`] is
//! bounded by construction (events per user, and users), so a flood of
//! distinct user ids cannot grow it without bound: the least recently
//! active users are forgotten first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use super::bus::EventStream;
use super::kind::AuthEvent;
use super::recorder::Recorder;

/// The last audit events of each user, in memory: the data of a "your
/// security activity" page.
///
/// Cheap to clone: clones share the log. Bounded twice: at most
/// [`per_user`](Self::with_limits) events per user (the oldest goes
/// first) and at most `max_users` users (the user whose last event is the
/// oldest goes first).
///
/// ```
/// use portcullis_core::events::{AuthEvent, AuthEventKind};
/// use portcullis_core::events::audit::RecentActivity;
///
/// let recent = RecentActivity::with_limits(2, 100);
/// for kind in [AuthEventKind::LoginSucceeded, AuthEventKind::Logout, AuthEventKind::LoginSucceeded] {
///     recent.record(&AuthEvent::new("session", kind).user("alice"));
/// }
/// let names: Vec<_> = recent.recent("alice").iter().map(|e| e.kind.name()).collect();
/// assert_eq!(names, ["login_succeeded", "logout"]); // newest first, two kept
/// assert!(recent.recent("bob").is_empty());
/// ```
#[derive(Clone)]
pub struct RecentActivity {
    inner: Arc<Mutex<Log>>,
}

struct Log {
    per_user: usize,
    max_users: usize,
    /// Incremented on every recorded event: the users' recency.
    tick: u64,
    users: HashMap<Arc<str>, UserLog>,
    /// The users by the tick of their last event, oldest first.
    by_recency: BTreeMap<u64, Arc<str>>,
}

struct UserLog {
    last: u64,
    /// Oldest first.
    events: VecDeque<Arc<AuthEvent>>,
}

impl fmt::Debug for RecentActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.lock();
        f.debug_struct("RecentActivity")
            .field("per_user", &log.per_user)
            .field("max_users", &log.max_users)
            .field("users", &log.users.len())
            .finish_non_exhaustive()
    }
}

impl Default for RecentActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentActivity {
    /// The default number of events kept per user.
    pub const PER_USER: usize = 20;
    /// The default number of users kept.
    pub const MAX_USERS: usize = 100_000;

    /// The last [`PER_USER`](Self::PER_USER) events of at most
    /// [`MAX_USERS`](Self::MAX_USERS) users (a few hundred bytes per
    /// event: tens of megabytes at most).
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(Self::PER_USER, Self::MAX_USERS)
    }

    /// The last `per_user` events of at most `max_users` users (each at
    /// least 1).
    #[must_use]
    pub fn with_limits(per_user: usize, max_users: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Log {
                per_user: per_user.max(1),
                max_users: max_users.max(1),
                tick: 0,
                users: HashMap::new(),
                by_recency: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // The log stays consistent between statements: a panic elsewhere
        // while it was held leaves nothing half-done worth refusing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event` if it is an audit event ([`AuthEventKind::is_audit`](super::AuthEventKind::is_audit))
    /// with a user; returns whether it was kept.
    pub fn record(&self, event: &AuthEvent) -> bool {
        self.record_arc(&Arc::new(event.clone()))
    }

    fn record_arc(&self, event: &Arc<AuthEvent>) -> bool {
        let Some(user) = event.user.as_ref().filter(|_| event.kind.is_audit()) else {
            return false;
        };
        let mut guard = self.lock();
        let log = &mut *guard;
        log.tick += 1;
        let tick = log.tick;
        if let Some(entry) = log.users.get_mut(user) {
            log.by_recency.remove(&entry.last);
            entry.last = tick;
        } else {
            while log.users.len() >= log.max_users {
                let Some((_, oldest)) = log.by_recency.pop_first() else {
                    break;
                };
                log.users.remove(&oldest);
            }
            log.users.insert(
                Arc::clone(user),
                UserLog {
                    last: tick,
                    events: VecDeque::new(),
                },
            );
        }
        log.by_recency.insert(tick, Arc::clone(user));
        let per_user = log.per_user;
        let entry = log.users.get_mut(user).expect("inserted above");
        if entry.events.len() >= per_user {
            entry.events.pop_front();
        }
        entry.events.push_back(Arc::clone(event));
        true
    }

    /// The user's kept events, newest first.
    #[must_use]
    pub fn recent(&self, user: &str) -> Vec<Arc<AuthEvent>> {
        self.lock()
            .users
            .get(user)
            .map(|u| u.events.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// How many users have events kept.
    #[must_use]
    pub fn users(&self) -> usize {
        self.lock().users.len()
    }
}

/// As a [`Recorder`] (set with [`EventsBuilder::recorder`](super::EventsBuilder::recorder)),
/// the log is fed inline with every event: nothing is dropped, and an
/// event is in the log before the response of the request that emitted it
/// is sent (a page read right after a login shows it). The lock is held
/// for a map update only.
impl Recorder for RecentActivity {
    fn event(&self, event: &AuthEvent) {
        self.record(event);
    }
}

/// Writes audit events as JSON lines: one [`AuthEvent::to_json`] object
/// and a `\n` per audit event ([`AuthEventKind::is_audit`](super::AuthEventKind::is_audit)).
///
/// ```
/// use portcullis_core::events::{AuthEvent, AuthEventKind};
/// use portcullis_core::events::audit::JsonLines;
///
/// let mut lines = JsonLines::new(Vec::new());
/// lines.write(&AuthEvent::new("session", AuthEventKind::Logout).user("alice")).unwrap();
/// // Not an audit event: not written.
/// lines.write(&AuthEvent::new("session", AuthEventKind::SessionRenewed)).unwrap();
/// let text = String::from_utf8(lines.into_inner()).unwrap();
/// assert_eq!(text.lines().count(), 1);
/// assert!(text.contains(r#""event":"logout""#));
/// ```
#[derive(Debug)]
pub struct JsonLines<W> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    /// Lines to `out`. Give a file a [`std::io::BufWriter`]: the drain
    /// flushes whenever no event is waiting.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes `event` as one line if it is an audit event; returns
    /// whether it was written.
    ///
    /// # Errors
    ///
    /// The writer's error.
    pub fn write(&mut self, event: &AuthEvent) -> io::Result<bool> {
        if !event.kind.is_audit() {
            return Ok(false);
        }
        let mut line = event.to_json().to_string();
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        Ok(true)
    }

    /// Flushes the writer.
    ///
    /// # Errors
    ///
    /// The writer's error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Where the audit events of one subscriber go: JSON lines, a
/// [`RecentActivity`] log, or both. See the [module docs](self).
#[must_use]
pub struct AuditTrail {
    lines: Option<JsonLines<Box<dyn Write + Send>>>,
    recent: Option<RecentActivity>,
}

impl fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditTrail")
            .field("json_lines", &self.lines.is_some())
            .field("recent", &self.recent)
            .finish()
    }
}

impl Default for AuditTrail {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditTrail {
    /// A trail that keeps nothing yet.
    pub fn new() -> Self {
        Self {
            lines: None,
            recent: None,
        }
    }

    /// Writes audit events as JSON lines to `out` ([`JsonLines`]).
    pub fn json_lines(mut self, out: impl Write + Send + 'static) -> Self {
        self.lines = Some(JsonLines::new(Box::new(out)));
        self
    }

    /// Keeps each user's last audit events in `recent`. (Or make `recent`
    /// a [`Recorder`] of the [`Events`](super::Events) handle instead: fed
    /// inline, it misses nothing.)
    pub fn recent(mut self, recent: RecentActivity) -> Self {
        self.recent = Some(recent);
        self
    }

    /// Hands one event to the sinks (audit events only).
    ///
    /// # Errors
    ///
    /// The JSON lines writer's error (the recent-activity log has kept the
    /// event already).
    pub fn record(&mut self, event: &Arc<AuthEvent>) -> io::Result<()> {
        if let Some(recent) = &self.recent {
            recent.record_arc(event);
        }
        if let Some(lines) = &mut self.lines {
            lines.write(event)?;
        }
        Ok(())
    }

    /// Feeds the sinks with `stream`'s events until every
    /// [`Events`](super::Events) handle is gone. Spawn it
    /// (`tokio::spawn(trail.drain(stream))`). Writing is blocking I/O:
    /// one buffered line per audit event, flushed whenever no event is
    /// waiting.
    ///
    /// # Errors
    ///
    /// The first write or flush error of the JSON lines writer: the drain
    /// stops there, so a broken audit file is seen (log the error) rather
    /// than silently skipped.
    pub async fn drain(mut self, mut stream: EventStream) -> io::Result<()> {
        while let Some(event) = stream.recv().await {
            self.record(&event)?;
            while let Some(event) = stream.try_recv() {
                self.record(&event)?;
            }
            if let Some(lines) = &mut self.lines {
                lines.flush()?;
            }
        }
        if let Some(lines) = &mut self.lines {
            lines.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AuthEventKind, EventContext, Events, TraceId};
    use std::time::Duration;

    fn login(user: &str) -> AuthEvent {
        AuthEvent::new("session", AuthEventKind::LoginSucceeded).user(user)
    }

    /// A writer the test can read while the trail owns a clone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn keeps_the_last_n_events_of_a_user_newest_first() {
        let recent = RecentActivity::with_limits(3, 10);
        for i in 0..5 {
            let reason = ["r0", "r1", "r2", "r3", "r4"][i];
            recent.record(
                &AuthEvent::new("session", AuthEventKind::LoginFailed { reason }).user("alice"),
            );
        }
        let reasons: Vec<_> = recent
            .recent("alice")
            .iter()
            .map(|e| e.kind.reason().unwrap())
            .collect();
        assert_eq!(reasons, ["r4", "r3", "r2"]);
    }

    #[test]
    fn default_keeps_twenty_per_user() {
        let recent = RecentActivity::new();
        for _ in 0..25 {
            recent.record(&login("alice"));
        }
        assert_eq!(recent.recent("alice").len(), 20);
    }

    #[test]
    fn keeps_only_audit_events_with_a_user() {
        let recent = RecentActivity::new();
        assert!(!recent.record(&AuthEvent::new("session", AuthEventKind::LoginSucceeded)));
        assert!(
            !recent.record(&AuthEvent::new("session", AuthEventKind::SessionRenewed).user("alice"))
        );
        assert!(recent.record(&login("alice")));
        assert_eq!(recent.recent("alice").len(), 1);
        assert_eq!(recent.users(), 1);
    }

    #[test]
    fn users_never_see_each_others_events() {
        let recent = RecentActivity::new();
        recent.record(&login("alice"));
        recent.record(&AuthEvent::new("session", AuthEventKind::Logout).user("bob"));
        assert!(
            recent
                .recent("alice")
                .iter()
                .all(|e| e.user.as_deref() == Some("alice"))
        );
        assert_eq!(recent.recent("bob")[0].kind.name(), "logout");
    }

    #[test]
    fn a_flood_of_users_is_bounded_and_evicts_the_least_recent() {
        let recent = RecentActivity::with_limits(20, 3);
        recent.record(&login("alice"));
        recent.record(&login("bob"));
        recent.record(&login("carol"));
        // alice is active again: bob is now the least recent.
        recent.record(&login("alice"));
        recent.record(&login("dave"));
        assert_eq!(recent.users(), 3);
        assert!(recent.recent("bob").is_empty());
        assert_eq!(recent.recent("alice").len(), 2);
        assert_eq!(recent.recent("carol").len(), 1);
        assert_eq!(recent.recent("dave").len(), 1);

        for i in 0..10_000 {
            recent.record(&login(&format!("flood-{i}")));
        }
        assert_eq!(recent.users(), 3);
        assert!(recent.recent("alice").is_empty());
        assert_eq!(recent.recent("flood-9999").len(), 1);
        let log = recent.lock();
        assert_eq!(log.by_recency.len(), log.users.len());
    }

    #[test]
    fn json_lines_are_one_object_per_audit_event() {
        let context = EventContext {
            route: Some("/login".into()),
            client: Some("203.0.113.9".parse().unwrap()),
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736"),
        };
        let mut lines = JsonLines::new(Vec::new());
        let failed = AuthEvent::new(
            "session",
            AuthEventKind::LoginFailed {
                reason: "invalid_credentials",
            },
        )
        .user("alice")
        .context(&context);
        assert!(lines.write(&failed).unwrap());
        assert!(
            lines
                .write(
                    &AuthEvent::new(
                        "throttle",
                        AuthEventKind::Throttled {
                            retry_after: Duration::from_secs(30)
                        }
                    )
                    .context(&context)
                )
                .unwrap()
        );
        assert!(
            !lines
                .write(&AuthEvent::new(
                    "csrf",
                    AuthEventKind::CsrfRefused {
                        reason: "csrf-cross-origin"
                    }
                ))
                .unwrap()
        );
        let text = String::from_utf8(lines.into_inner()).unwrap();
        assert!(text.ends_with('\n'));
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], failed.to_json());
        assert_eq!(parsed[0]["event"], "login_failed");
        assert_eq!(parsed[0]["reason"], "invalid_credentials");
        assert_eq!(parsed[0]["user"], "alice");
        assert_eq!(parsed[0]["client"], "203.0.113.9");
        assert_eq!(parsed[0]["route"], "/login");
        assert_eq!(parsed[1]["event"], "throttled");
        assert_eq!(parsed[1]["retry_after_s"], 30);
    }

    #[test]
    fn the_drain_feeds_both_sinks_until_the_bus_is_gone() {
        let events = Events::new();
        let out = Shared::default();
        let recent = RecentActivity::new();
        let drain = AuditTrail::new()
            .json_lines(out.clone())
            .recent(recent.clone())
            .drain(events.subscribe("audit", 64));
        events.emit(|| login("alice"));
        events.emit(|| AuthEvent::new("session", AuthEventKind::SessionRenewed).user("alice"));
        events.emit(|| AuthEvent::new("session", AuthEventKind::Logout).user("bob"));
        drop(events);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(drain)
            .unwrap();
        let text = out.text();
        let events: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(events, [r#""login_succeeded""#, r#""logout""#]);
        assert_eq!(recent.recent("alice").len(), 1);
        assert_eq!(recent.recent("bob").len(), 1);
    }

    #[test]
    fn the_drain_stops_at_a_broken_writer() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let events = Events::new();
        let recent = RecentActivity::new();
        let drain = AuditTrail::new()
            .json_lines(Broken)
            .recent(recent.clone())
            .drain(events.subscribe("audit", 64));
        events.emit(|| login("alice"));
        let err = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(drain)
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        // The in-memory log kept the event the file could not.
        assert_eq!(recent.recent("alice").len(), 1);
    }

    #[test]
    fn as_a_recorder_it_is_fed_inline() {
        let recent = RecentActivity::new();
        let events = Events::builder().recorder(recent.clone()).build();
        assert!(events.enabled());
        events.emit(|| login("alice"));
        // No subscriber, no drain: the event is there already.
        assert_eq!(recent.recent("alice").len(), 1);
    }
}
