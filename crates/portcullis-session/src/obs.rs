//! What the layer tells the outside about a request: its
//! `portcullis.session` tracing span (feature `tracing`).

use portcullis_core::events::{Decision, PendingContext};

/// The event source and decision-layer name of this crate.
pub(crate) const SOURCE: &str = "session";

/// The layer's span for one request (nothing without the `tracing`
/// feature): `portcullis.session`, `otel.kind = "internal"`, the decision
/// and its reason code once decided, the route when the event context has
/// it. Never a token or a cookie.
#[derive(Clone)]
pub(crate) struct LayerSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl LayerSpan {
    /// Opens the span for a request.
    #[cfg_attr(not(feature = "tracing"), allow(clippy::missing_const_for_fn))]
    pub(crate) fn new(ctx: &PendingContext) -> Self {
        #[cfg(feature = "tracing")]
        {
            use tracing::field::Empty;
            let span = tracing::debug_span!(
                "portcullis.session",
                otel.kind = "internal",
                portcullis.decision = Empty,
                error.type = Empty,
                http.route = Empty,
            );
            if !span.is_disabled() {
                if let Some(route) = ctx.route() {
                    span.record("http.route", route);
                }
            }
            Self { span }
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = ctx;
            Self {}
        }
    }

    /// Records what the layer decided, and why.
    #[cfg_attr(not(feature = "tracing"), allow(clippy::unused_self))]
    pub(crate) fn decided(&self, decision: Decision, reason: Option<&'static str>) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            self.span.record("portcullis.decision", decision.as_str());
            if let Some(reason) = reason {
                self.span.record("error.type", reason);
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (decision, reason);
    }

    /// The span, to enter while the layer decides.
    #[cfg(feature = "tracing")]
    pub(crate) const fn span(&self) -> &tracing::Span {
        &self.span
    }
}
