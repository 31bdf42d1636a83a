//! The example's JSON contract, against the real binary: on the memory
//! store, on Redis and PostgreSQL with two instances sharing them (the
//! sessions and the login throttle's counters), on a SQLite file across a
//! restart, and its CSRF protection.

use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{ExampleProcess, client, cookie_value};
use reqwest::StatusCode;
use serde_json::{Value, json};

const COOKIE: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";

/// `GET /csrf` with `cookie` (a whole `Cookie` header, if any): the token,
/// and the pre-session cookie the app set (if it did).
async fn csrf(app: &ExampleProcess, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = client().get(app.at("/csrf"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pre = cookie_value(&resp, PRE_SESSION).map(|v| format!("{PRE_SESSION}={v}"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["header"], "x-csrf-token");
    (body["token"].as_str().unwrap().to_owned(), pre)
}

async fn login(app: &ExampleProcess, user: &str, password: &str) -> reqwest::Response {
    let (token, pre) = csrf(app, None).await;
    client()
        .post(app.at("/login"))
        .header("cookie", pre.expect("a pre-session cookie"))
        .header("x-csrf-token", token)
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
    let cookie = format!("{COOKIE}={cookie}");
    let mut req = client()
        .request(method.clone(), app.at(path))
        .header("cookie", &cookie);
    if method != reqwest::Method::GET {
        // A token bound to this session, from the instance posted to.
        req = req.header("x-csrf-token", csrf(app, Some(&cookie)).await.0);
    }
    req.send().await.unwrap()
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
    two_instances_share(("REDIS_URL", &redis.url())).await;
}

#[tokio::test]
async fn two_instances_share_sessions_in_postgres() {
    let database = PgServer::shared().fresh_database();
    two_instances_share(("DATABASE_URL", &database)).await;
}

#[tokio::test]
async fn a_sqlite_file_keeps_sessions_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let key = "5c".repeat(32);
    let env = [("DATABASE_URL", url.as_str()), ("CSRF_KEY", key.as_str())];
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_session-login"), &env);
    let alice = session(&app, "alice", "wonderland").await;
    drop(app);
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_session-login"), &env);
    assert_eq!(
        me(&app, &alice).await,
        StatusCode::OK,
        "the session survived"
    );
}

async fn two_instances_share(store: (&str, &str)) {
    let key = "5c".repeat(32);
    let env = [store, ("CSRF_KEY", key.as_str())];
    let a = ExampleProcess::start(env!("CARGO_BIN_EXE_session-login"), &env);
    let b = ExampleProcess::start(env!("CARGO_BIN_EXE_session-login"), &env);
    let cookie = session(&a, "alice", "wonderland").await;
    assert_eq!(
        me(&b, &cookie).await,
        StatusCode::OK,
        "a session created on A works on B"
    );
    // A token from A, accepted by B: one CSRF_KEY.
    let token = csrf(&a, Some(&format!("{COOKIE}={cookie}"))).await.0;
    let resp = client()
        .post(b.at("/logout"))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .header("x-csrf-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        me(&a, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "logout on B is refused on A at once"
    );

    // The login throttle counts in the same store: failures alternating
    // between A and B are blocked once their sum passes the 5 free ones
    // (per-instance counters would let each instance take 5, blocking at
    // the 11th attempt at the earliest).
    let mut blocked_at = None;
    for attempt in 1..=12 {
        let app = if attempt % 2 == 1 { &a } else { &b };
        let resp = login(app, "bob", "not his password").await;
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

#[tokio::test]
async fn cross_site_and_tokenless_posts_are_refused() {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_session-login"), &[]);
    let creds = json!({"username": "bob", "password": "builder"});
    // An attacker's page logs the victim in as the attacker (login CSRF).
    let (token, pre) = csrf(&app, None).await;
    let pre = pre.unwrap();
    let resp = client()
        .post(app.at("/login"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .header("cookie", &pre)
        .header("x-csrf-token", &token)
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(cookie_value(&resp, COOKIE), None, "no session made");
    // Without a token (a browser that sends neither header): refused too.
    let resp = client()
        .post(app.at("/login"))
        .header("cookie", &pre)
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(cookie_value(&resp, COOKIE), None);
    // A cross-site logout leaves the session alone.
    let alice = session(&app, "alice", "wonderland").await;
    let token = csrf(&app, Some(&format!("{COOKIE}={alice}"))).await.0;
    let resp = client()
        .post(app.at("/logout"))
        .header("sec-fetch-site", "cross-site")
        .header("cookie", format!("{COOKIE}={alice}"))
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(me(&app, &alice).await, StatusCode::OK);
    // The same request from the page itself passes.
    let resp = client()
        .post(app.at("/logout"))
        .header("sec-fetch-site", "same-origin")
        .header("cookie", format!("{COOKIE}={alice}"))
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &alice).await, StatusCode::UNAUTHORIZED);
}
