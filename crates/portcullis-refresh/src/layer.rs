//! `RefreshLayer`: the refresh, logout and device endpoints.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::COOKIE;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE, USER_AGENT};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt as _, Full, Limited};
use portcullis_core::cookie::find_cookie;
use portcullis_core::rejection::is_grpc;
use portcullis_core::{BoxError, ProblemJson, RenderRejection as _, ResponseBody};
use serde_json::{Map, Value, json};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{RefreshConfigError, RefreshTransport};
use crate::error::{RefreshError, RefreshErrorKind};
use crate::family::DeviceInfo;
use crate::refresher::{Refresher, TokenPair};
use crate::token::RefreshToken;

/// Cross-site check for cookie-borne requests: core's trusted-origin
/// policy (tower-http's Fetch Metadata / `Origin` check).
#[derive(Clone, Debug)]
pub(crate) struct CsrfProbe {
    check: portcullis_core::OriginCheck,
}

impl CsrfProbe {
    /// The site is `https` unless the refresh cookie is not `Secure`
    /// (`insecure_dev_cookies`, plain-http development): then an `Origin`
    /// with the `http` scheme is the site's own.
    pub(crate) fn new(
        trusted: &[String],
        public_origin: Option<&str>,
        secure_site: bool,
    ) -> Result<Self, RefreshConfigError> {
        let mut check = portcullis_core::OriginCheck::new(trusted, public_origin)
            .map_err(|e| RefreshConfigError::Origin(e.to_string()))?;
        if !secure_site {
            check = check.insecure_http_site();
        }
        Ok(Self { check })
    }

    /// Whether the request is refused as cross-origin.
    fn cross_site(&self, parts: &Parts) -> bool {
        self.cross_site_headers(&parts.uri, &parts.headers)
    }

    /// Whether a cookie-borne request to `uri` with `headers` is refused
    /// as cross-origin (judged as a `POST` whatever its method).
    fn cross_site_headers(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        self.check.check(&Method::POST, uri, headers, true).is_err()
    }
}

/// Serves, under the prefix (default `/auth`):
///
/// | request | credential | answer |
/// |---|---|---|
/// | `POST /auth/refresh` | refresh token (cookie or body) | new access token, rotated refresh token |
/// | `POST /auth/logout` | refresh token | 204; this device's tokens dead |
/// | `POST /auth/logout-everywhere` | refresh token | `{"ended": n}`; every token of the user dead |
/// | `GET /auth/sessions` | bearer access token | the user's devices, current one marked |
/// | `DELETE /auth/sessions/{id}` | bearer access token | 204; that device logged out |
///
/// Every answer carries `Cache-Control: no-store`. Cookie-borne requests
/// that Fetch Metadata or `Origin` mark as cross-site get 403 (tower-http's
/// check); body-borne ones carry no ambient credential and are exempt. A
/// bad, expired, revoked or reused refresh token gets 401 and clears the
/// cookie; a store outage gets 503 and leaves the cookie alone (the token
/// still works once the store is back). Other requests go to the inner
/// service untouched; the application's login route is its own.
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
/// store); others go through in a named future.
#[derive(Clone)]
pub struct RefreshLayer {
    pub(crate) refresher: Refresher,
}

impl fmt::Debug for RefreshLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLayer")
            .field("refresher", &self.refresher)
            .finish()
    }
}

impl<S> Layer<S> for RefreshLayer {
    type Service = RefreshService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RefreshService {
            inner,
            refresher: self.refresher.clone(),
        }
    }
}

/// The service built by [`RefreshLayer`].
#[derive(Clone)]
pub struct RefreshService<S> {
    inner: S,
    refresher: Refresher,
}

impl<S: fmt::Debug> fmt::Debug for RefreshService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Refresh,
    Logout,
    LogoutEverywhere,
    Sessions,
    Device,
    WrongMethod,
}

fn route<'a>(prefix: &str, method: &Method, path: &'a str) -> Option<(Endpoint, &'a str)> {
    let rest = path.strip_prefix(prefix)?;
    let (ep, id) = match rest {
        "/refresh" => (Endpoint::Refresh, ""),
        "/logout" => (Endpoint::Logout, ""),
        "/logout-everywhere" => (Endpoint::LogoutEverywhere, ""),
        "/sessions" => (Endpoint::Sessions, ""),
        _ => match rest.strip_prefix("/sessions/") {
            Some(id) if !id.is_empty() && !id.contains('/') => (Endpoint::Device, id),
            _ => return None,
        },
    };
    let allowed = match ep {
        Endpoint::Sessions => method == Method::GET,
        Endpoint::Device => method == Method::DELETE,
        _ => method == Method::POST,
    };
    Some(if allowed {
        (ep, id)
    } else {
        (Endpoint::WrongMethod, id)
    })
}

