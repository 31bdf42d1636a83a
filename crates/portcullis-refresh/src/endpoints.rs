//! The endpoints as plain async functions: each takes the refresher and
//! the request's parts (and body), and returns the answer. Also the HTTP
//! answer to a login ([`Login::reply`]).

use bytes::Bytes;
use http::header::ALLOW;
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode};
use http_body::Body;
use portcullis_core::request::user_agent;
use portcullis_jwt::dpop::{DPOP, DPOP_NONCE, DpopPolicy, called_uri};
use portcullis_jwt::{Claims, JwtErrorKind};
use serde_json::json;

use crate::error::{RefreshError, RefreshErrorKind};
use crate::extract::{is_cross_site, login_carrier, logout_tokens, presented_token};
use crate::family::DeviceInfo;
use crate::refresher::{Login, ProofRequest, Refresher};
use crate::reply::{
    Carrier, OnRefusal, Reply, clear_cookie, empty_reply, error_reply, json_reply, pair_reply,
};
use crate::route::Route;
use crate::token::RefreshToken;

/// Answers a request `route` matched.
pub(crate) async fn answer<B>(refresher: &Refresher, route: Route, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes>,
{
    let (parts, body) = req.into_parts();
    match route {
        Route::WrongMethod(allow) => wrong_method(allow),
        Route::Refresh => refresh(refresher, &parts, body).await,
        Route::Logout => logout(refresher, &parts, body).await,
        Route::LogoutEverywhere => logout_everywhere(refresher, &parts, body).await,
        Route::Sessions => sessions(refresher, &parts).await,
        Route::Device(id) => revoke_device(refresher, &parts, &id).await,
    }
}

/// 405 with `Allow`.
fn wrong_method(allow: &'static str) -> Reply {
    let mut r = empty_reply(StatusCode::METHOD_NOT_ALLOWED);
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// What a refusal under this transport does to the cookie when the
/// carrier is unknown (the token was absent or unreadable).
fn clear_if_cookie_transport(refresher: &Refresher) -> OnRefusal {
    if refresher.config().transport == crate::config::Transport::Body {
        OnRefusal::KeepCookie
    } else {
        OnRefusal::ClearDeadCookie
    }
}

/// The device making the request, as device lists show it.
fn device(refresher: &Refresher, parts: &Parts) -> DeviceInfo {
    DeviceInfo {
        user_agent: user_agent(&parts.headers),
        ip: refresher
            .config()
            .client_ip
            .and_then(|f| f(&parts.extensions, &parts.headers))
            .map(|ip| ip.to_string()),
    }
}

/// The request as a DPoP proof is checked against it: the URI the client
/// called, whole under axum's `Router::nest` (with the `axum` feature).
fn proof_request(parts: &Parts) -> ProofRequest<'_> {
    (&parts.method, called_uri(parts), &parts.headers)
}

/// `reply` with the current server nonce in `DPoP-Nonce`, when the
/// request's proof carried the previous one (RFC 9449 §8.2): the client
/// renews its nonce without a `use_dpop_nonce` refusal.
fn with_next_nonce(mut reply: Reply, nonce: Option<&str>) -> Reply {
    if let Some(value) = nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
        reply.headers_mut().insert(DPOP_NONCE, value);
    }
    reply
}

/// `POST {prefix}/refresh`: a new access token and the rotated refresh
/// token, carried the way the presented one came. A token of a family
/// bound to a DPoP key needs a proof by that key, checked before anything
/// rotates.
pub(crate) async fn refresh<B>(refresher: &Refresher, parts: &Parts, body: B) -> Reply
where
    B: Body<Data = Bytes>,
{
    match presented_token(refresher, parts, body).await {
        Ok(Some((token, carrier))) => {
            let mut next_nonce = None;
            let refreshed = match refresher
                .dpop_binding(&token, Some(proof_request(parts)), true)
                .await
            {
                Ok(binding) => {
                    let rotated = refresher
                        .rotate(&token, device(refresher, parts), &binding)
                        .await;
                    next_nonce = binding.next_nonce().map(str::to_owned);
                    rotated
                }
                Err(e) => Err(e),
            };
            match refreshed {
                Ok(pair) => {
                    with_next_nonce(pair_reply(refresher, &pair, carrier), next_nonce.as_deref())
                }
                Err(e) => {
                    let cookie = match carrier {
                        Carrier::Cookie => OnRefusal::ClearDeadCookie,
                        Carrier::Body => OnRefusal::KeepCookie,
                    };
                    error_reply(refresher, &e, &parts.headers, cookie)
                }
            }
        }
        Ok(None) => error_reply(
            refresher,
            &RefreshError::new(RefreshErrorKind::InvalidGrant, "missing"),
            &parts.headers,
            clear_if_cookie_transport(refresher),
        ),
        Err(e) => error_reply(
            refresher,
            &e,
            &parts.headers,
            clear_if_cookie_transport(refresher),
        ),
    }
}

