//! `RefreshLayer`: serves the refresh, logout and device endpoints of a
//! [`Refresher`] in front of the application.

use std::fmt;

use tower_layer::Layer;

use crate::refresher::Refresher;
use crate::service::Refresh;

/// Serves, under the prefix (default `/auth`):
///
/// | request | credential | answer |
/// |---|---|---|
/// | `POST /auth/refresh` | refresh token (cookie or body) | new access token, rotated refresh token |
/// | `POST /auth/logout` | refresh token | 204; this device's tokens dead |
/// | `POST /auth/logout-everywhere` | refresh token | `{"ended": n}`; every token of the user dead |
/// | `GET /auth/sessions` | access token | the user's devices, current one marked |
/// | `DELETE /auth/sessions/{id}` | access token | 204; that device logged out |
///
/// The device endpoints read and verify the access token the way the
/// application's `JwtLayer` (the one given to [`Refresher::builder`])
/// does: a bearer header, or the cookie or header it was configured with.
///
/// Every answer carries `Cache-Control: no-store`. Cookie-borne requests
/// that Fetch Metadata or `Origin` mark as cross-site get 403 (tower-http's
/// check); body-borne ones carry no ambient credential and are exempt. A
/// bad, expired, revoked or reused refresh token gets 401 and clears the
/// cookie; a store outage gets 503 and leaves the cookie alone (the token
/// still works once the store is back). Other requests go to the inner
/// service untouched; the application's login route is its own (see
/// [`Refresher::login`]).
///
/// Logout and log out everywhere present a refresh token like a refresh
/// does: a token already rotated out (outside the grace window) is reuse
/// there too, which ends the family (or, for log out everywhere, every
/// family of the user) and emits the security event. They answer success
/// only once the revocation of the access tokens has landed in the
/// revocation store (503 otherwise; a retry with the same token finishes
/// the job). A logout that receives the cookie more than once acts on every
/// copy that is a refresh token (at most 8), then clears the cookie; a
/// refresh with two copies is refused with 400.
///
/// Requests to the endpoints are handled in a boxed future (they await the
/// store); others go through in the inner service's future, unboxed.
///
/// The endpoints are no routes of the router the layer wraps: on the top
/// router they reach the layer through axum's default fallback; under
/// `Router::nest`, give the router the layer wraps, and every router
/// between it and the top one, a `fallback`, so requests to them reach
/// the layer (without one they get the outer router's 404). Under a nest,
/// DPoP proofs name the whole path the client called (see
/// [`RefreshConfig::dpop`](crate::RefreshConfig::dpop)).
///
/// ```
/// # use std::sync::Arc;
/// # use portcullis_jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
/// # use portcullis_jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
/// use portcullis_refresh::{MemoryRefreshStore, RefreshLayer, Refresher};
/// # let revocations = Arc::new(MemoryRevocationStore::new());
/// # let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
/// #     .issuer("https://app.example.com").audience("app").build().unwrap();
/// # let jwt = JwtLayer::builder(issuer.keys()).issuer("https://app.example.com").audience("app")
/// #     .revocation(revocations.view()).build().unwrap();
/// let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt)
///     .build()
///     .unwrap();
/// let layer = RefreshLayer::new(&refresher);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RefreshLayer {
    refresher: Refresher,
}

impl RefreshLayer {
    /// The layer serving `refresher`'s endpoints.
    #[must_use]
    pub fn new(refresher: &Refresher) -> Self {
        Self {
            refresher: refresher.clone(),
        }
    }
}

impl fmt::Debug for RefreshLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLayer")
            .field("refresher", &self.refresher)
            .finish()
    }
}

impl<S> Layer<S> for RefreshLayer {
    type Service = Refresh<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Refresh::new(inner, self.refresher.clone())
    }
}
