//! OpenTelemetry metrics for the portcullis auth layers.
//!
//! (One file of about 660 lines: the metric table, one entry per event
//! kind, and the recorder that reads it belong together.)
//!
//! [`OtelRecorder`] is a [`Recorder`]: set it on the
//! [`Events`] handle the layers share and it counts every
//! [`AuthEvent`], the sampled decision time of each layer and the latency of
//! every store call timed through [`StoreEvents`](portcullis_core::events::StoreEvents).
//! Observable instruments report the events the bus dropped and the store
//! sizes the application registers ([`OtelRecorder::watch_events`],
//! [`OtelRecorder::watch_gauge`]).
//!
//! The crate depends on the `opentelemetry` API only (0.33, `metrics`): the
//! application brings its SDK, exporter and `Resource`, and must use the same
//! minor version of `opentelemetry` (two minors in one build are two
//! unrelated APIs: the metrics would go nowhere). The recorder takes a
//! [`Meter`] rather than reading the global provider, so tests can give each
//! app its own in-memory provider.
//!
//! Every metric name, unit and attribute is listed in [`EVENT_METRICS`] and
//! in `docs/observability.md`, with the ASP.NET Core 10
//! (`aspnetcore.authentication.*`, `aspnetcore.identity.*`) instrument each
//! one mirrors. Attributes are low-cardinality only: the emitting layer
//! (`portcullis.source`), the documented reason codes (`error.type`), store
//! and operation names. Never a user, device, route, client or key id.
//!
//! ```
//! use opentelemetry::metrics::MeterProvider as _;
//! use opentelemetry_sdk::metrics::SdkMeterProvider;
//! use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
//! use portcullis_otel::OtelRecorder;
//!
//! let provider = SdkMeterProvider::builder().build(); // + the app's exporter
//! let recorder = OtelRecorder::new(&provider.meter("portcullis"));
//! let events = Events::builder().recorder(recorder.clone()).build();
//! recorder.watch_events("stack", &events);
//!
//! // Give `events` to every layer's configuration (`.events(events.clone())`).
//! events.emit(|| AuthEvent::new("jwt", AuthEventKind::JwtRefused { reason: "expired" }));
//! ```
//!
//! # Cost
//!
//! Events fire on logins, logouts, refusals and rotations, not on a plain
//! accepted request; each is one counter `add` (about 70 ns, no allocation:
//! attributes are `&'static str` in a fixed order). Decision timing is
//! sampled by the bus ([`EventsBuilder::sample_decisions`](portcullis_core::events::EventsBuilder::sample_decisions),
//! one request in 16 by default). Gauges and the dropped-events counter are
//! read only when the exporter collects.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge};
use portcullis_core::events::{AuthEvent, AuthEventKind, Decision, Events, Recorder, WeakEvents};

/// The attribute naming the layer or store that emitted an event.
pub const SOURCE: &str = "portcullis.source";
/// The attribute carrying a reason code (`expired`, `csrf-token-mismatch`,
/// ...) or a store error kind (`backend`, `timeout`, ...): OpenTelemetry's
/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// The attribute naming the layer of a decision (`session`, `jwt`, ...).
pub const LAYER: &str = "portcullis.layer";
/// The attribute carrying a decision's result: `success`, `failure`, `none`.
pub const RESULT: &str = "portcullis.authentication.result";
/// The attribute naming a store (`memory`, `redis`, `postgres`, ... or its
/// role `session`, `refresh`, `throttle`, `revocation`).
pub const STORE: &str = "portcullis.store";
/// The attribute naming a store operation (`load`, `save`, `rotate`, ...).
pub const OPERATION: &str = "portcullis.store.operation";

/// The decision-time histogram (`s`).
pub const DECISION_DURATION: &str = "portcullis.authentication.authenticate.duration";
/// The store-call latency histogram (`s`).
pub const STORE_DURATION: &str = "portcullis.store.operation.duration";
/// Events dropped by the bus's subscribers (observable counter).
pub const EVENTS_DROPPED: &str = "portcullis.events.dropped";
/// The attribute naming an [`Events`] handle watched for drops.
pub const EVENTS_HANDLE: &str = "portcullis.events.handle";

/// Bucket boundaries (seconds) of [`DECISION_DURATION`]: 1 µs to 0.1 s. A
/// layer decides in microseconds; OpenTelemetry's default buckets start at 5
/// (milliseconds-shaped) and would put every decision in the first one.
pub const DECISION_BUCKETS: [f64; 16] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
];

