//! The refresher's security properties over HTTP, on a real axum server:
//! no login CSRF, logout with a rotated token is reuse, duplicated cookies,
//! revocation outages never reported as success, revocations outliving the
//! verifier's leeway, the per-user family cap, and the memory store
//! cleaning up after itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis::core::ManualClock;
use portcullis::jwt::MAX_LEEWAY;
use portcullis::jwt::revocation::RevocationStore;
use portcullis::refresh::{
    MemoryRefreshStore, RefreshConfig, RefreshConfigError, RefreshStore, Transport,
};
use portcullis_tests::refresh_app::{
    COOKIE, FaultyRevocations, HybridApp, Login, api, login_with, post, post_login, post_token,
    refresh, refreshed, start_memory, start_with, start_with_leeway,
};
use portcullis_tests::{TestServer, client, cookie_value, get_json_with_bearer, set_cookies};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLEARED: &str = "__Host-refresh=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure; HttpOnly; SameSite=Strict";

async fn app() -> HybridApp {
    start_memory(|c| c).await
}

/// Logs in as a same-origin page does.
async fn login(app: &HybridApp, user: &str) -> Login {
    login_with(app, user, &[("sec-fetch-site", "same-origin")]).await
}

/// The app on a revocation store whose writes fail while the returned
/// switch is on.
async fn app_with_faulty_revocations() -> (HybridApp, Arc<std::sync::atomic::AtomicBool>) {
    let clock = Arc::new(ManualClock::starting_now());
    let revocations = FaultyRevocations::memory(clock.clone());
    let failing = revocations.failing.shared();
    let app = start_with(
        None,
        Some(Arc::new(revocations) as Arc<dyn RevocationStore>),
        |c| c,
        clock,
    )
    .await;
    (app, failing)
}

fn reuse_events(app: &HybridApp, user: &str) -> usize {
    app.events
        .reuses()
        .iter()
        .filter(|e| e.user.as_deref() == Some(user))
        .count()
}

// ---------------------------------------------------------------- login CSRF

#[tokio::test]
async fn a_cross_site_login_gets_403_no_cookie_and_starts_no_family() {
    let app = app().await;
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
    ] {
        let before = app.store_calls.load(Ordering::SeqCst);
        let resp = post_login(&app, "mallory", &[(name, value)]).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(set_cookies(&resp).is_empty(), "no refresh cookie");
        let body: Value = resp.json().await.unwrap();
        assert!(body.get("access_token").is_none());
        assert_eq!(
            app.store_calls.load(Ordering::SeqCst),
            before,
            "no family started"
        );
    }
    // Same-origin browsers and clients without browser headers log in.
    login(&app, "alice").await;
    let resp = post_login(&app, "alice", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(cookie_value(&resp, COOKIE).is_some());
}

