//! The README's "Why was my request refused?" promise: every layer logs a
//! refusal as a `tracing` event under its crate's target, with a `reason`
//! field, and never a token, cookie or key. Each layer is driven as a tower
//! service (`oneshot`) on a current-thread runtime under a capturing
//! subscriber, so every event of the request lands in the capture.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{Request, StatusCode};
use portcullis::core::{ManualClock, OpaqueToken};
use portcullis::csrf::{CsrfConfig, CsrfError, CsrfLayer, CsrfToken, SignedBinding};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis::refresh::{MemoryRefreshStore, RefreshLayer, Refresher};
use portcullis::session::testing::FaultyStore;
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
use tower::ServiceExt as _;
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, Subscriber};

/// One captured event: its target, level and every field (the message
/// included, as `message`), values as text.
#[derive(Debug, Clone)]
struct Captured {
    target: String,
    level: Level,
    fields: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the target is `krate` or a module of it: what
    /// `RUST_LOG=krate=debug` selects.
    fn under(&self, krate: &str) -> bool {
        self.target == krate
            || self
                .target
                .strip_prefix(krate)
                .is_some_and(|rest| rest.starts_with("::"))
    }
}

/// Records every event it sees.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// What a [`Capture`] has recorded so far.
type Events = Arc<Mutex<Vec<Captured>>>;

/// Runs the future `f` builds on a current-thread runtime, with a fresh
/// [`Capture`] as this thread's subscriber; `f` gets the capture's record
/// (to note where the request under test starts). Returns `f`'s output
/// and every event.
fn captured<T, F: Future<Output = T>>(f: impl FnOnce(Events) -> F) -> (T, Vec<Captured>) {
    let capture = Capture::default();
    let events = Arc::clone(&capture.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fut = f(Arc::clone(&events));
    let out = tracing::subscriber::with_default(capture, || rt.block_on(fut));
    let events = events.lock().unwrap().clone();
    (out, events)
}

/// How many events have been captured so far.
fn seen(events: &Events) -> usize {
    events.lock().unwrap().len()
}

/// Asserts that no field (message included) of any event contains any of
/// `secrets`.
fn assert_never_logged(events: &[Captured], secrets: &[(&str, &str)]) {
    for (what, secret) in secrets {
        assert!(!secret.is_empty(), "{what}: nothing to look for");
        for e in events {
            for (name, value) in &e.fields {
                assert!(
                    !value.contains(secret),
                    "the {what} appears in field `{name}` of an event under {}: {value}",
                    e.target
                );
            }
        }
    }
}

/// An event under `krate` with `reason` equal to `reason`; panics
/// (listing what was captured) when there is none.
fn reason_event<'a>(events: &'a [Captured], krate: &str, reason: &str) -> &'a Captured {
    events
        .iter()
        .find(|e| e.under(krate) && e.field("reason") == Some(reason))
        .unwrap_or_else(|| {
            panic!("no event under target {krate} with reason = {reason:?}; captured: {events:#?}")
        })
}

// ---------------------------------------------------------------- JWT

const ISS: &str = "https://issuer.test";
const AUD: &str = "api";

fn hs256_issuer(kid: &str, secret: [u8; 32], clock: &Arc<ManualClock>) -> JwtIssuer {
    JwtIssuer::builder(SigningKey::hmac(kid, Algorithm::HS256, &secret).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn jwt_app(layer: JwtLayer) -> Router {
    Router::new()
        .route(
            "/me",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }),
        )
        .layer(layer)
}

/// `GET /me` with `token` as the bearer token through `app`: its status
/// and every event of the request.
fn jwt_request(app: Router, token: &str) -> (StatusCode, Vec<Captured>) {
    let req = Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    captured(|_| async move { app.oneshot(req).await.unwrap().status() })
}

#[test]
fn jwt_refusals_are_logged_with_the_layers_reason_and_never_the_token() {
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = hs256_issuer("k", [7; 32], &clock);
    let layer = JwtLayer::builder(issuer.keys())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = jwt_app(layer);

    // The same kid, another secret: the signature does not verify.
    let forged = hs256_issuer("k", [8; 32], &clock)
        .token("alice")
        .mint()
        .unwrap()
        .token;
    // A kid the layer has never seen.
    let stranger = hs256_issuer("other", [7; 32], &clock)
        .token("alice")
        .mint()
        .unwrap()
        .token;
    // Valid now, expired once the clock passes its lifetime and the leeway.
    let expiring = issuer.token("alice").mint().unwrap().token;
    let valid = issuer.token("bob").mint().unwrap().token;

    let (status, events) = jwt_request(app.clone(), &valid);
    assert_eq!(status, StatusCode::OK, "the layer accepts its own tokens");
    assert!(
        !events.iter().any(|e| e.under("portcullis_jwt")),
        "an accepted token logs no refusal: {events:#?}"
    );

    let mut all = Vec::new();
    for (token, reason) in [(&forged, "bad-signature"), (&stranger, "unknown-key")] {
        let (status, events) = jwt_request(app.clone(), token);
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}");
        reason_event(&events, "portcullis_jwt", reason);
        all.extend(events);
    }
    clock.advance(issuer.lifetime() + Duration::from_secs(3600));
    let (status, events) = jwt_request(app, &expiring);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");
    reason_event(&events, "portcullis_jwt", "expired");
    all.extend(events);

    for token in [&forged, &stranger, &expiring] {
        // Nor its signature alone, the part that makes it a credential.
        let signature = token.rsplit('.').next().unwrap();
        assert_never_logged(
            &all,
            &[("access token", token), ("token signature", signature)],
        );
    }
}

