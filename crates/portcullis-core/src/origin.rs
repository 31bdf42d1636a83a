//! The trusted-origin policy: tower-http's Fetch Metadata / `Origin` check,
//! called as a service, with origins normalised at build time and an
//! optional public origin. The CSRF layer and the refresh endpoints embed
//! the same [`OriginCheck`].
//!
//! tower-http keeps its decision function private, so [`OriginCheck`]
//! drives a `tower_http::csrf::Csrf` wrapped around a probe service that
//! answers at once: it hands tower-http a bodiless copy of the request line
//! and the three headers the check reads (`Origin`, `Sec-Fetch-Site`,
//! `Host`), polls the answer once (both of tower-http's paths are ready
//! immediately) and reads tower-http's `ProtectionError` from the answer's
//! extensions. The decision is tower-http's, byte for byte; this module only
//! chooses what it is asked:
//!
//! - a WebSocket upgrade (a `GET`) is asked as a `POST`, so a cross-origin
//!   handshake is refused by the same rules;
//! - with a public origin, tower-http is asked without `Host` or authority
//!   and with the public origin as a trusted origin, so `Origin` must equal
//!   it exactly, scheme and port included (a client-sent `Host` or
//!   `X-Forwarded-Host` never matters);
//! - without one, tower-http's `Host` fallback compares hosts only; after
//!   it agreed, an `Origin` that is not a trusted origin must also have the
//!   site's scheme: `https` unless configured otherwise
//!   ([`OriginCheck::insecure_http_site`]). So `http://app.example` (a page
//!   an active network attacker can write) is not same-origin for
//!   `https://app.example`. The scheme is configured, never read from the
//!   request: behind a proxy that terminates TLS the request says `http`
//!   for an `https` site, and an absolute request-target's scheme is
//!   whatever the client wrote.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future as _, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderName, Method, Request, Response, Uri};
use tower_http::csrf::{Csrf, CsrfLayer as TowerCsrfLayer, ProtectionError, ProtectionErrorKind};
use tower_layer::Layer as _;
use tower_service::Service;

/// An origin that is not `scheme://host[:port]` with an http(s) scheme and
/// nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid origin {origin:?}: {message}")]
pub struct OriginError {
    /// The origin as configured.
    pub origin: String,
    /// What is wrong with it.
    pub message: String,
}

/// tower-http's own words for a refused origin, without the "invalid
/// origin" it starts with (our message says it once).
fn tower_message(e: &impl std::fmt::Display) -> String {
    let m = e.to_string();
    let lower = m.to_ascii_lowercase();
    match lower.strip_prefix("invalid origin") {
        Some(_) => m["invalid origin".len()..]
            .trim_start_matches([':', ' '])
            .to_owned(),
        None => m,
    }
}

/// The `Sec-Fetch-Site` request header (Fetch Metadata).
pub const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The probe behind tower-http: answers every request at once.
#[derive(Clone, Copy, Debug)]
struct Probe;

impl Service<Request<()>> for Probe {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

type RejectFn = fn(ProtectionError) -> Response<()>;

fn reject(_: ProtectionError) -> Response<()> {
    // tower-http inserts the error into the extensions itself.
    Response::new(())
}

/// Normalises an origin: lower-case scheme and host, no default port.
///
/// # Errors
///
/// Whatever tower-http refuses (path, query, fragment, a scheme other than
/// http(s), non-ASCII host), plus user info and an empty port.
pub fn normalize_origin(input: &str) -> Result<String, OriginError> {
    let invalid = |message: String| OriginError {
        origin: input.to_owned(),
        message,
    };
    if let Err(e) = TowerCsrfLayer::new().add_trusted_origin(input) {
        return Err(invalid(tower_message(&e)));
    }
    let uri: Uri = input
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid("scheme and host are required".into()));
    };
    if authority.as_str().contains('@') {
        return Err(invalid("user info is not allowed".into()));
    }
    if authority.as_str().ends_with(':') {
        return Err(invalid("empty port".into()));
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = authority.host().to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let out = match authority.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    };
    // The normalised form must still be acceptable to tower-http.
    match TowerCsrfLayer::new().add_trusted_origin(&out) {
        Ok(_) => Ok(out),
        Err(e) => Err(invalid(tower_message(&e))),
    }
}

