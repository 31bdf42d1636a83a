//! OpenTelemetry metrics in tests: an in-memory exporter behind the recorder.
//!
//! Each [`Metrics`] has its own `SdkMeterProvider` (no global provider), so
//! tests sharing a process under plain `cargo test` do not see each
//! other's counts.
//!
//! ```no_run
//! # fn f() {
//! use portcullis_tests::otel::Metrics;
//!
//! let metrics = Metrics::new();
//! let events = metrics.events().build();
//! // ... give `events` to the layers, drive requests through a TestServer ...
//! assert_eq!(metrics.event_count("jwt_refused", Some("expired")), 1);
//! # let _ = events; }
//! ```

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use portcullis::core::events::{Events, EventsBuilder};
use portcullis::otel::{ERROR_TYPE, OtelRecorder, event_metric};

/// An `SdkMeterProvider` exporting to memory, with an [`OtelRecorder`] on
/// its `portcullis` meter.
#[derive(Debug)]
pub struct Metrics {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    recorder: OtelRecorder,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One exported data point, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Its attributes, `(key, value)` as strings.
    pub attributes: Vec<(String, String)>,
    /// A counter's or gauge's value (histograms: the count).
    pub value: f64,
    /// Histograms: bucket boundaries.
    pub bounds: Vec<f64>,
    /// Histograms: the count per bucket (one more than `bounds`).
    pub buckets: Vec<u64>,
}

impl Point {
    /// Whether every `(key, value)` of `attrs` is among its attributes.
    #[must_use]
    pub fn has(&self, attrs: &[(&str, &str)]) -> bool {
        attrs
            .iter()
            .all(|(k, v)| self.attributes.iter().any(|(pk, pv)| pk == k && pv == v))
    }

    /// The value of attribute `key`.
    #[must_use]
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn attrs<'a>(it: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
    it.map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
        .collect()
}

#[allow(clippy::cast_precision_loss)]
fn points(metric: &Metric) -> Vec<Point> {
    fn sum<T: Copy + Into<f64>>(
        points: impl Iterator<Item = (Vec<(String, String)>, T)>,
    ) -> Vec<Point> {
        points
            .map(|(attributes, v)| Point {
                attributes,
                value: v.into(),
                bounds: Vec::new(),
                buckets: Vec::new(),
            })
            .collect()
    }
    match metric.data() {
        AggregatedMetrics::U64(MetricData::Sum(s)) => sum(s
            .data_points()
            .map(|d| (attrs(d.attributes()), d.value() as f64))),
        AggregatedMetrics::U64(MetricData::Gauge(g)) => sum(g
            .data_points()
            .map(|d| (attrs(d.attributes()), d.value() as f64))),
        AggregatedMetrics::I64(MetricData::Sum(s)) => sum(s
            .data_points()
            .map(|d| (attrs(d.attributes()), d.value() as f64))),
        AggregatedMetrics::I64(MetricData::Gauge(g)) => sum(g
            .data_points()
            .map(|d| (attrs(d.attributes()), d.value() as f64))),
        AggregatedMetrics::F64(MetricData::Sum(s)) => {
            sum(s.data_points().map(|d| (attrs(d.attributes()), d.value())))
        }
        AggregatedMetrics::F64(MetricData::Gauge(g)) => {
            sum(g.data_points().map(|d| (attrs(d.attributes()), d.value())))
        }
        AggregatedMetrics::F64(MetricData::Histogram(h)) => h
            .data_points()
            .map(|d| Point {
                attributes: attrs(d.attributes()),
                value: d.count() as f64,
                bounds: d.bounds().collect(),
                buckets: d.bucket_counts().collect(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Metrics {
    /// A provider with an in-memory exporter and a recorder on it.
    #[must_use]
    pub fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let recorder = OtelRecorder::new(&provider.meter("portcullis"));
        Self {
            provider,
            exporter,
            recorder,
        }
    }

    /// The recorder (a clone shares its instruments): for
    /// `watch_events` / `watch_gauge`.
    #[must_use]
    pub fn recorder(&self) -> &OtelRecorder {
        &self.recorder
    }

    /// An events builder with the recorder set and every decision timed
    /// (`sample_decisions(1)`).
    pub fn events(&self) -> EventsBuilder {
        Events::builder()
            .recorder(self.recorder.clone())
            .sample_decisions(1)
    }

    /// Flushes and returns every metric exported so far (the last,
    /// cumulative export).
    ///
    /// # Panics
    /// If the flush or the export fails.
    #[must_use]
    pub fn export(&self) -> Vec<(String, Vec<Point>)> {
        self.provider.force_flush().expect("flush the metrics");
        let all: Vec<ResourceMetrics> = self
            .exporter
            .get_finished_metrics()
            .expect("read the exported metrics");
        let Some(last) = all.last() else {
            return Vec::new();
        };
        last.scope_metrics()
            .flat_map(|sm| sm.metrics())
            .map(|m| (m.name().to_owned(), points(m)))
            .collect()
    }

    /// The data points of the metric `name` whose attributes include
    /// `attrs`.
    #[must_use]
    pub fn points(&self, name: &str, attrs: &[(&str, &str)]) -> Vec<Point> {
        self.export()
            .into_iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, p)| p)
            .filter(|p| p.has(attrs))
            .collect()
    }

    /// The names of the metrics exported so far.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.export().into_iter().map(|(n, _)| n).collect()
    }

    /// The sum of the counter `name`'s points whose attributes include
    /// `attrs`.
    #[must_use]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.points(name, attrs)
            .iter()
            .map(|p| p.value as u64)
            .sum()
    }

    /// How many events of the kind named `kind` (`logout`, `jwt_refused`,
    /// ...) were counted, with `error.type = reason` when given.
    ///
    /// # Panics
    /// If `kind` is not an event kind's name.
    #[must_use]
    pub fn event_count(&self, kind: &str, reason: Option<&str>) -> u64 {
        let m = event_metric(kind).unwrap_or_else(|| panic!("no event kind {kind}"));
        let mut filter: Vec<(&str, &str)> = m.fixed.into_iter().collect();
        if let Some(reason) = reason {
            filter.push((ERROR_TYPE, reason));
        }
        self.counter(m.metric, &filter)
    }

    /// How many values the histogram `name` recorded in its points whose
    /// attributes include `attrs`.
    #[must_use]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn histogram_count(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.points(name, attrs)
            .iter()
            .map(|p| p.value as u64)
            .sum()
    }

    /// The bucket boundaries the histogram `name` was exported with (of its
    /// first point), if it recorded anything.
    #[must_use]
    pub fn histogram_bounds(&self, name: &str) -> Option<Vec<f64>> {
        self.points(name, &[]).into_iter().next().map(|p| p.bounds)
    }

    /// The value of the gauge (or observable counter) `name` at the point
    /// whose attributes include `attrs`, if exported.
    #[must_use]
    pub fn gauge(&self, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
        self.points(name, attrs).first().map(|p| p.value)
    }
}
