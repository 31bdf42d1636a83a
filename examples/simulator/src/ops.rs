//! What the server tells the page about each request: the store operations
//! it performed (read from real instrumented store wrappers), the
//! authentication events its layers emitted (read from a subscriber of the
//! strategy's [`Events`] handle), its own time, and what the client sent
//! (sizes and names, never values).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use portcullis::core::events::{AuthEvent, EventStream, Events};
use portcullis::core::store::CallCounter;
use portcullis::core::{Rejection, StoreError};
use portcullis::jwt::revocation::{MemoryRevocationStore, RevocationStore, RevocationView};
use serde_json::json;

/// Store operations the server performed for the request (a number).
pub(crate) const STORE_OPS: HeaderName = HeaderName::from_static("x-store-ops");
/// The same, by store and operation (`session.load=1,session.touch=1`).
pub(crate) const STORE_OPS_DETAIL: HeaderName = HeaderName::from_static("x-store-ops-detail");
/// Microseconds the server spent on the request, layers included.
pub(crate) const SERVER_TIME: HeaderName = HeaderName::from_static("x-server-time-us");
/// What the client sent: credential sizes and cookie names (JSON).
pub(crate) const RECEIVED: HeaderName = HeaderName::from_static("x-received");
/// The authentication events the layers emitted for the request, in
/// order: their names, with the reason code in parentheses where there is
/// one (`csrf_refused(csrf-token-missing),session_expired`).
pub(crate) const AUTH_EVENTS: HeaderName = HeaderName::from_static("x-auth-events");
/// Why a layer refused the request (the rejection's machine-readable
/// reason). Real apps keep it in their logs; the simulator shows it.
pub(crate) const AUTH_REASON: HeaderName = HeaderName::from_static("x-auth-reason");

/// Calls made through a [`CountingRevocations`].
#[derive(Debug, Default)]
pub(crate) struct RevocationOpCounter {
    revoke_token: AtomicU64,
    revoke_session: AtomicU64,
    revoke_user: AtomicU64,
}

/// A revocation store that counts the writes made through it. Checking a
/// token never reaches it: the layer reads the in-process view.
#[derive(Debug)]
pub(crate) struct CountingRevocations {
    inner: MemoryRevocationStore,
    counter: Arc<RevocationOpCounter>,
}

impl CountingRevocations {
    pub(crate) fn new(inner: MemoryRevocationStore) -> Self {
        Self {
            inner,
            counter: Arc::default(),
        }
    }

    pub(crate) fn counter(&self) -> Arc<RevocationOpCounter> {
        Arc::clone(&self.counter)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl RevocationStore for CountingRevocations {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        bump(&self.counter.revoke_token);
        self.inner.revoke_token(jti, expires_at).await
    }
    async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<(), StoreError> {
        bump(&self.counter.revoke_session);
        self.inner.revoke_session(sid, expires_at).await
    }
    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        bump(&self.counter.revoke_user);
        self.inner.revoke_user(user).await
    }
    fn view(&self) -> RevocationView {
        self.inner.view()
    }
}

/// A subscriber of one strategy's [`Events`]: what its layers emitted.
#[derive(Debug, Clone)]
pub(crate) struct EventLog(Arc<Mutex<EventStream>>);

impl EventLog {
    /// Room for the events of one request, many times over.
    const CAPACITY: usize = 256;

    /// Subscribes to `events`.
    pub(crate) fn new(events: &Events) -> Self {
        Self(Arc::new(Mutex::new(
            events.subscribe("simulator", Self::CAPACITY),
        )))
    }

    /// The events emitted since the last call (emission never waits, so
    /// a request's events are all in by the time its response is built).
    fn take(&self) -> Vec<Arc<AuthEvent>> {
        let mut stream = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::iter::from_fn(|| stream.try_recv()).collect()
    }
}

/// `name` or `name(reason)`: static codes, never a user's input.
fn event_text(event: &AuthEvent) -> String {
    match event.kind.reason() {
        Some(reason) => format!("{}({reason})", event.kind.name()),
        None => event.kind.name().to_owned(),
    }
}

/// The instrumented stores behind one strategy, and its events.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub(crate) sessions: Vec<Arc<CallCounter>>,
    pub(crate) refresh: Option<Arc<CallCounter>>,
    pub(crate) revocations: Option<Arc<RevocationOpCounter>>,
    pub(crate) events: Option<EventLog>,
}

