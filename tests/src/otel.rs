//! OpenTelemetry metrics in tests: an in-memory exporter behind the recorder.
