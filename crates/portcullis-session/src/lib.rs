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
//! | `file-store` | no | [`FileStore`], durable sessions on one node |
//! | `axum` | no | extractors: [`Session`], [`CurrentUser`], [`FreshLogin`]; `IntoResponse` for [`SessionError`] and [`FreshLoginRejection`] |
//! | `testing` | no | [`testing`]: the store conformance suite and fault injection |
//! | `tracing` | no | debug/warn events (never carrying an id or a cookie); a `portcullis.session` span per request |
//!
//! Sessions record when and how the user authenticated
//! ([`Session::authenticated_at`], [`Session::auth_methods`], set by
//! [`Session::login_with`] and [`Session::reauthenticated`]) in data keys
//! reserved for it ([`AUTH_PREFIX`]); a login can be remembered
//! ([`LoginOptions::remember`]: a persistent cookie, capped by
//! [`SessionConfig::max_remember`]), and otherwise gets a cookie that ends
//! with the browser session; [`Session::password_changed`] logs out the
//! user's other sessions.
//!
//! For tonic or plain hyper, the handle is in the request extensions:
//! `req.extensions().get::<Session>()`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`store`] | the page for store implementers: [`SessionStore`], its records, a complete custom store |
//! | [`guard`] | [`RequireLoginLayer`]: redirect pages to the login form, 401 for APIs |
//! | [`fresh`] | [`RequireFreshLogin`], [`FreshLogin`]: "sudo mode", a recent login for sensitive actions |
//! | [`testing`] | the conformance suite, [`FaultyStore`](testing::FaultyStore) (feature `testing`) |
//!
//! Inside: `layer.rs` builds `service.rs` ([`SessionManager`]), which hands
//! each request a [`Session`] (`session.rs`, with `login.rs` and
//! `per_user.rs`) over the per-request state machine of `state.rs`, and
//! commits it after the response through core's
//! [`LayerFuture`](portcullis_core::LayerFuture) hook ([`CommitSession`]).
//!
//! Requests are refused with a reason in the `portcullis_session` tracing
//! target (feature `tracing`): `RUST_LOG=portcullis_session=debug`.
//!
//! # Events
//!
//! Given an [`Events`](portcullis_core::events::Events) handle
//! ([`SessionConfig::events`]), the layer emits, under the source
//! `session` (user = the id the application passed to [`Session::login`];
//! device = the session's public handle, its [`ActiveSession::id`], never
//! the session id; every event also carries the request's route, client
//! and trace id):
//!
//! | kind | when | user, device |
//! |---|---|---|
//! | `login_succeeded` | [`Session::login`], [`Session::login_with`] | the user; the new session |
//! | `logout` | [`Session::logout`] ended a session (deleted it from the store: of two logouts racing on one session, only the one that deleted it) | its user (if any); the ended session |
//! | `logout_everywhere` | [`Session::logout_everywhere`], and [`Session::logout_other_sessions`] (the user asked every other device out) | the user; the session that asked |
//! | `session_renewed` | [`Session::renew`], [`Session::reauthenticated`] | the user; the new id's session |
//! | `session_evicted` | the per-user cap ([`SessionConfig::max_sessions_per_user`]) ended a session to make room: one event per session | the user; the evicted session |
//! | `session_expired` | a request presented a session the store returned but that is past its idle or absolute deadline by the layer's clock | its user; the session |
//! | `device_revoked` | [`Session::revoke_session`] ended a session | the user; the revoked session |
//! | `password_changed` | [`Session::password_changed`] (only this event: not a renewal, not a logout everywhere) | the user; the session's new id |
//! | `reauth_required` | [`RequireFreshLogin`] or [`FreshLogin`] refused: `reason` `login-not-fresh` (a login too old) or `login-required` (nobody logged in) | the user (if any); the session |
//! | `store_unavailable` | a store failure became a 503: `store` `session`, `operation` `load`, `create`, `update`, `delete`, `delete_for_user` or `list_for_user` | none |
//!
//! `session_expired` needs a store that still returns the expired record:
//! the stores of this project (and any store passing the conformance suite)
//! drop expired records on their own, so for them an expired session is an
//! unknown one (no event; the decision says `session-unknown`). It fires
//! when the store's clock lags the layer's (another instance, a database
//! clock) or for a store that leaves expiry to the layer.
//!
//! The recorder is told the layer's decision on the presented session:
//! success (a session was loaded), none (no session id) or failure
//! (`session-malformed`, `session-unknown`, `session-expired`,
//! `session-corrupt`, `session-store-unavailable`). The session is lazy:
//! a request whose handler never uses it is decided only when it carried
//! no id or an invalid one. The route, client and trace id are read when
//! the request arrives, and only while something listens (the client
//! again when a handler takes the session: see
//! [`SessionConfig::client_ip`]). With the
//! `tracing` feature each request gets a `portcullis.session` span
//! (`otel.kind = "internal"`, `portcullis.decision`, `error.type` = the
//! reason code, `http.route`).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod config;
mod error;
#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "file-store")]
mod file;
pub mod fresh;
pub mod guard;
mod layer;
mod login;
mod memory;
mod obs;
mod per_user;
mod redirect_url;
mod schedule;
mod service;
mod session;
mod state;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use auth::{AUTH_PREFIX, AuthMethod, InvalidAuthMethod, LoginOptions};
pub use config::{
    DEFAULT_MAX_REMEMBER, DEFAULT_MAX_SESSIONS_PER_USER, DEFAULT_REMEMBERED_IDLE_TIMEOUT,
    MAX_REMEMBER_LIMIT, SessionConfig, SessionConfigError, Transport,
};
pub use error::{SessionError, SessionErrorKind};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::CurrentUser;
#[cfg(feature = "file-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "file-store")))]
pub use file::FileStore;
pub use fresh::{
    FreshLogin, FreshLoginGuard, FreshLoginRejection, LOGIN_NOT_FRESH, RequireFreshLogin,
};
pub use guard::{InvalidLoginUrl, RequireLogin, RequireLoginLayer};
pub use layer::SessionLayer;
pub use login::RENEW_SCOPED_PREFIX;
pub use memory::{DEFAULT_MAX_SESSIONS, MemoryStore};
pub use portcullis_core::ActiveSession;
pub use portcullis_core::request::ClientIpFn;
pub use portcullis_core::store::CallCounter;
pub use service::{CommitSession, ResponseFuture, SessionManager};
pub use session::Session;
pub use store::{
    CapPolicy, CountingStore, CreateOutcome, InstrumentedStore, SessionCap, SessionMetadata,
    SessionRecord, SessionStore, SessionUpdate, eviction_victims,
};
