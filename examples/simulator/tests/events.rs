//! The authentication events of each request, as the simulator reports
//! them beside its store operations (`x-auth-events`), against the real
//! binary: what the real layers emitted for that request, and nothing of
//! another request's.

#![allow(clippy::unwrap_used)]

use portcullis_tests::{ExampleProcess, client, cookie_value, set_cookies};
use reqwest::{Response, StatusCode};
use serde_json::Value;

const ALICE: &str = r#"{"username":"alice","password":"wonderland"}"#;

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The events the server reported for the request.
fn events(resp: &Response) -> Vec<String> {
    header(resp, "x-auth-events")
        .map(|e| e.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

async fn post(app: &ExampleProcess, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut req = client()
        .post(app.at(path))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body.to_owned()).send().await.unwrap()
}

async fn get(app: &ExampleProcess, path: &str, name: &str, value: &str) -> Response {
    client()
        .get(app.at(path))
        .header(name, value)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_request_lists_the_events_it_emitted() {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_simulator"), &[]);

    // Session: a login without the CSRF token is refused by the CSRF layer.
    let resp = client().get(app.at("/session/csrf")).send().await.unwrap();
    assert!(events(&resp).is_empty(), "{:?}", events(&resp));
    let anon: Vec<String> = set_cookies(&resp)
        .into_iter()
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect();
    let token = resp.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = anon.join("; ");
    let resp = post(&app, "/session/login", &[("cookie", &cookie)], ALICE).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let reason = header(&resp, "x-auth-reason").unwrap();
    assert_eq!(events(&resp), [format!("csrf_refused({reason})")]);

    // With the token: a login, next to its store operations.
    let resp = post(
        &app,
        "/session/login",
        &[("cookie", &cookie), ("x-csrf-token", &token)],
        ALICE,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(&resp, "x-store-ops-detail")
            .unwrap()
            .contains("session.create=1")
    );
    assert!(
        events(&resp).contains(&"login_succeeded".to_owned()),
        "{:?}",
        events(&resp)
    );
    let session = format!(
        "__Host-session={}",
        cookie_value(&resp, "__Host-session").unwrap()
    );
    // A plain authenticated request emits nothing.
    let resp = get(&app, "/session/api/profile", "cookie", &session).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(events(&resp).is_empty(), "{:?}", events(&resp));

    // JWT: an expired token is refused, and the event says why.
    let resp = post(&app, "/jwt/login", &[], ALICE).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let resp = get(&app, "/jwt/api/profile", "authorization", &bearer).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(events(&resp).is_empty(), "{:?}", events(&resp));
    let resp = post(&app, "/jwt/admin/expire", &[], "").await;
    assert!(events(&resp).is_empty(), "{:?}", events(&resp));
    let resp = get(&app, "/jwt/api/profile", "authorization", &bearer).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&resp, "x-auth-reason").as_deref(), Some("expired"));
    assert_eq!(events(&resp), ["jwt_refused(expired)"]);

    // Hybrid: the refresher's login.
    let resp = post(&app, "/hybrid/auth/login", &[], ALICE).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        events(&resp).contains(&"login_succeeded".to_owned()),
        "{:?}",
        events(&resp)
    );
}