/// tower-http's Fetch Metadata / `Origin` check, usable on its own (the
/// refresh layer runs it on cookie-borne requests): trusted origins and the
/// public origin are normalised and validated when it is built, and the
/// verdict is tower-http's own.
///
/// ```
/// use http::{HeaderMap, Method, Uri};
/// use portcullis_core::origin::OriginCheck;
///
/// let check = OriginCheck::new(&[], None).unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
/// let uri: Uri = "/auth/refresh".parse().unwrap();
/// assert!(check.check(&Method::POST, &uri, &headers, false).is_err());
/// ```
#[derive(Clone)]
pub struct OriginCheck {
    tower: Csrf<Probe, RejectFn>,
    trusted: Vec<String>,
    public_origin: Option<String>,
    site_scheme: &'static str,
}

impl fmt::Debug for OriginCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginCheck")
            .field("trusted_origins", &self.trusted)
            .field("public_origin", &self.public_origin)
            .field("site_scheme", &self.site_scheme)
            .finish()
    }
}

impl OriginCheck {
    /// Builds the check; origins are normalised and validated here. The
    /// site is taken to be served over `https` (see
    /// [`OriginCheck::insecure_http_site`]).
    ///
    /// # Errors
    ///
    /// [`OriginError`] for an origin that is not `scheme://host[:port]`.
    pub fn new(trusted: &[String], public_origin: Option<&str>) -> Result<Self, OriginError> {
        let trusted = trusted
            .iter()
            .map(|o| normalize_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        let public_origin = public_origin.map(normalize_origin).transpose()?;
        let mut layer = TowerCsrfLayer::new().with_rejection_response(reject as RejectFn);
        for origin in trusted.iter().chain(public_origin.iter()) {
            layer = layer.add_trusted_origin(origin).map_err(|e| OriginError {
                origin: origin.clone(),
                message: tower_message(&e),
            })?;
        }
        Ok(Self {
            tower: layer.layer(Probe),
            trusted,
            public_origin,
            site_scheme: "https",
        })
    }

    /// **Insecure.** The site is served over plain `http` (development on
    /// `localhost`): the `Origin`/`Host` fallback then wants an `http`
    /// origin instead of an `https` one. Never in production. (Ignored when
    /// a public origin is configured: its scheme is the site's.)
    #[must_use]
    pub const fn insecure_http_site(mut self) -> Self {
        self.site_scheme = "http";
        self
    }

    /// The scheme an `Origin` must have to match through the `Host`
    /// fallback.
    pub const fn site_scheme(&self) -> &'static str {
        self.site_scheme
    }

    /// The normalised trusted origins.
    pub fn trusted(&self) -> &[String] {
        &self.trusted
    }

    /// The normalised public origin.
    pub fn public_origin(&self) -> Option<&str> {
        self.public_origin.as_deref()
    }

    /// tower-http's verdict on a request with this method, target and
    /// headers. `as_unsafe` asks as a `POST` (for WebSocket upgrades, which
    /// are `GET`s that tower-http would let through).
    ///
    /// # Errors
    ///
    /// tower-http's [`ProtectionErrorKind`] when it refuses the request.
    pub fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        as_unsafe: bool,
    ) -> Result<(), ProtectionErrorKind> {
        let mut probe = Request::new(());
        *probe.method_mut() = if as_unsafe {
            Method::POST
        } else {
            method.clone()
        };
        let copy: &[HeaderName] = if self.public_origin.is_some() {
            // No Host, no authority: the fallback can only match the public
            // origin, which is a trusted origin of the tower-http check.
            &[ORIGIN, SEC_FETCH_SITE]
        } else {
            *probe.uri_mut() = uri.clone();
            &[ORIGIN, SEC_FETCH_SITE, HOST]
        };
        let probe_headers = probe.headers_mut();
        for name in copy {
            for value in headers.get_all(name) {
                probe_headers.append(name.clone(), value.clone());
            }
        }
        let mut tower = self.tower.clone();
        let mut answer = pin!(tower.call(probe));
        match answer
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(response)) => match response.extensions().get::<ProtectionError>() {
                None if self.public_origin.is_none() => self.check_scheme(headers),
                None => Ok(()),
                Some(e) => Err(e.kind()),
            },
            // Both of tower-http's paths are ready at once; anything else
            // fails closed.
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Err(ProtectionErrorKind::CrossOriginRequest),
        }
    }
}

