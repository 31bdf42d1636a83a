//! CSRF end to end: the web-app template (sessions + `CsrfLayer` in signed
//! mode, bound to the session or the pre-session cookie) and small routers for signed mode, exemptions and body handling,
//! each on a real socket. Every refusal is checked for its status, for the
//! typed reason the layer attached, and for the state it must not have
//! changed (the handler never ran).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionLayer};
use portcullis_csrf::{CsrfConfig, CsrfError, CsrfLayer, CsrfToken, SignedBinding};
use portcullis_tests::{TestServer, client, cookie_value, set_cookies};
use reqwest::StatusCode;
use serde_json::Value;
use web_app::{AppConfig, AppState};

const SESSION: &str = "__Host-session";
const PRE_SESSION: &str = "__Host-csrf";
const REASON: &str = "x-test-csrf-reason";

/// Copies the typed reason from the response extensions into a header, so
/// the tests can see which check refused (the body never says).
async fn expose_reason(mut resp: Response) -> Response {
    if let Some(e) = resp.extensions().get::<CsrfError>() {
        let reason = e.kind().as_str();
        resp.headers_mut()
            .insert(REASON, reason.parse().expect("ascii"));
    }
    resp
}

fn with_reason(router: Router) -> Router {
    router.layer(axum::middleware::map_response(expose_reason))
}

struct WebApp {
    server: TestServer,
    state: Arc<AppState>,
    http: reqwest::Client,
    /// The pre-session cookie the app set, sent back as a browser would.
    pre: std::sync::Mutex<Option<String>>,
}

/// A page: status, session cookie it set, body.
struct Page {
    status: StatusCode,
    cookie: Option<String>,
    body: String,
}

impl Page {
    fn token(&self) -> String {
        token_in(&self.body)
    }
}

fn token_in(body: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).expect("a csrf_token field") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_owned()
}

impl WebApp {
    async fn start() -> Self {
        let (router, state) = web_app::app(MemoryStore::new(), AppConfig::default()).unwrap();
        Self {
            server: TestServer::start(with_reason(router)).await,
            state,
            http: client(),
            pre: std::sync::Mutex::default(),
        }
    }

    /// The `Cookie` header: the session cookie (if any) and the
    /// pre-session cookie (if the app set one).
    fn cookies(&self, session: Option<&str>) -> Option<String> {
        let pre = self.pre.lock().unwrap().clone();
        let parts: Vec<String> = session
            .map(|c| format!("{SESSION}={c}"))
            .into_iter()
            .chain(pre.map(|p| format!("{PRE_SESSION}={p}")))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    fn origin(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = self.http.get(self.server.url(path));
        if let Some(c) = self.cookies(cookie) {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        if let Some(pre) = cookie_value(&resp, PRE_SESSION) {
            *self.pre.lock().unwrap() = Some(pre);
        }
        let cookie = cookie_value(&resp, SESSION);
        Page {
            status,
            cookie,
            body: resp.text().await.unwrap(),
        }
    }

    /// A same-origin form POST, as a browser sends it.
    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.server.url(path))
            .header("sec-fetch-site", "same-origin")
            .header("origin", self.origin())
            .form(form);
        if let Some(c) = self.cookies(cookie) {
            req = req.header("cookie", c);
        }
        // Cases override the browser-like defaults.
        let mut built = req.build().unwrap();
        for (k, v) in headers {
            built.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        self.http.execute(built).await.unwrap()
    }

    /// Logs `user` in through the forms; returns the session cookie.
    async fn login(&self, user: &str, password: &str) -> String {
        let page = self.get("/login", None).await;
        assert_eq!(page.cookie, None, "the login form starts no session");
        let resp = self
            .post(
                "/login",
                None,
                &[
                    ("username", user),
                    ("password", password),
                    ("csrf_token", &page.token()),
                ],
                &[],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/profile");
        cookie_value(&resp, SESSION).expect("login sets a new session cookie")
    }

    fn alice(&self) -> String {
        self.state.display_name("alice").unwrap()
    }
}

fn reason(resp: &reqwest::Response) -> Option<&str> {
    resp.headers().get(REASON).map(|v| v.to_str().unwrap())
}

/// A CSRF refusal: 403 problem+json whose body names no check.
async fn assert_refused(resp: reqwest::Response, want_reason: &str) {
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(reason(&resp), Some(want_reason));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 403);
    assert_eq!(
        body["detail"],
        "the request was refused by cross-site request forgery protection"
    );
    // Nothing else: the body does not say which check failed.
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
}

#[tokio::test]
async fn the_happy_path_changes_the_display_name() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let page = app.get("/profile", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Alice Liddell"));
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[
                ("display_name", "Alice in Wonderland"),
                ("csrf_token", &page.token()),
            ],
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.alice(), "Alice in Wonderland");
    assert_eq!(app.state.profile_updates(), 1);
    let page = app.get("/profile", Some(&cookie)).await;
    assert!(page.body.contains("Alice in Wonderland"));
}

