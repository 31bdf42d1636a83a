//! What the layer tells the outside about a request: its
//! `portcullis.csrf` tracing span (feature `tracing`).

/// The event source and decision-layer name of this crate.
pub(crate) const SOURCE: &str = "csrf";

portcullis_core::layer_span!("portcullis.csrf");
