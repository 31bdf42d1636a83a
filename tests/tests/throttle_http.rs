//! `LoginThrottleLayer` through a real axum server on a real socket, with a
//! real login handler, the in-memory store and a manual clock. Clients
//! bind distinct loopback addresses (127.0.0.2, 127.0.0.3, ...) so the
//! server sees distinct peers.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Form, Json, Router};
use futures_util::StreamExt as _;
use http::StatusCode;
use portcullis_core::{Clock as _, ManualClock, StoreError, Timestamp};
use portcullis_tests::TestServer;
use portcullis_throttle::{
    ClientAddress, ClientIp, LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ThrottleConfig,
    ThrottleConfigBuilder, ThrottleKey, ThrottleScope, ThrottleState, ThrottleStore,
};
use serde::Deserialize;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Deserialize)]
struct Creds {
    username: String,
    password: String,
}

#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The login handler: alice's password is right, everything else is wrong.
/// It counts its calls (a call is a password check) and echoes the
/// client address the throttle found.
fn answer(calls: &Calls, ip: IpAddr, c: &Creds) -> Response {
    calls.0.fetch_add(1, Ordering::SeqCst);
    let mut r = if c.username == "alice" && c.password == PASSWORD {
        (StatusCode::NO_CONTENT, LoginOutcome::Succeeded).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            LoginOutcome::Failed,
            "wrong user name or password",
        )
            .into_response()
    };
    r.headers_mut()
        .insert("x-client-ip", ip.to_string().parse().unwrap());
    r
}

async fn form_login(
    State(calls): State<Calls>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Form(c): Form<Creds>,
) -> Response {
    answer(&calls, ip, &c)
}

async fn json_login(
    State(calls): State<Calls>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(c): Json<Creds>,
) -> Response {
    answer(&calls, ip, &c)
}

struct Harness {
    server: TestServer,
    clock: Arc<ManualClock>,
    calls: Calls,
}

async fn start_with(builder: ThrottleConfigBuilder, store: Arc<dyn ThrottleStore>) -> Harness {
    let clock = Arc::new(ManualClock::starting_now());
    let config = builder.clock(clock.clone()).build().unwrap();
    let throttle = LoginThrottleLayer::from_arc(store, config);
    let calls = Calls::default();
    let app = Router::new()
        .route("/login", post(form_login).layer(throttle.clone()))
        .route("/api/login", post(json_login).layer(throttle))
        .with_state(calls.clone());
    Harness {
        server: TestServer::start(app).await,
        clock,
        calls,
    }
}

async fn start() -> (Harness, Arc<MemoryThrottleStore>) {
    let store = Arc::new(MemoryThrottleStore::new());
    (
        start_with(ThrottleConfig::builder(), store.clone()).await,
        store,
    )
}

