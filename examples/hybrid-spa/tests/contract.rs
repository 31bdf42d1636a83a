//! The example's JSON contract, against the real binary.

use portcullis_tests::{ExampleProcess, client, cookie_value, get_json_with_bearer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const COOKIE: &str = "__Host-refresh";

#[tokio::test]
async fn contract() {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_hybrid-spa"), &[]);
    let http = client();
    let page = http.get(app.at("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("let accessToken = null")
    );

    let bad = http
        .post(app.at("/auth/login"))
        .json(&json!({"username": "alice", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    // A cross-site form can post `text/plain` that parses as JSON: refused.
    let form = http
        .post(app.at("/auth/login"))
        .header("content-type", "text/plain")
        .body(r#"{"username":"alice","password":"wonderland","x":"="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(cookie_value(&form, COOKIE).is_none());

    let login = |user: &'static str, pw: &'static str| {
        http.post(app.at("/auth/login"))
            .json(&json!({"username": user, "password": pw}))
            .send()
    };
    let resp = login("alice", "wonderland").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(&resp, COOKIE).unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().unwrap().to_owned();

    let me: Value = get_json_with_bearer(app.at("/api/me"), &access).await;
    assert_eq!(me["user"], "alice");
    assert_eq!(
        http.get(app.at("/api/me")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let resp = http
        .post(app.at("/auth/refresh"))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rotated = cookie_value(&resp, COOKIE).unwrap();
    assert_ne!(rotated, cookie);
    let access2 = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let second = login("alice", "wonderland").await.unwrap();
    let second_access = second.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let devices: Value = get_json_with_bearer(app.at("/auth/sessions"), &access2).await;
    let list = devices["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let other = list.iter().find(|d| d["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = http
        .delete(app.at(&format!("/auth/sessions/{other}")))
        .bearer_auth(&access2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        http.get(app.at("/api/me"))
            .bearer_auth(&second_access)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "the other device's access token died at once"
    );

    let resp = http
        .post(app.at("/auth/logout"))
        .header("cookie", format!("{COOKIE}={rotated}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        http.get(app.at("/api/me"))
            .bearer_auth(&access2)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let bob = login("bob", "builder").await.unwrap();
    let bob_cookie = cookie_value(&bob, COOKIE).unwrap();
    let resp = http
        .post(app.at("/auth/logout-everywhere"))
        .header("cookie", format!("{COOKIE}={bob_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ended": 1}));
}
