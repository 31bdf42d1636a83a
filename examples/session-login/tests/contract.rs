//! The example's JSON contract, against the real binary: on the memory
//! store, and on Redis with two instances sharing it.

use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{ExampleProcess, client, cookie_value};
use reqwest::StatusCode;
use serde_json::{Value, json};

const COOKIE: &str = "__Host-session";

async fn login(app: &ExampleProcess, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(app.at("/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn session(app: &ExampleProcess, user: &str, password: &str) -> String {
    let resp = login(app, user, password).await;
    assert_eq!(resp.status(), StatusCode::OK);
    cookie_value(&resp, COOKIE).expect("session cookie")
}

async fn send(
    app: &ExampleProcess,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
) -> reqwest::Response {
    client()
        .request(method, app.at(path))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send()
        .await
        .unwrap()
}

async fn me(app: &ExampleProcess, cookie: &str) -> StatusCode {
    send(app, reqwest::Method::GET, "/me", cookie)
        .await
        .status()
}

#[tokio::test]
async fn contract_on_the_memory_store() {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_session-login"), &[]);
    let page = client().get(app.at("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<form"));
    assert_eq!(
        login(&app, "alice", "nope").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client().get(app.at("/me")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let a1 = session(&app, "alice", "wonderland").await;
    let a2 = session(&app, "alice", "wonderland").await;
    let bob = session(&app, "bob", "builder").await;
    let body: Value = send(&app, reqwest::Method::GET, "/me", &a1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["user"], "alice");
    let list: Value = send(&app, reqwest::Method::GET, "/sessions", &a1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);

    assert_eq!(
        send(&app, reqwest::Method::POST, "/logout", &a1)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        me(&app, &a1).await,
        StatusCode::UNAUTHORIZED,
        "the old cookie is dead at once"
    );
    assert_eq!(me(&app, &a2).await, StatusCode::OK);
    let resp = send(&app, reqwest::Method::POST, "/logout-everywhere", &a2).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ended": 1}));
    assert_eq!(me(&app, &a2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &bob).await, StatusCode::OK, "bob untouched");
}

#[tokio::test]
async fn two_instances_share_sessions_on_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = ExampleProcess::start(
        env!("CARGO_BIN_EXE_session-login"),
        &[("REDIS_URL", url.as_str())],
    );
    let b = ExampleProcess::start(
        env!("CARGO_BIN_EXE_session-login"),
        &[("REDIS_URL", url.as_str())],
    );
    let cookie = session(&a, "alice", "wonderland").await;
    assert_eq!(
        me(&b, &cookie).await,
        StatusCode::OK,
        "a session created on A works on B"
    );
    assert_eq!(
        send(&b, reqwest::Method::POST, "/logout", &cookie)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        me(&a, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "logout on B is refused on A at once"
    );
}
