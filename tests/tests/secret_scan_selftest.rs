//! The secret scan catches what it is for: a registered secret planted in a
//! tracing field, in a field recorded later on a span, or in an auth event
//! fails the scanner binary; a clean recording passes; a recording too thin
//! to mean anything fails its guards; and the ledger registers what crosses
//! a real server's socket while passing bodies on unchanged.
//!
//! Each test records into its own temporary directory, never into the
//! suite's `PORTCULLIS_SCAN_DIR`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::post;
use portcullis::jwt::Algorithm;
use portcullis_core::events::{AuthEvent, AuthEventKind};
use portcullis_tests::jwt_app::{HS_SECRET, forge};
use portcullis_tests::secret_scan::ScanWriter;
use portcullis_tests::{TestServer, client};
use tracing_subscriber::layer::SubscriberExt as _;

const SECRET: &str = "planted-secret-Zm9vYmFyYmF6cXV4";
const FAMILY: &str = "fAmIlYiDfAmIlYiDfAmIlY";
const REFRESH_SECRET: &str = "c2VjcmV0LXBhcnQtb2YtdGhlLXJlZnJlc2gtdG9rZW4";

/// The scanner's exit success and stdout, with guards low enough for a
/// handful of lines.
fn scan(dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_secret-scan"))
        .arg(dir)
        .args([
            "--min-events",
            "0",
            "--min-tracing",
            "0",
            "--min-secrets",
            "1",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.success(), stdout)
}

fn writer(dir: &Path) -> Arc<ScanWriter> {
    Arc::new(ScanWriter::open(dir).unwrap())
}

/// Runs `f` with `writer`'s tracing layer as this thread's subscriber.
fn traced(writer: &Arc<ScanWriter>, f: impl FnOnce()) {
    let subscriber = tracing_subscriber::registry().with(writer.tracing_layer());
    tracing::subscriber::with_default(subscriber, f);
}

fn secrets(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["kind"] == "secret" {
                out.push(v["value"].as_str().unwrap().to_owned());
            }
        }
    }
    out
}

#[test]
fn a_secret_in_a_tracing_event_field_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path());
    w.register(SECRET);
    traced(&w, || {
        tracing::debug!(target: "portcullis_session::planted", reason = "ok", "a clean line");
        tracing::warn!(target: "portcullis_session::planted", token = %SECRET, "a leak");
    });
    let (ok, out) = scan(dir.path(), &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("target=event:portcullis_session::planted") && out.contains("field=token"),
        "{out}"
    );
    assert_eq!(out.matches("LEAK ").count(), 1, "{out}");
}

#[test]
fn a_secret_recorded_later_on_a_span_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path());
    w.register(SECRET);
    traced(&w, || {
        let span = tracing::info_span!(target: "portcullis_jwt::planted", "portcullis.jwt", error.type = tracing::field::Empty);
        span.record("error.type", SECRET);
    });
    let (ok, out) = scan(dir.path(), &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("target=record:portcullis_jwt::planted:portcullis.jwt")
            && out.contains("field=error.type"),
        "{out}"
    );
}

#[test]
fn a_secret_in_an_auth_event_user_is_flagged_in_debug_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path());
    w.register(SECRET);
    w.auth_event(&AuthEvent::new("session", AuthEventKind::Logout).user("alice"));
    w.auth_event(&AuthEvent::new("session", AuthEventKind::LoginSucceeded).user(SECRET));
    let (ok, out) = scan(dir.path(), &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("target=auth_event:session field=debug")
            && out.contains("target=auth_event:session field=json"),
        "{out}"
    );
    assert_eq!(out.matches("LEAK ").count(), 2, "{out}");
}

#[test]
fn a_clean_recording_passes_and_a_family_id_is_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path());
    w.register(SECRET);
    w.register_credential(&format!("{FAMILY}.{REFRESH_SECRET}"));
    traced(&w, || {
        tracing::debug!(target: "portcullis_refresh::planted", family = FAMILY, "rotated");
    });
    w.auth_event(
        &AuthEvent::new("refresh", AuthEventKind::RefreshRotated)
            .user("alice")
            .device(FAMILY),
    );
    let (ok, out) = scan(dir.path(), &[]);
    assert!(ok, "{out}");
    assert!(out.contains("1 auth events and 1 tracing lines"), "{out}");
    assert!(out.contains("3 secrets"), "{out}");
}

