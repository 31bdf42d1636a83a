//! Brute-force protection for login and refresh routes, as a tower layer.
//!
//! [`LoginThrottleLayer`] counts failed logins per account and per client
//! address, backs off exponentially up to a cap, and answers 429
//! problem+json with `Retry-After` while a counter is blocked, without
//! calling the handler. The handler says how an attempt went with a
//! [`LoginOutcome`]; a success resets the account's counters. The rightful
//! user is slowed, never locked out for good
//! ([`ThrottleConfig`] explains the three counters and what they trade).
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{Extension, Form, Router, routing::post};
//! use portcullis_throttle::{LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig};
//!
//! #[derive(serde::Deserialize)]
//! struct Login { username: String, password: String }
//!
//! async fn login(Form(f): Form<Login>) -> (http::StatusCode, Extension<LoginOutcome>) {
//!     if f.username == "alice" && f.password == "correct horse battery staple" {
//!         (http::StatusCode::NO_CONTENT, Extension(LoginOutcome::Succeeded))
//!     } else {
//!         (http::StatusCode::UNAUTHORIZED, Extension(LoginOutcome::Failed))
//!     }
//! }
//!
//! let throttle = LoginThrottleLayer::new(MemoryThrottleStore::new(), ThrottleConfig::default());
//! let app: Router = Router::new().route("/login", post(login).layer(throttle));
//! // axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//! # let _ = app;
//! ```
//!
//! Counters live in a [`ThrottleStore`]: [`MemoryThrottleStore`] (one
//! instance, bounded memory), or the Redis and SQL stores of
//! `portcullis-redis` and `portcullis-sql`, shared by every instance. The
//! backoff rule is one pure function ([`Backoff`], [`ThrottleState::blocked_until`])
//! every store shares; stores only count.
//!
//! The client address is the connection's peer unless the app names the
//! proxies it trusts ([`ClientAddress`]); IPv6 clients are counted per /64.
//!
//! With [`ThrottleConfigBuilder::events`] the throttle emits typed
//! authentication events (source `throttle`): `throttled` for a 429,
//! `login_failed` for every failed attempt (the reason and user id come
//! from the handler's [`LoginFailure`], never the typed account name), and
//! `store_unavailable` for a 503; the table is at
//! [`events`](ThrottleConfigBuilder::events). `login_succeeded` comes from
//! the session or refresh login, not from here.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | no | [`LoginOutcome`] as a response part; the peer address from axum's `ConnectInfo<SocketAddr>` |
//! | `testing` | no | [`testing`]: the store conformance suite |
//! | `tracing` | no | events at debug (throttled) and warn (store failures), never an account name or address; a `portcullis.throttle` span per counted request (`otel.kind`, `portcullis.decision`, `error.type`, `http.route`) |
//!
//! | file | what it holds |
//! |---|---|
//! | `store.rs` | [`ThrottleStore`], its keys and counters, the [`Backoff`] rule |
//! | `memory.rs` | [`MemoryThrottleStore`] |
//! | `config.rs` | [`ThrottleConfig`] and its builder |
//! | `address.rs` | [`ClientAddress`]: the peer, trusted proxies, `X-Forwarded-For`, `Forwarded` |
//! | `account.rs` | the account field of a form or JSON body |
//! | `layer.rs`, `service.rs` | [`LoginThrottleLayer`] and the [`LoginThrottle`] service |
//! | `outcome.rs` | [`LoginOutcome`], [`LoginFailure`] |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod account;
pub mod address;
mod body;
mod config;
mod layer;
pub mod memory;
mod outcome;
mod service;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use account::{NormalizeFn, normalize_account};
pub use address::{
    ClientAddress, ClientAddressLayer, ClientAddressService, ClientIp, IpRange, IpRangeError,
    ProxyHeader, client_ip,
};
pub use body::RequestBody;
pub use config::{
    DEFAULT_ACCOUNT, DEFAULT_ACCOUNT_AT_ADDRESS, DEFAULT_ACCOUNT_FIELD, DEFAULT_ADDRESS,
    DEFAULT_FORGET_AFTER, DEFAULT_MAX_BODY, ThrottleConfig, ThrottleConfigBuilder,
    ThrottleConfigError,
};
pub use layer::LoginThrottleLayer;
pub use memory::{DEFAULT_CAPACITY, MemoryThrottleStore};
pub use outcome::{LoginFailure, LoginOutcome};
pub use service::{LoginThrottle, ResponseFuture};
pub use store::{Backoff, ThrottleKey, ThrottleScope, ThrottleState, ThrottleStore};
