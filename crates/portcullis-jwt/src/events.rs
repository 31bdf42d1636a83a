//! What the JWT layers and the issuer tell the event stream
//! ([`Events`](portcullis_core::events::Events)): one refusal event per
//! refused request, decision timing, and the `portcullis.jwt` span.

use portcullis_core::events::{
    AuthEvent, AuthEventKind, Decision, DecisionTimer, EventContext, Events,
};

use crate::error::{JwtError, JwtErrorKind};

/// The source name of every event this crate emits.
pub(crate) const SOURCE: &str = "jwt";

/// One request's observation: started when a layer begins its own work,
/// finished with [`Observation::decided`]. Holds no token, and reads the
/// request's [`EventContext`] only when it is needed: for a refusal event,
/// or for the `http.route` of a span a subscriber records.
pub(crate) struct Observation {
    timer: Option<DecisionTimer>,
    /// Read at the start only for a recorded span; reused by a refusal.
    ctx: Option<EventContext>,
    #[cfg(feature = "tracing")]
    pub(crate) span: tracing::Span,
}

impl Observation {
    /// Starts observing a request; `span`: open the `portcullis.jwt` span
    /// (the `JwtLayer` does; the route guards only time and emit).
    pub(crate) fn start(
        events: &Events,
        parts: (&http::Extensions, &http::HeaderMap),
        span: bool,
    ) -> Self {
        let timer = events.start_decision();
        #[cfg(not(feature = "tracing"))]
        let _ = (span, parts);
        #[cfg(not(feature = "tracing"))]
        let ctx = None;
        #[cfg(feature = "tracing")]
        let (span, ctx) = if span {
            let span = tracing::info_span!(
                "portcullis.jwt",
                otel.kind = "internal",
                portcullis.decision = tracing::field::Empty,
                error.type = tracing::field::Empty,
                http.route = tracing::field::Empty,
            );
            // A span nobody records gets no field work.
            let ctx =
                (!span.is_disabled() && events.enabled()).then(|| events.context(parts.0, parts.1));
            if let Some(route) = ctx.as_ref().and_then(|c| c.route.as_deref()) {
                span.record("http.route", route);
            }
            (span, ctx)
        } else {
            (tracing::Span::none(), None)
        };
        Self {
            timer,
            ctx,
            #[cfg(feature = "tracing")]
            span,
        }
    }

    /// Records what `layer` decided: `Ok(true)` a verified token,
    /// `Ok(false)` nothing to check (passed on anonymous), `Err` a refusal,
    /// which is emitted (see [`refusal`]) with the context of the request
    /// whose `parts` are given, read only then.
    pub(crate) fn decided(
        self,
        events: &Events,
        parts: (&http::Extensions, &http::HeaderMap),
        layer: &'static str,
        outcome: Result<bool, &JwtError>,
        user: Option<&str>,
    ) {
        let (decision, reason) = match outcome {
            Ok(true) => (Decision::Success, None),
            Ok(false) => (Decision::None, None),
            Err(e) => (Decision::Failure, Some(e.reason())),
        };
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            self.span.record("portcullis.decision", decision.as_str());
            if let Some(reason) = reason {
                self.span.record("error.type", reason);
            }
        }
        events.decided(self.timer, layer, decision, reason);
        if let Err(e) = outcome {
            if events.enabled() {
                let ctx = self.ctx.unwrap_or_else(|| events.context(parts.0, parts.1));
                refusal(events, &ctx, e, user);
            }
        }
    }
}

/// Emits a refusal: `reauth_required` for a step-up refusal, otherwise
/// `jwt_refused` with the error's reason; a revocation view that cannot
/// answer (503) is also `store_unavailable` (`revocation`, `check`).
pub(crate) fn refusal(events: &Events, ctx: &EventContext, e: &JwtError, user: Option<&str>) {
    let reason = e.reason();
    let kind = if e.kind() == JwtErrorKind::InsufficientUserAuthentication {
        AuthEventKind::ReauthRequired { reason }
    } else {
        AuthEventKind::JwtRefused { reason }
    };
    events.emit(|| AuthEvent::new(SOURCE, kind).context(ctx).maybe_user(user));
    if e.kind() == JwtErrorKind::RevocationUnavailable {
        events.emit(|| {
            AuthEvent::new(
                SOURCE,
                AuthEventKind::StoreUnavailable {
                    store: "revocation",
                    operation: "check",
                },
            )
            .context(ctx)
        });
    }
}