/// `POST {prefix}/logout`: 204, this device's tokens dead (every copy of a
/// duplicated cookie that is a refresh token); the cookie cleared.
pub(crate) async fn logout<B>(refresher: &Refresher, parts: &Parts, body: B) -> Reply
where
    B: Body<Data = Bytes>,
{
    let outcome = match logout_tokens(refresher, parts, body).await {
        Ok(tokens) => {
            let mut done = Ok(());
            for token in &tokens {
                done = match refresher
                    .dpop_binding(token, Some(proof_request(parts)), false)
                    .await
                {
                    Ok(_) => refresher.logout(token).await,
                    Err(e) => Err(e),
                };
                if done.is_err() {
                    break;
                }
            }
            done
        }
        // Logout is idempotent: an unreadable token has nothing to end.
        Err(e) if e.kind() == RefreshErrorKind::InvalidGrant => Ok(()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            let mut r = empty_reply(StatusCode::NO_CONTENT);
            if refresher.config().transport != crate::config::Transport::Body {
                clear_cookie(refresher, &mut r);
            }
            r
        }
        Err(e) => error_reply(refresher, &e, &parts.headers, OnRefusal::KeepCookie),
    }
}

/// `POST {prefix}/logout-everywhere`: `{"ended": n}`, every token of the
/// user dead; the cookie cleared.
pub(crate) async fn logout_everywhere<B>(refresher: &Refresher, parts: &Parts, body: B) -> Reply
where
    B: Body<Data = Bytes>,
{
    let outcome = match logout_tokens(refresher, parts, body).await {
        Ok(tokens) => logout_everywhere_all(refresher, parts, &tokens).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(n) => {
            let mut r = json_reply(StatusCode::OK, &json!({ "ended": n }));
            if refresher.config().transport != crate::config::Transport::Body {
                clear_cookie(refresher, &mut r);
            }
            r
        }
        Err(e) => error_reply(
            refresher,
            &e,
            &parts.headers,
            clear_if_cookie_transport(refresher),
        ),
    }
}

/// Logs out everywhere for each of `tokens` (one, or the copies of a
/// duplicated cookie): the number of devices ended, or the first outage;
/// invalid tokens are skipped unless all of them are.
async fn logout_everywhere_all(
    refresher: &Refresher,
    parts: &Parts,
    tokens: &[RefreshToken],
) -> Result<usize, RefreshError> {
    let mut ended = None;
    for token in tokens {
        let done = match refresher
            .dpop_binding(token, Some(proof_request(parts)), false)
            .await
        {
            Ok(_) => refresher.logout_everywhere(token).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(n) => ended = Some(ended.unwrap_or(0) + n),
            Err(e) if e.kind() == RefreshErrorKind::InvalidGrant => {}
            Err(e) => return Err(e),
        }
    }
    ended.ok_or_else(|| RefreshError::new(RefreshErrorKind::InvalidGrant, "missing"))
}

/// The caller's access-token claims, read where the application's
/// `JwtLayer` reads them (bearer header, cookie or header) and verified as
/// it would.
///
/// With [`RefreshConfig::dpop`](crate::RefreshConfig::dpop), a DPoP-bound
/// access token may come as `Authorization: DPoP` with a proof by its key.
///
/// When that is a cookie, the browser sends it with requests other sites
/// start: a request that Fetch Metadata or `Origin` marks as cross-site is
/// refused (403) before the token is looked at, as the refresh cookie is.
async fn caller(refresher: &Refresher, parts: &Parts) -> Result<Claims, RefreshError> {
    let verifier = &refresher.inner.verifier;
    if matches!(verifier.transport(), portcullis_jwt::Transport::Cookie(_))
        && is_cross_site(refresher, &parts.uri, &parts.headers)
    {
        return Err(RefreshError::new(RefreshErrorKind::CrossSite, "cross-site"));
    }
    let refused = |e: portcullis_jwt::JwtError| {
        if e.kind() == JwtErrorKind::KeysUnavailable {
            RefreshError::new(RefreshErrorKind::Unavailable, "keys-unavailable")
        } else {
            RefreshError::new(RefreshErrorKind::Unauthenticated, "no-access-token")
        }
    };
    // `Authorization: DPoP`: a token bound to a key, with a proof by it
    // for this very request (`ath` included).
    if let (Some((dpop, _)), Ok(Some(token))) = (
        &refresher.config().dpop,
        portcullis_core::request::dpop_token(&parts.headers),
    ) {
        let claims = verifier.verify(token).await.map_err(refused)?;
        let Some(jkt) = claims.registered().cnf_jkt() else {
            return Err(RefreshError::new(
                RefreshErrorKind::Unauthenticated,
                "no-access-token",
            ));
        };
        dpop.check_bound(
            &parts.method,
            called_uri(parts),
            &parts.headers,
            Some(token),
            jkt,
        )
        .await
        .map_err(RefreshError::dpop)?;
        return Ok(claims);
    }
    verifier
        .verify_request(&parts.headers)
        .await
        .map_err(refused)
}