/// Bucket boundaries (seconds) of [`STORE_DURATION`]: OpenTelemetry's
/// `db.client.operation.duration` advice (1 ms to 10 s) with three finer
/// ones below for in-process and local stores.
pub const STORE_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// How one [`AuthEventKind`] is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventMetric {
    /// The kind's [`name`](AuthEventKind::name).
    pub kind: &'static str,
    /// The counter's name.
    pub metric: &'static str,
    /// The counter's unit.
    pub unit: &'static str,
    /// An attribute fixed for this kind, when several kinds share the
    /// counter (`portcullis.sign_out.scope` = `device` for `logout`).
    pub fixed: Option<(&'static str, &'static str)>,
    /// Whether the kind's reason code is set as `error.type`.
    pub error_type: bool,
}

const fn em(
    kind: &'static str,
    metric: &'static str,
    unit: &'static str,
    fixed: Option<(&'static str, &'static str)>,
    error_type: bool,
) -> EventMetric {
    EventMetric {
        kind,
        metric,
        unit,
        fixed,
        error_type,
    }
}

const SIGN_INS: &str = "portcullis.authentication.sign_ins";
const CHECK_PASSWORD: &str = "portcullis.identity.sign_in.check_password_attempts";
const SIGN_IN_RESULT: &str = "portcullis.identity.sign_in.result";
const SIGN_OUTS: &str = "portcullis.authentication.sign_outs";
const SIGN_OUT_SCOPE: &str = "portcullis.sign_out.scope";
const VIEW_TRANSITIONS: &str = "portcullis.revocation.view.transitions";
const VIEW_STATE: &str = "portcullis.revocation.view.state";
const KEY_CHANGES: &str = "portcullis.jwt.key.changes";
const KEY_CHANGE: &str = "portcullis.jwt.key.change";

/// Every event kind's counter, in [`AuthEventKind::NAMES`] order. Every
/// counter also carries [`SOURCE`]; `store_unavailable` carries [`STORE`]
/// and [`OPERATION`].
pub const EVENT_METRICS: [EventMetric; 21] = [
    em("login_succeeded", SIGN_INS, "{sign_in}", None, false),
    em(
        "login_failed",
        CHECK_PASSWORD,
        "{attempt}",
        Some((SIGN_IN_RESULT, "failure")),
        true,
    ),
    em(
        "logout",
        SIGN_OUTS,
        "{sign_out}",
        Some((SIGN_OUT_SCOPE, "device")),
        false,
    ),
    em(
        "logout_everywhere",
        SIGN_OUTS,
        "{sign_out}",
        Some((SIGN_OUT_SCOPE, "all")),
        false,
    ),
    em(
        "session_renewed",
        "portcullis.session.renewals",
        "{renewal}",
        None,
        false,
    ),
    em(
        "session_evicted",
        "portcullis.session.evictions",
        "{session}",
        None,
        false,
    ),
    em(
        "session_expired",
        "portcullis.session.expirations",
        "{session}",
        None,
        false,
    ),
    em(
        "family_expired",
        "portcullis.refresh.family_expirations",
        "{family}",
        None,
        false,
    ),
    em(
        "refresh_rotated",
        "portcullis.refresh.rotations",
        "{rotation}",
        None,
        false,
    ),
    em(
        "refresh_reuse_detected",
        "portcullis.refresh.reuse_detections",
        "{detection}",
        None,
        false,
    ),
    em(
        "device_revoked",
        "portcullis.authentication.device_revocations",
        "{device}",
        None,
        false,
    ),
    em(
        "password_changed",
        "portcullis.identity.user.password_changes",
        "{change}",
        None,
        false,
    ),
    em(
        "csrf_refused",
        "portcullis.csrf.refusals",
        "{refusal}",
        None,
        true,
    ),
    em(
        "jwt_refused",
        "portcullis.jwt.refusals",
        "{refusal}",
        None,
        true,
    ),
    em(
        "throttled",
        CHECK_PASSWORD,
        "{attempt}",
        Some((SIGN_IN_RESULT, "locked_out")),
        false,
    ),
    em(
        "reauth_required",
        "portcullis.authentication.reauth_challenges",
        "{challenge}",
        None,
        true,
    ),
    em(
        "store_unavailable",
        "portcullis.store.unavailable",
        "{error}",
        None,
        false,
    ),
    em(
        "revocation_view_stale",
        VIEW_TRANSITIONS,
        "{transition}",
        Some((VIEW_STATE, "stale")),
        false,
    ),
    em(
        "revocation_view_recovered",
        VIEW_TRANSITIONS,
        "{transition}",
        Some((VIEW_STATE, "synced")),
        false,
    ),
    em(
        "key_rotated",
        KEY_CHANGES,
        "{change}",
        Some((KEY_CHANGE, "rotated")),
        false,
    ),
    em(
        "key_retired",
        KEY_CHANGES,
        "{change}",
        Some((KEY_CHANGE, "retired")),
        false,
    ),
];