#[tokio::test]
async fn a_cross_site_login_answered_in_the_body_is_not_refused() {
    // No ambient credential is set, and a cross-site form cannot add the
    // header that asks for the body.
    let app = start_memory(|c| c.transport(Transport::Either)).await;
    let resp = post_login(
        &app,
        "alice",
        &[
            ("sec-fetch-site", "cross-site"),
            ("x-refresh-transport", "body"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(set_cookies(&resp).is_empty());
    let body: Value = resp.json().await.unwrap();
    assert!(body["refresh_token"].is_string());
    let resp = post_login(&app, "alice", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "the same login answered with the cookie is refused"
    );
}

/// The hybrid-spa template: the text/plain form a cross-site page can
/// send, with a body that parses as JSON, logs nobody in.
#[tokio::test]
async fn hybrid_spa_login_refuses_text_plain_and_cross_site_requests() {
    let server = TestServer::start(hybrid_spa::app(hybrid_spa::Stores::memory()).unwrap()).await;
    let http = client();
    // `<form enctype="text/plain">` with one field named
    // `{"username":"bob","password":"builder","x":"` and the value `"}`.
    let form_body = r#"{"username":"bob","password":"builder","x":"="}"#;
    for (ct, site) in [
        ("text/plain", "cross-site"),
        ("text/plain", "same-origin"),
        ("application/x-www-form-urlencoded", "cross-site"),
    ] {
        let resp = http
            .post(server.url("/auth/login"))
            .header("content-type", ct)
            .header("sec-fetch-site", site)
            .body(form_body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct} ({site})"
        );
        assert!(cookie_value(&resp, COOKIE).is_none(), "{ct} ({site})");
    }
    // JSON from another site (which a browser would only send after a CORS
    // preflight this app never answers) is refused too.
    let resp = http
        .post(server.url("/auth/login"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"username": "bob", "password": "builder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(cookie_value(&resp, COOKIE).is_none());
    let resp = http
        .post(server.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "bob", "password": "builder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(cookie_value(&resp, COOKIE).is_some());
}

// ------------------------------------------------- logout with a rotated token

#[tokio::test]
async fn logout_with_a_rotated_token_is_reuse_and_kills_the_thief() {
    let app = app().await;
    let victim = login(&app, "alice").await;
    // The thief copied the token and refreshed first.
    let thief = refreshed(&app, &victim.refresh).await;
    assert_eq!(api(&app, &thief.access).await, StatusCode::OK);
    app.clock.advance(Duration::from_secs(11));
    let resp = post_token(&app, "/auth/logout", &victim.refresh).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(set_cookies(&resp), vec![CLEARED.to_owned()]);
    assert_eq!(
        refresh(&app, &thief.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "the thief's refresh token died"
    );
    assert_eq!(
        api(&app, &thief.access).await,
        StatusCode::UNAUTHORIZED,
        "the thief's access token died"
    );
    assert_eq!(reuse_events(&app, "alice"), 1, "the reuse was reported");
}

#[tokio::test]
async fn logout_everywhere_with_a_rotated_token_logs_the_user_out_everywhere() {
    let app = app().await;
    let victim = login(&app, "alice").await;
    let laptop = login(&app, "alice").await;
    let bob = login(&app, "bob").await;
    let thief = refreshed(&app, &victim.refresh).await;
    app.clock.advance(Duration::from_secs(11));
    let resp = post_token(&app, "/auth/logout-everywhere", &victim.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ended"], 2);
    for (who, l) in [("thief", &thief), ("laptop", &laptop)] {
        assert_eq!(
            refresh(&app, &l.refresh).await.status(),
            StatusCode::UNAUTHORIZED,
            "{who}'s refresh token"
        );
        assert_eq!(
            api(&app, &l.access).await,
            StatusCode::UNAUTHORIZED,
            "{who}'s access token"
        );
    }
    assert_eq!(
        api(&app, &bob.access).await,
        StatusCode::OK,
        "bob untouched"
    );
    assert_eq!(reuse_events(&app, "alice"), 1);
}

#[tokio::test]
async fn logout_with_the_previous_token_inside_grace_is_an_ordinary_logout() {
    let app = app().await;
    let l = login(&app, "alice").await;
    let next = refreshed(&app, &l.refresh).await;
    let resp = post_token(&app, "/auth/logout", &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(api(&app, &next.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &next.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(reuse_events(&app, "alice"), 0, "not a reuse");
}

// ---------------------------------------------------------- duplicated cookie

#[tokio::test]
async fn logout_with_duplicated_cookies_ends_the_genuine_family_and_clears_it() {
    let app = app().await;
    let victim = login(&app, "alice").await;
    let planted = login(&app, "mallory").await;
    let resp = post(
        &app,
        "/auth/logout",
        &format!(
            "{COOKIE}={}; {COOKIE}=garbage; {COOKIE}={}",
            planted.refresh, victim.refresh
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(set_cookies(&resp), vec![CLEARED.to_owned()]);
    assert_eq!(
        refresh(&app, &victim.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "the genuine family is revoked"
    );
    assert_eq!(api(&app, &victim.access).await, StatusCode::UNAUTHORIZED);

    // Log out everywhere with two copies (one garbage) works too.
    let a = login(&app, "alice").await;
    let b = login(&app, "alice").await;
    let resp = post(
        &app,
        "/auth/logout-everywhere",
        &format!("{COOKIE}=x.y; {COOKIE}={}", a.refresh),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(set_cookies(&resp).contains(&CLEARED.to_owned()));
    assert_eq!(api(&app, &b.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &b.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn duplicated_cookies_are_refused_safely_elsewhere() {
    let app = app().await;
    let l = login(&app, "alice").await;
    let other = login(&app, "mallory").await;
    let before = app.store_calls.load(Ordering::SeqCst);
    let two = format!("{COOKIE}={}; {COOKIE}={}", other.refresh, l.refresh);
    let resp = post(&app, "/auth/refresh", &two).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(cookie_value(&resp, COOKIE).is_none(), "no token handed out");
    // More copies than a logout looks at: refused before the store.
    let many = (0..9)
        .map(|_| format!("{COOKIE}={}", l.refresh))
        .collect::<Vec<_>>()
        .join("; ");
    for path in ["/auth/logout", "/auth/logout-everywhere"] {
        let resp = post(&app, path, &many).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    // Cross-site duplicates are refused like a single cookie.
    let resp = client()
        .post(app.server.url("/auth/logout"))
        .header("cookie", &two)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.store_calls.load(Ordering::SeqCst),
        before,
        "no store call for any of them"
    );
    assert_eq!(refresh(&app, &l.refresh).await.status(), StatusCode::OK);
    assert_eq!(refresh(&app, &other.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_default_cookie_is_host_only_whatever_the_prefix() {
    let app = start_memory(|c| c.prefix("/api/auth")).await;
    let resp = post_login(&app, "alice", &[]).await;
    let set = set_cookies(&resp);
    assert_eq!(set.len(), 1);
    assert!(set[0].starts_with("__Host-refresh="), "{set:?}");
    assert!(set[0].contains("; Path=/;"), "{set:?}");
    assert!(!set[0].contains("Domain="), "{set:?}");
    let token = cookie_value(&resp, COOKIE).unwrap();
    let resp = post_token(&app, "/api/auth/refresh", &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

// ------------------------------------------------ revocation store failures

#[tokio::test]
async fn logout_answers_503_until_the_revocation_lands_and_a_retry_finishes() {
    let (app, failing) = app_with_faulty_revocations().await;
    let l = login(&app, "alice").await;
    failing.store(true, Ordering::SeqCst);
    let resp = post_token(&app, "/auth/logout", &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        set_cookies(&resp).is_empty(),
        "the cookie is kept for the retry"
    );
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        api(&app, &l.access).await,
        StatusCode::OK,
        "nothing was revoked, and nothing was claimed"
    );
    let resp = post_token(&app, "/auth/logout", &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(api(&app, &l.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &l.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn device_revocation_and_logout_everywhere_answer_503_while_revocations_fail() {
    let (app, failing) = app_with_faulty_revocations().await;
    let phone = login(&app, "alice").await;
    let laptop = login(&app, "alice").await;
    let phone_id = phone.refresh.split('.').next().unwrap().to_owned();
    let delete = || {
        client()
            .delete(app.server.url(&format!("/auth/sessions/{phone_id}")))
            .bearer_auth(&laptop.access)
            .send()
    };
    failing.store(true, Ordering::SeqCst);
    let resp = delete().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let resp = post_token(&app, "/auth/logout-everywhere", &laptop.refresh).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(set_cookies(&resp).is_empty());
    failing.store(false, Ordering::SeqCst);
    assert_eq!(api(&app, &phone.access).await, StatusCode::OK);
    let resp = delete().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "the retry finishes");
    assert_eq!(api(&app, &phone.access).await, StatusCode::UNAUTHORIZED);
    let resp = post_token(&app, "/auth/logout-everywhere", &laptop.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK, "the retry finishes");
    assert_eq!(api(&app, &laptop.access).await, StatusCode::UNAUTHORIZED);
}

// ------------------------------------------------------ revocation lifetime

#[tokio::test]
async fn a_logged_out_access_token_stays_refused_through_the_verifiers_leeway() {
    let app = start_with_leeway(
        None,
        None,
        |c| c,
        Arc::new(ManualClock::starting_now()),
        MAX_LEEWAY,
    )
    .await;
    let l = login(&app, "alice").await;
    let live = login(&app, "alice").await;
    let resp = post_token(&app, "/auth/logout", &l.refresh).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // 15 min lifetime: past `exp`, well inside the 5 min leeway.
    app.clock.advance(Duration::from_secs(900 + 240));
    assert_eq!(
        api(&app, &live.access).await,
        StatusCode::OK,
        "the leeway still accepts an expired token"
    );
    assert_eq!(
        api(&app, &l.access).await,
        StatusCode::UNAUTHORIZED,
        "the revocation outlives it"
    );
    app.clock.advance(Duration::from_secs(59));
    assert_eq!(api(&app, &l.access).await, StatusCode::UNAUTHORIZED);
}

// ------------------------------------------------------------ per-user cap

#[tokio::test]
async fn logins_beyond_the_cap_log_the_oldest_device_out() {
    let app = start_memory(|c| c.max_families_per_user(2)).await;
    let first = login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(1));
    let second = login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(1));
    let bob = login(&app, "bob").await;
    let third = login(&app, "alice").await;
    assert_eq!(
        refresh(&app, &first.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "the oldest family was evicted"
    );
    assert_eq!(
        api(&app, &first.access).await,
        StatusCode::UNAUTHORIZED,
        "and its access token died"
    );
    for l in [&second, &third, &bob] {
        assert_eq!(api(&app, &l.access).await, StatusCode::OK);
    }
    let list: Value = get_json_with_bearer(app.server.url("/auth/sessions"), &third.access).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_default_cap_is_twenty_and_zero_is_refused() {
    assert_eq!(portcullis::refresh::DEFAULT_MAX_FAMILIES_PER_USER, 20);
    let app = app().await;
    let first = login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(1));
    let mut last = None;
    for _ in 0..19 {
        last = Some(login(&app, "alice").await);
    }
    assert_eq!(api(&app, &first.access).await, StatusCode::OK, "20 fit");
    login(&app, "alice").await;
    assert_eq!(
        api(&app, &first.access).await,
        StatusCode::UNAUTHORIZED,
        "the 21st evicts the oldest"
    );
    assert_eq!(api(&app, &last.unwrap().access).await, StatusCode::OK);
    assert!(format!("{:?}", RefreshConfig::default()).contains("max_families_per_user: Some(20)"));
    let issuer = portcullis::jwt::JwtIssuer::builder(
        portcullis::jwt::SigningKey::hmac("k", portcullis::jwt::Algorithm::HS256, &[7; 32])
            .unwrap(),
    )
    .build()
    .unwrap();
    let jwt = portcullis::jwt::JwtLayer::builder(issuer.keys())
        .issuer("x")
        .audience("y")
        .build()
        .unwrap();
    let revocations = Arc::new(portcullis::jwt::revocation::MemoryRevocationStore::new());
    let err = portcullis::refresh::Refresher::builder(
        MemoryRefreshStore::new(),
        issuer,
        revocations,
        jwt,
    )
    .config(RefreshConfig::default().max_families_per_user(0))
    .build()
    .unwrap_err();
    assert_eq!(err, RefreshConfigError::FamilyCap);
}

// -------------------------------------------------- memory store clean-up

#[tokio::test]
async fn the_memory_store_drops_expired_families_without_purge_calls() {
    let store = MemoryRefreshStore::new();
    let app = start_with(
        Some(Arc::new(store.clone()) as Arc<dyn RefreshStore>),
        None,
        |c| c,
        Arc::new(ManualClock::starting_now()),
    )
    .await;
    for i in 0..10 {
        login(&app, &format!("user{i}")).await;
    }
    assert_eq!(store.len(), 10);
    // Past the 7-day idle timeout, the next login sweeps them away.
    app.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    login(&app, "late").await;
    assert_eq!(store.len(), 1, "no app code called purge_expired");
}

#[tokio::test]
async fn the_origin_scheme_follows_the_cookie_mode() {
    // Secure cookies: the site is https, so an `Origin` of the same host
    // over http (a page a network attacker can write) is another origin.
    let app = app().await;
    let http_origin = app.server.url("");
    assert!(http_origin.starts_with("http://"), "{http_origin}");
    let resp = post_login(&app, "mallory", &[("origin", &http_origin)]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(set_cookies(&resp).is_empty());

    // Plain-http development cookies: that same `Origin` is the site's own
    // (a browser without Fetch Metadata still logs in), and another host
    // is still refused.
    let dev = start_memory(RefreshConfig::insecure_dev_cookies).await;
    let dev_origin = dev.server.url("");
    let resp = post_login(&dev, "alice", &[("origin", &dev_origin)]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(cookie_value(&resp, "refresh").is_some());
    let resp = post_login(&dev, "alice", &[("origin", "http://evil.example")]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_foreign_non_ascii_cookie_changes_no_refresh_outcome() {
    // Any page of the parent domain can set a cookie with UTF-8 bytes; only
    // the refresh cookie's own value is the refresher's business.
    let app = app().await;
    let first = login(&app, "alice").await;
    let cookie = |token: &str| {
        reqwest::header::HeaderValue::from_bytes(
            format!("theme=caf\u{e9}; {COOKIE}={token}; lang=\u{65e5}\u{672c}").as_bytes(),
        )
        .unwrap()
    };
    let resp = client()
        .post(app.server.url("/auth/refresh"))
        .header("cookie", cookie(&first.refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "refresh");
    let next = cookie_value(&resp, COOKIE).expect("rotated cookie");
    let resp = client()
        .post(app.server.url("/auth/logout"))
        .header("cookie", cookie(&next))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "logout");
    assert_eq!(
        refresh(&app, &next).await.status(),
        StatusCode::UNAUTHORIZED,
        "the logout ended the family"
    );
}