type Snapshot = Vec<(&'static str, u64)>;

impl Counters {
    fn snapshot(&self) -> Snapshot {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out: Snapshot = Vec::new();
        let mut add = |name: &'static str, v: u64| match out.iter_mut().find(|(k, _)| *k == name) {
            Some((_, total)) => *total += v,
            None => out.push((name, v)),
        };
        for c in &self.sessions {
            add("session.create", c.get("create"));
            add("session.load", c.get("load"));
            add("session.update", c.get("update"));
            add("session.touch", c.get("touch"));
            add("session.delete", c.get("delete"));
            add(
                "session.per_user",
                c.get("list_for_user") + c.get("delete_for_user") + c.get("count_for_user"),
            );
        }
        if let Some(c) = &self.refresh {
            for name in [
                "create",
                "rotate",
                "get",
                "revoke",
                "revoke_user",
                "list_user",
                "purge_expired",
            ] {
                let v = c.get(name);
                add(
                    match name {
                        "create" => "refresh.create",
                        "rotate" => "refresh.rotate",
                        "get" => "refresh.get",
                        "revoke" => "refresh.revoke",
                        "revoke_user" => "refresh.revoke_user",
                        "list_user" => "refresh.list_user",
                        _ => "refresh.purge_expired",
                    },
                    v,
                );
            }
        }
        if let Some(c) = &self.revocations {
            add("revocation.revoke_token", n(&c.revoke_token));
            add("revocation.revoke_session", n(&c.revoke_session));
            add("revocation.revoke_user", n(&c.revoke_user));
        }
        out
    }
}

/// What the client sent, as sizes and names: never a value (an HttpOnly
/// cookie echoed to the page would no longer be out of its scripts' reach).
fn received(headers: &HeaderMap) -> String {
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie_bytes: usize =
        cookies.iter().map(|c| c.len()).sum::<usize>() + cookies.len().saturating_sub(1) * 2;
    let names: Vec<&str> = cookies
        .iter()
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty())
        .collect();
    let authorization = headers.get(header::AUTHORIZATION);
    let scheme = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(' ').next())
        .unwrap_or("");
    json!({
        "cookie_bytes": cookie_bytes,
        "cookies": names,
        "authorization_bytes": authorization.map_or(0, HeaderValue::len),
        "authorization_scheme": scheme,
        "csrf_token_bytes": headers.get("x-csrf-token").map_or(0, HeaderValue::len),
    })
    .to_string()
}

/// Runs `handle` and reports on the response what it cost: the store
/// operations counted by `counters` meanwhile, the events emitted, the
/// server time, what the client sent, and the refusal reason if a layer
/// refused.
///
/// Callers serialise the requests of one strategy, so that the counters'
/// difference belongs to this request alone.
pub(crate) async fn measured<F>(counters: &Counters, headers: &HeaderMap, handle: F) -> Response
where
    F: Future<Output = Response>,
{
    let received = received(headers);
    if let Some(log) = &counters.events {
        // Anything emitted outside a request is not this request's.
        log.take();
    }
    let before = counters.snapshot();
    let started = Instant::now();
    let mut response = handle.await;
    let elapsed = started.elapsed();
    let after = counters.snapshot();
    let events: Vec<String> = counters
        .events
        .as_ref()
        .map(|log| log.take().iter().map(|e| event_text(e)).collect())
        .unwrap_or_default();

    let mut total = 0;
    let mut detail = Vec::new();
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        let d = a.saturating_sub(*b);
        if d > 0 {
            total += d;
            detail.push(format!("{name}={d}"));
        }
    }
    let reason = response
        .extensions()
        .get::<Rejection>()
        .map(Rejection::reason)
        .filter(|r| !r.is_empty());
    let h = response.headers_mut();
    h.insert(STORE_OPS, HeaderValue::from(total));
    if !detail.is_empty()
        && let Ok(v) = HeaderValue::try_from(detail.join(","))
    {
        h.insert(STORE_OPS_DETAIL, v);
    }
    h.insert(
        SERVER_TIME,
        HeaderValue::from(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)),
    );
    if let Ok(v) = HeaderValue::try_from(received) {
        h.insert(RECEIVED, v);
    }
    if let Some(reason) = reason {
        h.insert(AUTH_REASON, HeaderValue::from_static(reason));
    }
    if !events.is_empty()
        && let Ok(v) = HeaderValue::try_from(events.join(","))
    {
        h.insert(AUTH_EVENTS, v);
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_reports_sizes_and_names_never_values() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=secret1; b=x"));
        h.append(header::COOKIE, HeaderValue::from_static("c=y"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        let r = received(&h);
        assert!(!r.contains("secret1") && !r.contains("abc.def"), "{r}");
        let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
        assert_eq!(v["cookie_bytes"], "a=secret1; b=x; c=y".len());
        assert_eq!(v["cookies"], json!(["a", "b", "c"]));
        assert_eq!(v["authorization_bytes"], "Bearer abc.def.ghi".len());
        assert_eq!(v["authorization_scheme"], "Bearer");
        assert_eq!(v["csrf_token_bytes"], 0);
    }
}
