//! Rotating refresh tokens with reuse detection, and the hybrid pattern.
//!
//! Short-lived access JWTs (15 minutes) plus server-side, revocable,
//! rotating refresh tokens: the pattern production systems converge on.
//!
//! - A **family** is one login on one device. Its refresh token is
//!   `<family id>.<secret>`; the store keeps only SHA-256 digests.
//! - **Every refresh rotates** atomically (compare-and-swap). Presenting the
//!   previous token inside the grace window (default 10 s; several tabs, a
//!   lost response, a retry after a store failure) gets the same successor:
//!   successors are derived by HMAC under a server key, so repeats never
//!   fork the chain. Presenting an older token, or the previous one after
//!   the window, to any endpoint (refresh, logout, log out everywhere) is
//!   **reuse**: the family is revoked at once, newest token included, and a
//!   `refresh_reuse_detected` event is emitted (see [Events](#events)).
//! - Access tokens carry the family as `sid` and the user's token version
//!   as `ver`. Logging a device out, a reuse, or logging out everywhere puts
//!   the family or the user into the JWT revocation view, so **live access
//!   tokens die at once** on every instance, with no store call per request.
//! - Idle timeout 7 days, absolute lifetime 30 days (never extended by a
//!   refresh).
//! - Every access token of a family carries the login's `auth_time`
//!   (unchanged by refreshes), `amr` (default `["pwd"]`) and optional
//!   `acr`, for [`RequireFreshAuthLayer`](portcullis_jwt::RequireFreshAuthLayer)
//!   ("sudo mode"); stepping up is a new login.
//! - [`Refresher::password_changed`] ends every family of the user and
//!   kills their live access tokens at once, in one call that fails
//!   (answer 503, retry) rather than half-succeed.
//! - **Sender-constrained** with [`RefreshConfig::dpop`] (RFC 9449 §5):
//!   a login carrying a DPoP proof binds its family to the proof's key;
//!   its access tokens carry `cnf.jkt` (`token_type: DPoP`), and a
//!   refresh, logout or log-out-everywhere with a token of a bound family
//!   needs a fresh proof by that key, checked before anything rotates: a
//!   stolen refresh cookie or body token is useless without the key, and
//!   its refusal burns nothing (the owner keeps refreshing). Refused
//!   proofs are refusals of the layer with the proof's reason code
//!   (`dpop-missing`, `dpop-key-mismatch`, `dpop-replay`, ...).
//! - At most 20 families (devices) per user by default
//!   ([`RefreshConfig::max_families_per_user`]): a login beyond the cap
//!   logs the user's oldest device out, its access tokens included.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use portcullis_jwt::revocation::{MemoryRevocationStore, RevocationStore};
//! use portcullis_jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
//! use portcullis_refresh::{MemoryRefreshStore, RefreshLayer, Refresher};
//!
//! let revocations = Arc::new(MemoryRevocationStore::new());
//! let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
//!     .issuer("https://app.example.com").audience("app").build().unwrap();
//! let jwt = JwtLayer::builder(issuer.keys())
//!     .issuer("https://app.example.com").audience("app")
//!     .revocation(revocations.view())
//!     .build().unwrap();
//! let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt.clone())
//!     .build().unwrap();
//! let app: Router = Router::new()
//!     .route("/api/me", get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }))
//!     .layer(jwt)
//!     .layer(RefreshLayer::new(&refresher)); // serves /auth/refresh, /auth/logout, ...
//! ```
//!
//! Not included: a rate limit on the refresh and login endpoints. Put a
//! rate limiter in front of `/auth/*` (in the proxy, or a tower layer such
//! as `tower::limit`).
//!
//! # Events
//!
//! Give [`RefreshConfig::events`] an
//! [`Events`](portcullis_core::events::Events) handle and the refresher
//! emits, with source `refresh`, the user and (but for password changes
//! and outages) the family id as the device:
//!
//! | event | when |
//! |---|---|
//! | `login_succeeded` | [`Login::issue`] / [`Login::reply`] started a family |
//! | `refresh_rotated` | a refresh token was rotated (a repeat inside the grace window too) |
//! | `refresh_reuse_detected` | a rotated token was presented again: the family is revoked (once per family, however often the token is replayed) |
//! | `family_expired` | a token of a family past its idle or absolute deadline was presented (on refresh when the store answers [`RotateOutcome::Expired`], as [`MemoryRefreshStore`] does; on logout when the store still holds the family) |
//! | `logout` | `POST {prefix}/logout` ended the family |
//! | `logout_everywhere` | `POST {prefix}/logout-everywhere`, or [`Refresher::revoke_user`] (no device) |
//! | `device_revoked` | `DELETE {prefix}/sessions/{id}`, or [`Refresher::revoke_device`] |
//! | `password_changed` | [`Refresher::password_changed`] succeeded (no device) |
//! | `session_evicted` | a login beyond [`RefreshConfig::max_families_per_user`] ended an older family |
//! | `store_unavailable` (`refresh` or `revocation`, operation) | a store call failed: the caller answers 503 |
//!
//! Events of the endpoints carry the request's route (the application's
//! route reader, else the endpoint's template, such as
//! `/auth/sessions/{id}`), client and trace id; so do [`Login::reply`]'s.
//! An operation called from a handler of the application carries them
//! when called on [`Refresher::for_request`]`(&parts)`; otherwise the
//! user and device only. The layer times each endpoint's decision (layer
//! `refresh`) and, with the `tracing` feature, opens a `portcullis.refresh`
//! span per endpoint request. No event carries a token.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `testing` | no | [`testing`]: the store conformance suite and fault injection |
//! | `tracing` | no | events: reuse detections at warn, refusals at debug; the `portcullis.refresh` span |
//! | `axum` | no | DPoP proofs name the whole path under `Router::nest` (axum's `OriginalUri`) |

