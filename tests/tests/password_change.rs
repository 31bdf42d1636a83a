//! The JWT and refresh half of a password change
//! (`Refresher::password_changed`), through real servers: on two app
//! instances sharing a Redis store, and two sharing a PostgreSQL store
//! (through the existing refresh and revocation stores), a password change
//! made on one instance ends the user's other devices and every live access
//! token at once on both, the device that changed it gets a new login that
//! works on both, and another user is untouched. Then a store failing at
//! each step: 503, the user left more logged out, never less, and a retry
//! finishing the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis::core::store::FaultSwitch;
use portcullis::core::{ManualClock, ProblemJson, RenderRejection, StoreError};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore, RevocationView};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, RequireFreshAuthLayer, SigningKey};
use portcullis::refresh::testing::FaultyRefreshStore;
use portcullis::refresh::{
    MemoryRefreshStore, RefreshConfig, RefreshLayer, RefreshStore, Refresher, RotationKey,
};
use portcullis_redis::{RedisConfig, RedisRefreshStore, RedisRevocationStore};
use portcullis_sql::sqlx::postgres::PgPoolOptions;
use portcullis_sql::{PgBackend, PgConfig, PgRefreshStore, PgRevocationStore};
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::refresh_app::{COOKIE, Login, read_login};
use portcullis_tests::{TestServer, client};
use reqwest::StatusCode;

const ISS: &str = "https://password.test";
const AUD: &str = "password";
/// Generous: these tests check behaviour, not latency, on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long another instance may take to hear of a version bump.
const PROPAGATION: Duration = Duration::from_secs(2);

/// One app instance: login, `/api/me` and the password change behind a
/// `JwtLayer` (the change also behind a 10-minute fresh-login guard), and
/// the refresh endpoints.
struct Instance {
    server: TestServer,
    clock: Arc<ManualClock>,
    view: RevocationView,
}

/// `POST /account/password`: (the new hash would be stored here) the
/// JWT and refresh half of the change, then a new login for this device;
/// 503 when a step fails.
async fn change_password(
    State(refresher): State<Refresher>,
    claims: Claims,
    req: Request,
) -> Response {
    let user = claims.subject().unwrap_or_default().to_owned();
    match refresher.password_changed(&user).await {
        Ok(_) => {
            let (parts, _) = req.into_parts();
            refresher.login(user).reply(&parts).await.into_response()
        }
        Err(e) => ProblemJson
            .render(&e.rejection(Duration::from_secs(1)), false)
            .map(axum::body::Body::from),
    }
}

async fn login(State(r): State<Refresher>, Path(user): Path<String>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    r.login(user).reply(&parts).await.into_response()
}

async fn me(c: Claims) -> axum::Json<serde_json::Value> {
    let r = c.registered();
    axum::Json(serde_json::json!({"sub": r.sub, "auth_time": r.auth_time, "amr": r.amr}))
}

/// An instance on `store` and `revocations`; instances share the clock,
/// the signing key and the rotation key, as instances behind a load
/// balancer must.
async fn instance(
    store: Arc<dyn RefreshStore>,
    revocations: Arc<dyn RevocationStore>,
    clock: Arc<ManualClock>,
) -> Instance {
    let issuer = issuer(&clock);
    let view = revocations.view();
    let jwt = JwtLayer::builder_for(&issuer)
        .revocation(revocations.view())
        .build()
        .unwrap();
    let refresher = Refresher::builder_arc(store, issuer, revocations, jwt.clone())
        .config(RefreshConfig::default().rotation_key(RotationKey::from_bytes(&[9; 32]).unwrap()))
        .clock(clock.clone())
        .build()
        .unwrap();
    let protected = Router::new()
        .route("/account/password", post(change_password))
        .route_layer(RequireFreshAuthLayer::within(Duration::from_secs(600)).clock(clock.clone()))
        .route("/api/me", get(me))
        .layer(jwt);
    let app = Router::new()
        .route("/auth/login/{user}", post(login))
        .merge(protected)
        .with_state(refresher.clone())
        .layer(RefreshLayer::new(&refresher));
    Instance {
        server: TestServer::start(app).await,
        clock,
        view,
    }
}

