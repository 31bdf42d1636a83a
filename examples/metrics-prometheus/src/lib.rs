//! Example: the auth layers' OpenTelemetry metrics, served to Prometheus.
//!
//! One [`Events`] handle with an [`OtelRecorder`] goes to the session layer,
//! the JWT layer, the JWT issuer and the session store (wrapped in an
//! [`InstrumentedStore`] with [`StoreEvents`] so its calls are timed). The
//! SDK's meter provider reads the instruments through
//! `opentelemetry-prometheus` into a `prometheus::Registry`, which
//! `GET /metrics` encodes in the Prometheus text format.
//!
//! Run it with `cargo run -p metrics-prometheus` (listens on
//! `127.0.0.1:$PORT`, default 3002), then:
//!
//! ```text
//! curl -si -X POST localhost:3002/login/alice        # a session cookie and a JWT
//! curl -s localhost:3002/api/me -H 'authorization: Bearer nonsense'   # 401
//! curl -s localhost:3002/metrics | grep '^portcullis_'
//! ```
//!
//! The routes are a demonstration of the metrics, not a login: `/login/{user}`
//! checks nothing (see the `session-login` and `jwt-api` templates for the
//! front door). `/metrics` is open here; in production serve it on an
//! internal port or behind the network's own access control.
//!
//! # The OTLP alternative
//!
//! To push instead of being scraped, build the provider with an OTLP
//! exporter (`opentelemetry-otlp`, to an OpenTelemetry Collector, or to
//! Prometheus itself started with `--web.enable-otlp-receiver`) instead of
//! the Prometheus reader; everything else stays as it is:
//!
//! ```text
//! let exporter = opentelemetry_otlp::MetricExporter::builder().with_http().build()?;
//! let provider = SdkMeterProvider::builder()
//!     .with_periodic_exporter(exporter)
//!     .with_resource(resource)
//!     .build();
//! ```
//!
//! The names then stay in their OpenTelemetry form
//! (`portcullis.jwt.refusals`); Prometheus translates them to the names
//! the dashboard `docs/grafana/portcullis.json` uses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use portcullis::events::{Events, StoreEvents, matched_path};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::otel::{Gauge, OtelRecorder};
use portcullis::session::store::InstrumentedStore;
use portcullis::session::{CurrentUser, MemoryStore, Session, SessionConfig, SessionLayer};

/// The example's service name, in `target_info`.
pub const SERVICE_NAME: &str = "metrics-prometheus";

/// The app and the handles a caller may want to keep.
#[derive(Debug)]
pub struct App {
    /// The routes.
    pub router: Router,
    /// The event bus every layer emits through.
    pub events: Events,
    /// The recorder on it: register more gauges with
    /// [`OtelRecorder::watch_gauge`].
    pub recorder: OtelRecorder,
    /// The meter provider: keep it alive as long as the app serves.
    pub provider: SdkMeterProvider,
}

#[derive(Clone)]
struct AppState {
    registry: prometheus::Registry,
    issuer: JwtIssuer,
    revocations: Arc<MemoryRevocationStore>,
}

/// The peer address axum records with `ConnectInfo`: the client address
/// events carry (behind a proxy, read the header the proxy sets instead).
fn peer_ip(ext: &Extensions, _: &HeaderMap) -> Option<IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Builds the app: meter provider with the Prometheus reader, recorder,
/// event bus, stores, layers and routes. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
///
/// # Errors
///
/// When the exporter, a key or a layer cannot be built.
pub fn app() -> Result<App, String> {
    let registry = prometheus::Registry::new();
    let reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .build();
    let recorder = OtelRecorder::new(&provider.meter("portcullis"));
    let events = Events::builder()
        .recorder(recorder.clone())
        .route(matched_path)
        .client_ip(peer_ip)
        .build();
    recorder.watch_events("app", &events);

    // The session store, timed: every call lands in
    // portcullis.store.operation.duration{portcullis.store="memory"}.
    let sessions = MemoryStore::new();
    let counted = sessions.clone();
    recorder.watch_gauge(Gauge::Sessions, "memory", move || {
        u64::try_from(counted.len()).unwrap_or(u64::MAX)
    });
    let store =
        InstrumentedStore::with_observer(sessions, StoreEvents::new("memory", events.clone()));
    let session = SessionLayer::new(
        store,
        SessionConfig::default()
            .client_ip(peer_ip)
            .events(events.clone()),
    )
    .map_err(|e| e.to_string())?;

    let revocations = Arc::new(MemoryRevocationStore::new());
    let view = revocations.view();
    recorder.watch_gauge(Gauge::RevocationEntries, "memory", move || {
        let (tokens, sessions, users) = view.len();
        u64::try_from(tokens + sessions + users).unwrap_or(u64::MAX)
    });
    let key = SigningKey::generate("k1", Algorithm::ES256).map_err(|e| e.to_string())?;
    let issuer = JwtIssuer::builder(key)
        .issuer("http://metrics-prometheus.example")
        .audience("api")
        .revocation(revocations.view())
        .events(events.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let jwt = JwtLayer::builder_for(&issuer)
        .revocation(revocations.view())
        .events(events.clone())
        .build()
        .map_err(|e| e.to_string())?;

    let state = AppState {
        registry,
        issuer,
        revocations,
    };
    let api = Router::new()
        .route("/api/me", get(api_me))
        .route("/api/revoke", post(api_revoke))
        .layer(jwt);
    let web = Router::new()
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .layer(session);
    let router = Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(web)
        .with_state(state);
    Ok(App {
        router,
        events,
        recorder,
        provider,
    })
}

/// `GET /metrics`: the registry in the Prometheus text format.
async fn metrics(State(app): State<AppState>) -> Response {
    use prometheus::Encoder as _;
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&app.registry.gather(), &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `POST /login/{user}`: a session for `user` and an access token (no
/// credential checked: a demonstration).
async fn login(
    State(app): State<AppState>,
    session: Session,
    Path(user): Path<String>,
) -> Response {
    if let Err(e) = session.login(user.clone()).await {
        return e.into_response();
    }
    match app.issuer.login_token(user).mint() {
        Ok(token) => token.token.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `POST /logout`.
async fn logout(session: Session) -> Response {
    match session.logout().await {
        Ok(()) => "bye".into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /me`: the session's user.
async fn me(user: Option<CurrentUser>) -> Response {
    match user {
        Some(CurrentUser(user)) => user.into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// `GET /api/me`: the token's subject.
async fn api_me(claims: Claims) -> Response {
    claims
        .subject()
        .unwrap_or_default()
        .to_owned()
        .into_response()
}

/// `POST /api/revoke`: revokes the presented token (the revocation view's
/// gauge goes up; the token is refused from now on).
async fn api_revoke(State(app): State<AppState>, claims: Claims) -> Response {
    let registered = claims.registered();
    let (Some(jti), Some(exp)) = (registered.jti.as_deref(), registered.exp) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match app.revocations.revoke_token(jti, exp).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
