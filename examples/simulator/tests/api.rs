//! The simulator's HTTP API, against the real binary: each strategy behind
//! its real layers, the store operations and server time it reports per
//! request, the admin's revocation, the clock jump, reset, scale-out, the
//! insecure development cookie mode and Redis.

#![allow(clippy::unwrap_used)]

use portcullis_tests::redis_harness::{RedisServer, Reply};
use portcullis_tests::{ExampleProcess, client, cookie_value, set_cookies};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const ALICE: &str = r#"{"username":"alice","password":"wonderland"}"#;

fn start(envs: &[(&str, &str)]) -> ExampleProcess {
    ExampleProcess::start(env!("CARGO_BIN_EXE_simulator"), envs)
}

/// What the server reported about a request.
#[derive(Debug)]
struct Report {
    status: StatusCode,
    ops: u64,
    detail: String,
    received: Value,
    reason: Option<String>,
    clock: Option<u64>,
    instance: Option<String>,
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn report(resp: &Response) -> Report {
    let time: u64 = header(resp, "x-server-time-us")
        .expect("x-server-time-us on every answer")
        .parse()
        .unwrap();
    assert!(time < 10_000_000, "a plausible server time: {time} µs");
    assert_eq!(header(resp, "cache-control").as_deref(), Some("no-store"));
    Report {
        status: resp.status(),
        ops: header(resp, "x-store-ops")
            .expect("x-store-ops on every answer")
            .parse()
            .unwrap(),
        detail: header(resp, "x-store-ops-detail").unwrap_or_default(),
        received: serde_json::from_str(&header(resp, "x-received").unwrap()).unwrap(),
        reason: header(resp, "x-auth-reason"),
        clock: header(resp, "x-clock-offset-s").map(|c| c.parse().unwrap()),
        instance: header(resp, "x-instance"),
    }
}

/// A CSRF token from `GET {base}/csrf`, and the cookies it set.
async fn csrf(app: &ExampleProcess, base: &str, cookie: Option<&str>) -> (String, Vec<String>) {
    let mut req = client().get(app.at(&format!("{base}/csrf")));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookies = set_cookies(&resp)
        .into_iter()
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["header"], "x-csrf-token");
    (body["csrf_token"].as_str().unwrap().to_owned(), cookies)
}

