//! [`SessionLayer`]: the builder of [`SessionManager`], and its `Layer`
//! impl.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::config::{SessionConfig, SessionConfigError};
use crate::service::SessionManager;
use crate::state::SessionContext;
use crate::store::SessionStore;

/// Adds a lazy [`Session`](crate::Session) to every request.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_session::{MemoryStore, Session, SessionConfig, SessionLayer};
///
/// async fn visits(session: Session) -> Result<String, portcullis_session::SessionError> {
///     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
///     session.insert("n", n).await?;
///     Ok(n.to_string())
/// }
///
/// let layer = SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap();
/// let app: Router = Router::new().route("/", get(visits)).layer(layer);
/// ```
///
/// The service's future ([`ResponseFuture`](crate::ResponseFuture)) polls
/// the inner service's in place and boxes only the store write, when the
/// handler left something to write. When the write fails because the store
/// is unavailable, the handler's response is replaced by a 503 (the change
/// would otherwise be silently lost).
#[derive(Clone)]
pub struct SessionLayer {
    ctx: Arc<SessionContext>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.ctx.config)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer over `store` with `config`.
    ///
    /// # Errors
    ///
    /// [`SessionConfigError`] when the configuration cannot work (cookie
    /// attributes browsers refuse, zero timeouts, a zero cap).
    pub fn new(
        store: impl SessionStore,
        config: SessionConfig,
    ) -> Result<Self, SessionConfigError> {
        Self::from_arc(Arc::new(store), config)
    }

    /// Like [`SessionLayer::new`] for a store already behind an `Arc`.
    ///
    /// # Errors
    ///
    /// As [`SessionLayer::new`].
    pub fn from_arc(
        store: Arc<dyn SessionStore>,
        config: SessionConfig,
    ) -> Result<Self, SessionConfigError> {
        Ok(Self {
            ctx: Arc::new(SessionContext::new(store, config)?),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.ctx.config
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionManager<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionManager::new(inner, Arc::clone(&self.ctx))
    }
}
