//! panva's `oidc-provider` (a certified OpenID provider, run by the
//! machine's Node.js on loopback) as the identity provider of the interop
//! tests, and a DPoP client key that makes proofs in Rust.
//!
//! - [`OidcProvider::start`]: one provider (`tests/oidc/op.mjs`) on a free
//!   port, issuer `http://127.0.0.1:<port>`, with a signing key of its own
//!   (two instances are two issuers); ready once it printed its `ready`
//!   line; killed when dropped, and it exits by itself when the test
//!   process ends (its stdin closes). [`OidcProvider::shared`] starts one
//!   per test process.
//! - Tokens by `client_credentials` for client [`APP_CLIENT`]:
//!   [`OidcProvider::jwt_token`] (an RFC 9068 ES256 access token for
//!   [`API`]), [`OidcProvider::opaque_token`] (for [`OPAQUE_API`], to be
//!   introspected with [`RS_CLIENT`]), both DPoP-bound when given a
//!   [`DpopKey`].
//! - [`DpopKey`]: an ES256 key pair made here, its RFC 7638 thumbprint,
//!   and proofs (RFC 9449) signed in Rust; [`OidcProvider::jose_dpop`]: a
//!   bound token and a proof made by panva's `jose` instead.
//!
//! The provider is installed from the lockfile in `tests/oidc/` (`npm ci
//! --prefix tests/oidc`, done by `scripts/test` when missing); Node.js
//! 20.18 or later is needed. A missing Node.js or package fails the test
//! with those instructions; nothing is skipped.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use portcullis::jwt::Algorithm;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::redis_harness::free_port;
use crate::{client, secret_scan};

/// The resource indicator (RFC 8707) of the JWT-token API: the `aud` of
/// its access tokens.
pub const API: &str = "https://api.portcullis.test/api";

/// The resource whose access tokens are opaque (for introspection).
pub const OPAQUE_API: &str = "https://api.portcullis.test/api/opaque";

/// The client that gets tokens (`client_credentials`,
/// `client_secret_basic`): id and secret. Tokens name it in `sub` and
/// `client_id`.
pub const APP_CLIENT: (&str, &str) = ("app", "app-secret-app-secret-app-secret-00");

/// The resource server's client, for introspection (RFC 7662): id and
/// secret.
pub const RS_CLIENT: (&str, &str) = ("rs", "rs-secret-rs-secret-rs-secret-000000");

const INSTALL: &str = "the OIDC interop tests run panva's oidc-provider with Node.js >= 20.18: \
                       install Node.js (22 LTS: NodeSource or nodejs.org; Debian 12's nodejs 18 is \
                       too old), then `npm ci --prefix tests/oidc`, or run scripts/test, which \
                       installs the package";

/// The directory holding `op.mjs` and `node_modules/oidc-provider`:
/// `$PORTCULLIS_OIDC_DIR` (set by `scripts/test`), else `tests/oidc`.
#[must_use]
pub fn provider_dir() -> PathBuf {
    std::env::var_os("PORTCULLIS_OIDC_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc"),
        PathBuf::from,
    )
}

/// Panics with [`INSTALL`] unless Node.js and the package are there.
fn require_provider(dir: &std::path::Path) {
    let node = Command::new("node")
        .args(["-p", "process.versions.node"])
        .output();
    let version = match node {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => panic!("`node` not found; {INSTALL}"),
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        major > 20 || (major == 20 && minor >= 18),
        "Node.js {version} is too old; {INSTALL}"
    );
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "oidc-provider is not installed in {}; {INSTALL}",
        dir.display()
    );
}

/// How to start an [`OidcProvider`].
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// The token endpoint demands DPoP nonces (`use_dpop_nonce`).
    pub dpop_nonce: bool,
}

/// A running `oidc-provider`; killed when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    // Held open: the provider exits when it closes.
    _stdin: ChildStdin,
    issuer: String,
}

/// A token endpoint's answer.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a bound token.
    pub token_type: String,
    /// Seconds.
    pub expires_in: u64,
}

