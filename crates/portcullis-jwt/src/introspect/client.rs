//! The call to the introspection endpoint (RFC 7662 section 2) and the
//! strict reading of its answer.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode, Uri};
use serde::Deserialize;

use super::IntrospectionConfigError;
use crate::claims::{RegisteredClaims, registered_unique};
use crate::json::check_object_str;

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// What the endpoint said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `active: true`, with what came with it.
    Active(Box<ActiveAnswer>),
    /// `active: false` (whatever else the answer held).
    Inactive,
}

/// The members of an active answer the layer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveAnswer {
    pub(crate) registered: RegisteredClaims,
    pub(crate) token_type: Option<String>,
    pub(crate) cnf_jkt: Option<String>,
    /// Whether the answer had a `cnf` member (of any confirmation method).
    pub(crate) confirmed: bool,
}

/// The members read beside the registered claims.
#[derive(Deserialize)]
struct Envelope {
    active: bool,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    cnf: Option<Confirmation>,
}

/// `cnf` (RFC 7800): `jkt` typed; any confirmation method binds the token.
#[derive(Deserialize)]
struct Confirmation {
    #[serde(default)]
    jkt: Option<String>,
    #[serde(flatten)]
    _others: serde_json::Map<String, serde_json::Value>,
}

/// Reads an RFC 7662 answer: one JSON object without duplicate keys at any
/// depth, `active` a boolean; for an active answer the registered claims
/// typed as in a JWT (`exp` a NumericDate, `aud` a string or an array of
/// strings, `scope` a space-separated string, ...), `token_type` a string
/// and `cnf` an object whose `jkt` is a string.
pub(crate) fn parse_answer(body: &[u8]) -> Result<Answer, ()> {
    let text = std::str::from_utf8(body).map_err(drop)?;
    check_object_str(text)?;
    let envelope: Envelope = serde_json::from_str(text).map_err(drop)?;
    if !envelope.active {
        return Ok(Answer::Inactive);
    }
    let registered = registered_unique(text)?;
    let confirmed = envelope.cnf.is_some();
    Ok(Answer::Active(Box::new(ActiveAnswer {
        registered,
        token_type: envelope.token_type,
        cnf_jkt: envelope.cnf.and_then(|c| c.jkt),
        confirmed,
    })))
}

/// Why the endpoint gave no answer the layer can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProviderError {
    Timeout,
    Unreachable,
    Status(StatusCode),
    BadAnswer,
    TooLarge,
}

impl ProviderError {
    pub(crate) const fn reason(self) -> &'static str {
        match self {
            Self::Timeout => "provider-timeout",
            Self::Unreachable => "provider-unreachable",
            Self::Status(_) => "provider-status",
            Self::BadAnswer => "provider-bad-answer",
            Self::TooLarge => "provider-too-large",
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one value: ASCII
/// letters, digits and `*-._` as they are, space as `+`, every other byte
/// as `%XX`.
pub(crate) fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

/// The `Authorization` value of `client_secret_basic` (RFC 6749 section
/// 2.3.1: both parts form-encoded, then Basic), marked sensitive.
pub(crate) fn basic_authorization(
    client_id: &str,
    secret: &str,
) -> Result<HeaderValue, IntrospectionConfigError> {
    let bad = |s: &str| s.is_empty() || s.chars().any(char::is_control);
    if bad(client_id) || bad(secret) {
        return Err(IntrospectionConfigError::BadClientCredentials);
    }
    let pair = format!("{}:{}", form_encode(client_id), form_encode(secret));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| IntrospectionConfigError::BadClientCredentials)?;
    value.set_sensitive(true);
    Ok(value)
}

/// The HTTP client of one layer: hyper over rustls (aws-lc-rs provider,
/// webpki roots), no redirects, a timeout on the whole exchange and a
/// limit on the body.
pub(crate) struct Client {
    http: HttpsClient,
    endpoint: Uri,
    authorization: HeaderValue,
    timeout: Duration,
    max_body: usize,
}

impl Client {
    pub(crate) fn new(
        endpoint: Uri,
        authorization: HeaderValue,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Self, IntrospectionConfigError> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| IntrospectionConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // Plain http is only reachable for loopback endpoints (checked by
        // `url_allowed` when the layer is built).
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Self {
            http,
            endpoint,
            authorization,
            timeout,
            max_body,
        })
    }

