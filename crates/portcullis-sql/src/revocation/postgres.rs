//! [`PgRevocationStore`]: JWT revocations in PostgreSQL, pushed to every
//! instance's in-process view by `LISTEN/NOTIFY`. (About 530 lines before
//! the tests, 160 of them docs: the store, its builder and the staleness
//! rules are one contract; the state it shares with the listener, and the
//! listener task, have files of their own.)

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::events::Events;
use portcullis_core::{SharedClock, StoreError, SystemClock, TokenDigest};
use portcullis_jwt::revocation::{RevocationEvent, RevocationStore, RevocationView};
use tokio::sync::watch;
use tokio::time::Instant;

use super::listener;
use super::pg_state::{Health, Statements, StoreState};
use super::{
    DEFAULT_SNAPSHOT_PAGE, Entry, KEEP_MS, MIN_BACKOFF, RevocationStartError, SyncState, digest,
    ms_of, now_ms, version_floor,
};
use crate::PgBackend;
use crate::error::{SqlResultExt as _, bounded};
use crate::names::Names;
use crate::purge::Purger;

/// Default interval of the listener's ping on a silent connection, which
/// finds a connection that died without a word (a dropped network path, a
/// frozen server).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);

/// Default longest pause between two reconnection attempts of the
/// listener (the first pause is 50 ms, then it doubles).
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The default staleness bound is this many ping intervals (or the ping
/// interval plus two call timeouts, if that is longer).
const STALENESS_PINGS: u32 = 4;

/// The longest channel name PostgreSQL takes (`NAMEDATALEN - 1`).
const MAX_CHANNEL: usize = 63;

/// A `RevocationStore` on PostgreSQL whose [`RevocationView`] every
/// instance keeps current by `LISTEN/NOTIFY`.
///
/// ```no_run
/// use portcullis_jwt::revocation::RevocationStore as _;
/// use portcullis_sql::{PgConfig, PgRevocationStore};
/// use sqlx::postgres::PgPoolOptions;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PgPoolOptions::new().connect("postgres://app@db.internal/app").await?;
/// let backend = PgConfig::new(pool).build()?;
/// backend.migrate().await?;
/// let revocations = PgRevocationStore::new(&backend)?; // spawns the listener
/// // Before serving: the first snapshot is in the view.
/// revocations.wait_synced(std::time::Duration::from_secs(5)).await;
/// let view = revocations.view(); // give it to JwtLayer::builder(..).revocation(view)
/// revocations.revoke_user("alice").await?; // refused on every instance within ms
/// # let _ = view; Ok(()) }
/// ```
///
/// - **Written, then pushed, in one statement**: each revocation upserts
///   its row and calls `pg_notify` in the same statement, so the same
///   transaction: the message goes out only if the change committed. The
///   message carries only the kind and the SHA-256 of the id (`t:<hex>`,
///   `s:<hex>`, `u:<hex>`: any id fits, and a role that may `LISTEN` but
///   not read the tables sees no id); each instance reads the row it
///   names (one query per revocation per instance, never per request).
/// - **One listener per instance**: [`start`](PgRevocationStoreBuilder::start)
///   spawns a task with a connection of its own (a private one-connection
///   pool built from the application pool's connect options; the
///   application's pool is never short of a connection). It runs `LISTEN`,
///   then loads a snapshot of every live row into the view, then applies
///   messages as they come: a change committed before the `LISTEN` is in
///   the snapshot, a later one arrives as a message (or both). After any
///   failure it connects again, with a doubling backoff, and loads a fresh
///   snapshot: a message missed while disconnected is made up for.
/// - **Snapshots in pages**: each table is read along its key in pages of
///   [`snapshot_page`](PgRevocationStoreBuilder::snapshot_page) rows
///   (10,000 by default), each page one statement under the backend's
///   timeout, all on the listening connection, before any message is
///   applied; the view is synced only once the last page is in. Tables of
///   millions of rows (user versions are never purged) still load; a page
///   that fails starts the connection and its snapshot over.
/// - **Pings**: a connection silent for a ping interval (1 s by default)
///   is asked `SELECT 1`; no answer within the backend's timeout, and the
///   listener starts over.
/// - **Snapshots are merged into the view**, never replace it: revocations
///   only grow (entries leave the view when their tokens expire), so a
///   database restored from an older backup does not bring revoked tokens
///   back on instances that saw them, and a revocation this instance made
///   is never dropped by a snapshot read just before it.
/// - **A restored backup brings back what it held**: an instance that
///   starts (or a view that never saw them) after the database was
///   restored from an older backup loads that backup: revocations made
///   after it are lost there (tokens and sessions revoked since are
///   accepted again until they expire, users revoked since have their older
///   version back). Run `revoke_user` again for every user revoked since
///   the backup was taken.
/// - **Database down**: revoke calls fail with a `StoreError` (503
///   upstream) within the backend's timeout; the view keeps its state and
///   requests keep being checked against it.
/// - **Staleness bound**: cut off for longer than
///   [`max_staleness`](PgRevocationStoreBuilder::max_staleness) (4 s by
///   default), the view is marked stale and layers answer 503 until a
///   fresh snapshot has loaded: an instance that cannot hear of
///   revocations stops accepting tokens rather than accept revoked ones.
/// - **Forgetting needs two clocks**: denylist rows are kept
///   `portcullis_jwt::MAX_LEEWAY` plus 60 s past their expiry, by the
///   earlier of this instance's clock and the database's; only then does
///   the purge delete them (in batches, in the background of revoke
///   calls, or by [`purge_expired`](Self::purge_expired)). User versions
///   are never purged.
///
/// Until the first snapshot has loaded, the view is not ready (layers
/// answer 503): wait for [`wait_synced`](Self::wait_synced) before serving.
/// The listener needs a session-level connection (`LISTEN` does not work
/// through a transaction-pooling proxy). Dropping the last clone stops the
/// listener and closes its connection.
#[derive(Clone)]
pub struct PgRevocationStore {
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

/// The channel of a backend's names: `<schema>.<prefix>revocations`, or,
/// when that is longer than PostgreSQL's 63 bytes, `portcullis_rv_` and
/// 32 hex digits of its SHA-256 (distinct names, distinct channels).
fn channel_of(names: &Names) -> String {
    let readable = format!(
        "{}.{}revocations",
        names.schema().unwrap_or_default(),
        names.prefix()
    );
    if readable.len() <= MAX_CHANNEL {
        return readable;
    }
    let hex = TokenDigest::of(readable.as_bytes()).to_hex();
    format!("portcullis_rv_{}", &hex[..32])
}

impl fmt::Debug for PgRevocationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the pool's connect options: their `Debug` shows the password.
        let shared = &self.inner.shared;
        let state = *shared.sync.borrow();
        f.debug_struct("PgRevocationStore")
            .field("names", shared.backend.names())
            .field("channel", &shared.channel)
            .field("view", &shared.view)
            .field("connected", &state.connected)
            .field("snapshots", &state.snapshots)
            .field("stale", &shared.health().stale)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PgRevocationStore`].
#[must_use]
pub struct PgRevocationStoreBuilder {
    backend: PgBackend,
    clock: SharedClock,
    ping_interval: Duration,
    max_backoff: Duration,
    max_staleness: Staleness,
    snapshot_page: u32,
    events: Events,
}

impl fmt::Debug for PgRevocationStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgRevocationStoreBuilder")
            .field("names", self.backend.names())
            .field("clock", &self.clock)
            .field("ping_interval", &self.ping_interval)
            .field("max_backoff", &self.max_backoff)
            .field("max_staleness", &self.max_staleness)
            .field("snapshot_page", &self.snapshot_page)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// The staleness bound a builder was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staleness {
    Default,
    Bound(Duration),
    Unbounded,
}

impl PgRevocationStoreBuilder {
    /// The clock that says when entries expire (default: the system
    /// clock). Give the view's users (the JWT layer) the same clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// How long the listener's connection may stay silent before it is
    /// pinged (default 1 s): a connection that died without a word is
    /// found within this interval plus the backend's timeout.
    pub const fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// The longest pause between two reconnection attempts (default 2 s):
    /// how long, at most, the view may miss changes after the database is
    /// back.
    pub const fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// How long the view may go without a verified connection before
    /// layers answer 503 (default: 4 ping intervals, or the ping interval
    /// plus two backend timeouts if that is longer; 4 s with the
    /// defaults).
    ///
    /// "Verified" means the listener's connection answered: a ping, a
    /// message or a snapshot. An instance cut off from the database cannot
    /// learn of revocations made elsewhere; past this bound its view is
    /// marked stale and every JWT request is refused (503) until the
    /// listener has reconnected and loaded a fresh snapshot. A timer of its
    /// own enforces the bound, whatever the listener is waiting on.
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

    /// How many rows each statement of a snapshot reads (default 10,000):
    /// the listener walks each table's key in pages of this size, each
    /// page under the backend's timeout, so the time a snapshot takes
    /// grows with the tables and a table of millions of rows still loads.
    /// Lower it if a page takes close to the timeout.
    pub const fn snapshot_page(mut self, rows: u32) -> Self {
        self.snapshot_page = rows;
        self
    }

    /// Where the store's events go (default [`Events::default`]: nothing
    /// listens). Source `postgres`:
    ///
    /// | kind | when |
    /// |---|---|
    /// | `revocation_view_stale` | the view went past [`max_staleness`](Self::max_staleness) without a verified connection: JWT requests answer 503 from now on |
    /// | `revocation_view_recovered` | a fresh snapshot loaded after that: the view is in step again (once per stale spell, not on every connect) |
    ///
    /// ```no_run
    /// use portcullis_core::events::Events;
    /// use portcullis_sql::{PgBackend, PgRevocationStore};
    ///
    /// # async fn demo(backend: PgBackend) -> Result<(), Box<dyn std::error::Error>> {
    /// let events = Events::new();
    /// let mut alerts = events.subscribe("alerts", 16);
    /// let revocations = PgRevocationStore::builder(&backend).events(events.clone()).start()?;
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

    /// Starts the store: spawns the listener task, which connects,
    /// listens and loads the first snapshot in the background (see
    /// [`PgRevocationStore::wait_synced`]), and the staleness watchdog.
    ///
    /// # Errors
    ///
    /// [`RevocationStartError`] outside a Tokio runtime, for a zero
    /// interval, for a staleness bound too short, or for a snapshot page
    /// of zero rows.
    pub fn start(self) -> Result<PgRevocationStore, RevocationStartError> {
        if self.ping_interval.is_zero() || self.max_backoff.is_zero() {
            return Err(RevocationStartError::Interval);
        }
        if self.snapshot_page == 0 {
            return Err(RevocationStartError::SnapshotPage);
        }
        let staleness = self.staleness();
        if staleness.is_some_and(|s| s <= self.ping_interval + self.backend.timeout()) {
            return Err(RevocationStartError::Staleness);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RevocationStartError::NoRuntime)?;
        let names = self.backend.names();
        let purge = self.backend.purge_config();
        let shared = Arc::new(StoreState {
            sql: Statements::new(names),
            channel: channel_of(names),
            snapshot_page: self.snapshot_page,
            view: RevocationView::pending(self.clock.clone()),
            backend: self.backend,
            clock: self.clock,
            sync: watch::Sender::new(SyncState::default()),
            messages: AtomicU64::new(0),
            health: Mutex::new(Health {
                alive_at: Instant::now(),
                stale: false,
            }),
            purge_tokens: Purger::new(purge),
            purge_sessions: Purger::new(purge),
            events: self.events,
        });
        let task = runtime.spawn(listener::run(
            Arc::clone(&shared),
            listener::Timing {
                ping_interval: self.ping_interval,
                min_backoff: MIN_BACKOFF.min(self.max_backoff),
                max_backoff: self.max_backoff,
            },
        ));
        let watchdog =
            staleness.map(|bound| runtime.spawn(listener::watchdog(Arc::clone(&shared), bound)));
        Ok(PgRevocationStore {
            inner: Arc::new(Inner {
                shared,
                task,
                watchdog,
            }),
        })
    }
}

impl PgRevocationStore {
    /// Starts a store on `backend` with the defaults (system clock, ping
    /// after a second of silence, reconnect backoff up to 2 s, the view
    /// marked stale after 4 s without a verified connection).
    ///
    /// # Errors
    ///
    /// See [`PgRevocationStoreBuilder::start`].
    pub fn new(backend: &PgBackend) -> Result<Self, RevocationStartError> {
        Self::builder(backend).start()
    }

    /// [`new`](Self::new) with entries expiring by `clock`.
    ///
    /// # Errors
    ///
    /// See [`PgRevocationStoreBuilder::start`].
    pub fn with_clock(
        backend: &PgBackend,
        clock: SharedClock,
    ) -> Result<Self, RevocationStartError> {
        Self::builder(backend).clock(clock).start()
    }

    /// A builder, to set the clock, the listener's timing, the staleness
    /// bound or the snapshot's page size.
    pub fn builder(backend: &PgBackend) -> PgRevocationStoreBuilder {
        PgRevocationStoreBuilder {
            backend: backend.clone(),
            clock: SystemClock::shared(),
            ping_interval: DEFAULT_PING_INTERVAL,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_staleness: Staleness::Default,
            events: Events::default(),
            snapshot_page: DEFAULT_SNAPSHOT_PAGE,
        }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &PgBackend {
        &self.inner.shared.backend
    }

    /// The `LISTEN/NOTIFY` channel: `<schema>.<prefix>revocations`
    /// (`portcullis.revocations` by default), or a digest of it when that
    /// is longer than 63 bytes.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.inner.shared.channel
    }

    /// Whether the view is marked stale: cut off for longer than
    /// [`max_staleness`](PgRevocationStoreBuilder::max_staleness), with no
    /// fresh snapshot since (layers answer 503 meanwhile).
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.inner.shared.health().stale
    }

    /// Whether the listener is connected and has loaded its snapshot since
    /// it last (re)connected: the view is current.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.inner.shared.sync.borrow().connected
    }

    /// Snapshots loaded so far: one at start, one after every reconnect
    /// (and one after the view was marked stale).
    #[must_use]
    pub fn snapshots(&self) -> u64 {
        self.inner.shared.sync.borrow().snapshots
    }

    /// Messages the listener received and applied so far.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.inner.shared.messages.load(Ordering::Relaxed)
    }

    /// Waits until the view is current (listening, snapshot loaded), for
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

    /// Deletes every denylist row kept past its expiry plus
    /// `portcullis_jwt::MAX_LEEWAY` and 60 s (by the earlier of this
    /// store's clock and the database's), in batches; returns how many.
    /// Revoke calls start the same purge in the background, at most once
    /// per [`PurgeConfig::every`](crate::PurgeConfig::every).
    ///
    /// # Errors
    ///
    /// A batch failed or timed out (the batches before it stay deleted).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let s = &self.inner.shared;
        let tokens = s.purge_tokens.run(purge_batch(s, Entry::Token)).await?;
        let sessions = s.purge_sessions.run(purge_batch(s, Entry::Session)).await?;
        Ok(tokens + sessions)
    }

    async fn revoke_entry(
        &self,
        entry: Entry,
        id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let s = &self.inner.shared;
        let key = digest(id);
        let message = format!("{}:{}", tag(entry), TokenDigest::from_bytes(key).to_hex());
        let statement = match entry {
            Entry::Token => &s.sql.revoke_token,
            Entry::Session => &s.sql.revoke_session,
        };
        bounded(s.backend.timeout(), async {
            sqlx::query(statement.clone())
                .bind(&key[..])
                .bind(id.as_bytes())
                .bind(ms_of(expires_at))
                .bind(&s.channel)
                .bind(&message)
                .execute(s.backend.pool())
                .await
                .store()
        })
        .await?;
        s.view.apply(&entry.event(id.to_owned(), ms_of(expires_at)));
        let purger = match entry {
            Entry::Token => &s.purge_tokens,
            Entry::Session => &s.purge_sessions,
        };
        purger.maybe_start(purge_batch(s, entry));
        Ok(())
    }
}

