//! Sessions end to end: a real axum server on a real socket, the memory
//! store behind a counting and a fault-injecting wrapper, a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis::core::{CookieConfig, ManualClock, OpaqueToken};
use portcullis::session::testing::FaultyStore;
use portcullis::session::{CallCounter, CapPolicy, CountingStore, MemoryStore, SessionConfig};
use portcullis_tests::{TestServer, client, cookie_value, session_app, set_cookies};
use reqwest::StatusCode;
use serde_json::Value;

const COOKIE: &str = "__Host-session";

struct Fixture {
    server: TestServer,
    clock: Arc<ManualClock>,
    ops: Arc<CallCounter>,
    down: Arc<AtomicBool>,
    http: reqwest::Client,
    cookie_name: String,
}

impl Fixture {
    async fn new(config: impl FnOnce(SessionConfig) -> SessionConfig) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let faulty = FaultyStore::new(MemoryStore::with_clock(clock.clone()));
        let down = faulty.switch();
        let counting = CountingStore::new(faulty);
        let ops = counting.counter();
        let config = config(SessionConfig::default().clock(clock.clone()));
        let cookie_name = config.cookie_config().full_name().to_owned();
        let server = TestServer::start(session_app::router(Arc::new(counting), config)).await;
        Self {
            server,
            clock,
            ops,
            down,
            http: client(),
            cookie_name,
        }
    }

    async fn default() -> Self {
        Self::new(|c| c).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.server.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("{}={c}", self.cookie_name));
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, cookie).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, cookie).await
    }

    async fn login(&self, user: &str) -> String {
        let resp = self.post(&format!("/login/{user}"), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        cookie_value(&resp, &self.cookie_name).expect("login sets the session cookie")
    }

    async fn me(&self, cookie: &str) -> StatusCode {
        self.get("/me", Some(cookie)).await.status()
    }

    fn ops(&self) -> u64 {
        self.ops.total()
    }
}

