//! The secret scan: every tracing line and auth event of the suite,
//! recorded next to the secrets the tests used, for the scanner
//! (`src/bin/secret-scan.rs`, run by `scripts/test`) to check that no
//! secret ever reached an event or a span.
//!
//! Active only when [`SCAN_DIR_ENV`] (`PORTCULLIS_SCAN_DIR`) names a
//! directory; otherwise every function here is a no-op and nothing is
//! installed. When active, each process appends one JSON object per line to
//! `$PORTCULLIS_SCAN_DIR/<pid>.jsonl`, one `write` per line and no buffer,
//! so a test that panics or aborts still leaves every line it made:
//!
//! - `{"kind":"event"|"span"|"record", "target", "name", "fields"}`: every
//!   tracing event, span creation and later `Span::record` whose target
//!   starts with `portcullis`, at every level (a global subscriber);
//! - `{"kind":"auth_event", "event", "source", "debug", "json"}`: every
//!   [`AuthEvent`] of every [`Events`](portcullis_core::events::Events)
//!   handle in the process (through
//!   [`install_tap`](portcullis_core::events::install_tap)), as
//!   `format!("{event:?}")` and as [`AuthEvent::to_json`];
//! - `{"kind":"secret", "value"}`: the ledger. [`TestServer::start`](crate::TestServer::start)
//!   wraps every app in [`wrap`], which registers what crosses the wire:
//!   `Cookie` values, the `Authorization` credential, CSRF and token headers,
//!   form and JSON fields named like a password, token or secret (bodies of
//!   at most 64 KiB with a known length, read and passed on unchanged), and
//!   in answers each `Set-Cookie` value and the same JSON fields. Fixed test
//!   keys are registered with [`register_key`] and [`register_pem`].
//!
//! Every line also names the process id and the test (nextest runs one
//! test per process and names it on the command line; `cargo test` names
//! its test threads).
//!
//! What counts as a secret ([`ScanWriter::register_credential`]): the whole
//! value, a JWT's signature segment, and a refresh token's secret part
//! (`<family id>.<secret>`: the family id is a public device id that events
//! carry, so it is never registered on its own). Values shorter than
//! [`MIN_SECRET_LEN`] characters are skipped (user ids such as `alice`
//! would match everywhere), except in password fields, where the bar is
//! [`MIN_PASSWORD_LEN`].
//!
//! # Limits
//!
//! - Child processes are recorded only if they install the recorder
//!   themselves: the template binaries the browser tests start
//!   ([`ExampleProcess`](crate::ExampleProcess)) do not, so their events
//!   and spans are not scanned (the same templates served in-process
//!   through [`TestServer`](crate::TestServer) are).
//! - Unit tests inside the crates (`src/**`) and tests that never start a
//!   [`TestServer`](crate::TestServer) are recorded only if they call
//!   [`install`]; the secrets they use are in the ledger only if registered.
//! - A test that installs its own subscriber with
//!   `tracing::subscriber::with_default` hides that thread's lines from the
//!   global one while its guard lives.
//! - Secrets the tests never send over a [`TestServer`](crate::TestServer)'s
//!   socket nor register (a token built and checked in memory only) are not
//!   in the ledger.
//! - Values shorter than the bars above are not checked (a wrong password
//!   such as `guess`).
//!
//! ```
//! use portcullis_tests::secret_scan;
//!
//! // No-ops unless PORTCULLIS_SCAN_DIR is set.
//! secret_scan::install();
//! secret_scan::register("a fixed test secret, long enough");
//! secret_scan::register_key(&[3u8; 32]);
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use portcullis_core::events::AuthEvent;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The variable naming the directory the recorder writes to.
pub const SCAN_DIR_ENV: &str = "PORTCULLIS_SCAN_DIR";

/// Shorter values are not registered (user ids, reason codes).
pub const MIN_SECRET_LEN: usize = 12;

/// Shorter values of password fields are not registered (the templates'
/// demo password, `wonderland`, has 10 characters).
pub const MIN_PASSWORD_LEN: usize = 10;

/// Bodies larger than this (or of unknown length) are not read.
pub const BODY_LIMIT: u64 = 64 * 1024;