// ---------------------------------------------------------------- CSRF

const CSRF_KEY: [u8; 32] = [3; 32];

fn csrf_app() -> Router {
    async fn token(token: CsrfToken) -> String {
        token.as_str().to_owned()
    }
    Router::new()
        .route("/form", get(token))
        .route("/act", post(|| async { "done" }))
        .layer(
            CsrfLayer::new(CsrfConfig::signed(
                CSRF_KEY,
                SignedBinding::pre_session_only(),
            ))
            .unwrap(),
        )
}

/// A real token and the pre-session cookie (`name=value`) it was made
/// for, from `GET /form`.
async fn csrf_pair(app: &Router) -> (String, String) {
    let resp = app
        .clone()
        .oneshot(Request::get("/form").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (String::from_utf8(body.to_vec()).unwrap(), cookie)
}

fn reason_of(resp: &Response) -> Option<&'static str> {
    resp.extensions()
        .get::<CsrfError>()
        .map(|e| e.kind().as_str())
}

#[test]
fn csrf_refusals_are_logged_with_their_reason_and_never_a_token_or_cookie() {
    let app = csrf_app();
    let ((token, cookie, outcomes), events) = captured(|events| {
        async move {
            let (token, cookie) = csrf_pair(&app).await;
            let before = seen(&events);
            let post = |headers: &[(&str, &str)]| {
                let mut b = Request::post("/act");
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                b.body(Body::empty()).unwrap()
            };
            // A genuine pair passes: the app is not refusing everything.
            let ok = app
                .clone()
                .oneshot(post(&[
                    ("sec-fetch-site", "same-origin"),
                    ("x-csrf-token", &token),
                    ("cookie", &cookie),
                ]))
                .await
                .unwrap();
            assert_eq!(ok.status(), StatusCode::OK);
            assert_eq!(seen(&events), before, "an accepted request logs no refusal");
            let cross = app
                .clone()
                .oneshot(post(&[
                    ("sec-fetch-site", "cross-site"),
                    ("x-csrf-token", &token),
                    ("cookie", &cookie),
                ]))
                .await
                .unwrap();
            let missing = app
                .clone()
                .oneshot(post(&[
                    ("sec-fetch-site", "same-origin"),
                    ("cookie", &cookie),
                ]))
                .await
                .unwrap();
            let outcomes = [
                (cross.status(), reason_of(&cross)),
                (missing.status(), reason_of(&missing)),
            ];
            (token, cookie, outcomes)
        }
    });
    assert_eq!(
        outcomes,
        [
            (StatusCode::FORBIDDEN, Some("csrf-cross-origin")),
            (StatusCode::FORBIDDEN, Some("csrf-token-missing")),
        ],
        "the layer refused for the reasons under test"
    );
    for reason in ["csrf-cross-origin", "csrf-token-missing"] {
        reason_event(&events, "portcullis_csrf", reason);
    }
    let cookie_value = cookie.split_once('=').unwrap().1;
    assert_never_logged(
        &events,
        &[
            ("CSRF token", &token),
            ("pre-session cookie value", cookie_value),
            ("CSRF key", &String::from_utf8_lossy(&CSRF_KEY)),
        ],
    );
}

// ------------------------------------------------------------ Session

const SESSION_COOKIE: &str = "__Host-session";

#[derive(Clone)]
struct Outage(Arc<AtomicBool>);

/// Reads the session (its record loads while the store is up), then takes
/// the store down and changes the session: the write at commit fails.
async fn write_during_outage(
    State(Outage(down)): State<Outage>,
    session: Session,
) -> Result<&'static str, SessionError> {
    let _: Option<String> = session.get("note").await?;
    down.store(true, Ordering::SeqCst);
    session.insert("note", "lost").await?;
    Ok("written")
}

async fn session_login(
    session: Session,
    Path(user): Path<String>,
) -> Result<&'static str, SessionError> {
    session.login(user).await?;
    Ok("logged in")
}

