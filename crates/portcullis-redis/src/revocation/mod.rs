//! `RedisRevocationStore`: JWT revocations shared by every instance, pushed
//! into each instance's in-process view. (About 570 lines, 160 of them
//! docs: the store, its builder and the view's staleness rules are one
//! contract; the subscriber task and the scripts have files of their own.)
//!
//! ```no_run
//! use portcullis_jwt::revocation::RevocationStore as _;
//! use portcullis_redis::{RedisConfig, RedisRevocationStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/").build()?;
//! let revocations = RedisRevocationStore::new(backend)?; // spawns the subscriber
//! // Before serving: the first snapshot is in the view.
//! revocations.wait_synced(std::time::Duration::from_secs(5)).await;
//! let view = revocations.view(); // give it to JwtLayer::builder(..).revocation(view)
//! revocations.revoke_user("alice").await?; // refused on every instance within ms
//! # let _ = view; Ok(()) }
//! ```
//!
//! See the [crate docs](crate#revocations) for the key layout, the push
//! channel and the measured propagation.

mod scripts;
mod subscriber;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
use portcullis_core::{SharedClock, StoreError, SystemClock};
use portcullis_jwt::revocation::{RevocationEvent, RevocationStore, RevocationView};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{Idempotent, Op, RedisBackend};
use scripts::{REVOKE_ENTRY, REVOKE_USER};

/// Default interval of the subscriber's `PING`, which finds a connection
/// that died silently (a frozen server, a dropped network path).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);

/// Default longest pause between two reconnection attempts of the
/// subscriber (the first pause is the backend's reconnect backoff, then it
/// doubles).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Room for clock skew, in seconds, on top of the leeway: entries stay in
/// Redis (and in snapshots) this much longer.
const SKEW_MARGIN_SECS: i64 = 60;

/// How long past its expiry an entry is kept in Redis, and how long the
/// token and session sets outlive their latest entry's expiry, in seconds:
/// the largest leeway a layer accepts a token with past its `exp`, plus
/// [`SKEW_MARGIN_SECS`]. Counted from the earlier of the caller's clock and
/// the server's `TIME`, never from one instance's clock alone.
const KEEP_SECS: i64 = LEEWAY_SECS + SKEW_MARGIN_SECS;

/// `portcullis_jwt::MAX_LEEWAY` in seconds: the largest leeway a layer
/// accepts a token with past its `exp` (the view keeps entries that long
/// at least).
#[allow(clippy::cast_possible_wrap)] // 300
const LEEWAY_SECS: i64 = portcullis_jwt::MAX_LEEWAY.as_secs() as i64;

/// The default staleness bound is this many ping intervals (or the ping
/// interval plus two call timeouts, if that is longer).
const STALENESS_PINGS: u32 = 4;

/// The source of the store's events.
const EVENT_SOURCE: &str = "redis";

/// A [`RevocationStore`] on Redis (or Redis Cluster) whose
/// [`RevocationView`] every instance keeps current by Redis pub/sub.
///
/// - Revocations are written to Redis, then published (in one script);
///   every instance's subscriber applies them to its view within
///   milliseconds. A JWT check reads only the view: no Redis call per
///   request.
/// - Each instance has one dedicated subscriber connection (a task spawned
///   by [`start`](RedisRevocationStoreBuilder::start)). When it connects,
///   and after every reconnect, it subscribes first and then loads a
///   snapshot of every live entry into the view, so a message missed while
///   disconnected is made up for. It pings the server every second (by
///   default) and reconnects by itself, with a doubling backoff.
/// - Snapshots are merged into the view, never replace it: revocations only
///   grow (entries leave the view when their tokens expire), so a Redis that
///   lost its data does not bring revoked tokens back on instances that
///   saw them.
/// - Redis down: revoke calls fail with a [`StoreError`] (503 upstream)
///   within the backend's timeout; the view keeps its state and requests
///   keep being checked against it.
/// - Cut off from Redis for longer than
///   [`max_staleness`](RedisRevocationStoreBuilder::max_staleness) (4 s by
///   default), the view is marked stale and layers answer 503 until a
///   fresh snapshot has loaded: an instance that cannot hear of
///   revocations stops accepting tokens rather than accept revoked ones.
/// - Denylist entries are kept `portcullis_jwt::MAX_LEEWAY` past the
///   expiry they were given, plus 60 s for clock skew, in Redis and in
///   snapshots; the view keeps them at least `MAX_LEEWAY` past it. Redis
///   forgets an entry only once both the revoking instance's clock and
///   the server's `TIME` say so, and a snapshot loads every entry the
///   server has not forgotten: one instance whose clock runs ahead never
///   removes entries from the set every instance shares.
///
/// Until the first snapshot has loaded, the view holds only what this
/// instance revoked itself: wait for [`wait_synced`](Self::wait_synced)
/// before serving. Dropping the last clone stops the subscriber.
#[derive(Clone)]
pub struct RedisRevocationStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<StoreState>,
    task: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(w) = &self.watchdog {
            w.abort();
        }
    }
}

