//! Attacks on three DPoP and issuer-set rules, through real servers:
//! `htu` names the path the client called (`dpop::called_uri`) under
//! nested routers at two levels and `nest_service`, one proof at two
//! mounts, method, case and percent-encoding games; the current server
//! nonce handed back (`DpopProof::next_nonce`) on every answer behind the
//! layer, on gRPC, never from another secret, and at the refresh
//! endpoints; the issuer-set builder's refusal of single-issuer rules,
//! through `claims::<T>()`, and a legitimate issuer set with DPoP.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use portcullis::core::{Clock as _, ManualClock};
use portcullis::jwt::dpop::{DpopPolicy, DpopVerifier, sign_proof, thumbprint};
use portcullis::jwt::issuers::{Issuer, IssuerSet};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
use portcullis::jwt::{
    Algorithm, Claims, JwtConfigError, JwtIssuer, JwtLayer, RequireClaimsLayer, RequireDpopLayer,
    SigningKey, Validation,
};
use portcullis::refresh::{MemoryRefreshStore, RefreshConfig, RefreshLayer, Refresher, Transport};
use portcullis_tests::jwt_app::{issuer_builder, layer_builder};
use portcullis_tests::refresh_app::COOKIE;
use portcullis_tests::{TestServer, client, cookie_value};
use serde_json::Value;

/// The public origin every proof's `htu` starts with.
const ORIGIN: &str = "https://api.example.test";

/// A resource server: the API routes behind a DPoP-accepting `JwtLayer`,
/// mounted by `wrap`.
struct Api {
    server: TestServer,
    clock: Arc<ManualClock>,
    issuer: JwtIssuer,
    verifier: DpopVerifier,
}

/// The routes behind the layer: `/me` (GET, POST: the subject), `/admin`
/// (admin role), `/pay` (DPoP required by the route guard), `/boom` (the
/// handler answers 500), `/rpc` (a gRPC-style answer).
fn routes(layer: JwtLayer) -> Router {
    let me = |c: Claims| async move { c.subject().unwrap_or_default().to_owned() };
    Router::new()
        .route("/admin", get(|| async { "admin" }))
        .route_layer(RequireClaimsLayer::role("admin"))
        .merge(
            Router::new()
                .route("/pay", post(|| async { "paid" }))
                .route_layer(RequireDpopLayer::new()),
        )
        .route("/me", get(me).post(me))
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/rpc",
            post(|| async {
                (
                    [("content-type", "application/grpc"), ("grpc-status", "0")],
                    "",
                )
            }),
        )
        .layer(layer)
}

async fn api(nonces: Option<[u8; 32]>, wrap: impl FnOnce(Router) -> Router) -> Api {
    api_on(Arc::new(ManualClock::starting_now()), nonces, wrap).await
}

/// [`api`] on `clock`.
async fn api_on(
    clock: Arc<ManualClock>,
    nonces: Option<[u8; 32]>,
    wrap: impl FnOnce(Router) -> Router,
) -> Api {
    let issuer = issuer_builder(
        SigningKey::generate("as", Algorithm::ES256).unwrap(),
        &clock,
    )
    .build()
    .unwrap();
    let mut verifier = DpopVerifier::builder(ORIGIN).clock(clock.clone());
    if let Some(secret) = nonces {
        verifier = verifier.nonces(secret);
    }
    let verifier = verifier.build().unwrap();
    let layer = layer_builder(issuer.keys(), &clock, Validation::default())
        .dpop(verifier.clone(), DpopPolicy::Accepted)
        .build()
        .unwrap();
    let server = TestServer::start(wrap(routes(layer))).await;
    Api {
        server,
        clock,
        issuer,
        verifier,
    }
}

fn key() -> SigningKey {
    SigningKey::generate("client", Algorithm::ES256).unwrap()
}

fn jkt(key: &SigningKey) -> String {
    thumbprint(key.verifying_key().public_jwk().unwrap()).unwrap()
}

impl Api {
    fn now(&self) -> u64 {
        self.clock.now().secs()
    }

    /// A token for `sub` bound to `key`.
    fn bound(&self, sub: &str, key: &SigningKey) -> String {
        self.issuer
            .token(sub)
            .dpop_jkt(jkt(key))
            .mint()
            .unwrap()
            .token
    }

