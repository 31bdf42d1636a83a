//! Cross-site request forgery protection as a tower layer: tower-http's
//! Fetch Metadata / `Origin` check, plus masked tokens bound to the session.
//!
//! ```
//! use axum::{Form, Router, routing::get};
//! use axum::response::Html;
//! use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken};
//! use portcullis_session::{MemoryStore, SessionConfig, SessionLayer};
//! use serde::Deserialize;
//!
//! async fn show(token: CsrfToken) -> Html<String> {
//!     // A fresh masked token each time the page is rendered.
//!     Html(format!(
//!         r#"<form method="post">{}<input name="display_name"><button>Save</button></form>"#,
//!         token.hidden_input()
//!     ))
//! }
//!
//! #[derive(Deserialize)]
//! struct Profile { display_name: String }
//!
//! // Runs only when the request passed both checks; the form (csrf_token
//! // field included) arrives unchanged.
//! async fn save(Form(p): Form<Profile>) -> String {
//!     format!("saved {}", p.display_name)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/profile", get(show).post(save))
//!     .layer(CsrfLayer::new(CsrfConfig::session())?)
//!     .layer(SessionLayer::new(MemoryStore::new(), SessionConfig::default())?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Two defences, one layer
//!
//! 1. **Origin check**, not written here: on every unsafe request
//!    (anything but `GET`, `HEAD`, `OPTIONS`, `TRACE`) [`CsrfLayer`] asks
//!    [`portcullis_core::OriginCheck`], which runs [`tower_http::csrf`]'s
//!    check (the Go 1.25 `CrossOriginProtection` scheme) on a bodiless copy
//!    of the request line and of `Origin`, `Sec-Fetch-Site` and `Host`, and
//!    adds:
//!    - trusted origins normalised and validated when the layer is built
//!      (tower-http matches them byte for byte, so `https://Example.com:443`
//!      would silently never match);
//!    - [`CsrfConfig::public_origin`]: behind a proxy that rewrites `Host`,
//!      `Origin` is compared with the configured origin, scheme included;
//!      `X-Forwarded-Host` is never read;
//!    - without a public origin, tower-http's `Host` fallback compares the
//!      host only: the check also wants the site's scheme, `https` unless
//!      [`CsrfConfig::insecure_http_site`], so an `http://` page of the same
//!      host is another origin.
//!
//!    The layer adds:
//!    - WebSocket upgrades (a `GET`, which tower-http lets through) are
//!      checked as if they were unsafe, so cross-site WebSocket hijacking is
//!      refused;
//!    - `Vary: Origin, Sec-Fetch-Site` on responses whose fate depended on
//!      them.
//! 2. **Tokens**, which headers cannot give: clients that send neither
//!    header pass tower-http's check, and so would login CSRF from browsers
//!    without Fetch Metadata. Two modes:
//!    - [`CsrfConfig::session`] (synchronizer): a 256-bit secret in the
//!      portcullis session, renewed with the session id (login);
//!    - [`CsrfConfig::signed`] (OWASP's signed double-submit): an
//!      HMAC-SHA256 over a random nonce and the session binding
//!      ([`SignedBinding`]); visitors without a session are bound to a
//!      `__Host-` pre-session cookie, so the login form is protected too.
//!
//!    Tokens are masked afresh every time they are rendered (a one-time pad,
//!    as Django does against BREACH) and compared in constant time after
//!    unmasking. The token is read from the `x-csrf-token` header, else from
//!    the `csrf_token` field of a urlencoded or multipart form (the body is
//!    buffered up to 1 MiB, more is 413, and the handler receives it
//!    unchanged); never from the query string or a cookie.
//!
//! Every check runs before the inner service: a refused request never
//! reaches the handler. Refusals are 403 `application/problem+json` with the
//! same body whatever failed; the reason is a [`CsrfError`] in the
//! response's extensions (and the core [`Rejection`](portcullis_core::Rejection)),
//! and the `reason` field of a debug `tracing` event (feature `tracing`;
//! `RUST_LOG=portcullis_csrf=debug` shows why each request was refused,
//! with the route template when the layer's [events](#events) know it;
//! never the raw path, which can carry ids or tokens).
//! No token, cookie or key is ever logged or shown by `Debug`.
//!
//! Exemptions are exact paths listed in the configuration
//! ([`CsrfConfig::exempt`]); there is no switch that turns the layer off.
//!
//! For tonic or plain hyper, the [`CsrfHandle`] is in the request
//! extensions; native gRPC clients send neither browser header, so they pass
//! the origin check: do not accept cookie authentication on gRPC routes.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `session` | yes | [`CsrfConfig::session`] and [`SignedBinding::session`] (needs `portcullis-session`) |
//! | `axum` | no | extractors: [`CsrfToken`], [`CsrfHandle`]; `IntoResponse` for [`CsrfError`] |
//! | `tracing` | no | debug events with a reason and the route template (never a token or a raw path); a `portcullis.csrf` span per request |
//!
//! # Events
//!
//! Given an [`Events`](portcullis_core::events::Events) handle
//! ([`CsrfConfig::events`]), the layer emits, under the source `csrf`:
//!
//! | kind | when | fields |
//! |---|---|---|
//! | `csrf_refused` | every refusal: cross-origin, token missing, malformed, mismatched or expired, body too large or unreadable, layer missing | `reason` = [`CsrfErrorKind::as_str`] (`csrf-cross-origin`, `csrf-token-mismatch`, ...), route, client, trace id |
//!
//! A session store outage (the 503 with `csrf-session-unavailable`) is no
//! refusal of the request's token: it emits no `csrf_refused` (the session
//! layer emits `store_unavailable` for it).
//!
//! The layer tells the recorder each decision: success (the origin check,
//! and the token when there is one, passed), failure (refused, with the
//! same reason code, `csrf-session-unavailable` included) or none (a safe
//! method or an exempt path: nothing to check). The route, client and trace id are read when the request
//! arrives, only while something listens. With the `tracing` feature each
//! request gets a `portcullis.csrf` span (`otel.kind = "internal"`,
//! `portcullis.decision`, `error.type` = the reason code, `http.route`).
//!
//! # Known limits
//!
//! - The layer reads the body of form requests without a header token:
//!   put a request timeout outside it against slow senders.
//! - Session mode: two first page loads racing in parallel tabs may each
//!   create a secret; the later write wins and the other tab's form is
//!   refused once (reload fixes it).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod config;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod handle;
mod layer;
mod obs;
mod policy;
mod service;
mod token;

pub use body::RequestBody;
pub use config::{BindingFn, CsrfConfig, DEFAULT_MAX_BODY_BYTES, SignedBinding};
pub use error::{ConfigError, CsrfError, CsrfErrorKind};
pub use handle::{CsrfHandle, CsrfToken, SESSION_SECRET_KEY};
pub use layer::CsrfLayer;
pub use service::{AddResponseHeaders, Csrf, ResponseFuture};
pub use tower_http::csrf::ProtectionErrorKind;

#[cfg(all(test, feature = "session"))]
mod tests {
    #[test]
    fn secret_key_is_renew_scoped() {
        assert!(crate::SESSION_SECRET_KEY.starts_with(portcullis_session::RENEW_SCOPED_PREFIX));
    }
}