/// How the event kind named `kind` (`logout`, `jwt_refused`, ...) is
/// counted, if it is a kind.
///
/// ```
/// let m = portcullis_otel::event_metric("jwt_refused").unwrap();
/// assert_eq!(m.metric, "portcullis.jwt.refusals");
/// assert!(m.error_type);
/// ```
#[must_use]
pub fn event_metric(kind: &str) -> Option<&'static EventMetric> {
    EVENT_METRICS.iter().find(|m| m.kind == kind)
}

/// A store size the application reports through
/// [`OtelRecorder::watch_gauge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Gauge {
    /// `portcullis.session.active` `{session}`: live sessions.
    Sessions,
    /// `portcullis.refresh.families.active` `{family}`: live refresh
    /// families.
    RefreshFamilies,
    /// `portcullis.revocation.entries` `{entry}`: entries in a JWT
    /// revocation view.
    RevocationEntries,
}

impl Gauge {
    /// Every gauge.
    pub const ALL: [Self; 3] = [
        Self::Sessions,
        Self::RefreshFamilies,
        Self::RevocationEntries,
    ];

    /// The instrument's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sessions => "portcullis.session.active",
            Self::RefreshFamilies => "portcullis.refresh.families.active",
            Self::RevocationEntries => "portcullis.revocation.entries",
        }
    }

    /// The instrument's unit.
    #[must_use]
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Sessions => "{session}",
            Self::RefreshFamilies => "{family}",
            Self::RevocationEntries => "{entry}",
        }
    }

    const fn description(self) -> &'static str {
        match self {
            Self::Sessions => "Sessions in the store, as the application counts them.",
            Self::RefreshFamilies => "Refresh-token families in the store.",
            Self::RevocationEntries => "Entries in the JWT revocation view.",
        }
    }
}

type CountFn = Box<dyn Fn() -> u64 + Send + Sync>;