#[tokio::test]
async fn every_rendering_is_masked_afresh_and_each_verifies() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let a = app.get("/profile", Some(&cookie)).await.token();
    let b = app.get("/profile", Some(&cookie)).await.token();
    assert_ne!(a, b, "BREACH: the same secret never renders the same bytes");
    for (i, t) in [a, b].iter().enumerate() {
        let name = format!("name {i}");
        let resp = app
            .post(
                "/profile",
                Some(&cookie),
                &[("display_name", &name), ("csrf_token", t)],
                &[],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(app.alice(), name);
    }
}

/// The header attacks: a valid session and a valid token, but the browser
/// says the request came from elsewhere.
#[tokio::test]
async fn cross_origin_requests_are_refused_before_the_handler() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    let cases: &[&[(&str, &str)]] = &[
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://blog.example"),
        ],
        &[("sec-fetch-site", "Same-Origin")],
        // Old browser: no Fetch Metadata, Origin of another host.
        &[("sec-fetch-site", ""), ("origin", "https://evil.example")],
        &[("sec-fetch-site", ""), ("origin", "null")],
        // Suffix confusion.
        &[
            ("sec-fetch-site", ""),
            ("origin", "http://127.0.0.1.evil.example"),
        ],
    ];
    for headers in cases {
        let resp = app
            .post(
                "/profile",
                Some(&cookie),
                &[("display_name", "pwned"), ("csrf_token", &token)],
                headers,
            )
            .await;
        assert_eq!(
            resp.headers()
                .get_all("vary")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>(),
            vec!["Origin, Sec-Fetch-Site"],
            "{headers:?}"
        );
        assert_refused(resp, "csrf-cross-origin").await;
        assert_eq!(app.alice(), "Alice Liddell", "{headers:?}");
        assert_eq!(app.state.profile_updates(), 0, "the handler never ran");
    }
}

#[tokio::test]
async fn origin_of_another_port_is_another_origin() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    let other = format!("http://127.0.0.1:{}", app.server.addr.port() + 1);
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[("display_name", "pwned"), ("csrf_token", &token)],
            &[("sec-fetch-site", ""), ("origin", &other)],
        )
        .await;
    assert_refused(resp, "csrf-cross-origin").await;
    assert_eq!(app.alice(), "Alice Liddell");
}

#[tokio::test]
async fn login_csrf_is_refused_without_a_session_being_made() {
    let app = WebApp::start().await;
    // An attacker's page posts the attacker's credentials to /login.
    for headers in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
        // A browser without Fetch Metadata and an Origin-stripping proxy:
        // only the token stops it.
        &[("sec-fetch-site", ""), ("origin", "")][..],
    ] {
        let resp = app
            .post(
                "/login",
                None,
                &[("username", "bob"), ("password", "builder")],
                headers,
            )
            .await;
        assert_eq!(
            cookie_value(&resp, SESSION),
            None,
            "no session for the attacker"
        );
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.state.logins(), 0);
    }
}

