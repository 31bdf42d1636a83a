//! `portcullis-password` through a real axum server on a real socket: a
//! login handler written as the crate docs show (look the user up, hand
//! the stored hash or `None` to `verify`, rehash on success), a register
//! handler applying the policy, and real argon2id at OWASP's parameters.
//!
//! - right and wrong passwords, unknown users answered exactly as wrong
//!   passwords;
//! - the timing test: known and unknown users, 200 logins each,
//!   interleaved, same status and body, medians within 5 %;
//! - `needs_rehash` after the parameters were raised, and the stored hash
//!   upgraded by the login;
//! - hostile stored hashes (m = 4000000000, argon2i, garbage) answered as a
//!   wrong password, and one asking for 1 GiB refused without the process
//!   allocating it;
//! - a flood against one slot and no queue: 503 + `Retry-After`, never
//!   more than one hash in flight;
//! - the policy's errors as 400 problem+json with their messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use portcullis_core::{ProblemJson, RenderRejection};
use portcullis_password::{
    Argon2Params, INVALID_CREDENTIALS, PasswordHasher, Verification, invalid_credentials,
};
use portcullis_tests::{TestServer, client};
use serde::Deserialize;
use serde_json::json;

const ALICE_PW: &str = "plum orchard at dusk, 1987";

#[derive(Clone)]
struct App {
    hasher: PasswordHasher,
    users: Arc<Mutex<HashMap<String, String>>>,
}

impl App {
    fn stored(&self, user: &str) -> Option<String> {
        self.users.lock().unwrap().get(user).cloned()
    }
}

#[derive(Deserialize)]
struct Form {
    user: String,
    password: String,
}

async fn login(State(app): State<App>, Json(form): Json<Form>) -> Response {
    let stored = app.stored(&form.user);
    match app
        .hasher
        .verify(stored.as_deref(), form.password.as_str())
        .await
    {
        Ok(Verification::Verified { needs_rehash }) => {
            if needs_rehash {
                let phc = app.hasher.rehash(form.password).await.unwrap();
                app.users.lock().unwrap().insert(form.user.clone(), phc);
            }
            Json(json!({ "user": form.user, "rehashed": needs_rehash })).into_response()
        }
        Ok(Verification::Mismatch) => ProblemJson
            .render(&invalid_credentials(), false)
            .map(axum::body::Body::from),
        Err(e) => e.into_response(),
    }
}

