//! The events of `CsrfLayer` (`CsrfConfig::events`), through a real
//! server: a `csrf_refused` event for every refusal, with its reason code,
//! route template, client and trace id, never a token, a cookie or the raw
//! path; the layer's decisions (success, failure, none) as the recorder
//! sees them; and nothing read while nothing listens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::routing::{get, post};
use futures_util::{StreamExt as _, stream};
use http::StatusCode;
use portcullis_core::events::{AuthEvent, Decision, EventStream, Events, Recorder, TraceId};
use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};
use portcullis_tests::otel::Metrics;
use portcullis_tests::session_app::peer_ip;
use portcullis_tests::{TestServer, client, cookie_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const KEY: [u8; 32] = [0x5a; 32];
/// A path segment standing for an id or a token in a URL: never in an
/// event.
const PATH_SECRET: &str = "order-7f3c9e1d2b";

fn route(e: &http::Extensions) -> Option<Arc<str>> {
    e.get::<MatchedPath>().map(|m| m.as_str().into())
}

fn traceparent() -> String {
    format!("00-{TRACE}-00f067aa0ba902b7-01")
}

/// One decision: layer, what it decided, the reason code.
type Decided = (&'static str, Decision, Option<&'static str>);

/// The layer's decisions, as a recorder sees them.
#[derive(Debug, Default, Clone)]
struct Decisions(Arc<Mutex<Vec<Decided>>>);

impl Recorder for Decisions {
    fn decision(
        &self,
        layer: &'static str,
        decision: Decision,
        reason: Option<&'static str>,
        _: Duration,
    ) {
        self.0.lock().unwrap().push((layer, decision, reason));
    }
}

impl Decisions {
    fn take(&self) -> Vec<Decided> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Signed tokens bound to the pre-session cookie, the layer inside the
/// router (`route_layer`) so the route template is known; bodies over
/// 64 bytes refused.
async fn start(events: Events, body_read: Arc<Notify>) -> TestServer {
    let csrf = CsrfLayer::new(
        CsrfConfig::signed(KEY, SignedBinding::pre_session_only())
            .insecure_dev_cookies()
            .max_body_bytes(64)
            .events(events),
    )
    .unwrap();
    let app = Router::new()
        .route(
            "/form",
            get(|token: CsrfToken| async move { token.as_str().to_owned() }),
        )
        .route("/orders/{id}", post(|| async { "saved" }))
        .route_layer(csrf)
        .layer(axum::middleware::map_request(move |req: Request| {
            let body_read = Arc::clone(&body_read);
            async move {
                // Says when the layer first reads the request body.
                req.map(|inner| {
                    let first_poll = stream::once(async move { body_read.notify_one() })
                        .filter_map(|()| async { None::<Result<Bytes, axum::Error>> });
                    Body::from_stream(first_poll.chain(inner.into_data_stream()))
                })
            }
        }));
    TestServer::start(app).await
}

/// Counted as OpenTelemetry metrics (every decision timed), with the route
/// template and the client address, the decisions also seen by `decisions`.
fn events(metrics: &Metrics, decisions: &Decisions) -> Events {
    metrics
        .events()
        .client_ip(peer_ip)
        .route(route)
        .recorder(decisions.clone())
        .build()
}

/// A token and its pre-session cookie, from `GET /form`.
async fn token(server: &TestServer) -> (String, String) {
    let resp = client().get(server.url("/form")).send().await.unwrap();
    let cookie = cookie_value(&resp, "csrf").unwrap();
    (resp.text().await.unwrap(), cookie)
}

fn drain(stream: &mut EventStream) -> Vec<Arc<AuthEvent>> {
    std::iter::from_fn(|| stream.try_recv()).collect()
}

/// What every event carries, and never carries.
fn check(event: &AuthEvent, reason: &str, secrets: &[&str]) {
    assert_eq!(event.source, "csrf", "{event:?}");
    assert_eq!(event.kind.name(), "csrf_refused", "{event:?}");
    assert_eq!(event.kind.reason(), Some(reason), "{event:?}");
    assert_eq!(event.route.as_deref(), Some("/orders/{id}"), "{event:?}");
    assert_eq!(
        event.client,
        Some(std::net::IpAddr::from([127, 0, 0, 1])),
        "{event:?}"
    );
    assert_eq!(event.trace_id, TraceId::from_hex(TRACE), "{event:?}");
    assert_eq!(event.user, None, "{event:?}");
    let debug = format!("{event:?}");
    let json = event.to_json().to_string();
    for secret in secrets.iter().chain(&[PATH_SECRET]) {
        assert!(!debug.contains(secret), "{debug}");
        assert!(!json.contains(secret), "{json}");
    }
}

/// Every refusal is one `csrf_refused` event whose reason is the error
/// kind's code, and one failure decision with the same code; a good token
/// is a success, a safe request a decision of none, and neither is an
/// event.
#[tokio::test]
async fn every_refusal_emits_csrf_refused_with_its_reason() {
    let decisions = Decisions::default();
    let metrics = Metrics::new();
    let events = events(&metrics, &decisions);
    let mut stream = events.subscribe("t", 64);
    let mut seen: Vec<&str> = Vec::new();
    let server = start(events, Arc::new(Notify::new())).await;
    let (token, cookie) = token(&server).await;
    assert!(drain(&mut stream).is_empty());
    assert_eq!(decisions.take(), [("csrf", Decision::None, None)]);

    let url = server.url(&format!("/orders/{PATH_SECRET}"));
    let post_from = |site: &str| {
        client()
            .post(url.clone())
            .header("traceparent", traceparent())
            .header("sec-fetch-site", site)
            .header("cookie", format!("csrf={cookie}"))
    };
    let post = || post_from("same-origin");
    let mut wrong = token.clone().into_bytes();
    let last = wrong.len() - 2;
    wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    let cases = [
        (
            "csrf-cross-origin",
            post_from("cross-site").header("x-csrf-token", &token),
            403,
        ),
        ("csrf-token-missing", post(), 403),
        (
            "csrf-token-malformed",
            post()
                .header("x-csrf-token", &token)
                .header("x-csrf-token", &token),
            403,
        ),
        (
            "csrf-token-mismatch",
            post().header("x-csrf-token", &wrong),
            403,
        ),
        (
            "csrf-body-too-large",
            post()
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf_token={token}&note={}", "x".repeat(100))),
            413,
        ),
    ];
    for (reason, request, status) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), status, "{reason}");
        let got = drain(&mut stream);
        assert_eq!(got.len(), 1, "{reason}: {got:?}");
        check(&got[0], reason, &[&token, &wrong, &cookie]);
        seen.extend(got.iter().filter_map(|e| e.kind.reason()));
        assert_eq!(
            decisions.take(),
            [("csrf", Decision::Failure, Some(reason))],
            "{reason}"
        );
    }

    let resp = post().header("x-csrf-token", &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(drain(&mut stream).is_empty());
    assert_eq!(decisions.take(), [("csrf", Decision::Success, None)]);

    // Each refusal counted once under its reason, and nothing else.
    for reason in [
        "csrf-cross-origin",
        "csrf-token-missing",
        "csrf-token-malformed",
        "csrf-token-mismatch",
        "csrf-body-too-large",
    ] {
        let n = seen.iter().filter(|r| **r == reason).count() as u64;
        assert_eq!(n, 1, "{reason}");
        assert_eq!(
            metrics.event_count("csrf_refused", Some(reason)),
            n,
            "{reason}"
        );
    }
    assert_eq!(metrics.event_count("csrf_refused", None), seen.len() as u64);
}

