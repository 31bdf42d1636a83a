//! The layer's policy: the configuration validated once ([`Policy`], built
//! by `CsrfLayer::new`) and the decision it makes about each request from
//! its method, target and headers ([`Policy::decide`]), a plain function
//! tested by the table at the bottom of this file.

use std::borrow::Cow;
use std::fmt;

use http::header::UPGRADE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use portcullis_core::events::Events;
use portcullis_core::{CookieConfig, OriginCheck};
use tower_http::csrf::ProtectionErrorKind;

use crate::body::{FormKind, form_kind};
use crate::config::{self, BindingKind, CsrfConfig, TokenModeConfig};
use crate::error::{ConfigError, CsrfErrorKind};
use crate::token::MacKey;

/// The token mode, validated.
pub(crate) enum TokenMode {
    /// Synchronizer secrets in the portcullis session.
    #[cfg(feature = "session")]
    Session,
    /// Signed double-submit tokens.
    Signed {
        /// The first key signs; all verify.
        keys: Vec<MacKey>,
        binding: BindingKind,
    },
    /// No tokens: the origin check alone.
    OriginCheckOnly,
}

/// The layer's configuration, validated: what every request is judged by.
/// One per layer, shared by its services and the request handles.
pub(crate) struct Policy {
    pub(crate) origins: OriginCheck,
    pub(crate) mode: TokenMode,
    pub(crate) header_name: HeaderName,
    pub(crate) field_name: Cow<'static, str>,
    pub(crate) max_body: usize,
    pub(crate) exempt: Vec<String>,
    pub(crate) pre_cookie: CookieConfig,
    pub(crate) events: Events,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            #[cfg(feature = "session")]
            TokenMode::Session => "session".to_owned(),
            TokenMode::Signed { keys, binding } => format!(
                "signed(keys: {} REDACTED, binding: {:?})",
                keys.len(),
                config::SignedBinding(binding.clone())
            ),
            TokenMode::OriginCheckOnly => "origin-check-only".to_owned(),
        };
        f.debug_struct("CsrfLayer")
            .field("mode", &mode)
            .field("trusted_origins", &self.origins.trusted())
            .field("public_origin", &self.origins.public_origin())
            .field("site_scheme", &self.origins.site_scheme())
            .field("exempt", &self.exempt)
            .field("header_name", &self.header_name)
            .field("field_name", &self.field_name)
            .field("max_body_bytes", &self.max_body)
            .field("pre_session_cookie", &self.pre_cookie.full_name())
            .finish()
    }
}

/// What the layer does with a request, decided from its head alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Hand it on. `vary`: the decision read `Origin`/`Sec-Fetch-Site`.
    Pass { vary: bool },
    /// Refuse it now.
    Refuse {
        kind: CsrfErrorKind,
        protection: Option<ProtectionErrorKind>,
        vary: bool,
    },
    /// Verify the token the request presents, then hand it on. The
    /// decision read `Origin`/`Sec-Fetch-Site`.
    Verify(Presented),
}

/// Where a request presents its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented {
    /// In the token header, with this value.
    Header(HeaderValue),
    /// In a field of a form body of this encoding (the body must be read).
    Form(FormKind),
}

/// `GET`, `HEAD`, `OPTIONS` and `TRACE`: never blocked (but see WebSocket
/// upgrades).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::GET
        && headers.get_all(UPGRADE).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        })
}

/// Whether a form field name is plain ASCII that needs no escaping in
/// HTML (letters, digits, `-`, `_`, `.`).
fn is_plain_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether an exempt path is absolute, without query, fragment or
/// whitespace.
fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

