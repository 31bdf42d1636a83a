//! Server-side sessions as a tower layer.
//!
//! The session id is an opaque 256-bit token in a `__Host-` cookie; the
//! store keeps the record under the id's SHA-256, never the id. The layer
//! is lazy (no store call unless the handler uses the session), writes only
//! the keys a request changed and only when something changed, enforces an
//! idle timeout and an absolute lifetime on the server, renews the id
//! atomically at login, and answers 503 (never "logged out") when the store
//! is down.
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use portcullis_session::{CurrentUser, MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
//!
//! async fn login(session: Session) -> Result<&'static str, SessionError> {
//!     // ... check the credentials first ...
//!     session.login("alice").await?;
//!     Ok("welcome")
//! }
//!
//! async fn me(CurrentUser(user): CurrentUser) -> String {
//!     user
//! }
//!
//! async fn logout(session: Session) -> Result<&'static str, SessionError> {
//!     session.logout().await?;
//!     Ok("bye")
//! }
//!
//! let layer = SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap();
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/me", get(me))
//!     .route("/logout", post(logout))
//!     .layer(layer);
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `file-store` | yes | [`FileStore`], durable sessions on one node |
//! | `axum` | no | extractors: [`Session`], [`CurrentUser`]; `IntoResponse` for [`SessionError`] |
//! | `testing` | no | [`testing`]: the store conformance suite and fault injection |
//! | `tracing` | no | debug/warn events (never carrying an id or a cookie) |
//!
//! For tonic or plain hyper, the handle is in the request extensions:
//! `req.extensions().get::<Session>()`.

mod config;
mod counting;
mod error;
#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "file-store")]
mod file;
mod layer;
mod memory;
mod record;
mod schedule;
mod session;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    ClientIpFn, DEFAULT_MAX_SESSIONS_PER_USER, SessionConfig, SessionConfigError, Transport,
};
pub use counting::{CountingStore, OpCounter};
pub use error::{SessionError, SessionErrorKind};
#[cfg(feature = "axum")]
pub use extract::CurrentUser;
#[cfg(feature = "file-store")]
pub use file::FileStore;
pub use layer::{ResponseFuture, SessionLayer, SessionService};
pub use memory::{DEFAULT_MAX_SESSIONS, MemoryStore};
pub use record::{
    CapPolicy, CreateOutcome, SessionCap, SessionMetadata, SessionRecord, SessionUpdate,
    eviction_victims,
};
pub use session::{RENEW_SCOPED_PREFIX, Session, SessionInfo};
pub use store::SessionStore;

