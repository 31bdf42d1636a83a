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
//! The JSON lines are written on a thread of their own
//! ([`AuditTrail::spawn`]): a writer that blocks (a pipe to a stalled log
//! collector, a hung network mount) never holds up a runtime worker, so
//! never a request. Open the file with [`open_file`]: readable by its
//! owner only.
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
//! let writer = trail.spawn(events.subscribe("audit", 1024)).unwrap();
//!
//! events.emit(|| AuthEvent::new("session", AuthEventKind::LoginSucceeded).user("alice"));
//! drop(events); // every handle gone: the writer ends
//! writer.finished().await.unwrap();
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
//! The writer reads a bounded channel like every subscriber: when it falls
//! behind by more than the channel's capacity, events are dropped and
//! counted ([`EventStream::dropped`]); give the audit subscriber a roomy
//! capacity (thousands) and a buffered writer. A writer that blocks for
//! good loses the events that arrive meanwhile, counted the same way; the
//! requests go on. [`RecentActivity`] is bounded by construction (events
//! per user, and users), so a flood of distinct user ids cannot grow it
//! without bound: the least recently active users are forgotten first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use tokio::sync::oneshot;

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
/// Failed logins and throttled attempts are events anyone can add to an
/// account (by typing its name with a wrong password): of a user's
/// `per_user` events, at most [`failures`](Self::failures) are those (the
/// oldest failure goes first), so they never push the user's other events
/// (logins, logouts, password changes, revoked devices) off the page: the
/// last `per_user - failures` of those always stay.
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
    max_failures: usize,
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
    /// How many of `events` are failures ([`is_failure`]).
    failures: usize,
}

/// Events anyone can add to an account's log: a wrong password typed at
/// its name, and the throttle refusing the attempts that follow.
fn is_failure(event: &AuthEvent) -> bool {
    matches!(
        event.kind,
        super::AuthEventKind::LoginFailed { .. } | super::AuthEventKind::Throttled { .. }
    )
}