impl Policy {
    /// Validates `config`.
    pub(crate) fn from_config(config: CsrfConfig) -> Result<Self, ConfigError> {
        if let Some(option) = config.signed_only_option {
            return Err(ConfigError::SignedOnly(option));
        }
        let mut origins =
            OriginCheck::new(&config.trusted_origins, config.public_origin.as_deref())?;
        if config.http_site {
            origins = origins.insecure_http_site();
        }
        if !is_plain_field_name(&config.field_name) {
            return Err(ConfigError::InvalidFieldName(
                config.field_name.into_owned(),
            ));
        }
        if let Some(path) = config.exempt.iter().find(|p| !is_plain_path(p)) {
            return Err(ConfigError::InvalidExemptPath(path.clone()));
        }
        if config.max_body_bytes == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        let mode = match config.mode {
            #[cfg(feature = "session")]
            TokenModeConfig::Session => TokenMode::Session,
            TokenModeConfig::Signed { key, binding } => {
                let mut keys = vec![key];
                keys.extend(config.previous_keys);
                if keys.iter().any(|k| k.0.len() < 32) {
                    return Err(ConfigError::KeyTooShort);
                }
                config.pre_session_cookie.validate()?;
                TokenMode::Signed {
                    keys: keys
                        .iter()
                        .map(|k| MacKey::new(&k.0))
                        .collect::<Option<_>>()
                        .ok_or(ConfigError::KeyTooShort)?,
                    binding: binding.0,
                }
            }
            TokenModeConfig::OriginCheckOnly => TokenMode::OriginCheckOnly,
        };
        Ok(Self {
            origins,
            mode,
            header_name: config.header_name,
            field_name: config.field_name,
            max_body: config.max_body_bytes,
            exempt: config.exempt,
            pre_cookie: config.pre_session_cookie,
            events: config.events,
        })
    }

    /// Whether the layer renders and checks tokens.
    pub(crate) const fn tokens(&self) -> bool {
        !matches!(self.mode, TokenMode::OriginCheckOnly)
    }

