//! Strict JWT verification as a tower layer.
//!
//! [`JwtLayer`] verifies an access token on every request and puts its
//! [`Claims`] into the request extensions. It is stricter by default than
//! the usual Rust JWT middleware:
//!
//! - the algorithm is pinned per key and never taken from the token
//!   (`alg: none` and key confusion are impossible by construction);
//! - `exp` is required, `nbf` and `iat` are checked, leeway is 5 s;
//! - `iss` and `aud` must be configured (or explicitly waived) and are then
//!   required in every token;
//! - `typ` must be `at+jwt` (RFC 9068): id tokens and refresh tokens are
//!   not access tokens;
//! - `crit`, `b64: false` and nested tokens (`cty: JWT`) are refused, as
//!   are duplicate JSON keys and non-canonical base64url;
//! - the token is at most 8 KiB and its character set is checked before any
//!   decoding;
//! - an unknown `kid` is a 401, never a guess and never a 500; a JWKS
//!   outage is a 503;
//! - a key rotated out by [`JwtIssuer::rotate`] verifies only until the
//!   tokens it signed have expired (plus 5 s) and is refused from then on;
//!   [`JwtIssuer::retire`] refuses a compromised key at once, tokens
//!   already in the verified-token cache included.
//!
//! Fresh login ("sudo mode"): [`JwtIssuer::login_token`] mints `auth_time`
//! (the login's time), `amr` (how the user authenticated, default
//! `["pwd"]`) and an optional `acr`; refresh families copy them unchanged.
//! [`RequireFreshAuthLayer`] refuses a route to a login older than a
//! maximum age or without an accepted `acr`, with RFC 9470's
//! `insufficient_user_authentication` challenge; the client steps up by
//! logging in again.
//!
//! Revocation reaches every instance without a store call per request:
//! the layer checks an in-process [`RevocationView`](revocation::RevocationView)
//! that a [`RevocationStore`](revocation::RevocationStore) keeps current.
//! An entry lasts until its tokens have expired plus [`MAX_LEEWAY`], so no
//! layer's leeway lets a revoked token back in.
//!
//! ```
//! use axum::{Router, routing::get};
//! use portcullis_jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, RequireClaimsLayer, SigningKey};
//!
//! let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
//!     .issuer("https://auth.example.com")
//!     .audience("api")
//!     .build()
//!     .unwrap();
//! let jwt = JwtLayer::builder(issuer.keys())
//!     .issuer("https://auth.example.com")
//!     .audience("api")
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/admin", get(|| async { "for admins" }))
//!     .route_layer(RequireClaimsLayer::role("admin"))
//!     .route("/me", get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }))
//!     .layer(jwt);
//! let token = issuer.token("alice").roles(["admin"]).mint().unwrap();
//! # let _ = (app, token);
//! ```
//!
//! # The resource server
//!
//! Behind an identity provider: [`issuers`] (several issuers, each with its
//! own keys and rules, chosen by `iss` before any key is touched),
//! OpenID discovery from the issuer URL alone (`JwtLayer::discover`,
//! feature `jwks-remote`), [`metadata`] (RFC 9728 protected-resource
//! metadata, and [`JwtLayerBuilder::resource_metadata`] in every
//! challenge), `introspect` (RFC 7662, opaque tokens) and [`dpop`]
//! (RFC 9449: tokens bound to a key the client holds, a stolen token being
//! useless without it).
//!
//! # Events
//!
//! Give the layers and the issuer an
//! [`Events`](portcullis_core::events::Events) handle
//! ([`JwtLayerBuilder::events`], [`RequireClaimsLayer::events`],
//! [`RequireFreshAuthLayer::events`], [`JwtIssuerBuilder::events`]) and
//! they emit, with source `jwt`:
//!
//! | event | when | user | route, client, trace id |
//! |---|---|---|---|
//! | `jwt_refused` (reason = [`JwtError::reason`]) | a `JwtLayer` refuses a request (`missing`, `expired`, `bad-signature`, `revoked`, ...); a `RequireClaimsLayer` refuses one (`insufficient-scope`, or `missing` without verified claims); a `RequireFreshAuthLayer` gets a request without verified claims (`missing`) | the token's `sub` behind the route guards; none at the `JwtLayer` (the token was not trusted) | yes |
//! | `reauth_required` (`insufficient-user-authentication`) | a `RequireFreshAuthLayer` asks for a fresher or stronger login | the token's `sub` | yes |
//! | `store_unavailable` (`revocation`, `check`) | the revocation view is not ready: 503 (after the `jwt_refused` with reason `revocation-unavailable`) | none | yes |
//! | `login_succeeded` | [`JwtIssuer::login_token`] minted a token | `sub` | no (outside a request) |
//! | `key_rotated` (`kid`) | [`JwtIssuer::rotate`] | none | no |
//! | `key_retired` (`kid`) | [`JwtIssuer::retire`] removed a key | none | no |
//!
//! Each `JwtLayer` decision is timed for the recorder (layer `jwt`:
//! success = a verified token, none = no token on an optional layer,
//! failure = a refusal with its reason), as are the route guards'
//! (`require_claims`, `require_fresh_auth`). With the `tracing` feature a
//! `JwtLayer` opens one `portcullis.jwt` span per request (`otel.kind`,
//! `portcullis.decision`, `error.type`, `http.route`). No event and no
//! span field carries a token.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | no | extractors [`Claims`], `OptionalClaims`, `Option<Claims>`; `JwksResponse`; DPoP's `htu` read from axum's `OriginalUri` under `Router::nest` |
//! | `jwks-remote` | no | `RemoteJwks`: keys from an HTTPS JWKS URL, cached and refreshed; OpenID discovery (`jwks::Discovery`, `JwtLayer::discover`); `introspect::IntrospectionLayer` (RFC 7662) |
//! | `tracing` | no | debug events with the refusal reason and the `portcullis.jwt` span (never a token or key) |
//! | `testing` | no | `revocation_testing`: the conformance suite every `RevocationStore` passes |
//!
//! Cryptography is jsonwebtoken 11 on its `aws_lc_rs` backend; this crate
//! installs that provider itself before any key is built, so jsonwebtoken's
//! "no crypto provider" panic cannot happen through it.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod alg;
mod cache;
mod claims;
pub mod dpop;
mod error;
mod events;
#[cfg(feature = "axum")]
mod extract;
mod fresh;
#[cfg(feature = "jwks-remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks-remote")))]
pub mod introspect;
mod issuer;
pub mod issuers;
mod json;
pub mod jwks;
mod jws;
mod key;
mod keys;
mod kid;
mod layer;
pub mod metadata;
mod prepared;
mod require;
mod response;
pub mod revocation;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod revocation_testing;
mod service;
mod transport;
mod validation;
mod verifier;

