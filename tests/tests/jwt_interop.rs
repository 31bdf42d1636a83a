//! Interop with PyJWT, an independent implementation, both ways, for RS256,
//! PS256, ES256, EdDSA and HS256:
//!
//! - PyJWT mints access tokens (`tests/interop/pyjwt_interop.py mint`); they
//!   go through a real axum server behind `JwtLayer`, configured from the
//!   JWKS (RSA, EC), the PEM (Ed25519) and the secret the script prints.
//! - `JwtIssuer` mints tokens; PyJWT verifies them (`... verify`), fetching
//!   each issuer's JWKS document from a real axum server with `PyJWKClient`
//!   and checking `iss`, `aud`, `exp` and `typ`.
//!
//! Each way also has a negative case per algorithm: a token for another
//! audience must be refused.
//!
//! Needs `python3` with PyJWT and `cryptography` (`python3 -m pip install
//! 'pyjwt[crypto]'`); without them the test fails, saying so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::jwt::jwks::key_set_from_json;
use portcullis::jwt::{
    Algorithm, Claims, JwksResponse, JwtIssuer, JwtLayer, KeySet, SigningKey, VerifyingKey,
};
use portcullis_tests::jwt_app::RSA_PRIVATE;
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

const ISS: &str = "https://issuer.interop.test";
const AUD: &str = "interop-api";
const ALGS: [(&str, Algorithm); 5] = [
    ("RS256", Algorithm::RS256),
    ("PS256", Algorithm::PS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
    ("HS256", Algorithm::HS256),
];

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/pyjwt_interop.py")
}

/// Fails, with the fix, when python3, PyJWT or cryptography is missing.
async fn require_pyjwt() {
    let out = Command::new("python3")
        .args(["-c", "import jwt, cryptography; print(jwt.__version__)"])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "PyJWT with the cryptography backend is required for the interop test: run \
             `python3 -m pip install 'pyjwt[crypto]'` (scripts/test installs it). python3 said: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 is required for the PyJWT interop test: {e}"),
    }
}

