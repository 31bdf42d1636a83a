//! Where an event happened: the request's route, client and trace.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderValue};

/// Reads the route template of a request from its extensions: axum's
/// `MatchedPath` (the `portcullis` facade's `events::matched_path` with
/// its `axum` feature). Never the raw path: paths carry ids and sometimes
/// tokens.
pub type RouteFn = fn(&Extensions) -> Option<Arc<str>>;

/// Reads the trace id of a request. The default is [`traceparent`]; an
/// application that makes its own trace ids (an OpenTelemetry context
/// attached by its tracing layer) sets its own.
pub type TraceIdFn = fn(&Extensions, &HeaderMap) -> Option<TraceId>;

/// A W3C trace id: 16 bytes, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// Parses 32 hex digits; `None` for anything else or the all-zero
    /// (invalid) id.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut id = [0_u8; 16];
        for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
            *out = hex_pair(pair[0], pair[1])?;
        }
        (id != [0; 16]).then_some(Self(id))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// The `traceparent` header's name, parsed once.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Two lowercase hex digits as a byte.
const fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    const fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    match (digit(hi), digit(lo)) {
        (Some(h), Some(l)) => Some(h << 4 | l),
        _ => None,
    }
}

/// Whether every byte is lowercase hex and not all are `0`.
fn nonzero_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && bytes.iter().any(|&b| b != b'0')
}

/// The trace id of a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`); `None` when
/// the header is missing, repeated or not what the W3C Trace Context
/// recommendation accepts: every part lowercase hex, neither id all
/// zeros, version `ff` invalid, version `00` exactly 55 characters, a later
/// version at least that with a `-` after the flags.
///
/// ```
/// use http::{Extensions, HeaderMap, HeaderValue};
/// use portcullis_core::events::traceparent;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let id = traceparent(&Extensions::new(), &headers).unwrap();
/// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// ```
#[must_use]
pub fn traceparent(_: &Extensions, headers: &HeaderMap) -> Option<TraceId> {
    parse_traceparent(single_traceparent(headers)?.as_bytes())
}

/// The `traceparent` header when it is sent exactly once.
fn single_traceparent(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let value = values.next()?;
    values.next().is_none().then_some(value)
}

/// The trace id of one `traceparent` value (see [`traceparent`]).
fn parse_traceparent(value: &[u8]) -> Option<TraceId> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_pair(value[0], value[1])?;
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let length_ok = match version {
        0 => value.len() == 55,
        0xff => false,
        _ => value.len() == 55 || value[55] == b'-',
    };
    if !dashes || !length_ok || hex_pair(value[53], value[54]).is_none() {
        return None;
    }
    if !nonzero_hex(&value[36..52]) {
        return None;
    }
    let mut id = [0_u8; 16];
    for (out, pair) in id.iter_mut().zip(value[3..35].chunks_exact(2)) {
        *out = hex_pair(pair[0], pair[1])?;
    }
    (id != [0; 16]).then_some(TraceId(id))
}

/// A request's event context as a layer keeps it from the request's
/// arrival until an event is built ([`Events::pending_context`](super::Events::pending_context)):
/// the default trace id is kept as the raw header (a reference count),
/// and read only if an event is built. Most requests build none.
#[derive(Debug, Clone, Default)]
pub struct PendingContext {
    route: Option<Arc<str>>,
    client: Option<IpAddr>,
    trace: PendingTrace,
}

#[derive(Debug, Clone, Default)]
enum PendingTrace {
    #[default]
    None,
    Header(HeaderValue),
    Id(TraceId),
}

impl PendingContext {
    pub(super) fn new(
        route: Option<Arc<str>>,
        client: Option<IpAddr>,
        header: Option<HeaderValue>,
        id: Option<TraceId>,
    ) -> Self {
        let trace = match (header, id) {
            (Some(h), _) => PendingTrace::Header(h),
            (None, Some(id)) => PendingTrace::Id(id),
            (None, None) => PendingTrace::None,
        };
        Self {
            route,
            client,
            trace,
        }
    }

    /// The route template.
    #[must_use]
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The client address.
    #[must_use]
    pub const fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// The context, its trace id read now.
    #[must_use]
    pub fn resolve(&self) -> EventContext {
        EventContext {
            route: self.route.clone(),
            client: self.client,
            trace_id: match &self.trace {
                PendingTrace::None => None,
                PendingTrace::Header(h) => parse_traceparent(h.as_bytes()),
                PendingTrace::Id(id) => Some(*id),
            },
        }
    }
}

/// The raw `traceparent` value, when sent once (for [`PendingContext`]).
pub(super) fn raw_traceparent(headers: &HeaderMap) -> Option<HeaderValue> {
    single_traceparent(headers).cloned()
}

/// What a layer knows of the request an event belongs to, captured once
/// when the request arrives (only while events are
/// [enabled](super::Events::enabled)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventContext {
    /// The route template.
    pub route: Option<Arc<str>>,
    /// The client address, as configured.
    pub client: Option<IpAddr>,
    /// The request's trace id.
    pub trace_id: Option<TraceId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<TraceId> {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        traceparent(&Extensions::new(), &headers)
    }

    #[test]
    fn traceparent_table() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse(good).is_some());
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902zz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }

    proptest::proptest! {
        /// Any header bytes: no panic, and an accepted id is exactly the
        /// 32 lowercase hex digits the header carried.
        #[test]
        fn traceparent_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                headers.insert("traceparent", value);
                if let Some(id) = traceparent(&Extensions::new(), &headers) {
                    let text = std::str::from_utf8(&bytes).unwrap();
                    proptest::prop_assert!(text.contains(&id.to_string()));
                }
            }
        }

        #[test]
        fn well_formed_ids_round_trip(id in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let hex = TraceId(id).to_string();
            let parsed = parse(&format!("00-{hex}-00f067aa0ba902b7-01"));
            proptest::prop_assert_eq!(parsed, (id != [0; 16]).then_some(TraceId(id)));
        }
    }

    #[test]
    fn a_pending_context_reads_what_traceparent_reads() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        for value in [good, bad] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", value.parse().unwrap());
            let pending = PendingContext::new(None, None, raw_traceparent(&headers), None);
            assert_eq!(pending.resolve().trace_id, parse(value));
        }
    }

    #[test]
    fn repeated_traceparent_is_ignored() {
        let mut headers = HeaderMap::new();
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.append("traceparent", good.parse().unwrap());
        headers.append("traceparent", good.parse().unwrap());
        assert_eq!(traceparent(&Extensions::new(), &headers), None);
    }
}
