//! The bus: [`Events`], its subscribers and its recorder.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{Extensions, HeaderMap};
use tokio::sync::mpsc;

use super::context::{
    EventContext, PendingContext, RouteFn, TraceIdFn, raw_traceparent, traceparent,
};
use super::kind::AuthEvent;
use super::recorder::{Decision, DecisionTimer, Recorder};
use crate::request::ClientIpFn;

/// One subscriber as the bus sees it.
struct Slot {
    id: u64,
    name: Arc<str>,
    tx: mpsc::Sender<Arc<AuthEvent>>,
    dropped: Arc<AtomicU64>,
}

struct Inner {
    subscribers: ArcSwap<Vec<Arc<Slot>>>,
    /// Subscribers + (recorder ? 1 : 0): the one load `enabled` makes.
    live: AtomicUsize,
    next_id: AtomicU64,
    dropped: AtomicU64,
    recorder: Option<Arc<dyn Recorder>>,
    client_ip: Option<ClientIpFn>,
    route: Option<RouteFn>,
    trace_id: Option<TraceIdFn>,
    /// Whether `trace_id` is the default ([`traceparent`]), which a
    /// [`PendingContext`] reads later.
    default_trace: bool,
    sample_every: u32,
}

/// The handle layers emit [`AuthEvent`]s through. Cheap to clone: clones
/// share subscribers, recorder and counters.
///
/// `Events::default()` has no subscriber and no recorder: layers given it
/// (the default everywhere) build no event at all.
///
/// ```
/// use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
///
/// let events = Events::builder().build();
/// let mut slow = events.subscribe("slow", 1);
/// for _ in 0..3 {
///     events.emit(|| AuthEvent::new("session", AuthEventKind::Logout));
/// }
/// // The first fits, the next two are dropped for this subscriber.
/// assert!(slow.try_recv().is_some());
/// assert_eq!(slow.dropped(), 2);
/// assert_eq!(events.dropped(), 2);
/// ```
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

impl Default for Events {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.inner.subscribers.load().len())
            .field("recorder", &self.inner.recorder)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Builds an [`Events`] handle: the recorder and how requests are read.
#[derive(Default)]
#[must_use]
pub struct EventsBuilder {
    recorder: Option<Arc<dyn Recorder>>,
    client_ip: Option<ClientIpFn>,
    route: Option<RouteFn>,
    trace_id: Option<Option<TraceIdFn>>,
    sample_every: Option<u32>,
}

impl fmt::Debug for EventsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsBuilder")
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl EventsBuilder {
    /// Called inline with every event, sampled layer decision and timed
    /// store call: metrics (`portcullis_otel::OtelRecorder`). It must not
    /// block. Called again, the recorders are called in turn.
    pub fn recorder(mut self, recorder: impl Recorder) -> Self {
        let recorder: Arc<dyn Recorder> = match self.recorder.take() {
            None => Arc::new(recorder),
            Some(first) => Arc::new(Both(first, Arc::new(recorder))),
        };
        self.recorder = Some(recorder);
        self
    }

    /// How events find the client's address. Without it events carry
    /// none. Use the same function as the layers' own `client_ip`
    /// setting (axum's `ConnectInfo`, or a header set by a proxy the app
    /// trusts).
    pub fn client_ip(mut self, f: ClientIpFn) -> Self {
        self.client_ip = Some(f);
        self
    }

    /// How events find the route template (`portcullis::events::matched_path`
    /// for axum). Without it events carry none.
    pub fn route(mut self, f: RouteFn) -> Self {
        self.route = Some(f);
        self
    }

    /// How events find the trace id: [`traceparent`] by default; `None`
    /// for no trace id.
    pub fn trace_id(mut self, f: Option<TraceIdFn>) -> Self {
        self.trace_id = Some(f);
        self
    }

    /// Time one layer decision in `n` for the recorder's duration
    /// histogram (default 16: two clock reads per request would cost more
    /// than the rest of the observability together). `1` times every
    /// request; `0` is taken as `1`.
    pub fn sample_decisions(mut self, n: u32) -> Self {
        self.sample_every = Some(n.max(1));
        self
    }

    /// The handle.
    #[must_use]
    pub fn build(self) -> Events {
        let live = usize::from(self.recorder.is_some());
        Events {
            inner: Arc::new(Inner {
                subscribers: ArcSwap::from_pointee(Vec::new()),
                live: AtomicUsize::new(live),
                next_id: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                recorder: self.recorder,
                client_ip: self.client_ip,
                route: self.route,
                default_trace: self.trace_id.is_none(),
                trace_id: self.trace_id.unwrap_or(Some(traceparent)),
                sample_every: self.sample_every.unwrap_or(16),
            }),
        }
    }
}

/// Two recorders in turn.
#[derive(Debug)]
struct Both(Arc<dyn Recorder>, Arc<dyn Recorder>);

