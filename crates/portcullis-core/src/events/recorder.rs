//! The inline side of the bus: [`Recorder`] (metrics).

use std::fmt;
use std::time::{Duration, Instant};

use super::kind::AuthEvent;

/// What a layer decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The request carried valid credentials (or a valid CSRF token).
    Success,
    /// The request was refused.
    Failure,
    /// Nothing to decide: no credentials, passed on anonymous (or a safe
    /// method through the CSRF layer).
    None,
}

impl Decision {
    /// `success`, `failure` or `none`: OpenTelemetry's
    /// `aspnetcore.authentication.result` values.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::None => "none",
        }
    }
}

/// A started decision timer ([`Events::start_decision`](super::Events::start_decision)).
#[derive(Debug, Clone, Copy)]
pub struct DecisionTimer(pub(super) Instant);

/// Counts what the bus sees, inline, on the request's thread: metrics.
/// Unlike a subscriber it loses nothing, so it must be quick and must
/// never block (no I/O, no lock another thread can hold for long).
///
/// Every method has an empty default.
pub trait Recorder: Send + Sync + fmt::Debug + 'static {
    /// An event was emitted.
    fn event(&self, event: &AuthEvent) {
        let _ = event;
    }

    /// A layer decided about a request (sampled: see
    /// [`EventsBuilder::sample_decisions`](super::EventsBuilder::sample_decisions)),
    /// in `elapsed` of its own time.
    fn decision(
        &self,
        layer: &'static str,
        decision: Decision,
        reason: Option<&'static str>,
        elapsed: Duration,
    ) {
        let _ = (layer, decision, reason, elapsed);
    }

    /// A store call through [`StoreEvents`](super::StoreEvents) finished in `elapsed`;
    /// `error` is its error kind (`backend`, `timeout`, ...) when it failed.
    fn store_call(
        &self,
        store: &'static str,
        operation: &'static str,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        let _ = (store, operation, error, elapsed);
    }
}