/// The target prefix the recorder keeps.
const TARGET_PREFIX: &str = "portcullis";

/// One recording file: `<dir>/<pid>.jsonl`, appended to line by line.
#[derive(Debug)]
pub struct ScanWriter {
    file: File,
    test: Option<String>,
    registered: Mutex<HashSet<String>>,
}

impl ScanWriter {
    /// Opens (creating it and `dir` if needed) `dir/<pid>.jsonl` for
    /// appending.
    ///
    /// # Errors
    ///
    /// When the directory or the file cannot be created.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.jsonl", std::process::id())))?;
        Ok(Self {
            file,
            test: test_from_args(),
            registered: Mutex::new(HashSet::new()),
        })
    }

    /// Appends `line` (an object) with the pid and test name, in one write.
    fn write(&self, mut line: Map<String, Value>) {
        line.insert("pid".into(), std::process::id().into());
        let test = self.test.clone().or_else(|| {
            let thread = std::thread::current();
            thread.name().map(str::to_owned)
        });
        line.insert("test".into(), test.into());
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write of the whole line on a file opened for appending:
        // lines of concurrent threads and processes do not interleave.
        if let Err(e) = (&self.file).write_all(text.as_bytes()) {
            eprintln!("secret scan: cannot write a line: {e}");
        }
    }

    /// Registers `secret` as is (when at least [`MIN_SECRET_LEN`] long).
    pub fn register(&self, secret: &str) {
        self.register_min(secret, MIN_SECRET_LEN);
    }

    fn register_min(&self, secret: &str, min: usize) {
        if secret.chars().count() < min {
            return;
        }
        if !self.registered.lock().unwrap().insert(secret.to_owned()) {
            return;
        }
        let mut line = Map::new();
        line.insert("kind".into(), "secret".into());
        line.insert("value".into(), secret.into());
        self.write(line);
    }

    /// Registers a credential seen on the wire: the whole value, a JWT's
    /// signature segment, a refresh token's secret part (never its family
    /// id, a public device id).
    pub fn register_credential(&self, value: &str) {
        self.credential_min(value, MIN_SECRET_LEN);
    }

    fn credential_min(&self, value: &str, min: usize) {
        let value = value.trim().trim_matches('"');
        if value.chars().count() < min {
            return;
        }
        self.register_min(value, min);
        let parts: Vec<&str> = value.split('.').collect();
        match parts.as_slice() {
            // header.payload.signature: the header is public and shared
            // by many tokens, the payload is claims; the signature is not.
            [header, _, signature] if header.starts_with("eyJ") => self.register(signature),
            // <family id>.<secret>
            [family, secret] if family.len() == FAMILY_ID_LEN && is_base64url(family) => {
                self.register(secret);
            }
            _ => {}
        }
    }

    /// Registers a key: its bytes as text (when UTF-8), base64url and
    /// standard base64.
    pub fn register_key(&self, key: &[u8]) {
        if let Ok(text) = std::str::from_utf8(key) {
            self.register(text);
        }
        self.register(&URL_SAFE_NO_PAD.encode(key));
        self.register(&STANDARD.encode(key));
    }

    /// Registers a PEM key: each line of its base64 body.
    pub fn register_pem(&self, pem: &[u8]) {
        for line in String::from_utf8_lossy(pem).lines() {
            if !line.starts_with("-----") {
                self.register(line.trim());
            }
        }
    }

    /// Records one auth event, as `Debug` and as its JSON line.
    pub fn auth_event(&self, event: &AuthEvent) {
        let mut line = Map::new();
        line.insert("kind".into(), "auth_event".into());
        line.insert("event".into(), event.kind.name().into());
        line.insert("source".into(), event.source.into());
        line.insert("debug".into(), format!("{event:?}").into());
        line.insert("json".into(), event.to_json().to_string().into());
        self.write(line);
    }

    /// A tracing layer recording every event, span and span record of a
    /// `portcullis*` target into this file.
    #[must_use]
    pub fn tracing_layer(self: &Arc<Self>) -> ScanLayer {
        ScanLayer {
            writer: Arc::clone(self),
        }
    }

    /// `app` with the ledger as its outermost layer: every credential that
    /// crosses it is registered here. Bodies are passed on unchanged.
    pub fn wrap(self: &Arc<Self>, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(
            Arc::clone(self),
            ledger,
        ))
    }

    fn register_headers(&self, headers: &HeaderMap) {
        for cookie in headers.get_all(COOKIE) {
            for pair in String::from_utf8_lossy(cookie.as_bytes()).split(';') {
                if let Some((_, value)) = pair.split_once('=') {
                    self.register_credential(value);
                }
            }
        }
        for auth in headers.get_all(AUTHORIZATION) {
            let auth = String::from_utf8_lossy(auth.as_bytes());
            let (scheme, credential) = auth.trim().split_once(' ').unwrap_or(("", &auth));
            self.register_credential(credential);
            if scheme.eq_ignore_ascii_case("basic")
                && let Some(password) = STANDARD
                    .decode(credential.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .and_then(|d| d.split_once(':').map(|(_, p)| p.to_owned()))
            {
                self.credential_min(&password, MIN_PASSWORD_LEN);
            }
        }
        for (name, value) in headers {
            let name = name.as_str();
            if name.contains("csrf") || name.contains("xsrf") || name.contains("token") {
                self.register_credential(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
    }

    fn register_set_cookies(&self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE) {
            let set = String::from_utf8_lossy(set.as_bytes());
            let first = set.split(';').next().unwrap_or_default();
            if let Some((_, value)) = first.split_once('=') {
                self.register_credential(value);
            }
        }
    }

    fn register_body(&self, kind: BodyKind, bytes: &[u8]) {
        match kind {
            BodyKind::Json => {
                if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
                    self.register_json(&value, None);
                }
            }
            BodyKind::Form => {
                for (name, value) in form_urlencoded::parse(bytes) {
                    if let Some(min) = secret_field(&name) {
                        self.credential_min(&value, min);
                    }
                }
            }
        }
    }

    /// Registers the strings under fields named like secrets.
    fn register_json(&self, value: &Value, min: Option<usize>) {
        match value {
            Value::Object(map) => {
                for (name, v) in map {
                    self.register_json(v, min.or_else(|| secret_field(name)));
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.register_json(v, min);
                }
            }
            Value::String(s) => {
                if let Some(min) = min {
                    self.credential_min(s, min);
                }
            }
            _ => {}
        }
    }
}

/// Length of a refresh family id (16 random bytes, unpadded base64url).
const FAMILY_ID_LEN: usize = 22;

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The length bar of a field whose value is a secret, by its name.
fn secret_field(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    if name.contains("password") || name.contains("passwd") {
        Some(MIN_PASSWORD_LEN)
    } else if name.contains("token") || name.contains("secret") {
        Some(MIN_SECRET_LEN)
    } else {
        None
    }
}

#[derive(Clone, Copy)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next()?.trim().to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Some(BodyKind::Json)
    } else if essence == "application/x-www-form-urlencoded" {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// Reads a body of known, small length for `register_body`; any other is
/// passed on untouched. A body that fails while read is passed on as a
/// body that fails the same way.
async fn read_small(writer: &ScanWriter, headers: &HeaderMap, body: Body) -> Body {
    let Some(kind) = body_kind(headers) else {
        return body;
    };
    if body.size_hint().upper().is_none_or(|n| n > BODY_LIMIT) {
        return body;
    }
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            writer.register_body(kind, &bytes);
            Body::from(bytes)
        }
        Err(e) => Body::from_stream(futures_util::stream::once(std::future::ready(Err::<
            Bytes,
            _,
        >(e)))),
    }
}