#[tokio::test]
async fn a_missing_token_is_refused() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let resp = app
        .post("/profile", Some(&cookie), &[("display_name", "pwned")], &[])
        .await;
    assert_refused(resp, "csrf-token-missing").await;
    // A JSON or text/plain body cannot carry the token either.
    let resp = app
        .http
        .post(app.server.url("/profile"))
        .header("cookie", format!("{SESSION}={cookie}"))
        .header("content-type", "text/plain")
        .body("display_name=pwned")
        .send()
        .await
        .unwrap();
    assert_refused(resp, "csrf-token-missing").await;
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_ignored() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    let resp = app
        .post(
            &format!("/profile?csrf_token={token}"),
            Some(&cookie),
            &[("display_name", "pwned")],
            &[],
        )
        .await;
    assert_refused(resp, "csrf-token-missing").await;
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
}

#[tokio::test]
async fn a_token_from_another_session_is_refused() {
    let app = WebApp::start().await;
    let alice = app.login("alice", "wonderland").await;
    let bob = app.login("bob", "builder").await;
    let bobs_token = app.get("/profile", Some(&bob)).await.token();
    // Alice's session needs a secret of its own for a mismatch (not expiry).
    let _ = app.get("/profile", Some(&alice)).await;
    let resp = app
        .post(
            "/profile",
            Some(&alice),
            &[("display_name", "pwned"), ("csrf_token", &bobs_token)],
            &[],
        )
        .await;
    assert_refused(resp, "csrf-token-mismatch").await;
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
}

#[tokio::test]
async fn a_token_from_before_login_is_dead_after_login() {
    let app = WebApp::start().await;
    let page = app.get("/login", None).await;
    assert_eq!(page.cookie, None, "the login form starts no session");
    let before = page.token();
    let resp = app
        .post(
            "/login",
            None,
            &[
                ("username", "alice"),
                ("password", "wonderland"),
                ("csrf_token", &before),
            ],
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = cookie_value(&resp, SESSION).unwrap();
    // Before any page renders a new token: bound to the pre-session
    // cookie, not to the session: mismatch.
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[("display_name", "pwned"), ("csrf_token", &before)],
            &[],
        )
        .await;
    assert_refused(resp, "csrf-token-mismatch").await;
    // After the profile page rendered a new token: still mismatch.
    let fresh = app.get("/profile", Some(&cookie)).await.token();
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[("display_name", "pwned"), ("csrf_token", &before)],
            &[],
        )
        .await;
    assert_refused(resp, "csrf-token-mismatch").await;
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
    // The fresh one works.
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[("display_name", "ok"), ("csrf_token", &fresh)],
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_token_after_logout_is_refused() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    let resp = app
        .post("/logout", Some(&cookie), &[("csrf_token", &token)], &[])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // Replaying the old cookie and token: the session is gone, and the
    // token was bound to it, not to the pre-session cookie.
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[("display_name", "pwned"), ("csrf_token", &token)],
            &[],
        )
        .await;
    assert_refused(resp, "csrf-token-mismatch").await;
    // And the token does not open a login either.
    let resp = app
        .post(
            "/login",
            Some(&cookie),
            &[
                ("username", "alice"),
                ("password", "wonderland"),
                ("csrf_token", &token),
            ],
            &[],
        )
        .await;
    assert_refused(resp, "csrf-token-mismatch").await;
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
    assert_eq!(app.state.logins(), 1);
}

