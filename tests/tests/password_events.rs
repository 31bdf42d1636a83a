//! The `tracing` promise of `portcullis-password`: a refused stored hash
//! is a `warn` event and a refusal for lack of slots a `debug` event, both
//! under the `portcullis_password` target with a `reason`, and no event
//! ever carries the password or the stored hash. Driven through a real
//! server on a current-thread runtime under a capturing subscriber, so
//! every event of the requests lands in the capture.

use std::fmt;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures_util::future::join_all;
use http::StatusCode;
use portcullis_password::{PasswordError, PasswordHasher};
use portcullis_tests::{TestServer, client};
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, Subscriber};

const PASSWORD: &str = "plum orchard at dusk, 1987";

#[derive(Debug, Clone)]
struct Captured {
    target: String,
    level: Level,
    fields: Vec<(String, String)>,
}

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

async fn login(
    State((hasher, stored)): State<(PasswordHasher, Arc<str>)>,
    Json(form): Json<serde_json::Value>,
) -> StatusCode {
    let password = form["password"].as_str().unwrap_or_default();
    match hasher.verify(Some(&stored), password).await {
        Ok(_) | Err(PasswordError::StoredHash(_)) => StatusCode::UNAUTHORIZED,
        Err(PasswordError::Busy { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        Err(e) => panic!("{e}"),
    }
}

async fn attempt(server: &TestServer) -> StatusCode {
    client()
        .post(server.url("/login"))
        .json(&serde_json::json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .status()
}

#[test]
fn events_carry_a_reason_and_never_a_secret() {
    // A tampered hash: argon2i, with a salt and an output to look for.
    let salt = "c2FsdHNhbHRzYWx0";
    let output = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI";
    let tampered = format!("$argon2i$v=19$m=19456,t=2,p=1${salt}${output}");

    let capture = Capture::default();
    let events = Arc::clone(&capture.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (refused, flood) = tracing::subscriber::with_default(capture, || {
        rt.block_on(async {
            let hasher = PasswordHasher::builder()
                .max_in_flight(1)
                .queue_length(0)
                .build()
                .unwrap();
            let app = Router::new()
                .route("/login", post(login))
                .with_state((hasher, Arc::<str>::from(tampered.as_str())));
            let server = TestServer::start(app).await;
            let refused = attempt(&server).await;
            let flood = join_all((0..8).map(|_| attempt(&server))).await;
            (refused, flood)
        })
    });
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    assert!(
        flood.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "no login was refused: {flood:?}"
    );

    let events = events.lock().unwrap().clone();
    let ours: Vec<_> = events
        .iter()
        .filter(|e| {
            e.target == "portcullis_password" || e.target.starts_with("portcullis_password::")
        })
        .collect();
    let with_reason = |reason: &str, level: Level| {
        ours.iter()
            .any(|e| e.level == level && e.fields.iter().any(|(n, v)| n == "reason" && v == reason))
    };
    assert!(with_reason("stored_hash_refused", Level::WARN), "{ours:?}");
    assert!(with_reason("password_busy", Level::DEBUG), "{ours:?}");
    for e in &events {
        for (name, value) in &e.fields {
            for secret in [PASSWORD, salt, output, tampered.as_str()] {
                assert!(
                    !value.contains(secret),
                    "field `{name}` of an event under {} carries a secret: {value}",
                    e.target
                );
            }
        }
    }
}