impl OidcProvider {
    /// Starts a provider on a free loopback port and waits (20 s at most)
    /// for its `ready` line.
    ///
    /// # Panics
    ///
    /// When Node.js or the package is missing (with instructions), or the
    /// provider does not start.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&ProviderOptions::default())
    }

    /// Starts a provider as `options` say.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(options: &ProviderOptions) -> Self {
        let dir = provider_dir();
        require_provider(&dir);
        // The clients' secrets: never in an event or a span.
        secret_scan::register(APP_CLIENT.1);
        secret_scan::register(RS_CLIENT.1);
        let mut last = String::new();
        // A free port may be taken between the check and the listen: try
        // another.
        for _ in 0..5 {
            match Self::spawn(&dir, free_port(), options) {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("oidc-provider did not start: {last}");
    }

    /// A provider shared by every test of this process, started on first
    /// use (nextest runs each test in a process of its own: then it is
    /// that test's provider).
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<OidcProvider> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    fn spawn(dir: &std::path::Path, port: u16, options: &ProviderOptions) -> Result<Self, String> {
        let mut cmd = Command::new("node");
        cmd.current_dir(dir)
            .arg("op.mjs")
            .arg(port.to_string())
            .arg(API)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if options.dpop_nonce {
            cmd.env("OP_DPOP_NONCE", "1");
        }
        let mut child = cmd.spawn().map_err(|e| format!("node: {e}; {INSTALL}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(Ok(issuer.trim().to_owned()));
                }
            }
            let _ = tx.send(Err("the provider exited".to_owned()));
        });
        // Its warnings (Node 20 is below upstream's recommendation; the
        // in-memory adapter) are expected; errors are kept for the panic.
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains("WARNING") && !line.contains("NOTICE") {
                    errors.push(line);
                }
            }
            let _ = err_tx.send(Err(errors.join("\n")));
        });
        let mut provider = Self {
            child,
            _stdin: stdin,
            issuer: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(issuer)) => {
                provider.issuer = issuer;
                Ok(provider)
            }
            Ok(Err(_)) => {
                // Exited: wait for its stderr to say why.
                let _ = provider.child.wait();
                let why = rx
                    .recv_timeout(Duration::from_secs(2))
                    .map_or_else(|_| String::new(), |r| r.unwrap_or_else(|e| e));
                Err(format!("exited on port {port}: {why}"))
            }
            Err(_) => Err(format!("no `ready` line after 20 s on port {port}")),
        }
    }

    /// The issuer, `http://127.0.0.1:<port>` (no trailing slash), as in its
    /// tokens' `iss` and its discovery document.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{issuer}{path}`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The JWKS URL (from its discovery document: `{issuer}/jwks`).
    #[must_use]
    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    /// The token endpoint.
    #[must_use]
    pub fn token_endpoint(&self) -> String {
        self.url("/token")
    }

    /// The introspection endpoint (RFC 7662).
    #[must_use]
    pub fn introspection_endpoint(&self) -> String {
        self.url("/token/introspection")
    }

    /// The revocation endpoint (RFC 7009).
    #[must_use]
    pub fn revocation_endpoint(&self) -> String {
        self.url("/token/revocation")
    }

    /// Its discovery document (`/.well-known/openid-configuration`).
    ///
    /// # Panics
    ///
    /// When the provider does not answer with JSON.
    pub async fn discovery(&self) -> Value {
        client()
            .get(self.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A `client_credentials` token for `resource` (scope `read`), bound
    /// to `dpop` when given (a proof at the token endpoint; a nonce asked
    /// for is sent in a second proof).
    ///
    /// # Panics
    ///
    /// When the provider does not issue one.
    pub async fn token(&self, resource: &str, dpop: Option<&DpopKey>) -> TokenResponse {
        let mut nonce: Option<String> = None;
        for _ in 0..2 {
            let mut req = client()
                .post(self.token_endpoint())
                .basic_auth(APP_CLIENT.0, Some(APP_CLIENT.1))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "read"),
                    ("resource", resource),
                ]);
            if let Some(key) = dpop {
                let mut claims = key.claims("POST", &self.token_endpoint(), None);
                if let Some(n) = &nonce {
                    claims["nonce"] = json!(n);
                }
                req = req.header("DPoP", key.sign(&claims));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let next_nonce = resp
                .headers()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = resp.json().await.unwrap();
            if status == reqwest::StatusCode::BAD_REQUEST
                && body["error"] == "use_dpop_nonce"
                && nonce.is_none()
            {
                nonce = next_nonce;
                continue;
            }
            assert_eq!(status, reqwest::StatusCode::OK, "token endpoint: {body}");
            let token = TokenResponse {
                access_token: body["access_token"].as_str().unwrap().to_owned(),
                token_type: body["token_type"].as_str().unwrap().to_owned(),
                expires_in: body["expires_in"].as_u64().unwrap_or(0),
            };
            secret_scan::register(&token.access_token);
            return token;
        }
        panic!("the token endpoint asked for a nonce twice");
    }

    /// An RFC 9068 JWT access token for [`API`] (ES256, `typ: at+jwt`,
    /// `aud` = [`API`], `sub` = `app`), bound to `dpop` when given.
    pub async fn jwt_token(&self, dpop: Option<&DpopKey>) -> TokenResponse {
        self.token(API, dpop).await
    }

    /// An opaque access token for [`OPAQUE_API`], bound to `dpop` when
    /// given.
    pub async fn opaque_token(&self, dpop: Option<&DpopKey>) -> TokenResponse {
        self.token(OPAQUE_API, dpop).await
    }

    /// Revokes `token` at the provider (RFC 7009, as its client).
    ///
    /// # Panics
    ///
    /// Unless the provider answers 200.
    pub async fn revoke(&self, token: &str) {
        let resp = client()
            .post(self.revocation_endpoint())
            .basic_auth(APP_CLIENT.0, Some(APP_CLIENT.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "revocation");
    }

    /// The provider's own introspection answer for `token` (as
    /// [`RS_CLIENT`]), to compare a layer's decision with.
    ///
    /// # Panics
    ///
    /// When the provider does not answer with JSON.
    pub async fn introspect(&self, token: &str) -> Value {
        client()
            .post(self.introspection_endpoint())
            .basic_auth(RS_CLIENT.0, Some(RS_CLIENT.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A DPoP-bound token and a resource proof made by panva's `jose` (an
/// implementation independent of portcullis), from
/// [`OidcProvider::jose_dpop`].
#[derive(Debug, Clone)]
pub struct JoseDpop {
    /// The bound access token.
    pub access_token: String,
    /// `DPoP`.
    pub token_type: String,
    /// The client key's RFC 7638 thumbprint, by `jose`.
    pub jkt: String,
    /// A proof for the requested method and URL, with `ath` of the token.
    pub proof: String,
}

impl OidcProvider {
    /// Runs `tests/oidc/client.mjs`: `jose` makes a key pair for `alg`
    /// (`ES256`, or `Ed25519` under its RFC 9864 name), gets a DPoP-bound
    /// token for [`API`] with a proof of its own, and signs a proof for
    /// `htm` `htu`.
    ///
    /// # Panics
    ///
    /// When the script fails.
    #[must_use]
    pub fn jose_dpop(&self, alg: &str, htm: &str, htu: &str) -> JoseDpop {
        let out = Command::new("node")
            .current_dir(provider_dir())
            .args(["client.mjs", self.issuer(), API, alg, htm, htu])
            .output()
            .unwrap_or_else(|e| panic!("node: {e}; {INSTALL}"));
        assert!(
            out.status.success(),
            "client.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let field = |name: &str| v[name].as_str().unwrap().to_owned();
        let made = JoseDpop {
            access_token: field("access_token"),
            token_type: field("token_type"),
            jkt: field("jkt"),
            proof: field("proof"),
        };
        secret_scan::register(&made.access_token);
        secret_scan::register(&made.proof);
        made
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DPoP client key: ES256, made here; signs proofs (RFC 9449) in Rust.
pub struct DpopKey {
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
    jkt: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `jti` never used before in this process, nor (with the pid and the
/// time) by another.
fn fresh_jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!(
        "{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    URL_SAFE_NO_PAD.encode(&Sha256::digest(seed.as_bytes())[..18])
}

/// `ath` of `access_token`: base64url(SHA-256 of its ASCII).
#[must_use]
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

impl DpopKey {
    /// A fresh ES256 key pair.
    ///
    /// # Panics
    ///
    /// When the key cannot be made (the random source failed).
    #[must_use]
    pub fn generate() -> Self {
        portcullis::jwt::ensure_crypto_provider();
        let pem = portcullis::jwt::generate_pkcs8_pem(Algorithm::ES256).unwrap();
        secret_scan::register_pem(&pem);
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
        let public = Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::ES256).unwrap();
        let jkt = public.thumbprint(ThumbprintHash::SHA256).unwrap();
        // Only the public members, as a client puts them in a proof.
        let full = serde_json::to_value(&public).unwrap();
        let jwk = json!({"kty": "EC", "crv": full["crv"], "x": full["x"], "y": full["y"]});
        Self { encoding, jwk, jkt }
    }

    /// Its RFC 7638 SHA-256 thumbprint (base64url): a bound token's
    /// `cnf.jkt`.
    #[must_use]
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// Its public JWK, as proofs carry it.
    #[must_use]
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// A proof's claims: a fresh `jti`, `htm`, `htu`, `iat` now, and `ath`
    /// of `access_token` when given. Change them before [`sign`](Self::sign)
    /// for the attack cases.
    #[must_use]
    pub fn claims(&self, htm: &str, htu: &str, access_token: Option<&str>) -> Value {
        let mut claims = json!({"jti": fresh_jti(), "htm": htm, "htu": htu, "iat": now_secs()});
        if let Some(token) = access_token {
            claims["ath"] = json!(ath(token));
        }
        claims
    }

    /// The proof header: `typ: dpop+jwt`, `alg: ES256`, this key's `jwk`.
    #[must_use]
    pub fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    /// Signs `claims` under [`header`](Self::header).
    #[must_use]
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }

    /// Signs `claims` under any `header` (ES256 with this key, whatever the
    /// header says).
    ///
    /// # Panics
    ///
    /// Never for JSON values.
    #[must_use]
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &self.encoding,
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap();
        let proof = format!("{input}.{sig}");
        secret_scan::register(&proof);
        proof
    }

    /// A proof for `htm` `htu`, with `ath` of `access_token` when given.
    #[must_use]
    pub fn proof(&self, htm: &str, htu: &str, access_token: Option<&str>) -> String {
        self.sign(&self.claims(htm, htu, access_token))
    }
}

/// The claims of a JWT, read without any check (to look at what the
/// provider issued).
///
/// # Panics
///
/// When `token` is not a JWT.
#[must_use]
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
    };
    let header = next();
    let payload = next();
    (header, payload)
}