async fn register(State(app): State<App>, Json(form): Json<Form>) -> Response {
    match app.hasher.hash_for(form.password, &[&form.user]).await {
        Ok(phc) => {
            app.users.lock().unwrap().insert(form.user, phc);
            StatusCode::CREATED.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn serve(hasher: PasswordHasher, users: &[(&str, String)]) -> (TestServer, App) {
    let app = App {
        hasher,
        users: Arc::new(Mutex::new(
            users
                .iter()
                .map(|(u, h)| ((*u).to_owned(), h.clone()))
                .collect(),
        )),
    };
    let router = Router::new()
        .route("/login", post(login))
        .route("/register", post(register))
        .with_state(app.clone());
    (TestServer::start(router).await, app)
}

/// One login: status, `Retry-After`, content type and body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn post_form(server: &TestServer, path: &str, user: &str, password: &str) -> Answer {
    let resp = client()
        .post(server.url(path))
        .json(&json!({ "user": user, "password": password }))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type");
    Answer {
        status: resp.status().as_u16(),
        retry_after,
        content_type,
        body: resp.text().await.unwrap(),
    }
}

async fn alice(hasher: &PasswordHasher) -> String {
    hasher.hash_for(ALICE_PW, &["alice"]).await.unwrap()
}

fn median(xs: &mut [Duration]) -> Duration {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

/// A stored hash with the given parameters (a real salt and output
/// shape; the output matches no password).
fn forged(algorithm: &str, params: &str) -> String {
    format!(
        "${algorithm}$v=19${params}$c2FsdHNhbHRzYWx0$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_wrong_and_unknown() {
    let hasher = PasswordHasher::builder().build().unwrap();
    let stored = alice(&hasher).await;
    let (server, _) = serve(hasher, &[("alice", stored)]).await;

    let ok = post_form(&server, "/login", "alice", ALICE_PW).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ok.body).unwrap(),
        json!({ "user": "alice", "rehashed": false })
    );

    let wrong = post_form(&server, "/login", "alice", "plum orchard at dawn, 1987").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.content_type.as_deref(),
        Some("application/problem+json")
    );
    let body: serde_json::Value = serde_json::from_str(&wrong.body).unwrap();
    assert_eq!(body["detail"], INVALID_CREDENTIALS);

    let unknown = post_form(&server, "/login", "mallory", ALICE_PW).await;
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(unknown.content_type, wrong.content_type);
}

/// The timing test: an attacker timing logins cannot tell a known
/// user with a wrong password from an unknown user. 200 logins of each,
/// interleaved (known, unknown, unknown, known, ...) so a drifting machine
/// load weighs on both alike; every pair gets the same status and body,
/// and the medians of the two are within 5 % of each other.
///
/// The test suite runs many tests at once on few cores, so when the medians
/// of 200 tries are not within 5 %, 200 more of each are taken (up to 600)
/// and the medians of all of them compared again: the noise of a median
/// shrinks with more tries, a real difference does not (without the dummy
/// hash, an unknown user answers 20 times faster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_known_users_cost_the_same() {
    const TRIES: usize = 200;
    const ROUNDS: usize = 3;
    let hasher = PasswordHasher::builder().build().unwrap();
    let stored = alice(&hasher).await;
    let (server, _) = serve(hasher, &[("alice", stored)]).await;
    // Warm up the connection pool and the hasher's buffers.
    for _ in 0..4 {
        post_form(&server, "/login", "alice", "wrong password, long enough").await;
        post_form(&server, "/login", "nobody", "wrong password, long enough").await;
    }

    let mut known = Vec::with_capacity(TRIES * ROUNDS);
    let mut unknown = Vec::with_capacity(TRIES * ROUNDS);
    let mut ratio = 0.0;
    for round in 0..ROUNDS {
        for i in 0..TRIES {
            let order: [(&str, bool); 2] = if i % 2 == 0 {
                [("alice", true), ("nobody", false)]
            } else {
                [("nobody", false), ("alice", true)]
            };
            let mut answers = Vec::with_capacity(2);
            for (user, is_known) in order {
                let start = Instant::now();
                let a = post_form(&server, "/login", user, "wrong password, long enough").await;
                let took = start.elapsed();
                if is_known {
                    known.push(took);
                } else {
                    unknown.push(took);
                }
                answers.push(a);
            }
            assert_eq!(answers[0].status, 401);
            assert_eq!(answers[0].status, answers[1].status, "try {i}");
            assert_eq!(answers[0].body, answers[1].body, "try {i}");
            assert_eq!(answers[0].content_type, answers[1].content_type);
        }
        let (k, u) = (median(&mut known), median(&mut unknown));
        ratio = k.as_secs_f64() / u.as_secs_f64();
        eprintln!(
            "median login over {} tries each: known user {k:?}, unknown user {u:?}, ratio {ratio:.3}",
            known.len()
        );
        if (0.95..=1.05).contains(&ratio) {
            return;
        }
        assert!(
            (0.75..=1.33).contains(&ratio),
            "round {round}: ratio {ratio:.3} is no noise"
        );
    }
    panic!(
        "medians not within 5 % after {} tries each: ratio {ratio:.3}",
        known.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_parameters_rehash_at_the_next_login() {
    // Stored under one of OWASP's equal sets with less memory...
    let old = PasswordHasher::builder()
        .params(Argon2Params::new(12_288, 3, 1))
        .build()
        .unwrap();
    let stored = alice(&old).await;
    assert!(stored.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"));
    // ... the server now runs at m=19456, t=2.
    let hasher = PasswordHasher::builder().build().unwrap();
    let (server, app) = serve(hasher, &[("alice", stored.clone())]).await;

    // A wrong password upgrades nothing.
    let wrong = post_form(&server, "/login", "alice", "not alice's password!").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(app.stored("alice").unwrap(), stored);

    let first = post_form(&server, "/login", "alice", ALICE_PW).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.body).unwrap()["rehashed"],
        true
    );
    let upgraded = app.stored("alice").unwrap();
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );

    let second = post_form(&server, "/login", "alice", ALICE_PW).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&second.body).unwrap()["rehashed"],
        false
    );
    assert_eq!(app.stored("alice").unwrap(), upgraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stored_hashes_answer_as_a_wrong_password() {
    let hasher = PasswordHasher::builder().build().unwrap();
    let stored = alice(&hasher).await;
    let users = [
        ("alice", stored),
        ("huge", forged("argon2id", "m=4000000000,t=1,p=1")),
        ("slow", forged("argon2id", "m=19456,t=4000000000,p=1")),
        ("wide", forged("argon2id", "m=19456,t=2,p=16000000")),
        ("argon2i", forged("argon2i", "m=19456,t=2,p=1")),
        (
            "bcrypt",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(),
        ),
        ("garbage", "garbage".into()),
        ("empty", String::new()),
        ("long", "$".repeat(1 << 20)),
    ];
    let (server, app) = serve(hasher, &users).await;
    let wrong = post_form(&server, "/login", "alice", "not alice's password!").await;
    assert_eq!(wrong.status, 401);
    for (user, _) in &users[1..] {
        let a = post_form(&server, "/login", user, ALICE_PW).await;
        assert_eq!(a.status, wrong.status, "{user}");
        assert_eq!(a.body, wrong.body, "{user}");
    }
    // Nothing ran away: the pool is idle and serves the next login.
    assert_eq!(app.hasher.stats().in_flight, 0);
    let ok = post_form(&server, "/login", "alice", ALICE_PW).await;
    assert_eq!(ok.status, 200);
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A stored hash asking for 1 GiB (below this machine's RAM, so argon2
/// would allocate and fill it) is refused before hashing: the process'
/// peak memory does not grow by anything near 1 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_hash_asking_for_a_gibibyte_allocates_nothing() {
    let hasher = PasswordHasher::builder().build().unwrap();
    let stored = alice(&hasher).await;
    let users = [
        ("alice", stored),
        ("gib", forged("argon2id", "m=1048576,t=1,p=1")),
    ];
    let (server, _) = serve(hasher, &users).await;
    // The dummy and real verifications have run once: the baseline
    // includes their memory.
    post_form(&server, "/login", "alice", ALICE_PW).await;
    post_form(&server, "/login", "nobody", ALICE_PW).await;
    let before = peak_rss_kib();
    let a = post_form(&server, "/login", "gib", ALICE_PW).await;
    assert_eq!(a.status, 401);
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 256 * 1024,
        "peak memory grew by {grown} KiB verifying a 1 GiB hash"
    );
}

/// One slot, no queue, 32 logins at once: the ones that find the slot
/// taken get 503 problem+json with `Retry-After` at once, the others are
/// served, and no more than one hash ever ran at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_one_slot_gets_503_and_never_two_in_flight() {
    const FLOOD: usize = 32;
    let hasher = PasswordHasher::builder()
        .max_in_flight(1)
        .queue_length(0)
        .retry_after(Duration::from_secs(2))
        .build()
        .unwrap();
    let stored = alice(&hasher).await;
    let (server, app) = serve(hasher, &[("alice", stored)]).await;
    let server = Arc::new(server);
    let calls: Vec<_> = (0..FLOOD)
        .map(|i| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let user = if i % 2 == 0 { "alice" } else { "nobody" };
                post_form(&server, "/login", user, ALICE_PW).await
            })
        })
        .collect();
    let (mut served, mut busy) = (0, 0);
    for call in calls {
        let a = call.await.unwrap();
        match a.status {
            200 | 401 => served += 1,
            503 => {
                busy += 1;
                assert_eq!(a.retry_after.as_deref(), Some("2"));
                assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
                let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                assert_eq!(body["status"], 503);
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    let stats = app.hasher.stats();
    eprintln!("served {served}, busy {busy}, {stats:?}");
    assert!(served >= 1 && busy >= 1, "served {served}, busy {busy}");
    assert_eq!(served + busy, FLOOD);
    assert_eq!(stats.peak_in_flight, 1, "{stats:?}");
    assert_eq!(stats.busy_refusals, busy as u64);
    // The slot is free again once the flood is over.
    assert_eq!(
        post_form(&server, "/login", "alice", ALICE_PW).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_answers_400_with_a_message() {
    let hasher = PasswordHasher::builder().build().unwrap();
    let (server, app) = serve(hasher, &[]).await;
    let long = "ab".repeat(65);
    let cases = [
        (
            "bob",
            "short",
            "the password must be at least 15 characters long",
        ),
        (
            "bob",
            long.as_str(),
            "the password must be at most 128 characters long",
        ),
        (
            "bob",
            "Password123456789",
            "this password is too common: it is among the first ones attackers try; choose another",
        ),
        (
            "bobby tables",
            "i am bobby tables!",
            "the password must not contain your user name or the name of this service",
        ),
    ];
    for (user, password, detail) in cases {
        let a = post_form(&server, "/register", user, password).await;
        assert_eq!(a.status, 400, "{password}");
        assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
        let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(body["detail"], detail);
        assert!(!a.body.contains(password), "the password is echoed");
    }
    assert!(app.users.lock().unwrap().is_empty());

    let ok = post_form(&server, "/register", "bob", "plum orchard at dusk, 1987").await;
    assert_eq!(ok.status, 201);
    assert_eq!(
        post_form(&server, "/login", "bob", "plum orchard at dusk, 1987")
            .await
            .status,
        200
    );
}

/// A flood of 160 logins, 32 at a time, against two slots: the process'
/// peak memory grows by the two reused 19 MiB buffers at most, not by the
/// buffers the allocator would keep per thread if each hash allocated
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_flood() {
    let hasher = PasswordHasher::builder()
        .max_in_flight(2)
        .queue_length(64)
        .queue_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let stored = alice(&hasher).await;
    let (server, app) = serve(hasher, &[("alice", stored)]).await;
    let server = Arc::new(server);
    let before = peak_rss_kib();
    for _ in 0..5 {
        let calls: Vec<_> = (0..32)
            .map(|i| {
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    let user = if i % 2 == 0 { "alice" } else { "nobody" };
                    post_form(&server, "/login", user, ALICE_PW).await.status
                })
            })
            .collect();
        for call in calls {
            assert!([200, 401].contains(&call.await.unwrap()));
        }
    }
    let grown = peak_rss_kib().saturating_sub(before);
    let stats = app.hasher.stats();
    eprintln!("peak memory grew by {grown} KiB over {stats:?}");
    assert_eq!(stats.peak_in_flight, 2);
    assert!(
        grown < 96 * 1024,
        "peak memory grew by {grown} KiB under a flood against two slots"
    );
}
