//! `Option<CurrentUser>` and the login-required guard, through a real axum
//! server: a page greets a visitor without a 401, a guarded page sends a
//! browser to the login form (303, `next` = where it was going), a guarded
//! API keeps its 401 problem+json.

use axum::Router;
use axum::routing::{get, post};
use portcullis::session::{
    CurrentUser, MemoryStore, RequireLoginLayer, Session, SessionConfig, SessionError, SessionLayer,
};
use portcullis_tests::{TestServer, client, cookie_value};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION};

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

async fn server() -> TestServer {
    let config = SessionConfig::default();
    let layer = SessionLayer::new(MemoryStore::new(), config).unwrap();
    let guarded = Router::new()
        .route(
            "/account",
            get(|CurrentUser(user): CurrentUser| async move { format!("account of {user}") }),
        )
        .route(
            "/api/orders",
            get(|| async { "[]" }).post(|| async { "ordered" }),
        )
        .route_layer(RequireLoginLayer::redirect_to("/login").unwrap());
    let app = Router::new()
        .route(
            "/",
            get(|user: Option<CurrentUser>| async move {
                match user {
                    Some(CurrentUser(user)) => format!("welcome back, {user}"),
                    None => "welcome, visitor".to_owned(),
                }
            }),
        )
        .route(
            "/login",
            post(|session: Session| async move {
                session.login("alice").await?;
                Ok::<_, SessionError>("logged in")
            }),
        )
        .merge(guarded)
        .layer(layer);
    TestServer::start(app).await
}

async fn login(server: &TestServer) -> String {
    let resp = client().post(server.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(&resp, "__Host-session").expect("session cookie");
    format!("__Host-session={cookie}")
}

#[tokio::test]
async fn optional_current_user_is_none_when_logged_out_never_a_401() {
    let server = server().await;
    let http = client();
    let resp = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "welcome, visitor");

    let cookie = login(&server).await;
    let resp = http
        .get(server.url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "welcome back, alice");
}

#[tokio::test]
async fn a_guarded_page_redirects_a_browser_to_the_login_form() {
    let server = server().await;
    let http = client();
    let resp = http
        .get(server.url("/account?tab=security&x=a%20b"))
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers()[LOCATION],
        "/login?next=/account%3Ftab%3Dsecurity%26x%3Da%2520b"
    );

    let cookie = login(&server).await;
    let resp = http
        .get(server.url("/account"))
        .header(ACCEPT, HTML)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "account of alice");
}

#[tokio::test]
async fn a_guarded_api_keeps_its_401_problem_json() {
    let server = server().await;
    let http = client();
    for req in [
        http.get(server.url("/api/orders"))
            .header(ACCEPT, "application/json"),
        http.get(server.url("/api/orders")),
        // A form post from a page is not a navigation to redirect.
        http.post(server.url("/api/orders")).header(ACCEPT, HTML),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().get(LOCATION).is_none());
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
    }
    let cookie = login(&server).await;
    let resp = http
        .get(server.url("/api/orders"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
