//! The observability benchmarks' wiring: one [`Events`] handle set up the
//! way an application sets it up (OpenTelemetry metrics on a real SDK
//! meter provider with a periodic reader and an exporter, an audit trail
//! drained by a task, the client address and the route template read for
//! every event), and the requests' client address and trace context.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap, Request};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use portcullis::events::audit::{AuditTrail, RecentActivity};
use portcullis::events::{Events, EventsBuilder, matched_path};
use portcullis::otel::OtelRecorder;

/// The client address every benchmark request comes from.
pub const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 40_000);

/// The W3C trace context every benchmark request carries.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The client address as axum's `ConnectInfo` gives it.
#[must_use]
pub fn client_ip(extensions: &Extensions, _: &HeaderMap) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Gives `req` what a served request has: the peer address (as axum's
/// `serve` with `into_make_service_with_connect_info` puts it) and a
/// `traceparent` header. Both apps of a comparison get the same request.
pub fn served<B>(mut req: Request<B>) -> Request<B> {
    req.extensions_mut().insert(ConnectInfo(CLIENT));
    req.headers_mut()
        .insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
    req
}

/// An [`Events`] handle with everything an application turns on, and what
/// keeps it running.
pub struct Observability {
    /// The handle to give the layers.
    pub events: Events,
    /// The meter provider (its reader exports every 60 s on its own
    /// thread, as the SDK's default).
    pub provider: SdkMeterProvider,
    /// The exporter the reader hands metrics to.
    pub exporter: InMemoryMetricExporter,
    /// The audit trail's recent-activity log.
    pub recent: RecentActivity,
}

impl Observability {
    /// Builds the handle: [`OtelRecorder`] on an `SdkMeterProvider` with a
    /// `PeriodicReader`, the default decision sampling, `client_ip` and
    /// `route` set, and one subscriber (the audit trail: JSON lines to a
    /// sink and the recent-activity log) drained by a task spawned on the
    /// current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[must_use]
    pub fn new() -> Self {
        Self::with(|b| b)
    }

    /// [`new`](Self::new) with `tune` applied to the events builder (for
    /// measuring a candidate change).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[must_use]
    pub fn with(tune: impl FnOnce(EventsBuilder) -> EventsBuilder) -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let recorder = OtelRecorder::new(&provider.meter("portcullis"));
        let events = tune(
            Events::builder()
                .recorder(recorder.clone())
                .client_ip(client_ip)
                .route(matched_path),
        )
        .build();
        recorder.watch_events("bench", &events);
        let recent = RecentActivity::new();
        let trail = AuditTrail::new()
            .json_lines(std::io::sink())
            .recent(recent.clone());
        tokio::spawn(trail.drain(events.subscribe("audit", 4096)));
        Self {
            events,
            provider,
            exporter,
            recent,
        }
    }
}

impl Observability {
    /// "On" as a candidate change would make it, to measure the change
    /// before making it: `notrace` (no trace id), `nocontext` (no
    /// route, client or trace id read: what a layer that builds the
    /// context only when it emits costs on a request that emits nothing).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or for another name.
    #[must_use]
    pub fn candidate(name: &str) -> Self {
        match name {
            "notrace" => Self::with(|b| b.trace_id(None)),
            "nocontext" => Self::with(|b| b.trace_id(None).route(|_| None).client_ip(|_, _| None)),
            other => panic!("no candidate {other:?}"),
        }
    }

    /// Flushes the meter provider and returns, for each metric exported,
    /// its name and its total (a counter's sum, a histogram's count).
    ///
    /// # Panics
    ///
    /// If the flush or the exporter fails.
    #[must_use]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn exported(&self) -> Vec<(String, u64)> {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
        let Some(last) = all.last() else {
            return Vec::new();
        };
        last.scope_metrics()
            .flat_map(|sm| sm.metrics())
            .map(|m| {
                let total = match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        s.data_points().map(|d| d.value()).sum()
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        h.data_points().map(|d| d.count()).sum()
                    }
                    _ => 0,
                };
                (m.name().to_owned(), total)
            })
            .collect()
    }
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}
