//! Shared helpers of the portcullis benchmarks.
#![allow(missing_docs, clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod csrf_app;
pub mod jwt_app;
pub mod observability;
pub mod session_app;

use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// Sends one request through `app` in-process and drains the body.
pub async fn call(app: &Router, req: Request<Body>) -> http::StatusCode {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await.unwrap();
    status
}