#[test]
fn a_store_outage_at_commit_is_a_warn_event_with_a_reason_and_never_the_session_id() {
    let store = FaultyStore::new(MemoryStore::new());
    let down = store.switch();
    let app = Router::new()
        .route("/login/{user}", post(session_login))
        .route("/write", post(write_during_outage))
        .with_state(Outage(down.clone()))
        .layer(SessionLayer::new(store, SessionConfig::default()).unwrap());

    let ((id, status, before), events) = captured(|events| async move {
        let resp = app
            .clone()
            .oneshot(Request::post("/login/alice").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
        let id = set_cookie
            .split(';')
            .next()
            .and_then(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")))
            .expect("the session cookie")
            .to_owned();
        let before = seen(&events);
        let resp = app
            .oneshot(
                Request::post("/write")
                    .header("cookie", format!("{SESSION_COOKIE}={id}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        (id, resp.status(), before)
    });
    assert!(
        down.load(Ordering::SeqCst),
        "the handler took the store down"
    );
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the lost write is a 503"
    );
    let outage = &events[before..];
    let event = outage
        .iter()
        .find(|e| e.under("portcullis_session") && e.level == Level::WARN)
        .unwrap_or_else(|| panic!("no warn event under portcullis_session: {outage:#?}"));
    let reason = event
        .field("reason")
        .unwrap_or_else(|| panic!("the warn event has no reason: {event:#?}"));
    assert!(!reason.is_empty());
    // The cookie value and the store key (its digest, also the id in
    // device lists).
    let digest = OpaqueToken::parse(&id).unwrap().digest().to_hex();
    assert_never_logged(
        &events,
        &[("session cookie value", &id), ("session key", &digest)],
    );
}

// ------------------------------------------------------------ Refresh

const REFRESH_COOKIE: &str = "__Host-refresh";

fn refresh_app(clock: &Arc<ManualClock>) -> Router {
    let revocations: Arc<dyn RevocationStore> =
        Arc::new(MemoryRevocationStore::with_clock(clock.clone()));
    let issuer = hs256_issuer("k", [7; 32], clock);
    let jwt = JwtLayer::builder(issuer.keys())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock.clone())
        .revocation(revocations.view())
        .build()
        .unwrap();
    let refresher = Refresher::builder(MemoryRefreshStore::new(), issuer, revocations, jwt)
        .clock(clock.clone())
        .build()
        .unwrap();
    async fn login(
        State(refresher): State<Refresher>,
        Path(user): Path<String>,
        req: Request<Body>,
    ) -> impl IntoResponse {
        let (parts, _) = req.into_parts();
        refresher.login(user).reply(&parts).await
    }
    Router::new()
        .route("/auth/login/{user}", post(login))
        .with_state(refresher.clone())
        .layer(RefreshLayer::new(&refresher))
}

/// The refresh token a login or refresh answer set in its cookie.
fn refresh_cookie(resp: &Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.split(';')
                .next()?
                .strip_prefix(&format!("{REFRESH_COOKIE}="))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        })
        .expect("a refresh cookie")
}

fn with_refresh_cookie(path: &str, token: &str) -> Request<Body> {
    Request::post(path)
        .header("cookie", format!("{REFRESH_COOKIE}={token}"))
        .body(Body::empty())
        .unwrap()
}

#[test]
fn a_reused_refresh_token_is_logged_with_a_reason_and_never_the_token() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = refresh_app(&clock);
    let ((first, second, status, before), events) = captured(|events| {
        async move {
            let resp = app
                .clone()
                .oneshot(
                    Request::post("/auth/login/alice")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let first = refresh_cookie(&resp);
            let resp = app
                .clone()
                .oneshot(with_refresh_cookie("/auth/refresh", &first))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "the first rotation");
            let second = refresh_cookie(&resp);
            // Past the grace window, the rotated token is a reuse.
            clock.advance(Duration::from_secs(60));
            let before = seen(&events);
            let resp = app
                .oneshot(with_refresh_cookie("/auth/refresh", &first))
                .await
                .unwrap();
            (first, second, resp.status(), before)
        }
    });
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the reuse is refused");
    let reuse = &events[before..];
    // The endpoint's refusal, with the reason the answer carries.
    assert!(
        reuse
            .iter()
            .any(|e| e.under("portcullis_refresh") && e.field("reason") == Some("reused")),
        "no event under portcullis_refresh with reason reused: {reuse:#?}"
    );
    // An operator filtering at `warn` sees the reuse with its reason too.
    assert!(
        reuse.iter().any(|e| e.under("portcullis_refresh")
            && e.level == Level::WARN
            && e.field("reason") == Some("reuse-detected")),
        "no warn event with reason reuse-detected: {reuse:#?}"
    );
    // The family id before the dot is the access tokens' `sid`, not a
    // credential; the secret after it must never be logged.
    let mut secrets = Vec::new();
    for token in [&first, &second] {
        let (_, secret) = token.split_once('.').expect("<family>.<secret>");
        secrets.push(("refresh token", token.as_str()));
        secrets.push(("refresh token secret", secret));
    }
    assert_never_logged(&events, &secrets);
}