#[test]
fn too_thin_a_recording_fails_the_guards() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path());
    w.register(SECRET);
    w.auth_event(&AuthEvent::new("session", AuthEventKind::Logout));

    // The default minimums: a scan of a handful of lines means nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_secret-scan"))
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("only 1 auth events recorded") && stdout.contains("only 0 tracing lines"),
        "{stdout}"
    );

    // Every kind required: one seen, the others named.
    let (ok, out) = scan(dir.path(), &["--require-every-kind"]);
    assert!(!ok, "{out}");
    assert!(out.contains("event kinds seen 1/21: logout"), "{out}");
    assert!(
        out.contains("never seen: login_succeeded login_failed"),
        "{out}"
    );
    let (ok, out) = scan(dir.path(), &[]);
    assert!(ok, "{out}");
}

/// Echoes the request body and sets what a login answers.
async fn echo(headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let jwt = forge(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        r#"{"sub":"alice","answer":1}"#,
        Algorithm::HS256,
        HS_SECRET,
    );
    let json = headers
        .get("accept")
        .is_some_and(|a| a.as_bytes() == b"application/json");
    let cookies = AppendHeaders([
        ("set-cookie", "sid=answer-session-cookie-value; HttpOnly"),
        ("set-cookie", "theme=dark"),
    ]);
    if json {
        let token = serde_json::json!({
            "access_token": jwt,
            "refresh_token": format!("{FAMILY}.{REFRESH_SECRET}"),
            "token_type": "Bearer",
            "user": "alice-the-long-named-user",
        });
        (cookies, axum::Json(token)).into_response()
    } else {
        (cookies, body).into_response()
    }
}

#[tokio::test]
async fn the_ledger_registers_what_crosses_the_wire_and_passes_bodies_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path());
    let app = w.wrap(Router::new().route("/login", post(echo)));
    let server = TestServer::start(app).await;
    let bearer = forge(
        r#"{"alg":"HS256"}"#,
        r#"{"sub":"bob"}"#,
        Algorithm::HS256,
        HS_SECRET,
    );
    let signature = bearer.rsplit('.').next().unwrap().to_owned();
    let form = "username=alice-the-long-named-user&password=wonderland&csrf_token=form-csrf-token-value&note=not+a+secret+at+all";

    let resp = client()
        .post(server.url("/login"))
        .header("cookie", "session=request-cookie-value-0123; theme=dark")
        .header("x-csrf-token", "header-csrf-token-value")
        .bearer_auth(&bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        form,
        "the body reaches the app unchanged"
    );

    let resp = client()
        .post(server.url("/login"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(r#"{"user":"carol-the-long-named-user","current_password":"correct horse battery","nested":{"refresh_token":"sent-refresh-token-value"}}"#)
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["token_type"], "Bearer");

    // A body over the limit is neither read nor changed.
    let big = format!("password={}", "p".repeat(70 * 1024));
    let resp = client()
        .post(server.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), big);

    let got = secrets(dir.path());
    let access = answer["access_token"].as_str().unwrap();
    for expected in [
        "request-cookie-value-0123",
        "header-csrf-token-value",
        bearer.as_str(),
        signature.as_str(),
        "wonderland",
        "form-csrf-token-value",
        "correct horse battery",
        "sent-refresh-token-value",
        "answer-session-cookie-value",
        access,
        access.rsplit('.').next().unwrap(),
        &format!("{FAMILY}.{REFRESH_SECRET}"),
        REFRESH_SECRET,
    ] {
        assert!(
            got.iter().any(|s| s == expected),
            "{expected} not registered: {got:?}"
        );
    }
    for public in [
        FAMILY,
        "alice-the-long-named-user",
        "carol-the-long-named-user",
        "not a secret at all",
        "dark",
        "Bearer",
    ] {
        assert!(
            !got.iter().any(|s| s == public),
            "{public} registered: {got:?}"
        );
    }
    assert!(
        !got.iter().any(|s| s.len() > 64 * 1024),
        "the big body was read"
    );
    assert!(
        !got.iter()
            .any(|s| s.starts_with("eyJ") && s.split('.').count() == 2),
        "a JWT prefix was registered: {got:?}"
    );
}
