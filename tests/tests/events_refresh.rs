//! The refresh layer and the refresher on the event stream, through a
//! real server: logins, rotations, reuse, logouts, revoked and evicted
//! devices, expired families, password changes and store outages, each
//! with the user, the family (device), the route, the client and the trace
//! id, each counted as its OpenTelemetry metric; no event carries a token
//! or a token's secret.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use portcullis::core::events::{AuthEvent, AuthEventKind};
use portcullis::otel::{OPERATION, STORE};
use portcullis_tests::client;
use portcullis_tests::refresh_app::{COOKIE, HybridApp, Login, read_login, start_memory};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `POST path` with `token` (if any) in the refresh cookie, a bearer
/// `access` token (if any) and a `traceparent`.
async fn send(
    app: &HybridApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    access: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .request(method, app.server.url(path))
        .header("traceparent", TRACEPARENT);
    if let Some(token) = token {
        req = req.header("cookie", format!("{COOKIE}={token}"));
    }
    if let Some(access) = access {
        req = req.bearer_auth(access);
    }
    req.send().await.unwrap()
}

async fn post(app: &HybridApp, path: &str, token: Option<&str>) -> reqwest::Response {
    send(app, reqwest::Method::POST, path, token, None).await
}

async fn login(app: &HybridApp, user: &str) -> Login {
    let resp = post(app, &format!("/auth/login/{user}"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    read_login(resp).await
}

fn family(token: &str) -> &str {
    token.split_once('.').unwrap().0
}

/// The events since `from` (an index into the log).
fn since(app: &HybridApp, from: usize) -> Vec<Arc<AuthEvent>> {
    app.events.all()[from..].to_vec()
}

/// Every event kind the app emitted so far is among `expected`
/// (`(kind, reason, n)`), and the app's log saw `n` of each, and its
/// metrics counted `n`.
fn assert_counted(app: &HybridApp, expected: &[(&str, Option<&str>, u64)]) {
    app.events.assert_counted(&app.metrics, expected);
}

/// `e` is `kind` from the refresh layer, for `user` and `device`, on
/// `route`, from the loopback client, with the test's trace id.
fn assert_event(
    e: &AuthEvent,
    kind: &AuthEventKind,
    user: &str,
    device: Option<&str>,
    route: &str,
) {
    assert_eq!(&e.kind, kind, "{e:?}");
    assert_eq!(e.source, "refresh", "{e:?}");
    assert_eq!(e.user.as_deref(), Some(user), "{e:?}");
    assert_eq!(e.device.as_deref(), device, "{e:?}");
    assert_eq!(e.route.as_deref(), Some(route), "{e:?}");
    assert_eq!(e.client, Some("127.0.0.1".parse().unwrap()), "{e:?}");
    assert_eq!(
        e.trace_id.map(|t| t.to_string()).as_deref(),
        Some(TRACE),
        "{e:?}"
    );
}

/// No event of the app shows a token of `logins`, nor a part of one (the
/// refresh token's secret, the access token's payload or signature).
fn assert_no_secret(app: &HybridApp, logins: &[&Login]) {
    let events = app.events.all();
    assert!(!events.is_empty());
    for e in &events {
        let shown = format!("{e:?} {}", e.to_json());
        for l in logins {
            let secret = l.refresh.split_once('.').unwrap().1;
            let mut parts = vec![l.refresh.as_str(), secret, l.access.as_str()];
            parts.extend(l.access.split('.').skip(1));
            for part in parts {
                assert!(!shown.contains(part), "a token in an event: {shown}");
            }
        }
    }
}

#[tokio::test]
async fn login_refresh_and_logout_are_events_with_the_device_and_the_request() {
    let app = start_memory(|c| c).await;
    let l = login(&app, "alice").await;
    let fam = family(&l.refresh).to_owned();
    let from = app.events.all().len();
    let resp = post(&app, "/auth/refresh", Some(&l.refresh)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r = read_login(resp).await;
    let resp = post(&app, "/auth/logout", Some(&r.refresh)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let all = app.events.all();
    let login_event = all[..from]
        .iter()
        .find(|e| e.kind == AuthEventKind::LoginSucceeded)
        .expect("login event");
    assert_event(
        login_event,
        &AuthEventKind::LoginSucceeded,
        "alice",
        Some(&fam),
        "/auth/login/{user}",
    );
    let later = since(&app, from);
    assert_eq!(later.len(), 2, "{later:?}");
    assert_event(
        &later[0],
        &AuthEventKind::RefreshRotated,
        "alice",
        Some(&fam),
        "/auth/refresh",
    );
    assert_event(
        &later[1],
        &AuthEventKind::Logout,
        "alice",
        Some(&fam),
        "/auth/logout",
    );
    assert_counted(
        &app,
        &[
            ("login_succeeded", None, 1),
            ("refresh_rotated", None, 1),
            ("logout", None, 1),
        ],
    );
    assert_no_secret(&app, &[&l, &r]);
}

#[tokio::test]
async fn reuse_and_logout_everywhere_are_events() {
    let app = start_memory(|c| c).await;
    let l = login(&app, "alice").await;
    let other = login(&app, "alice").await;
    let r = read_login(post(&app, "/auth/refresh", Some(&l.refresh)).await).await;
    app.clock.advance(Duration::from_secs(60));
    let from = app.events.all().len();
    // The first token again, after the grace window: reuse.
    let resp = post(&app, "/auth/refresh", Some(&l.refresh)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post(&app, "/auth/logout-everywhere", Some(&other.refresh)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let later = since(&app, from);
    assert_eq!(later.len(), 2, "{later:?}");
    assert_event(
        &later[0],
        &AuthEventKind::RefreshReuseDetected,
        "alice",
        Some(family(&l.refresh)),
        "/auth/refresh",
    );
    assert_event(
        &later[1],
        &AuthEventKind::LogoutEverywhere,
        "alice",
        Some(family(&other.refresh)),
        "/auth/logout-everywhere",
    );
    assert_eq!(app.events.reuses().len(), 1);
    assert_counted(
        &app,
        &[
            ("login_succeeded", None, 2),
            ("refresh_rotated", None, 1),
            ("refresh_reuse_detected", None, 1),
            ("logout_everywhere", None, 1),
        ],
    );
    assert_no_secret(&app, &[&l, &other, &r]);
}

#[tokio::test]
async fn revoking_a_device_is_an_event_on_the_device_route() {
    let app = start_memory(|c| c).await;
    let phone = login(&app, "alice").await;
    let laptop = login(&app, "alice").await;
    let from = app.events.all().len();
    let resp = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/auth/sessions/{}", family(&phone.refresh)),
        None,
        Some(&laptop.access),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let later = since(&app, from);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_event(
        &later[0],
        &AuthEventKind::DeviceRevoked,
        "alice",
        Some(family(&phone.refresh)),
        "/auth/sessions/{id}",
    );
    assert_counted(
        &app,
        &[("login_succeeded", None, 2), ("device_revoked", None, 1)],
    );
    assert_no_secret(&app, &[&phone, &laptop]);
}

#[tokio::test]
async fn a_password_change_called_from_a_handler_carries_its_request() {
    let app = start_memory(|c| c).await;
    let l = login(&app, "alice").await;
    let from = app.events.all().len();
    let resp = post(&app, "/account/password/alice", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let later = since(&app, from);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_event(
        &later[0],
        &AuthEventKind::PasswordChanged,
        "alice",
        None,
        "/account/password/{user}",
    );
    assert_counted(
        &app,
        &[("login_succeeded", None, 1), ("password_changed", None, 1)],
    );
    assert_no_secret(&app, &[&l]);
}

#[tokio::test]
async fn a_login_beyond_the_family_cap_evicts_the_oldest_device_as_an_event() {
    let app = start_memory(|c| c.max_families_per_user(1)).await;
    let first = login(&app, "alice").await;
    let from = app.events.all().len();
    let second = login(&app, "alice").await;
    let later = since(&app, from);
    let evicted: Vec<_> = later
        .iter()
        .filter(|e| e.kind == AuthEventKind::SessionEvicted)
        .collect();
    assert_eq!(evicted.len(), 1, "{later:?}");
    assert_event(
        evicted[0],
        &AuthEventKind::SessionEvicted,
        "alice",
        Some(family(&first.refresh)),
        "/auth/login/{user}",
    );
    assert!(later.iter().any(|e| e.kind == AuthEventKind::LoginSucceeded
        && e.device.as_deref() == Some(family(&second.refresh))));
    assert_counted(
        &app,
        &[("login_succeeded", None, 2), ("session_evicted", None, 1)],
    );
    assert_no_secret(&app, &[&first, &second]);
}

#[tokio::test]
async fn an_expired_family_presented_is_an_event_and_a_guess_is_not() {
    let app = start_memory(|c| c).await;
    let a = login(&app, "alice").await;
    let b = login(&app, "bob").await;
    // Past the 7-day idle timeout.
    app.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let from = app.events.all().len();
    // A guessed secret for bob's family: refused, and no event.
    let guess = format!("{}.{}", family(&b.refresh), "A".repeat(43));
    let resp = post(&app, "/auth/logout", Some(&guess)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(since(&app, from).is_empty(), "{:?}", since(&app, from));
    // Bob logs out with his expired token (the family is still stored).
    let resp = post(&app, "/auth/logout", Some(&b.refresh)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // Alice refreshes with hers.
    let resp = post(&app, "/auth/refresh", Some(&a.refresh)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let later = since(&app, from);
    assert_eq!(later.len(), 2, "{later:?}");
    assert_event(
        &later[0],
        &AuthEventKind::FamilyExpired,
        "bob",
        Some(family(&b.refresh)),
        "/auth/logout",
    );
    assert_event(
        &later[1],
        &AuthEventKind::FamilyExpired,
        "alice",
        Some(family(&a.refresh)),
        "/auth/refresh",
    );
    assert_counted(
        &app,
        &[("login_succeeded", None, 2), ("family_expired", None, 2)],
    );
    assert_no_secret(&app, &[&a, &b]);
}

#[tokio::test]
async fn a_store_outage_is_store_unavailable_with_the_operation() {
    let app = start_memory(|c| c).await;
    let l = login(&app, "alice").await;
    app.down.store(true, Ordering::SeqCst);
    let from = app.events.all().len();
    let resp = post(&app, "/auth/refresh", Some(&l.refresh)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = post(&app, "/auth/login/alice", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let later = since(&app, from);
    let kinds: Vec<_> = later.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            AuthEventKind::StoreUnavailable {
                store: "refresh",
                operation: "rotate"
            },
            AuthEventKind::StoreUnavailable {
                store: "refresh",
                operation: "create"
            },
        ]
    );
    assert_eq!(later[0].route.as_deref(), Some("/auth/refresh"));
    assert_eq!(later[1].route.as_deref(), Some("/auth/login/{user}"));
    for e in &later {
        assert_eq!(e.source, "refresh");
        assert_eq!(e.trace_id.map(|t| t.to_string()).as_deref(), Some(TRACE));
    }
    assert_counted(
        &app,
        &[("login_succeeded", None, 1), ("store_unavailable", None, 2)],
    );
    for operation in ["rotate", "create"] {
        assert_eq!(
            app.metrics.counter(
                "portcullis.store.unavailable",
                &[(STORE, "refresh"), (OPERATION, operation)]
            ),
            1,
            "{operation}"
        );
    }
    assert_no_secret(&app, &[&l]);
}

#[tokio::test]
async fn the_refresh_layer_opens_one_span_per_endpoint_request_with_its_decision() {
    let spans = portcullis_tests::refresh_app::SpanCapture::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let app = start_memory(|c| c).await;
    let l = login(&app, "alice").await;
    let r = read_login(post(&app, "/auth/refresh", Some(&l.refresh)).await).await;
    app.clock.advance(Duration::from_secs(60));
    let resp = post(&app, "/auth/refresh", Some(&l.refresh)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = send(&app, reqwest::Method::GET, "/auth/refresh", None, None).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let found = spans.named("portcullis.refresh");
    assert_eq!(found.len(), 3, "one per endpoint request: {found:?}");
    let field = |i: usize, name: &str| found[i].get(name).map(String::as_str);
    assert_eq!(field(0, "otel.kind"), Some("internal"));
    assert_eq!(field(0, "portcullis.decision"), Some("success"));
    assert_eq!(field(0, "http.route"), Some("/auth/refresh"));
    assert_eq!(field(1, "portcullis.decision"), Some("failure"));
    assert_eq!(field(1, "error.type"), Some("reused"));
    assert_eq!(field(2, "portcullis.decision"), Some("none"));
    assert_counted(
        &app,
        &[
            ("login_succeeded", None, 1),
            ("refresh_rotated", None, 1),
            ("refresh_reuse_detected", None, 1),
        ],
    );
    let text = spans.text();
    for login in [&l, &r] {
        let secret = login.refresh.split_once('.').unwrap().1;
        assert!(!text.contains(secret), "a refresh secret in a span");
        for part in login.access.split('.').skip(1) {
            assert!(!text.contains(part), "an access token in a span");
        }
    }
}
