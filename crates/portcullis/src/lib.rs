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
//! | `redis` | no | [`redis`] | Redis stores for every enabled layer |
//! | `redis-cluster` | no | [`redis`] | Redis Cluster targets |
//! | `redis-tls` | no | [`redis`] | `rediss://` (TLS with rustls) |
//! | `axum` | no | | extractors for every enabled layer |
//! | `tracing` | yes | | `tracing` events (never a token) |
//! | `testing` | no | | store conformance suites |
//!
//! The shared vocabulary (tokens, clocks, cookies, rejections) is in
//! [`core`]. The PostgreSQL and SQLite stores are in the `portcullis-sql`
//! crate, used directly (it needs Rust 1.94, sqlx 0.9's minimum).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use portcullis_core as core;

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

/// Redis stores: see [`portcullis_redis`].
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use portcullis_redis::*;
}
