//! Fresh login for JWT and refresh tokens, through a real server on a
//! manual clock: logins mint `auth_time`, `amr` and `acr`, refreshes copy
//! them unchanged; a custom claim cannot forge them; `RequireFreshAuthLayer`
//! refuses a 20-minute-old login at `within(10 min)` and a login of the
//! wrong `acr` with RFC 9470's exact challenge, and passes after a new
//! login (step-up); a plain `JwtIssuer::token` is never fresh.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis::core::{Clock as _, ManualClock};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore as _};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, RequireFreshAuthLayer, SigningKey};
use portcullis::refresh::testing::family;
use portcullis::refresh::{MemoryRefreshStore, RefreshLayer, RefreshStore as _, Refresher};
use portcullis_tests::refresh_app::{COOKIE, Login, read_login};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const ISS: &str = "https://fresh.test";
const AUD: &str = "fresh";
const SUDO_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// RFC 9470's challenge for a login older than `SUDO_MAX_AGE`.
const STALE: &str = "Bearer error=\"insufficient_user_authentication\", \
                     error_description=\"More recent authentication is required\", max_age=600";
/// RFC 9470's challenge for a login without the `mfa` class.
const WEAK: &str = "Bearer error=\"insufficient_user_authentication\", \
                    error_description=\"A different authentication level is required\", \
                    acr_values=\"mfa\"";

#[derive(Clone)]
struct AppState {
    refresher: Refresher,
    issuer: JwtIssuer,
}

struct App {
    server: TestServer,
    clock: Arc<ManualClock>,
    refresher: Refresher,
    store: Arc<MemoryRefreshStore>,
}

/// The claims a route saw, as JSON.
async fn me(c: Claims) -> axum::Json<Value> {
    let r = c.registered();
    axum::Json(json!({
        "sub": r.sub, "iat": r.iat, "auth_time": r.auth_time, "amr": r.amr, "acr": r.acr,
    }))
}

/// A password login: `amr` ["pwd"], no `acr`.
async fn login(State(s): State<AppState>, Path(user): Path<String>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    s.refresher.login(user).reply(&parts).await.into_response()
}

/// A password + one-time-code login: `amr` ["pwd", "otp"], `acr` "mfa".
async fn login_mfa(State(s): State<AppState>, Path(user): Path<String>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    s.refresher
        .login(user)
        .methods(["pwd", "otp"])
        .acr("mfa")
        .reply(&parts)
        .await
        .into_response()
}

/// A careless login that copies the client's "profile" object into
/// custom claims.
async fn login_with_profile(
    State(s): State<AppState>,
    Path(user): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 4096).await.unwrap();
    let profile: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
    let mut login = s.refresher.login(user);
    for (k, v) in profile {
        login = login.claim(k, v);
    }
    login.reply(&parts).await.into_response()
}

/// JWT only: a token minted right after the credentials were checked.
async fn jwt_login(State(s): State<AppState>, Path(user): Path<String>) -> Response {
    let t = s.issuer.login_token(user).mint().unwrap();
    axum::Json(json!({"access_token": t.token})).into_response()
}

/// JWT only: a token minted without a login (say, a service token).
async fn jwt_plain(State(s): State<AppState>, Path(user): Path<String>) -> Response {
    let t = s.issuer.token(user).mint().unwrap();
    axum::Json(json!({"access_token": t.token})).into_response()
}

async fn start() -> App {
    start_at(Arc::new(ManualClock::starting_now())).await
}