/// A client whose connections come from `127.0.0.<last>`.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, last]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(
    h: &Harness,
    client: &reqwest::Client,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(h.server.url("/login"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The scenario: 50 wrong passwords from one address meet 429 with
/// a growing `Retry-After` (the clock jumps by it each time, so each wait
/// is served); no password is checked while blocked; the right password
/// from another address then works after at most the account counter's
/// one-minute cap, while the attacker's address stays blocked.
#[tokio::test]
async fn fifty_wrong_passwords_back_off_and_the_right_one_works_from_elsewhere() {
    let (h, _) = start().await;
    let attacker = client_from(2);
    let mut failures = 0;
    let mut waits = Vec::new();
    while failures < 50 {
        let before = h.calls.get();
        let r = login(&h, &attacker, "alice", &format!("guess {failures}")).await;
        match r.status() {
            StatusCode::UNAUTHORIZED => failures += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(h.calls.get(), before, "no password checked while blocked");
                assert_eq!(r.headers()["content-type"], "application/problem+json");
                let wait = retry_after(&r);
                waits.push(wait);
                h.clock.advance(Duration::from_secs(wait));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(h.calls.get(), 50);
    assert!(waits.len() >= 40, "blocked between most guesses: {waits:?}");
    assert!(
        waits.windows(2).all(|w| w[0] <= w[1]),
        "Retry-After never shrinks: {waits:?}"
    );
    assert_eq!(waits[0], 1);
    assert!(waits.contains(&512), "{waits:?}");
    assert_eq!(*waits.last().unwrap(), 900, "capped at 15 minutes");

    // The rightful user, from their own address: slowed by the account
    // counter (at most its one-minute cap), never locked out.
    let alice = client_from(3);
    let r = login(&h, &alice, "alice", PASSWORD).await;
    let mut waited = 0;
    if r.status() == StatusCode::TOO_MANY_REQUESTS {
        waited = retry_after(&r);
        assert!(
            waited <= 60,
            "the account counter caps at a minute: {waited}"
        );
        h.clock.advance(Duration::from_secs(waited));
    }
    let r = login(&h, &alice, "alice", PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "after waiting {waited} s"
    );

    // The attacker's own counters were not reset by alice's success.
    let r = login(&h, &attacker, "alice", "one more").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// An unknown account and a known one, after the same failures, get the
/// same 429: status, Retry-After, content type and body byte for byte.
#[tokio::test]
async fn unknown_and_known_accounts_get_the_same_429() {
    let (h, _) = start().await;
    let mut answers = Vec::new();
    for (last, user) in [(4, "alice"), (5, "nobody-here")] {
        let c = client_from(last);
        for i in 0..5 {
            let r = login(&h, &c, user, &format!("wrong {i}")).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = login(&h, &c, user, "wrong again").await;
        let head = (
            r.status(),
            r.headers().get("retry-after").cloned(),
            r.headers().get("content-type").cloned(),
        );
        answers.push((head, r.bytes().await.unwrap()));
    }
    assert_eq!(answers[0].0.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answers[0], answers[1]);
}

/// A success resets the account's counters: four failures, a success, then
/// four more failures and a fifth attempt that still reaches the handler
/// (without the reset, the eighth failure would have been refused after
/// the fifth).
#[tokio::test]
async fn a_success_resets_the_account_counters() {
    let (h, _) = start().await;
    let c = client_from(6);
    for i in 0..4 {
        assert_eq!(login(&h, &c, "alice", &format!("w{i}")).await.status(), 401);
    }
    assert_eq!(login(&h, &c, "alice", PASSWORD).await.status(), 204);
    for i in 0..4 {
        assert_eq!(login(&h, &c, "alice", &format!("v{i}")).await.status(), 401);
    }
    assert_eq!(login(&h, &c, "alice", "fifth").await.status(), 401);
    assert_eq!(
        login(&h, &c, "alice", "sixth").await.status(),
        429,
        "five failures since the success block"
    );
}

/// JSON bodies count for the same account as forms, and the name is
/// normalised (trimmed, lower-cased) before counting.
#[tokio::test]
async fn json_and_form_count_one_normalised_account() {
    let (h, _) = start().await;
    let c = client_from(7);
    for i in 0..5 {
        assert_eq!(login(&h, &c, "alice", &format!("w{i}")).await.status(), 401);
    }
    let r = c
        .post(h.server.url("/api/login"))
        .json(&serde_json::json!({"username": "  ALICE ", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    h.clock.advance(Duration::from_secs(retry_after(&r)));
    let r = c
        .post(h.server.url("/api/login"))
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "the body reached the handler intact"
    );
}

/// Without trusted proxies, `X-Forwarded-For` is ignored: a client
/// changing it on every guess is still counted at its own address.
#[tokio::test]
async fn proxy_header_ignored_unless_a_proxy_is_trusted() {
    let (h, _) = start().await;
    let c = client_from(8);
    for i in 0..6u8 {
        let r = c
            .post(h.server.url("/login"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .form(&[("username", "alice"), ("password", "wrong")])
            .send()
            .await
            .unwrap();
        if i < 5 {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()["x-client-ip"], "127.0.0.8");
        } else {
            assert_eq!(
                r.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "the header bought nothing"
            );
        }
    }
}

/// Behind a trusted proxy (127.0.0.1), the client is the rightmost
/// address the proxy did not write itself: a forged left part is ignored,
/// and the proxy's clients are counted apart. A peer that is not the proxy
/// sending the same header is counted at its own address.
#[tokio::test]
async fn trusted_proxy_header_walked_from_the_right() {
    let store: Arc<dyn ThrottleStore> = Arc::new(MemoryThrottleStore::new());
    let proxies = ClientAddress::peer().trust_proxy("127.0.0.1").unwrap();
    let h = start_with(ThrottleConfig::builder().client_address(proxies), store).await;
    let proxy = client_from(1);
    let send = |client: &reqwest::Client, xff: &str| {
        client
            .post(h.server.url("/login"))
            .header("x-forwarded-for", xff.to_owned())
            .form(&[("username", "alice"), ("password", "wrong")])
            .send()
    };
    for _ in 0..5 {
        // The client forged the left entry; the proxy appended the real one.
        let r = send(&proxy, "198.51.100.99, 203.0.113.7").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["x-client-ip"], "203.0.113.7");
    }
    let r = send(&proxy, "198.51.100.1, 203.0.113.7").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "forging the left part does not help"
    );
    let r = send(&proxy, "203.0.113.8").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "another client of the proxy"
    );
    // An untrusted peer spoofing the header: counted at its own address.
    let spoofer = client_from(9);
    let r = send(&spoofer, "203.0.113.8").await.unwrap();
    assert_eq!(r.headers()["x-client-ip"], "127.0.0.9");
}

/// A body over the limit gets 413, a body that is neither a form nor JSON
/// gets 400, both problem+json and without reaching the handler; a GET
/// passes untouched.
#[tokio::test]
async fn oversized_and_wrongly_typed_bodies_are_refused() {
    let (h, _) = start().await;
    let c = client_from(10);
    let big = "x".repeat(portcullis_throttle::DEFAULT_MAX_BODY + 1);
    let r = login(&h, &c, "alice", &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = c
        .post(h.server.url("/login"))
        .header("content-type", "text/plain")
        .body("username=alice&password=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("application/json"),
        "{body}"
    );
    let r = c
        .post(h.server.url("/login"))
        .form(&[
            ("username", "alice"),
            ("username", "bob"),
            ("password", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a repeated account field"
    );
    assert_eq!(h.calls.get(), 0, "no refused request reached the handler");
    let r = c.get(h.server.url("/login")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "GET went to the router untouched"
    );
}

/// A store wrapper that fails its calls while told to (fault injection).
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryThrottleStore,
    fail_check: AtomicBool,
    fail_writes: AtomicBool,
}

fn down() -> StoreError {
    StoreError::backend(std::io::Error::other("throttle store down (injected)"))
}

#[async_trait]
impl ThrottleStore for Flaky {
    async fn check(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        if self.fail_check.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.check(keys, now, forget_after).await
    }

    async fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: Timestamp,
        forget_after: Duration,
    ) -> Result<Vec<ThrottleState>, StoreError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.record_failure(keys, now, forget_after).await
    }

    async fn reset(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.reset(keys).await
    }
}

/// A store failure fails closed: 503 problem+json with `Retry-After`,
/// without checking the password when the counters cannot be read, and
/// instead of the handler's answer when the outcome cannot be recorded.
#[tokio::test]
async fn a_store_failure_answers_503() {
    let flaky = Arc::new(Flaky::default());
    let h = start_with(ThrottleConfig::builder(), flaky.clone()).await;
    let c = client_from(11);
    flaky.fail_check.store(true, Ordering::SeqCst);
    let r = login(&h, &c, "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(h.calls.get(), 0, "no password checked without the counters");
    flaky.fail_check.store(false, Ordering::SeqCst);
    // One failure counted: a success now has a counter to reset.
    assert_eq!(login(&h, &c, "alice", "wrong").await.status(), 401);
    flaky.fail_writes.store(true, Ordering::SeqCst);
    let r = login(&h, &c, "alice", "wrong").await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a failure that cannot be counted"
    );
    let r = login(&h, &c, "alice", PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a reset that cannot be written"
    );
    flaky.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(login(&h, &c, "alice", PASSWORD).await.status(), 204);
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A flood of 100,000 distinct addresses (behind a trusted proxy, each
/// failing once, each for another account) leaves the store at its cap in
/// every scope, and the process's
/// memory on a plateau: the second 50,000 addresses add less than 8 MiB
/// (measured here: about 3 MiB; with a cap the flood never reaches, about
/// 10 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_addresses_leaves_memory_bounded() {
    const CAP: usize = 10_000;
    const FLOOD: u32 = 100_000;
    let store = Arc::new(MemoryThrottleStore::with_capacity(CAP));
    let proxies = ClientAddress::peer().trust_proxy("127.0.0.1").unwrap();
    let h = start_with(
        ThrottleConfig::builder().client_address(proxies),
        store.clone(),
    )
    .await;
    let proxy = client_from(1);
    let flood = |range: std::ops::Range<u32>| {
        let proxy = proxy.clone();
        let url = h.server.url("/login");
        futures_util::stream::iter(range)
            .map(move |i| {
                let [_, b, c, d] = i.to_be_bytes();
                let xff = format!("10.{b}.{c}.{d}");
                proxy
                    .post(url.clone())
                    .header("x-forwarded-for", xff)
                    .form(&[
                        ("username", format!("user{i}").as_str()),
                        ("password", "wrong"),
                    ])
                    .send()
            })
            .buffer_unordered(16)
            .for_each(|r| async move {
                assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
            })
    };
    let start_rss = rss_kib();
    flood(0..FLOOD / 2).await;
    let half_rss = rss_kib();
    assert!(store.len_of(ThrottleScope::Address) <= CAP);
    flood(FLOOD / 2..FLOOD).await;
    let end_rss = rss_kib();
    let addresses = store.len_of(ThrottleScope::Address);
    let pairs = store.len_of(ThrottleScope::AccountAtAddress);
    let accounts = store.len_of(ThrottleScope::Account);
    eprintln!(
        "flood: RSS {start_rss} KiB -> {half_rss} KiB (50k) -> {end_rss} KiB (100k); \
         counters: address {addresses}, account {accounts}, account at address {pairs}; cap {CAP}"
    );
    assert!(
        addresses <= CAP && pairs <= CAP && accounts <= CAP,
        "never past the cap"
    );
    assert!(addresses >= CAP * 7 / 8, "the cap is in use: {addresses}");
    assert_eq!(h.calls.get(), FLOOD as usize);
    assert!(
        end_rss.saturating_sub(half_rss) < 8 * 1024,
        "memory plateaus: {half_rss} KiB -> {end_rss} KiB"
    );
}

/// `ClientAddressLayer` gives every route the address behind trusted
/// proxies, read through the `ClientIpFn`-shaped `client_ip` (what
/// sessions and refresh families record); an untrusted peer's header is
/// ignored there too.
#[tokio::test]
async fn client_address_layer_feeds_client_ip() {
    async fn whoami(req: axum::extract::Request) -> String {
        let ip = portcullis_throttle::client_ip(req.extensions(), req.headers());
        ip.map(|ip| ip.to_string()).unwrap_or_default()
    }
    let proxies = ClientAddress::peer().trust_proxy("127.0.0.1").unwrap();
    let app = Router::new()
        .route("/whoami", axum::routing::get(whoami))
        .layer(portcullis_throttle::ClientAddressLayer::new(proxies));
    let server = TestServer::start(app).await;
    let ask = |client: reqwest::Client| {
        client
            .get(server.url("/whoami"))
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.50")
            .send()
    };
    let behind = ask(client_from(1)).await.unwrap().text().await.unwrap();
    assert_eq!(behind, "203.0.113.50");
    let direct = ask(client_from(12)).await.unwrap().text().await.unwrap();
    assert_eq!(direct, "127.0.0.12");
}

/// Behind a trusted proxy, a client prepending a long forged chain (more
/// entries than the walk reads) or a byte that is not ASCII to its
/// `X-Forwarded-For` is still counted at the address the proxy appended:
/// its sixth guess at one account is refused.
#[tokio::test]
async fn a_long_or_non_ascii_forged_prefix_cannot_choose_the_counted_address() {
    let store: Arc<dyn ThrottleStore> = Arc::new(MemoryThrottleStore::new());
    let proxies = ClientAddress::peer().trust_proxy("127.0.0.1").unwrap();
    let h = start_with(ThrottleConfig::builder().client_address(proxies), store).await;
    let proxy = client_from(1);
    for guess in 0..6u8 {
        let xff = if guess % 2 == 0 {
            let mut chain: Vec<String> = (0..200).map(|j| format!("198.18.{guess}.{j}")).collect();
            chain.push("203.0.113.70".to_owned());
            http::HeaderValue::from_str(&chain.join(", ")).unwrap()
        } else {
            http::HeaderValue::from_bytes(b"\xff, 203.0.113.70").unwrap()
        };
        let r = proxy
            .post(h.server.url("/login"))
            .header("x-forwarded-for", xff)
            .form(&[("username", "alice"), ("password", "wrong")])
            .send()
            .await
            .unwrap();
        if guess < 5 {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {guess}");
            assert_eq!(r.headers()["x-client-ip"], "203.0.113.70", "guess {guess}");
        } else {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        }
    }
}

/// Two instances share one store, one with its clock an hour fast: the
/// failures landed on the fast instance carry a last failure an hour
/// ahead, and must not hold the rightful user back on the correct instance
/// past the account counter's one-minute cap.
#[tokio::test]
async fn a_fast_instance_cannot_lock_the_rightful_user_out() {
    let store: Arc<dyn ThrottleStore> = Arc::new(MemoryThrottleStore::new());
    let right = start_with(ThrottleConfig::builder(), store.clone()).await;
    let fast = start_with(ThrottleConfig::builder(), store).await;
    fast.clock
        .set(right.clock.now() + Duration::from_secs(3600));
    for last in 20..30u8 {
        let r = login(&fast, &client_from(last), "alice", "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let alice = client_from(40);
    let r = login(&right, &alice, "alice", PASSWORD).await;
    if r.status() == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after(&r);
        assert!(wait <= 60, "held back {wait} s");
        right.clock.advance(Duration::from_secs(wait));
    }
    let r = login(&right, &alice, "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// While one attempt at an account is in the handler, parallel attempts
/// at the same account (from the same address or another) get the same
/// 429 without reaching it; once the first is recorded, the next attempt
/// goes through. A burst of parallel guesses so gets one password check,
/// not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_attempts_at_one_account_get_one_check() {
    #[derive(Default)]
    struct Gate {
        entered: tokio::sync::Notify,
        release: tokio::sync::Notify,
        calls: AtomicUsize,
    }
    async fn gated(State(g): State<Arc<Gate>>, Form(_): Form<Creds>) -> Response {
        // Only the first attempt is held in the handler.
        if g.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            g.entered.notify_one();
            g.release.notified().await;
        }
        (StatusCode::UNAUTHORIZED, LoginOutcome::Failed).into_response()
    }
    let clock = Arc::new(ManualClock::starting_now());
    let config = ThrottleConfig::builder().clock(clock).build().unwrap();
    let gate = Arc::new(Gate::default());
    let app = Router::new()
        .route(
            "/login",
            post(gated).layer(LoginThrottleLayer::new(MemoryThrottleStore::new(), config)),
        )
        .with_state(gate.clone());
    let server = TestServer::start(app).await;
    let send = |last: u8, user: &'static str| {
        client_from(last)
            .post(server.url("/login"))
            .form(&[("username", user), ("password", "guess")])
            .send()
    };
    let first = tokio::spawn(send(13, "alice"));
    gate.entered.notified().await;
    let burst = (0..20).map(|i| send(if i % 2 == 0 { 13 } else { 14 }, "alice"));
    for r in futures_util::future::join_all(burst).await {
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "one check in flight");
    gate.release.notify_one();
    assert_eq!(
        first.await.unwrap().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // The claim is released with the recorded outcome.
    let next = send(13, "alice").await.unwrap();
    assert_eq!(next.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
}
