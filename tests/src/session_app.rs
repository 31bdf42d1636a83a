//! A small axum app exercising every session operation.

use std::sync::Arc;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::session::{
    CurrentUser, Session, SessionConfig, SessionError, SessionLayer, SessionStore,
};
use serde_json::{Value, json};

/// Reads the peer address axum records with `ConnectInfo`.
pub fn peer_ip(ext: &http::Extensions, _: &http::HeaderMap) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

pub fn router(store: Arc<dyn SessionStore>, config: SessionConfig) -> Router {
    let layer = SessionLayer::from_arc(store, config.client_ip(peer_ip)).unwrap();
    Router::new()
        .route("/public", get(|| async { "public" }))
        .route(
            "/me",
            get(|CurrentUser(user): CurrentUser| async move { Json(json!({ "user": user })) }),
        )
        .route("/login/{user}", post(login))
        .route("/set/{key}/{value}", post(set))
        .route("/get/{key}", get(read))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/logout-others", post(logout_others))
        .route("/sessions", get(sessions))
        .route("/revoke/{id}", post(revoke))
        .route(
            "/renew",
            post(|s: Session| async move { s.renew().await.map(|()| "renewed") }),
        )
        .layer(layer)
}

async fn login(session: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
    session.login(user).await?;
    Ok("logged in")
}

async fn set(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&key, value).await?;
    Ok("set")
}

async fn read(session: Session, Path(key): Path<String>) -> Result<Json<Value>, SessionError> {
    let value: Option<String> = session.get(&key).await?;
    Ok(Json(json!({ "value": value })))
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.logout().await?;
    Ok("bye")
}

async fn logout_everywhere(session: Session) -> Result<Json<Value>, SessionError> {
    let n = session.logout_everywhere().await?;
    Ok(Json(json!({ "ended": n })))
}

async fn logout_others(session: Session) -> Result<Json<Value>, SessionError> {
    let n = session.logout_other_sessions().await?;
    Ok(Json(json!({ "ended": n })))
}

async fn sessions(session: Session) -> Result<Json<Value>, SessionError> {
    Ok(Json(json!(session.active_sessions().await?)))
}

async fn revoke(session: Session, Path(id): Path<String>) -> Result<Json<Value>, SessionError> {
    Ok(Json(
        json!({ "revoked": session.revoke_session(&id).await? }),
    ))
}
