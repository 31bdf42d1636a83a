//! Attacks on the auth event stream, through real servers on real
//! sockets: what a hostile client or an unlucky operator can make the
//! events, the audit trail and the activity log say or cost.
//!
//! Each test proves a defence: the ones that found a defect failed before
//! its fix and pass since.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::IntoResponse;
use axum::routing::post;
use http::{Extensions, HeaderMap, StatusCode};
use portcullis::core::ManualClock;
use portcullis::core::events::{AuthEvent, AuthEventKind, EventStream, Events};
use portcullis_tests::refresh_app::{FaultyRevocations, start_with};
use portcullis_tests::{TestServer, client};
use portcullis_throttle::{
    ClientAddress, ClientIp, LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn route(e: &Extensions) -> Option<Arc<str>> {
    e.get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().into())
}

fn peer(e: &Extensions, _: &HeaderMap) -> Option<IpAddr> {
    e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Every event `stream` holds now (emission never waits: the events of a
/// request are in before its response is sent).
fn drain(stream: &mut EventStream) -> Vec<Arc<AuthEvent>> {
    std::iter::from_fn(|| stream.try_recv()).collect()
}

/// A login route that always fails (401, `LoginOutcome::Failed`), behind a
/// `LoginThrottleLayer` counting addresses only, with `events`. The body of
/// each answer is the client address the throttle resolved (its
/// `ClientIp`).
async fn throttled_login(events: &Events, client_address: ClientAddress) -> TestServer {
    async fn login(req: Request) -> axum::response::Response {
        let ip = req
            .extensions()
            .get::<ClientIp>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        (StatusCode::UNAUTHORIZED, LoginOutcome::Failed, ip).into_response()
    }
    let config = ThrottleConfig::builder()
        .no_account()
        .client_address(client_address)
        .events(events.clone())
        .build()
        .unwrap();
    let throttle = LoginThrottleLayer::new(MemoryThrottleStore::new(), config);
    TestServer::start(
        Router::new()
            .route("/login", post(login))
            .route_layer(throttle),
    )
    .await
}

/// `POST /login` with `headers`.
async fn post_login(server: &TestServer, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(server.url("/login"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Behind a proxy the throttle trusts, the throttle counts the client the
/// proxy names (`X-Forwarded-For`) and hands it on as `ClientIp`;
/// `portcullis_throttle::client_ip` is the `ClientIpFn` documented to give
/// layers "the address the throttle counted". Given to the events, it
/// still names the proxy on the throttle's own `login_failed` and
/// `throttled`: the context is read before the throttle resolves the
/// address. Every event of every client behind the proxy then carries
/// the proxy's address (the audit trail and the activity page included).
#[tokio::test]
async fn throttle_events_behind_a_trusted_proxy_name_the_client_it_counted() {
    let events = Events::builder()
        .route(route)
        .client_ip(portcullis_throttle::client_ip)
        .build();
    let mut stream = events.subscribe("t", 256);
    let proxies = ClientAddress::peer().trust_proxy("127.0.0.1").unwrap();
    let server = throttled_login(&events, proxies).await;
    let client_ip = "203.0.113.9";
    let mut throttled = false;
    for _ in 0..40 {
        let resp = post_login(&server, &[("x-forwarded-for", client_ip)]).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        // The throttle resolved the client behind the proxy.
        assert_eq!(resp.text().await.unwrap(), client_ip);
    }
    assert!(throttled, "the address counter blocks after 20 failures");
    // Another client behind the same proxy is not blocked: the throttle
    // counted 203.0.113.9, not the proxy.
    let other = post_login(&server, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);

    let seen = drain(&mut stream);
    let blocked: Vec<_> = seen
        .iter()
        .filter(|e| e.kind.name() == "login_failed" || e.kind.name() == "throttled")
        .take(21)
        .collect();
    assert_eq!(blocked.len(), 21, "{seen:?}");
    assert!(matches!(blocked[20].kind, AuthEventKind::Throttled { .. }));
    for e in blocked {
        assert_eq!(
            e.client,
            Some(client_ip.parse().unwrap()),
            "the event names the client the throttle counted: {e:?}"
        );
    }
}

/// A client that is not a trusted proxy cannot put an address of its
/// choosing on an event: a forged `X-Forwarded-For` or `Forwarded` is
/// ignored, by the throttle and by the events.
#[tokio::test]
async fn a_forged_forwarded_header_never_reaches_an_event() {
    let events = Events::builder()
        .route(route)
        .client_ip(portcullis_throttle::client_ip)
        .build();
    let mut stream = events.subscribe("t", 64);
    // Trusts a proxy the test is not.
    let proxies = ClientAddress::peer().trust_proxy("10.0.0.0/8").unwrap();
    let server = throttled_login(&events, proxies).await;
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-for", "10.0.0.1, 203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("forwarded", "for=\"[2001:db8::1]\";proto=https"),
        ("x-real-ip", "203.0.113.9"),
    ] {
        let resp = post_login(&server, &[(name, value)]).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{name}: {value}");
        assert_eq!(resp.text().await.unwrap(), "127.0.0.1");
    }
    let seen = drain(&mut stream);
    assert_eq!(seen.len(), 5, "{seen:?}");
    for e in &seen {
        assert_eq!(e.client, Some(IpAddr::from([127, 0, 0, 1])), "{e:?}");
    }
}

/// W3C Trace Context: a `traceparent` whose version, parent id or flags
/// are not lowercase hex, or whose parent id is all zeros, is invalid and
/// must be ignored as a whole: otherwise any client could put a trace id
/// on the events (and the audit lines) with a header no tracer would
/// accept, pointing at a trace that does not exist.
#[tokio::test]
async fn an_invalid_traceparent_gives_no_trace_id() {
    let events = Events::builder().route(route).client_ip(peer).build();
    let mut stream = events.subscribe("t", 64);
    let server = throttled_login(&events, ClientAddress::peer()).await;
    let invalid = [
        format!("00-{TRACE}-0000000000000000-01"),
        format!("00-{TRACE}-zzzzzzzzzzzzzzzz-01"),
        format!("00-{TRACE}-00f067aa0ba902b7-zz"),
        format!("zz-{TRACE}-00f067aa0ba902b7-01"),
        format!("00-{TRACE}-00F067AA0BA902B7-01"),
    ];
    for value in &invalid {
        let resp = post_login(&server, &[("traceparent", value)]).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let seen = drain(&mut stream);
    assert_eq!(seen.len(), invalid.len(), "{seen:?}");
    let taken: Vec<_> = seen
        .iter()
        .zip(&invalid)
        .filter(|(e, _)| e.trace_id.is_some())
        .map(|(_, value)| value)
        .collect();
    assert!(
        taken.is_empty(),
        "invalid traceparent headers taken: {taken:?}"
    );
}

/// Hostile `traceparent` headers (repeated, huge, not UTF-8, truncated,
/// with extra parts) are answered as usual, never a panic, and give no
/// trace id; a valid one still does.
#[tokio::test]
async fn hostile_traceparent_headers_are_ignored_without_a_panic() {
    let events = Events::builder().route(route).client_ip(peer).build();
    let mut stream = events.subscribe("t", 64);
    let server = throttled_login(&events, ClientAddress::peer()).await;
    let valid = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let huge = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(8000));
    let cases: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![("traceparent", valid.clone().into_bytes())],
        vec![
            ("traceparent", valid.clone().into_bytes()),
            ("traceparent", valid.clone().into_bytes()),
        ],
        vec![("traceparent", huge.into_bytes())],
        vec![("traceparent", b"00-\xff\xfe-00f067aa0ba902b7-01".to_vec())],
        vec![("traceparent", b"-".to_vec())],
        vec![("traceparent", b"00---".to_vec())],
        vec![(
            "traceparent",
            format!("00-{TRACE}-00f067aa0ba902b7-01-").into_bytes(),
        )],
        vec![(
            "traceparent",
            format!("00-{TRACE}\u{e9}-00f067aa0ba902b7-01").into_bytes(),
        )],
    ];
    for case in &cases {
        let mut req = client().post(server.url("/login"));
        for (name, value) in case {
            req = req.header(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{case:?}");
    }
    let seen = drain(&mut stream);
    assert_eq!(seen.len(), cases.len(), "{seen:?}");
    assert_eq!(
        seen[0].trace_id.map(|t| t.to_string()).as_deref(),
        Some(TRACE)
    );
    for e in &seen[1..] {
        assert_eq!(e.trace_id, None, "{e:?}");
    }
}

/// `store_unavailable` is documented as "a store call failed: the request
/// was answered 503". A login beyond the family cap evicts the oldest
/// device and pushes its `sid` to the revocation store; when that push
/// fails the login still succeeds (200, by design: the evicted device's
/// access token lives to its `exp`), yet `store_unavailable` is emitted
/// and counted, for a request that was not answered 503. (The same holds
/// for refresh-token reuse answered 401 and for `revoke_user`, whose
/// per-family pushes are best effort too.)
#[tokio::test]
async fn a_login_answered_200_emits_no_store_unavailable() {
    let clock = Arc::new(ManualClock::starting_now());
    let revocations = FaultyRevocations::memory(clock.clone());
    let failing = revocations.failing.shared();
    let app = start_with(
        None,
        Some(Arc::new(revocations)),
        |c| c.max_families_per_user(1),
        clock,
    )
    .await;
    let login = || async {
        client()
            .post(app.server.url("/auth/login/alice"))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(login().await.status(), StatusCode::OK);
    let from = app.events.all().len();
    failing.store(true, Ordering::SeqCst);
    let resp = login().await;
    assert_eq!(resp.status(), StatusCode::OK, "the login itself succeeds");
    let later: Vec<_> = app.events.all()[from..].to_vec();
    let names: Vec<_> = later.iter().map(|e| e.kind.name()).collect();
    assert!(names.contains(&"login_succeeded"), "{later:?}");
    assert!(names.contains(&"session_evicted"), "{later:?}");
    assert!(
        !names.contains(&"store_unavailable"),
        "a 200 answer with a store_unavailable event: {later:?}"
    );
}

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// `RecentActivity::new()` promises "a few hundred bytes per event: tens
/// of megabytes at most" for its defaults (20 events of 100 000 users).
/// Fed events shaped as the session layer emits them (a user, the
/// session's 64-hex-digit handle, the route, the client, the trace id,
/// each its own allocation), one event costs about 400 bytes measured
/// here, and the defaults hold 2 000 000 events: over 700 MiB, an order of
/// magnitude past the promise. Logins at many distinct accounts
/// (self-service sign-up makes accounts cheap) grow an example app to
/// that size. Measured on a tenth of the users and scaled.
#[test]
fn recent_activity_defaults_stay_within_tens_of_megabytes() {
    use portcullis::core::events::{EventContext, RecentActivity, TraceId};
    let users = RecentActivity::MAX_USERS / 10;
    let recent = RecentActivity::new();
    let before = rss_kib();
    for u in 0..users {
        let user = format!("user-{u:08}");
        for i in 0..RecentActivity::PER_USER {
            let ctx = EventContext {
                route: Some(Arc::from("/login")),
                client: Some(IpAddr::from([203, 0, 113, (u % 250) as u8])),
                trace_id: TraceId::from_hex(TRACE),
            };
            let event = AuthEvent::new("session", AuthEventKind::LoginSucceeded)
                .context(&ctx)
                .user(user.as_str())
                .device(format!("{:064x}", u * 100 + i));
            recent.record(&event);
        }
    }
    assert_eq!(recent.users(), users);
    let used_kib = rss_kib().saturating_sub(before);
    let full_mib = used_kib * 10 / 1024;
    assert!(
        full_mib < 100,
        "{users} users took {used_kib} KiB: the default bounds hold about {full_mib} MiB"
    );
}

/// The audit drain (`AuditTrail::drain`, spawned as its docs say) writes
/// the JSON lines with blocking I/O on the runtime's own thread. When the
/// file blocks (a pipe to a stalled log collector, as `AUDIT_LOG=/dev/stdout`
/// under a platform's collector; a hung network mount), the drain blocks
/// the worker it runs on. On a current-thread runtime that is every
/// request: the server stops answering at all. (On a multi-thread runtime
/// it takes one worker, and the tasks queued on it, out.)
#[test]
fn a_stuck_audit_writer_never_holds_a_request_up() {
    use portcullis::core::events::AuditTrail;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.pipe");
    let path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // The collector: it opened the pipe, then hung (never reads).
    let _collector = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let events = Events::builder().route(route).client_ip(peer).build();
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&fifo)
                .unwrap();
            tokio::spawn(
                AuditTrail::new()
                    .json_lines(std::io::BufWriter::new(file))
                    .drain(events.subscribe("audit-log", 4096)),
            );
            let server = throttled_login(&events, ClientAddress::peer()).await;
            tx.send(server.url("/login")).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let url = rx.recv().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        // Each answer is a `login_failed` or a `throttled`, both audit
        // events: about 150 bytes a line, 64 KiB fill the pipe.
        for i in 0..2000 {
            let resp = client.post(&url).send().await;
            assert!(
                resp.is_ok(),
                "request {i} not answered within 10 s: {resp:?}"
            );
        }
    });
}

/// A cookie jar: the last value of each cookie the server set.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn absorb(&mut self, resp: &reqwest::Response) {
        for c in portcullis_tests::set_cookies(resp) {
            let first = c.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            self.0.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.0.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A session store outage is not a CSRF attack. With CSRF tokens bound to
/// the session, a `POST` carrying its valid token during an outage is
/// answered 503, and the session layer says why (`store_unavailable`,
/// `session`, `load`). The CSRF layer adds a `csrf_refused`
/// (`csrf-session-unavailable`) for the same request: every state-changing
/// request of every logged-in user during an outage is counted in
/// `portcullis.csrf.refusals`, the metric an operator watches for forged
/// requests, and the outage is counted twice.
#[tokio::test]
async fn a_session_store_outage_is_not_a_csrf_refusal() {
    use axum::routing::get;
    use portcullis::session::testing::FaultyStore;
    use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
    use portcullis_csrf::{CsrfConfig, CsrfLayer, CsrfToken, SignedBinding};

    async fn token(token: CsrfToken) -> String {
        token.as_str().to_owned()
    }
    async fn login(session: Session) -> &'static str {
        session.login("alice").await.unwrap();
        "in"
    }
    let events = Events::builder().route(route).client_ip(peer).build();
    let mut stream = events.subscribe("t", 64);
    let store = FaultyStore::new(MemoryStore::new());
    let outage = store.switch();
    let router = Router::new()
        .route("/token", get(token))
        .route("/login", post(login))
        .route("/act", post(|| async { "done" }))
        .layer(
            CsrfLayer::new(
                CsrfConfig::signed([0x5a; 32], SignedBinding::session()).events(events.clone()),
            )
            .unwrap(),
        )
        .layer(SessionLayer::new(store, SessionConfig::default().events(events.clone())).unwrap());
    let server = TestServer::start(router).await;
    let post_with = |jar: &Jar, path: &str, token: &str| {
        client()
            .post(server.url(path))
            .header("cookie", jar.header())
            .header("x-csrf-token", token.to_owned())
            .header("sec-fetch-site", "same-origin")
            .send()
    };
    let get_token = |jar: &Jar| {
        client()
            .get(server.url("/token"))
            .header("cookie", jar.header())
            .send()
    };
    let mut jar = Jar::default();
    let resp = get_token(&jar).await.unwrap();
    jar.absorb(&resp);
    let pre = resp.text().await.unwrap();
    let resp = post_with(&jar, "/login", &pre).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    jar.absorb(&resp);
    let resp = get_token(&jar).await.unwrap();
    let token = resp.text().await.unwrap();
    let resp = post_with(&jar, "/act", &token).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the token is good");
    drain(&mut stream);

    outage.store(true, Ordering::SeqCst);
    let resp = post_with(&jar, "/act", &token).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let seen = drain(&mut stream);
    let kinds: Vec<_> = seen.iter().map(|e| e.kind.clone()).collect();
    assert!(
        kinds.contains(&AuthEventKind::StoreUnavailable {
            store: "session",
            operation: "load"
        }),
        "{seen:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, AuthEventKind::CsrfRefused { .. })),
        "an outage counted as a CSRF refusal: {seen:?}"
    );
}

/// A form login to the web-app template: the session's `Cookie` header on
/// success, `None` on a 401; the status otherwise.
async fn web_login(
    server: &TestServer,
    user: &str,
    password: &str,
) -> Result<Option<String>, StatusCode> {
    use portcullis_tests::cookie_value;
    let resp = client()
        .get(server.url("/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let pre = format!(
        "__Host-csrf={}",
        cookie_value(&resp, "__Host-csrf").unwrap()
    );
    let body = resp.text().await.unwrap();
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).unwrap() + marker.len();
    let token = &body[start..start + body[start..].find('"').unwrap()];
    let resp = client()
        .post(server.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("origin", format!("http://{}", server.addr))
        .header("cookie", pre)
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf_token", token),
        ])
        .send()
        .await
        .unwrap();
    match resp.status() {
        StatusCode::SEE_OTHER => Ok(Some(format!(
            "__Host-session={}",
            cookie_value(&resp, "__Host-session").unwrap()
        ))),
        StatusCode::UNAUTHORIZED => Ok(None),
        other => Err(other),
    }
}

/// "Your security activity" is where a user looks for a login that was
/// not theirs. Its log keeps each user's last 20 audit events, and anyone
/// can add `login_failed` events to an account by typing its name with a
/// wrong password. So an intruder who logged in with a stolen password
/// pushes that login off the owner's page with 20 wrong passwords (paced
/// to the throttle's backoff). The owner then sees
/// her own login and a wall of failures, never the intruder's login.
#[tokio::test]
async fn failed_logins_cannot_push_an_intruders_login_off_the_activity_page() {
    use portcullis::session::MemoryStore;
    use web_app::AppConfig;
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = AppConfig::default();
    config.clock = Some(clock.clone());
    let (router, _) = web_app::app(MemoryStore::new(), config).unwrap();
    let server = TestServer::start(router).await;
    // The intruder, with alice's stolen password.
    let intruder = web_login(&server, "alice", "wonderland").await.unwrap();
    assert!(intruder.is_some());
    // Then 20 wrong passwords, each after the throttle's backoff has run
    // out (15 minutes at most for one account at one address; an intruder
    // with a few addresses is faster).
    for i in 0..20 {
        clock.advance(std::time::Duration::from_secs(15 * 60 + 1));
        let wrong = format!("wrong-{i}");
        assert_eq!(web_login(&server, "alice", &wrong).await, Ok(None), "{i}");
    }
    // Alice logs in (once the backoff is over) and reads her activity.
    clock.advance(std::time::Duration::from_secs(15 * 60 + 1));
    let alice = web_login(&server, "alice", "wonderland")
        .await
        .unwrap()
        .unwrap();
    let page = client()
        .get(server.url("/account/activity"))
        .header("cookie", alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logins = page
        .matches("<td class=\"event\">login_succeeded</td>")
        .count();
    let failures = page
        .matches("<td class=\"event\">login_failed</td>")
        .count();
    assert_eq!(
        logins, 2,
        "her login and the intruder's ({failures} failures shown)"
    );
}

/// `store_unavailable` names the store operation that failed, with the
/// names the refresh store's own instrumentation times its calls under
/// (`get`, `list_user`, ...), so that an outage and the store-call
/// histogram agree. Listing the devices fails in `list_user` but is
/// reported as `get`; revoking one fails in `get` but is reported as
/// `list` (an operation no store has).
#[tokio::test]
async fn store_unavailable_names_the_refresh_store_call_that_failed() {
    use portcullis_tests::refresh_app::read_login;
    let app = start_with(None, None, |c| c, Arc::new(ManualClock::starting_now())).await;
    let login = || async {
        read_login(
            client()
                .post(app.server.url("/auth/login/alice"))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let phone = login().await;
    let laptop = login().await;
    let phone_family = phone.refresh.split_once('.').unwrap().0.to_owned();
    let from = app.events.all().len();
    app.down.store(true, Ordering::SeqCst);
    let resp = client()
        .get(app.server.url("/auth/sessions"))
        .bearer_auth(&laptop.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = client()
        .delete(app.server.url(&format!("/auth/sessions/{phone_family}")))
        .bearer_auth(&laptop.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let kinds: Vec<_> = app.events.all()[from..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            AuthEventKind::StoreUnavailable {
                store: "refresh",
                operation: "list_user"
            },
            AuthEventKind::StoreUnavailable {
                store: "refresh",
                operation: "get"
            },
        ]
    );
}

/// The audit file holds personal data (user ids, client addresses, who
/// failed to log in at which account): the web-app template creates it
/// with the process's default mode, readable by every local user under the
/// usual umask (022), where `0600` keeps it to the service's account.
#[tokio::test]
async fn the_audit_file_is_created_readable_by_its_owner_only() {
    use portcullis::session::MemoryStore;
    use std::os::unix::fs::PermissionsExt as _;
    use web_app::AppConfig;
    // SAFETY: umask only changes the mode of files created from now on;
    // the usual system default.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut config = AppConfig::default();
    config.audit_log = Some(path.clone());
    let (router, _) = web_app::app(MemoryStore::new(), config).unwrap();
    let server = TestServer::start(router).await;
    assert_eq!(web_login(&server, "alice", "wrong").await, Ok(None));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "audit file mode {mode:o}");
}

/// A subscriber's capacity often comes from configuration (an
/// `AUDIT_CAPACITY` variable). `subscribe` documents "at least 1" and
/// clamps below; above the channel's limit (`usize::MAX >> 3`) it panics
/// instead of clamping, taking the application's startup down.
#[test]
fn a_huge_subscriber_capacity_is_clamped_not_a_panic() {
    let events = Events::new();
    let subscribed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        events.subscribe("audit", usize::MAX)
    }));
    assert!(subscribed.is_ok(), "subscribe panicked");
}

/// The same behind a trusted proxy for the session layer: with
/// `portcullis_throttle::client_ip` as the events' and the session's
/// client address (as its docs say: "so devices are recorded with the
/// address the throttle counted"), a login through the throttle's route
/// records the proxy's address on `login_succeeded` (and on the device
/// the "your devices" list shows): the session layer reads the address
/// when the request arrives, before the throttle behind it resolves it.
#[tokio::test]
async fn a_login_behind_a_trusted_proxy_names_the_client_on_its_event_and_device() {
    use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
    async fn login(session: Session) -> axum::response::Response {
        session.login("alice").await.unwrap();
        let ips: Vec<String> = session
            .active_sessions()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|s| s.ip)
            .collect();
        (LoginOutcome::Succeeded, ips.join(",")).into_response()
    }
    let events = Events::builder()
        .route(route)
        .client_ip(portcullis_throttle::client_ip)
        .build();
    let mut stream = events.subscribe("t", 64);
    let proxies = ClientAddress::peer().trust_proxy("127.0.0.1").unwrap();
    let throttle = LoginThrottleLayer::new(
        MemoryThrottleStore::new(),
        ThrottleConfig::builder()
            .no_account()
            .client_address(proxies)
            .events(events.clone())
            .build()
            .unwrap(),
    );
    let config = SessionConfig::default()
        .client_ip(portcullis_throttle::client_ip)
        .events(events.clone());
    let router = Router::new()
        .route("/login", post(login))
        .route_layer(throttle)
        .layer(SessionLayer::new(MemoryStore::new(), config).unwrap());
    let server = TestServer::start(router).await;
    let resp = post_login(&server, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let device_ips = resp.text().await.unwrap();
    let seen = drain(&mut stream);
    let login = seen
        .iter()
        .find(|e| e.kind == AuthEventKind::LoginSucceeded)
        .expect("a login_succeeded");
    assert_eq!(
        (login.client.map(|ip| ip.to_string()), device_ips.as_str()),
        (Some("203.0.113.9".to_owned()), "203.0.113.9"),
        "{login:?}"
    );
}

/// Reuse of a rotated refresh token is detected once: the family is
/// revoked then, and `refresh_reuse_detected` (an audit event, shown on
/// the user's activity page) says so. The SQL stores keep a reused family
/// as a tombstone that answers every later presentation of its old tokens
/// with `Reused` again, and the refresher emits `refresh_reuse_detected`
/// (and pushes the revocation again) for each: whoever holds one stolen,
/// rotated token replays it to write as many "reuse detected" lines as
/// they like into the victim's audit trail and activity page (pushing
/// the rest out), and `portcullis.refresh.reuse_detections` counts
/// replays, not detections. The memory and Redis stores, which delete the
/// family, emit one.
#[tokio::test]
async fn replaying_a_reused_refresh_token_is_one_reuse_detection() {
    use portcullis::refresh::RefreshStore;
    use portcullis_sql::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    };
    use portcullis_sql::{SqliteConfig, SqliteRefreshStore};
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("auth.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .unwrap();
    let backend = SqliteConfig::new(pool).build().unwrap();
    backend.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store: Arc<dyn RefreshStore> =
        Arc::new(SqliteRefreshStore::with_clock(&backend, clock.clone()));
    let app = start_with(Some(store), None, |c| c, clock.clone()).await;

    assert_one_reuse_detection(&app, &clock).await;
}

/// Presents a rotated token of a new login of alice's six times, past the
/// grace window: one `refresh_reuse_detected`, whatever the replays.
async fn assert_one_reuse_detection(
    app: &portcullis_tests::refresh_app::HybridApp,
    clock: &ManualClock,
) {
    use portcullis_tests::refresh_app::{login, refresh, refreshed};
    let stolen = login(app, "alice").await;
    let _rotated = refreshed(app, &stolen.refresh).await;
    // Past the grace window: presenting the old token is reuse.
    clock.advance(std::time::Duration::from_secs(11));
    for _ in 0..6 {
        let resp = refresh(app, &stolen.refresh).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let reuses = app.events.reuses();
    assert_eq!(
        reuses.len(),
        1,
        "one detection, not one per replay: {reuses:?}"
    );
}

/// The memory store deletes a reused family: its replays are unknown
/// tokens, and the reuse is one event.
#[tokio::test]
async fn replaying_a_reused_refresh_token_on_the_memory_store_is_one_reuse_detection() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = start_with(None, None, |c| c, clock.clone()).await;
    assert_one_reuse_detection(&app, &clock).await;
}
