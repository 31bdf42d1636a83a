//! The JWT check of the observability benchmarks: an HS256 token verified
//! by `JwtLayer` with the verified-token cache on (as the `jwt` bench's
//! `layer_cache/HS256`), and the same route without the layer.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use portcullis::events::Events;
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};

const ISS: &str = "https://bench.test";
const AUD: &str = "bench";
const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

async fn me(claims: Claims) -> String {
    claims.subject().unwrap_or_default().to_owned()
}

/// The issuer and a valid token for `alice` (one hour).
pub struct Jwt {
    pub issuer: JwtIssuer,
    pub token: String,
}

impl Jwt {
    /// The HS256 issuer and its token.
    #[must_use]
    pub fn new() -> Self {
        portcullis::jwt::ensure_crypto_provider();
        let key = SigningKey::hmac("k", Algorithm::HS256, HS_SECRET).unwrap();
        let issuer = JwtIssuer::builder(key)
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        let token = issuer
            .token("alice")
            .lifetime(std::time::Duration::from_secs(3600))
            .mint()
            .unwrap()
            .token;
        Self { issuer, token }
    }

    /// `/me` behind `JwtLayer` (cache of 10 000 verified tokens) sending
    /// its events to `events`.
    pub fn layered(&self, events: Events) -> Router {
        let jwt = JwtLayer::builder(self.issuer.keys())
            .issuer(ISS)
            .audience(AUD)
            .cache(10_000)
            .events(events)
            .build()
            .unwrap();
        Router::new().route("/me", get(me)).layer(jwt)
    }

    /// `/me` answering what the layered handler answers, without the layer.
    pub fn baseline() -> Router {
        Router::new().route("/me", get(|| async { String::from("alice") }))
    }

    /// A request for `/me` with the token.
    #[must_use]
    pub fn request(&self) -> Request<Body> {
        Request::get("/me")
            .header("authorization", format!("Bearer {}", self.token))
            .body(Body::empty())
            .unwrap()
    }
}

impl Default for Jwt {
    fn default() -> Self {
        Self::new()
    }
}