#[tokio::test]
async fn truncated_altered_and_unmasked_tokens_are_refused() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    // A signed token: a 64-byte pad, then nonce and MAC masked by it.
    assert_eq!(token.len(), 171);
    // The real token, unmasked: the right bytes in the wrong form.
    let raw = engine.decode(&token).unwrap();
    let half = raw.len() / 2;
    let secret: Vec<u8> = raw[half..]
        .iter()
        .zip(&raw[..half])
        .map(|(m, p)| m ^ p)
        .collect();
    let unmasked = engine.encode(&secret);
    // Unmasked-but-wrong: a well-formed masked token of another secret.
    let mut wrong = raw.clone();
    wrong[40] ^= 0x01;
    let wrong = engine.encode(&wrong);
    // Altered text (one character).
    let mut altered = token.clone().into_bytes();
    altered[50] = if altered[50] == b'x' { b'y' } else { b'x' };
    let altered = String::from_utf8(altered).unwrap();
    let cases = [
        (token[..token.len() - 1].to_owned(), "csrf-token-malformed"),
        (token[..43].to_owned(), "csrf-token-malformed"),
        (format!("{token}A"), "csrf-token-malformed"),
        (unmasked, "csrf-token-malformed"),
        (altered, "csrf-token-mismatch"),
        (wrong, "csrf-token-mismatch"),
        (String::new(), "csrf-token-malformed"),
        ("%00'\"<>".to_owned(), "csrf-token-malformed"),
    ];
    for (bad, want) in cases {
        let resp = app
            .post(
                "/profile",
                Some(&cookie),
                &[("display_name", "pwned"), ("csrf_token", &bad)],
                &[],
            )
            .await;
        assert_refused(resp, want).await;
        // The same through the header.
        let resp = app
            .post(
                "/profile",
                Some(&cookie),
                &[("display_name", "pwned")],
                &[("x-csrf-token", &bad)],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{bad:?}");
    }
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
    // The header carries a good token as well as the form does.
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[("display_name", "via header")],
            &[("x-csrf-token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.alice(), "via header");
}

#[tokio::test]
async fn a_multipart_form_carries_the_token() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    let boundary = "----portcullisBoundary7MA4YWxk";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"display_name\"\r\n\r\nMultipart Alice\r\n\
         --{boundary}--\r\n"
    );
    let send = |body: String| {
        app.http
            .post(app.server.url("/profile"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .header("sec-fetch-site", "same-origin")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
    };
    // The web-app's handler reads urlencoded forms, so it answers 415 after
    // the layer let the request through; what matters is the layer's verdict.
    let resp = send(body.clone()).await.unwrap();
    assert_eq!(reason(&resp), None);
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
    // Without the token part: refused.
    let without = body
        .replace(&token, "")
        .replace("name=\"csrf_token\"", "name=\"other\"");
    let resp = send(without).await.unwrap();
    assert_refused(resp, "csrf-token-missing").await;
    // A file part named csrf_token is not the token.
    let file = body.replace(
        "name=\"csrf_token\"",
        "name=\"csrf_token\"; filename=\"t.txt\"",
    );
    let resp = send(file).await.unwrap();
    assert_refused(resp, "csrf-token-missing").await;
    assert_eq!(app.state.profile_updates(), 0);
}

#[tokio::test]
async fn safe_methods_are_never_blocked() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::HEAD,
        reqwest::Method::OPTIONS,
    ] {
        let resp = app
            .http
            .request(method.clone(), app.server.url("/profile"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .header("sec-fetch-site", "cross-site")
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), StatusCode::FORBIDDEN, "{method}");
        assert_eq!(reason(&resp), None, "{method}");
        assert!(
            resp.headers().get("vary").is_none(),
            "{method}: the decision read no header"
        );
    }
}