/// `GET {prefix}/sessions`: the caller's devices, the current one marked.
pub(crate) async fn sessions(refresher: &Refresher, parts: &Parts) -> Reply {
    let listed = match caller(refresher, parts).await {
        Ok(claims) => {
            let user = claims.subject().unwrap_or_default();
            refresher
                .devices(user, claims.registered().sid.as_deref())
                .await
        }
        Err(e) => Err(e),
    };
    match listed {
        Ok(list) => json_reply(StatusCode::OK, &json!({ "sessions": list })),
        Err(e) => error_reply(refresher, &e, &parts.headers, OnRefusal::KeepCookie),
    }
}

/// `DELETE {prefix}/sessions/{id}`: 204, that device of the caller's
/// logged out.
pub(crate) async fn revoke_device(refresher: &Refresher, parts: &Parts, id: &str) -> Reply {
    let done = match caller(refresher, parts).await {
        Ok(claims) => {
            refresher
                .revoke_device(claims.subject().unwrap_or_default(), id)
                .await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => empty_reply(StatusCode::NO_CONTENT),
        Err(e) => error_reply(refresher, &e, &parts.headers, OnRefusal::KeepCookie),
    }
}

impl Login {
    /// Starts the family and answers the login request whose `parts` are
    /// given: the access token in JSON (a
    /// [`TokenResponse`](portcullis_jwt::TokenResponse)), and the refresh
    /// token per the transport. In [`Transport::Either`](crate::Transport::Either)
    /// mode the login request chooses the body with
    /// `x-refresh-transport: body`. The device shown in device lists is
    /// read from the request (user agent, and the address through
    /// [`RefreshConfig::client_ip`](crate::RefreshConfig::client_ip)).
    ///
    /// A login that would answer with the refresh cookie passes the same
    /// cross-site check as the refresh endpoint first (Fetch Metadata, then
    /// `Origin` against `Host` or the configured public origin): a
    /// cross-site request gets 403 and no family is started. Without it, a
    /// form on another site could log the visitor's browser into the
    /// attacker's account (login CSRF), and the single-page app would then
    /// refresh into it. The check reads only the headers, so behind a proxy
    /// that rewrites `Host`, or on HTTP/2 without a `Host` header, set
    /// [`RefreshConfig::public_origin`](crate::RefreshConfig::public_origin).
    /// Parse the credentials with a handler that insists on
    /// `Content-Type: application/json` (axum's `Json`): a cross-site form
    /// can send `text/plain` whose body happens to be JSON.
    ///
    /// With [`RefreshConfig::dpop`](crate::RefreshConfig::dpop), a login
    /// request carrying a `DPoP` proof (`htm`/`htu` of this login request)
    /// binds the family to the proof's key, and the access token is
    /// answered as `token_type: DPoP`; an invalid proof, or none under
    /// [`DpopPolicy::Required`], is a 401 with a `DPoP` challenge and no
    /// family.
    ///
    /// ```no_run
    /// # async fn login(refresher: portcullis_refresh::Refresher, parts: http::request::Parts) {
    /// // ... credentials checked ...
    /// let reply = refresher.login("alice").roles(["user"]).reply(&parts).await;
    /// # let _ = reply; }
    /// ```
    pub async fn reply(mut self, parts: &Parts) -> http::Response<http_body_util::Full<Bytes>> {
        let refresher = self.refresher.for_request(parts);
        self.refresher = refresher.clone();
        let carrier = login_carrier(refresher.config().transport, &parts.headers);
        if carrier == Carrier::Cookie
            && is_cross_site(&refresher, &http::Uri::default(), &parts.headers)
        {
            return error_reply(
                &refresher,
                &RefreshError::new(RefreshErrorKind::CrossSite, "cross-site-login"),
                &parts.headers,
                OnRefusal::KeepCookie,
            );
        }
        let mut next_nonce = None;
        if let Some((verifier, policy)) = &refresher.config().dpop {
            let check = match policy {
                DpopPolicy::Bearer => false,
                DpopPolicy::Required => true,
                _ => parts.headers.contains_key(DPOP),
            };
            if check && self.jkt.is_none() {
                match verifier
                    .check(&parts.method, called_uri(parts), &parts.headers, None)
                    .await
                {
                    Ok(proof) => {
                        self.jkt = Some(proof.jkt().to_owned());
                        next_nonce = proof.next_nonce().map(str::to_owned);
                    }
                    Err(e) => {
                        return error_reply(
                            &refresher,
                            &RefreshError::dpop(e),
                            &parts.headers,
                            OnRefusal::KeepCookie,
                        );
                    }
                }
            }
        }
        self.device = device(&refresher, parts);
        match self.issue().await {
            Ok(pair) => with_next_nonce(
                pair_reply(&refresher, &pair, carrier),
                next_nonce.as_deref(),
            ),
            Err(e) => error_reply(&refresher, &e, &parts.headers, OnRefusal::KeepCookie),
        }
    }
}