impl OriginCheck {
    /// After tower-http let a request through: when its verdict can only
    /// have come from the `Host` fallback (no `Sec-Fetch-Site`, an `Origin`
    /// that is not a trusted origin), the `Origin` must have the site's
    /// scheme.
    fn check_scheme(&self, headers: &HeaderMap) -> Result<(), ProtectionErrorKind> {
        if headers.contains_key(SEC_FETCH_SITE) {
            return Ok(());
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = origin.as_bytes();
        if self.trusted.iter().any(|t| t.as_bytes() == origin) {
            return Ok(());
        }
        let scheme = self.site_scheme.as_bytes();
        let same = origin.len() > scheme.len() + 3
            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
            && origin[scheme.len()..].starts_with(b"://");
        if same {
            Ok(())
        } else {
            Err(ProtectionErrorKind::CrossOriginRequestFromOldBrowser)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://example.com", Some("https://example.com")),
            ("HTTPS://Example.COM", Some("https://example.com")),
            ("https://example.com:443", Some("https://example.com")),
            ("http://example.com:80", Some("http://example.com")),
            ("http://example.com:443", Some("http://example.com:443")),
            ("https://example.com:8443", Some("https://example.com:8443")),
            ("http://127.0.0.1:3003", Some("http://127.0.0.1:3003")),
            ("http://[::1]:3003", Some("http://[::1]:3003")),
            ("https://example.com/", None),
            ("https://example.com/path", None),
            ("https://example.com?q", None),
            ("https://example.com#f", None),
            ("example.com", None),
            ("ftp://example.com", None),
            ("https://user@example.com", None),
            ("https://example.com:", None),
            ("https://ümlaut.de", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = normalize_origin(input).ok();
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn verdicts_are_tower_https() {
        let check = OriginCheck::new(&["HTTPS://Partner.example:443".to_owned()], None).unwrap();
        let post = Method::POST;
        let uri = Uri::from_static("/x");
        let ok = |h: &[(&'static str, &'static str)]| check.check(&post, &uri, &headers(h), false);
        assert_eq!(ok(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(ok(&[("sec-fetch-site", "none")]), Ok(()));
        assert_eq!(
            ok(&[("sec-fetch-site", "cross-site")]),
            Err(ProtectionErrorKind::CrossOriginRequest)
        );
        assert_eq!(
            ok(&[("sec-fetch-site", "same-site")]),
            Err(ProtectionErrorKind::CrossOriginRequest)
        );
        assert_eq!(ok(&[]), Ok(()), "non-browser client");
        assert_eq!(
            ok(&[("host", "app.example"), ("origin", "https://app.example")]),
            Ok(())
        );
        assert_eq!(
            ok(&[("host", "app.example"), ("origin", "https://evil.example")]),
            Err(ProtectionErrorKind::CrossOriginRequestFromOldBrowser)
        );
        assert_eq!(
            ok(&[("host", "app.example"), ("origin", "null")]),
            Err(ProtectionErrorKind::CrossOriginRequestFromOldBrowser)
        );
        // The configured trusted origin matches after normalisation.
        assert_eq!(
            ok(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://partner.example")
            ]),
            Ok(())
        );
        // A WebSocket upgrade is asked as a POST.
        let get = Method::GET;
        let h = headers(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(check.check(&get, &uri, &h, false), Ok(()));
        assert_eq!(
            check.check(&get, &uri, &h, true),
            Err(ProtectionErrorKind::CrossOriginRequest)
        );
    }

    /// The `Host` fallback with the scheme: the site's scheme is
    /// configured (https by default), never read from the request.
    #[test]
    fn host_fallback_compares_the_scheme_table() {
        use ProtectionErrorKind::{CrossOriginRequest, CrossOriginRequestFromOldBrowser};
        let https = OriginCheck::new(&["http://legacy.example".to_owned()], None).unwrap();
        let http = OriginCheck::new(&[], None).unwrap().insecure_http_site();
        let post = Method::POST;
        type Case = (
            &'static str,
            &'static str,
            Vec<(&'static str, &'static str)>,
            Result<(), ProtectionErrorKind>,
        );
        let cases: Vec<Case> = vec![
            (
                "https",
                "/x",
                vec![("host", "app.example"), ("origin", "https://app.example")],
                Ok(()),
            ),
            (
                "https",
                "/x",
                vec![("host", "app.example"), ("origin", "HTTPS://app.example")],
                Ok(()),
            ),
            // The downgrade: an http page of the same host.
            (
                "https",
                "/x",
                vec![("host", "app.example"), ("origin", "http://app.example")],
                Err(CrossOriginRequestFromOldBrowser),
            ),
            (
                "https",
                "/x",
                vec![
                    ("host", "app.example:8080"),
                    ("origin", "http://app.example:8080"),
                ],
                Err(CrossOriginRequestFromOldBrowser),
            ),
            // The request's own scheme is not believed.
            (
                "https",
                "http://app.example/x",
                vec![("host", "app.example"), ("origin", "http://app.example")],
                Err(CrossOriginRequestFromOldBrowser),
            ),
            (
                "https",
                "/x",
                vec![("host", "app.example"), ("origin", "ws://app.example")],
                Err(CrossOriginRequestFromOldBrowser),
            ),
            // A trusted origin keeps its own scheme.
            (
                "https",
                "/x",
                vec![("host", "app.example"), ("origin", "http://legacy.example")],
                Ok(()),
            ),
            // Sec-Fetch-Site decides when present; no Origin: a non-browser.
            (
                "https",
                "/x",
                vec![
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "http://app.example"),
                    ("host", "app.example"),
                ],
                Ok(()),
            ),
            (
                "https",
                "/x",
                vec![
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://app.example"),
                    ("host", "app.example"),
                ],
                Err(CrossOriginRequest),
            ),
            ("https", "/x", vec![("host", "app.example")], Ok(())),
            // Another host is refused by tower-http, whatever the scheme.
            (
                "https",
                "/x",
                vec![("host", "app.example"), ("origin", "https://evil.example")],
                Err(CrossOriginRequestFromOldBrowser),
            ),
            // A plain-http development site wants http.
            (
                "http",
                "/x",
                vec![
                    ("host", "127.0.0.1:3003"),
                    ("origin", "http://127.0.0.1:3003"),
                ],
                Ok(()),
            ),
            (
                "http",
                "/x",
                vec![
                    ("host", "127.0.0.1:3003"),
                    ("origin", "https://127.0.0.1:3003"),
                ],
                Err(CrossOriginRequestFromOldBrowser),
            ),
        ];
        for (site, uri, h, want) in cases {
            let check = if site == "https" { &https } else { &http };
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(
                check.check(&post, &uri, &headers(&h), false),
                want,
                "{site} {uri} {h:?}"
            );
        }
    }

    #[test]
    fn public_origin_replaces_host_and_pins_the_scheme() {
        let check = OriginCheck::new(&[], Some("https://App.Example:443")).unwrap();
        let post = Method::POST;
        let uri = Uri::from_static("/x");
        let run = |h: &[(&'static str, &'static str)]| check.check(&post, &uri, &headers(h), false);
        // The proxy rewrote Host; the public origin still matches.
        assert_eq!(
            run(&[("host", "backend:8080"), ("origin", "https://app.example")]),
            Ok(())
        );
        // Scheme downgrade: tower-http's Host fallback alone would let it by.
        assert_eq!(
            run(&[("host", "app.example"), ("origin", "http://app.example")]),
            Err(ProtectionErrorKind::CrossOriginRequestFromOldBrowser)
        );
        // A Host that matches the attacker's origin is ignored, and so is
        // X-Forwarded-Host.
        assert_eq!(
            run(&[
                ("host", "evil.example"),
                ("x-forwarded-host", "evil.example"),
                ("origin", "https://evil.example")
            ]),
            Err(ProtectionErrorKind::CrossOriginRequestFromOldBrowser)
        );
        assert_eq!(check.public_origin(), Some("https://app.example"));
    }
}