/// The ledger middleware ([`ScanWriter::wrap`]).
async fn ledger(State(writer): State<Arc<ScanWriter>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    writer.register_headers(&parts.headers);
    let body = read_small(&writer, &parts.headers, body).await;
    let response = next.run(Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    writer.register_set_cookies(&parts.headers);
    let body = read_small(&writer, &parts.headers, body).await;
    Response::from_parts(parts, body)
}

/// The nextest test name (`<binary> --exact <name> --nocapture`), or the
/// filter `cargo test` was given.
fn test_from_args() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().position(|a| a == "--exact") {
        Some(i) => args.get(i + 1).cloned(),
        None => None,
    }
}

/// The tracing layer of [`ScanWriter::tracing_layer`].
#[derive(Debug)]
pub struct ScanLayer {
    writer: Arc<ScanWriter>,
}

fn ours(target: &str) -> bool {
    target.starts_with(TARGET_PREFIX)
}

/// Collects every field as text.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

impl ScanLayer {
    fn write(&self, kind: &str, meta: &Metadata<'_>, fields: Fields) {
        let mut line = Map::new();
        line.insert("kind".into(), kind.into());
        line.insert("target".into(), meta.target().into());
        line.insert("name".into(), meta.name().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("fields".into(), Value::Object(fields.0));
        self.writer.write(line);
    }
}

impl<S> Layer<S> for ScanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Other crates' callsites (hyper, h2, sqlx...) stay off: enabling
        // them at trace level would cost the suite far more than ours.
        if ours(meta.target()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        ours(meta.target())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.write("span", attrs.metadata(), fields);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        self.write("record", span.metadata(), fields);
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.write("event", event.metadata(), fields);
    }
}

