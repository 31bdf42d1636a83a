//! [`CsrfLayer`]: validates a [`CsrfConfig`] once and wraps services in
//! [`Csrf`].

use std::fmt;
use std::sync::Arc;

use portcullis_core::{ProblemJson, RenderRejection};
use tower_layer::Layer;

use crate::config::CsrfConfig;
use crate::error::ConfigError;
use crate::policy::Policy;
use crate::service::Csrf;

/// CSRF protection for every route under it: tower-http's Fetch Metadata /
/// `Origin` check, then a masked token on unsafe requests.
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use axum::response::Html;
/// use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken};
/// use portcullis_session::{MemoryStore, SessionConfig, SessionLayer};
///
/// async fn form(token: CsrfToken) -> Html<String> {
///     Html(format!(
///         "<form method=post action=/profile>{}<button>Save</button></form>",
///         token.hidden_input()
///     ))
/// }
///
/// let csrf = CsrfLayer::new(CsrfConfig::session())?;
/// let sessions = SessionLayer::new(MemoryStore::new(), SessionConfig::default())?;
/// let app: Router = Router::new()
///     .route("/profile", get(form).post(|| async { "saved" }))
///     .layer(csrf)      // inner: runs after the session is installed
///     .layer(sessions); // outer
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ## Relation to `tower_http::csrf::CsrfLayer`
///
/// This layer does not re-implement the origin check: it calls tower-http's
/// (see the crate docs for how), and adds what tower-http leaves out:
/// normalised trusted origins, a configured public origin instead of the
/// `Host` fallback, refusal of cross-origin WebSocket upgrades, `Vary`,
/// problem+json refusals with a typed reason, and the token check. Do not
/// stack both layers; this one already runs tower-http's check.
///
/// ## Order of checks
///
/// 1. Exempt path ([`CsrfConfig::exempt`]): passed on untouched.
/// 2. `GET`, `HEAD`, `OPTIONS`, `TRACE`: passed, except a WebSocket upgrade
///    from another origin (403).
/// 3. Any other method: tower-http's check (403 when cross-origin).
/// 4. The token, from the header, else from a urlencoded or multipart form
///    field (the body is buffered up to the limit, 413 beyond), never from
///    the query string or a cookie. Missing, malformed, mismatched or
///    expired: 403.
///
/// All of this happens before the inner service is called: a refused
/// request never reaches the handler.
///
/// The service is [`Csrf`]; its future, [`ResponseFuture`](crate::ResponseFuture),
/// is core's `LayerFuture`, which boxes only when a token must be checked
/// (reading the session or the body is asynchronous).
#[derive(Clone)]
pub struct CsrfLayer<R = ProblemJson> {
    policy: Arc<Policy>,
    renderer: R,
}

impl<R> fmt::Debug for CsrfLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.policy.fmt(f)
    }
}

impl CsrfLayer {
    /// Validates `config` and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`]: an origin that is not `scheme://host[:port]`, a key
    /// under 32 bytes, an invalid field name, exempt path or cookie, a zero
    /// body limit, or a signed-mode option in another mode.
    pub fn new(config: CsrfConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            policy: Arc::new(Policy::from_config(config)?),
            renderer: ProblemJson,
        })
    }
}

impl<R> CsrfLayer<R> {
    /// Renders refusals with `renderer` instead of problem+json.
    pub fn with_rejection<R2: RenderRejection>(self, renderer: R2) -> CsrfLayer<R2> {
        CsrfLayer {
            policy: self.policy,
            renderer,
        }
    }
}

impl<S, R: Clone> Layer<S> for CsrfLayer<R> {
    type Service = Csrf<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Csrf::new(inner, Arc::clone(&self.policy), self.renderer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_config_but_no_key() {
        let key = [0xABu8; 32];
        let layer = CsrfLayer::new(
            CsrfConfig::signed(key, crate::SignedBinding::cookie("__Host-session"))
                .previous_key([0xCDu8; 32])
                .exempt("/webhooks/pay"),
        )
        .unwrap();
        let dbg = format!("{layer:?}");
        assert!(dbg.contains("/webhooks/pay"), "{dbg}");
        assert!(dbg.contains("REDACTED"), "{dbg}");
        assert!(
            !dbg.contains("171") && !dbg.to_lowercase().contains("abab"),
            "{dbg}"
        );
        assert!(!dbg.contains("[171"), "{dbg}");
    }
}
