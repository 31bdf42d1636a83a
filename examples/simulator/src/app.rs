//! The whole server: the page and its assets, the simulator's settings,
//! the four strategies and the scale-out variants.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use portcullis::core::CookieConfig;
use portcullis::core::cookie::find_cookie;
use portcullis::csrf::{CsrfConfig, CsrfLayer};
use portcullis::jwt::DEFAULT_ACCESS_LIFETIME;
use serde_json::json;

use crate::scale::{Scaled, Variant};
use crate::strategy::{BuildError, Kind, SESSION_IDLE, Settings, Strategy};

const PAGE: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/simulator.js");
const STYLE: &str = include_str!("../assets/simulator.css");
const ICON: &str = include_str!("../assets/favicon.svg");

/// The page runs only its own script and style: no inline code, nothing
/// from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The cookie the page sets once to learn whether this browser keeps
/// `Secure` cookies over plain http.
fn probe_cookie(settings: &Settings) -> CookieConfig {
    settings.cookie(CookieConfig::new("probe"))
}

async fn config(State(settings): State<Arc<Settings>>) -> Json<serde_json::Value> {
    let session = settings.session_config(portcullis::core::SystemClock::shared());
    Json(json!({
        "cookie_mode": if settings.insecure_dev_cookies { "insecure-dev" } else { "secure" },
        "session_store": if settings.redis.is_some() { "redis" } else { "memory" },
        "cookies": {
            "session": session.cookie_config().full_name(),
            "refresh": settings.refresh_cookie().full_name(),
            "refresh_path": settings.refresh_cookie().path_value(),
        },
        "lifetimes": {
            "session_idle_secs": SESSION_IDLE.as_secs(),
            "access_token_secs": DEFAULT_ACCESS_LIFETIME.as_secs(),
        },
        "expire_by_secs": Kind::ALL.map(|k| json!({"strategy": k.slug(), "secs": k.expire_by().as_secs()})),
    }))
}

async fn set_probe(State(settings): State<Arc<Settings>>) -> Response {
    let cookie = probe_cookie(&settings);
    (
        [(
            header::SET_COOKIE,
            cookie.set_cookie("1", Some(Duration::from_secs(60))),
        )],
        Json(json!({"set": cookie.full_name()})),
    )
        .into_response()
}

async fn check_probe(State(settings): State<Arc<Settings>>, headers: HeaderMap) -> Response {
    let cookie = probe_cookie(&settings);
    let kept = matches!(find_cookie(&headers, cookie.full_name()), Ok(Some(_)));
    (
        [(header::SET_COOKIE, cookie.removal_cookie())],
        Json(json!({"cookie": cookie.full_name(), "kept": kept})),
    )
        .into_response()
}

/// The simulator.
pub(crate) fn app(settings: &Arc<Settings>) -> Result<Router, BuildError> {
    let mut router = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/simulator.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/simulator.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .route("/sim/config", get(config))
        .route("/sim/cookie-probe", get(check_probe).post(set_probe))
        .with_state(Arc::clone(settings));
    for kind in Kind::ALL {
        let strategy = Strategy::new(kind, Arc::clone(settings))?;
        router = router.nest_service(&format!("/{}", kind.slug()), strategy.router());
    }
    for variant in Variant::ALL {
        let scaled = Scaled::new(variant, Arc::clone(settings))?;
        router = router.nest_service(&format!("/scale/{}", variant.slug()), scaled.router());
    }
    // Another site must not drive the simulator (its admin controls take
    // no credential): tower-http's Fetch Metadata / Origin check on every
    // state-changing request. The session strategy adds its tokens inside.
    Ok(router.layer(CsrfLayer::new(CsrfConfig::origin_check_only())?))
}
