//! The state machine against `MemoryStore` and a manual clock, without
//! HTTP: for each load state and handler action, the store calls made and
//! what the response says.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{CACHE_CONTROL, COOKIE};
use portcullis_core::store::FaultSwitch;
use portcullis_core::{Clock, ManualClock};
use serde_json::json;

use super::*;
use crate::memory::MemoryStore;
use crate::store::{CountingStore, InstrumentedStore};

const T0: u64 = 1_700_000_000_000;

/// What the request carried, and what the store held.
#[derive(Debug, Clone, Copy)]
enum Load {
    NoCookie,
    Invalid,
    Unknown,
    Live,
    /// Live, last seen more than the touch interval ago.
    TouchDue,
    LoggedIn,
    Expired,
}

/// What the handler did.
#[derive(Debug, Clone, Copy)]
enum Action {
    Nothing,
    Read,
    InsertSame,
    Insert,
    Remove,
    Login,
    Logout,
}

/// The `Set-Cookie` of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cookie {
    Keep,
    Set,
    Remove,
}

struct Run {
    ops: String,
    cookie: Cookie,
    fast: bool,
    response: Response<ResponseBody<String>>,
}

fn config(clock: &Arc<ManualClock>) -> SessionConfig {
    SessionConfig::default().clock(clock.clone())
}

/// Seeds the store for `load`, then runs `action` and the commit.
async fn run_with<O: portcullis_core::StoreObserver>(
    store: Arc<InstrumentedStore<MemoryStore, O>>,
    clock: &Arc<ManualClock>,
    config: SessionConfig,
    load: Load,
    action: Action,
    ops: impl Fn() -> String,
) -> Run {
    let token = OpaqueToken::generate().unwrap();
    let seed = |user: Option<&str>| {
        let now = clock.now();
        SessionRecord {
            user_id: user.map(str::to_owned),
            data: BTreeMap::from([("k".to_owned(), json!("v"))]),
            created_at: now,
            last_seen: now,
            idle_deadline: now + Duration::from_secs(30 * 60),
            absolute_deadline: now + Duration::from_secs(12 * 3600),
            metadata: SessionMetadata::default(),
        }
    };
    let user = matches!(load, Load::LoggedIn).then_some("bob");
    if matches!(
        load,
        Load::Live | Load::TouchDue | Load::LoggedIn | Load::Expired
    ) {
        let _ = store
            .get_ref()
            .create(&token.digest(), &seed(user), None)
            .await
            .unwrap();
    }
    match load {
        Load::TouchDue => clock.advance(Duration::from_secs(61)),
        Load::Expired => clock.advance(Duration::from_secs(31 * 60)),
        _ => {}
    }
    let incoming = match load {
        Load::NoCookie => Incoming::None,
        Load::Invalid => Incoming::Invalid,
        _ => Incoming::Token(token),
    };
    let ctx = Arc::new(SessionContext::new(store, config).unwrap());
    let mut rs = Arc::new(RequestSession::new(
        ctx,
        incoming,
        None,
        ClientAddress::default(),
        PendingContext::default(),
    ));
    match action {
        Action::Nothing => {}
        Action::Read => {
            let _ = rs.lock().await.unwrap().value("k");
        }
        Action::InsertSame => {
            let mut st = rs.lock().await.unwrap();
            rs.insert(&mut st, "k", json!("v")).unwrap();
        }
        Action::Insert => {
            let mut st = rs.lock().await.unwrap();
            rs.insert(&mut st, "n", json!(1)).unwrap();
        }
        Action::Remove => {
            let _ = rs.lock().await.unwrap().remove("k");
        }
        Action::Login => {
            let mut st = rs.lock().await.unwrap();
            let data = st.data().cloned().unwrap_or_default();
            rs.renew_id(&mut st, Some("alice".into()), data, None, None)
                .await
                .unwrap();
        }
        Action::Logout => {
            let mut st = rs.lock().await.unwrap();
            if let Some(key) = st.stored_key() {
                rs.store().delete(&key).await.unwrap();
            }
            st.forget(ClearSiteData::Ask);
        }
    }
    let fast = RequestSession::nothing_to_commit(&mut rs);
    let before = ops();
    let outcome = rs.commit().await;
    let response = respond(
        rs.ctx(),
        outcome,
        false,
        Response::new(ResponseBody::inner(String::new())),
    );
    if fast {
        assert_eq!(
            ops(),
            before,
            "{load:?} x {action:?}: the fast path skipped store calls"
        );
        assert!(
            response.headers().is_empty(),
            "{load:?} x {action:?}: and headers"
        );
    }
    let cookie = match response
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap())
    {
        None => Cookie::Keep,
        Some(v) if v.contains("Max-Age=0") => Cookie::Remove,
        Some(_) => Cookie::Set,
    };
    Run {
        ops: ops(),
        cookie,
        fast,
        response,
    }
}

