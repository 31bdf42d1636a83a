//! `REDIS_URL` and `DATABASE_URL`: revocations and the login throttle's
//! counters shared by every instance, against a throwaway redis-server or
//! PostgreSQL and the real binary.

use std::time::{Duration, Instant};

use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::{RedisServer, Reply};
use portcullis_tests::{ExampleProcess, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn token(app: &ExampleProcess, user: &str, password: &str) -> String {
    let resp = client()
        .post(app.at("/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn me(app: &ExampleProcess, token: &str) -> StatusCode {
    client()
        .get(app.at("/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_revocation_on_one_instance_reaches_the_others() {
    let redis = RedisServer::start();
    a_revocation_reaches_the_others(("REDIS_URL", &redis.url())).await;
    assert_eq!(
        redis.command(&["HGET", "jwt-api:rv:u", "bob"]),
        Reply::Bulk(Some(b"1".to_vec())),
        "the version lives in Redis, under the default prefix"
    );
}

#[tokio::test]
async fn a_revocation_on_one_instance_reaches_the_others_over_postgres() {
    let server = PgServer::shared();
    let database = server.fresh_database();
    a_revocation_reaches_the_others(("DATABASE_URL", &database)).await;
    assert_eq!(
        server.psql(
            PgServer::database_of(&database),
            "SELECT count(*) FROM portcullis.revoked_users"
        ),
        "1",
        "the version lives in PostgreSQL, in the default schema"
    );
}

async fn a_revocation_reaches_the_others(store: (&str, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("es256.pem");
    std::fs::write(
        &key,
        portcullis::jwt::generate_pkcs8_pem(portcullis::jwt::Algorithm::ES256).unwrap(),
    )
    .unwrap();
    let key = key.to_string_lossy().into_owned();
    let env = [
        store,
        ("JWT_KEY_FILE", key.as_str()),
        ("JWT_ISSUER", "https://shared.test"),
        ("JWT_AUDIENCE", "shared"),
    ];
    let a = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &env);
    let b = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &env);
    let alice = token(&a, "alice", "wonderland").await;
    let bob = token(&b, "bob", "builder").await;
    assert_eq!(me(&a, &bob).await, StatusCode::OK);

    // Alice (admin) revokes bob on A: B refuses his token within 100 ms.
    let resp = client()
        .post(a.at("/admin/revoke"))
        .bearer_auth(&alice)
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The wiring, not the speed: propagation itself (median and max over
    // 100 revocations) is measured by the stores' own tests; a template's
    // debug build under a loaded test run gets half a second.
    let started = Instant::now();
    while me(&b, &bob).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "B still accepts bob"
        );
    }
    assert_eq!(me(&a, &bob).await, StatusCode::UNAUTHORIZED);
    // An instance started later loads the revocation at start.
    let c = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &env);
    assert_eq!(me(&c, &bob).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&c, &alice).await, StatusCode::OK);
    // A new login of bob's, on any instance, works everywhere.
    let bob_again = token(&c, "bob", "builder").await;
    assert_eq!(me(&a, &bob_again).await, StatusCode::OK);
    assert_eq!(me(&b, &bob_again).await, StatusCode::OK);

    // The login throttle counts in the same store: failures alternating
    // between A and B are blocked once their sum passes the 5 free ones
    // (per-instance counters would let each instance take 5, blocking at
    // the 11th attempt at the earliest).
    let mut blocked_at = None;
    for attempt in 1..=12 {
        let app = if attempt % 2 == 1 { &a } else { &b };
        let resp = client()
            .post(app.at("/login"))
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