/// How the refresh token came, and so how the answer carries the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cookie,
    Body,
}

type Reply = Response<Full<Bytes>>;

/// The most copies of the refresh cookie a logout looks at; a request with
/// more is refused before any store call.
const MAX_COOKIE_COPIES: usize = 8;

/// Every value of the cookie `name` across the `Cookie` headers, double
/// quotes removed (empty values, and values that are not visible ASCII,
/// are skipped: they cannot be refresh tokens). Stops after `limit + 1`
/// values.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &str, limit: usize) -> Vec<&'a str> {
    let mut out = Vec::new();
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(value) = pair
                .strip_prefix(name.as_bytes())
                .and_then(|r| r.strip_prefix(b"="))
            else {
                continue;
            };
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            if let Ok(v) = std::str::from_utf8(value) {
                if !v.is_empty() && v.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                    out.push(v);
                }
            }
            if out.len() > limit {
                return out;
            }
        }
    }
    out
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn empty_reply(status: StatusCode) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Refresher {
    fn device(&self, parts_headers: &HeaderMap, ext: &http::Extensions) -> DeviceInfo {
        DeviceInfo {
            user_agent: parts_headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
            ip: self
                .inner
                .config
                .client_ip
                .and_then(|f| f(ext, parts_headers))
                .map(|ip| ip.to_string()),
        }
    }

    fn set_cookie(&self, reply: &mut Reply, pair: &TokenPair) {
        let remaining = pair
            .refresh_expires_at
            .saturating_since(self.inner.clock.now());
        let cookie = self
            .inner
            .config
            .cookie
            .set_cookie(&pair.refresh.to_encoded(), Some(remaining));
        reply.headers_mut().append(SET_COOKIE, cookie);
    }

    fn clear_cookie(&self, reply: &mut Reply) {
        reply
            .headers_mut()
            .append(SET_COOKIE, self.inner.config.cookie.removal_cookie());
    }

    /// The answer to a login or refresh: the access token in JSON, and the
    /// refresh token in a cookie or (body mode) in the JSON.
    fn pair_reply(&self, pair: &TokenPair, mode: Mode) -> Reply {
        let mut body = json!({
            "access_token": pair.access.token,
            "token_type": "Bearer",
            "expires_in": pair.access.expires_in,
        });
        if mode == Mode::Body {
            body["refresh_token"] = Value::String(pair.refresh.to_encoded());
            body["refresh_expires_in"] = json!(
                pair.refresh_expires_at
                    .saturating_since(self.inner.clock.now())
                    .as_secs()
            );
        }
        let mut reply = json_reply(StatusCode::OK, &body);
        if mode == Mode::Cookie {
            self.set_cookie(&mut reply, pair);
        }
        reply
    }

    /// The refusal for `err`; in cookie mode an invalid grant also clears
    /// the cookie (an outage never does).
    #[must_use]
    pub fn error_reply(&self, err: &RefreshError, clear_cookie: bool, grpc: bool) -> Reply {
        portcullis_core::event!(
            debug,
            reason = err.reason(),
            "refresh endpoint refused the request"
        );
        let rejection = err.rejection(self.inner.config.retry_after);
        let mut reply = ProblemJson.render(&rejection, grpc).map(Full::new);
        if clear_cookie && err.kind() == RefreshErrorKind::InvalidGrant {
            self.clear_cookie(&mut reply);
        }
        reply
    }

    /// For the application's login handler, after it checked the
    /// credentials: starts a family and answers with the access token (and
    /// the refresh token per the transport). In `Either` mode the login
    /// request chooses the body with `x-refresh-transport: body`.
    ///
    /// A login that would answer with the refresh cookie passes the same
    /// cross-site check as the refresh endpoint first (Fetch Metadata, then
    /// `Origin` against `Host` or the configured public origin): a
    /// cross-site request gets 403 and no family is started. Without it, a
    /// form on another site could log the visitor's browser into the
    /// attacker's account (login CSRF), and the single-page app would then
    /// refresh into it. The check reads only `headers`, so behind a proxy
    /// that rewrites `Host`, or on HTTP/2 without a `Host` header, set
    /// [`RefreshConfig::public_origin`](crate::RefreshConfig::public_origin).
    /// Parse the credentials with a handler that insists on
    /// `Content-Type: application/json` (axum's `Json`): a cross-site form
    /// can send `text/plain` whose body happens to be JSON.
    ///
    /// ```no_run
    /// # async fn login(refresher: portcullis_refresh::Refresher, headers: http::HeaderMap, ext: http::Extensions) {
    /// // ... credentials checked ...
    /// let reply = refresher.login_reply("alice", serde_json::Map::new(), &headers, &ext).await;
    /// # let _ = reply; }
    /// ```
    pub async fn login_reply(
        &self,
        user_id: &str,
        claims: Map<String, Value>,
        headers: &HeaderMap,
        ext: &http::Extensions,
    ) -> Reply {
        let mode = match self.inner.config.transport {
            RefreshTransport::Cookie => Mode::Cookie,
            RefreshTransport::Body => Mode::Body,
            RefreshTransport::Either => {
                if headers
                    .get("x-refresh-transport")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"body"))
                {
                    Mode::Body
                } else {
                    Mode::Cookie
                }
            }
        };
        if mode == Mode::Cookie && self.inner.csrf.cross_site_headers(&Uri::default(), headers) {
            return self.error_reply(
                &RefreshError::new(RefreshErrorKind::CrossSite, "cross-site-login"),
                false,
                is_grpc(headers),
            );
        }
        match self.issue(user_id, claims, self.device(headers, ext)).await {
            Ok(pair) => self.pair_reply(&pair, mode),
            Err(e) => self.error_reply(&e, false, is_grpc(headers)),
        }
    }

    /// Finds the refresh token per the transport: `Ok(None)` when absent.
    async fn token_from<B>(
        &self,
        parts: &Parts,
        body: B,
    ) -> Result<Option<(RefreshToken, Mode)>, RefreshError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let bad = |r| RefreshError::new(RefreshErrorKind::BadRequest, r);
        let invalid = || RefreshError::new(RefreshErrorKind::InvalidGrant, "malformed");
        let transport = self.inner.config.transport;
        let cookie = if transport == RefreshTransport::Body {
            None
        } else {
            find_cookie(&parts.headers, self.inner.config.cookie.full_name())
                .map_err(|_| bad("duplicate-cookie"))?
        };
        let body_token = if transport == RefreshTransport::Cookie {
            None
        } else {
            self.body_token(parts, body).await?
        };
        let (raw, mode) = match (cookie, body_token) {
            (Some(_), Some(_)) => return Err(bad("token-in-cookie-and-body")),
            (Some(c), None) => (c.to_owned(), Mode::Cookie),
            (None, Some(b)) => (b, Mode::Body),
            (None, None) => return Ok(None),
        };
        if mode == Mode::Cookie && self.inner.csrf.cross_site(parts) {
            return Err(RefreshError::new(RefreshErrorKind::CrossSite, "cross-site"));
        }
        let token = RefreshToken::parse(&raw).ok_or_else(invalid)?;
        Ok(Some((token, mode)))
    }

    /// The refresh tokens a logout acts on. Usually what
    /// [`token_from`](Self::token_from) finds; when the cookie arrives more
    /// than once (a copy planted under the same name by a sibling
    /// sub-domain, possible with a cookie name without the `__Host-`
    /// prefix), every copy that parses as a refresh token, up to
    /// [`MAX_COOKIE_COPIES`]: each one only reaches a family it is a token
    /// of, so the genuine one is ended and a planted one ends at most the
    /// planter's own family.
    async fn logout_tokens<B>(
        &self,
        parts: &Parts,
        body: B,
    ) -> Result<Vec<RefreshToken>, RefreshError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        if self.inner.config.transport != RefreshTransport::Body {
            let copies = cookie_values(
                &parts.headers,
                self.inner.config.cookie.full_name(),
                MAX_COOKIE_COPIES,
            );
            if copies.len() > MAX_COOKIE_COPIES {
                return Err(RefreshError::new(
                    RefreshErrorKind::BadRequest,
                    "too-many-cookies",
                ));
            }
            if copies.len() > 1 {
                if self.inner.csrf.cross_site(parts) {
                    return Err(RefreshError::new(RefreshErrorKind::CrossSite, "cross-site"));
                }
                let mut tokens: Vec<RefreshToken> = Vec::new();
                for t in copies.into_iter().filter_map(RefreshToken::parse) {
                    if !tokens.contains(&t) {
                        tokens.push(t);
                    }
                }
                return Ok(tokens);
            }
        }
        Ok(self
            .token_from(parts, body)
            .await?
            .map(|(t, _)| t)
            .into_iter()
            .collect())
    }

    /// `{"refresh_token": "..."}` from a JSON body, read up to the limit.
    async fn body_token<B>(&self, parts: &Parts, body: B) -> Result<Option<String>, RefreshError>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let is_json = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Ok(None);
        }
        let bytes = match Limited::new(body, self.inner.config.max_body)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(RefreshError::new(
                    RefreshErrorKind::TooLarge,
                    "body-too-large",
                ));
            }
            Err(_) => {
                return Err(RefreshError::new(
                    RefreshErrorKind::BadRequest,
                    "body-unreadable",
                ));
            }
        };
        if bytes.is_empty() {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct Wire {
            refresh_token: Option<String>,
        }
        let wire: Wire = serde_json::from_slice(&bytes)
            .map_err(|_| RefreshError::new(RefreshErrorKind::BadRequest, "body-json"))?;
        Ok(wire.refresh_token)
    }

    /// Logs out everywhere for each of `tokens` (one, or the copies of a
    /// duplicated cookie): the number of devices ended, or the first
    /// outage; invalid tokens are skipped unless all of them are.
    async fn logout_everywhere_all(&self, tokens: &[RefreshToken]) -> Result<usize, RefreshError> {
        let mut ended = None;
        for token in tokens {
            match self.logout_everywhere(token).await {
                Ok(n) => ended = Some(ended.unwrap_or(0) + n),
                Err(e) if e.kind() == RefreshErrorKind::InvalidGrant => {}
                Err(e) => return Err(e),
            }
        }
        ended.ok_or_else(|| RefreshError::new(RefreshErrorKind::InvalidGrant, "missing"))
    }

    /// The bearer access token's claims (for the device endpoints).
    async fn bearer(&self, headers: &HeaderMap) -> Result<portcullis_jwt::Claims, RefreshError> {
        let unauth = || RefreshError::new(RefreshErrorKind::Unauthenticated, "no-access-token");
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauth)?;
        let (scheme, token) = value.split_once(' ').ok_or_else(unauth)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauth());
        }
        self.inner.verifier.verify(token.trim()).await.map_err(|e| {
            if e.kind() == portcullis_jwt::JwtErrorKind::KeysUnavailable {
                RefreshError::new(RefreshErrorKind::Unavailable, "keys-unavailable")
            } else {
                unauth()
            }
        })
    }

    async fn handle<B>(&self, ep: Endpoint, id: String, req: Request<B>) -> Reply
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let grpc = is_grpc(&parts.headers);
        let cookie_transport = self.inner.config.transport != RefreshTransport::Body;
        match ep {
            Endpoint::WrongMethod => {
                let mut r = empty_reply(StatusCode::METHOD_NOT_ALLOWED);
                let allow = if id.is_empty() { "POST, GET" } else { "DELETE" };
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            Endpoint::Refresh => match self.token_from(&parts, body).await {
                Ok(Some((token, mode))) => match self
                    .refresh(&token, self.device(&parts.headers, &parts.extensions))
                    .await
                {
                    Ok(pair) => self.pair_reply(&pair, mode),
                    Err(e) => self.error_reply(&e, mode == Mode::Cookie, grpc),
                },
                Ok(None) => self.error_reply(
                    &RefreshError::new(RefreshErrorKind::InvalidGrant, "missing"),
                    cookie_transport,
                    grpc,
                ),
                Err(e) => self.error_reply(&e, cookie_transport, grpc),
            },
            Endpoint::Logout => {
                let outcome = match self.logout_tokens(&parts, body).await {
                    Ok(tokens) => {
                        let mut done = Ok(());
                        for token in &tokens {
                            done = self.logout(token).await;
                            if done.is_err() {
                                break;
                            }
                        }
                        done
                    }
                    Err(e) if e.kind() == RefreshErrorKind::InvalidGrant => Ok(()),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => {
                        let mut r = empty_reply(StatusCode::NO_CONTENT);
                        if cookie_transport {
                            self.clear_cookie(&mut r);
                        }
                        r
                    }
                    Err(e) => self.error_reply(&e, false, grpc),
                }
            }
            Endpoint::LogoutEverywhere => {
                let outcome = match self.logout_tokens(&parts, body).await {
                    Ok(tokens) => self.logout_everywhere_all(&tokens).await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(n) => {
                        let mut r = json_reply(StatusCode::OK, &json!({ "ended": n }));
                        if cookie_transport {
                            self.clear_cookie(&mut r);
                        }
                        r
                    }
                    Err(e) => self.error_reply(&e, cookie_transport, grpc),
                }
            }
            Endpoint::Sessions => match self.bearer(&parts.headers).await {
                Ok(claims) => {
                    let user = claims.subject().unwrap_or_default().to_owned();
                    match self
                        .devices(&user, claims.registered().sid.as_deref())
                        .await
                    {
                        Ok(list) => json_reply(StatusCode::OK, &json!({ "sessions": list })),
                        Err(e) => self.error_reply(&e, false, grpc),
                    }
                }
                Err(e) => self.error_reply(&e, false, grpc),
            },
            Endpoint::Device => match self.bearer(&parts.headers).await {
                Ok(claims) => match self
                    .revoke_device(claims.subject().unwrap_or_default(), &id)
                    .await
                {
                    Ok(()) => empty_reply(StatusCode::NO_CONTENT),
                    Err(e) => self.error_reply(&e, false, grpc),
                },
                Err(e) => self.error_reply(&e, false, grpc),
            },
        }
    }
}

