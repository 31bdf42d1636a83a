//! What the layer tells the outside about a request: its
//! `portcullis.session` tracing span (feature `tracing`).

/// The event source and decision-layer name of this crate.
pub(crate) const SOURCE: &str = "session";

portcullis_core::layer_span!("portcullis.session");