/// What the store and its subscriber task share.
struct StoreState {
    backend: RedisBackend,
    view: RevocationView,
    clock: SharedClock,
    keys: Keys,
    sync: watch::Sender<SyncState>,
    messages: AtomicU64,
    health: Mutex<Health>,
    events: Events,
}

/// When the subscriber's connection was last verified alive, and whether
/// the watchdog has marked the view stale since.
#[derive(Debug, Clone, Copy)]
struct Health {
    alive_at: Instant,
    stale: bool,
}

impl StoreState {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection answered (a ping, a message): it is alive now.
    /// Returns whether the view is stale (then the subscriber loads a
    /// fresh snapshot before trusting it again).
    fn alive(&self) -> bool {
        let mut h = self.health();
        h.alive_at = Instant::now();
        h.stale
    }

    /// A fresh snapshot has loaded: the view is current and trusted. A view
    /// the watchdog had marked stale is in step again: the
    /// `revocation_view_recovered` event (not on every connect).
    fn fresh(&self) {
        let was_stale = {
            let mut h = self.health();
            h.alive_at = Instant::now();
            std::mem::replace(&mut h.stale, false)
        };
        self.view.mark_ready();
        if was_stale {
            self.events
                .emit(|| AuthEvent::new(EVENT_SOURCE, AuthEventKind::RevocationViewRecovered));
        }
    }
}

/// The keys and the channel (see the crate docs' key layout).
#[derive(Debug)]
struct Keys {
    tokens: String,
    sessions: String,
    users: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            tokens: format!("{prefix}:rv:t"),
            sessions: format!("{prefix}:rv:s"),
            users: format!("{prefix}:rv:u"),
            channel: format!("{prefix}:rv"),
        }
    }
}

/// The subscriber's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SyncState {
    /// Subscribed, with a snapshot loaded since the last (re)connect.
    connected: bool,
    /// Snapshots loaded so far (one per successful (re)connect).
    snapshots: u64,
}

impl fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.inner.shared;
        let state = *shared.sync.borrow();
        f.debug_struct("RedisRevocationStore")
            .field("backend", &shared.backend)
            .field("view", &shared.view)
            .field("connected", &state.connected)
            .field("snapshots", &state.snapshots)
            .field("stale", &shared.health().stale)
            .finish_non_exhaustive()
    }
}

/// Why a [`RedisRevocationStore`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationStartError {
    /// There is no Tokio runtime to spawn the subscriber task on.
    #[error("RedisRevocationStore must start inside a Tokio runtime (it spawns its subscriber)")]
    NoRuntime,
    /// A backend built from a `deadpool-redis` pool does not say where to
    /// open the dedicated subscriber connection.
    #[error(
        "a backend built from a pool cannot open the subscriber connection; build it with RedisConfig::new or RedisConfig::cluster"
    )]
    NoSubscriber,
    /// The ping interval or the backoff is zero.
    #[error("the ping interval and the maximum backoff must be non-zero")]
    Interval,
    /// The staleness bound is not longer than the ping interval plus the
    /// backend's timeout: a healthy connection would be reported stale
    /// between two pings.
    #[error("max_staleness must be longer than the ping interval plus the backend's timeout")]
    Staleness,
}

/// Builds a [`RedisRevocationStore`].
#[must_use]
#[derive(Debug)]
pub struct RedisRevocationStoreBuilder {
    backend: RedisBackend,
    clock: SharedClock,
    ping_interval: Duration,
    max_backoff: Duration,
    max_staleness: Staleness,
    events: Events,
}