/// The instances' issuer (their signing key).
fn issuer(clock: &Arc<ManualClock>) -> JwtIssuer {
    JwtIssuer::builder(SigningKey::hmac("k", Algorithm::HS256, &[7; 32]).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// What a refresh of the family of `refresh` racing with a password
/// change could mint on `at` once the version bump reached its view: an
/// access token of that family (`sid`) stamped with the user's new
/// version.
fn racing_token(at: &Instance, user: &str, refresh: &str) -> String {
    let sid = refresh.split_once('.').unwrap().0;
    issuer(&at.clock)
        .token(user)
        .sid(sid)
        .ver(at.view.user_version(user))
        .mint()
        .unwrap()
        .token
}

async fn log_in(at: &Instance, user: &str) -> Login {
    let resp = client()
        .post(at.server.url(&format!("/auth/login/{user}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    read_login(resp).await
}

async fn api(at: &Instance, access: &str) -> StatusCode {
    client()
        .get(at.server.url("/api/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
}

async fn me_json(at: &Instance, access: &str) -> serde_json::Value {
    let resp = client()
        .get(at.server.url("/api/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn refresh(at: &Instance, token: &str) -> reqwest::Response {
    client()
        .post(at.server.url("/auth/refresh"))
        .header("cookie", format!("{COOKIE}={token}"))
        .send()
        .await
        .unwrap()
}

async fn change(at: &Instance, access: &str) -> reqwest::Response {
    client()
        .post(at.server.url("/account/password"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

/// Polls `at` until `access` is refused (within [`PROPAGATION`]).
async fn refused_soon(at: &Instance, access: &str) -> Duration {
    let start = Instant::now();
    loop {
        if api(at, access).await == StatusCode::UNAUTHORIZED {
            return start.elapsed();
        }
        assert!(start.elapsed() < PROPAGATION, "still accepted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// alice on a phone (through A) and a laptop (through B), bob (through
/// A); alice changes her password on the laptop, through B.
async fn password_change_on_two_instances(a: &Instance, b: &Instance) {
    let phone = log_in(a, "alice").await;
    let laptop = log_in(b, "alice").await;
    let bob = log_in(a, "bob").await;
    for at in [a, b] {
        for access in [&phone.access, &laptop.access, &bob.access] {
            assert_eq!(api(at, access).await, StatusCode::OK);
        }
    }

    let resp = change(b, &laptop.access).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let fresh = read_login(resp).await;

    // On B, at once: every access token alice had is refused.
    assert_eq!(api(b, &phone.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(api(b, &laptop.access).await, StatusCode::UNAUTHORIZED);
    // On A, as soon as the version bump reaches its view.
    let took = refused_soon(a, &phone.access).await;
    eprintln!("password change on B: the phone's access token refused on A after {took:?}");
    assert_eq!(api(a, &laptop.access).await, StatusCode::UNAUTHORIZED);
    // A token a racing refresh of the phone minted after the bump is
    // refused too: the ended families' `sid`s are revoked.
    let racing = racing_token(b, "alice", &phone.refresh);
    assert_eq!(api(b, &racing).await, StatusCode::UNAUTHORIZED);
    refused_soon(a, &racing).await;
    // Every refresh family alice had is gone, whichever instance asks.
    for at in [a, b] {
        for token in [&phone.refresh, &laptop.refresh] {
            assert_eq!(refresh(at, token).await.status(), StatusCode::UNAUTHORIZED);
        }
    }
    // The laptop's new login works on both instances, and refreshes.
    assert_eq!(api(a, &fresh.access).await, StatusCode::OK);
    assert_eq!(api(b, &fresh.access).await, StatusCode::OK);
    a.clock.advance(Duration::from_secs(60));
    let next = refresh(a, &fresh.refresh).await;
    assert_eq!(next.status(), StatusCode::OK);
    let next = read_login(next).await;
    assert_eq!(api(b, &next.access).await, StatusCode::OK);
    // The store kept the login's time and methods: the refresh copied them.
    let (login, refreshed) = (
        me_json(b, &fresh.access).await,
        me_json(b, &next.access).await,
    );
    assert!(login["auth_time"].is_i64(), "{login}");
    assert_eq!(login["amr"], serde_json::json!(["pwd"]));
    assert_eq!(refreshed, login);
    // bob is untouched.
    assert_eq!(api(a, &bob.access).await, StatusCode::OK);
    assert_eq!(api(b, &bob.access).await, StatusCode::OK);
    assert_eq!(refresh(b, &bob.refresh).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_every_device_at_once_on_two_instances_sharing_redis() {
    let server = RedisServer::start();
    let clock = Arc::new(ManualClock::starting_now());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let backend = RedisConfig::new(server.url())
            .key_prefix("pwchange")
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        let revocations = RedisRevocationStore::builder(backend.clone())
            .clock(clock.clone())
            .start()
            .unwrap();
        assert!(revocations.wait_synced(TIMEOUT).await);
        apps.push(
            instance(
                Arc::new(RedisRefreshStore::new(backend)),
                Arc::new(revocations),
                clock.clone(),
            )
            .await,
        );
    }
    password_change_on_two_instances(&apps[0], &apps[1]).await;
}

/// A migrated backend on its own pool (one instance's).
async fn pg_backend(url: &str) -> PgBackend {
    let pool = PgPoolOptions::new()
        .acquire_timeout(TIMEOUT)
        .connect(url)
        .await
        .unwrap();
    let backend = PgConfig::new(pool).timeout(TIMEOUT).build().unwrap();
    backend.migrate().await.unwrap();
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_every_device_at_once_on_two_instances_sharing_postgres() {
    let url = PgServer::shared().fresh_database();
    let clock = Arc::new(ManualClock::starting_now());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let backend = pg_backend(&url).await;
        let revocations = PgRevocationStore::builder(&backend)
            .clock(clock.clone())
            .start()
            .unwrap();
        assert!(revocations.wait_synced(TIMEOUT).await);
        apps.push(
            instance(
                Arc::new(PgRefreshStore::with_clock(&backend, clock.clone())),
                Arc::new(revocations),
                clock.clone(),
            )
            .await,
        );
    }
    password_change_on_two_instances(&apps[0], &apps[1]).await;
}

/// A memory revocation store whose version bumps and whose `sid`
/// revocations can be made to fail, each on its own switch.
#[derive(Clone)]
struct Faulty {
    inner: Arc<MemoryRevocationStore>,
    users: FaultSwitch,
    sessions: FaultSwitch,
}

#[async_trait]
impl RevocationStore for Faulty {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.inner.revoke_token(jti, expires_at).await
    }
    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        self.sessions.check()?;
        self.inner.revoke_session(sid, expires_at).await
    }
    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        self.users.check()?;
        self.inner.revoke_user(user).await
    }
    fn view(&self) -> RevocationView {
        self.inner.view()
    }
}

fn set(switch: &FaultSwitch, on: bool) {
    switch
        .shared()
        .store(on, std::sync::atomic::Ordering::SeqCst);
}

async fn assert_unavailable(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_answers_503_leaves_the_user_more_logged_out_and_a_retry_finishes() {
    let clock = Arc::new(ManualClock::starting_now());
    let store = FaultyRefreshStore::new(Arc::new(MemoryRefreshStore::new()));
    let store_down = store.switch();
    let revocations = Faulty {
        inner: Arc::new(MemoryRevocationStore::with_clock(clock.clone())),
        users: FaultSwitch::new(),
        sessions: FaultSwitch::new(),
    };
    let app = instance(
        Arc::new(store),
        Arc::new(revocations.clone()),
        clock.clone(),
    )
    .await;
    let mut phone = log_in(&app, "alice").await;
    let laptop = log_in(&app, "alice").await;

    // 1. The refresh store fails first: nothing has changed.
    store_down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_unavailable(change(&app, &laptop.access).await).await;
    store_down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(api(&app, &phone.access).await, StatusCode::OK);
    let resp = refresh(&app, &phone.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    phone = read_login(resp).await;

    // 2. The version bump fails: the families are already gone (no device
    // can mint another access token), the live access tokens live on,
    // the laptop's too, so the client retries, and the retry kills them.
    set(&revocations.users, true);
    assert_unavailable(change(&app, &laptop.access).await).await;
    set(&revocations.users, false);
    assert_eq!(
        refresh(&app, &phone.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "the phone's family ended"
    );
    assert_eq!(api(&app, &phone.access).await, StatusCode::OK);
    let resp = change(&app, &laptop.access).await;
    assert_eq!(resp.status(), StatusCode::OK, "the retry");
    let laptop = read_login(resp).await;
    assert_eq!(api(&app, &phone.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(api(&app, &laptop.access).await, StatusCode::OK);

    // 3. Revoking the ended families' `sid`s fails (after the bump): the
    // change is not reported done. Every device is logged out, the
    // laptop too; it logs in again and the retry finishes.
    let tablet = log_in(&app, "alice").await;
    set(&revocations.sessions, true);
    assert_unavailable(change(&app, &laptop.access).await).await;
    set(&revocations.sessions, false);
    for access in [&tablet.access, &laptop.access] {
        assert_eq!(api(&app, access).await, StatusCode::UNAUTHORIZED);
    }
    for token in [&tablet.refresh, &laptop.refresh] {
        assert_eq!(
            refresh(&app, token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // What a refresh of the tablet racing with the change could have
    // minted after the bump lives on: the reason the change is not done.
    let racing = racing_token(&app, "alice", &tablet.refresh);
    assert_eq!(api(&app, &racing).await, StatusCode::OK);
    let laptop = log_in(&app, "alice").await;
    let resp = change(&app, &laptop.access).await;
    assert_eq!(resp.status(), StatusCode::OK, "the retry");
    let laptop = read_login(resp).await;
    assert_eq!(api(&app, &racing).await, StatusCode::UNAUTHORIZED);
    assert_eq!(api(&app, &laptop.access).await, StatusCode::OK);
}