/// The message tag of a kind: `t`, `s`, or `u` (users).
pub(super) const fn tag(entry: Entry) -> char {
    match entry {
        Entry::Token => 't',
        Entry::Session => 's',
    }
}

/// One purge batch of `entry`'s table, as [`Purger`] runs it.
fn purge_batch(
    s: &StoreState,
    entry: Entry,
) -> impl Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send>>
+ Send
+ 'static {
    let pool = s.backend.pool().clone();
    let limit = s.backend.timeout();
    let clock = s.clock.clone();
    let statement = match entry {
        Entry::Token => s.sql.purge_tokens.clone(),
        Entry::Session => s.sql.purge_sessions.clone(),
    };
    move |n| {
        let (pool, statement, now) = (pool.clone(), statement.clone(), now_ms(&clock));
        Box::pin(async move {
            bounded(limit, async {
                let done = sqlx::query(statement)
                    .bind(now)
                    .bind(KEEP_MS)
                    .bind(i64::from(n))
                    .execute(&pool)
                    .await
                    .store()?;
                Ok(done.rows_affected())
            })
            .await
        })
    }
}

#[async_trait]
impl RevocationStore for PgRevocationStore {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoke_entry(Entry::Token, jti, expires_at).await
    }

    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoke_entry(Entry::Session, sid, expires_at).await
    }

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        let s = &self.inner.shared;
        let key = digest(user);
        let message = format!("u:{}", TokenDigest::from_bytes(key).to_hex());
        let version: i64 = bounded(s.backend.timeout(), async {
            sqlx::query_scalar(s.sql.revoke_user.clone())
                .bind(&key[..])
                .bind(user.as_bytes())
                .bind(version_floor(&s.view, user))
                .bind(&s.channel)
                .bind(&message)
                .fetch_one(s.backend.pool())
                .await
                .store()
        })
        .await?;
        let version =
            u64::try_from(version).map_err(|_| StoreError::corrupt("a user version below zero"))?;
        s.view.apply(&RevocationEvent::User {
            user: user.to_owned(),
            version,
        });
        Ok(version)
    }

    fn view(&self) -> RevocationView {
        self.inner.shared.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_fit_and_differ() {
        let default = Names::new(Some("portcullis"), "").unwrap();
        assert_eq!(channel_of(&default), "portcullis.revocations");
        let long = Names::new(Some(&"s".repeat(40)), &"p".repeat(20)).unwrap();
        let other = Names::new(Some(&"s".repeat(40)), &"q".repeat(20)).unwrap();
        let (a, b) = (channel_of(&long), channel_of(&other));
        assert!(
            a.starts_with("portcullis_rv_") && a.len() <= MAX_CHANNEL,
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn statements_name_the_tables_and_bind_everything_else() {
        let names = Names::new(Some("auth"), "pc_").unwrap();
        let s = Statements::new(&names);
        assert!(
            s.revoke_user
                .as_str()
                .contains("INSERT INTO \"auth\".\"pc_revoked_users\"")
        );
        assert!(s.revoke_token.as_str().contains("pg_notify($4, $5)"));
        assert!(
            s.purge_sessions
                .as_str()
                .contains("DELETE FROM \"auth\".\"pc_revoked_sessions\" WHERE ctid")
        );
    }

    #[test]
    fn start_needs_a_runtime_and_sane_timing() {
        // A lazy pool needs a runtime to be built; the store is started
        // outside it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let backend = runtime.block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://u:secret@127.0.0.1:1/db")
                .unwrap();
            crate::PgConfig::new(pool).build().unwrap()
        });
        assert!(matches!(
            PgRevocationStore::new(&backend),
            Err(RevocationStartError::NoRuntime)
        ));
        assert!(matches!(
            PgRevocationStore::builder(&backend)
                .ping_interval(Duration::ZERO)
                .start(),
            Err(RevocationStartError::Interval)
        ));
        assert!(matches!(
            PgRevocationStore::builder(&backend)
                .max_staleness(Some(Duration::from_secs(1)))
                .start(),
            Err(RevocationStartError::Staleness)
        ));
        let builder = format!("{:?}", PgRevocationStore::builder(&backend));
        assert!(!builder.contains("secret"), "{builder}");
    }
}
