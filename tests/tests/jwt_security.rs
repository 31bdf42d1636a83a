//! How long keys, cached tokens and revocations live, end to end: a
//! retired signing key stops verifying at its deadline or at once, the
//! JWKS and the key set agree, the verified-token cache follows both and a
//! clock set back, revocations outlive every layer's leeway and a clock
//! stepped forward and back, a snapshot replaces the revocation view
//! atomically, a stale view fails closed.
//! Real axum servers on real sockets, a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use portcullis::core::{Clock, ManualClock, Timestamp};
use portcullis::jwt::jwks::RemoteJwks;
use portcullis::jwt::revocation::{
    MemoryRevocationStore, RevocationEvent, RevocationStore, RevocationView,
};
use portcullis::jwt::{
    Algorithm, IssueError, JwtErrorKind, JwtIssuer, JwtLayer, KeyLookup, KeySource, MAX_LEEWAY,
    SigningKey, Validation, verify_jws,
};
use portcullis_tests::jwt_app::{JwksServer, ServedApp, issuer_builder, layer_builder};
use reqwest::StatusCode;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn key(alg: Algorithm, kid: &str) -> SigningKey {
    if alg == Algorithm::HS256 {
        SigningKey::hmac(kid, alg, format!("{kid:-<32}").as_bytes()).unwrap()
    } else {
        SigningKey::generate(kid, alg).unwrap()
    }
}

/// An issuer signing with `key` on `clock` (15 min tokens).
fn issuer_with(key: SigningKey, clock: &Arc<ManualClock>) -> JwtIssuer {
    issuer_builder(key, clock).build().unwrap()
}

/// Whoever holds a leaked private key: mints what they like with it.
fn attacker(leaked: &SigningKey, clock: &Arc<ManualClock>) -> JwtIssuer {
    issuer_builder(leaked.clone(), clock)
        .lifetime(DAY)
        .build()
        .unwrap()
}

/// The layer with this suite's issuer, audience and clock, `leeway`, the
/// verified-token cache on.
fn layer(keys: impl KeySource, clock: &Arc<ManualClock>, leeway: Duration) -> JwtLayer {
    layer_builder(keys, clock, Validation::default().leeway(leeway))
        .build()
        .unwrap()
}

/// The app behind a layer over `iss`'s keys with `validation`, consulting
/// the revocation `view`.
async fn serve_revocable(
    iss: &JwtIssuer,
    clock: &Arc<ManualClock>,
    validation: Validation,
    view: RevocationView,
) -> ServedApp {
    ServedApp::start(
        layer_builder(iss.keys(), clock, validation)
            .revocation(view)
            .build()
            .unwrap(),
    )
    .await
}

fn kids(issuer: &JwtIssuer) -> Vec<String> {
    issuer
        .jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect()
}

fn found(keys: &impl KeySource, kid: &str) -> bool {
    matches!(keys.lookup(Some(kid)), KeyLookup::Found(_))
}

fn secs(clock: &ManualClock) -> i64 {
    i64::try_from(clock.now().secs()).unwrap()
}