impl Recorder for Both {
    fn event(&self, event: &AuthEvent) {
        self.0.event(event);
        self.1.event(event);
    }
    fn decision(
        &self,
        layer: &'static str,
        decision: Decision,
        reason: Option<&'static str>,
        elapsed: std::time::Duration,
    ) {
        self.0.decision(layer, decision, reason, elapsed);
        self.1.decision(layer, decision, reason, elapsed);
    }
    fn store_call(
        &self,
        store: &'static str,
        operation: &'static str,
        error: Option<&'static str>,
        elapsed: std::time::Duration,
    ) {
        self.0.store_call(store, operation, error, elapsed);
        self.1.store_call(store, operation, error, elapsed);
    }
}

/// The process-wide tap ([`install_tap`]).
static TAP: std::sync::OnceLock<fn(&AuthEvent)> = std::sync::OnceLock::new();

/// Sees every event of every [`Events`] handle in the process, including
/// the handles nothing subscribed to (which then build their events):
/// for test harnesses that check what events carry across a whole suite.
/// Installed once; later calls return `false` and change nothing.
///
/// It is called inline like a [`Recorder`]: it must not block.
pub fn install_tap(tap: fn(&AuthEvent)) -> bool {
    TAP.set(tap).is_ok()
}

thread_local! {
    static DECISIONS: Cell<u32> = const { Cell::new(0) };
}

impl Events {
    /// The largest channel a subscriber gets (a larger request is taken as
    /// this): 1 Mi events.
    pub const MAX_CAPACITY: usize = 1 << 20;

    /// A handle with no subscriber and no recorder (subscribe later).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder.
    pub fn builder() -> EventsBuilder {
        EventsBuilder::default()
    }

    /// Whether anything listens: a subscriber or a recorder.
    #[inline]
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.inner.live.load(Ordering::Relaxed) != 0 || TAP.get().is_some()
    }

    /// A new subscriber receiving every event from now on, through a
    /// channel of `capacity` events (taken between 1 and
    /// [`MAX_CAPACITY`](Self::MAX_CAPACITY)). Dropping the stream
    /// unsubscribes it.
    #[must_use]
    pub fn subscribe(&self, name: &str, capacity: usize) -> EventStream {
        let (tx, rx) = mpsc::channel(capacity.clamp(1, Self::MAX_CAPACITY));
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            name: name.into(),
            tx,
            dropped: Arc::clone(&dropped),
        });
        self.inner.subscribers.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(Arc::clone(&slot));
            list
        });
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        EventStream {
            rx,
            id,
            name: name.into(),
            dropped,
            bus: Arc::downgrade(&self.inner),
        }
    }

    /// Sends the event `make` builds to the recorder and every subscriber.
    /// `make` runs only when something listens. Never waits: a subscriber
    /// whose channel is full misses the event, and the miss is counted.
    pub fn emit(&self, make: impl FnOnce() -> AuthEvent) {
        if !self.enabled() {
            return;
        }
        let event = Arc::new(make());
        if let Some(tap) = TAP.get() {
            tap(&event);
        }
        if let Some(recorder) = &self.inner.recorder {
            recorder.event(&event);
        }
        for slot in self.inner.subscribers.load().iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = slot.tx.try_send(Arc::clone(&event)) {
                slot.dropped.fetch_add(1, Ordering::Relaxed);
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The route, client address and trace id of a request, read the way
    /// this handle was built to; empty when nothing listens.
    #[must_use]
    pub fn context(&self, extensions: &Extensions, headers: &HeaderMap) -> EventContext {
        if !self.enabled() {
            return EventContext::default();
        }
        EventContext {
            route: self.inner.route.and_then(|f| f(extensions)),
            client: self.inner.client_ip.and_then(|f| f(extensions, headers)),
            trace_id: self.inner.trace_id.and_then(|f| f(extensions, headers)),
        }
    }

    /// The context of a request as a layer keeps it until an event is
    /// built: like [`context`](Self::context), except that the default
    /// trace id is read only by [`PendingContext::resolve`]. Empty when
    /// nothing listens.
    #[must_use]
    pub fn pending_context(&self, extensions: &Extensions, headers: &HeaderMap) -> PendingContext {
        if !self.enabled() {
            return PendingContext::default();
        }
        let inner = &self.inner;
        let (header, id) = match inner.trace_id {
            Some(_) if inner.default_trace => (raw_traceparent(headers), None),
            Some(f) => (None, f(extensions, headers)),
            None => (None, None),
        };
        PendingContext::new(
            inner.route.and_then(|f| f(extensions)),
            inner.client_ip.and_then(|f| f(extensions, headers)),
            header,
            id,
        )
    }

    /// The client address of a request, read the way this handle was
    /// built to; `None` when nothing listens. (The same as
    /// [`context`](Self::context)'s, without reading the rest.)
    #[must_use]
    pub fn client(&self, extensions: &Extensions, headers: &HeaderMap) -> Option<std::net::IpAddr> {
        if !self.enabled() {
            return None;
        }
        self.inner.client_ip.and_then(|f| f(extensions, headers))
    }

    /// Events dropped so far, every subscriber together.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Each subscriber's name and the events it missed so far.
    #[must_use]
    pub fn subscribers(&self) -> Vec<(Arc<str>, u64)> {
        self.inner
            .subscribers
            .load()
            .iter()
            .map(|s| (Arc::clone(&s.name), s.dropped.load(Ordering::Relaxed)))
            .collect()
    }

    /// A handle that does not keep the bus alive (for a recorder that
    /// watches the bus it records for: no reference cycle).
    #[must_use]
    pub fn downgrade(&self) -> WeakEvents {
        WeakEvents(Arc::downgrade(&self.inner))
    }

    /// The recorder, if any.
    #[must_use]
    pub fn recorder(&self) -> Option<&dyn Recorder> {
        self.inner.recorder.as_deref()
    }

    /// Starts timing a layer decision, for one request in
    /// [`sample_decisions`](EventsBuilder::sample_decisions), when a
    /// recorder is set. Hand the timer to [`decided`](Self::decided).
    #[inline]
    #[must_use]
    pub fn start_decision(&self) -> Option<DecisionTimer> {
        self.inner.recorder.as_ref()?;
        let every = self.inner.sample_every;
        if every > 1 {
            let n = DECISIONS.with(|c| {
                let n = c.get().wrapping_add(1);
                c.set(n);
                n
            });
            if n % every != 0 {
                return None;
            }
        }
        Some(DecisionTimer(Instant::now()))
    }

    /// Records how long `layer` took to decide, and what it decided.
    #[inline]
    pub fn decided(
        &self,
        timer: Option<DecisionTimer>,
        layer: &'static str,
        decision: Decision,
        reason: Option<&'static str>,
    ) {
        if let (Some(timer), Some(recorder)) = (timer, &self.inner.recorder) {
            recorder.decision(layer, decision, reason, timer.0.elapsed());
        }
    }
}

/// An [`Events`] handle that does not keep the bus alive
/// ([`Events::downgrade`]).
#[derive(Clone)]
pub struct WeakEvents(std::sync::Weak<Inner>);

impl WeakEvents {
    /// The handle, while the bus lives.
    #[must_use]
    pub fn upgrade(&self) -> Option<Events> {
        self.0.upgrade().map(|inner| Events { inner })
    }
}

impl fmt::Debug for WeakEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakEvents")
    }
}