#[tokio::test]
async fn login_then_me() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    let resp = f.get("/me", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["user"], "alice");
    assert_eq!(f.get("/me", None).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn anonymous_401_is_problem_json() {
    let f = Fixture::default().await;
    let resp = f.get("/me", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 401);
}

#[tokio::test]
async fn fixation_cookie_before_login_is_not_the_id_after() {
    let f = Fixture::default().await;
    // A server-issued anonymous session (what an attacker could obtain and plant).
    let resp = f.post("/set/theme/dark", None).await;
    let planted = cookie_value(&resp, COOKIE).unwrap();
    assert_eq!(
        f.get("/get/theme", Some(&planted))
            .await
            .json::<Value>()
            .await
            .unwrap()["value"],
        "dark"
    );

    let resp = f.post("/login/alice", Some(&planted)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let after = cookie_value(&resp, COOKIE).unwrap();
    assert_ne!(after, planted, "login must renew the id");
    assert_eq!(f.me(&after).await, StatusCode::OK);
    assert_eq!(
        f.me(&planted).await,
        StatusCode::UNAUTHORIZED,
        "the planted id is dead"
    );
    // Data carried across the renewal.
    assert_eq!(
        f.get("/get/theme", Some(&after))
            .await
            .json::<Value>()
            .await
            .unwrap()["value"],
        "dark"
    );
}

#[tokio::test]
async fn unknown_id_is_never_adopted_and_is_cleared() {
    let f = Fixture::default().await;
    let invented = OpaqueToken::generate().unwrap().to_encoded();
    let resp = f.get("/me", Some(&invented)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = f.post("/set/a/b", Some(&invented)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let issued = cookie_value(&resp, COOKIE).unwrap();
    assert_ne!(
        issued, invented,
        "strict mode: never adopt a client-chosen id"
    );
    let resp = f.get("/get/a", Some(&invented)).await;
    let cleared = set_cookies(&resp);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
}

#[tokio::test]
async fn logout_kills_the_old_cookie_at_once() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    assert_eq!(f.me(&cookie).await, StatusCode::OK);
    let resp = f.post("/logout", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookies = set_cookies(&resp);
    assert_eq!(
        cookies,
        vec![format!(
            "{COOKIE}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure; HttpOnly; SameSite=Lax"
        )]
    );
    // Off by default: SessionConfig::clear_site_data_on_logout turns it on.
    assert!(resp.headers().get("clear-site-data").is_none());
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(
        f.me(&cookie).await,
        StatusCode::UNAUTHORIZED,
        "replayed cookie refused"
    );
}

#[tokio::test]
async fn idle_timeout_enforced_server_side() {
    let f = Fixture::new(|c| {
        c.idle_timeout(Duration::from_secs(600))
            .touch_interval(Duration::from_secs(60))
    })
    .await;
    let cookie = f.login("alice").await;
    // Activity keeps it alive past the first idle deadline...
    for _ in 0..4 {
        f.clock.advance(Duration::from_secs(300));
        assert_eq!(f.me(&cookie).await, StatusCode::OK);
    }
    // ...and inactivity ends it.
    f.clock.advance(Duration::from_secs(601));
    assert_eq!(f.me(&cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn absolute_lifetime_enforced_despite_activity() {
    let f = Fixture::new(|c| {
        c.idle_timeout(Duration::from_secs(600))
            .absolute_timeout(Duration::from_secs(3600))
            .touch_interval(Duration::from_secs(1))
    })
    .await;
    let cookie = f.login("alice").await;
    for _ in 0..11 {
        f.clock.advance(Duration::from_secs(300));
        assert_eq!(f.me(&cookie).await, StatusCode::OK);
    }
    f.clock.advance(Duration::from_secs(300));
    assert_eq!(
        f.me(&cookie).await,
        StatusCode::UNAUTHORIZED,
        "3600 s after login"
    );
}

#[tokio::test]
async fn idle_extension_is_throttled() {
    let f = Fixture::new(|c| c.touch_interval(Duration::from_secs(60))).await;
    let cookie = f.login("alice").await;
    let touches = || f.ops.get("touch");
    let writes = || f.ops.get("update") + f.ops.get("create");
    let writes_before = writes();
    for _ in 0..10 {
        f.clock.advance(Duration::from_secs(5));
        assert_eq!(f.me(&cookie).await, StatusCode::OK);
    }
    assert_eq!(touches(), 0, "no touch within the interval");
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(f.me(&cookie).await, StatusCode::OK);
    assert_eq!(touches(), 1, "one touch once the interval passed");
    assert_eq!(f.me(&cookie).await, StatusCode::OK);
    assert_eq!(touches(), 1);
    assert_eq!(writes(), writes_before, "reads never rewrite the record");
}

#[tokio::test]
async fn lazy_no_store_call_unless_touched() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    let before = f.ops();
    let resp = f.get("/public", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(set_cookies(&resp).is_empty());
    assert_eq!(f.ops(), before, "an untouched session costs no store call");
    assert_eq!(f.me(&cookie).await, StatusCode::OK);
    assert_eq!(f.ops(), before + 1, "a read costs exactly one load");
}

#[tokio::test]
async fn writes_only_what_changed() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    assert_eq!(
        f.post("/set/a/1", Some(&cookie)).await.status(),
        StatusCode::OK
    );
    let updates = f.ops.get("update");
    // Setting the same value again writes nothing.
    assert_eq!(
        f.post("/set/a/1", Some(&cookie)).await.status(),
        StatusCode::OK
    );
    assert_eq!(f.ops.get("update"), updates);
    assert_eq!(
        f.post("/set/a/2", Some(&cookie)).await.status(),
        StatusCode::OK
    );
    assert_eq!(f.ops.get("update"), updates + 1);
}

#[tokio::test]
async fn logout_everywhere_and_others_touch_only_that_user() {
    let f = Fixture::default().await;
    let a1 = f.login("alice").await;
    let a2 = f.login("alice").await;
    let a3 = f.login("alice").await;
    let b1 = f.login("bob").await;

    let resp = f.post("/logout-others", Some(&a1)).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["ended"], 2);
    assert_eq!(f.me(&a1).await, StatusCode::OK, "current session kept");
    assert_eq!(f.me(&a2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&a3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&b1).await, StatusCode::OK, "bob untouched");

    let a4 = f.login("alice").await;
    let resp = f.post("/logout-everywhere", Some(&a4)).await;
    assert!(set_cookies(&resp).iter().any(|c| c.contains("Max-Age=0")));
    assert_eq!(resp.json::<Value>().await.unwrap()["ended"], 2);
    assert_eq!(f.me(&a1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&a4).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&b1).await, StatusCode::OK, "bob untouched");
}

#[tokio::test]
async fn active_sessions_listing_and_revoking_one() {
    let f = Fixture::default().await;
    let a1 = f.login("alice").await;
    f.clock.advance(Duration::from_secs(1));
    let a2 = f.login("alice").await;
    let b1 = f.login("bob").await;
    let list: Vec<Value> = f.get("/sessions", Some(&a2)).await.json().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["current"], true, "newest first, and it is this one");
    assert_eq!(list[1]["current"], false);
    assert_eq!(list[0]["user_agent"], "portcullis-tests");
    assert_eq!(list[0]["ip"], "127.0.0.1");
    let other = list[1]["id"].as_str().unwrap().to_owned();

    // Bob cannot revoke Alice's session.
    let resp = f.post(&format!("/revoke/{other}"), Some(&b1)).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["revoked"], false);
    assert_eq!(f.me(&a1).await, StatusCode::OK);

    let resp = f.post(&format!("/revoke/{other}"), Some(&a2)).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["revoked"], true);
    assert_eq!(f.me(&a1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&a2).await, StatusCode::OK);
    let resp = f.post("/revoke/not-hex", Some(&a2)).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["revoked"], false);
}