async fn post(app: &ExampleProcess, path: &str, body: &str) -> Response {
    client()
        .post(app.at(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn get_with(app: &ExampleProcess, path: &str, name: &str, value: &str) -> Response {
    client()
        .get(app.at(path))
        .header(name, value)
        .send()
        .await
        .unwrap()
}

/// `POST /session/login` as alice, with `cookies` and, when given, the CSRF
/// token.
async fn post_session_login(
    app: &ExampleProcess,
    cookies: &[String],
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(app.at("/session/login"))
        .header("content-type", "application/json")
        .header("cookie", cookies.join("; "));
    if let Some(token) = token {
        req = req.header("x-csrf-token", token);
    }
    req.body(ALICE).send().await.unwrap()
}

/// Logs in to the session strategy; returns the `Cookie` header to send.
async fn session_login(app: &ExampleProcess) -> String {
    let (token, cookies) = csrf(app, "/session", None).await;
    let resp = post_session_login(app, &cookies, Some(&token)).await;
    let r = report(&resp);
    assert_eq!(r.status, StatusCode::OK);
    // The anonymous session that held the CSRF secret is read, then the
    // login renews the id: a new record, the old one deleted.
    assert_eq!(r.ops, 3, "{r:?}");
    assert_eq!(r.detail, "session.create=1,session.load=1,session.delete=1");
    let set = set_cookies(&resp);
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("__Host-session="), "{set:?}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set[0].contains(attr), "{attr} in {set:?}");
    }
    format!(
        "__Host-session={}",
        cookie_value(&resp, "__Host-session").unwrap()
    )
}

async fn jwt_login(app: &ExampleProcess, base: &str) -> String {
    let resp = post(app, &format!("{base}/login"), ALICE).await;
    let r = report(&resp);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.ops, 0, "minting a JWT stores nothing");
    assert!(set_cookies(&resp).is_empty());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    body["access_token"].as_str().unwrap().to_owned()
}

async fn profile(app: &ExampleProcess, base: &str, token: &str) -> Report {
    let resp = get_with(
        app,
        &format!("{base}/api/profile"),
        "authorization",
        &format!("Bearer {token}"),
    )
    .await;
    report(&resp)
}

#[tokio::test]
async fn page_assets_and_settings() {
    let app = start(&[]);
    let http = client();
    let page = http.get(app.at("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = header(&page, "content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    for needle in [
        "<script src=\"/simulator.js\" defer></script>",
        "<link rel=\"icon\" href=\"/favicon.svg\"",
        "id=\"scenario-revocation\"",
        "id=\"hybrid-refresh\"",
        "id=\"lesson-storage\"",
        "id=\"lesson-scale\"",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    // Nothing from elsewhere: the page works offline.
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "no external URL"
    );
    for (path, ty) in [
        ("/simulator.js", "text/javascript"),
        ("/simulator.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let resp = http.get(app.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            header(&resp, "content-type").unwrap().starts_with(ty),
            "{path}"
        );
    }
    let script = http
        .get(app.at("/simulator.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for banned in ["innerHTML", "eval(", "document.write", "new Function"] {
        assert!(!script.contains(banned), "{banned} in the page's script");
    }
    let config: Value = http
        .get(app.at("/sim/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["cookie_mode"], "secure");
    assert_eq!(config["session_store"], "memory");
    assert_eq!(config["cookies"]["session"], "__Host-session");
    assert_eq!(config["cookies"]["refresh"], "__Host-refresh");
    assert_eq!(config["cookies"]["refresh_path"], "/");
}

#[tokio::test]
async fn session_is_one_lookup_per_request_and_revocation_is_instant() {
    let app = start(&[]);
    // The CSRF layer is real: a login without the token is refused before
    // the handler runs.
    let (_, anon) = csrf(&app, "/session", None).await;
    let resp = post_session_login(&app, &anon, None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let cookie = session_login(&app).await;
    for _ in 0..3 {
        let resp = get_with(&app, "/session/api/profile", "cookie", &cookie).await;
        let r = report(&resp);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!((r.ops, r.detail.as_str()), (1, "session.load=1"));
        assert_eq!(r.received["cookies"], json!(["__Host-session"]));
        assert_eq!(r.received["cookie_bytes"], cookie.len());
        assert_eq!(r.received["authorization_bytes"], 0);
        let body = resp.text().await.unwrap();
        assert!(body.contains("\"user\":\"alice\""), "{body}");
        // Sizes and names only: never the id itself.
        let value = cookie.split_once('=').unwrap().1;
        assert!(!header_text(&r).contains(value));
    }
    // The admin deletes alice's sessions: one per-user store call.
    let resp = post(&app, "/session/admin/revoke", r#"{"user":"alice"}"#).await;
    let r = report(&resp);
    assert_eq!((r.ops, r.detail.as_str()), (1, "session.per_user=1"));
    assert_eq!(resp.json::<Value>().await.unwrap()["sessions_deleted"], 1);
    // The next request: looked up, missing, refused, cookie cleared.
    let resp = get_with(&app, "/session/api/profile", "cookie", &cookie).await;
    let r = report(&resp);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.ops, 1);
    assert!(
        set_cookies(&resp)[0].starts_with("__Host-session=; Max-Age=0"),
        "{:?}",
        set_cookies(&resp)
    );
}

fn header_text(r: &Report) -> String {
    format!("{r:?}")
}

#[tokio::test]
async fn session_expiry_and_reset() {
    let app = start(&[]);
    let cookie = session_login(&app).await;
    let resp = post(&app, "/session/admin/expire", "").await;
    let r = report(&resp);
    assert_eq!(r.ops, 0);
    assert_eq!(r.clock, Some(31 * 60));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["advanced_secs"], 31 * 60);
    // Past the 30-minute idle timeout: the store says there is no session.
    let r = report(&get_with(&app, "/session/api/profile", "cookie", &cookie).await);
    assert_eq!((r.status, r.ops), (StatusCode::UNAUTHORIZED, 1));
    assert_eq!(r.clock, Some(31 * 60));

    let resp = client()
        .post(app.at("/session/admin/reset"))
        .send()
        .await
        .unwrap();
    let r = report(&resp);
    assert_eq!((r.status, r.clock), (StatusCode::OK, Some(0)));
    let cleared = set_cookies(&resp);
    assert!(
        cleared[0].starts_with("__Host-session=; Max-Age=0") && cleared[0].contains("Path=/"),
        "{cleared:?}"
    );
    // A fresh instance: logging in works again, and its clock starts at 0.
    let cookie = session_login(&app).await;
    let r = report(&get_with(&app, "/session/api/profile", "cookie", &cookie).await);
    assert_eq!((r.status, r.clock), (StatusCode::OK, Some(0)));
}

#[tokio::test]
async fn plain_jwt_cannot_be_revoked_and_pushed_revocation_is_instant() {
    let app = start(&[]);
    let plain = jwt_login(&app, "/jwt").await;
    let pushed = jwt_login(&app, "/jwt-revocation").await;
    for (base, token) in [("/jwt", &plain), ("/jwt-revocation", &pushed)] {
        let r = profile(&app, base, token).await;
        assert_eq!((r.status, r.ops), (StatusCode::OK, 0), "{base}");
        assert_eq!(r.received["authorization_bytes"], token.len() + 7);
        assert_eq!(r.received["authorization_scheme"], "Bearer");
        assert_eq!(r.received["cookie_bytes"], 0);
    }

    // Plain JWT: nothing to delete, and the token still works.
    let resp = post(&app, "/jwt/admin/revoke", r#"{"user":"alice"}"#).await;
    assert_eq!(report(&resp).ops, 0);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["nothing_to_delete"],
        true
    );
    let r = profile(&app, "/jwt", &plain).await;
    assert_eq!((r.status, r.ops), (StatusCode::OK, 0), "still valid");

    // Pushed: one write to the revocation store, then refused at once,
    // from memory.
    let resp = post(&app, "/jwt-revocation/admin/revoke", r#"{"user":"alice"}"#).await;
    let r = report(&resp);
    assert_eq!((r.ops, r.detail.as_str()), (1, "revocation.revoke_user=1"));
    assert_eq!(resp.json::<Value>().await.unwrap()["token_version"], 1);
    let r = profile(&app, "/jwt-revocation", &pushed).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.ops, 0, "the view is in process: no store call");
    assert_eq!(r.reason.as_deref(), Some("revoked"));
    // A new login carries the new version and works.
    let fresh = jwt_login(&app, "/jwt-revocation").await;
    assert_eq!(
        profile(&app, "/jwt-revocation", &fresh).await.status,
        StatusCode::OK
    );

    // Expiry: past the 15-minute lifetime (plus the 5 s leeway).
    let resp = post(&app, "/jwt/admin/expire", "").await;
    assert_eq!(report(&resp).clock, Some(16 * 60));
    let r = profile(&app, "/jwt", &plain).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason.as_deref(), Some("expired"));
    // Each strategy has its own clock.
    assert_eq!(
        profile(&app, "/jwt-revocation", &fresh).await.status,
        StatusCode::OK
    );
    // A token from one strategy means nothing to another (its own key).
    let r = profile(&app, "/jwt", &fresh).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hybrid_refreshes_rotate_and_revocation_kills_both_tokens() {
    let app = start(&[]);
    let resp = post(&app, "/hybrid/auth/login", ALICE).await;
    let r = report(&resp);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!((r.ops, r.detail.as_str()), (1, "refresh.create=1"));
    let set = set_cookies(&resp);
    assert!(set[0].starts_with("__Host-refresh="), "{set:?}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set[0].split("; ").any(|a| a == attr), "{attr} in {set:?}");
    }
    let refresh = format!(
        "__Host-refresh={}",
        cookie_value(&resp, "__Host-refresh").unwrap()
    );
    let access = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = profile(&app, "/hybrid", &access).await;
    assert_eq!((r.status, r.ops), (StatusCode::OK, 0));

    // The access token expires; the refresh token does not.
    post(&app, "/hybrid/admin/expire", "").await;
    let r = profile(&app, "/hybrid", &access).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason.as_deref(), Some("expired"));
    let refresh_once = |cookie: String| {
        let url = app.at("/hybrid/auth/refresh");
        async move {
            client()
                .post(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = refresh_once(refresh.clone()).await;
    let r = report(&resp);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!((r.ops, r.detail.as_str()), (1, "refresh.rotate=1"));
    let rotated = cookie_value(&resp, "__Host-refresh").unwrap();
    assert_ne!(format!("__Host-refresh={rotated}"), refresh);
    let access = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        profile(&app, "/hybrid", &access).await.status,
        StatusCode::OK
    );

    // The admin: the version bumped, the user's families deleted, and each
    // deleted family's `sid` pushed (an access token minted by a refresh
    // racing the revocation dies too).
    let resp = post(&app, "/hybrid/admin/revoke", r#"{"user":"alice"}"#).await;
    let r = report(&resp);
    assert_eq!(r.ops, 3);
    assert_eq!(
        r.detail,
        "refresh.revoke_user=1,revocation.revoke_session=1,revocation.revoke_user=1"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            body["families_deleted"].clone(),
            body["token_version"].clone()
        ),
        (json!(1), json!(1))
    );
    let r = profile(&app, "/hybrid", &access).await;
    assert_eq!((r.status, r.ops), (StatusCode::UNAUTHORIZED, 0));
    assert_eq!(r.reason.as_deref(), Some("revoked"));
    let resp = refresh_once(format!("__Host-refresh={rotated}")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&resp)[0].starts_with("__Host-refresh=; Max-Age=0"));
}

/// Concurrent requests to one strategy each report their own operations.
#[tokio::test]
async fn counts_belong_to_one_request_under_concurrency() {
    let app = start(&[]);
    let cookie = session_login(&app).await;
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let url = app.at("/session/api/profile");
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            report(&resp)
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.ops), (StatusCode::OK, 1), "{r:?}");
    }
}

#[tokio::test]
async fn scale_out_per_instance_store_loses_the_session() {
    let app = start(&[]);
    for variant in ["session-local", "session-shared"] {
        let base = format!("/scale/{variant}");
        let r = report(&post(&app, &format!("{base}/admin/reset"), "").await);
        assert_eq!(r.status, StatusCode::OK);
        // The CSRF token comes from A; the login goes to B, which verifies
        // it with the shared key.
        let (token, cookies) = csrf(&app, &base, None).await;
        let resp = client()
            .post(app.at(&format!("{base}/login")))
            .header("content-type", "application/json")
            .header("cookie", cookies.join("; "))
            .header("x-csrf-token", token)
            .body(ALICE)
            .send()
            .await
            .unwrap();
        let r = report(&resp);
        assert_eq!(
            (r.status, r.instance.as_deref()),
            (StatusCode::OK, Some("B"))
        );
        let name = format!("__Secure-scale-{variant}");
        let set = set_cookies(&resp);
        assert!(set[0].contains(&format!("Path={base}")), "{set:?}");
        let cookie = format!("{name}={}", cookie_value(&resp, &name).unwrap());
        let on_a = get_with(&app, &format!("{base}/api/profile"), "cookie", &cookie).await;
        let r = report(&on_a);
        assert_eq!(r.instance.as_deref(), Some("A"));
        let on_b = report(&get_with(&app, &format!("{base}/api/profile"), "cookie", &cookie).await);
        assert_eq!(on_b.instance.as_deref(), Some("B"));
        assert_eq!(on_b.status, StatusCode::OK, "B holds it in {variant}");
        if variant == "session-local" {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "A never saw it");
            assert!(
                set_cookies(&on_a)[0].contains("Max-Age=0"),
                "A clears the cookie"
            );
        } else {
            assert_eq!(r.status, StatusCode::OK, "the shared store has it");
        }
    }
    // JWT: both instances verify with the same key, no store.
    post(&app, "/scale/jwt/admin/reset", "").await;
    let token = post(&app, "/scale/jwt/login", ALICE)
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for instance in ["B", "A"] {
        let r = profile(&app, "/scale/jwt", &token).await;
        assert_eq!((r.status, r.ops), (StatusCode::OK, 0));
        assert_eq!(r.instance.as_deref(), Some(instance));
    }
}

/// Another site cannot drive the simulator: its cross-site POSTs are
/// refused before they reach a strategy.
#[tokio::test]
async fn other_sites_cannot_drive_the_controls() {
    let app = start(&[]);
    let token = jwt_login(&app, "/jwt-revocation").await;
    for path in [
        "/jwt-revocation/admin/revoke",
        "/jwt-revocation/admin/expire",
        "/jwt-revocation/admin/reset",
        "/jwt/login",
    ] {
        let resp = client()
            .post(app.at(path))
            .header("sec-fetch-site", "cross-site")
            .header("origin", "http://evil.example")
            .header("content-type", "application/json")
            .body(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let r = profile(&app, "/jwt-revocation", &token).await;
    assert_eq!(
        (r.status, r.clock),
        (StatusCode::OK, Some(0)),
        "nothing changed"
    );
    // The page's own requests are same-origin.
    let resp = client()
        .post(app.at("/jwt-revocation/admin/expire"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn insecure_dev_cookie_mode_says_what_it_is() {
    let app = start(&[("PORTCULLIS_INSECURE_DEV_COOKIES", "1")]);
    let config: Value = client()
        .get(app.at("/sim/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["cookie_mode"], "insecure-dev");
    assert_eq!(config["cookies"]["session"], "session");
    let (token, cookies) = csrf(&app, "/session", None).await;
    assert!(cookies[0].starts_with("session="), "{cookies:?}");
    let resp = post_session_login(&app, &cookies, Some(&token)).await;
    let set = set_cookies(&resp);
    assert!(
        set[0].starts_with("session=") && !set[0].contains("Secure"),
        "{set:?}"
    );
    assert!(
        set[0].contains("HttpOnly") && set[0].contains("SameSite=Lax"),
        "{set:?}"
    );
    let resp = post(&app, "/hybrid/auth/login", ALICE).await;
    let set = set_cookies(&resp);
    assert!(
        set[0].starts_with("refresh=") && !set[0].contains("Secure"),
        "{set:?}"
    );
    assert!(
        set[0].split("; ").any(|a| a == "Path=/") && set[0].contains("HttpOnly"),
        "{set:?}"
    );
}

#[tokio::test]
async fn redis_url_puts_sessions_in_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let app = start(&[("REDIS_URL", url.as_str())]);
    let config: Value = client()
        .get(app.at("/sim/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["session_store"], "redis");
    let cookie = session_login(&app).await;
    let keys = |pattern: &str| match redis.command(&["KEYS", pattern]) {
        Reply::Array(Some(keys)) => keys.len(),
        other => panic!("KEYS: {other:?}"),
    };
    assert_eq!(
        keys("portcullis-simulator:s:*"),
        1,
        "alice's session is in Redis"
    );
    let r = report(&get_with(&app, "/session/api/profile", "cookie", &cookie).await);
    assert_eq!((r.status, r.ops), (StatusCode::OK, 1));
    post(&app, "/session/admin/revoke", r#"{"user":"alice"}"#).await;
    assert_eq!(keys("portcullis-simulator:s:*"), 0, "revoked in Redis");
    let r = report(&get_with(&app, "/session/api/profile", "cookie", &cookie).await);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
