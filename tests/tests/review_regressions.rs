//! Regressions found by attacking the library as a hostile client would:
//! a password in `Debug` output, one account filling a bounded store, a
//! clock stepped forward and back stopping the stores' own sweeps; and a
//! sweep of bad input over the templates that must never get a 5xx.
#![allow(clippy::unwrap_used, missing_docs)]

use portcullis::redis::RedisConfig;

/// Secrets never print: `redis+unix:///path` URLs carry their password in
/// the query string (`?pass=`), which must be redacted as `user:pass@` is.
#[tokio::test]
async fn a_unix_socket_redis_password_never_prints() {
    let secret = "hunter2-s3cret";
    for url in [
        format!("redis+unix:///run/redis.sock?db=0&pass={secret}"),
        format!("unix:///run/redis.sock?pass={secret}"),
    ] {
        let config = RedisConfig::new(url.clone());
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(secret),
            "the Redis password reaches Debug output: {printed}"
        );
    }
}

mod web_app_flood {
    use portcullis::session::MemoryStore;
    use portcullis_tests::{TestServer, client, cookie_value};
    use reqwest::StatusCode;
    use web_app::AppConfig;

    const SESSION: &str = "__Host-session";
    const PRE_SESSION: &str = "__Host-csrf";

    fn token_in(body: &str) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = body.find(marker).expect("a csrf_token field") + marker.len();
        let end = body[start..].find('"').unwrap() + start;
        body[start..end].to_owned()
    }

    /// One `GET /login`: the pre-session cookie and a token bound to it.
    pub async fn form(server: &TestServer) -> (String, String) {
        let resp = client().get(server.url("/login")).send().await.unwrap();
        let pre = cookie_value(&resp, PRE_SESSION).unwrap();
        (pre, token_in(&resp.text().await.unwrap()))
    }

    pub async fn login(
        server: &TestServer,
        pre: &str,
        token: &str,
        user: &str,
        password: &str,
    ) -> reqwest::Response {
        client()
            .post(server.url("/login"))
            .header("sec-fetch-site", "same-origin")
            .header("origin", format!("http://{}", server.addr))
            .header("cookie", format!("{PRE_SESSION}={pre}"))
            .form(&[
                ("username", user),
                ("password", password),
                ("csrf_token", token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// One ordinary account, replaying one pre-session CSRF token, logs in
    /// as often as the bounded `MemoryStore` holds records: the default
    /// per-user session cap evicts its own oldest sessions, so the store
    /// never fills and another user still logs in.
    #[tokio::test]
    async fn one_account_cannot_fill_the_memory_store_and_lock_everyone_out() {
        const BOUND: usize = 40;
        let (router, _state) =
            web_app::app(MemoryStore::new().max_sessions(BOUND), AppConfig::default()).unwrap();
        let server = TestServer::start(router).await;
        let (pre, token) = form(&server).await;
        let mut made = 0;
        for _ in 0..BOUND {
            let resp = login(&server, &pre, &token, "alice", "wonderland").await;
            if resp.status() == StatusCode::SEE_OTHER && cookie_value(&resp, SESSION).is_some() {
                made += 1;
            }
        }
        assert!(made > 0);
        let (pre_b, token_b) = form(&server).await;
        let resp = login(&server, &pre_b, &token_b, "bob", "builder").await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "after {made} logins by alice alone, bob cannot log in"
        );
    }
}

mod bad_input {
    use portcullis::session::MemoryStore;
    use portcullis_tests::{TestServer, client};
    use reqwest::Method;
    use web_app::AppConfig;

    /// Odd requests against the templates: each answer must be a 4xx or a
    /// 2xx/3xx, never a 5xx.
    async fn sweep(server: &TestServer, paths: &[&str]) -> Vec<String> {
        let big = vec![b'a'; 3 << 20];
        let origin = format!("http://{}", server.addr);
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::HEAD,
            Method::from_bytes(b"PROPFIND").unwrap(),
        ];
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("application/json", b"{".to_vec()),
            ("application/json", b"{\"username\":1}".to_vec()),
            ("application/json", big.clone()),
            (
                "application/x-www-form-urlencoded",
                b"csrf_token=%FF%FE&username=\xff".to_vec(),
            ),
            ("application/x-www-form-urlencoded", big.clone()),
            ("multipart/form-data; boundary=x", b"--x\r\nbroken".to_vec()),
            ("multipart/form-data", b"--x--".to_vec()),
            (
                "text/plain",
                b"{\"username\":\"alice\",\"password\":\"wonderland\"}".to_vec(),
            ),
            ("application/octet-stream", vec![0u8; 100]),
        ];
        let mut bad = Vec::new();
        for path in paths {
            for m in &methods {
                for (ct, body) in &bodies {
                    for cookie in [
                        None,
                        Some("__Host-session=x; __Host-session=y"),
                        Some("__Host-refresh=AAAA; __Host-refresh=BBBB; __Host-csrf=zz"),
                        Some("__Host-csrf=\u{7f}"),
                    ] {
                        let mut req = client()
                            .request(m.clone(), server.url(path))
                            .header("content-type", *ct)
                            .header("origin", &origin)
                            .header("sec-fetch-site", "same-origin")
                            .header("x-csrf-token", "nope")
                            .header("authorization", "Bearer a.b.c")
                            .body(body.clone());
                        if let Some(c) = cookie {
                            req = req.header("cookie", c);
                        }
                        match req.send().await {
                            Ok(resp) if resp.status().is_server_error() => bad.push(format!(
                                "{m} {path} {ct} len={} cookie={cookie:?} -> {}",
                                body.len(),
                                resp.status()
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        bad
    }

    #[tokio::test]
    async fn the_templates_never_answer_bad_input_with_a_5xx() {
        let (router, _) = web_app::app(MemoryStore::new(), AppConfig::default()).unwrap();
        let web = TestServer::start(router).await;
        let mut bad = sweep(
            &web,
            &[
                "/",
                "/login",
                "/profile",
                "/logout",
                "/logout-everywhere",
                "/nope",
            ],
        )
        .await;
        let spa = TestServer::start(hybrid_spa::app(hybrid_spa::Stores::memory()).unwrap()).await;
        bad.extend(
            sweep(
                &spa,
                &[
                    "/",
                    "/auth/login",
                    "/auth/refresh",
                    "/auth/logout",
                    "/auth/logout-everywhere",
                    "/auth/sessions",
                    "/auth/sessions/abc",
                    "/api/me",
                ],
            )
            .await,
        );
        assert!(bad.is_empty(), "5xx answers:\n{}", bad.join("\n"));
    }
}

mod clock_step {
    use std::sync::Arc;
    use std::time::Duration;

    use portcullis::core::{Clock as _, ManualClock};
    use portcullis::session::{FileStore, MemoryStore, SessionConfig, SessionStore};
    use portcullis_tests::{TestServer, client, session_app};
    use reqwest::StatusCode;

    async fn post(server: &TestServer, path: &str) -> StatusCode {
        client()
            .post(server.url(path))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A clock stepped a day forward (one request served then) and back:
    /// the store's sweeps, throttled by the store's clock, must not wait a
    /// day for the clock to catch up, or a store full of expired records
    /// refuses every login although nobody is logged in.
    #[tokio::test]
    async fn a_clock_stepped_forward_and_back_never_stops_the_purges_of_a_full_store() {
        let clock = Arc::new(ManualClock::starting_now());
        let start = clock.now();
        let store = MemoryStore::with_clock(clock.clone()).max_sessions(10);
        let config = SessionConfig::default().clock(clock.clone());
        let s = TestServer::start(session_app::router(Arc::new(store.clone()), config)).await;
        for i in 0..10 {
            assert_eq!(post(&s, &format!("/login/u{i}")).await, StatusCode::OK);
        }
        // The clock jumps a day ahead; one anonymous request arrives.
        clock.advance(Duration::from_secs(24 * 3600));
        let _ = post(&s, "/set/a/b").await;
        // NTP puts the clock back.
        clock.set(start);
        clock.advance(Duration::from_secs(5));
        // Ordinary traffic fills the store again ...
        for i in 0..10 {
            let _ = post(&s, &format!("/login/v{i}")).await;
        }
        // ... and all of it expires (idle timeout 30 min, nobody returns).
        clock.advance(Duration::from_secs(2 * 3600));
        let status = post(&s, "/login/carol").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "every record in the store ({} held) is expired, yet a login is refused",
            store.len()
        );
    }

    /// The same for FileStore's self-purge: after a forward step and back,
    /// expired session files are still removed.
    #[tokio::test]
    async fn file_store_keeps_purging_after_a_clock_step_forward_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let start = clock.now();
        let store = FileStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        let store: Arc<dyn SessionStore> = Arc::new(store);
        let config = SessionConfig::default().clock(clock.clone());
        let s = TestServer::start(session_app::router(store, config)).await;
        clock.advance(Duration::from_secs(24 * 3600));
        assert_eq!(post(&s, "/set/a/b").await, StatusCode::OK);
        clock.set(start);
        for _ in 0..5 {
            assert_eq!(post(&s, "/set/a/b").await, StatusCode::OK);
        }
        // All expired; many purge intervals pass with writes in between.
        for _ in 0..5 {
            clock.advance(Duration::from_secs(3600));
            assert_eq!(post(&s, "/set/a/b").await, StatusCode::OK);
        }
        // The sweep runs on writes at most once per 60 s; give it several.
        for _ in 0..3 {
            clock.advance(Duration::from_secs(61));
            assert_eq!(post(&s, "/set/a/b").await, StatusCode::OK);
        }
        let files = std::fs::read_dir(dir.path().join("sessions"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count();
        // Live now: the last 3 writes and the last hourly one (30 min idle,
        // under 4 min ago), and the one written while the clock was a day
        // ahead (its deadlines are still ahead). Anything above 5 is an
        // expired file never purged.
        assert!(
            files <= 5,
            "{files} session files on disk, most of them expired hours ago"
        );
    }
}