/// The process's recorder, when [`SCAN_DIR_ENV`] is set.
static GLOBAL: OnceLock<Option<Arc<ScanWriter>>> = OnceLock::new();

fn tap(event: &AuthEvent) {
    if let Some(Some(writer)) = GLOBAL.get() {
        writer.auth_event(event);
    }
}

/// Installs the recorder once per process when [`SCAN_DIR_ENV`] is set: a
/// global tracing subscriber and the auth-event tap, both writing to
/// `$PORTCULLIS_SCAN_DIR/<pid>.jsonl`. Returns whether the process is
/// recorded. [`TestServer::start`](crate::TestServer::start) calls it.
///
/// # Panics
///
/// When the variable is set but the file cannot be opened (a scan that
/// silently records nothing would pass).
pub fn install() -> bool {
    writer().is_some()
}

/// The process's recorder, installing it on first use; `None` when not
/// scanning.
pub fn writer() -> Option<&'static Arc<ScanWriter>> {
    GLOBAL
        .get_or_init(|| {
            let dir = std::env::var_os(SCAN_DIR_ENV).filter(|d| !d.is_empty())?;
            let writer = Arc::new(ScanWriter::open(Path::new(&dir)).unwrap_or_else(|e| {
                panic!("{SCAN_DIR_ENV}={}: {e}", Path::new(&dir).display())
            }));
            let subscriber = tracing_subscriber::registry().with(writer.tracing_layer());
            if tracing::subscriber::set_global_default(subscriber).is_err() {
                eprintln!("secret scan: another global tracing subscriber is set; spans and events of this process are not recorded");
            }
            Some(writer)
        })
        .as_ref()
        .inspect(|_| {
            // After GLOBAL is set, so the tap never sees an empty slot.
            if !NO_TAP.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = portcullis_core::events::install_tap(tap);
            }
        })
}

/// Set by [`without_tap`].
static NO_TAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the event tap and the ledger layer out of this process: for the
/// tests of what a layer does while nothing listens (the tap listens to
/// every handle) and of when it reads a request's body (the ledger reads
/// small bodies in full before the app sees them). Their tracing lines are
/// still recorded; their events and credentials are not. Call it before
/// the first server starts.
pub fn without_tap() {
    NO_TAP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Registers a fixed test secret (no-op when not scanning).
pub fn register(secret: &str) {
    if let Some(w) = writer() {
        w.register(secret);
    }
}

/// Registers a fixed key: raw (when UTF-8), base64url and base64 (no-op
/// when not scanning).
pub fn register_key(key: &[u8]) {
    if let Some(w) = writer() {
        w.register_key(key);
    }
}

/// Registers a PEM key, line by line of its body (no-op when not
/// scanning).
pub fn register_pem(pem: &[u8]) {
    if let Some(w) = writer() {
        w.register_pem(pem);
    }
}

/// `app` with the ledger as its outermost layer when scanning
/// ([`ScanWriter::wrap`]), `app` itself otherwise.
pub fn wrap(app: Router) -> Router {
    if NO_TAP.load(std::sync::atomic::Ordering::SeqCst) {
        return app;
    }
    match writer() {
        Some(w) => w.wrap(app),
        None => app,
    }
}
