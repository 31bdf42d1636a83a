//! Shared by the DPoP tests: client keys that sign proofs (any header, any
//! claims), and a resource server behind a `JwtLayer` with DPoP on a real
//! socket, on a manual clock.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::core::{Clock, ManualClock};
use portcullis::jwt::dpop::{DpopPolicy, DpopProof, DpopVerifier, DpopVerifierBuilder};
use portcullis::jwt::{
    Algorithm, Claims, JwtIssuer, JwtLayer, RequireClaimsLayer, RequireDpopLayer,
    RequireFreshAuthLayer, SigningKey, Validation,
};
use portcullis_tests::jwt_app::{RSA_PRIVATE, issuer_builder, layer_builder};
use portcullis_tests::{TestServer, client, secret_scan};
use serde_json::{Value, json};
use sha2::Digest as _;

/// How clients reach the resource server: the origin every proof's `htu`
/// names. The test server listens on 127.0.0.1 with another port; the
/// verifier never looks at `Host`.
pub const ORIGIN: &str = "https://api.example.test";
pub const METADATA: &str = "https://api.example.test/.well-known/oauth-protected-resource";

/// `htu` for `path` at [`ORIGIN`].
pub fn htu(path: &str) -> String {
    format!("{ORIGIN}{path}")
}

/// base64url(SHA-256(token)).
pub fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client's DPoP key.
pub struct ClientKey {
    pub alg: Algorithm,
    pub encoding: jsonwebtoken::EncodingKey,
    /// The public JWK, required members only.
    pub jwk: Value,
    pub jkt: String,
    /// The private JWK members (`d`, ...), for the attack that leaks them.
    pub private_jwk: Value,
}

fn jalg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        other => panic!("no proofs with {other}"),
    }
}

impl ClientKey {
    /// A fresh key (ES256, ES384, EdDSA) or the fixture RSA key (RS256,
    /// PS256).
    pub fn new(alg: Algorithm) -> Self {
        portcullis::jwt::ensure_crypto_provider();
        let pem = match alg {
            Algorithm::RS256 | Algorithm::PS256 => RSA_PRIVATE.to_vec(),
            _ => portcullis::jwt::generate_pkcs8_pem(alg).unwrap(),
        };
        secret_scan::register_pem(&pem);
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap()
            }
            Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap(),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let signing = SigningKey::from_pkcs8_pem("client", alg, &pem).unwrap();
        let full = serde_json::to_value(signing.verifying_key().public_jwk().unwrap()).unwrap();
        let mut jwk = serde_json::Map::new();
        for m in ["kty", "crv", "x", "y", "n", "e"] {
            if let Some(v) = full.get(m) {
                jwk.insert(m.to_owned(), v.clone());
            }
        }
        let jwk = Value::Object(jwk);
        let parsed: portcullis::jwt::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let jkt = portcullis::jwt::dpop::thumbprint(&parsed).unwrap();
        // The private members, read back from the PKCS#8 document for EC
        // keys (the attack that puts `d` in the proof's header).
        let private_jwk = match alg {
            Algorithm::ES256 => {
                let der = pem_der(&pem);
                // PKCS#8 of a P-256 key: the 32-byte private scalar follows
                // the OCTET STRING header 04 20 inside the ECPrivateKey.
                let at = der.windows(2).position(|w| w == [0x04, 0x20]).unwrap() + 2;
                let mut with_d = jwk.clone();
                with_d["d"] = json!(b64(&der[at..at + 32]));
                with_d
            }
            _ => jwk.clone(),
        };
        Self {
            alg,
            encoding,
            jwk,
            jkt,
            private_jwk,
        }
    }

    /// The proof header: `typ: dpop+jwt`, this key's `alg` and `jwk`.
    pub fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg.as_str(), "jwk": self.jwk})
    }

    /// Proof claims with a fresh `jti`.
    pub fn claims(&self, htm: &str, htu: &str, iat: i64, token: Option<&str>) -> Value {
        let mut jti = [0u8; 16];
        aws_lc_rs_fill(&mut jti);
        let mut c = json!({"jti": b64(&jti), "htm": htm, "htu": htu, "iat": iat});
        if let Some(t) = token {
            c["ath"] = json!(ath(t));
        }
        c
    }

    /// Signs any header and claims with this key (the header's `alg` is
    /// not consulted).
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, jalg(self.alg)).unwrap();
        let proof = format!("{input}.{sig}");
        secret_scan::register(&proof);
        proof
    }

    /// A valid proof for `htm` on `path` at `iat`, naming `token`.
    pub fn proof(&self, htm: &str, path: &str, iat: i64, token: Option<&str>) -> String {
        self.sign_with(&self.header(), &self.claims(htm, &htu(path), iat, token))
    }
}

