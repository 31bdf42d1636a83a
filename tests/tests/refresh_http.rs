//! The hybrid pattern end to end: login, rotation, reuse detection, grace,
//! expiry, device logout killing live access tokens, CSRF on cookie-borne
//! requests, malformed input, store outage. Real axum server, real socket.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis::refresh::Transport;
use portcullis_tests::refresh_app::{
    self, COOKIE, HybridApp, Login, api, post_login, refresh, refreshed, start_memory,
};
use portcullis_tests::{client, cookie_value, get_json_with_bearer, set_cookies};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn app() -> HybridApp {
    start_memory(|c| c).await
}

/// Logs in; cookie mode never puts the refresh token in the body.
async fn login(app: &HybridApp, user: &str) -> Login {
    let l = refresh_app::login(app, user).await;
    assert!(
        l.body.get("refresh_token").is_none(),
        "cookie mode never puts the refresh token in the body"
    );
    l
}

#[tokio::test]
async fn login_sets_the_cookie_with_exact_attributes() {
    let app = app().await;
    let resp = post_login(&app, "alice", &[]).await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let token = cookie_value(&resp, COOKIE).unwrap();
    assert_eq!(
        set_cookies(&resp),
        vec![format!(
            "{COOKIE}={token}; Max-Age=604800; Path=/; Secure; HttpOnly; SameSite=Strict"
        )]
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().unwrap();
    let me: Value = get_json_with_bearer(app.server.url("/api/me"), access).await;
    assert_eq!(me["user"], "alice");
    assert_eq!(
        me["sid"],
        token.split('.').next().unwrap(),
        "the access token carries the family as sid"
    );
    assert_eq!(me["ver"], 0);
}

#[tokio::test]
async fn rotation_and_the_old_token_dies_outside_grace() {
    let app = app().await;
    let l = login(&app, "alice").await;
    let r1 = refreshed(&app, &l.refresh).await;
    assert_ne!(r1.refresh, l.refresh);
    assert_eq!(api(&app, &r1.access).await, StatusCode::OK);
    let r2 = refreshed(&app, &r1.refresh).await;
    app.clock.advance(Duration::from_secs(11));
    // r1 is the previous token, 11 s after its rotation: reuse.
    let resp = refresh(&app, &r1.refresh).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Path=/;"))
    );
    // Reuse revoked the family: the newest token and the live access token die too.
    assert_eq!(
        refresh(&app, &r2.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api(&app, &r2.access).await, StatusCode::UNAUTHORIZED);
    let events = app.events.reuses();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn reuse_by_an_attacker_first_kills_the_victim_too() {
    let app = app().await;
    let victim = login(&app, "alice").await;
    let stolen = victim.refresh.clone();
    let attacker = refreshed(&app, &stolen).await;
    app.clock.advance(Duration::from_secs(30));
    let resp = refresh(&app, &victim.refresh).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the victim's token is now a reuse"
    );
    assert_eq!(
        refresh(&app, &attacker.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "attacker's chain revoked"
    );
    assert_eq!(
        api(&app, &attacker.access).await,
        StatusCode::UNAUTHORIZED,
        "attacker's access token dead at once"
    );
}

#[tokio::test]
async fn twenty_concurrent_refreshes_in_grace_all_succeed_with_one_successor() {
    let app = Arc::new(app().await);
    let l = login(&app, "alice").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = Arc::clone(&app);
            let token = l.refresh.clone();
            tokio::spawn(async move {
                let resp = refresh(&app, &token).await;
                (resp.status(), cookie_value(&resp, COOKIE))
            })
        })
        .collect();
    let mut successors = std::collections::HashSet::new();
    for t in tasks {
        let (status, cookie) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        successors.insert(cookie.unwrap());
    }
    assert_eq!(
        successors.len(),
        1,
        "every racer got the same successor: no fork, no logout"
    );
    let successor = successors.into_iter().next().unwrap();
    let next = refreshed(&app, &successor).await;
    assert_eq!(api(&app, &next.access).await, StatusCode::OK);
    let devices = app.refresher.devices("alice", None).await.unwrap();
    assert_eq!(devices.len(), 1);
}

