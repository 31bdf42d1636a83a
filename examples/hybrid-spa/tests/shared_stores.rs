//! `REDIS_URL` and `DATABASE_URL`: two instances of the real binary sharing
//! a throwaway redis-server or PostgreSQL (refresh families, revocations,
//! the login throttle's counters), the rotation key and the signing key; a
//! SQLite file that keeps the families across a restart.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{ExampleProcess, client, cookie_value, get_json_with_bearer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const COOKIE: &str = "__Host-refresh";

struct Pair {
    access: String,
    refresh: String,
}

async fn pair(resp: reqwest::Response) -> Pair {
    assert_eq!(resp.status(), StatusCode::OK);
    let refresh = cookie_value(&resp, COOKIE).expect("refresh cookie");
    let body: Value = resp.json().await.unwrap();
    Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh,
    }
}

async fn login(app: &ExampleProcess) -> Pair {
    let resp = client()
        .post(app.at("/auth/login"))
        .json(&json!({"username": "alice", "password": "wonderland"}))
        .send()
        .await
        .unwrap();
    pair(resp).await
}

async fn post(app: &ExampleProcess, path: &str, refresh: &str) -> reqwest::Response {
    client()
        .post(app.at(path))
        .header("cookie", format!("{COOKIE}={refresh}"))
        .send()
        .await
        .unwrap()
}

async fn me(app: &ExampleProcess, access: &str) -> StatusCode {
    client()
        .get(app.at("/api/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn two_instances_share_families_and_revocations() {
    let redis = RedisServer::start();
    two_instances_share(("REDIS_URL", &redis.url())).await;
}

#[tokio::test]
async fn two_instances_share_families_and_revocations_in_postgres() {
    let database = PgServer::shared().fresh_database();
    two_instances_share(("DATABASE_URL", &database)).await;
}

/// Signing and rotation keys every instance shares, in `dir`.
fn shared_keys(dir: &tempfile::TempDir) -> String {
    let key = dir.path().join("ed25519.pem");
    std::fs::write(
        &key,
        portcullis::jwt::generate_pkcs8_pem(portcullis::jwt::Algorithm::EdDSA).unwrap(),
    )
    .unwrap();
    key.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_sqlite_file_keeps_families_and_revocations_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = shared_keys(&dir);
    let url = format!("sqlite://{}", dir.path().join("hybrid.db").display());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("JWT_KEY_FILE", key.as_str()),
        ("REFRESH_ROTATION_KEY", "0123456789abcdef0123456789abcdef"),
    ];
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_hybrid-spa"), &env);
    let phone = login(&app).await;
    let laptop = login(&app).await;
    assert!(
        post(&app, "/auth/logout", &laptop.refresh)
            .await
            .status()
            .is_success()
    );
    drop(app);
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_hybrid-spa"), &env);
    assert_eq!(
        me(&app, &laptop.access).await,
        StatusCode::UNAUTHORIZED,
        "the logout's revocation survived the restart"
    );
    assert_eq!(me(&app, &phone.access).await, StatusCode::OK);
    let phone = pair(post(&app, "/auth/refresh", &phone.refresh).await).await;
    assert_eq!(me(&app, &phone.access).await, StatusCode::OK);
    assert_eq!(
        post(&app, "/auth/refresh", &laptop.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn two_instances_share(store: (&str, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let key = shared_keys(&dir);
    let env = [
        store,
        ("JWT_KEY_FILE", key.as_str()),
        ("REFRESH_ROTATION_KEY", "0123456789abcdef0123456789abcdef"),
    ];
    let a = ExampleProcess::start(env!("CARGO_BIN_EXE_hybrid-spa"), &env);
    let b = ExampleProcess::start(env!("CARGO_BIN_EXE_hybrid-spa"), &env);

    // A login on A; its tokens work on B.
    let phone = login(&a).await;
    assert_eq!(me(&b, &phone.access).await, StatusCode::OK);
    let laptop = login(&b).await;

    // Twenty refreshes of one token, split across both instances: all
    // succeed with the same successor.
    let responses = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        post(app, "/auth/refresh", &phone.refresh)
    }))
    .await;
    let mut successors = std::collections::BTreeSet::new();
    for resp in responses {
        assert_eq!(resp.status(), StatusCode::OK);
        successors.insert(cookie_value(&resp, COOKIE).unwrap());
    }
    assert_eq!(successors.len(), 1, "{successors:?}");
    let phone = pair(post(&b, "/auth/refresh", successors.first().unwrap()).await).await;

    // The device list, read on A, holds both devices.
    let list: Value = get_json_with_bearer(a.at("/auth/sessions"), &laptop.access).await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(2), "{list}");

    // The phone logs out on B: its access token is refused on A at once.
    assert!(
        post(&b, "/auth/logout", &phone.refresh)
            .await
            .status()
            .is_success()
    );
    // The wiring, not the speed: propagation itself (median and max over
    // 100 revocations) is measured by the stores' own tests; a template's
    // debug build under a loaded test run gets half a second.
    let started = Instant::now();
    while me(&a, &phone.access).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "A still accepts"
        );
    }
    assert_eq!(
        post(&a, "/auth/refresh", &phone.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&a, &laptop.access).await, StatusCode::OK);

    // Log out everywhere on A: the laptop's access token dies on B.
    assert!(
        post(&a, "/auth/logout-everywhere", &laptop.refresh)
            .await
            .status()
            .is_success()
    );
    // The wiring, not the speed: propagation itself (median and max over
    // 100 revocations) is measured by the stores' own tests; a template's
    // debug build under a loaded test run gets half a second.
    let started = Instant::now();
    while me(&b, &laptop.access).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "B still accepts"
        );
    }

    // The login throttle counts in the same store: failures alternating
    // between A and B are blocked once their sum passes the 5 free ones
    // (per-instance counters would let each instance take 5, blocking at
    // the 11th attempt at the earliest).
    let mut blocked_at = None;
    for attempt in 1..=12 {
        let app = if attempt % 2 == 1 { &a } else { &b };
        let resp = client()
            .post(app.at("/auth/login"))
            .json(&json!({"username": "bob", "password": "not his password"}))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            blocked_at = Some(attempt);
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let blocked_at = blocked_at.expect("the failures on both instances add up");
    assert!(
        blocked_at <= 8,
        "blocked only at attempt {blocked_at}: the instances count apart"
    );
}