    /// The decision: what to do with a request, from its method, target
    /// and headers. The query string is never read.
    pub(crate) fn decide(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Decision {
        if self.exempt.iter().any(|p| p == uri.path()) {
            return Decision::Pass { vary: false };
        }
        let cross_origin = |p| Decision::Refuse {
            kind: CsrfErrorKind::CrossOrigin,
            protection: Some(p),
            vary: true,
        };
        if is_safe(method) {
            if !is_websocket_upgrade(method, headers) {
                return Decision::Pass { vary: false };
            }
            return match self.origins.check(method, uri, headers, true) {
                Ok(()) => Decision::Pass { vary: true },
                Err(p) => cross_origin(p),
            };
        }
        if let Err(p) = self.origins.check(method, uri, headers, false) {
            return cross_origin(p);
        }
        // CONNECT is how browsers open WebSockets over HTTP/2: like the
        // HTTP/1.1 upgrade, it cannot carry a token, and the origin check
        // has run.
        if !self.tokens() || *method == Method::CONNECT {
            return Decision::Pass { vary: true };
        }
        let refuse = |kind| Decision::Refuse {
            kind,
            protection: None,
            vary: true,
        };
        let mut values = headers.get_all(&self.header_name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => return Decision::Verify(Presented::Header(v.clone())),
            (Some(_), Some(_)) => return refuse(CsrfErrorKind::Malformed),
            _ => {}
        }
        match form_kind(headers) {
            Some(kind) => Decision::Verify(Presented::Form(kind)),
            None => refuse(CsrfErrorKind::Missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(config: CsrfConfig) -> Policy {
        Policy::from_config(config).unwrap()
    }

    fn signed() -> CsrfConfig {
        CsrfConfig::signed([1u8; 32], crate::SignedBinding::pre_session_only())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    type Pair = (&'static str, &'static str);

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    const SAME: (&str, &str) = ("sec-fetch-site", "same-origin");
    const CROSS: (&str, &str) = ("sec-fetch-site", "cross-site");

    #[test]
    fn decision_table() {
        use CsrfErrorKind as K;
        let policy = policy(
            signed()
                .exempt("/hook")
                .add_trusted_origin("https://partner.example"),
        );
        let pass = |vary| Decision::Pass { vary };
        let refuse = |kind, vary| Decision::Refuse {
            kind,
            protection: None,
            vary,
        };
        let cross = |p| Decision::Refuse {
            kind: K::CrossOrigin,
            protection: Some(p),
            vary: true,
        };
        let token = || Decision::Verify(Presented::Header(HeaderValue::from_static("t")));
        let cases: Vec<(&str, &str, Vec<Pair>, Decision)> = vec![
            // Safe methods are never blocked, whatever the headers say.
            ("GET", "/", vec![CROSS], pass(false)),
            (
                "HEAD",
                "/",
                vec![CROSS, ("origin", "https://evil.example")],
                pass(false),
            ),
            ("OPTIONS", "/", vec![CROSS], pass(false)),
            ("TRACE", "/", vec![CROSS], pass(false)),
            // ... except a cross-origin WebSocket upgrade.
            (
                "GET",
                "/ws",
                vec![("upgrade", "websocket"), CROSS],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            (
                "GET",
                "/ws",
                vec![
                    ("upgrade", "WebSocket"),
                    ("host", "app.example"),
                    ("origin", "https://evil.example"),
                ],
                cross(ProtectionErrorKind::CrossOriginRequestFromOldBrowser),
            ),
            (
                "GET",
                "/ws",
                vec![("upgrade", "websocket"), SAME],
                pass(true),
            ),
            // Unsafe methods: tower-http's check first.
            (
                "POST",
                "/",
                vec![CROSS, ("x-csrf-token", "t")],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            (
                "POST",
                "/",
                vec![("sec-fetch-site", "same-site"), ("x-csrf-token", "t")],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            (
                "DELETE",
                "/",
                vec![
                    ("host", "app.example"),
                    ("origin", "null"),
                    ("x-csrf-token", "t"),
                ],
                cross(ProtectionErrorKind::CrossOriginRequestFromOldBrowser),
            ),
            (
                "PUT",
                "/",
                vec![
                    ("host", "app.example"),
                    ("origin", "https://app.example.evil.net"),
                ],
                cross(ProtectionErrorKind::CrossOriginRequestFromOldBrowser),
            ),
            (
                "PROPFIND",
                "/",
                vec![CROSS],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            // A trusted origin passes the origin check but needs a token.
            (
                "POST",
                "/",
                vec![CROSS, ("origin", "https://partner.example")],
                refuse(K::Missing, true),
            ),
            // Then the token: header first.
            (
                "POST",
                "/",
                vec![SAME, ("x-csrf-token", "t"), FORM],
                token(),
            ),
            ("PATCH", "/", vec![("x-csrf-token", "t")], token()),
            (
                "POST",
                "/",
                vec![SAME, ("x-csrf-token", "t"), ("x-csrf-token", "u")],
                refuse(K::Malformed, true),
            ),
            // Else a form field.
            (
                "POST",
                "/",
                vec![SAME, FORM],
                Decision::Verify(Presented::Form(FormKind::UrlEncoded)),
            ),
            (
                "POST",
                "/",
                vec![SAME, ("content-type", "multipart/form-data; boundary=b")],
                Decision::Verify(Presented::Form(FormKind::Multipart("b".into()))),
            ),
            // Never the query string, never JSON or text/plain bodies.
            (
                "POST",
                "/?csrf_token=t",
                vec![SAME],
                refuse(K::Missing, true),
            ),
            (
                "POST",
                "/",
                vec![SAME, ("content-type", "application/json")],
                refuse(K::Missing, true),
            ),
            (
                "POST",
                "/",
                vec![SAME, ("content-type", "text/plain")],
                refuse(K::Missing, true),
            ),
            ("POST", "/", vec![], refuse(K::Missing, true)),
            // Exempt paths skip both checks; only the exact path.
            ("POST", "/hook", vec![CROSS], pass(false)),
            ("POST", "/hook?x=1", vec![CROSS], pass(false)),
            (
                "POST",
                "/hook/",
                vec![CROSS],
                cross(ProtectionErrorKind::CrossOriginRequest),
            ),
            ("POST", "/hooks", vec![SAME], refuse(K::Missing, true)),
        ];
        for (method, uri, h, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let uri: Uri = uri.parse().unwrap();
            let got = policy.decide(&method, &uri, &headers(&h));
            assert_eq!(got, want, "{method} {uri} {h:?}");
        }
    }

    /// The same requests under each token mode: only the origin check
    /// needs no token.
    #[test]
    fn decision_by_mode_table() {
        use CsrfErrorKind as K;
        let mut modes: Vec<(&str, Policy)> = vec![
            ("signed", policy(signed())),
            ("origin-check-only", policy(CsrfConfig::origin_check_only())),
        ];
        #[cfg(feature = "session")]
        modes.push(("session", policy(CsrfConfig::session())));
        let token = || Decision::Verify(Presented::Header(HeaderValue::from_static("t")));
        let missing = Decision::Refuse {
            kind: K::Missing,
            protection: None,
            vary: true,
        };
        let cross = Decision::Refuse {
            kind: K::CrossOrigin,
            protection: Some(ProtectionErrorKind::CrossOriginRequest),
            vary: true,
        };
        // (method, headers, with tokens, origin check only)
        let cases: Vec<(&str, Vec<Pair>, Decision, Decision)> = vec![
            (
                "POST",
                vec![SAME],
                missing.clone(),
                Decision::Pass { vary: true },
            ),
            (
                "POST",
                vec![SAME, ("x-csrf-token", "t")],
                token(),
                Decision::Pass { vary: true },
            ),
            ("POST", vec![CROSS], cross.clone(), cross.clone()),
            (
                "GET",
                vec![CROSS],
                Decision::Pass { vary: false },
                Decision::Pass { vary: false },
            ),
            (
                "CONNECT",
                vec![SAME],
                Decision::Pass { vary: true },
                Decision::Pass { vary: true },
            ),
        ];
        let uri = Uri::from_static("/");
        for (name, policy) in &modes {
            for (method, h, with_tokens, origin_only) in &cases {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let want = if policy.tokens() {
                    with_tokens
                } else {
                    origin_only
                };
                let got = policy.decide(&method, &uri, &headers(h));
                assert_eq!(&got, want, "{name}: {method} {h:?}");
            }
        }
    }

    #[test]
    fn invalid_configurations_are_errors() {
        let cases: Vec<(CsrfConfig, ConfigError)> = vec![
            (
                CsrfConfig::signed([1u8; 31], crate::SignedBinding::pre_session_only()),
                ConfigError::KeyTooShort,
            ),
            (signed().previous_key([0u8; 8]), ConfigError::KeyTooShort),
            (
                signed().field_name("a b"),
                ConfigError::InvalidFieldName("a b".into()),
            ),
            (
                signed().field_name("x\"><script>"),
                ConfigError::InvalidFieldName("x\"><script>".into()),
            ),
            (
                signed().field_name(""),
                ConfigError::InvalidFieldName(String::new()),
            ),
            (
                signed().exempt("hook"),
                ConfigError::InvalidExemptPath("hook".into()),
            ),
            (
                signed().exempt("/hook?x"),
                ConfigError::InvalidExemptPath("/hook?x".into()),
            ),
            (signed().max_body_bytes(0), ConfigError::ZeroBodyLimit),
            (
                CsrfConfig::origin_check_only().previous_key([0u8; 32]),
                ConfigError::SignedOnly("previous_key"),
            ),
            (
                signed().pre_session_cookie(CookieConfig::new("x").path("/a")),
                ConfigError::Cookie(portcullis_core::CookieConfigError::HostPrefixConstraints),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(Policy::from_config(config).unwrap_err(), want);
        }
        for bad in [
            "https://example.com/",
            "example.com",
            "https://a@b.example",
            "ftp://x",
        ] {
            let err = Policy::from_config(signed().add_trusted_origin(bad)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidOrigin { .. }),
                "{bad}: {err}"
            );
            let err = Policy::from_config(signed().public_origin(bad)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidOrigin { .. }),
                "{bad}: {err}"
            );
        }
    }

    /// An invalid origin is reported with "invalid origin" said once, the
    /// origin as configured, and tower-http's reason.
    #[test]
    fn an_invalid_origin_says_so_once() {
        for bad in ["https://example.com/", "ftp://x", "https://a@b.example"] {
            let err = Policy::from_config(signed().add_trusted_origin(bad)).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid origin {bad:?}: ")),
                "{text}"
            );
            assert_eq!(
                text.to_ascii_lowercase().matches("invalid origin").count(),
                1,
                "{text}"
            );
            assert!(
                text.len() > format!("invalid origin {bad:?}: ").len(),
                "{text}"
            );
        }
    }
}
