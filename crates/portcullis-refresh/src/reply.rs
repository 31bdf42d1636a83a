//! The answers of the endpoints and of a login: JSON bodies, the refresh
//! cookie set or cleared, refusals as problem documents. Every answer
//! carries `Cache-Control: no-store`.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use portcullis_core::RenderRejection as _;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{ProblemJson, Timestamp};
use portcullis_jwt::TokenResponse;
use serde_json::{Value, json};

use crate::error::{RefreshError, RefreshErrorKind};
use crate::refresher::{Refresher, TokenPair};

/// An endpoint's answer.
pub(crate) type Reply = Response<Full<Bytes>>;

/// The reason code of a refusal, in the reply's extensions until the
/// service has recorded the decision (then removed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused(pub(crate) &'static str);

/// How the refresh token came (or, for a login, goes), and so how the
/// answer carries the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// The refresh cookie.
    Cookie,
    /// The JSON body.
    Body,
}

/// What a refusal does to the refresh cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRefusal {
    /// An invalid grant clears the cookie (the token is dead); an outage
    /// never does.
    ClearDeadCookie,
    /// The cookie is left alone.
    KeepCookie,
}

pub(crate) fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn empty_reply(status: StatusCode) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Adds the refresh cookie holding `pair`'s refresh token, to live until
/// its family's end at the latest.
fn set_cookie(refresher: &Refresher, reply: &mut Reply, pair: &TokenPair) {
    let remaining = pair.refresh_expires_at.saturating_since(refresher.now());
    let cookie = refresher
        .config()
        .cookie
        .set_cookie(&pair.refresh.to_encoded(), Some(remaining));
    reply.headers_mut().append(SET_COOKIE, cookie);
}

/// Adds the removal of the refresh cookie.
pub(crate) fn clear_cookie(refresher: &Refresher, reply: &mut Reply) {
    reply
        .headers_mut()
        .append(SET_COOKIE, refresher.config().cookie.removal_cookie());
}

/// The body of a login or refresh answer: the access token, and (body
/// carrier) the refresh token with its remaining lifetime.
pub(crate) fn pair_body(pair: &TokenPair, carrier: Carrier, now: Timestamp) -> Value {
    let mut response = TokenResponse::new(&pair.access);
    if carrier == Carrier::Body {
        response = response.with_refresh_token(pair.refresh.to_encoded());
    }
    let mut body = serde_json::to_value(response).unwrap_or_default();
    if carrier == Carrier::Body {
        body["refresh_expires_in"] = json!(pair.refresh_expires_at.saturating_since(now).as_secs());
    }
    body
}

/// The answer to a login or refresh: the access token in JSON, and the
/// refresh token in a cookie or in the JSON.
pub(crate) fn pair_reply(refresher: &Refresher, pair: &TokenPair, carrier: Carrier) -> Reply {
    let mut reply = json_reply(StatusCode::OK, &pair_body(pair, carrier, refresher.now()));
    if carrier == Carrier::Cookie {
        set_cookie(refresher, &mut reply, pair);
    }
    reply
}

/// The refusal for `err` to a request with `headers` (gRPC clients get
/// gRPC status headers).
pub(crate) fn error_reply(
    refresher: &Refresher,
    err: &RefreshError,
    headers: &HeaderMap,
    cookie: OnRefusal,
) -> Reply {
    portcullis_core::event!(
        debug,
        reason = err.reason(),
        "refresh endpoint refused the request"
    );
    let rejection = err.rejection(refresher.config().retry_after);
    let mut reply = ProblemJson
        .render(&rejection, is_grpc(headers))
        .map(Full::new);
    if cookie == OnRefusal::ClearDeadCookie && err.kind() == RefreshErrorKind::InvalidGrant {
        clear_cookie(refresher, &mut reply);
    }
    reply.extensions_mut().insert(Refused(err.reason()));
    reply
}
