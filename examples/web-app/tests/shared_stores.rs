//! `REDIS_URL` and `DATABASE_URL`: two instances of the real binary share
//! sessions and the login throttle's counters through a throwaway
//! redis-server or PostgreSQL, and, with one `CSRF_KEY`, each other's CSRF
//! tokens.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use portcullis_tests::pg_harness::PgServer;
use portcullis_tests::redis_harness::RedisServer;
use portcullis_tests::{ExampleProcess, client, cookie_value};
use reqwest::StatusCode;

const SESSION: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";

/// `GET path` with a `Cookie` header (if any): status, the session cookie
/// set (if any), the pre-session cookie set (if any), the body.
async fn get(
    app: &ExampleProcess,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>, String) {
    let mut req = client().get(format!("{}{path}", base(app)));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let session = cookie_value(&resp, SESSION);
    let pre = cookie_value(&resp, PRE_SESSION);
    (status, session, pre, resp.text().await.unwrap())
}

/// A same-origin form `POST` with a `Cookie` header, as a browser sends it.
async fn post(
    app: &ExampleProcess,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", base(app)))
        .header("sec-fetch-site", "same-origin")
        .header("origin", base(app))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

/// `http://127.0.0.1:<port>` (the line the binary prints goes on after
/// the address).
fn base(app: &ExampleProcess) -> &str {
    app.url.split_whitespace().next().unwrap()
}

fn token_in(body: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).expect("a csrf_token field") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_owned()
}

#[tokio::test]
async fn sessions_and_their_csrf_tokens_are_shared_through_redis() {
    let redis = RedisServer::start();
    shared_by_two_instances(("REDIS_URL", &redis.url()), || redis.dbsize()).await;
}

#[tokio::test]
async fn sessions_and_their_csrf_tokens_are_shared_through_postgres() {
    let server = PgServer::shared();
    let database = server.fresh_database();
    let db = PgServer::database_of(&database);
    // Before the first instance starts, the table does not exist yet.
    let stored = || {
        server
            .psql(db, "SELECT count(*) FROM portcullis.sessions")
            .parse::<i64>()
            .unwrap()
    };
    shared_by_two_instances(("DATABASE_URL", &database), stored).await;
}

/// `stored` counts what the store holds (keys, rows).
async fn shared_by_two_instances(store: (&str, &str), stored: impl Fn() -> i64) {
    let key = "6a".repeat(32);
    let env = [store, ("CSRF_KEY", key.as_str())];
    let a = ExampleProcess::start(env!("CARGO_BIN_EXE_web-app"), &env);
    let b = ExampleProcess::start(env!("CARGO_BIN_EXE_web-app"), &env);

    // The login form on A (no session: a pre-session cookie); the login
    // itself on B (same key, same token).
    let (status, anon, pre, body) = get(&a, "/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(anon.is_none(), "the form starts no session");
    assert_eq!(stored(), 0, "nothing stored for an anonymous visitor");
    let pre = format!("{PRE_SESSION}={}", pre.expect("a pre-session cookie"));
    let resp = post(
        &b,
        "/login",
        &pre,
        &[
            ("username", "alice"),
            ("password", "wonderland"),
            ("csrf_token", &token_in(&body)),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = cookie_value(&resp, SESSION).expect("a new session id");
    assert!(stored() > 0, "the session lives in the shared store");
    let session = format!("{SESSION}={session}; {pre}");

    // Logged in on A too; log out on A, and B refuses the session.
    let (status, _, _, profile) = get(&a, "/profile", Some(&session)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(profile.contains("Alice Liddell"));
    let resp = post(
        &a,
        "/logout",
        &session,
        &[("csrf_token", &token_in(&profile))],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, _, _, _) = get(&b, "/profile", Some(&session)).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "B sends the logged-out user to /login"
    );

    // The login throttle counts in the same store: failures alternating
    // between A and B are blocked once their sum passes the 5 free ones
    // (per-instance counters would let each instance take 5, blocking at
    // the 11th attempt at the earliest).
    let mut blocked_at = None;
    for attempt in 1..=12 {
        let app = if attempt % 2 == 1 { &a } else { &b };
        let (_, _, pre, body) = get(app, "/login", None).await;
        let pre = format!("{PRE_SESSION}={}", pre.unwrap());
        let token = token_in(&body);
        let form = [
            ("username", "bob"),
            ("password", "not his password"),
            ("csrf_token", token.as_str()),
        ];
        let resp = post(app, "/login", &pre, &form).await;
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