#[tokio::test]
async fn cap_evicts_the_oldest() {
    let f = Fixture::new(|c| c.max_sessions_per_user(2, CapPolicy::EvictOldest)).await;
    let a1 = f.login("alice").await;
    f.clock.advance(Duration::from_secs(1));
    let a2 = f.login("alice").await;
    f.clock.advance(Duration::from_secs(1));
    let a3 = f.login("alice").await;
    assert_eq!(f.me(&a1).await, StatusCode::UNAUTHORIZED, "oldest evicted");
    assert_eq!(f.me(&a2).await, StatusCode::OK);
    assert_eq!(f.me(&a3).await, StatusCode::OK);
    // Logging in again from a live session replaces it rather than evicting another.
    let resp = f.post("/login/alice", Some(&a3)).await;
    let a3b = cookie_value(&resp, COOKIE).unwrap();
    assert_eq!(f.me(&a2).await, StatusCode::OK);
    assert_eq!(f.me(&a3b).await, StatusCode::OK);
    assert_eq!(f.me(&a3).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cap_can_refuse_new_logins() {
    let f = Fixture::new(|c| c.max_sessions_per_user(1, CapPolicy::Refuse)).await;
    let a1 = f.login("alice").await;
    let resp = f.post("/login/alice", None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(cookie_value(&resp, COOKIE).is_none());
    assert_eq!(f.me(&a1).await, StatusCode::OK);
    f.login("bob").await;
}

#[tokio::test]
async fn exact_cookie_attributes_secure_and_dev() {
    let f = Fixture::default().await;
    let resp = f.post("/login/alice", None).await;
    let cookies = set_cookies(&resp);
    assert_eq!(cookies.len(), 1);
    let value = cookie_value(&resp, COOKIE).unwrap();
    assert_eq!(value.len(), 43);
    assert_eq!(
        cookies[0],
        format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax")
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");

    let dev = Fixture::new(SessionConfig::insecure_dev_cookies).await;
    let resp = dev.post("/login/alice", None).await;
    let value = cookie_value(&resp, "session").unwrap();
    assert_eq!(
        set_cookies(&resp),
        vec![format!("session={value}; Path=/; HttpOnly; SameSite=Lax")]
    );
}

#[tokio::test]
async fn invalid_cookie_configuration_is_refused_at_build() {
    let store = MemoryStore::new();
    let bad = SessionConfig::default().cookie(CookieConfig::new("s").path("/app"));
    assert!(portcullis::session::SessionLayer::new(store.clone(), bad).is_err());
    let bad = SessionConfig::default()
        .idle_timeout(Duration::from_secs(7200))
        .absolute_timeout(Duration::from_secs(60));
    assert!(portcullis::session::SessionLayer::new(store, bad).is_err());
}

#[tokio::test]
async fn garbage_oversized_duplicated_cookies_cost_no_store_call() {
    let f = Fixture::default().await;
    let good = f.login("alice").await;
    let before = f.ops();
    let long = "A".repeat(8000);
    let garbage: Vec<String> = vec![
        "not-a-token".into(),
        long,
        format!("{good}="),
        format!("{}+", &good[..42]),
        format!(" {good}"),
        "%00%00".into(),
        String::new(),
    ];
    for g in &garbage {
        let resp = f
            .http
            .get(f.server.url("/me"))
            .header("cookie", format!("{COOKIE}={g}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "cookie {g:?}");
        assert!(
            set_cookies(&resp).iter().any(|c| c.contains("Max-Age=0")),
            "garbage cleared: {g:?}"
        );
    }
    // Duplicated: two headers, or two pairs in one header, even if one is valid.
    let resp = f
        .http
        .get(f.server.url("/me"))
        .header("cookie", format!("{COOKIE}={good}; {COOKIE}={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = f
        .http
        .get(f.server.url("/me"))
        .header("cookie", format!("{COOKIE}={good}"))
        .header("cookie", format!("{COOKIE}=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(f.ops(), before, "no store call for any malformed cookie");
    assert_eq!(f.me(&good).await, StatusCode::OK);
}

#[tokio::test]
async fn hundred_concurrent_writers_keep_every_key() {
    let f = Arc::new(Fixture::default().await);
    let cookie = f.login("alice").await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let f = Arc::clone(&f);
            let cookie = cookie.clone();
            tokio::spawn(async move {
                f.post(&format!("/set/key{i}/value{i}"), Some(&cookie))
                    .await
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    for i in 0..100 {
        let body: Value = f
            .get(&format!("/get/key{i}"), Some(&cookie))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["value"], format!("value{i}"), "key{i} lost");
    }
}

#[tokio::test]
async fn store_outage_is_503_and_the_session_survives() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    f.down.store(true, Ordering::SeqCst);
    for path in ["/me", "/get/a"] {
        let resp = f.get(path, Some(&cookie)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert!(
            set_cookies(&resp).is_empty(),
            "an outage never clears the cookie"
        );
    }
    for path in ["/set/a/1", "/logout", "/login/alice"] {
        let resp = f.post(path, Some(&cookie)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            set_cookies(&resp).is_empty(),
            "{path}: no cookie change during an outage"
        );
    }
    // An anonymous write during the outage is refused, not silently lost.
    assert_eq!(
        f.post("/set/a/1", None).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    f.down.store(false, Ordering::SeqCst);
    assert_eq!(
        f.me(&cookie).await,
        StatusCode::OK,
        "the session survived the outage"
    );
}

#[tokio::test]
async fn write_racing_a_logout_does_not_resurrect() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    let other = f.login("alice").await;
    // Logout everywhere from another device, then a write with the dead id.
    f.post("/logout-everywhere", Some(&other)).await;
    let resp = f.post("/set/a/1", Some(&cookie)).await;
    assert!(resp.status().is_success() || resp.status() == StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn renew_moves_the_id() {
    let f = Fixture::default().await;
    let cookie = f.login("alice").await;
    let resp = f.post("/renew", Some(&cookie)).await;
    let renewed = cookie_value(&resp, COOKIE).unwrap();
    assert_ne!(renewed, cookie);
    assert_eq!(f.me(&cookie).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me(&renewed).await, StatusCode::OK);
}

#[tokio::test]
async fn header_transport_for_non_browser_clients() {
    let name = http::HeaderName::from_static("x-session-token");
    let f = Fixture::new(|c| c.header_transport(name)).await;
    let resp = f.post("/login/alice", None).await;
    assert!(set_cookies(&resp).is_empty(), "no cookie in header mode");
    let token = resp.headers()["x-session-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let me = |t: String| {
        f.http
            .get(f.server.url("/me"))
            .header("x-session-token", t)
            .send()
    };
    assert_eq!(me(token.clone()).await.unwrap().status(), StatusCode::OK);
    // A cookie is not accepted in header mode.
    assert_eq!(
        f.get("/me", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me("garbage".into()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