    pub(crate) const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks the endpoint about `token`.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Answer, ProviderError> {
        use http_body_util::BodyExt as _;
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let request = http::Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.authorization.clone())
            .body(http_body_util::Full::new(Bytes::from(body)))
            .map_err(|_| ProviderError::Unreachable)?;
        let work = async {
            let response = self.http.request(request).await.map_err(|_e| {
                portcullis_core::event!(warn, error = %_e, "introspection endpoint unreachable");
                ProviderError::Unreachable
            })?;
            let status = response.status();
            if status != StatusCode::OK {
                portcullis_core::event!(
                    warn,
                    status = status.as_u16(),
                    "introspection endpoint refused the call (a 401 or invalid_client: check the client credentials)"
                );
                return Err(ProviderError::Status(status));
            }
            let json = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(ProviderError::BadAnswer);
            }
            let body = http_body_util::Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ProviderError::TooLarge
                    } else {
                        ProviderError::Unreachable
                    }
                })?
                .to_bytes();
            parse_answer(&body).map_err(|()| ProviderError::BadAnswer)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ProviderError::Timeout)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let active = |s: &str| match parse_answer(s.as_bytes()) {
            Ok(Answer::Active(a)) => Some(a),
            _ => None,
        };
        // Inactive, whatever else is there.
        assert_eq!(parse_answer(br#"{"active":false}"#), Ok(Answer::Inactive));
        assert_eq!(
            parse_answer(br#"{"active":false,"exp":"soon"}"#),
            Ok(Answer::Inactive)
        );
        // Active, with the registered claims typed.
        let a = active(
            r#"{"active":true,"sub":"alice","scope":"read write","client_id":"app","exp":100,"iat":50,"nbf":50,"aud":["a","b"],"iss":"https://as","jti":"j1","token_type":"Bearer","username":"x"}"#,
        )
        .unwrap();
        assert_eq!(a.registered.sub.as_deref(), Some("alice"));
        assert!(a.registered.has_scope("write"));
        assert_eq!(a.registered.exp, Some(100));
        assert!(a.registered.aud.as_ref().unwrap().contains("b"));
        assert_eq!(a.registered.jti.as_deref(), Some("j1"));
        assert_eq!(a.token_type.as_deref(), Some("Bearer"));
        assert_eq!(a.cnf_jkt, None);
        assert!(!a.confirmed);
        let a = active(r#"{"active":true,"cnf":{"x5t#S256":"abc"}}"#).unwrap();
        assert!(a.confirmed && a.cnf_jkt.is_none());
        let a = active(r#"{"active":true,"cnf":{"jkt":"abc"},"token_type":"DPoP"}"#).unwrap();
        assert_eq!(a.cnf_jkt.as_deref(), Some("abc"));
        // Refused: not a boolean `active`, missing `active`, duplicates,
        // mistyped claims, not an object, not UTF-8, trailing data.
        for bad in [
            r#"{"active":"true"}"#,
            r#"{"active":1}"#,
            r#"{"active":null}"#,
            r#"{}"#,
            r#"{"sub":"a"}"#,
            r#"{"active":true,"active":false}"#,
            r#"{"active":false,"active":true}"#,
            r#"{"active":true,"sub":"a","sub":"b"}"#,
            r#"{"active":true,"cnf":{"jkt":"a","jkt":"b"}}"#,
            r#"{"active":true,"exp":"100"}"#,
            r#"{"active":true,"aud":5}"#,
            r#"{"active":true,"cnf":"x"}"#,
            r#"{"active":true,"cnf":{"jkt":1}}"#,
            r#"{"active":true,"token_type":1}"#,
            r#"[{"active":true}]"#,
            r#"{"active":true} {}"#,
            "",
            "<html>",
        ] {
            assert!(parse_answer(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_answer(b"{\"active\":true,\"sub\":\"\xff\"}").is_err());
    }

    #[test]
    fn form_encoding_and_basic_authorization() {
        assert_eq!(form_encode("aZ09-._*"), "aZ09-._*");
        assert_eq!(form_encode("a b+c/d=é"), "a+b%2Bc%2Fd%3D%C3%A9");
        let v = basic_authorization("rs", "s:e cret").unwrap();
        assert!(v.is_sensitive());
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, b"rs:s%3Ae+cret");
        assert!(basic_authorization("", "x").is_err());
        assert!(basic_authorization("rs", "").is_err());
        assert!(basic_authorization("rs", "a\nb").is_err());
    }
}
