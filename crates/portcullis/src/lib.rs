//! portcullis: session, JWT, CSRF and refresh-token authentication for any
//! tower stack (axum, tonic, hyper), as layers.
//!
//! This facade re-exports the layer crates behind features:
//!
//! | feature | default | module | what it adds |
//! |---|---|---|---|
//! | `session` | yes | [`session`] | `SessionLayer`, server-side sessions |
//! | `file-store` | no | [`session`] | `FileStore` |
//! | `jwt` | no | [`jwt`] | `JwtLayer`, `JwtIssuer`, key sets, revocation view |
//! | `jwks-remote` | no | [`jwt`] | JWKS from an HTTPS URL |
//! | `refresh` | no | [`refresh`] | `RefreshLayer`, `Refresher`: rotating refresh tokens |
//! | `csrf` | no | [`csrf`] | `CsrfLayer`: Fetch Metadata, Origin and token checks |
//! | `password` | no | [`password`] | `PasswordHasher` (argon2id, bounded pool, equal cost for unknown users), `PasswordPolicy` |
//! | `throttle` | no | [`throttle`] | `LoginThrottleLayer`: brute-force protection for login and refresh routes |
//! | `redis` | no | [`redis`] | Redis stores for every enabled layer (the throttle's too) |
//! | `redis-cluster` | no | [`redis`] | Redis Cluster targets |
//! | `redis-tls` | no | [`redis`] | `rediss://` (TLS with rustls) |
//! | `opentelemetry` | no | [`otel`] | `OtelRecorder`: OpenTelemetry metrics of the auth events (`opentelemetry` 0.33) |
//! | `axum` | no | [`events`] | extractors for every enabled layer; [`events::matched_path`] |
//! | `tracing` | yes | | `tracing` events (never a token) |
//! | `testing` | no | | store conformance suites |
//!
//! The shared vocabulary (tokens, clocks, cookies, rejections) is in
//! [`core`]. The PostgreSQL and SQLite stores are in the `portcullis-sql`
//! crate, used directly (it needs Rust 1.94, sqlx 0.9's minimum); its
//! `throttle` feature holds the SQL throttle stores.
//!
//! ## The front door
//!
//! What happens before `session.login(user)`: check the password with
//! [`password::PasswordHasher::verify`] (the same cost for an unknown
//! user), and put a [`throttle::LoginThrottleLayer`] on the login route,
//! counting the failures the handler reports with a
//! [`throttle::LoginOutcome`]. The `session-login`, `web-app`,
//! `hybrid-spa` and `jwt-api` templates show the whole login.
//!
//! ```
//! # #[cfg(all(feature = "password", feature = "throttle"))] {
//! use portcullis::password::PasswordHasher;
//! use portcullis::throttle::{LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig};
//!
//! let hasher = PasswordHasher::builder().build().unwrap();
//! let throttle = LoginThrottleLayer::new(MemoryThrottleStore::new(), ThrottleConfig::default());
//! # let _ = (hasher, throttle);
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use portcullis_core as core;

/// The typed auth event stream every layer emits: see
/// [`portcullis_core::events`]. Build one [`Events`](events::Events) handle
/// and give it to each layer's configuration (`.events(events.clone())`).
pub mod events {
    pub use portcullis_core::events::*;

    /// The route template axum matched (`/users/{id}`), for
    /// [`EventsBuilder::route`]: events then carry the template, never the
    /// path. The layer must run inside the router (`Router::layer` or
    /// `route_layer`), where axum has set `MatchedPath`.
    ///
    /// ```
    /// use portcullis::events::{Events, matched_path};
    ///
    /// let events = Events::builder().route(matched_path).build();
    /// # let _ = events;
    /// // Nothing matched: no route.
    /// assert_eq!(matched_path(&axum::http::Extensions::new()), None);
    /// ```
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    #[must_use]
    pub fn matched_path(extensions: &axum::http::Extensions) -> Option<std::sync::Arc<str>> {
        let path = extensions.get::<axum::extract::MatchedPath>()?.as_str();
        Some(intern(path))
    }

    /// The shared copy of a route template: each thread keeps the last
    /// templates it saw, so a request costs a comparison, not an
    /// allocation (a route is read on every request while something
    /// listens).
    #[cfg(feature = "axum")]
    fn intern(path: &str) -> std::sync::Arc<str> {
        use std::cell::RefCell;
        use std::sync::Arc;
        /// Routes kept per thread; past it the oldest is forgotten.
        const KEPT: usize = 64;
        thread_local! {
            static ROUTES: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
        }
        ROUTES.with(|routes| {
            let mut routes = routes.borrow_mut();
            if let Some(route) = routes.iter().find(|r| ***r == *path) {
                return Arc::clone(route);
            }
            let route: Arc<str> = path.into();
            if routes.len() == KEPT {
                routes.remove(0);
            }
            routes.push(Arc::clone(&route));
            route
        })
    }
}

/// OpenTelemetry metrics of the auth event stream: see [`portcullis_otel`].
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod otel {
    pub use portcullis_otel::*;
}

/// Server-side sessions: see [`portcullis_session`].
#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub mod session {
    pub use portcullis_session::*;
}

/// Stateless JWT verification: see [`portcullis_jwt`].
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt {
    pub use portcullis_jwt::*;
}

/// Rotating refresh tokens and the hybrid pattern: see [`portcullis_refresh`].
#[cfg(feature = "refresh")]
#[cfg_attr(docsrs, doc(cfg(feature = "refresh")))]
pub mod refresh {
    pub use portcullis_refresh::*;
}

/// CSRF protection: see [`portcullis_csrf`].
#[cfg(feature = "csrf")]
#[cfg_attr(docsrs, doc(cfg(feature = "csrf")))]
pub mod csrf {
    pub use portcullis_csrf::*;
}

/// Password hashing and checking: see [`portcullis_password`].
#[cfg(feature = "password")]
#[cfg_attr(docsrs, doc(cfg(feature = "password")))]
pub mod password {
    pub use portcullis_password::*;
}

/// Brute-force protection for login and refresh routes: see
/// [`portcullis_throttle`].
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub mod throttle {
    pub use portcullis_throttle::*;
}

/// Redis stores: see [`portcullis_redis`].
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use portcullis_redis::*;
}
