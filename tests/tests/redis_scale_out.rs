//! Scale-out: three app servers on distinct ports share one Redis (each
//! with its own connection, as separate processes would have), behind no
//! sticky routing. What one instance does, the others see at once.

use futures_util::future::join_all;
use portcullis::session::{CapPolicy, SessionConfig};
use portcullis_redis::RedisConfig;
use portcullis_tests::cookie_value;
use portcullis_tests::redis_harness::{Fleet, RedisCluster, RedisServer};
use reqwest::StatusCode;
use serde_json::Value;

const COOKIE: &str = "__Host-session";

async fn fleet(redis: &RedisServer) -> Fleet {
    let url = redis.url();
    Fleet::start(3, || RedisConfig::new(url.clone()), SessionConfig::default).await
}

#[tokio::test]
async fn a_session_created_on_a_works_on_b_and_c() {
    let redis = RedisServer::start();
    let f = fleet(&redis).await;
    let alice = f.login(0, "alice").await;
    for app in 0..3 {
        assert_eq!(
            f.me(app, &alice).await,
            (StatusCode::OK, Some("alice".into()))
        );
    }
    // Data written on B reads back on C; a write on C and one on A to
    // different keys both survive.
    let resp = f.post(1, "/set/theme/dark", Some(&alice)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let read = |app, key: &'static str| {
        let f = &f;
        let alice = &alice;
        async move {
            f.get(app, &format!("/get/{key}"), alice)
                .await
                .json::<Value>()
                .await
                .unwrap()["value"]
                .clone()
        }
    };
    assert_eq!(read(2, "theme").await, "dark");
    let (a, c) = tokio::join!(
        f.post(0, "/set/lang/fr", Some(&alice)),
        f.post(2, "/set/tz/utc", Some(&alice)),
    );
    assert_eq!((a.status(), c.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(read(1, "theme").await, "dark");
    assert_eq!(read(1, "lang").await, "fr");
    assert_eq!(read(1, "tz").await, "utc");
}

#[tokio::test]
async fn logout_on_b_is_refused_on_a_at_once() {
    let redis = RedisServer::start();
    let f = fleet(&redis).await;
    let alice = f.login(0, "alice").await;
    assert_eq!(f.me(0, &alice).await.0, StatusCode::OK);
    let resp = f.post(1, "/logout", Some(&alice)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The very next request, on the instance that created the session and
    // on a third one: no cache anywhere keeps it alive.
    assert_eq!(f.me(0, &alice).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(2, &alice).await.0, StatusCode::UNAUTHORIZED);
    // An in-flight write elsewhere does not bring it back.
    let resp = f.post(2, "/set/k/v", Some(&alice)).await;
    assert_eq!(resp.status(), StatusCode::OK, "a new anonymous session");
    assert_ne!(cookie_value(&resp, COOKIE).as_deref(), Some(alice.as_str()));
    assert_eq!(f.me(0, &alice).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_everywhere_and_revocation_reach_every_instance() {
    let redis = RedisServer::start();
    let f = fleet(&redis).await;
    let on: Vec<String> = join_all((0..3).map(|app| f.login(app, "alice"))).await;
    let bob = f.login(1, "bob").await;
    // The list, read on any instance, holds the sessions made on all.
    let list: Vec<Value> = f.get(2, "/sessions", &on[0]).await.json().await.unwrap();
    assert_eq!(list.len(), 3);
    // Revoke the session made on B from C; A refuses it at once.
    let target = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = f.post(2, &format!("/revoke/{target}"), Some(&on[0])).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["revoked"], true);
    let alive: Vec<StatusCode> = join_all(on.iter().map(|c| f.me(0, c)))
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        alive.iter().filter(|s| **s == StatusCode::OK).count(),
        2,
        "{alive:?}"
    );
    // Log out everywhere from C: every session of alice, made anywhere,
    // is refused everywhere; bob is untouched.
    let resp = f.post(2, "/logout-everywhere", Some(&on[0])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    for cookie in &on {
        for app in 0..3 {
            assert_eq!(f.me(app, cookie).await.0, StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(f.me(0, &bob).await, (StatusCode::OK, Some("bob".into())));
}

#[tokio::test]
async fn the_session_cap_holds_across_instances() {
    let redis = RedisServer::start();
    let url = redis.url();
    let f = Fleet::start(
        3,
        || RedisConfig::new(url.clone()),
        || SessionConfig::default().max_sessions_per_user(1, CapPolicy::Refuse),
    )
    .await;
    // Twelve logins race on three instances: exactly one fits.
    let results = join_all((0..12).map(|i| f.post(i % 3, "/login/alice", None))).await;
    let statuses: Vec<StatusCode> = results.iter().map(reqwest::Response::status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::FORBIDDEN),
        "{statuses:?}"
    );
    let winner = results
        .iter()
        .find(|r| r.status() == StatusCode::OK)
        .and_then(|r| cookie_value(r, COOKIE))
        .unwrap();
    let list: Vec<Value> = f.get(1, "/sessions", &winner).await.json().await.unwrap();
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn scale_out_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let f = Fleet::start(
        2,
        || RedisConfig::cluster(urls.clone()),
        SessionConfig::default,
    )
    .await;
    let alice = f.login(0, "alice").await;
    let other = f.login(1, "alice").await;
    assert_eq!(
        f.me(1, &alice).await,
        (StatusCode::OK, Some("alice".into()))
    );
    let resp = f.post(1, "/logout", Some(&alice)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(f.me(0, &alice).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(0, &other).await.0, StatusCode::OK);
    let resp = f.post(0, "/logout-everywhere", Some(&other)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(f.me(1, &other).await.0, StatusCode::UNAUTHORIZED);
}