pub use alg::{Algorithm, KeyFamily};
pub use claims::{Audience, Claims, Confirmation, NoCustomClaims, RegisteredClaims};
pub use error::{JwtError, JwtErrorKind};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{ClaimsRejection, ClaimsRejectionKind, JwksResponse, OptionalClaims};
pub use fresh::{FreshAuthConfigError, RequireFreshAuth, RequireFreshAuthLayer};
pub use issuer::{
    AccessToken, DEFAULT_ACCESS_LIFETIME, DEFAULT_AMR, IssueError, JwtIssuer, JwtIssuerBuilder,
    TokenBuilder,
};
pub use key::{KeyError, SigningKey, VerifyingKey, generate_pkcs8_pem};
pub use keys::{KeyLookup, KeySet, KeySource, RefreshFuture, SharedKeys};
pub use kid::{KidError, MAX_KID_LEN};
pub use layer::{JwtConfigError, JwtLayer, JwtLayerBuilder};
pub use require::{RequireClaims, RequireClaimsLayer, RequireDpop, RequireDpopLayer};
pub use response::TokenResponse;
pub use service::{Jwt, ResponseFuture};
pub use transport::Transport;
pub use validation::{
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_LEN, MAX_LEEWAY, REQUIRABLE_CLAIMS, Validation,
};
pub use verifier::verify_jws;

/// Re-exported for JWK input ([`VerifyingKey::from_jwk`]).
pub use jsonwebtoken::jwk;

/// Installs jsonwebtoken's aws-lc-rs crypto provider for this process, once.
/// Every constructor that reaches jsonwebtoken calls it; calling it
/// yourself is harmless. If the application installed a provider first,
/// that one stays.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
    });
}