async fn start_at(clock: Arc<ManualClock>) -> App {
    let store = Arc::new(MemoryRefreshStore::new());
    let revocations = Arc::new(MemoryRevocationStore::with_clock(clock.clone()));
    let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .build()
        .unwrap();
    let jwt = JwtLayer::builder_for(&issuer)
        .revocation(revocations.view())
        .build()
        .unwrap();
    let refresher = Refresher::builder(store.clone(), issuer.clone(), revocations, jwt.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let sudo = Router::new()
        .route("/api/sudo", get(me))
        .route_layer(RequireFreshAuthLayer::within(SUDO_MAX_AGE).clock(clock.clone()));
    let gold = Router::new().route("/api/mfa", get(me)).route_layer(
        RequireFreshAuthLayer::acr(["mfa"])
            .unwrap()
            .clock(clock.clone()),
    );
    let api = Router::new()
        .route("/api/me", get(me))
        .merge(sudo)
        .merge(gold)
        .layer(jwt);
    let app = Router::new()
        .route("/auth/login/{user}", post(login))
        .route("/auth/login-mfa/{user}", post(login_mfa))
        .route("/auth/login-profile/{user}", post(login_with_profile))
        .route("/jwt/login/{user}", post(jwt_login))
        .route("/jwt/plain/{user}", post(jwt_plain))
        .with_state(AppState {
            refresher: refresher.clone(),
            issuer,
        })
        .merge(api)
        .layer(RefreshLayer::new(&refresher));
    App {
        server: TestServer::start(app).await,
        clock,
        refresher,
        store,
    }
}

async fn post_path(app: &App, path: &str) -> reqwest::Response {
    client().post(app.server.url(path)).send().await.unwrap()
}

async fn log_in(app: &App, path: &str) -> Login {
    let resp = post_path(app, path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    read_login(resp).await
}

async fn refreshed(app: &App, refresh: &str) -> Login {
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .header("cookie", format!("{COOKIE}={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    read_login(resp).await
}

async fn jwt_token(app: &App, path: &str) -> String {
    let resp = post_path(app, path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn call(app: &App, path: &str, access: &str) -> reqwest::Response {
    client()
        .get(app.server.url(path))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

/// `GET /api/me`: the claims, asserting 200.
async fn claims(app: &App, access: &str) -> Value {
    let resp = call(app, "/api/me", access).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

fn now_secs(app: &App) -> i64 {
    i64::try_from(app.clock.now().secs()).unwrap()
}

/// Asserts the RFC 9470 refusal: 401, the exact challenge, the house
/// problem+json body.
async fn assert_step_up(resp: reqwest::Response, challenge: &str) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], challenge);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(body["title"], "Unauthorized");
    assert!(body["detail"].as_str().unwrap().contains("log in again"));
}

#[tokio::test]
async fn logins_mint_auth_time_amr_acr_and_refreshes_copy_them_unchanged() {
    let app = start().await;
    let t0 = now_secs(&app);
    let pwd = log_in(&app, "/auth/login/alice").await;
    let mfa = log_in(&app, "/auth/login-mfa/alice").await;
    let c = claims(&app, &pwd.access).await;
    assert_eq!(c["auth_time"], json!(t0));
    assert_eq!(c["amr"], json!(["pwd"]));
    assert_eq!(c["acr"], Value::Null);
    let c = claims(&app, &mfa.access).await;
    assert_eq!(c["auth_time"], json!(t0));
    assert_eq!(c["amr"], json!(["pwd", "otp"]));
    assert_eq!(c["acr"], json!("mfa"));

    // Twenty minutes and two refreshes later: new tokens, same login.
    let (mut pwd_refresh, mut mfa_refresh) = (pwd.refresh, mfa.refresh);
    for step in 1..=2_i64 {
        app.clock.advance(Duration::from_secs(10 * 60));
        let p = refreshed(&app, &pwd_refresh).await;
        let m = refreshed(&app, &mfa_refresh).await;
        let c = claims(&app, &p.access).await;
        assert_eq!(c["iat"], json!(t0 + step * 600));
        assert_eq!(c["auth_time"], json!(t0), "refresh {step}");
        assert_eq!(c["amr"], json!(["pwd"]));
        assert_eq!(c["acr"], Value::Null);
        let c = claims(&app, &m.access).await;
        assert_eq!(c["auth_time"], json!(t0), "refresh {step}");
        assert_eq!(c["amr"], json!(["pwd", "otp"]));
        assert_eq!(c["acr"], json!("mfa"));
        (pwd_refresh, mfa_refresh) = (p.refresh, m.refresh);
    }
}

#[tokio::test]
async fn custom_claims_cannot_forge_a_fresh_or_strong_login() {
    let app = start().await;
    let far_future = now_secs(&app) + 10 * 365 * 86_400;
    for forged in [
        json!({"auth_time": far_future}),
        json!({"amr": ["hwk", "mfa"]}),
        json!({"acr": "mfa"}),
        json!({"nickname": "al", "acr": "mfa"}),
        json!({"sub": "bob"}),
        json!({"roles": "admin"}),
        json!({"scope": ["admin"]}),
    ] {
        let resp = client()
            .post(app.server.url("/auth/login-profile/alice"))
            .json(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{forged}");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "no refresh cookie for {forged}"
        );
    }
    assert!(
        app.refresher
            .devices("alice", None)
            .await
            .unwrap()
            .is_empty(),
        "no family was stored"
    );
    // The same path with an innocent profile works, and the login is the
    // refresher's own.
    let resp = client()
        .post(app.server.url("/auth/login-profile/alice"))
        .json(&json!({"nickname": "al"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let l = read_login(resp).await;
    let c = claims(&app, &l.access).await;
    assert_eq!(c["auth_time"], json!(now_secs(&app)));
    assert_eq!(c["amr"], json!(["pwd"]));
}

#[tokio::test]
async fn the_guard_refuses_a_20_minute_old_login_until_a_new_login() {
    let app = start().await;
    let first = log_in(&app, "/auth/login/alice").await;
    assert_eq!(
        call(&app, "/api/sudo", &first.access).await.status(),
        StatusCode::OK
    );
    // 10 minutes: still fresh (at the limit).
    app.clock.advance(SUDO_MAX_AGE);
    assert_eq!(
        call(&app, "/api/sudo", &first.access).await.status(),
        StatusCode::OK
    );
    // 20 minutes: the first access token has expired; a refresh gives a
    // valid one, but not a fresh login.
    app.clock.advance(Duration::from_secs(10 * 60));
    let later = refreshed(&app, &first.refresh).await;
    assert_eq!(
        call(&app, "/api/me", &later.access).await.status(),
        StatusCode::OK
    );
    assert_step_up(call(&app, "/api/sudo", &later.access).await, STALE).await;
    // Step-up: the user logs in again, and the sensitive route passes.
    let again = log_in(&app, "/auth/login/alice").await;
    assert_eq!(
        call(&app, "/api/sudo", &again.access).await.status(),
        StatusCode::OK
    );
    // The old device is still refused: a refresh never makes it fresh.
    let later = refreshed(&app, &later.refresh).await;
    assert_step_up(call(&app, "/api/sudo", &later.access).await, STALE).await;
    // No token at all: 401 without an error code (RFC 6750).
    let resp = client()
        .get(app.server.url("/api/sudo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn a_login_without_the_required_acr_gets_the_acr_values_challenge() {
    let app = start().await;
    let pwd = log_in(&app, "/auth/login/alice").await;
    assert_step_up(call(&app, "/api/mfa", &pwd.access).await, WEAK).await;
    let mfa = log_in(&app, "/auth/login-mfa/alice").await;
    assert_eq!(
        call(&app, "/api/mfa", &mfa.access).await.status(),
        StatusCode::OK
    );
    // The class does not age: the refreshed token passes a day later.
    app.clock.advance(Duration::from_secs(86_400));
    let later = refreshed(&app, &mfa.refresh).await;
    assert_eq!(
        call(&app, "/api/mfa", &later.access).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwt_issuer_login_tokens_are_fresh_and_plain_tokens_never() {
    let app = start().await;
    let login = jwt_token(&app, "/jwt/login/alice").await;
    let plain = jwt_token(&app, "/jwt/plain/alice").await;
    let c = claims(&app, &login).await;
    assert_eq!(c["auth_time"], c["iat"]);
    assert_eq!(c["amr"], json!(["pwd"]));
    assert_eq!(
        call(&app, "/api/sudo", &login).await.status(),
        StatusCode::OK
    );
    // A valid token without `auth_time` is not fresh.
    assert_eq!(claims(&app, &plain).await["auth_time"], Value::Null);
    assert_step_up(call(&app, "/api/sudo", &plain).await, STALE).await;
    // Eleven minutes later the login token is still valid, no longer fresh.
    app.clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(call(&app, "/api/me", &login).await.status(), StatusCode::OK);
    assert_step_up(call(&app, "/api/sudo", &login).await, STALE).await;
}

/// A family stored before logins recorded their time and methods (or
/// with claims of another shape under those names): it still refreshes,
/// its tokens carry no login time, method or class (so it is never
/// fresh: the user logs in again for a sensitive route), and the names
/// the issuer controls are left out rather than failing every refresh.
#[tokio::test]
async fn a_family_stored_without_a_login_time_refreshes_but_is_never_fresh() {
    // `testing::family` creates at 1_700_000_000 s, alive for a day.
    let app = start_at(Arc::new(ManualClock::new(1_700_000_060_000))).await;
    let (mut fam, token) = family("alice", 0);
    fam.claims = serde_json::from_value(json!({
        "roles": ["user"],
        "sub": "mallory",
        "auth_time": "yesterday",
        "amr": "pwd",
        "acr": 7,
        "tenant": "acme",
    }))
    .unwrap();
    app.store.create(&fam, None).await.unwrap();
    let later = refreshed(&app, &token.to_encoded()).await;
    let c = claims(&app, &later.access).await;
    assert_eq!(c["sub"], json!("alice"));
    for name in ["auth_time", "amr", "acr"] {
        assert_eq!(c[name], Value::Null, "{name}");
    }
    assert_step_up(call(&app, "/api/sudo", &later.access).await, STALE).await;
    assert_step_up(call(&app, "/api/mfa", &later.access).await, WEAK).await;
}
