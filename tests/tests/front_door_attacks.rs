//! Attacks on the front door's login throttle through a real axum server on
//! a real socket: one account spelled many ways, duplicated and disguised
//! account fields, bodies the throttle cannot read, the right password
//! while blocked, IPv6 and IPv4-mapped clients, and forged or malformed
//! proxy headers behind a trusted proxy. Each test proves a defence holds;
//! the defects they found first are fixed.
//!
//! Clients bind distinct loopback addresses (127.0.0.2, ...) so the server
//! sees distinct peers; 127.0.0.1 plays the trusted proxy where one is
//! configured, appending the real client to the header the way nginx's
//! `$proxy_add_x_forwarded_for` does.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Form, Json, Router};
use http::{HeaderValue, StatusCode};
use portcullis_core::{Clock as _, ManualClock};
use portcullis_tests::TestServer;
use portcullis_throttle::{
    ClientAddress, ClientIp, LoginOutcome, LoginThrottleLayer, MemoryThrottleStore, ProxyHeader,
    ThrottleConfig, ThrottleConfigBuilder, ThrottleStore,
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

/// alice's password is right, everything else wrong; the handler counts
/// its calls (each a password check) and echoes the client address the
/// throttle found.
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

async fn start_with(builder: ThrottleConfigBuilder) -> Harness {
    let clock = Arc::new(ManualClock::starting_now());
    let config = builder.clock(clock.clone()).build().unwrap();
    let throttle = LoginThrottleLayer::new(MemoryThrottleStore::new(), config);
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

async fn start() -> Harness {
    start_with(ThrottleConfig::builder()).await
}

/// Behind one trusted proxy, 127.0.0.1, reading `header`.
async fn start_behind_proxy(header: ProxyHeader) -> Harness {
    let proxies = ClientAddress::peer()
        .trust_proxy("127.0.0.1")
        .unwrap()
        .proxy_header(header);
    start_with(ThrottleConfig::builder().client_address(proxies)).await
}

/// A client whose connections come from `127.0.0.<last>`.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, last]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// POSTs `body` to `/login` as an urlencoded form.
async fn raw_form(h: &Harness, c: &reqwest::Client, body: &str) -> reqwest::Response {
    c.post(h.server.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// POSTs `body` to `/api/login` as JSON.
async fn raw_json(h: &Harness, c: &reqwest::Client, body: &str) -> reqwest::Response {
    c.post(h.server.url("/api/login"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// A wrong password for `user` sent by the proxy (127.0.0.1) with
/// `header: value`.
async fn via_proxy(
    h: &Harness,
    header: &'static str,
    value: HeaderValue,
    user: &str,
) -> reqwest::Response {
    client_from(1)
        .post(h.server.url("/login"))
        .header(header, value)
        .form(&[("username", user), ("password", "wrong")])
        .send()
        .await
        .unwrap()
}

/// Writes `request` on a fresh connection and returns the answer's status
/// code (the server may answer before it has read everything).
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let line = String::from_utf8_lossy(&answer);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

fn client_ip(r: &reqwest::Response) -> String {
    r.headers()["x-client-ip"].to_str().unwrap().to_owned()
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// One account spelled many ways (case, surrounding Unicode white space,
/// a percent-encoded field name, `+` for a space, a JSON key written with
/// a `\u` escape) is one account: five wrong guesses under five spellings
/// exhaust alice's free failures at this address, and the sixth, in yet
/// another spelling and with the right password, is refused without
/// reaching the handler.
#[tokio::test]
async fn every_spelling_of_an_account_shares_its_counter() {
    let h = start().await;
    let c = client_from(2);
    let spellings = [
        raw_form(&h, &c, "username=Alice&password=w1").await,
        raw_form(&h, &c, "username=%20ALICE%09&password=w2").await,
        raw_form(&h, &c, "user%6Eame=aLiCe&password=w3").await,
        raw_form(&h, &c, "username=+alice+&password=w4").await,
        raw_json(
            &h,
            &c,
            r#"{"user\u006eame":"\u0041lice\u00a0","password":"w5"}"#,
        )
        .await,
    ];
    for r in spellings {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.calls.get(), 5);
    let r = raw_json(
        &h,
        &c,
        &format!(r#"{{"username":"\u2003ALICE","password":"{PASSWORD}"}}"#),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.calls.get(), 5, "no password checked while blocked");
}

/// A second copy of the account field disguised from the throttle (a
/// percent-encoded name in a form, a `\u` escaped key in JSON) is still a
/// second copy: 400 before the handler, so the throttle can never count
/// one account while the handler checks another.
#[tokio::test]
async fn a_disguised_second_account_field_is_refused() {
    let h = start().await;
    let c = client_from(3);
    for body in [
        "username=nobody&user%6Eame=alice&password=x",
        "user%6eame=alice&username=nobody&password=x",
        "username=nobody&password=x&%75sername=alice",
    ] {
        let r = raw_form(&h, &c, body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    for body in [
        r#"{"username":"nobody","user\u006eame":"alice","password":"x"}"#,
        r#"{"username":"nobody","password":"x","username":"alice"}"#,
        r#"{"username":["alice"],"password":"x"}"#,
        r#"{"username":null,"password":"x"}"#,
    ] {
        let r = raw_json(&h, &c, body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(h.calls.get(), 0, "no refused request reached the handler");
}

/// Bodies the throttle cannot read never reach the handler uncounted: no
/// content type, a gzip-encoded form, a chunked body past the limit (no
/// `Content-Length` to refuse early), a JSON body sent as a form's content
/// type. Each is a clear 400 or 413, and none is a password check.
#[tokio::test]
async fn bodies_the_throttle_cannot_read_never_reach_the_handler() {
    let h = start().await;
    let c = client_from(4);
    let r = c
        .post(h.server.url("/login"))
        .body("username=alice&password=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no content type");
    // A gzip member header and garbage: not a form the handler can read
    // either, but the throttle must not pass it on uncounted.
    let r = c
        .post(h.server.url("/api/login"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff, 1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "gzip body");
    // Chunked, so no Content-Length announces the size: 40 chunks of
    // 1 KiB after the fields, written on a raw socket.
    let mut request = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        h.server.addr
    )
    .into_bytes();
    let head = b"username=alice&password=";
    request.extend_from_slice(format!("{:x}\r\n", head.len()).as_bytes());
    request.extend_from_slice(head);
    request.extend_from_slice(b"\r\n");
    for _ in 0..40 {
        request.extend_from_slice(b"400\r\n");
        request.extend_from_slice(&[b'x'; 1024]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        raw_status(h.server.addr, &request).await,
        413,
        "chunked past the limit"
    );
    assert_eq!(h.calls.get(), 0);
}

/// While alice is blocked, her right password gets the very answer a wrong
/// one gets (status, `Retry-After`, content type, body), and is not
/// checked; once the wait is served it works.
#[tokio::test]
async fn the_right_password_while_blocked_is_answered_like_a_wrong_one() {
    let h = start().await;
    let c = client_from(5);
    for i in 0..5 {
        let r = raw_form(&h, &c, &format!("username=alice&password=w{i}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let calls = h.calls.get();
    let mut answers = Vec::new();
    for password in [PASSWORD, "still wrong"] {
        let r = c
            .post(h.server.url("/login"))
            .form(&[("username", "alice"), ("password", password)])
            .send()
            .await
            .unwrap();
        let head = (
            r.status(),
            r.headers().get("retry-after").cloned(),
            r.headers().get("content-type").cloned(),
            r.headers().get("set-cookie").cloned(),
        );
        answers.push((head, r.bytes().await.unwrap()));
    }
    assert_eq!(answers[0].0.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answers[0], answers[1], "the right guess is not revealed");
    assert_eq!(h.calls.get(), calls, "neither password was checked");
    h.clock.advance(Duration::from_secs(1));
    let r = c
        .post(h.server.url("/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// Behind a trusted proxy, an IPv4-mapped IPv6 address is the IPv4 client,
/// and every address of one /64 is one client: changing the last 64 bits,
/// or writing the client as `::ffff:a.b.c.d`, buys no fresh counter. A
/// client in another /64 is counted apart.
#[tokio::test]
async fn ipv6_variants_behind_a_proxy_share_one_counter() {
    let h = start_behind_proxy(ProxyHeader::XForwardedFor).await;
    let v4 = [
        "203.0.113.7",
        "::ffff:203.0.113.7",
        "[::ffff:203.0.113.7]",
        "203.0.113.7:5555",
        "::ffff:cb00:7107",
    ];
    for (i, xff) in v4.iter().enumerate() {
        let r = via_proxy(
            &h,
            "x-forwarded-for",
            HeaderValue::from_static(xff),
            "alice",
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{xff}");
        assert_eq!(client_ip(&r), "203.0.113.7", "try {i}: {xff}");
    }
    let r = via_proxy(
        &h,
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.7"),
        "alice",
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    for i in 0..5u16 {
        let xff = format!("2001:db8:aa:bb:{i:x}:{i:x}::{i:x}");
        let r = via_proxy(&h, "x-forwarded-for", xff.parse().unwrap(), "bob").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{xff}");
    }
    let r = via_proxy(
        &h,
        "x-forwarded-for",
        HeaderValue::from_static("[2001:db8:aa:bb:ffff::1]:443"),
        "bob",
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "same /64");
    let r = via_proxy(
        &h,
        "x-forwarded-for",
        HeaderValue::from_static("2001:db8:aa:bc::1"),
        "bob",
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "another /64");
}

/// Behind a trusted proxy, entries the client wrote left of the real one
/// (`unknown`, an RFC 7239 obfuscated name, garbage, a second header line
/// sent before the proxy's) never choose the counted address.
#[tokio::test]
async fn short_forged_chains_never_choose_the_counted_address() {
    let h = start_behind_proxy(ProxyHeader::XForwardedFor).await;
    for (i, forged) in ["unknown", "_hidden", "not an address", "10.9.8.7", "::1"]
        .iter()
        .enumerate()
    {
        let value = format!("{forged}, 192.0.2.{i}, 203.0.113.9");
        let r = via_proxy(&h, "x-forwarded-for", value.parse().unwrap(), "carol").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(client_ip(&r), "203.0.113.9", "{value}");
    }
    let r = via_proxy(
        &h,
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.9"),
        "carol",
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A chain of `n` forged addresses (varied by `salt`) followed by the real
/// client, as the proxy forwards it.
fn long_chain(n: usize, salt: u8, real: &str, forwarded: bool) -> HeaderValue {
    let mut entries: Vec<String> = (0..n)
        .map(|j| {
            let ip = format!("198.18.{salt}.{}", j % 250);
            if forwarded { format!("for={ip}") } else { ip }
        })
        .collect();
    entries.push(if forwarded {
        format!("for={real}")
    } else {
        real.to_owned()
    });
    entries.join(", ").parse().unwrap()
}

/// Behind a trusted proxy that appends the real client to
/// `X-Forwarded-For`, a client that sends 130 forged entries first is
/// still counted at its real address. (The throttle once read at most 129
/// entries from the left and walked those from the right, so the address
/// it counted was one the client chose: a fresh one per guess evaded the
/// account-at-address and address counters entirely.)
#[tokio::test]
async fn a_long_forged_x_forwarded_for_cannot_choose_the_counted_address() {
    let h = start_behind_proxy(ProxyHeader::XForwardedFor).await;
    for salt in 0..6u8 {
        let r = via_proxy(
            &h,
            "x-forwarded-for",
            long_chain(130, salt, "203.0.113.7", false),
            "alice",
        )
        .await;
        if salt < 5 {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(client_ip(&r), "203.0.113.7", "guess {salt}");
        } else {
            assert_eq!(
                r.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "the sixth guess from one client at one account is refused"
            );
        }
    }
}

/// The same with RFC 7239 `Forwarded`.
#[tokio::test]
async fn a_long_forged_forwarded_header_cannot_choose_the_counted_address() {
    let h = start_behind_proxy(ProxyHeader::Forwarded).await;
    for salt in 0..6u8 {
        let r = via_proxy(
            &h,
            "forwarded",
            long_chain(130, salt, "203.0.113.7", true),
            "alice",
        )
        .await;
        if salt < 5 {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(client_ip(&r), "203.0.113.7", "guess {salt}");
        } else {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        }
    }
}

/// A client's `Forwarded` header with an unbalanced quote (or a trailing
/// backslash inside one) runs the quoted string over the comma the proxy
/// appended its element after, so the proxy's element is read as part of
/// the client's and the walk stops at the proxy's own address: the client
/// is then counted apart from its own address (a second set of counters),
/// in the bucket shared by every request the throttle cannot place. The
/// element the proxy appended must be the client, whatever the client
/// wrote before it.
#[tokio::test]
async fn an_unbalanced_quote_in_forwarded_does_not_hide_the_client() {
    let h = start_behind_proxy(ProxyHeader::Forwarded).await;
    for forged in [
        r#"for="198.51.100.1"#,
        r#"for="198.51.100.1\"#,
        r#"for=x;by=""#,
    ] {
        let value = format!("{forged}, for=203.0.113.66");
        let r = via_proxy(&h, "forwarded", value.parse().unwrap(), "alice").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(client_ip(&r), "203.0.113.66", "{value}");
    }
}

/// Under the entry limit, a long forged chain is walked correctly (the
/// control for the two tests above: 120 forged entries are fine).
#[tokio::test]
async fn a_forged_chain_under_the_entry_limit_is_walked_from_the_right() {
    let h = start_behind_proxy(ProxyHeader::XForwardedFor).await;
    for salt in 0..5u8 {
        let r = via_proxy(
            &h,
            "x-forwarded-for",
            long_chain(120, salt, "203.0.113.7", false),
            "alice",
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(client_ip(&r), "203.0.113.7");
    }
    let r = via_proxy(
        &h,
        "x-forwarded-for",
        long_chain(120, 9, "203.0.113.7", false),
        "alice",
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A client's `X-Forwarded-For` holding one byte that is not visible ASCII
/// (obs-text, which HTTP/1.1 servers accept) does not hide the entry the
/// trusted proxy appended to the same line: that entry is the client.
/// (Once the whole line was unreadable and the proxy's own address was
/// counted, giving the client a second set of counters, its poisoned
/// guesses and its plain ones counted apart.)
#[tokio::test]
async fn a_non_ascii_forwarded_for_byte_does_not_hide_the_client_behind_the_proxy() {
    let h = start_behind_proxy(ProxyHeader::XForwardedFor).await;
    let poisoned = HeaderValue::from_bytes(b"\xff, 203.0.113.66").unwrap();
    for i in 0..5 {
        let r = via_proxy(&h, "x-forwarded-for", poisoned.clone(), "alice").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            client_ip(&r),
            "203.0.113.66",
            "guess {i}: the entry the proxy appended is the client"
        );
    }
    let r = via_proxy(
        &h,
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.66"),
        "alice",
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the client's sixth guess at alice, its header now clean, is refused"
    );
}

/// A flood of distinct accounts from many addresses does not evict a
/// counter that is blocking a guessed account: 5,000 one-failure accounts
/// later, the attacker's address is still refused at alice.
#[tokio::test]
async fn a_flood_of_distinct_accounts_does_not_free_a_blocked_counter() {
    let store = Arc::new(MemoryThrottleStore::with_capacity(1_600));
    let clock = Arc::new(ManualClock::starting_now());
    let config = ThrottleConfig::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/login",
            post(form_login).layer(LoginThrottleLayer::new(store.clone(), config)),
        )
        .with_state(calls.clone());
    let h = Harness {
        server: TestServer::start(app).await,
        clock,
        calls,
    };
    let attacker = client_from(11);
    for i in 0..5 {
        let r = raw_form(&h, &attacker, &format!("username=alice&password=g{i}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The flood: other addresses (127.0.0.12 ..) trying distinct accounts,
    // each address staying under its own 20 free failures.
    let mut sent = 0u32;
    for last in 12..=250u8 {
        let c = client_from(last);
        for j in 0..19 {
            let r = raw_form(&h, &c, &format!("username=flood{last}-{j}&password=x")).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            sent += 1;
        }
        if sent > 4_500 {
            break;
        }
    }
    assert!(store.len() <= 3 * 1_600, "bounded: {}", store.len());
    let r = raw_form(
        &h,
        &attacker,
        &format!("username=alice&password={PASSWORD}"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the guessed account's counters survived the flood"
    );
    assert!(retry_after(&r) >= 1);
}

mod fresh_login {
    //! Cookie sessions' login time and lifetimes: the fresh-login guard
    //! against a clock stepped back, and `renew()` against the absolute
    //! lifetime.

    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::{get, post};
    use portcullis::core::{Clock as _, ManualClock};
    use portcullis::session::{
        CurrentUser, MemoryStore, RequireFreshLogin, Session, SessionConfig, SessionError,
        SessionLayer,
    };
    use portcullis_tests::{TestServer, client, cookie_value};
    use reqwest::StatusCode;

    const MINUTE: Duration = Duration::from_secs(60);

    async fn login(session: Session) -> Result<&'static str, SessionError> {
        session.login("alice").await?;
        Ok("logged in")
    }

    async fn start(clock: Arc<ManualClock>) -> TestServer {
        let config = SessionConfig::default()
            .clock(clock.clone())
            .reauthentication_url("/reauth");
        let layer =
            SessionLayer::from_arc(Arc::new(MemoryStore::with_clock(clock)), config).unwrap();
        let guarded = Router::new()
            .route("/api/sensitive", get(|| async { "sensitive" }))
            .route_layer(RequireFreshLogin::within(10 * MINUTE));
        TestServer::start(
            Router::new()
                .route("/login", post(login))
                .merge(guarded)
                .layer(layer),
        )
        .await
    }

    /// A server whose sessions idle out after 30 minutes and end an hour
    /// after login, with routes that renew the id and show the user.
    async fn start_with_renew(clock: Arc<ManualClock>) -> TestServer {
        let config = SessionConfig::default()
            .clock(clock.clone())
            .idle_timeout(30 * MINUTE)
            .absolute_timeout(60 * MINUTE);
        let layer =
            SessionLayer::from_arc(Arc::new(MemoryStore::with_clock(clock)), config).unwrap();
        TestServer::start(
            Router::new()
                .route("/login", post(login))
                .route(
                    "/renew",
                    post(|s: Session| async move { s.renew().await.map(|()| "renewed") }),
                )
                .route("/me", get(|CurrentUser(u): CurrentUser| async move { u }))
                .layer(layer),
        )
        .await
    }

    async fn sensitive(server: &TestServer, cookie: &str) -> StatusCode {
        client()
            .get(server.url("/api/sensitive"))
            .header("cookie", format!("__Host-session={cookie}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A login recorded by a clock that was an hour fast (then stepped
    /// back by NTP, or recorded by another instance whose clock is fast)
    /// lies in the future of the guard's clock. Its age then saturates to
    /// zero and the guard treats it as fresh for the whole hour plus the
    /// window, where the JWT guard (`RequireFreshAuthLayer`) refuses an
    /// `auth_time` more than its leeway in the future. 30 minutes after
    /// the login, a `within(10 min)` guard must refuse it.
    #[tokio::test]
    async fn a_login_from_the_future_is_not_fresh() {
        let clock = Arc::new(ManualClock::starting_now());
        let server = start(clock.clone()).await;
        let resp = client().post(server.url("/login")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = cookie_value(&resp, "__Host-session").unwrap();
        assert_eq!(sensitive(&server, &cookie).await, StatusCode::OK);
        // The clock was an hour fast; it is stepped back.
        let at = clock.now();
        clock.set(at - Duration::from_secs(3600));
        clock.advance(30 * MINUTE);
        assert_eq!(
            sensitive(&server, &cookie).await,
            StatusCode::UNAUTHORIZED,
            "a login recorded 30 minutes ago (an hour ahead of this clock) is not within 10 minutes"
        );
    }

    /// The control: the same login on a steady clock is refused 30 minutes
    /// later, and a login a few seconds ahead (instances' clocks differ a
    /// little) still counts as fresh.
    #[tokio::test]
    async fn a_login_is_fresh_within_the_window_and_a_little_skew() {
        let clock = Arc::new(ManualClock::starting_now());
        let server = start(clock.clone()).await;
        let resp = client().post(server.url("/login")).send().await.unwrap();
        let cookie = cookie_value(&resp, "__Host-session").unwrap();
        let at = clock.now();
        clock.set(at - Duration::from_secs(5));
        assert_eq!(sensitive(&server, &cookie).await, StatusCode::OK);
        clock.set(at + 10 * MINUTE);
        assert_eq!(sensitive(&server, &cookie).await, StatusCode::OK);
        clock.set(at + 30 * MINUTE);
        assert_eq!(sensitive(&server, &cookie).await, StatusCode::UNAUTHORIZED);
    }

    /// `absolute_timeout` promises to end a session "this long after login,
    /// whatever happens", and `renew()` only moves the session to a new id.
    /// Yet a renewal of a login that is not remembered starts new
    /// deadlines from now: a session used at 25 minutes and renewed at 50
    /// minutes into a one-hour lifetime is still alive at 70 minutes, and one renewed every 50
    /// minutes never ends (a stolen cookie lives on through any route that
    /// renews). Remembered logins keep their deadline across a renewal.
    #[tokio::test]
    async fn renew_does_not_extend_the_absolute_lifetime() {
        let clock = Arc::new(ManualClock::starting_now());
        let server = start_with_renew(clock.clone()).await;
        let resp = client().post(server.url("/login")).send().await.unwrap();
        let cookie = cookie_value(&resp, "__Host-session").unwrap();
        // Active every 25 minutes, so the 30-minute idle timeout never ends it.
        clock.advance(25 * MINUTE);
        let resp = client()
            .get(server.url("/me"))
            .header("cookie", format!("__Host-session={cookie}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        clock.advance(25 * MINUTE);
        let resp = client()
            .post(server.url("/renew"))
            .header("cookie", format!("__Host-session={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = cookie_value(&resp, "__Host-session").unwrap();
        let me = |cookie: String| {
            client()
                .get(server.url("/me"))
                .header("cookie", format!("__Host-session={cookie}"))
                .header("accept", "application/json")
                .send()
        };
        let resp = me(cookie.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "the renewed session");
        assert_eq!(resp.text().await.unwrap(), "alice");
        clock.advance(20 * MINUTE);
        let resp = client()
            .get(server.url("/me"))
            .header("cookie", format!("__Host-session={cookie}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "70 minutes after login, past the one-hour absolute lifetime"
        );
    }
}

/// Two instances, the second with its clock an hour fast, each counting in
/// its own handle on one shared store: the failures an attacker lands on
/// the fast instance carry a last failure an hour ahead. The account
/// counter's cap promises never to hold the rightful user back more than a
/// minute; a failure "from the future" must not stretch that to the skew
/// (an hour, kept alive by a failure a minute on the fast instance).
/// alice, on the correct instance, waits at most the cap.
async fn skew_within_the_account_cap(
    right_store: Arc<dyn ThrottleStore>,
    fast_store: Arc<dyn ThrottleStore>,
) {
    let instance = |store: Arc<dyn ThrottleStore>, clock: Arc<ManualClock>| async move {
        let config = ThrottleConfig::builder()
            .clock(clock.clone())
            .build()
            .unwrap();
        let calls = Calls::default();
        let app = Router::new()
            .route(
                "/login",
                post(form_login).layer(LoginThrottleLayer::from_arc(store, config)),
            )
            .with_state(calls.clone());
        Harness {
            server: TestServer::start(app).await,
            clock,
            calls,
        }
    };
    let right = instance(right_store, Arc::new(ManualClock::starting_now())).await;
    let fast_clock = Arc::new(ManualClock::new(
        (right.clock.now() + Duration::from_secs(3600)).millis(),
    ));
    let fast = instance(fast_store, fast_clock).await;
    // Ten guesses at alice, each from its own address, land on the fast
    // instance: the account counter's ten free failures.
    for last in 20..30u8 {
        let r = raw_form(&fast, &client_from(last), "username=alice&password=guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // alice, from her own address, on the correct instance.
    let alice = client_from(40);
    let right_password = format!("username=alice&password={PASSWORD}");
    let r = raw_form(&right, &alice, &right_password).await;
    if r.status() == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after(&r);
        assert!(
            wait <= 60,
            "alice is held back {wait} s, past the account counter's 60 s cap"
        );
        right.clock.advance(Duration::from_secs(wait));
        let r = raw_form(&right, &alice, &right_password).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    } else {
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(right.calls.get() + fast.calls.get(), 11);
}

/// [`skew_within_the_account_cap`] with one memory store
/// shared by both instances.
#[tokio::test]
async fn a_fast_instance_cannot_lock_the_rightful_user_out_past_the_cap() {
    let store: Arc<dyn ThrottleStore> = Arc::new(MemoryThrottleStore::new());
    skew_within_the_account_cap(store.clone(), store).await;
}

/// The same on PostgreSQL, two instances with their own pools on one
/// database: the store keeps the later last failure (`GREATEST`), so the
/// fast instance's hour is what every instance reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_instance_cannot_lock_the_rightful_user_out_on_postgres() {
    use portcullis_sql::sqlx::postgres::PgPoolOptions;
    use portcullis_sql::{PgConfig, PgThrottleStore};
    use portcullis_tests::pg_harness::PgServer;

    let url = PgServer::shared().fresh_database();
    let mut stores: Vec<Arc<dyn ThrottleStore>> = Vec::new();
    for _ in 0..2 {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .unwrap();
        let backend = PgConfig::new(pool)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        backend.migrate().await.unwrap();
        stores.push(Arc::new(PgThrottleStore::new(&backend)));
    }
    let fast = stores.pop().unwrap();
    let right = stores.pop().unwrap();
    skew_within_the_account_cap(right, fast).await;
}

/// Thirty wrong guesses at alice sent at once from one address, against a
/// real argon2id verification on the bounded pool: each is checked against
/// the counters before any of them is recorded, so every one the pool
/// admits is a password check, far past the five free failures of the
/// account-at-address counter (and again after every wait: a burst per
/// backoff instead of one guess). Counting a failure before the handler
/// runs (undone on success) would hold the burst to the free failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_parallel_guesses_gets_no_more_than_the_free_failures() {
    use portcullis_password::{PasswordHasher, Verification};

    #[derive(Clone)]
    struct App {
        hasher: PasswordHasher,
        alice: String,
        checks: Calls,
    }

    async fn verify_login(State(app): State<App>, Form(c): Form<Creds>) -> Response {
        app.checks.0.fetch_add(1, Ordering::SeqCst);
        let stored = (c.username == "alice").then_some(app.alice.as_str());
        match app.hasher.verify(stored, c.password.as_str()).await {
            Ok(Verification::Verified { .. }) => {
                (StatusCode::NO_CONTENT, LoginOutcome::Succeeded).into_response()
            }
            Ok(_) => (StatusCode::UNAUTHORIZED, LoginOutcome::Failed).into_response(),
            Err(e) => e.into_response(),
        }
    }

    let hasher = PasswordHasher::builder().build().unwrap();
    // (The policy refuses the famous PASSWORD itself.)
    let alice = hasher.hash("plum orchard at dusk, 1987").await.unwrap();
    let checks = Calls::default();
    let clock = Arc::new(ManualClock::starting_now());
    let config = ThrottleConfig::builder().clock(clock).build().unwrap();
    let app = Router::new()
        .route(
            "/login",
            post(verify_login).layer(LoginThrottleLayer::new(MemoryThrottleStore::new(), config)),
        )
        .with_state(App {
            hasher,
            alice,
            checks: checks.clone(),
        });
    let server = TestServer::start(app).await;
    let attacker = client_from(50);
    let guesses = (0..30).map(|i| {
        attacker
            .post(server.url("/login"))
            .form(&[("username", "alice"), ("password", &format!("guess {i}"))])
            .send()
    });
    let answers = futures_util::future::join_all(guesses).await;
    let mut statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    assert!(
        checked <= 5,
        "{checked} passwords checked in one burst from one address (answers {statuses:?}, \
         {} handler calls)",
        checks.get()
    );
}

mod web_app_reauth {
    //! The `web-app` template's re-authentication form (`POST /reauth`,
    //! behind the login throttle) in the hands of someone who holds a
    //! logged-in session cookie but not the password: the case the
    //! fresh-login guard exists for.

    use std::net::IpAddr;

    use portcullis::session::MemoryStore;
    use portcullis_tests::{TestServer, cookie_value};
    use reqwest::StatusCode;
    use web_app::AppConfig;

    const SESSION: &str = "__Host-session";

    fn client_from(last: u8) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(IpAddr::from([127, 0, 0, last]))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn token_in(body: &str) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = body.find(marker).expect("a csrf_token field") + marker.len();
        let end = body[start..].find('"').unwrap() + start;
        body[start..end].to_owned()
    }

    /// A same-origin form POST, as a browser sends it.
    async fn post(
        server: &TestServer,
        c: &reqwest::Client,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = c
            .post(server.url(path))
            .header("sec-fetch-site", "same-origin")
            .header("origin", format!("http://{}", server.addr))
            .form(form);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie.to_owned());
        }
        req.send().await.unwrap()
    }

    /// alice's session cookie, through the login form.
    async fn alice_session(server: &TestServer) -> String {
        let c = client_from(70);
        let resp = c.get(server.url("/login")).send().await.unwrap();
        let pre = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ");
        let token = token_in(&resp.text().await.unwrap());
        let resp = post(
            server,
            &c,
            "/login",
            Some(&pre),
            &[
                ("username", "alice"),
                ("password", "wonderland"),
                ("csrf_token", &token),
            ],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        cookie_value(&resp, SESSION).unwrap()
    }

    /// A wrong password at `/reauth` with the session `cookie`, from
    /// `client`: the status.
    async fn guess(server: &TestServer, client: &reqwest::Client, cookie: &str, n: u32) -> u16 {
        let cookie = format!("{SESSION}={cookie}");
        let page = client
            .get(server.url("/reauth"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let token = token_in(&page.text().await.unwrap());
        post(
            server,
            client,
            "/reauth",
            Some(&cookie),
            &[
                ("username", "alice"),
                ("password", &format!("guess {n}")),
                ("csrf_token", &token),
            ],
        )
        .await
        .status()
        .as_u16()
    }

    /// The re-authentication form names no account in its body (the user
    /// is the session's), so the throttle in front of it counts only the
    /// address: someone holding alice's session cookie gets the address
    /// counter's 20 free guesses at her password from each address, where
    /// the login form allows 5 per address and 10 per account across all
    /// addresses, and the guesses never touch alice's account counters.
    /// The sixth wrong guess from one address at alice's password must be
    /// refused, as at the login form.
    #[tokio::test]
    async fn reauth_guesses_count_against_the_sessions_account() {
        let (router, _) = web_app::app(MemoryStore::new(), AppConfig::default()).unwrap();
        let server = TestServer::start(router).await;
        let cookie = alice_session(&server).await;
        let thief = client_from(71);
        let mut statuses = Vec::new();
        for n in 0..6 {
            statuses.push(guess(&server, &thief, &cookie, n).await);
        }
        assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
        assert_eq!(
            statuses[5], 429,
            "the sixth guess at alice's password from one address: {statuses:?}"
        );
    }
}
