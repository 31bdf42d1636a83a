//! One typed stream of authentication events for every layer and store:
//! [`AuthEvent`], delivered through [`Events`].
//!
//! Every layer crate takes an [`Events`] handle in its configuration. Give
//! each layer the same handle and one subscriber sees the whole stack; give
//! a layer its own and its subscribers see that layer only.
//!
//! - **Subscribers** ([`Events::subscribe`]) receive events on a bounded
//!   channel of their own. A request never waits for a subscriber: an event
//!   that does not fit is dropped for that subscriber and counted
//!   ([`EventStream::dropped`], [`Events::dropped`]).
//! - **A recorder** ([`Recorder`], set once with
//!   [`EventsBuilder::recorder`]) is called inline with every event, every
//!   sampled layer decision and every timed store call. It is for counting
//!   (metrics: `portcullis-otel`), must not block, and loses nothing.
//!
//! With neither, [`Events::enabled`] is `false` and a layer builds nothing:
//! the events cost one atomic load per emission point reached.
//!
//! # What an event carries
//!
//! The kind ([`AuthEventKind`], with a reason code where there is one), the
//! layer or store that emitted it, the time, and, when known: the user id
//! the application gave the library, a device id (a refresh family or
//! session handle: public identifiers, never credentials), the request's
//! route template, the client address as the application configured it
//! ([`EventsBuilder::client_ip`]) and the W3C trace id of the request.
//!
//! An event never carries a token, a cookie, a key, a password, or what
//! the user typed: the tests scan every event of the whole suite for the
//! secrets they used.
//!
//! ```
//! use portcullis_core::events::{AuthEvent, AuthEventKind, Events};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let events = Events::new();
//! let mut stream = events.subscribe("audit", 1024);
//! assert!(events.enabled());
//!
//! events.emit(|| AuthEvent::new("session", AuthEventKind::Logout).user("alice"));
//! let event = stream.recv().await.unwrap();
//! assert_eq!(event.kind.name(), "logout");
//! assert_eq!(event.user.as_deref(), Some("alice"));
//! # });
//! ```

pub mod audit;
mod bus;
mod context;
mod kind;
mod recorder;
mod store;

pub use audit::{AuditTrail, JsonLines, RecentActivity};
pub use bus::{EventStream, Events, EventsBuilder, WeakEvents, install_tap};
pub use context::{EventContext, PendingContext, RouteFn, TraceId, TraceIdFn, traceparent};
pub use kind::{AuthEvent, AuthEventKind};
pub use recorder::{Decision, DecisionTimer, Recorder};
pub use store::StoreEvents;