async fn run(load: Load, action: Action) -> Run {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(CountingStore::new(MemoryStore::with_clock(clock.clone())));
    let counter = store.counter();
    let ops = move || {
        counter
            .snapshot()
            .iter()
            .map(|(op, n)| format!("{op}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    run_with(store, &clock, config(&clock), load, action, ops).await
}

#[tokio::test]
async fn load_states_by_handler_actions() {
    use Action as A;
    use Cookie as C;
    use Load as L;
    // (load, action, store calls, cookie, fast path)
    let cases: &[(Load, Action, &str, Cookie, bool)] = &[
        (L::NoCookie, A::Nothing, "", C::Keep, true),
        (L::NoCookie, A::Read, "", C::Keep, true),
        (L::NoCookie, A::Remove, "", C::Keep, true),
        (L::NoCookie, A::Insert, "create=1", C::Set, false),
        (L::NoCookie, A::Login, "create=1", C::Set, false),
        (L::NoCookie, A::Logout, "", C::Remove, false),
        (L::Invalid, A::Nothing, "", C::Remove, false),
        (L::Invalid, A::Read, "", C::Remove, false),
        (L::Invalid, A::Insert, "create=1", C::Set, false),
        (L::Unknown, A::Nothing, "", C::Keep, true),
        (L::Unknown, A::Read, "load=1", C::Remove, false),
        (L::Unknown, A::Insert, "load=1 create=1", C::Set, false),
        (L::Live, A::Nothing, "", C::Keep, true),
        (L::Live, A::Read, "load=1", C::Keep, true),
        (L::Live, A::InsertSame, "load=1", C::Keep, true),
        (L::Live, A::Insert, "load=1 update=1", C::Keep, false),
        (L::Live, A::Remove, "load=1 update=1", C::Keep, false),
        (L::Live, A::Login, "load=1 create=1 delete=1", C::Set, false),
        (L::Live, A::Logout, "load=1 delete=1", C::Remove, false),
        (L::TouchDue, A::Nothing, "", C::Keep, true),
        (L::TouchDue, A::Read, "load=1 touch=1", C::Keep, false),
        (L::TouchDue, A::Insert, "load=1 update=1", C::Keep, false),
        (
            L::LoggedIn,
            A::Login,
            "load=1 create=1 delete=1",
            C::Set,
            false,
        ),
        (L::LoggedIn, A::Logout, "load=1 delete=1", C::Remove, false),
        (L::Expired, A::Read, "load=1", C::Remove, false),
        (L::Expired, A::Insert, "load=1 create=1", C::Set, false),
    ];
    for &(load, action, ops, cookie, fast) in cases {
        let run = run(load, action).await;
        let case = format!("{load:?} x {action:?}");
        assert_eq!(run.ops, ops, "{case}: store calls");
        assert_eq!(run.cookie, cookie, "{case}: cookie");
        assert_eq!(run.fast, fast, "{case}: fast path");
        assert_eq!(run.response.status(), StatusCode::OK, "{case}");
        let no_store = run.response.headers().get(CACHE_CONTROL).is_some();
        assert_eq!(
            no_store,
            cookie != Cookie::Keep,
            "{case}: Cache-Control: no-store"
        );
        assert!(
            run.response.headers().get("clear-site-data").is_none(),
            "{case}: Clear-Site-Data is off by default"
        );
    }
}

#[tokio::test]
async fn logout_clears_site_data_only_when_configured() {
    let clock = Arc::new(ManualClock::new(T0));
    for (config, want) in [
        (config(&clock), false),
        (config(&clock).clear_site_data_on_logout(), true),
    ] {
        let store = Arc::new(CountingStore::new(MemoryStore::with_clock(clock.clone())));
        let run = run_with(
            store,
            &clock,
            config,
            Load::Live,
            Action::Logout,
            String::new,
        )
        .await;
        assert_eq!(run.response.headers().contains_key("clear-site-data"), want);
    }
}

#[tokio::test]
async fn a_store_outage_at_commit_is_a_503_and_no_cookie() {
    let clock = Arc::new(ManualClock::new(T0));
    for load in [Load::Live, Load::NoCookie] {
        let switch = FaultSwitch::new();
        let store = Arc::new(InstrumentedStore::with_observer(
            MemoryStore::with_clock(clock.clone()),
            switch.clone(),
        ));
        // Fail from the commit on: the load (if any) succeeds.
        let flag = switch.shared();
        let ctx = Arc::new(SessionContext::new(store.clone(), config(&clock)).unwrap());
        let token = OpaqueToken::generate().unwrap();
        if matches!(load, Load::Live) {
            let rec = SessionRecord {
                user_id: None,
                data: BTreeMap::new(),
                created_at: clock.now(),
                last_seen: clock.now(),
                idle_deadline: clock.now() + Duration::from_secs(60),
                absolute_deadline: clock.now() + Duration::from_secs(600),
                metadata: SessionMetadata::default(),
            };
            let _ = store
                .get_ref()
                .create(&token.digest(), &rec, None)
                .await
                .unwrap();
        }
        let incoming = match load {
            Load::Live => Incoming::Token(token),
            _ => Incoming::None,
        };
        let rs = RequestSession::new(
            ctx,
            incoming,
            None,
            ClientAddress::default(),
            PendingContext::default(),
        );
        {
            let mut st = rs.lock().await.unwrap();
            rs.insert(&mut st, "n", json!(1)).unwrap();
        }
        flag.store(true, Ordering::SeqCst);
        let response = respond(
            rs.ctx(),
            rs.commit().await,
            false,
            Response::new(ResponseBody::inner(String::new())),
        );
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{load:?}"
        );
        assert!(response.headers().get(SET_COOKIE).is_none(), "{load:?}");
    }
}

#[tokio::test]
async fn a_session_deleted_meanwhile_is_not_resurrected() {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(CountingStore::new(MemoryStore::with_clock(clock.clone())));
    let ctx = Arc::new(SessionContext::new(store.clone(), config(&clock)).unwrap());
    let rs = RequestSession::new(
        ctx.clone(),
        Incoming::None,
        None,
        ClientAddress::default(),
        PendingContext::default(),
    );
    {
        let mut st = rs.lock().await.unwrap();
        rs.renew_id(&mut st, Some("alice".into()), BTreeMap::new(), None, None)
            .await
            .unwrap();
    }
    let key = rs.lock().await.unwrap().stored_key().unwrap();
    let _ = rs.commit().await;
    {
        let mut st = rs.lock().await.unwrap();
        rs.insert(&mut st, "n", json!(1)).unwrap();
    }
    // Logged out elsewhere while the handler ran.
    assert!(store.delete(&key).await.unwrap());
    let response = respond(
        &ctx,
        rs.commit().await,
        false,
        Response::new(ResponseBody::inner(String::new())),
    );
    assert!(
        store.load(&key).await.unwrap().is_none(),
        "never resurrected"
    );
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cookie.contains("Max-Age=0"), "the cookie goes: {cookie}");
}

#[test]
fn incoming_table() {
    let token = OpaqueToken::generate().unwrap().to_encoded();
    let cookie = SessionConfig::default();
    let header = SessionConfig::default().header_transport(HeaderName::from_static("x-session"));
    // (config, headers, expected)
    type Case<'a> = (&'a SessionConfig, Vec<(HeaderName, String)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (&cookie, vec![], "none"),
        (
            &cookie,
            vec![(COOKIE, format!("__Host-session={token}"))],
            "token(REDACTED)",
        ),
        (
            &cookie,
            vec![(COOKIE, "__Host-session=short".into())],
            "invalid",
        ),
        (&cookie, vec![(COOKIE, "other=1".into())], "none"),
        (&header, vec![], "none"),
        (
            &header,
            vec![(HeaderName::from_static("x-session"), token.clone())],
            "token(REDACTED)",
        ),
        (
            &header,
            vec![
                (HeaderName::from_static("x-session"), token.clone()),
                (HeaderName::from_static("x-session"), token.clone()),
            ],
            "invalid",
        ),
        (
            &header,
            vec![(HeaderName::from_static("x-session"), "x".repeat(200))],
            "invalid",
        ),
    ];
    for (config, pairs, want) in cases {
        let mut headers = HeaderMap::new();
        for (name, value) in &pairs {
            headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        assert_eq!(Incoming::read(config, &headers).label(), want, "{pairs:?}");
    }
}