//!
//! The application's login handler checks the credentials, then starts a
//! family with the typed [`Login`] builder:
//!
//! ```no_run
//! # async fn login(refresher: portcullis_refresh::Refresher, parts: http::request::Parts) {
//! let answer = refresher.login("alice").roles(["admin"]).reply(&parts).await;
//! # let _ = answer; }
//! ```
//!
//! | file | what it holds |
//! |---|---|
//! | `refresher.rs` | [`Refresher`] and [`Login`]: issue, rotate, revoke, devices (no HTTP) |
//! | `endpoints.rs` | the five endpoints as plain functions, and [`Login::reply`] |
//! | `extract.rs` | reading the refresh token from a request |
//! | `reply.rs` | the answers: token bodies, cookies, refusals |
//! | `route.rs` | which endpoint a request is for |
//! | `layer.rs`, `service.rs` | [`RefreshLayer`] and the [`Refresh`] service |
//! | `family.rs`, `token.rs`, `store.rs` | the stored record, the token, the store trait |
//! | `memory.rs`, `instrumented.rs` | [`MemoryRefreshStore`], [`InstrumentedRefreshStore`] |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod endpoints;
mod error;
mod extract;
mod family;
mod instrumented;
mod layer;
mod memory;
mod refresher;
mod reply;
mod route;
mod service;
mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod token;

pub use config::{
    ClientIpFn, DEFAULT_MAX_FAMILIES_PER_USER, RefreshConfig, RefreshConfigError, Transport,
};
pub use error::{RefreshError, RefreshErrorKind};
pub use family::{DeviceInfo, Family, Presented, RotateOutcome, Rotated, Rotation};
pub use instrumented::{CountingRefreshStore, InstrumentedRefreshStore};
pub use layer::RefreshLayer;
pub use memory::MemoryRefreshStore;
pub use portcullis_core::ActiveSession;
pub use portcullis_jwt::TokenResponse;
pub use refresher::{Login, Refresher, RefresherBuilder, TokenPair};
pub use service::{Refresh, ResponseFuture};
pub use store::RefreshStore;
pub use token::{FAMILY_ID_LEN, FamilyId, REFRESH_TOKEN_LEN, RefreshToken, RotationKey};