/// What the observable instruments read at collection time.
#[derive(Default)]
struct Watched {
    handles: Mutex<Vec<(&'static str, WeakEvents)>>,
    gauges: Mutex<Vec<(Gauge, &'static str, CountFn)>>,
}

struct Inner {
    counters: Vec<Counter<u64>>,
    decision: Histogram<f64>,
    store: Histogram<f64>,
    watched: Arc<Watched>,
    _dropped: ObservableCounter<u64>,
    _gauges: Vec<ObservableGauge<u64>>,
}

/// Counts the auth event stream as OpenTelemetry metrics: a [`Recorder`]
/// for [`EventsBuilder::recorder`](portcullis_core::events::EventsBuilder::recorder).
///
/// Cheap to clone: clones share instruments and watches, so keep one to
/// call [`watch_events`](Self::watch_events) and
/// [`watch_gauge`](Self::watch_gauge) after handing a clone to the bus.
#[derive(Clone)]
pub struct OtelRecorder {
    inner: Arc<Inner>,
}

impl fmt::Debug for OtelRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelRecorder").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OtelRecorder {
    /// Creates every instrument on `meter` (conventionally
    /// `provider.meter("portcullis")`).
    #[must_use]
    pub fn new(meter: &Meter) -> Self {
        // One counter per distinct metric name, indexed like EVENT_METRICS.
        let mut built: Vec<(&'static str, Counter<u64>)> = Vec::new();
        let counters = EVENT_METRICS
            .iter()
            .map(|m| {
                if let Some((_, c)) = built.iter().find(|(name, _)| *name == m.metric) {
                    return c.clone();
                }
                let c = meter
                    .u64_counter(m.metric)
                    .with_unit(m.unit)
                    .with_description(describe(m.metric))
                    .build();
                built.push((m.metric, c.clone()));
                c
            })
            .collect();
        let decision = meter
            .f64_histogram(DECISION_DURATION)
            .with_unit("s")
            .with_description(
                "Time each portcullis layer took to decide about a request (sampled).",
            )
            .with_boundaries(DECISION_BUCKETS.to_vec())
            .build();
        let store = meter
            .f64_histogram(STORE_DURATION)
            .with_unit("s")
            .with_description("Duration of portcullis store calls.")
            .with_boundaries(STORE_BUCKETS.to_vec())
            .build();
        let watched = Arc::new(Watched::default());
        let w = Arc::clone(&watched);
        let dropped = meter
            .u64_observable_counter(EVENTS_DROPPED)
            .with_unit("{event}")
            .with_description(
                "Events a subscriber of the portcullis event bus missed (its channel was full).",
            )
            .with_callback(move |o| {
                for (name, events) in lock(&w.handles).iter() {
                    if let Some(events) = events.upgrade() {
                        o.observe(events.dropped(), &[KeyValue::new(EVENTS_HANDLE, *name)]);
                    }
                }
            })
            .build();
        let gauges = Gauge::ALL
            .iter()
            .map(|&gauge| {
                let w = Arc::clone(&watched);
                meter
                    .u64_observable_gauge(gauge.name())
                    .with_unit(gauge.unit())
                    .with_description(gauge.description())
                    .with_callback(move |o| {
                        for (g, store, count) in lock(&w.gauges).iter() {
                            if *g == gauge {
                                o.observe(count(), &[KeyValue::new(STORE, *store)]);
                            }
                        }
                    })
                    .build()
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                counters,
                decision,
                store,
                watched,
                _dropped: dropped,
                _gauges: gauges,
            }),
        }
    }

    /// Reports the events `events` dropped (all its subscribers together)
    /// as `portcullis.events.dropped{portcullis.events.handle=name}`.
    ///
    /// The recorder keeps a weak handle: a bus whose recorder is this one
    /// is still freed when the application drops it (and is no longer
    /// reported).
    pub fn watch_events(&self, name: &'static str, events: &Events) {
        lock(&self.inner.watched.handles).push((name, events.downgrade()));
    }

    /// Reports `count()` as `gauge` with `portcullis.store = store`, each
    /// time the exporter collects. `count` runs on the exporter's thread:
    /// keep it cheap (an in-memory length, not a Redis `SCAN`).
    ///
    /// ```
    /// # use opentelemetry::metrics::MeterProvider as _;
    /// # let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
    /// use portcullis_otel::{Gauge, OtelRecorder};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let recorder = OtelRecorder::new(&provider.meter("portcullis"));
    /// let live = Arc::new(AtomicU64::new(0));
    /// let seen = Arc::clone(&live);
    /// recorder.watch_gauge(Gauge::Sessions, "memory", move || seen.load(Ordering::Relaxed));
    /// ```
    pub fn watch_gauge(
        &self,
        gauge: Gauge,
        store: &'static str,
        count: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        lock(&self.inner.watched.gauges).push((gauge, store, Box::new(count)));
    }
}

fn describe(metric: &str) -> &'static str {
    match metric {
        SIGN_INS => "Successful logins: sessions or refresh families created for a user.",
        CHECK_PASSWORD => {
            "Refused login attempts: failed (error.type = the reason) or throttled (locked_out)."
        }
        SIGN_OUTS => "Logouts: of one device, or of every device of the user.",
        "portcullis.session.renewals" => "Sessions given a new id.",
        "portcullis.session.evictions" => {
            "Sessions ended because the user reached the session cap."
        }
        "portcullis.session.expirations" => "Requests that presented an expired session.",
        "portcullis.refresh.family_expirations" => {
            "Requests that presented an expired refresh family."
        }
        "portcullis.refresh.rotations" => "Refresh tokens rotated.",
        "portcullis.refresh.reuse_detections" => {
            "Rotated refresh tokens presented again (the family was revoked)."
        }
        "portcullis.authentication.device_revocations" => {
            "Devices (sessions or refresh families) revoked."
        }
        "portcullis.identity.user.password_changes" => {
            "Password changes that ended the user's other devices."
        }
        "portcullis.csrf.refusals" => "Requests the CSRF layer refused.",
        "portcullis.jwt.refusals" => "Tokens the JWT layer refused.",
        "portcullis.authentication.reauth_challenges" => "Requests that needed a fresher login.",
        "portcullis.store.unavailable" => "Store failures answered 503.",
        VIEW_TRANSITIONS => "JWT revocation view transitions between stale and synced.",
        KEY_CHANGES => "Signing keys rotated in or retired.",
        _ => "",
    }
}