/// The response future of [`RefreshService`]: the inner future for other
/// routes, a boxed one for the endpoints (they await the store).
pub type ResponseFuture<F, B, E> = portcullis_core::LayerFuture<F, B, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RefreshService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Send + 'static,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let prefix = &self.refresher.inner.config.prefix;
        let Some((ep, id)) = route(prefix, req.method(), req.uri().path()) else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let id = id.to_owned();
        let refresher = self.refresher.clone();
        let fut = async move {
            let reply = refresher.handle(ep, id, req).await;
            let (parts, body) = reply.into_parts();
            let bytes = body
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
        };
        ResponseFuture::boxed(Box::pin(fut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_table() {
        let n = "__Host-refresh";
        let cases: &[(&[&[u8]], &[&str])] = &[
            (&[], &[]),
            (&[b"a=1"], &[]),
            (&[b"__Host-refresh=a"], &["a"]),
            (&[b"__Host-refresh=a; __Host-refresh=b"], &["a", "b"]),
            (
                &[b"__Host-refresh=a", b" __Host-refresh=\"b\" "],
                &["a", "b"],
            ),
            (&[b"x=1;__Host-refresh=a;;__Host-refreshx=c"], &["a"]),
            (&[b"__host-refresh=a; x__Host-refresh=b"], &[]),
            (&[b"__Host-refresh=caf\xc3\xa9; __Host-refresh=b"], &["b"]),
            (&[b"__Host-refresh=; __Host-refresh=a b"], &[]),
            (&[b"__Host-refresh==a"], &["=a"]),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for h in *headers {
                map.append(COOKIE, HeaderValue::from_bytes(h).unwrap());
            }
            assert_eq!(cookie_values(&map, n, 8), *want, "{headers:?}");
        }
        let mut many = HeaderMap::new();
        many.append(
            COOKIE,
            HeaderValue::from_static("__Host-refresh=a; __Host-refresh=b; __Host-refresh=c"),
        );
        assert_eq!(
            cookie_values(&many, n, 1),
            ["a", "b"],
            "stops after limit + 1"
        );
    }

    #[test]
    fn routing_table() {
        let p = "/auth";
        assert_eq!(
            route(p, &Method::POST, "/auth/refresh"),
            Some((Endpoint::Refresh, ""))
        );
        assert_eq!(
            route(p, &Method::GET, "/auth/refresh"),
            Some((Endpoint::WrongMethod, ""))
        );
        assert_eq!(
            route(p, &Method::POST, "/auth/logout"),
            Some((Endpoint::Logout, ""))
        );
        assert_eq!(
            route(p, &Method::POST, "/auth/logout-everywhere"),
            Some((Endpoint::LogoutEverywhere, ""))
        );
        assert_eq!(
            route(p, &Method::GET, "/auth/sessions"),
            Some((Endpoint::Sessions, ""))
        );
        assert_eq!(
            route(p, &Method::DELETE, "/auth/sessions/abc"),
            Some((Endpoint::Device, "abc"))
        );
        assert_eq!(
            route(p, &Method::GET, "/auth/sessions/abc"),
            Some((Endpoint::WrongMethod, "abc"))
        );
        assert_eq!(
            route(p, &Method::POST, "/auth/login"),
            None,
            "the app's own route"
        );
        assert_eq!(route(p, &Method::DELETE, "/auth/sessions/a/b"), None);
        assert_eq!(route(p, &Method::POST, "/authx/refresh"), None);
        assert_eq!(route(p, &Method::GET, "/api/me"), None);
    }
}