/// The staleness bound a builder was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staleness {
    Default,
    Bound(Duration),
    Unbounded,
}

impl RedisRevocationStoreBuilder {
    /// The clock that says when entries expire (default: the system
    /// clock). Give the view's users (the JWT layer) the same clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// How often the subscriber pings the server to find a connection
    /// that died silently (default 1 s).
    pub const fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// The longest pause between two reconnection attempts (default 2 s):
    /// how long, at most, the view may miss changes after Redis is back.
    pub const fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// How long the view may go without a verified connection to Redis
    /// before layers answer 503 (default: 4 ping intervals, or the ping
    /// interval plus two backend timeouts if that is longer; 4 s with the
    /// defaults).
    ///
    /// "Verified" means the subscriber's connection answered: a ping, a
    /// message, or a snapshot. An instance cut off from Redis (Redis down,
    /// the network path broken, or the server frozen while its socket
    /// stays open) cannot learn of revocations made elsewhere; past this
    /// bound its view is marked stale and every JWT request is refused
    /// (503) until the subscriber has reconnected and loaded a fresh
    /// snapshot. A timer of its own enforces the bound, whatever the
    /// subscriber is doing (reconnecting, waiting out its backoff).
    ///
    /// `None` turns the bound off: the instance keeps accepting tokens
    /// while cut off, for as long as the cut lasts, including tokens
    /// revoked elsewhere meanwhile. That trades revocation for
    /// availability; choose it knowingly.
    ///
    /// The bound must be longer than the ping interval plus the backend's
    /// timeout ([`RevocationStartError::Staleness`] otherwise).
    pub const fn max_staleness(mut self, bound: Option<Duration>) -> Self {
        self.max_staleness = match bound {
            Some(d) => Staleness::Bound(d),
            None => Staleness::Unbounded,
        };
        self
    }

    /// Where the store's events go (default [`Events::default`]: nothing
    /// listens). Source `redis`:
    ///
    /// | kind | when |
    /// |---|---|
    /// | `revocation_view_stale` | the view went past [`max_staleness`](Self::max_staleness) without a verified connection: JWT requests answer 503 from now on |
    /// | `revocation_view_recovered` | a fresh snapshot loaded after that: the view is in step again (once per stale spell, not on every connect) |
    ///
    /// ```no_run
    /// use portcullis_core::events::Events;
    /// use portcullis_redis::{RedisConfig, RedisRevocationStore};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let events = Events::new();
    /// let mut alerts = events.subscribe("alerts", 16);
    /// let backend = RedisConfig::new("redis://127.0.0.1:6379/").build()?;
    /// let revocations = RedisRevocationStore::builder(backend).events(events.clone()).start()?;
    /// while let Some(event) = alerts.recv().await {
    ///     eprintln!("{}: {}", event.source, event.kind.name());
    /// }
    /// # let _ = revocations; Ok(()) }
    /// ```
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The staleness bound in force: the one given, or the default.
    fn staleness(&self) -> Option<Duration> {
        match self.max_staleness {
            Staleness::Default => Some(
                (self.ping_interval * STALENESS_PINGS)
                    .max(self.ping_interval + self.backend.timeout() * 2),
            ),
            Staleness::Bound(d) => Some(d),
            Staleness::Unbounded => None,
        }
    }

