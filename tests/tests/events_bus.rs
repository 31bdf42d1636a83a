//! A subscriber that stops reading never holds a request up: events that do
//! not fit in its channel are dropped for it, and the dropped count says
//! how many. Through a real server, with `SessionLayer` emitting one
//! `login_succeeded` per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::post;
use portcullis::session::{MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
use portcullis_core::events::{EventStream, Events};
use portcullis_tests::{TestServer, client};

const CAPACITY: usize = 8;
const REQUESTS: u64 = 200;

async fn login(session: Session, Path(user): Path<u64>) -> Result<&'static str, SessionError> {
    // One user per request: the per-user session cap evicts nothing.
    session.login(&format!("user-{user}")).await?;
    Ok("in")
}

async fn server(events: Events) -> TestServer {
    let config = SessionConfig::default()
        .insecure_dev_cookies()
        .events(events);
    let layer = SessionLayer::new(MemoryStore::new(), config).unwrap();
    TestServer::start(
        Router::new()
            .route("/login/{user}", post(login))
            .layer(layer),
    )
    .await
}

/// Sends the logins one after another; every one must be answered. The
/// outer timeout only turns a hang into a failure.
async fn logins(server: &TestServer) {
    let http = client();
    let all = async {
        for n in 0..REQUESTS {
            let res = http
                .post(server.url(&format!("/login/{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("a request waited for a stuck subscriber");
}

/// Takes one event, then blocks its thread for an hour: a subscriber
/// stuck in a synchronous call (a log file on a hung disk).
fn block_after_one(mut stream: EventStream, taken: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        if rt.block_on(stream.recv()).is_some() {
            taken.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_secs(3600));
        drop(stream);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_blocked_in_its_thread_never_delays_a_request() {
    let events = Events::new();
    let stuck = events.subscribe("stuck", CAPACITY);
    let taken = Arc::new(AtomicU64::new(0));
    // A healthy subscriber next to it, with room for everything.
    let mut healthy = events.subscribe("healthy", 1024);
    let server = server(events.clone()).await;
    block_after_one(stuck, Arc::clone(&taken));

    logins(&server).await;

    let taken = taken.load(Ordering::SeqCst);
    let dropped = events
        .subscribers()
        .into_iter()
        .find(|(name, _)| &**name == "stuck")
        .map(|(_, n)| n)
        .unwrap();
    // What the stuck one did not take fills its channel; the rest is
    // dropped, and counted.
    assert_eq!(dropped, REQUESTS - CAPACITY as u64 - taken, "taken {taken}");
    assert_eq!(events.dropped(), dropped);
    // The healthy subscriber lost nothing.
    let mut seen = 0;
    while let Some(event) = healthy.try_recv() {
        assert_eq!(event.kind.name(), "login_succeeded");
        seen += 1;
    }
    assert_eq!(seen, REQUESTS);
    assert_eq!(healthy.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_sleeps_between_events_never_delays_a_request() {
    let events = Events::new();
    let mut sleepy = events.subscribe("sleepy", CAPACITY);
    let taken = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&taken);
    // Reads one event, then sleeps a minute before the next (on the
    // runtime, as an async consumer writing to a slow sink would).
    let reader = tokio::spawn(async move {
        while sleepy.recv().await.is_some() {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
    let server = server(events.clone()).await;

    logins(&server).await;

    let taken = taken.load(Ordering::SeqCst);
    assert!(taken <= 1, "the reader sleeps a minute per event");
    assert_eq!(events.dropped(), REQUESTS - CAPACITY as u64 - taken);
    reader.abort();
}