/// A layer whose `Events` nothing listens to emits nothing, and reads no
/// context: a request the layer received before the subscription, whose
/// form body arrives after it, is refused with an event that carries no
/// route, client or trace id.
#[tokio::test]
async fn without_listeners_nothing_is_emitted_and_no_context_is_read() {
    // The secret scan's tap listens to every handle: keep it out of this
    // process, or something would listen.
    portcullis_tests::secret_scan::without_tap();
    let events = Events::builder().client_ip(peer_ip).route(route).build();
    let body_read = Arc::new(Notify::new());
    let server = start(events.clone(), Arc::clone(&body_read)).await;
    let resp = client()
        .post(server.url("/orders/1"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let body = "csrf_token=not-a-token";
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /orders/{PATH_SECRET} HTTP/1.1\r\nhost: {}\r\nsec-fetch-site: same-origin\r\n\
         traceparent: {}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        server.addr,
        traceparent(),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The layer has the request and is reading its body: nothing
    // listened when it arrived.
    body_read.notified().await;
    assert!(!events.enabled());
    let mut stream = events.subscribe("late", 64);
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    let got = drain(&mut stream);
    assert_eq!(got.len(), 1, "{got:?}");
    let event = &got[0];
    assert_eq!(
        event.kind.reason(),
        Some("csrf-token-malformed"),
        "{event:?}"
    );
    assert_eq!(event.route, None, "{event:?}");
    assert_eq!(event.client, None, "{event:?}");
    assert_eq!(event.trace_id, None, "{event:?}");

    // From now on, with the context.
    let resp = client()
        .post(server.url(&format!("/orders/{PATH_SECRET}")))
        .header("sec-fetch-site", "cross-site")
        .header("traceparent", traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let got = drain(&mut stream);
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0], "csrf-cross-origin", &[]);
}

/// A session store outage is no CSRF refusal: the request is answered 503
/// (`csrf-session-unavailable`), the recorder is told a failure with that
/// reason, the session layer emits `store_unavailable`, and no
/// `csrf_refused` is emitted or counted.
#[tokio::test]
async fn a_session_store_outage_is_a_failure_decision_but_no_csrf_refused() {
    use portcullis::session::testing::FaultyStore;
    use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
    use std::sync::atomic::Ordering;

    let decisions = Decisions::default();
    let metrics = Metrics::new();
    let events = events(&metrics, &decisions);
    let mut stream = events.subscribe("t", 64);
    let store = FaultyStore::new(MemoryStore::new());
    let outage = store.switch();
    let csrf = CsrfLayer::new(
        CsrfConfig::signed(KEY, SignedBinding::session())
            .insecure_dev_cookies()
            .events(events.clone()),
    )
    .unwrap();
    let sessions = SessionLayer::new(
        store,
        SessionConfig::default()
            .insecure_dev_cookies()
            .events(events.clone()),
    )
    .unwrap();
    let app = Router::new()
        .route(
            "/form",
            get(|token: CsrfToken| async move { token.as_str().to_owned() }),
        )
        .route(
            "/login",
            post(|s: Session| async move { s.login("alice").await }),
        )
        .route("/orders/{id}", post(|| async { "saved" }))
        .route_layer(csrf)
        .layer(sessions);
    let server = TestServer::start(app).await;

    // A pre-session token, a login, the session's token.
    let resp = client().get(server.url("/form")).send().await.unwrap();
    let pre_cookie = cookie_value(&resp, "csrf").unwrap();
    let pre_token = resp.text().await.unwrap();
    let resp = client()
        .post(server.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("cookie", format!("csrf={pre_cookie}"))
        .header("x-csrf-token", &pre_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session = cookie_value(&resp, "session").unwrap();
    let resp = client()
        .get(server.url("/form"))
        .header("cookie", format!("session={session}"))
        .send()
        .await
        .unwrap();
    let token = resp.text().await.unwrap();
    let act = || {
        client()
            .post(server.url(&format!("/orders/{PATH_SECRET}")))
            .header("traceparent", traceparent())
            .header("sec-fetch-site", "same-origin")
            .header("cookie", format!("session={session}"))
            .header("x-csrf-token", &token)
            .send()
    };
    assert_eq!(act().await.unwrap().status(), 200, "the token is good");
    drain(&mut stream);
    decisions.take();

    outage.store(true, Ordering::SeqCst);
    assert_eq!(act().await.unwrap().status(), 503);
    let seen = drain(&mut stream);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].source, "session", "{seen:?}");
    assert_eq!(seen[0].kind.name(), "store_unavailable", "{seen:?}");
    assert!(
        decisions
            .take()
            .contains(&("csrf", Decision::Failure, Some("csrf-session-unavailable"))),
        "the CSRF layer still decided: failure"
    );
    assert_eq!(metrics.event_count("csrf_refused", None), 0);
    assert_eq!(metrics.event_count("store_unavailable", None), 1);
}