    /// Starts the store: spawns the subscriber task, which connects,
    /// subscribes and loads the first snapshot in the background (see
    /// [`RedisRevocationStore::wait_synced`]).
    ///
    /// # Errors
    ///
    /// [`RevocationStartError`] outside a Tokio runtime, for a pool-backed
    /// backend, for a zero interval, or for a staleness bound too short.
    pub fn start(self) -> Result<RedisRevocationStore, RevocationStartError> {
        if self.ping_interval.is_zero() || self.max_backoff.is_zero() {
            return Err(RevocationStartError::Interval);
        }
        let staleness = self.staleness();
        if staleness.is_some_and(|s| s <= self.ping_interval + self.backend.timeout()) {
            return Err(RevocationStartError::Staleness);
        }
        let clients = self.backend.subscriber_clients();
        if clients.is_empty() {
            return Err(RevocationStartError::NoSubscriber);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RevocationStartError::NoRuntime)?;
        let shared = Arc::new(StoreState {
            keys: Keys::new(self.backend.key_prefix()),
            view: RevocationView::pending(self.clock.clone()),
            backend: self.backend,
            clock: self.clock,
            sync: watch::Sender::new(SyncState::default()),
            messages: AtomicU64::new(0),
            health: Mutex::new(Health {
                alive_at: Instant::now(),
                stale: false,
            }),
            events: self.events,
        });
        let min_backoff = shared.backend.reconnect_backoff().min(self.max_backoff);
        let task = runtime.spawn(subscriber::run(
            Arc::clone(&shared),
            clients,
            subscriber::Timing {
                ping_interval: self.ping_interval,
                min_backoff,
                max_backoff: self.max_backoff,
            },
        ));
        let watchdog =
            staleness.map(|bound| runtime.spawn(subscriber::watchdog(Arc::clone(&shared), bound)));
        Ok(RedisRevocationStore {
            inner: Arc::new(Inner {
                shared,
                task,
                watchdog,
            }),
        })
    }
}

impl RedisRevocationStore {
    /// Starts a store on `backend` with the defaults (system clock, ping
    /// every second, reconnect backoff up to 2 s, the view marked stale
    /// after 4 s without a verified connection).
    ///
    /// # Errors
    ///
    /// See [`RedisRevocationStoreBuilder::start`].
    pub fn new(backend: RedisBackend) -> Result<Self, RevocationStartError> {
        Self::builder(backend).start()
    }

    /// A builder, to set the clock, the subscriber's timing or the
    /// staleness bound.
    pub fn builder(backend: RedisBackend) -> RedisRevocationStoreBuilder {
        RedisRevocationStoreBuilder {
            backend,
            clock: SystemClock::shared(),
            ping_interval: DEFAULT_PING_INTERVAL,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_staleness: Staleness::Default,
            events: Events::default(),
        }
    }

    /// Whether the view is marked stale: cut off from Redis for longer
    /// than [`max_staleness`](RedisRevocationStoreBuilder::max_staleness),
    /// with no fresh snapshot since (layers answer 503 meanwhile).
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.inner.shared.health().stale
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &RedisBackend {
        &self.inner.shared.backend
    }

    /// Whether the subscriber is connected and has loaded its snapshot
    /// since it last (re)connected: the view is current.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.inner.shared.sync.borrow().connected
    }

    /// Snapshots loaded so far: one at start, one after every reconnect.
    #[must_use]
    pub fn snapshots(&self) -> u64 {
        self.inner.shared.sync.borrow().snapshots
    }

    /// Messages the subscriber received and applied so far.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.inner.shared.messages.load(Ordering::Relaxed)
    }

    /// Waits until the view is current (subscribed, snapshot loaded), for
    /// `timeout` at most; returns whether it is.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.shared.sync.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until a snapshot newer than the `after`-th has loaded (after a
    /// reconnect), for `timeout` at most; returns whether one did.
    pub async fn wait_snapshot(&self, after: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.shared.sync.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.snapshots > after))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The Redis key of the token (`jti`) denylist: `<prefix>:rv:t`.
    #[must_use]
    pub fn tokens_key(&self) -> &str {
        &self.inner.shared.keys.tokens
    }

    /// The Redis key of the session (`sid`) denylist: `<prefix>:rv:s`.
    #[must_use]
    pub fn sessions_key(&self) -> &str {
        &self.inner.shared.keys.sessions
    }

    /// The Redis key of the user versions: `<prefix>:rv:u`.
    #[must_use]
    pub fn users_key(&self) -> &str {
        &self.inner.shared.keys.users
    }

    /// The pub/sub channel: `<prefix>:rv`.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.inner.shared.keys.channel
    }

    async fn revoke_entry(
        &self,
        key: &str,
        kind: char,
        id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let mut inv = REVOKE_ENTRY.prepare_invoke();
        inv.key(key)
            .arg(shared.now_secs())
            .arg(expires_at)
            .arg(id)
            .arg(&shared.keys.channel)
            .arg(format!("{kind} {expires_at} {id}"))
            .arg(KEEP_SECS)
            .arg(KEEP_SECS);
        // Resent after a broken connection: storing twice keeps one entry,
        // publishing twice applies one change.
        let _: i64 = shared
            .backend
            .run(Op::Script(&inv), Idempotent::Yes)
            .await?;
        Ok(())
    }
}