/// A key retired by `rotate` verifies the tokens it signed until they have
/// expired (lifetime + 5 s after the rotation), then stops on every layer
/// built from `issuer.keys()`, with no further call to the issuer: cached
/// tokens are no longer served (the layer's 60 s leeway would still run),
/// and tokens freshly minted with the leaked key 30 days later are refused
/// on `/me`, `/admin`, `JwtLayer::verify` and `verify_jws`. A clock set
/// back afterwards does not bring the key back.
#[tokio::test]
async fn a_retired_key_stops_verifying_at_its_deadline() {
    for alg in [Algorithm::ES256, Algorithm::HS256] {
        let clock = Arc::new(ManualClock::starting_now());
        let old_key = key(alg, "old");
        let iss = issuer_with(old_key.clone(), &clock);
        let mallory = attacker(&old_key, &clock);
        let jwt = layer(iss.keys(), &clock, Duration::from_secs(60));
        let f = ServedApp::start(jwt.clone()).await;
        let t0 = secs(&clock);

        let alice = iss.token("alice").mint().unwrap();
        let forged = mallory.token("mallory").roles(["admin"]).mint().unwrap();
        assert_eq!(f.me(&alice.token).await, StatusCode::OK, "{alg:?}");
        assert_eq!(f.admin(&forged.token).await, StatusCode::OK, "{alg:?}");
        iss.rotate(key(alg, "new")).unwrap();
        let bob = iss.token("bob").mint().unwrap();

        // The last second of the grace: lifetime + 5 s after the rotation.
        clock.set(Timestamp::from_secs(
            u64::try_from(t0 + 15 * 60 + 5).unwrap(),
        ));
        assert_eq!(f.me(&alice.token).await, StatusCode::OK, "{alg:?} grace");
        assert!(found(&iss.keys(), "old"), "{alg:?}");
        if alg == Algorithm::ES256 {
            assert_eq!(kids(&iss), ["new", "old"]);
        }

        clock.advance(Duration::from_secs(1));
        assert_eq!(
            f.me(&alice.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: cached, inside the layer's leeway, but its key is retired"
        );
        assert_eq!(
            f.admin(&forged.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: a cached forgery ends with the key"
        );
        assert!(!found(&iss.keys(), "old"), "{alg:?}");
        assert_eq!(iss.keys().current().len(), 1, "{alg:?}");
        if alg == Algorithm::ES256 {
            assert_eq!(kids(&iss), ["new"]);
        }
        assert_eq!(f.me(&bob.token).await, StatusCode::OK, "{alg:?}");

        // 30 days on, the leaked key mints a fresh admin token.
        clock.advance(30 * DAY);
        let fresh = mallory.token("root").roles(["admin"]).mint().unwrap();
        assert_eq!(f.admin(&fresh.token).await, StatusCode::UNAUTHORIZED);
        assert_eq!(f.me(&fresh.token).await, StatusCode::UNAUTHORIZED);
        let err = jwt.verify(&fresh.token).await.unwrap_err();
        assert_eq!(err.kind(), JwtErrorKind::UnknownKey, "{alg:?}");
        let err = verify_jws(&fresh.token, &iss.keys(), 8192).unwrap_err();
        assert_eq!(err.kind(), JwtErrorKind::UnknownKey, "{alg:?}");

        // The clock set back into the grace: the key stays gone.
        clock.set(Timestamp::from_secs(u64::try_from(t0 + 60).unwrap()));
        assert_eq!(
            f.me(&alice.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: a clock set back does not revive a retired key"
        );
        assert!(!found(&iss.keys(), "old"), "{alg:?}");
        assert_eq!(f.hits.load(Ordering::SeqCst), 4, "{alg:?}");
    }
}

/// A token minted with a longer lifetime than the issuer's keeps its key
/// verifying until that token has expired (plus 5 s), not just the
/// issuer's lifetime.
#[tokio::test]
async fn a_long_token_keeps_its_retired_key_until_it_expires() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_with(key(Algorithm::ES256, "old"), &clock);
    let f = ServedApp::start(layer(iss.keys(), &clock, Duration::from_secs(5))).await;
    let long = iss
        .token("alice")
        .lifetime(Duration::from_secs(3600))
        .mint()
        .unwrap();
    iss.rotate(key(Algorithm::ES256, "new")).unwrap();
    clock.advance(Duration::from_secs(3600 + 5));
    assert_eq!(f.me(&long.token).await, StatusCode::OK);
    assert_eq!(kids(&iss), ["new", "old"]);
    clock.advance(Duration::from_secs(1));
    assert_eq!(f.me(&long.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(kids(&iss), ["new"]);
}

/// `retire` is for a compromised key: it leaves the key set and the JWKS
/// at once, and every token it signed is refused at once, those already
/// in the layer's verified-token cache included. The signing key cannot
/// be retired (rotate first).
#[tokio::test]
async fn retire_now_ends_a_compromised_keys_tokens_at_once_even_cached() {
    for alg in [Algorithm::ES256, Algorithm::HS256] {
        let clock = Arc::new(ManualClock::starting_now());
        let old_key = key(alg, "old");
        let iss = issuer_with(old_key.clone(), &clock);
        let mallory = attacker(&old_key, &clock);
        let f = ServedApp::start(layer(iss.keys(), &clock, Duration::from_secs(5))).await;
        let alice = iss.token("alice").mint().unwrap();
        let forged = mallory.token("mallory").roles(["admin"]).mint().unwrap();
        for _ in 0..2 {
            assert_eq!(f.me(&alice.token).await, StatusCode::OK, "{alg:?}");
            assert_eq!(f.admin(&forged.token).await, StatusCode::OK, "{alg:?}");
        }
        assert!(matches!(
            iss.retire("old"),
            Err(IssueError::SigningKeyInUse)
        ));
        assert_eq!(f.me(&alice.token).await, StatusCode::OK, "{alg:?}");

        iss.rotate(key(alg, "new")).unwrap();
        assert_eq!(f.me(&alice.token).await, StatusCode::OK, "{alg:?}: grace");
        assert!(iss.retire("old").unwrap(), "{alg:?}");
        assert_eq!(
            f.me(&alice.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: cached before the retirement"
        );
        assert_eq!(
            f.admin(&forged.token).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: a cached forgery"
        );
        assert!(!found(&iss.keys(), "old"));
        if alg == Algorithm::ES256 {
            assert_eq!(kids(&iss), ["new"]);
        }
        assert!(!iss.retire("old").unwrap(), "{alg:?}: already gone");
        let bob = iss.token("bob").mint().unwrap();
        assert_eq!(f.me(&bob.token).await, StatusCode::OK, "{alg:?}");
        assert_eq!(f.hits.load(Ordering::SeqCst), 7, "{alg:?}");
    }
}

/// At every second around rotations and their deadlines, the JWKS lists
/// exactly the keys a lookup through `issuer.keys()` finds.
#[tokio::test]
async fn the_jwks_and_the_key_set_agree_at_every_second() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_builder(key(Algorithm::ES256, "k0"), &clock)
        .lifetime(Duration::from_secs(20))
        .build()
        .unwrap();
    let all = ["k0", "k1", "k2", "k3"];
    let keys = iss.keys();
    for step in 0..75 {
        if step % 15 == 5 && step < 45 {
            let next = all[step / 15 + 1];
            let _ = iss.token("alice").mint().unwrap();
            iss.rotate(key(Algorithm::ES256, next)).unwrap();
        }
        let published = kids(&iss);
        let mut accepted: Vec<&str> = all.iter().copied().filter(|k| found(&keys, k)).collect();
        accepted.sort_unstable();
        let mut published_sorted: Vec<&str> = published.iter().map(String::as_str).collect();
        published_sorted.sort_unstable();
        assert_eq!(published_sorted, accepted, "second {step}");
        let current_set = keys.current();
        let mut current: Vec<&str> = current_set.iter().filter_map(|k| k.kid()).collect();
        current.sort_unstable();
        assert_eq!(current, accepted, "second {step}");
        clock.advance(Duration::from_secs(1));
    }
}

/// A remote JWKS has no stale-key hole of its own: once the issuer retires
/// a key and the endpoint stops publishing it, the next refresh ends the
/// key and the tokens the layer had cached with it.
#[tokio::test]
async fn a_remote_jwks_drops_a_retired_key_and_its_cached_tokens() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_with(key(Algorithm::ES256, "old"), &clock);
    let jwks = JwksServer::new(iss.jwks_json());
    let server = jwks.start().await;
    let source = RemoteJwks::builder(server.url("/jwks.json"))
        .clock(clock.clone())
        .ttl_bounds(Duration::from_millis(20), Duration::from_millis(20))
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), source.ready())
        .await
        .unwrap();
    let f = ServedApp::start(layer(source.clone(), &clock, Duration::from_secs(5))).await;
    let alice = iss.token("alice").mint().unwrap();
    assert_eq!(f.me(&alice.token).await, StatusCode::OK);
    assert_eq!(f.me(&alice.token).await, StatusCode::OK, "cached");
    iss.rotate(key(Algorithm::ES256, "new")).unwrap();
    assert!(iss.retire("old").unwrap());
    *jwks.doc.lock().unwrap() = iss.jwks_json();
    let before = source.fetch_count();
    for _ in 0..500 {
        if source.fetch_count() >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(source.fetch_count() >= before + 2, "the JWKS was refetched");
    assert_eq!(f.me(&alice.token).await, StatusCode::UNAUTHORIZED);
    let bob = iss.token("bob").mint().unwrap();
    assert_eq!(f.me(&bob.token).await, StatusCode::OK);
}

/// The cache serves a token only inside the window a fresh verification
/// accepts it in: with the clock set back before its `iat` (beyond the
/// leeway), a cached token is refused as an uncached one is.
#[tokio::test]
async fn the_cache_follows_a_clock_set_back() {
    let clock = Arc::new(ManualClock::starting_now());
    let iss = issuer_with(key(Algorithm::ES256, "k"), &clock);
    let cached = ServedApp::start(layer(iss.keys(), &clock, Duration::from_secs(5))).await;
    let uncached = ServedApp::start(
        layer_builder(iss.keys(), &clock, Validation::default())
            .cache(0)
            .build()
            .unwrap(),
    )
    .await;
    let t = iss.token("alice").mint().unwrap();
    assert_eq!(cached.me(&t.token).await, StatusCode::OK);
    assert_eq!(uncached.me(&t.token).await, StatusCode::OK);
    let now = secs(&clock);
    clock.set(Timestamp::from_secs(u64::try_from(now - 5).unwrap()));
    assert_eq!(
        cached.me(&t.token).await,
        StatusCode::OK,
        "inside the leeway"
    );
    assert_eq!(uncached.me(&t.token).await, StatusCode::OK);
    clock.set(Timestamp::from_secs(u64::try_from(now - 6).unwrap()));
    assert_eq!(
        uncached.me(&t.token).await,
        StatusCode::UNAUTHORIZED,
        "issued in the future"
    );
    assert_eq!(
        cached.me(&t.token).await,
        StatusCode::UNAUTHORIZED,
        "the cache agrees"
    );
    clock.set(Timestamp::from_secs(u64::try_from(now).unwrap()));
    assert_eq!(cached.me(&t.token).await, StatusCode::OK);
}

/// A revoked `jti` or `sid` stays revoked while any layer may still accept
/// its tokens: up to `MAX_LEEWAY` past `exp`, whatever other revocations
/// happen meanwhile (each one forgets the expired entries).
#[tokio::test]
async fn revocations_outlive_the_largest_leeway() {
    let clock = Arc::new(ManualClock::starting_now());
    let store = MemoryRevocationStore::with_clock(clock.clone());
    let iss = issuer_with(key(Algorithm::HS256, "k"), &clock);
    let validation = Validation::default().leeway(MAX_LEEWAY);
    let f = serve_revocable(&iss, &clock, validation, store.view()).await;
    let by_jti = iss.token("alice").mint().unwrap();
    let by_sid = iss.token("bob").sid("device-1").mint().unwrap();
    let control = iss.token("carol").mint().unwrap();
    for t in [&by_jti, &by_sid, &control] {
        assert_eq!(f.me(&t.token).await, StatusCode::OK);
    }
    store
        .revoke_token(&by_jti.jti, by_jti.expires_at)
        .await
        .unwrap();
    store
        .revoke_session("device-1", by_sid.expires_at)
        .await
        .unwrap();
    // The last second a layer with the largest leeway accepts the tokens.
    let last = by_jti.expires_at + i64::try_from(MAX_LEEWAY.as_secs()).unwrap();
    clock.set(Timestamp::from_secs(u64::try_from(last).unwrap()));
    assert_eq!(
        f.me(&control.token).await,
        StatusCode::OK,
        "still inside the leeway"
    );
    // Unrelated revocations forget what has expired.
    let far = last + 3600;
    store.revoke_token("unrelated", far).await.unwrap();
    store.revoke_session("unrelated", far).await.unwrap();
    assert_eq!(
        f.me(&by_jti.token).await,
        StatusCode::UNAUTHORIZED,
        "the revoked jti came back"
    );
    assert_eq!(
        f.me(&by_sid.token).await,
        StatusCode::UNAUTHORIZED,
        "the revoked sid came back"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 4);
}

/// `replace_all` swaps the whole state at once: requests racing with
/// replacements by a snapshot that still holds the revocation are never
/// let through (clearing the live tables and refilling them let most of
/// them through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_replacement_never_lets_a_revoked_token_through() {
    let clock = Arc::new(ManualClock::starting_now());
    let view = RevocationView::new(clock.clone());
    let iss = issuer_with(key(Algorithm::HS256, "k"), &clock);
    let f = serve_revocable(&iss, &clock, Validation::default(), view.clone()).await;
    let t = iss.token("alice").mint().unwrap();
    // The revocation last, after many other entries.
    let mut snapshot: Vec<RevocationEvent> = (0..20_000)
        .map(|i| RevocationEvent::Token {
            jti: format!("other-{i}"),
            expires_at: t.expires_at,
        })
        .collect();
    snapshot.push(RevocationEvent::Token {
        jti: t.jti.clone(),
        expires_at: t.expires_at,
    });
    view.replace_all(&snapshot);
    assert_eq!(f.me(&t.token).await, StatusCode::UNAUTHORIZED);

    let stop = Arc::new(AtomicBool::new(false));
    let replaced = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (view, stop, replaced) = (view.clone(), stop.clone(), replaced.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                view.replace_all(&snapshot);
                replaced.fetch_add(1, Ordering::Release);
            }
        })
    };
    let mut let_through = 0;
    let mut sent = 0;
    while sent < 300 || replaced.load(Ordering::Acquire) < 20 {
        let batch: Vec<_> = (0..4).map(|_| f.spawn_me(t.token.clone())).collect();
        for r in batch {
            if r.await.unwrap() != StatusCode::UNAUTHORIZED {
                let_through += 1;
            }
            sent += 1;
        }
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    assert_eq!(
        let_through, 0,
        "{let_through} of {sent} requests passed during replacements"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 0);
}