/// Runs the script with `args`, feeding `stdin`, and parses its JSON output.
async fn run_script(args: &[&str], stdin: Option<Value>) -> Value {
    let mut child = Command::new("python3")
        .arg(script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3");
    let mut input = child.stdin.take().unwrap();
    if let Some(v) = stdin {
        input
            .write_all(&serde_json::to_vec(&v).unwrap())
            .await
            .unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the PyJWT script timed out")
        .unwrap();
    assert!(
        out.status.success(),
        "pyjwt_interop.py {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pyjwt_interop.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn app(layer: JwtLayer) -> Router {
    Router::new()
        .route(
            "/me",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .layer(layer)
}

#[tokio::test]
async fn pyjwt_tokens_verify_through_jwt_layer() {
    require_pyjwt().await;
    let minted = run_script(&["mint", ISS, AUD], None).await;

    // Keys exactly as the script published them: a JWKS for RSA and EC, a
    // PEM for Ed25519, a shared secret for HMAC.
    let jwks = serde_json::to_vec(&minted["jwks"]).unwrap();
    let from_jwks = key_set_from_json(&jwks, None).expect("PyJWT's JWKS");
    assert_eq!(
        from_jwks.len(),
        3,
        "RS256, PS256 and ES256 keys from the JWKS"
    );
    let mut keys: Vec<VerifyingKey> = from_jwks.iter().map(|k| (**k).clone()).collect();
    let ed_kid = minted["eddsa_kid"].as_str().unwrap();
    let ed_pem = minted["eddsa_pem"].as_str().unwrap();
    keys.push(VerifyingKey::from_pem(Some(ed_kid), Algorithm::EdDSA, ed_pem.as_bytes()).unwrap());
    let secret = URL_SAFE_NO_PAD
        .decode(minted["hmac_secret"].as_str().unwrap())
        .unwrap();
    let hs_kid = minted["hmac_kid"].as_str().unwrap();
    keys.push(VerifyingKey::hmac(Some(hs_kid), Algorithm::HS256, &secret).unwrap());
    let keys = KeySet::new(keys).unwrap();
    for k in keys.iter() {
        let expected = ALGS
            .iter()
            .find(|(_, a)| *a == k.alg())
            .map(|(n, _)| format!("py-{}", n.to_lowercase()));
        assert_eq!(
            k.kid().map(str::to_owned),
            expected,
            "each key pinned to its algorithm"
        );
    }

    let layer = JwtLayer::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let server = TestServer::start(app(layer)).await;
    let http = client();
    let mut results = BTreeMap::new();
    for (name, _) in ALGS {
        let tokens = &minted["tokens"][name];
        let get = |t: &str| http.get(server.url("/me")).bearer_auth(t).send();
        let ok = get(tokens["ok"].as_str().unwrap()).await.unwrap();
        let ok_status = ok.status();
        let body = ok.text().await.unwrap();
        assert_eq!(
            ok_status,
            StatusCode::OK,
            "PyJWT {name} token refused: {body}"
        );
        assert_eq!(body, format!("py-user-{}", name.to_lowercase()));
        let wrong = get(tokens["wrong_aud"].as_str().unwrap()).await.unwrap();
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "PyJWT {name} token for another audience"
        );
        let challenge = wrong.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        results.insert(name, (ok_status.as_u16(), wrong.status().as_u16()));
    }
    eprintln!(
        "PyJWT {} -> JwtLayer, (valid, wrong audience) per algorithm: {results:?}",
        minted["pyjwt"]
    );
    assert_eq!(results.len(), 5);
}

fn signing_key(name: &str, alg: Algorithm, secret: &[u8]) -> SigningKey {
    let kid = format!("rs-{}", name.to_lowercase());
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => {
            SigningKey::from_pkcs8_pem(&kid, alg, RSA_PRIVATE).unwrap()
        }
        Algorithm::HS256 => SigningKey::hmac(&kid, alg, secret).unwrap(),
        _ => SigningKey::generate(&kid, alg).unwrap(),
    }
}

#[tokio::test]
async fn jwt_issuer_tokens_verify_in_pyjwt() {
    require_pyjwt().await;
    let secret = [0x5a_u8; 32];
    let mut issuers = BTreeMap::new();
    let mut routes = Router::new();
    for (name, alg) in ALGS {
        let key = signing_key(name, alg, &secret);
        let issuer = JwtIssuer::builder(key.clone())
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        // The same key, minting for another service.
        let elsewhere = JwtIssuer::builder(key)
            .issuer(ISS)
            .audience("another-api")
            .build()
            .unwrap();
        let served = issuer.clone();
        routes = routes.route(
            &format!("/{name}/jwks.json"),
            get(move || {
                let served = served.clone();
                async move { JwksResponse::from(&served) }
            }),
        );
        issuers.insert(name, (issuer, elsewhere));
    }
    let jwks_server = TestServer::start(routes).await;

    let mut cases = Vec::new();
    for (name, alg) in ALGS {
        let (issuer, elsewhere) = &issuers[name];
        let sub = format!("rust-user-{}", name.to_lowercase());
        for (case, minter) in [("ok", issuer), ("wrong_aud", elsewhere)] {
            let token = minter.token(&sub).mint().unwrap().token;
            let mut c = json!({
                "name": format!("{name}/{case}"),
                "alg": name,
                "token": token,
                "iss": ISS,
                "aud": AUD,
            });
            if alg == Algorithm::HS256 {
                // HMAC keys are never published: PyJWT gets the secret.
                assert_eq!(issuer.jwks().keys.len(), 0);
                c["secret"] = json!(URL_SAFE_NO_PAD.encode(secret));
            } else {
                assert_eq!(issuer.jwks().keys.len(), 1);
                c["jwks_url"] = json!(jwks_server.url(&format!("/{name}/jwks.json")));
            }
            cases.push(c);
        }
    }
    let out = run_script(&["verify"], Some(json!({ "cases": cases }))).await;
    let results: BTreeMap<String, Value> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    assert_eq!(results.len(), 10, "two cases per algorithm");
    for (name, _) in ALGS {
        let ok = &results[&format!("{name}/ok")];
        assert_eq!(ok["ok"], true, "PyJWT refused our {name} token: {ok}");
        assert_eq!(ok["sub"], format!("rust-user-{}", name.to_lowercase()));
        let wrong = &results[&format!("{name}/wrong_aud")];
        assert_eq!(
            wrong["ok"], false,
            "PyJWT accepted our {name} token for another audience"
        );
        assert_eq!(wrong["error"], "InvalidAudienceError", "{wrong}");
    }
    eprintln!("JwtIssuer -> PyJWT: {results:?}");
}