/// The kind's place in [`EVENT_METRICS`] (and [`AuthEventKind::NAMES`]).
const fn index(kind: &AuthEventKind) -> Option<usize> {
    use AuthEventKind as K;
    Some(match kind {
        K::LoginSucceeded => 0,
        K::LoginFailed { .. } => 1,
        K::Logout => 2,
        K::LogoutEverywhere => 3,
        K::SessionRenewed => 4,
        K::SessionEvicted => 5,
        K::SessionExpired => 6,
        K::FamilyExpired => 7,
        K::RefreshRotated => 8,
        K::RefreshReuseDetected => 9,
        K::DeviceRevoked => 10,
        K::PasswordChanged => 11,
        K::CsrfRefused { .. } => 12,
        K::JwtRefused { .. } => 13,
        K::Throttled { .. } => 14,
        K::ReauthRequired { .. } => 15,
        K::StoreUnavailable { .. } => 16,
        K::RevocationViewStale => 17,
        K::RevocationViewRecovered => 18,
        K::KeyRotated { .. } => 19,
        K::KeyRetired { .. } => 20,
        _ => return None,
    })
}

impl Recorder for OtelRecorder {
    fn event(&self, event: &AuthEvent) {
        let Some(i) = index(&event.kind) else {
            return;
        };
        let counter = &self.inner.counters[i];
        let m = &EVENT_METRICS[i];
        let source = KeyValue::new(SOURCE, event.source);
        if let AuthEventKind::StoreUnavailable { store, operation } = event.kind {
            counter.add(
                1,
                &[
                    source,
                    KeyValue::new(STORE, store),
                    KeyValue::new(OPERATION, operation),
                ],
            );
            return;
        }
        let error = if m.error_type {
            event.kind.reason()
        } else {
            None
        };
        match (m.fixed, error) {
            (None, None) => counter.add(1, &[source]),
            (None, Some(e)) => counter.add(1, &[source, KeyValue::new(ERROR_TYPE, e)]),
            (Some((k, v)), None) => counter.add(1, &[source, KeyValue::new(k, v)]),
            (Some((k, v)), Some(e)) => counter.add(
                1,
                &[source, KeyValue::new(k, v), KeyValue::new(ERROR_TYPE, e)],
            ),
        }
    }

    fn decision(
        &self,
        layer: &'static str,
        decision: Decision,
        reason: Option<&'static str>,
        elapsed: Duration,
    ) {
        let secs = elapsed.as_secs_f64();
        let layer = KeyValue::new(LAYER, layer);
        let result = KeyValue::new(RESULT, decision.as_str());
        match reason {
            Some(e) => self
                .inner
                .decision
                .record(secs, &[layer, result, KeyValue::new(ERROR_TYPE, e)]),
            None => self.inner.decision.record(secs, &[layer, result]),
        }
    }

    fn store_call(
        &self,
        store: &'static str,
        operation: &'static str,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        let secs = elapsed.as_secs_f64();
        let store = KeyValue::new(STORE, store);
        let op = KeyValue::new(OPERATION, operation);
        match error {
            Some(e) => self
                .inner
                .store
                .record(secs, &[store, op, KeyValue::new(ERROR_TYPE, e)]),
            None => self.inner.store.record(secs, &[store, op]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_kinds() {
        let kinds: Vec<_> = EVENT_METRICS.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, AuthEventKind::NAMES);
        let kid: std::sync::Arc<str> = "k".into();
        for kind in [
            AuthEventKind::LoginFailed { reason: "r" },
            AuthEventKind::Throttled {
                retry_after: Duration::ZERO,
            },
            AuthEventKind::StoreUnavailable {
                store: "s",
                operation: "o",
            },
            AuthEventKind::KeyRetired { kid },
        ] {
            assert_eq!(EVENT_METRICS[index(&kind).unwrap()].kind, kind.name());
        }
        for m in &EVENT_METRICS {
            assert!(m.metric.starts_with("portcullis."), "{}", m.metric);
            assert!(!describe(m.metric).is_empty(), "{}", m.metric);
            // Counters sharing a name share the unit and tell kinds apart.
            for other in EVENT_METRICS.iter().filter(|o| o.metric == m.metric) {
                assert_eq!(other.unit, m.unit);
                if other.kind != m.kind {
                    assert!(m.fixed.is_some() && other.fixed != m.fixed, "{}", m.kind);
                }
            }
        }
    }
}
