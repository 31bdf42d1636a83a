//! Helpers for JWT tests: an app whose handlers count their runs (and
//! [`ServedApp`], that app on a real server), issuers and layers on a
//! manual clock, token forging with arbitrary headers and payloads, a JWKS
//! server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use portcullis::core::ManualClock;
use portcullis::jwt::{
    Algorithm, Claims, JwtIssuer, JwtIssuerBuilder, JwtLayer, JwtLayerBuilder, KeySource,
    RequireClaimsLayer, SigningKey, Validation,
};
use serde_json::{Value, json};

use crate::{TestServer, client};

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "api";
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

pub const RSA_PRIVATE: &[u8] = include_bytes!("../fixtures/rsa2048-private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../fixtures/rsa2048-public.pem");
pub const P256_PRIVATE: &[u8] = include_bytes!("../fixtures/p256-private.pem");
pub const P256_PUBLIC: &[u8] = include_bytes!("../fixtures/p256-public.pem");

/// Registers this module's fixed keys with the secret scan (once; a no-op
/// when not scanning): the HMAC secret raw and encoded, the private keys'
/// PEM bodies.
pub fn register_keys() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::secret_scan::register_key(HS_SECRET);
        crate::secret_scan::register_pem(RSA_PRIVATE);
        crate::secret_scan::register_pem(P256_PRIVATE);
    });
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(payload)` as sent, with the given raw JSON texts.
pub fn signing_input(header: &str, payload: &str) -> String {
    format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()))
}

pub fn hs256(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Signs raw JSON texts with an asymmetric private key (PEM) or an HMAC
/// secret, through jsonwebtoken's primitive (no claim handling at all).
pub fn forge(header: &str, payload: &str, alg: Algorithm, key: &[u8]) -> String {
    register_keys();
    let input = signing_input(header, payload);
    let enc = match alg {
        Algorithm::RS256 | Algorithm::PS256 => {
            jsonwebtoken::EncodingKey::from_rsa_pem(key).unwrap()
        }
        Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(key).unwrap(),
        Algorithm::HS256 => return format!("{input}.{}", b64(&hs256(key, input.as_bytes()))),
        other => panic!("forge does not do {other}"),
    };
    let jalg = match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        _ => jsonwebtoken::Algorithm::ES256,
    };
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &enc, jalg).unwrap();
    format!("{input}.{sig}")
}

/// A standard valid payload for `sub`, around `now` (seconds).
pub fn payload(sub: &str, now: i64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "exp": now + 600, "jti": format!("jti-{sub}-{now}")})
}

pub fn header(alg: &str, kid: Option<&str>) -> Value {
    let mut h = json!({"alg": alg, "typ": "at+jwt"});
    if let Some(k) = kid {
        h["kid"] = json!(k);
    }
    h
}

/// An app behind `layer`: `/me` answers the subject, `/admin` needs the
/// admin role. `hits` counts handler runs.
pub fn app(layer: JwtLayer, hits: Arc<AtomicUsize>) -> Router {
    register_keys();
    let h1 = hits.clone();
    let h2 = hits;
    Router::new()
        .route(
            "/admin",
            get(move |c: Claims| {
                let hits = h2.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    format!("admin {}", c.subject().unwrap_or_default())
                }
            }),
        )
        .route_layer(RequireClaimsLayer::role("admin"))
        .route(
            "/me",
            get(move |c: Option<Claims>| {
                let hits = h1.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    match c {
                        Some(c) => (StatusCode::OK, c.subject().unwrap_or_default().to_owned()),
                        None => (StatusCode::OK, "anonymous".to_owned()),
                    }
                }
            }),
        )
        .layer(layer)
}

/// An issuer signing with `key` for [`ISS`] and [`AUD`] on `clock`, to be
/// finished with `.build()`.
pub fn issuer_builder(key: SigningKey, clock: &Arc<ManualClock>) -> JwtIssuerBuilder {
    register_keys();
    JwtIssuer::builder(key)
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
}

/// A layer over `keys` with `validation`, trusting [`ISS`] and [`AUD`], on
/// `clock`, to be finished with `.build()`. (`validation` comes first: set
/// later, it would replace the issuer and audience.)
pub fn layer_builder(
    keys: impl KeySource,
    clock: &Arc<ManualClock>,
    validation: Validation,
) -> JwtLayerBuilder {
    register_keys();
    JwtLayer::builder(keys)
        .validation(validation)
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
}

/// [`app`] behind a layer on a real server, with its handler-run counter
/// and a client.
pub struct ServedApp {
    pub server: TestServer,
    pub hits: Arc<AtomicUsize>,
    pub http: reqwest::Client,
}

impl ServedApp {
    /// Serves [`app`] behind `layer`.
    pub async fn start(layer: JwtLayer) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        Self {
            server: TestServer::start(app(layer, hits.clone())).await,
            hits,
            http: client(),
        }
    }

    /// `GET path` with `token` as the bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The status of `GET /me` with `token`.
    pub async fn me(&self, token: &str) -> reqwest::StatusCode {
        self.get("/me", token).await.status()
    }

    /// `GET /me` with `token` on a task of its own (to send many at once);
    /// the task answers the status.
    pub fn spawn_me(&self, token: String) -> tokio::task::JoinHandle<reqwest::StatusCode> {
        let (http, url) = (self.http.clone(), self.server.url("/me"));
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        })
    }

    /// The status of `GET /admin` (admin role required) with `token`.
    pub async fn admin(&self, token: &str) -> reqwest::StatusCode {
        self.get("/admin", token).await.status()
    }
}

/// A server whose `GET /me`, behind `layer`, answers the token's subject.
pub async fn serve_subject(layer: JwtLayer) -> TestServer {
    TestServer::start(
        Router::new()
            .route(
                "/me",
                get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
            )
            .layer(layer),
    )
    .await
}

/// The status of `GET /me` on `server` with `token` as the bearer token.
pub async fn me(server: &TestServer, token: &str) -> reqwest::StatusCode {
    client()
        .get(server.url("/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// A JWKS endpoint whose document can be swapped or made to fail, counting
/// its requests.
#[derive(Clone)]
pub struct JwksServer {
    pub doc: Arc<std::sync::Mutex<String>>,
    pub failing: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
    pub max_age: Arc<std::sync::Mutex<Option<u64>>>,
}

impl JwksServer {
    pub fn new(doc: String) -> Self {
        Self {
            doc: Arc::new(std::sync::Mutex::new(doc)),
            failing: Arc::new(AtomicBool::new(false)),
            hits: Arc::new(AtomicUsize::new(0)),
            max_age: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    pub async fn start(&self) -> TestServer {
        let this = self.clone();
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                let this = this.clone();
                async move {
                    this.hits.fetch_add(1, Ordering::SeqCst);
                    if this.failing.load(Ordering::SeqCst) {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [("cache-control", String::new())],
                            String::new(),
                        );
                    }
                    let cc = this
                        .max_age
                        .lock()
                        .unwrap()
                        .map(|s| format!("max-age={s}"))
                        .unwrap_or_default();
                    (
                        StatusCode::OK,
                        [("cache-control", cc)],
                        this.doc.lock().unwrap().clone(),
                    )
                }
            }),
        );
        TestServer::start(app).await
    }
}