impl fmt::Debug for RecentActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.lock();
        f.debug_struct("RecentActivity")
            .field("per_user", &log.per_user)
            .field("failures", &log.max_failures)
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
    /// The default number of failures ([`failures`](Self::failures))
    /// among a user's events.
    pub const FAILURES: usize = 5;
    /// The default number of users kept.
    pub const MAX_USERS: usize = 10_000;

    /// The last [`PER_USER`](Self::PER_USER) events of at most
    /// [`MAX_USERS`](Self::MAX_USERS) users, at most
    /// [`FAILURES`](Self::FAILURES) of them failures. An event as the
    /// session layer emits it (user, device handle, route, client, trace
    /// id) takes about 400 bytes here: the defaults hold 200 000 events,
    /// about 80 MiB at most. Lower `max_users` for a smaller bound.
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(Self::PER_USER, Self::MAX_USERS)
    }

    /// The last `per_user` events of at most `max_users` users (each at
    /// least 1), at most a quarter of them (at least 1) failures.
    #[must_use]
    pub fn with_limits(per_user: usize, max_users: usize) -> Self {
        let per_user = per_user.max(1);
        Self {
            inner: Arc::new(Mutex::new(Log {
                per_user,
                max_failures: (per_user / 4).max(1),
                max_users: max_users.max(1),
                tick: 0,
                users: HashMap::new(),
                by_recency: BTreeMap::new(),
            })),
        }
    }

    /// At most `failures` (at least 1, at most the events kept per user)
    /// of a user's events are failed logins or throttled attempts: the
    /// events anyone can add to an account. The oldest failure goes first.
    ///
    /// ```
    /// use portcullis_core::events::{AuthEvent, AuthEventKind};
    /// use portcullis_core::events::audit::RecentActivity;
    ///
    /// let recent = RecentActivity::with_limits(3, 100).failures(1);
    /// recent.record(&AuthEvent::new("session", AuthEventKind::LoginSucceeded).user("alice"));
    /// for _ in 0..10 {
    ///     let failed = AuthEventKind::LoginFailed { reason: "invalid_credentials" };
    ///     recent.record(&AuthEvent::new("session", failed).user("alice"));
    /// }
    /// let names: Vec<_> = recent.recent("alice").iter().map(|e| e.kind.name()).collect();
    /// assert_eq!(names, ["login_failed", "login_succeeded"]);
    /// ```
    #[must_use]
    pub fn failures(self, failures: usize) -> Self {
        {
            let mut log = self.lock();
            log.max_failures = failures.clamp(1, log.per_user);
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // The log stays consistent between statements: a panic elsewhere
        // while it was held leaves nothing half-done worth refusing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event` if it is an audit event ([`AuthEventKind::is_audit`](super::AuthEventKind::is_audit))
    /// with a user; returns whether it was kept.
    pub fn record(&self, event: &AuthEvent) -> bool {
        if !Self::keeps(event) {
            return false;
        }
        self.record_arc(&Arc::new(event.clone()))
    }

    fn keeps(event: &AuthEvent) -> bool {
        event.user.is_some() && event.kind.is_audit()
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
                    failures: 0,
                },
            );
        }
        log.by_recency.insert(tick, Arc::clone(user));
        let (per_user, max_failures) = (log.per_user, log.max_failures);
        let entry = log.users.get_mut(user).expect("inserted above");
        let failure = is_failure(event);
        if failure && entry.failures >= max_failures {
            // A failure only ever replaces a failure.
            let oldest = entry.events.iter().position(|e| is_failure(e));
            if let Some(i) = oldest {
                entry.events.remove(i);
                entry.failures -= 1;
            }
        }
        if entry.events.len() >= per_user {
            let oldest = entry.events.pop_front();
            if oldest.is_some_and(|e| is_failure(&e)) {
                entry.failures -= 1;
            }
        }
        entry.failures += usize::from(failure);
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

    /// Feeds the sinks with `stream`'s events on a thread of its own
    /// (`portcullis-audit`) until every [`Events`](super::Events) handle
    /// is gone. Writing is blocking I/O, kept off the runtime: a writer
    /// that blocks (a pipe nobody reads) stops this thread only, never a
    /// request. One line per audit event, flushed whenever no event is
    /// waiting.
    ///
    /// The thread stops at the first write or flush error of the JSON
    /// lines writer, so a broken audit file is seen
    /// ([`AuditWriter::finished`], [`AuditWriter::join`]: log the error)
    /// rather than silently skipped.
    ///
    /// ```
    /// use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
    /// use portcullis_core::events::audit::AuditTrail;
    ///
    /// let events = Events::new();
    /// let writer = AuditTrail::new()
    ///     .json_lines(Vec::new())
    ///     .spawn(events.subscribe("audit", 1024))
    ///     .expect("a thread");
    /// events.emit(|| AuthEvent::new("session", AuthEventKind::Logout).user("alice"));
    /// drop(events);
    /// writer.join().unwrap(); // or, in a task: writer.finished().await
    /// ```
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn spawn(mut self, mut stream: EventStream) -> io::Result<AuditWriter> {
        let (tx, rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || {
                let result = self.feed(&mut stream);
                // Nobody waiting for the result is fine.
                let _ = tx.send(result);
            })?;
        Ok(AuditWriter { thread, rx })
    }

    /// Runs on the writer's thread.
    fn feed(&mut self, stream: &mut EventStream) -> io::Result<()> {
        while let Some(event) = block_on(stream.recv()) {
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

    /// [`spawn`](Self::spawn), then [`AuditWriter::finished`]: a future
    /// that ends when the writer's thread does (`tokio::spawn(trail.drain(stream))`).
    /// The writing happens on the thread, never in the future; dropping
    /// the future does not stop the thread.
    ///
    /// # Errors
    ///
    /// As [`AuditWriter::finished`], or the thread could not be started.
    pub async fn drain(self, stream: EventStream) -> io::Result<()> {
        self.spawn(stream)?.finished().await
    }
}

/// The audit trail's writer thread ([`AuditTrail::spawn`]). Dropping the
/// handle leaves the thread running: it ends when every
/// [`Events`](super::Events) handle is gone, or at a write error.
#[derive(Debug)]
#[must_use = "the handle reports the writer's error"]
pub struct AuditWriter {
    thread: thread::JoinHandle<()>,
    rx: oneshot::Receiver<io::Result<()>>,
}

impl AuditWriter {
    /// Whether the thread has ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits (without blocking a runtime) for the thread to end: every
    /// [`Events`](super::Events) handle gone and every line flushed, or
    /// the first write error.
    ///
    /// # Errors
    ///
    /// The JSON lines writer's first write or flush error; an
    /// [`io::ErrorKind::Other`] error if the thread panicked.
    pub async fn finished(self) -> io::Result<()> {
        self.rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the audit writer thread panicked")))
    }

    /// Blocks the calling thread until the writer's ends. Not on a
    /// runtime worker: use [`finished`](Self::finished) there.
    ///
    /// # Errors
    ///
    /// As [`finished`](Self::finished).
    pub fn join(self) -> io::Result<()> {
        let Self { thread, mut rx } = self;
        if thread.join().is_err() {
            return Err(io::Error::other("the audit writer thread panicked"));
        }
        rx.try_recv()
            .unwrap_or_else(|_| Err(io::Error::other("the audit writer thread panicked")))
    }
}

/// Runs `future` to completion on the calling thread, parking it while the
/// future waits: the writer's thread has no runtime (the event channel
/// needs none).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Opens (creating it if need be) the audit file at `path` for appending;
/// a file it creates is readable and writable by its owner only (mode
/// `0600` on Unix): audit lines are personal data. An existing file keeps
/// its mode.
///
/// ```no_run
/// use portcullis_core::events::audit::{AuditTrail, open_file};
///
/// let file = open_file("/var/log/app/audit.jsonl")?;
/// let trail = AuditTrail::new().json_lines(std::io::BufWriter::new(file));
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The error opening or creating the file.
pub fn open_file(path: impl AsRef<Path>) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
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
        let recent = RecentActivity::with_limits(3, 10).failures(3);
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

    /// A writer that always fails.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_drain_stops_at_a_broken_writer() {
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

    fn failed(user: &str) -> AuthEvent {
        AuthEvent::new(
            "session",
            AuthEventKind::LoginFailed {
                reason: "invalid_credentials",
            },
        )
        .user(user)
    }

    fn names(recent: &RecentActivity, user: &str) -> Vec<&'static str> {
        recent.recent(user).iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn failures_never_push_other_events_off_a_users_log() {
        let recent = RecentActivity::new();
        recent.record(&login("alice"));
        recent.record(&AuthEvent::new("session", AuthEventKind::PasswordChanged).user("alice"));
        for _ in 0..100 {
            recent.record(&failed("alice"));
            recent.record(
                &AuthEvent::new(
                    "throttle",
                    AuthEventKind::Throttled {
                        retry_after: Duration::from_secs(1),
                    },
                )
                .user("alice"),
            );
        }
        let kept = names(&recent, "alice");
        assert_eq!(kept.len(), 2 + RecentActivity::FAILURES);
        assert_eq!(
            &kept[kept.len() - 2..],
            ["password_changed", "login_succeeded"]
        );
        // The newest failures are the ones kept.
        assert_eq!(kept[0], "throttled");
    }

    #[test]
    fn a_users_own_events_still_age_out_past_the_bound() {
        let recent = RecentActivity::with_limits(4, 10).failures(2);
        recent.record(&failed("alice"));
        recent.record(&failed("alice"));
        for _ in 0..3 {
            recent.record(&login("alice"));
        }
        // Four kept: the oldest failure gave way to the third login.
        assert_eq!(
            names(&recent, "alice"),
            [
                "login_succeeded",
                "login_succeeded",
                "login_succeeded",
                "login_failed"
            ]
        );
        for _ in 0..3 {
            recent.record(&failed("alice"));
        }
        // Failures replace failures: at most two, and two logins stay.
        assert_eq!(
            names(&recent, "alice"),
            [
                "login_failed",
                "login_failed",
                "login_succeeded",
                "login_succeeded"
            ]
        );
        let log = recent.lock();
        assert_eq!(log.users["alice"].failures, 2);
    }

    #[test]
    fn the_failure_share_is_clamped_to_the_log() {
        let recent = RecentActivity::with_limits(3, 10).failures(0);
        recent.record(&failed("alice"));
        recent.record(&failed("alice"));
        assert_eq!(names(&recent, "alice"), ["login_failed"]);
        let recent = RecentActivity::with_limits(3, 10).failures(99);
        for _ in 0..5 {
            recent.record(&failed("alice"));
        }
        assert_eq!(recent.recent("alice").len(), 3);
    }

    #[test]
    fn lines_are_written_on_the_writers_own_thread() {
        /// Records the name of the thread each write runs on.
        #[derive(Clone, Default)]
        struct Threads(Arc<Mutex<Vec<Option<String>>>>);
        impl Write for Threads {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0
                    .lock()
                    .unwrap()
                    .push(thread::current().name().map(str::to_owned));
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let events = Events::new();
        let threads = Threads::default();
        let writer = AuditTrail::new()
            .json_lines(threads.clone())
            .spawn(events.subscribe("audit", 64))
            .unwrap();
        events.emit(|| login("alice"));
        drop(events);
        writer.join().unwrap();
        assert_eq!(
            *threads.0.lock().unwrap(),
            [Some("portcullis-audit".to_owned())]
        );
    }

    #[test]
    fn the_writer_reports_a_broken_file_when_joined() {
        let events = Events::new();
        let writer = AuditTrail::new()
            .json_lines(Broken)
            .spawn(events.subscribe("audit", 64))
            .unwrap();
        events.emit(|| login("alice"));
        assert_eq!(writer.join().unwrap_err().to_string(), "disk full");
    }

    #[cfg(unix)]
    #[test]
    fn the_audit_file_is_created_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("portcullis-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut file = open_file(&path).unwrap();
        file.write_all(b"one\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        drop(file);
        // Reopened: appended to, not truncated.
        open_file(&path).unwrap().write_all(b"two\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(text, "one\ntwo\n");
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
