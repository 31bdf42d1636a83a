//! The layer driven as a plain tower service: typed reasons in the
//! response extensions, tracing events with a reason and never a token,
//! and the inner service never called on a refusal.
#![cfg(feature = "tracing")]
#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use portcullis_core::Rejection;
use portcullis_csrf::{
    CsrfConfig, CsrfError, CsrfErrorKind, CsrfHandle, CsrfLayer, RequestBody, SignedBinding,
};
use tower::{Service as _, ServiceExt as _};
use tower_layer::Layer as _;
use tracing::field::{Field, Visit};

/// Collects every field of every event, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut Vec<String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
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
        self.0.lock().unwrap().push(fields.join(" "));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

type Req = Request<RequestBody<Full<Bytes>>>;

/// Renders a token with the given cookies, then checks it with
/// others; returns the verdicts.
fn bound_verdicts(
    binding: SignedBinding,
    render_cookie: &str,
    check_cookies: &[&str],
) -> Vec<Result<(), CsrfErrorKind>> {
    let inner = tower::service_fn(|req: Req| async move {
        let token = match req.extensions().get::<CsrfHandle>() {
            Some(h) => h
                .token()
                .await
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            None => String::new(),
        };
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(token))))
    });
    let layer = CsrfLayer::new(CsrfConfig::signed([9u8; 32], binding)).unwrap();
    let mut svc = layer.layer(inner);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let get = Request::get("/").header("cookie", render_cookie);
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(get.body(Full::default()).unwrap());
        let resp = resp.await.unwrap();
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "bound: no pre-session"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let token = String::from_utf8(body.to_vec()).unwrap();
        let mut out = Vec::new();
        for cookie in check_cookies {
            let mut post = Request::post("/").header("x-csrf-token", &token);
            for c in cookie.split(" | ") {
                post = post.header("cookie", c);
            }
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(post.body(Full::default()).unwrap());
            let resp = resp.await.unwrap();
            out.push(match resp.extensions().get::<CsrfError>() {
                None => Ok(()),
                Some(e) => Err(e.kind()),
            });
        }
        out
    })
}

#[test]
fn cookie_and_custom_bindings() {
    use CsrfErrorKind as K;
    let got = bound_verdicts(
        SignedBinding::cookie("auth"),
        "auth=alice-jwt",
        &[
            "auth=alice-jwt",
            "auth=bob-jwt",
            "other=1",
            "auth=alice-jwt | auth=alice-jwt",
        ],
    );
    // Same cookie: ok; another: mismatch; none (and no pre-session
    // cookie): expired; the cookie twice (tossing): refused.
    assert_eq!(
        got,
        vec![Ok(()), Err(K::Mismatch), Err(K::Expired), Err(K::Mismatch)]
    );
    let by_header = SignedBinding::from_fn(|headers, _| {
        headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sid="))
            .map(|v| v.as_bytes().to_vec())
    });
    let got = bound_verdicts(by_header, "sid=1", &["sid=1", "sid=2"]);
    assert_eq!(got, vec![Ok(()), Err(K::Mismatch)]);
}

#[test]
fn reasons_are_typed_and_traced_and_tokens_never_logged() {
    let capture = Capture::default();
    let events = Arc::clone(&capture.0);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let inner = tower::service_fn(move |req: Req| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let token = match req.extensions().get::<CsrfHandle>() {
                Some(h) => h
                    .token()
                    .await
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
                None => String::new(),
            };
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(token))))
        }
    });
    let layer = CsrfLayer::new(CsrfConfig::signed(
        [3u8; 32],
        SignedBinding::pre_session_only(),
    ))
    .unwrap();
    let mut svc = layer.layer(inner);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture, || {
        rt.block_on(async {
            // Render a token: the pre-session cookie comes with it.
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(Request::get("/").body(Full::default()).unwrap())
                .await
                .unwrap();
            let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
            let cookie = cookie.split(';').next().unwrap().to_owned();
            let token = String::from_utf8(
                resp.into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap();
            assert_eq!(token.len(), 171);
            assert_eq!(calls.load(Ordering::SeqCst), 1);

            let post = |headers: &[(&str, &str)]| {
                let mut b = Request::post("/act");
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                b.body(Full::default()).unwrap()
            };
            let cases = [
                (
                    post(&[
                        ("sec-fetch-site", "cross-site"),
                        ("x-csrf-token", &token),
                        ("cookie", &cookie),
                    ]),
                    CsrfErrorKind::CrossOrigin,
                ),
                (
                    post(&[("sec-fetch-site", "same-origin")]),
                    CsrfErrorKind::Missing,
                ),
                (
                    post(&[("x-csrf-token", &token[..170]), ("cookie", &cookie)]),
                    CsrfErrorKind::Malformed,
                ),
                (
                    post(&[
                        ("x-csrf-token", &token),
                        (
                            "cookie",
                            "__Host-csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                        ),
                    ]),
                    CsrfErrorKind::Mismatch,
                ),
                (post(&[("x-csrf-token", &token)]), CsrfErrorKind::Expired),
            ];
            for (req, kind) in cases {
                let resp = svc.ready().await.unwrap().call(req).await.unwrap();
                assert_eq!(resp.status(), 403, "{kind:?}");
                assert_eq!(
                    resp.extensions().get::<CsrfError>().map(CsrfError::kind),
                    Some(kind)
                );
                assert_eq!(
                    resp.extensions().get::<Rejection>().map(Rejection::reason),
                    Some(kind.as_str())
                );
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "no refusal reached the inner service"
            );
            // The genuine pair passes.
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(post(&[("x-csrf-token", &token), ("cookie", &cookie)]))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(calls.load(Ordering::SeqCst), 2);

            let events = events.lock().unwrap();
            for kind in [
                CsrfErrorKind::CrossOrigin,
                CsrfErrorKind::Missing,
                CsrfErrorKind::Malformed,
                CsrfErrorKind::Mismatch,
                CsrfErrorKind::Expired,
            ] {
                let want = format!("reason=\"{}\"", kind.as_str());
                assert!(
                    events.iter().any(|e| e.contains(&want)),
                    "{want} in {events:?}"
                );
            }
            let pre = cookie.split('=').nth(1).unwrap();
            for e in events.iter() {
                assert!(
                    !e.contains(&token[..40]) && !e.contains(pre),
                    "secret in {e}"
                );
            }
        });
    });
}