/// The receiving end of one subscriber ([`Events::subscribe`]).
pub struct EventStream {
    rx: mpsc::Receiver<Arc<AuthEvent>>,
    id: u64,
    name: Arc<str>,
    dropped: Arc<AtomicU64>,
    bus: std::sync::Weak<Inner>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("name", &self.name)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` once every [`Events`] handle is gone.
    pub async fn recv(&mut self) -> Option<Arc<AuthEvent>> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<AuthEvent>> {
        self.rx.try_recv().ok()
    }

    /// Events this subscriber missed because its channel was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The name it subscribed with.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            let id = self.id;
            bus.subscribers.rcu(|list| {
                list.iter()
                    .filter(|s| s.id != id)
                    .cloned()
                    .collect::<Vec<_>>()
            });
            bus.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::AuthEventKind;

    #[test]
    fn disabled_builds_nothing() {
        let events = Events::new();
        assert!(!events.enabled());
        events.emit(|| unreachable!("nothing listens"));
        assert_eq!(
            events.context(&Extensions::new(), &HeaderMap::new()),
            EventContext::default()
        );
        assert!(events.start_decision().is_none());
    }

    #[test]
    fn dropping_a_stream_unsubscribes_it() {
        let events = Events::new();
        let a = events.subscribe("a", 4);
        let mut b = events.subscribe("b", 4);
        drop(a);
        assert_eq!(events.subscribers().len(), 1);
        events.emit(|| AuthEvent::new("jwt", AuthEventKind::KeyRotated { kid: "k2".into() }));
        assert_eq!(b.try_recv().unwrap().kind.name(), "key_rotated");
        drop(b);
        assert!(!events.enabled());
        let weak = events.downgrade();
        assert!(weak.upgrade().is_some());
        drop(events);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_huge_capacity_is_clamped() {
        let events = Events::new();
        let mut stream = events.subscribe("big", usize::MAX);
        events.emit(|| AuthEvent::new("jwt", AuthEventKind::Logout));
        assert!(stream.try_recv().is_some());
    }

    #[test]
    fn stream_ends_when_the_bus_is_gone() {
        let events = Events::new();
        let mut stream = events.subscribe("a", 4);
        drop(events);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(stream.recv()).is_none());
    }
}