#[tokio::test]
async fn a_lost_response_then_a_retry_succeeds() {
    let app = app().await;
    let l = login(&app, "alice").await;
    let first = refreshed(&app, &l.refresh).await; // the client never saw this answer
    app.clock.advance(Duration::from_secs(3));
    let retry = refreshed(&app, &l.refresh).await;
    assert_eq!(
        retry.refresh, first.refresh,
        "the retry gets the same successor"
    );
    assert_eq!(api(&app, &retry.access).await, StatusCode::OK);
    assert!(app.events.reuses().is_empty(), "no reuse alarm");
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let app = app().await;
    let l = login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        refresh(&app, &l.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "idle 7 days"
    );

    let mut token = login(&app, "bob").await.refresh;
    let mut refreshed_for = 0u64;
    loop {
        app.clock.advance(Duration::from_secs(6 * 24 * 3600));
        refreshed_for += 6;
        let resp = refresh(&app, &token).await;
        if resp.status() != StatusCode::OK {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            break;
        }
        let set = set_cookies(&resp).join("");
        let max_age: u64 = set
            .split("Max-Age=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age <= 30 * 24 * 3600 - refreshed_for * 24 * 3600 + 7 * 24 * 3600);
        token = cookie_value(&resp, COOKIE).unwrap();
    }
    assert_eq!(
        refreshed_for, 30,
        "refused at the first refresh past the 30-day absolute lifetime"
    );
}

#[tokio::test]
async fn logout_this_device_kills_its_access_token_but_not_another_devices() {
    let app = app().await;
    let phone = login(&app, "alice").await;
    let laptop = login(&app, "alice").await;
    let resp = client()
        .post(app.server.url("/auth/logout"))
        .header("cookie", format!("{COOKIE}={}", phone.refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        set_cookies(&resp),
        vec![format!(
            "{COOKIE}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure; HttpOnly; SameSite=Strict"
        )]
    );
    assert_eq!(
        api(&app, &phone.access).await,
        StatusCode::UNAUTHORIZED,
        "the phone's access token died at once"
    );
    assert_eq!(
        refresh(&app, &phone.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api(&app, &laptop.access).await,
        StatusCode::OK,
        "the laptop is untouched"
    );
    assert_eq!(
        refresh(&app, &laptop.refresh).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_everywhere_kills_every_device() {
    let app = app().await;
    let a = login(&app, "alice").await;
    let b = login(&app, "alice").await;
    let bob = login(&app, "bob").await;
    let resp = client()
        .post(app.server.url("/auth/logout-everywhere"))
        .header("cookie", format!("{COOKIE}={}", a.refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ended": 2}));
    for l in [&a, &b] {
        assert_eq!(api(&app, &l.access).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refresh(&app, &l.refresh).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        api(&app, &bob.access).await,
        StatusCode::OK,
        "bob untouched"
    );
    let again = login(&app, "alice").await;
    assert_eq!(
        api(&app, &again.access).await,
        StatusCode::OK,
        "a new login works (new ver)"
    );
}

#[tokio::test]
async fn cross_site_cookie_requests_are_refused_before_any_store_call() {
    let app = app().await;
    let l = login(&app, "alice").await;
    let before = app.store_calls.load(Ordering::SeqCst);
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
    ] {
        for path in ["/auth/refresh", "/auth/logout", "/auth/logout-everywhere"] {
            let resp = client()
                .post(app.server.url(path))
                .header("cookie", format!("{COOKIE}={}", l.refresh))
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::FORBIDDEN,
                "{path} with {name}: {value}"
            );
            assert!(
                set_cookies(&resp).is_empty(),
                "a refused cross-site request never touches the cookie"
            );
        }
    }
    assert_eq!(
        app.store_calls.load(Ordering::SeqCst),
        before,
        "refused before the store"
    );
    assert_eq!(
        refresh(&app, &l.refresh).await.status(),
        StatusCode::OK,
        "the token still works"
    );
}

#[tokio::test]
async fn malformed_oversized_duplicated_cookies_cost_no_store_call() {
    let app = app().await;
    let l = login(&app, "alice").await;
    let before = app.store_calls.load(Ordering::SeqCst);
    let long = "A".repeat(5000);
    for (cookie, status) in [
        (format!("{COOKIE}=garbage"), StatusCode::UNAUTHORIZED),
        (format!("{COOKIE}={long}"), StatusCode::UNAUTHORIZED),
        (format!("{COOKIE}={}x", l.refresh), StatusCode::UNAUTHORIZED),
        (
            format!("{COOKIE}={}", l.refresh.replace('.', "-")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            format!("{COOKIE}={0}; {COOKIE}={0}", l.refresh),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let resp = client()
            .post(app.server.url("/auth/refresh"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{}", &cookie[..cookie.len().min(60)]);
    }
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "no token at all");
    assert_eq!(
        app.store_calls.load(Ordering::SeqCst),
        before,
        "no store call for any of them"
    );
    let resp = client()
        .get(app.server.url("/auth/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_failing_store_gives_503_and_the_token_survives() {
    let app = app().await;
    let l = login(&app, "alice").await;
    app.down.store(true, Ordering::SeqCst);
    let resp = refresh(&app, &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        set_cookies(&resp).is_empty(),
        "an outage never clears the cookie"
    );
    let resp = post_login(&app, "bob", &[]).await;
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "login during an outage"
    );
    app.clock.advance(Duration::from_secs(60));
    app.down.store(false, Ordering::SeqCst);
    let r = refreshed(&app, &l.refresh).await;
    assert_eq!(
        api(&app, &r.access).await,
        StatusCode::OK,
        "the token survived the outage"
    );
}

#[tokio::test]
async fn body_transport_for_native_clients() {
    let app = start_memory(|c| c.transport(Transport::Either)).await;
    let resp = post_login(&app, "alice", &[("x-refresh-transport", "body")]).await;
    assert!(
        set_cookies(&resp).is_empty(),
        "body mode never sets a cookie"
    );
    let body: Value = resp.json().await.unwrap();
    let token = body["refresh_token"].as_str().unwrap().to_owned();
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(set_cookies(&resp).is_empty());
    let next: Value = resp.json().await.unwrap();
    let next_token = next["refresh_token"].as_str().unwrap().to_owned();
    // Body requests carry no ambient credential: cross-site headers do not matter.
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"refresh_token": next_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let last: Value = resp.json().await.unwrap();
    let last_token = last["refresh_token"].as_str().unwrap();
    // Both transports at once: refused.
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .header("cookie", format!("{COOKIE}={last_token}"))
        .json(&json!({"refresh_token": last_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Never from the query string.
    let resp = client()
        .post(format!(
            "{}?refresh_token={last_token}",
            app.server.url("/auth/refresh")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A multibyte character where the token splits: refused, never a panic.
    let straddle = format!("{}é{}", "A".repeat(21), "B".repeat(43));
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .json(&json!({"refresh_token": straddle}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // An oversized body is 413.
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .json(&json!({"refresh_token": "x".repeat(10_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn device_list_and_revoking_one_device() {
    let app = app().await;
    let phone = login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(1));
    let laptop = login(&app, "alice").await;
    let bob = login(&app, "bob").await;
    let list: Value = get_json_with_bearer(app.server.url("/auth/sessions"), &laptop.access).await;
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        sessions[0]["current"], true,
        "newest first: the laptop, the caller"
    );
    assert_eq!(sessions[1]["current"], false);
    assert_eq!(sessions[0]["user_agent"], "portcullis-tests");
    let phone_id = sessions[1]["id"].as_str().unwrap().to_owned();
    let delete = |token: &str, id: &str| {
        client()
            .delete(app.server.url(&format!("/auth/sessions/{id}")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        delete(&bob.access, &phone_id).await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "not bob's device"
    );
    assert_eq!(api(&app, &phone.access).await, StatusCode::OK);
    assert_eq!(
        delete(&laptop.access, &phone_id).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api(&app, &phone.access).await,
        StatusCode::UNAUTHORIZED,
        "the phone's access token died at once"
    );
    assert_eq!(
        refresh(&app, &phone.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api(&app, &laptop.access).await, StatusCode::OK);
    let resp = client()
        .get(app.server.url("/auth/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the device list needs an access token"
    );
}

/// The device endpoints read the access token where the application's
/// `JwtLayer` reads it: an app whose layer takes access tokens from a
/// cookie lists and revokes devices with that cookie (a bearer-only
/// reader answered it 401).
#[tokio::test]
async fn device_endpoints_honour_a_cookie_transport_for_access_tokens() {
    let portcullis_tests::refresh_app::CookieAccessApp {
        server,
        refresher,
        laptop_access,
        phone_id,
    } = portcullis_tests::refresh_app::cookie_access_app().await;
    let with_cookie = |req: reqwest::RequestBuilder, token: &str| {
        req.header("cookie", format!("access={token}")).send()
    };

    let resp = with_cookie(client().get(server.url("/auth/sessions")), &laptop_access)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = resp.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<bool> = sessions.iter().map(|s| s["current"] == true).collect();
    assert_eq!(current.iter().filter(|c| **c).count(), 1, "{list}");

    let resp = with_cookie(
        client().delete(server.url(&format!("/auth/sessions/{phone_id}"))),
        &laptop_access,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(refresher.devices("alice", None).await.unwrap().len(), 1);

    // The bearer header is not where this app's layer reads.
    let resp = client()
        .get(server.url("/auth/sessions"))
        .bearer_auth(&laptop_access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
