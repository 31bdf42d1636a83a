//! portcullis: session, JWT, CSRF and refresh-token authentication for any
//! tower stack (axum, tonic, hyper), as layers.
//!
//! This facade re-exports the layer crates behind features:
//!
//! | feature | default | module | what it adds |
//! |---|---|---|---|
//! | `session` | yes | [`session`] | `SessionLayer`, server-side sessions |
//! | `file-store` | no | [`session`] | `FileStore` |
//! | `axum` | no | | extractors for every enabled layer |
//! | `tracing` | yes | | `tracing` events (never a token) |
//! | `testing` | no | | store conformance suites |
//!
//! The shared vocabulary (tokens, clocks, cookies, rejections) is in
//! [`core`].

pub use portcullis_core as core;

/// Server-side sessions: see [`portcullis_session`].
#[cfg(feature = "session")]
pub mod session {
    pub use portcullis_session::*;
}