    /// A proof by `key` for `htm` on `ORIGIN` + `htu_path`, naming `token`.
    fn proof(
        &self,
        key: &SigningKey,
        htm: &str,
        htu_path: &str,
        token: &str,
        nonce: Option<&str>,
    ) -> String {
        sign_proof(
            key,
            htm,
            &format!("{ORIGIN}{htu_path}"),
            self.now(),
            Some(token),
            nonce,
        )
        .unwrap()
    }

    /// `method path` with the token under the `DPoP` scheme and `proof`.
    async fn call(&self, method: &str, path: &str, token: &str, proof: &str) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        client()
            .request(method, self.server.url(path))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` with a fresh proof for `htu_path`: the status.
    async fn get_with_htu(&self, path: &str, htu_path: &str) -> StatusCode {
        let key = key();
        let token = self.bound("alice", &key);
        let proof = self.proof(&key, "GET", htu_path, &token, None);
        self.call("GET", path, &token, &proof).await.status()
    }
}

/// Two levels of `Router::nest` (`/a` then `/b`): only a proof naming the
/// whole `/a/b/me` passes; the paths either level sees are refused.
#[tokio::test]
async fn two_levels_of_nest_proofs_name_the_whole_path() {
    let api = api(None, |r| {
        Router::new().nest("/a", Router::new().nest("/b", r))
    })
    .await;
    assert_eq!(api.get_with_htu("/a/b/me", "/a/b/me").await, StatusCode::OK);
    for stripped in ["/b/me", "/me", "/a/me"] {
        assert_eq!(
            api.get_with_htu("/a/b/me", stripped).await,
            StatusCode::UNAUTHORIZED,
            "{stripped}"
        );
    }
}

/// `Router::nest_service`: the service behind it sees `/me`; the proof
/// must name `/svc/me`.
#[tokio::test]
async fn nest_service_proofs_name_the_whole_path() {
    let api = api(None, |r| Router::new().nest_service("/svc", r)).await;
    assert_eq!(api.get_with_htu("/svc/me", "/svc/me").await, StatusCode::OK);
    assert_eq!(
        api.get_with_htu("/svc/me", "/me").await,
        StatusCode::UNAUTHORIZED
    );
}

/// The same routes mounted twice, at `/` and under `/v1`: a proof is good
/// at the mount it names only, once; another method, another case, an
/// encoded slash are refused; an encoded unreserved character is the same
/// URL (RFC 3986 §6.2.2.2).
#[tokio::test]
async fn one_proof_is_good_at_one_mount_only() {
    let api = api(None, |r| Router::new().nest("/v1", r.clone()).merge(r)).await;
    assert_eq!(
        api.get_with_htu("/me", "/v1/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get_with_htu("/v1/me", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.get_with_htu("/me", "/me").await, StatusCode::OK);
    assert_eq!(
        api.get_with_htu("/v1/me", "/V1/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get_with_htu("/v1/me", "/v1%2Fme").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.get_with_htu("/v1/me", "/v1/%6De").await, StatusCode::OK);

    let key = key();
    let token = api.bound("alice", &key);
    let proof = api.proof(&key, "GET", "/v1/me", &token, None);
    let r = api.call("POST", "/v1/me", &token, &proof).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "another method");
    assert_eq!(
        api.call("GET", "/v1/me", &token, &proof).await.status(),
        200
    );
    assert_eq!(
        api.call("GET", "/me", &token, &proof).await.status(),
        StatusCode::UNAUTHORIZED,
        "the proof at the other mount"
    );
    assert_eq!(
        api.call("GET", "/v1/me", &token, &proof).await.status(),
        StatusCode::UNAUTHORIZED,
        "replayed"
    );
}

/// A proof with the previous step's nonce: every answer from behind the
/// layer carries the current nonce, whether the route guard refuses
/// (403), the handler fails (500) or succeeds, and on gRPC; a proof with
/// the current nonce gets none.
#[tokio::test]
async fn the_current_nonce_comes_back_on_every_answer_behind_the_layer() {
    let api = api(Some([5; 32]), |r| Router::new().nest("/v1", r)).await;
    let old = api.verifier.nonce().unwrap();
    api.clock.advance(Duration::from_secs(60));
    let current = api.verifier.nonce().unwrap();
    assert_ne!(old, current);
    let key = key();
    let token = api.bound("alice", &key);
    for (method, path, status) in [
        ("GET", "/v1/me", StatusCode::OK),
        ("GET", "/v1/admin", StatusCode::FORBIDDEN),
        ("GET", "/v1/boom", StatusCode::INTERNAL_SERVER_ERROR),
        ("POST", "/v1/pay", StatusCode::OK),
    ] {
        let proof = api.proof(&key, method, path, &token, Some(&old));
        let r = api.call(method, path, &token, &proof).await;
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["dpop-nonce"], current.as_str(), "{path}");
    }
    let proof = api.proof(&key, "POST", "/v1/rpc", &token, Some(&old));
    let r = client()
        .post(api.server.url("/v1/rpc"))
        .header("content-type", "application/grpc")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["grpc-status"], "0");
    assert_eq!(r.headers()["dpop-nonce"], current.as_str(), "gRPC");
    // gRPC without a nonce: the refusal carries one.
    let proof = api.proof(&key, "POST", "/v1/rpc", &token, None);
    let r = client()
        .post(api.server.url("/v1/rpc"))
        .header("content-type", "application/grpc")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(r.headers()["dpop-nonce"], current.as_str(), "gRPC refusal");

    let proof = api.proof(&key, "GET", "/v1/me", &token, Some(&current));
    let r = api.call("GET", "/v1/me", &token, &proof).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!r.headers().contains_key("dpop-nonce"), "already current");
}

/// Two servers with different nonce secrets: one's nonce, current or
/// previous, is refused by the other, whose refusal hands out its own.
#[tokio::test]
async fn a_nonce_of_another_secret_is_never_taken_nor_handed_out() {
    let a = api(Some([1; 32]), |r| r).await;
    let b = api(Some([2; 32]), |r| r).await;
    let key = key();
    let token = b.bound("alice", &key);
    let from_a = a.verifier.nonce().unwrap();
    for _ in 0..2 {
        let proof = b.proof(&key, "GET", "/me", &token, Some(&from_a));
        let r = b.call("GET", "/me", &token, &proof).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let handed = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
        assert_eq!(handed, b.verifier.nonce().unwrap());
        assert_ne!(handed, a.verifier.nonce().unwrap());
        // The next step: `from_a` is now "previous" on A's clock.
        a.clock.advance(Duration::from_secs(60));
        b.clock.advance(Duration::from_secs(60));
    }
}

/// Two instances sharing the nonce secret (and the time): one's nonce
/// passes at the other; a step later it is the previous one there, and
/// the answer brings the current nonce, the same on both.
#[tokio::test]
async fn instances_sharing_the_secret_take_and_renew_each_others_nonces() {
    let clock = Arc::new(ManualClock::starting_now());
    let a = api_on(clock.clone(), Some([3; 32]), |r| r).await;
    let b = api_on(clock.clone(), Some([3; 32]), |r| r).await;
    let key = key();
    let token = b.bound("alice", &key);
    let from_a = a.verifier.nonce().unwrap();
    let proof = b.proof(&key, "GET", "/me", &token, Some(&from_a));
    let r = b.call("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!r.headers().contains_key("dpop-nonce"), "current on both");
    clock.advance(Duration::from_secs(60));
    let proof = b.proof(&key, "GET", "/me", &token, Some(&from_a));
    let r = b.call("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), StatusCode::OK);
    let renewed = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(renewed, a.verifier.nonce().unwrap());
    assert_ne!(renewed, from_a);
    let token = a.bound("alice", &key);
    let proof = a.proof(&key, "GET", "/me", &token, Some(&renewed));
    let r = a.call("GET", "/me", &token, &proof).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!r.headers().contains_key("dpop-nonce"));
}

/// The refresh app: the login and the refresh endpoints with DPoP proofs.
struct RefreshApp {
    server: TestServer,
    clock: Arc<ManualClock>,
    verifier: DpopVerifier,
}

/// The login route and the refresh endpoints (default prefix `/auth`),
/// with server nonces when `nonces`, mounted by `wrap` (the router has a
/// fallback, so under a nest the endpoints reach its `RefreshLayer`).
async fn refresh_app(nonces: bool, wrap: impl FnOnce(Router) -> Router) -> RefreshApp {
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = issuer_builder(
        SigningKey::generate("k1", Algorithm::ES256).unwrap(),
        &clock,
    )
    .build()
    .unwrap();
    let revocations = Arc::new(MemoryRevocationStore::with_clock(clock.clone()));
    let mut verifier = DpopVerifier::builder(ORIGIN).clock(clock.clone());
    if nonces {
        verifier = verifier.nonces([9; 32]);
    }
    let verifier = verifier.build().unwrap();
    let jwt = layer_builder(issuer.keys(), &clock, Validation::default())
        .revocation(revocations.view())
        .dpop(verifier.clone(), DpopPolicy::Accepted)
        .build()
        .unwrap();
    let config = RefreshConfig::default()
        .transport(Transport::Either)
        .dpop(verifier.clone(), DpopPolicy::Accepted);
    let refresher = Refresher::builder_arc(
        Arc::new(MemoryRefreshStore::new()),
        issuer,
        revocations,
        jwt,
    )
    .config(config)
    .clock(clock.clone())
    .build()
    .unwrap();
    async fn login(
        State(refresher): State<Refresher>,
        Path(user): Path<String>,
        req: Request,
    ) -> impl IntoResponse {
        let (parts, _) = req.into_parts();
        refresher.login(user).reply(&parts).await
    }
    let app = Router::new()
        .route("/auth/login/{user}", post(login))
        .with_state(refresher.clone())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(RefreshLayer::new(&refresher));
    RefreshApp {
        server: TestServer::start(wrap(app)).await,
        clock,
        verifier,
    }
}

/// Like `JwtLayer`, the login and the refresh endpoint accept a proof
/// with the previous step's nonce and hand out the current one, so a
/// client that refreshes and waits a step does not meet `use_dpop_nonce`.
#[tokio::test]
async fn login_and_refresh_with_the_previous_nonce_hand_out_the_current_one() {
    let app = refresh_app(true, |r| r).await;
    let key = key();
    let proof = |path: &str, nonce: &str| {
        sign_proof(
            &key,
            "POST",
            &format!("{ORIGIN}{path}"),
            app.clock.now().secs(),
            None,
            Some(nonce),
        )
        .unwrap()
    };
    let old = app.verifier.nonce().unwrap();
    app.clock.advance(Duration::from_secs(60));
    let current = app.verifier.nonce().unwrap();
    let r = client()
        .post(app.server.url("/auth/login/alice"))
        .header("dpop", proof("/auth/login/alice", &old))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the previous nonce is accepted");
    let login_nonce = r.headers().get("dpop-nonce").cloned();
    let refresh = cookie_value(&r, COOKIE).expect("a refresh cookie");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");

    let r = client()
        .post(app.server.url("/auth/refresh"))
        .header("cookie", format!("{COOKIE}={refresh}"))
        .header("dpop", proof("/auth/refresh", &old))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the previous nonce is accepted");
    let refresh_nonce = r.headers().get("dpop-nonce").cloned();
    assert_eq!(
        (login_nonce, refresh_nonce),
        (
            Some(current.parse().unwrap()),
            Some(current.parse().unwrap())
        ),
        "login, refresh"
    );
}

/// `builder_issuers`: the refusal survives `claims::<T>()` on either
/// side of the rule; `builder_for` and an issuer set with DPoP, a clock
/// and custom claims still build, and the set's DPoP check works on a
/// real server (a bound token from either issuer with its proof passes,
/// as a bearer token it is refused).
#[tokio::test]
async fn issuer_set_refusal_survives_claims_and_dpop_on_a_set_works() {
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = |iss: &str| {
        JwtIssuer::builder(SigningKey::generate(iss, Algorithm::ES256).unwrap())
            .issuer(iss)
            .audience("api")
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (issuer("https://a.test"), issuer("https://b.test"));
    let set = || {
        IssuerSet::new([
            Issuer::new("https://a.test", a.keys()).audience("api"),
            Issuer::new("https://b.test", b.keys()).audience("api"),
        ])
        .unwrap()
    };
    let refused = [
        JwtLayer::builder_issuers(set())
            .audience("api")
            .claims::<Value>()
            .build()
            .map(drop),
        JwtLayer::builder_issuers(set())
            .claims::<Value>()
            .allow_any_issuer()
            .build()
            .map(drop),
        JwtLayer::builder_issuers(set())
            .claims::<Value>()
            .validation(Validation::default())
            .build()
            .map(drop),
    ];
    for built in refused {
        assert_eq!(built.unwrap_err(), JwtConfigError::RulesOutsideIssuerSet);
    }
    assert!(JwtLayer::builder_for(&a).claims::<Value>().build().is_ok());
    assert!(
        JwtLayer::builder_issuers(set())
            .claims::<Value>()
            .clock(clock.clone())
            .build()
            .is_ok()
    );

    let verifier = DpopVerifier::builder(ORIGIN)
        .clock(clock.clone())
        .build()
        .unwrap();
    let layer = JwtLayer::builder_issuers(set())
        .clock(clock.clone())
        .dpop(verifier, DpopPolicy::Accepted)
        .build()
        .unwrap();
    let server = TestServer::start(
        Router::new()
            .route(
                "/me",
                get(|c: Claims| async move { c.registered().iss.clone().unwrap_or_default() }),
            )
            .layer(layer),
    )
    .await;
    let key = key();
    for (issuer, iss) in [(&a, "https://a.test"), (&b, "https://b.test")] {
        let token = issuer
            .token("alice")
            .dpop_jkt(jkt(&key))
            .mint()
            .unwrap()
            .token;
        let proof = sign_proof(
            &key,
            "GET",
            &format!("{ORIGIN}/me"),
            clock.now().secs(),
            Some(&token),
            None,
        )
        .unwrap();
        let r = client()
            .get(server.url("/me"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), iss);
        let r = client()
            .get(server.url("/me"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "bound, as bearer");
    }
}

/// The refresher under two levels of `Router::nest` (each nested router
/// with a fallback) and under `nest_service`: the login and the refresh take proofs for the whole
/// path only; a proof for a stripped path is refused and consumes
/// nothing (the honest retry with the same refresh token passes).
#[tokio::test]
async fn the_refresher_under_two_nests_and_nest_service_checks_the_whole_path() {
    type Wrap = fn(Router) -> Router;
    let mounts: [(&str, Wrap, &[&str]); 2] = [
        (
            "/a/b",
            // The middle router needs a fallback too: without one the
            // refresh endpoints (no routes) answer 404 at two levels.
            |r| {
                let middle = Router::new()
                    .nest("/b", r)
                    .fallback(|| async { StatusCode::NOT_FOUND });
                Router::new().nest("/a", middle)
            },
            &["", "/b"],
        ),
        ("/svc", |r| Router::new().nest_service("/svc", r), &[""]),
    ];
    for (prefix, wrap, stripped) in mounts {
        let app = refresh_app(false, wrap).await;
        let key = key();
        let proof = |path: &str| {
            sign_proof(
                &key,
                "POST",
                &format!("{ORIGIN}{path}"),
                app.clock.now().secs(),
                None,
                None,
            )
            .unwrap()
        };
        let login = format!("{prefix}/auth/login/alice");
        for s in stripped {
            let r = client()
                .post(app.server.url(&login))
                .header("dpop", proof(&format!("{s}/auth/login/alice")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{prefix}: login {s}");
        }
        let r = client()
            .post(app.server.url(&login))
            .header("dpop", proof(&login))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{prefix}: login");
        let refresh = cookie_value(&r, COOKIE).expect("a refresh cookie");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP", "{prefix}");

        let at = format!("{prefix}/auth/refresh");
        for s in stripped {
            let r = client()
                .post(app.server.url(&at))
                .header("cookie", format!("{COOKIE}={refresh}"))
                .header("dpop", proof(&format!("{s}/auth/refresh")))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{prefix}: refresh {s}"
            );
        }
        let r = client()
            .post(app.server.url(&at))
            .header("cookie", format!("{COOKIE}={refresh}"))
            .header("dpop", proof(&at))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{prefix}: refresh");
    }
}
