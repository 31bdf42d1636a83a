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
use portcullis::events::{Events, EventsBuilder, TraceId, matched_path};
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

/// The trace id of a W3C `traceparent` header read at fixed offsets, the
/// header's name a constant: what `portcullis_core::events::traceparent`
/// answers (the same ids, the same refusals), measured here as the
/// candidate replacement of its `split('-')` and runtime header-name
/// parsing (`icount obs-* fasttrace`).
#[must_use]
pub fn traceparent_fixed(_: &Extensions, headers: &HeaderMap) -> Option<TraceId> {
    static NAME: http::HeaderName = http::HeaderName::from_static("traceparent");
    let mut values = headers.get_all(&NAME).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let b = value.as_bytes();
    // vv-<32>-<16>-<2>, and after version 00 maybe "-" and more.
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = [b[0], b[1]];
    if &version == b"ff" || (&version == b"00" && b.len() != 55) {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    // What `HeaderValue::to_str` accepts, and no '-' inside a part.
    let visible = |c: &u8| *c == b'\t' || (*c >= 32 && *c != 127 && *c < 128);
    let part = |p: &[u8]| p.iter().all(|c| visible(c) && *c != b'-');
    if !part(&b[..2]) || !part(&b[36..52]) || !part(&b[53..55]) || !b[55..].iter().all(visible) {
        return None;
    }
    let mut id = [0_u8; 16];
    for (out, pair) in id.iter_mut().zip(b[3..35].chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        if (hi | lo) & 0x10 != 0 {
            return None;
        }
        *out = hi << 4 | lo;
    }
    (id != [0; 16]).then_some(TraceId(id))
}

/// Lowercase hex digits' values; `0x10` for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0x10_u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

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
    /// before making it: `fasttrace` (the trace id read by
    /// [`traceparent_fixed`]), `notrace` (no trace id), `nocontext` (no
    /// route, client or trace id read: what a layer that builds the
    /// context only when it emits costs on a request that emits nothing).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or for another name.
    #[must_use]
    pub fn candidate(name: &str) -> Self {
        match name {
            "fasttrace" => Self::with(|b| b.trace_id(Some(traceparent_fixed))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis::events::traceparent;

    #[test]
    fn fixed_offsets_read_what_traceparent_reads() {
        let cases = [
            TRACEPARENT,
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0b-902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7--1",
            "0--4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
        ];
        let ext = Extensions::new();
        for value in cases {
            let mut headers = HeaderMap::new();
            // from_bytes: obs-text (non-ASCII) too, which to_str refuses.
            let value_bytes = http::HeaderValue::from_bytes(value.as_bytes()).unwrap();
            headers.insert("traceparent", value_bytes);
            assert_eq!(
                traceparent_fixed(&ext, &headers),
                traceparent(&ext, &headers),
                "{value:?}"
            );
        }
        let mut twice = HeaderMap::new();
        twice.append("traceparent", TRACEPARENT.parse().unwrap());
        twice.append("traceparent", TRACEPARENT.parse().unwrap());
        assert_eq!(traceparent_fixed(&ext, &twice), None);
        assert_eq!(traceparent_fixed(&ext, &HeaderMap::new()), None);
    }
}