fn aws_lc_rs_fill(buf: &mut [u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    // Unique per process run: a counter and the time.
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x = [0u8; 16];
    x[..8].copy_from_slice(&n.to_be_bytes());
    x[8..].copy_from_slice(&(t as u64).to_be_bytes());
    buf.copy_from_slice(&x[..buf.len()]);
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// The resource server's routes: `/me` (the subject, and the proof's key
/// when there is one), `POST /me`, `/admin` (admin role), `/pay`
/// (DPoP required by the route guard), `/sudo` (a login of the last 10
/// minutes).
pub fn routes(layer: JwtLayer, clock: &Arc<ManualClock>) -> Router {
    let me = |c: Claims, p: Option<axum::Extension<DpopProof>>| async move {
        let jkt = p.map(|p| p.jkt().to_owned()).unwrap_or_default();
        format!("{} {jkt}", c.subject().unwrap_or_default())
    };
    Router::new()
        .route("/admin", get(|| async { "admin" }))
        .route_layer(RequireClaimsLayer::role("admin"))
        .merge(
            Router::new()
                .route("/pay", post(|| async { "paid" }))
                .route_layer(RequireDpopLayer::new()),
        )
        .merge(
            Router::new()
                .route("/sudo", post(|| async { "sudo" }))
                .route_layer(
                    RequireFreshAuthLayer::within(Duration::from_secs(600)).clock(clock.clone()),
                ),
        )
        .route("/me", get(me).post(me))
        .layer(layer)
}

/// A resource server on a real socket.
pub struct Rs {
    pub server: TestServer,
    pub clock: Arc<ManualClock>,
    pub issuer: JwtIssuer,
    pub http: reqwest::Client,
}

impl Rs {
    /// Starts one whose layer has `policy`, a verifier made by `verifier`
    /// (from a builder on [`ORIGIN`] and the clock), and, when `metadata`,
    /// the resource metadata URL [`METADATA`].
    pub async fn start(
        policy: DpopPolicy,
        verifier: impl FnOnce(DpopVerifierBuilder) -> DpopVerifierBuilder,
        metadata: bool,
    ) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        Self::start_on(clock, policy, verifier, metadata).await
    }

    /// [`start`](Self::start) on `clock`.
    pub async fn start_on(
        clock: Arc<ManualClock>,
        policy: DpopPolicy,
        verifier: impl FnOnce(DpopVerifierBuilder) -> DpopVerifierBuilder,
        metadata: bool,
    ) -> Self {
        let issuer = issuer_builder(
            SigningKey::generate("as", Algorithm::ES256).unwrap(),
            &clock,
        )
        .build()
        .unwrap();
        let dpop = verifier(DpopVerifier::builder(ORIGIN).clock(clock.clone()))
            .build()
            .unwrap();
        let mut layer =
            layer_builder(issuer.keys(), &clock, Validation::default()).dpop(dpop, policy);
        if metadata {
            layer = layer.resource_metadata(METADATA);
        }
        let server = TestServer::start(routes(layer.build().unwrap(), &clock)).await;
        Self {
            server,
            clock,
            issuer,
            http: client(),
        }
    }

    /// Now on the server's clock, in seconds.
    pub fn now(&self) -> i64 {
        i64::try_from(self.clock.now().secs()).unwrap()
    }

    /// A token for `sub` bound to `key`.
    pub fn bound_token(&self, sub: &str, key: &ClientKey) -> String {
        let t = self
            .issuer
            .token(sub)
            .dpop_jkt(key.jkt.clone())
            .mint()
            .unwrap()
            .token;
        secret_scan::register(&t);
        t
    }

    /// An unbound (bearer) token for `sub`.
    pub fn bearer_token(&self, sub: &str) -> String {
        let t = self.issuer.token(sub).mint().unwrap().token;
        secret_scan::register(&t);
        t
    }

    /// `method path` with `Authorization: <scheme> <token>` and the given
    /// `DPoP` headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
        proofs: &[&str],
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.server.url(path));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        for p in proofs {
            req = req.header("dpop", *p);
        }
        req.send().await.unwrap()
    }

    /// `method path` with `Authorization: DPoP <token>` and one proof.
    pub async fn dpop(
        &self,
        method: &str,
        path: &str,
        token: &str,
        proof: &str,
    ) -> reqwest::Response {
        self.send(method, path, Some(format!("DPoP {token}")), &[proof])
            .await
    }

    /// `method path` with `Authorization: Bearer <token>`.
    pub async fn bearer(&self, method: &str, path: &str, token: &str) -> reqwest::Response {
        self.send(method, path, Some(format!("Bearer {token}")), &[])
            .await
    }
}

/// Every `WWW-Authenticate` value of a response.
pub fn challenges(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}