/// A store marks its view stale past its staleness bound: the layer then
/// answers 503 (with `Retry-After`) instead of trusting it, and serves
/// again once the store marks it ready after a fresh snapshot.
#[tokio::test]
async fn a_stale_view_answers_503_until_marked_ready() {
    let clock = Arc::new(ManualClock::starting_now());
    let view = RevocationView::new(clock.clone());
    let iss = issuer_with(key(Algorithm::HS256, "k"), &clock);
    let f = serve_revocable(&iss, &clock, Validation::default(), view.clone()).await;
    let t = iss.token("alice").mint().unwrap();
    assert_eq!(f.me(&t.token).await, StatusCode::OK);
    view.mark_stale();
    let resp = f.get("/me", &t.token).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "cached too");
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(f.hits.load(Ordering::SeqCst), 1);
    view.mark_ready();
    assert_eq!(f.me(&t.token).await, StatusCode::OK);
    assert_eq!(f.hits.load(Ordering::SeqCst), 2);
}

/// A clock stepped a day forward (a bad time source, a resumed VM) and
/// back again never brings a revoked token back: revocations written
/// while the clock is ahead forget nothing the monotonic time since the
/// view was built does not also find expired, so once the clock is
/// corrected the token, inside its lifetime again, is still refused.
#[tokio::test]
async fn revoked_token_stays_revoked_across_a_clock_step_forward_and_back() {
    let clock = Arc::new(ManualClock::starting_now());
    let store = MemoryRevocationStore::with_clock(clock.clone());
    let iss = issuer_with(key(Algorithm::HS256, "k"), &clock);
    let f = serve_revocable(&iss, &clock, Validation::default(), store.view()).await;
    let stolen = iss.token("alice").sid("device-1").mint().unwrap();
    assert_eq!(f.me(&stolen.token).await, StatusCode::OK);
    // The device is logged out: its jti and sid are revoked.
    store
        .revoke_token(&stolen.jti, stolen.expires_at)
        .await
        .unwrap();
    store
        .revoke_session("device-1", stolen.expires_at)
        .await
        .unwrap();
    assert_eq!(f.me(&stolen.token).await, StatusCode::UNAUTHORIZED);
    let real_now = clock.now();
    // The clock steps a day ahead; other revocations happen meanwhile.
    clock.advance(DAY);
    store.revoke_token("other", i64::MAX / 2).await.unwrap();
    store.revoke_session("other", i64::MAX / 2).await.unwrap();
    // The clock is corrected: the stolen token is inside its lifetime again.
    clock.set(Timestamp::from_millis(real_now.millis() + 1000));
    assert_eq!(
        f.me(&stolen.token).await,
        StatusCode::UNAUTHORIZED,
        "a revoked token came back after the clock stepped forward and back"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 1);
}