#[tokio::test]
async fn an_oversized_form_is_413_and_the_handler_never_runs() {
    let app = WebApp::start().await;
    let cookie = app.login("alice", "wonderland").await;
    let token = app.get("/profile", Some(&cookie)).await.token();
    let padding = "a".repeat(1 << 20);
    let body = format!("csrf_token={token}&display_name=big&pad={padding}");
    let resp = app
        .http
        .post(app.server.url("/profile"))
        .header("cookie", format!("{SESSION}={cookie}"))
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reason(&resp), Some("csrf-body-too-large"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(app.alice(), "Alice Liddell");
    assert_eq!(app.state.profile_updates(), 0);
}

// ---------------------------------------------------------------------------
// Small routers: body fidelity, limits, exemptions, WebSocket upgrades.

#[derive(Default)]
struct Calls(AtomicU64);

impl Calls {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A router whose handlers echo what they received and count their calls.
fn echo_router(config: CsrfConfig, calls: Arc<Calls>) -> Router {
    async fn echo(
        State(calls): State<Arc<Calls>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (HeaderMap, Bytes) {
        calls.0.fetch_add(1, Ordering::SeqCst);
        let mut out = HeaderMap::new();
        if let Some(len) = headers.get("content-length") {
            out.insert("x-seen-content-length", len.clone());
        }
        (out, body)
    }
    async fn token(token: CsrfToken) -> String {
        token.as_str().to_owned()
    }
    let router = Router::new()
        .route("/token", get(token))
        .route("/echo", post(echo).put(echo).delete(echo))
        .route("/webhook", post(echo))
        .route("/ws", get(echo))
        .with_state(calls)
        .layer(CsrfLayer::new(config).unwrap())
        .layer(SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap());
    with_reason(router)
}

/// A `Transfer-Encoding: chunked` POST written by hand on a raw socket, one
/// chunk per piece (reqwest would need its `stream` feature). Returns the
/// status, the typed reason header, and the body.
async fn chunked_post(
    server: &TestServer,
    path: &str,
    cookie: &str,
    pieces: &[Vec<u8>],
) -> (u16, Option<String>, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nCookie: {SESSION}={cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        stream
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(piece).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        stream.flush().await.unwrap();
    }
    // The server may answer (413) and close before the last chunk.
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let reason = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(REASON).then(|| v.trim().to_owned())
    });
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, reason, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

/// Fetches a token and the session cookie it lives in.
async fn token_and_cookie(server: &TestServer) -> (String, String) {
    let resp = client().get(server.url("/token")).send().await.unwrap();
    let cookie = cookie_value(&resp, SESSION).unwrap();
    (resp.text().await.unwrap(), cookie)
}

#[tokio::test]
async fn the_body_reaches_the_handler_byte_for_byte() {
    let calls = Arc::new(Calls::default());
    let server = TestServer::start(echo_router(
        CsrfConfig::session().max_body_bytes(4096),
        calls.clone(),
    ))
    .await;
    let (token, cookie) = token_and_cookie(&server).await;
    let http = client();
    // Percent-encoding, '+', a duplicate field, odd bytes: all as sent.
    let urlencoded =
        format!("a=%F0%9F%A6%80+x&csrf_token={token}&csrf_token=second&b=%00%ff&&c==d&e");
    let boundary = "b0undary";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n\u{0}\u{1}\r\n--not-the-boundary\r\n\
         \r\n--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--{boundary}--\r\n"
    );
    let cases = [
        (
            "application/x-www-form-urlencoded".to_owned(),
            urlencoded.into_bytes(),
        ),
        (
            format!("multipart/form-data; boundary={boundary}"),
            multipart.into_bytes(),
        ),
    ];
    for (ct, body) in cases {
        let resp = http
            .put(server.url("/echo"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .header("content-type", &ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{ct}");
        assert_eq!(
            resp.headers()["x-seen-content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            body.as_slice(),
            "{ct}"
        );
    }
    // A chunked body (no Content-Length) arrives whole too.
    let chunks = [
        b"csrf_tok".to_vec(),
        format!("en={token}").into_bytes(),
        b"&tail=1".to_vec(),
    ];
    let (status, _, body) = chunked_post(&server, "/echo", &cookie, &chunks).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("csrf_token={token}&tail=1").into_bytes());
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn the_body_limit_is_exact() {
    let calls = Arc::new(Calls::default());
    let server = TestServer::start(echo_router(
        CsrfConfig::session().max_body_bytes(200),
        calls.clone(),
    ))
    .await;
    let (token, cookie) = token_and_cookie(&server).await;
    let http = client();
    let base = format!("csrf_token={token}&pad=");
    let body = |len: usize| format!("{base}{}", "x".repeat(len - base.len())).into_bytes();
    for len in [200, 201] {
        let resp = http
            .post(server.url("/echo"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body(len))
            .send()
            .await
            .unwrap();
        if len == 200 {
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.bytes().await.unwrap().len(), 200);
        } else {
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(reason(&resp), Some("csrf-body-too-large"));
        }
        // Chunked, in pieces of 50 bytes: counted as they arrive.
        let pieces: Vec<Vec<u8>> = body(len).chunks(50).map(<[u8]>::to_vec).collect();
        let (status, reason, echoed) = chunked_post(&server, "/echo", &cookie, &pieces).await;
        if len == 200 {
            assert_eq!(status, 200);
            assert_eq!(echoed, body(200));
        } else {
            assert_eq!(status, 413);
            assert_eq!(reason.as_deref(), Some("csrf-body-too-large"));
        }
    }
    assert_eq!(
        calls.get(),
        2,
        "only the bodies within the limit reached the handler"
    );
}

#[tokio::test]
async fn an_exempt_route_skips_both_checks_and_only_it() {
    let calls = Arc::new(Calls::default());
    let server = TestServer::start(echo_router(
        CsrfConfig::session().exempt("/webhook"),
        calls.clone(),
    ))
    .await;
    let http = client();
    let resp = http
        .post(server.url("/webhook"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://payments.example")
        .body("{\"event\":\"paid\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "{\"event\":\"paid\"}");
    assert_eq!(calls.get(), 1);
    // Other routes are still protected.
    let resp = http
        .post(server.url("/echo"))
        .header("sec-fetch-site", "same-origin")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_cross_origin_websocket_upgrade_is_refused() {
    let calls = Arc::new(Calls::default());
    let server = TestServer::start(echo_router(CsrfConfig::session(), calls.clone())).await;
    let http = client();
    let upgrade = |origin: &str, site: &str| {
        http.get(server.url("/ws"))
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", origin.to_owned())
            .header("sec-fetch-site", site.to_owned())
            .send()
    };
    let resp = upgrade("https://evil.example", "cross-site").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(reason(&resp), Some("csrf-cross-origin"));
    let resp = upgrade("https://evil.example", "").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.get(), 0);
    let own = format!("http://{}", server.addr);
    let resp = upgrade(&own, "same-origin").await.unwrap();
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.get(), 1);
}

// ---------------------------------------------------------------------------
// Signed double-submit mode, bound to the portcullis session.

fn signed_router(calls: Arc<Calls>) -> Router {
    async fn token(token: CsrfToken) -> String {
        token.as_str().to_owned()
    }
    async fn login(session: Session) -> &'static str {
        session.login("alice").await.unwrap();
        "in"
    }
    async fn act(State(calls): State<Arc<Calls>>) -> &'static str {
        calls.0.fetch_add(1, Ordering::SeqCst);
        "done"
    }
    let config = CsrfConfig::signed([0x5a; 32], SignedBinding::session());
    let router = Router::new()
        .route("/token", get(token))
        .route("/login", post(login))
        .route("/act", post(act))
        .with_state(calls)
        .layer(CsrfLayer::new(config).unwrap())
        .layer(SessionLayer::new(MemoryStore::new(), SessionConfig::default()).unwrap());
    with_reason(router)
}

struct Jar(Vec<(String, String)>);

impl Jar {
    fn absorb(&mut self, resp: &reqwest::Response) {
        for c in set_cookies(resp) {
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

    fn without(&self, name: &str) -> Self {
        Self(self.0.iter().filter(|(n, _)| n != name).cloned().collect())
    }
}

async fn signed_post(server: &TestServer, path: &str, jar: &Jar, token: &str) -> reqwest::Response {
    client()
        .post(server.url(path))
        .header("cookie", jar.header())
        .header("x-csrf-token", token)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn signed_tokens_bind_to_the_pre_session_then_the_session() {
    let calls = Arc::new(Calls::default());
    let server = TestServer::start(signed_router(calls.clone())).await;
    let mut jar = Jar(Vec::new());
    let resp = client().get(server.url("/token")).send().await.unwrap();
    let set = set_cookies(&resp);
    assert!(
        set.iter()
            .any(|c| c.starts_with("__Host-csrf=") && c.contains("Secure") && c.contains("Path=/")),
        "a __Host- pre-session cookie: {set:?}"
    );
    jar.absorb(&resp);
    let pre_token = resp.text().await.unwrap();
    assert_eq!(pre_token.len(), 171);

    // Without the pre-session cookie the token means nothing.
    let resp = signed_post(&server, "/act", &jar.without("__Host-csrf"), &pre_token).await;
    assert_refused(resp, "csrf-token-expired").await;
    // A token bound to another visitor's pre-session cookie.
    let other = client()
        .get(server.url("/token"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = signed_post(&server, "/act", &jar, &other).await;
    assert_refused(resp, "csrf-token-mismatch").await;
    assert_eq!(calls.get(), 0);
    // The visitor's own token works, before any session exists.
    let resp = signed_post(&server, "/act", &jar, &pre_token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(calls.get(), 1);

    // Login (protected by the pre-session token) creates the session.
    let resp = signed_post(&server, "/login", &jar, &pre_token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    jar.absorb(&resp);
    // The pre-login token is refused now: the binding is the session.
    let resp = signed_post(&server, "/act", &jar, &pre_token).await;
    assert_refused(resp, "csrf-token-mismatch").await;
    assert_eq!(calls.get(), 1);
    let resp = client()
        .get(server.url("/token"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    let session_token = resp.text().await.unwrap();
    let resp = signed_post(&server, "/act", &jar, &session_token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(calls.get(), 2);
    // Another session's token does not fit this one.
    let mut other_jar = Jar(Vec::new());
    let resp = client().get(server.url("/token")).send().await.unwrap();
    other_jar.absorb(&resp);
    let t = resp.text().await.unwrap();
    let resp = signed_post(&server, "/login", &other_jar, &t).await;
    other_jar.absorb(&resp);
    let resp = client()
        .get(server.url("/token"))
        .header("cookie", other_jar.header())
        .send()
        .await
        .unwrap();
    let others_session_token = resp.text().await.unwrap();
    let resp = signed_post(&server, "/act", &jar, &others_session_token).await;
    assert_refused(resp, "csrf-token-mismatch").await;
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------
// Proxies and partners: the public origin and normalised trusted origins.

#[tokio::test]
async fn a_public_origin_replaces_host_and_trusted_origins_are_normalised() {
    let calls = Arc::new(Calls::default());
    let config = CsrfConfig::session()
        .public_origin("HTTPS://App.Example:443")
        .add_trusted_origin("https://Partner.Example:443");
    let server = TestServer::start(echo_router(config, calls.clone())).await;
    let (token, cookie) = token_and_cookie(&server).await;
    let http = client();
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = http
            .post(server.url("/echo"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .header("x-csrf-token", token.as_str());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    // A proxy rewrote Host; Origin is the public origin: allowed.
    let resp = send(vec![
        ("host", "backend.internal:8080"),
        ("origin", "https://app.example"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(calls.get(), 1);
    let refused: [Vec<(&'static str, &'static str)>; 3] = [
        // Scheme downgrade (tower-http's Host fallback ignores the scheme).
        vec![("host", "app.example"), ("origin", "http://app.example")],
        // A Host and X-Forwarded-Host chosen by the client never count.
        vec![
            ("host", "evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("origin", "https://evil.example"),
        ],
        // The old Host fallback no longer applies.
        vec![
            ("host", "backend.internal:8080"),
            ("origin", "http://backend.internal:8080"),
        ],
    ];
    for headers in refused {
        let resp = send(headers.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(reason(&resp), Some("csrf-cross-origin"), "{headers:?}");
    }
    assert_eq!(calls.get(), 1);
    // The partner, configured in another spelling, is recognised as browsers
    // send it; it still needs the token.
    let resp = send(vec![
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://partner.example"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(calls.get(), 2);
    let resp = http
        .post(server.url("/echo"))
        .header("cookie", format!("{SESSION}={cookie}"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://partner.example")
        .send()
        .await
        .unwrap();
    assert_eq!(reason(&resp), Some("csrf-token-missing"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn the_web_app_contract() {
    let app = WebApp::start().await;
    // GET /login: a form with a hidden csrf_token.
    let page = app.get("/login", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<input type=\"hidden\" name=\"csrf_token\" value=\"")
    );
    assert_eq!(page.cookie, None, "the login form starts no session");
    // Anonymous /profile: 303 to /login.
    let resp = app
        .http
        .get(app.server.url("/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login");
    // Bad credentials with a valid token: 401 and the form again.
    let resp = app
        .post(
            "/login",
            None,
            &[
                ("username", "alice"),
                ("password", "nope"),
                ("csrf_token", &page.token()),
            ],
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cookie_value(&resp, SESSION), None, "no login");
    let body = resp.text().await.unwrap();
    assert!(body.contains("name=\"csrf_token\""));
    assert!(body.contains("wrong password"));
    assert_eq!(app.state.logins(), 0);
    // The profile page holds a token in each of its three forms, and escapes
    // what users typed.
    let cookie = app.login("bob", "builder").await;
    let page = app.get("/profile", Some(&cookie)).await;
    assert_eq!(page.body.matches("name=\"csrf_token\"").count(), 3);
    for action in ["/profile", "/logout", "/logout-everywhere"] {
        assert!(
            page.body.contains(&format!("action=\"{action}\"")),
            "{action}"
        );
    }
    let resp = app
        .post(
            "/profile",
            Some(&cookie),
            &[
                ("display_name", "<script>x</script>"),
                ("csrf_token", &page.token()),
            ],
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let page = app.get("/profile", Some(&cookie)).await;
    assert!(page.body.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(!page.body.contains("<script>x"));
    // Log out everywhere ends this and bob's other sessions.
    let other = app.login("bob", "builder").await;
    let resp = app
        .post(
            "/logout-everywhere",
            Some(&cookie),
            &[("csrf_token", &page.token())],
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login");
    for c in [&cookie, &other] {
        let resp = app
            .http
            .get(app.server.url("/profile"))
            .header("cookie", format!("{SESSION}={c}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    }
}

// ---------------------------------------------------------------------------
// Whether extracting `CsrfToken` creates a session, as its docs say.

/// A server whose `GET /form` extracts `CsrfToken`, and its session store.
async fn token_page(config: CsrfConfig) -> (TestServer, MemoryStore) {
    async fn form(token: CsrfToken) -> String {
        token.hidden_input()
    }
    let store = MemoryStore::new();
    let router = Router::new()
        .route("/form", get(form))
        .layer(CsrfLayer::new(config).unwrap())
        .layer(SessionLayer::new(store.clone(), SessionConfig::default()).unwrap());
    (TestServer::start(router).await, store)
}

#[tokio::test]
async fn a_signed_token_for_a_fresh_visitor_creates_no_session() {
    let (server, store) =
        token_page(CsrfConfig::signed([0x5a; 32], SignedBinding::session())).await;
    let resp = client().get(server.url("/form")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(cookie_value(&resp, SESSION), None, "no session cookie");
    assert!(
        cookie_value(&resp, PRE_SESSION).is_some(),
        "bound to the pre-session cookie instead"
    );
    let body = resp.text().await.unwrap();
    assert!(body.contains("name=\"csrf_token\""), "{body}");
    assert!(store.is_empty(), "the session store stays empty");
}

#[tokio::test]
async fn a_session_mode_token_for_a_fresh_visitor_starts_an_anonymous_session() {
    let (server, store) = token_page(CsrfConfig::session()).await;
    let resp = client().get(server.url("/form")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(cookie_value(&resp, SESSION).is_some(), "a session cookie");
    assert_eq!(store.len(), 1, "one anonymous session holds the secret");
}