impl StoreState {
    fn now_secs(&self) -> i64 {
        i64::try_from(self.clock.now().secs()).unwrap_or(i64::MAX)
    }
}

#[async_trait]
impl RevocationStore for RedisRevocationStore {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoke_entry(&self.inner.shared.keys.tokens, 't', jti, expires_at)
            .await?;
        self.inner.shared.view.apply(&RevocationEvent::Token {
            jti: jti.to_owned(),
            expires_at,
        });
        Ok(())
    }

    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoke_entry(&self.inner.shared.keys.sessions, 's', sid, expires_at)
            .await?;
        self.inner.shared.view.apply(&RevocationEvent::Session {
            sid: sid.to_owned(),
            expires_at,
        });
        Ok(())
    }

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        let shared = &self.inner.shared;
        let mut inv = REVOKE_USER.prepare_invoke();
        inv.key(&shared.keys.users)
            .arg(user)
            .arg(shared.view.user_version(user))
            .arg(&shared.keys.channel);
        // Not resent: a second run would bump the version twice.
        let version: u64 = shared.backend.run(Op::Script(&inv), Idempotent::No).await?;
        shared.view.apply(&RevocationEvent::User {
            user: user.to_owned(),
            version,
        });
        Ok(version)
    }

    fn view(&self) -> RevocationView {
        self.inner.shared.view.clone()
    }
}

/// Parses a message of the channel: `t <expiry> <jti>`, `s <expiry>
/// <sid>` or `u <version> <user>` (the id is the rest of the message, so
/// it may hold spaces).
fn parse_message(payload: &[u8]) -> Option<RevocationEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ' ');
    let kind = parts.next()?;
    let number = parts.next()?;
    let id = parts.next()?.to_owned();
    match kind {
        "t" => Some(RevocationEvent::Token {
            jti: id,
            expires_at: number.parse().ok()?,
        }),
        "s" => Some(RevocationEvent::Session {
            sid: id,
            expires_at: number.parse().ok()?,
        }),
        "u" => Some(RevocationEvent::User {
            user: id,
            version: number.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_strictly() {
        assert_eq!(
            parse_message(b"t 1700000000 a jti with spaces"),
            Some(RevocationEvent::Token {
                jti: "a jti with spaces".into(),
                expires_at: 1_700_000_000
            })
        );
        assert_eq!(
            parse_message(b"s -5 fam"),
            Some(RevocationEvent::Session {
                sid: "fam".into(),
                expires_at: -5
            })
        );
        assert_eq!(
            parse_message(b"u 3 alice"),
            Some(RevocationEvent::User {
                user: "alice".into(),
                version: 3
            })
        );
        assert_eq!(
            parse_message(b"u 3 "),
            Some(RevocationEvent::User {
                user: String::new(),
                version: 3
            })
        );
        for bad in [
            &b""[..],
            b"t",
            b"t 1",
            b"x 1 a",
            b"u -1 alice",
            b"u 1.5 alice",
            b"t 99999999999999999999 a",
            b"\xff 1 a",
        ] {
            assert_eq!(parse_message(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_under_the_prefix() {
        let k = Keys::new("app");
        assert_eq!(
            (
                k.tokens.as_str(),
                k.sessions.as_str(),
                k.users.as_str(),
                k.channel.as_str()
            ),
            ("app:rv:t", "app:rv:s", "app:rv:u", "app:rv")
        );
    }

    #[test]
    fn start_needs_a_runtime_and_a_subscriber() {
        let backend = crate::RedisConfig::new("redis://127.0.0.1:1/")
            .build()
            .unwrap();
        assert!(matches!(
            RedisRevocationStore::new(backend.clone()),
            Err(RevocationStartError::NoRuntime)
        ));
        assert!(matches!(
            RedisRevocationStore::builder(backend)
                .ping_interval(Duration::ZERO)
                .start(),
            Err(RevocationStartError::Interval)
        ));
    }
}
