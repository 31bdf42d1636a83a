//! `load scaling`: how the costs grow with the data.
//!
//! - MemoryStore: resident memory per session and per-request cost through
//!   `SessionLayer` with 1k, 100k and 1M live sessions (random sessions per
//!   request, so the larger tables miss the CPU caches as they would);
//! - Redis: memory per session (`INFO memory`) for the same counts;
//! - the JWT revocation view: the cost of building it and of one check with
//!   0, 10k and 1M revoked entries;
//! - MemoryStore purge: p50/p99 of requests that ran while
//!   `purge_expired` swept 1M expired sessions, against those that did not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use portcullis::core::{Clock as _, OpaqueToken, SystemClock, Timestamp};
use portcullis::jwt::RegisteredClaims;
use portcullis::jwt::revocation::{RevocationEvent, RevocationView};
use portcullis::session::{MemoryStore, SessionMetadata, SessionRecord, SessionStore};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::Flags;
use crate::apps::{PurgeState, portcullis_session_memory, purge_admin};
use crate::compare::{LoadOpts, Server, login, measure};
use crate::redis::Redis;

/// A small deterministic generator (xorshift64*), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        let x = (self.next() % n as u64) as usize;
        x
    }
    fn token(&mut self) -> OpaqueToken {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        OpaqueToken::from_bytes(b)
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// A logged-in session as `login` stores it: user id, one data key, user
/// agent and address.
pub fn record(i: usize, now: Timestamp, expired: bool) -> SessionRecord {
    let mut data = BTreeMap::new();
    data.insert("theme".to_owned(), Value::from("dark"));
    let (idle, abs) = if expired {
        (
            now - Duration::from_secs(1),
            now + Duration::from_secs(3600),
        )
    } else {
        (
            now + Duration::from_secs(1800),
            now + Duration::from_secs(12 * 3600),
        )
    };
    SessionRecord {
        user_id: Some(format!("user-{i:07}")),
        data,
        created_at: now,
        last_seen: now,
        idle_deadline: idle,
        absolute_deadline: abs,
        metadata: SessionMetadata {
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0".into(),
            ),
            ip: Some("203.0.113.7".into()),
        },
    }
}

async fn fill<S: SessionStore>(
    store: &S,
    tokens: &[OpaqueToken],
    base: usize,
    expired: bool,
    parallel: usize,
) {
    let now = SystemClock.now();
    for (chunk_no, chunk) in tokens.chunks(parallel.max(1)).enumerate() {
        let futs = chunk.iter().enumerate().map(|(j, t)| {
            let i = base + chunk_no * parallel + j;
            let rec = record(i, now, expired);
            async move {
                let _ = store
                    .create(&t.digest(), &rec, None)
                    .await
                    .expect("create session");
            }
        });
        futures_util::future::join_all(futs).await;
    }
}

fn session_request(cookie: &str) -> Request<Body> {
    Request::get("/me")
        .header("cookie", cookie)
        .body(Body::empty())
        .expect("request")
}

/// Median nanoseconds per request through `app`, over `iters` requests,
/// three rounds.
async fn per_request_ns(app: &Router, cookies: &[String], iters: usize) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..iters {
            let resp = app
                .clone()
                .oneshot(session_request(&cookies[i % cookies.len()]))
                .await
                .expect("call");
            assert!(resp.status().is_success(), "status {}", resp.status());
            drop(resp);
        }
        #[allow(clippy::cast_precision_loss)]
        rounds.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[1]
}

fn memory_store(counts: &[usize], iters: usize) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = Vec::new();
    for &n in counts {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
        let tokens: Vec<OpaqueToken> = (0..n).map(|_| rng.token()).collect();
        let cookie_name = portcullis::session::SessionConfig::default()
            .cookie_config()
            .full_name()
            .to_owned();
        // Requests hit random sessions across the whole table.
        let cookies: Vec<String> = (0..8192)
            .map(|_| format!("{cookie_name}={}", tokens[rng.below(n)].to_encoded()))
            .collect();
        let store = MemoryStore::new().max_sessions(usize::MAX);
        let before = rss_bytes();
        let t = Instant::now();
        rt.block_on(fill(&store, &tokens, 0, false, 1));
        let fill_s = t.elapsed().as_secs_f64();
        let after = rss_bytes();
        #[allow(clippy::cast_precision_loss)]
        let per_session = after.saturating_sub(before) as f64 / n as f64;
        // `with_state` turns handlers into routes once, as `axum::serve` does.
        let app: Router = portcullis_session_memory(store.clone()).with_state(());
        let base: Router = Router::new()
            .route("/me", axum::routing::get(|| async { "user-0000000" }))
            .with_state(());
        let (layer_ns, base_ns) = rt.block_on(async {
            let _ = per_request_ns(&app, &cookies, iters / 4).await; // warm
            let l = per_request_ns(&app, &cookies, iters).await;
            let b = per_request_ns(&base, &cookies, iters).await;
            (l, b)
        });
        eprintln!(
            "memory store {n:>8} sessions: {per_session:>6.0} B/session resident, request {layer_ns:>6.0} ns (router alone {base_ns:>5.0} ns, session +{:.0} ns), fill {fill_s:.2} s",
            layer_ns - base_ns
        );
        out.push(json!({
            "sessions": n,
            "resident_bytes_per_session": per_session,
            "request_ns": layer_ns,
            "router_alone_ns": base_ns,
            "session_overhead_ns": layer_ns - base_ns,
            "fill_s": fill_s,
        }));
        drop(app);
        drop(store);
    }
    out
}

fn redis_store(redis: &Redis, counts: &[usize]) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = Vec::new();
    for &n in counts {
        let _ = redis.command(&["FLUSHALL"]);
        let backend = portcullis_redis::RedisConfig::new(redis.url())
            .key_prefix("bench")
            .build()
            .expect("redis config");
        let store = portcullis_redis::RedisSessionStore::new(backend);
        let mut rng = Rng(0x5851_F42D_4C95_7F2D ^ n as u64);
        let tokens: Vec<OpaqueToken> = (0..n).map(|_| rng.token()).collect();
        let before = redis.used_memory();
        let t = Instant::now();
        rt.block_on(fill(&store, &tokens, 0, false, 256));
        let fill_s = t.elapsed().as_secs_f64();
        let after = redis.used_memory();
        let keys = redis
            .command(&["DBSIZE"])
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let per_session = after.saturating_sub(before) as f64 / n as f64;
        eprintln!(
            "redis        {n:>8} sessions: {per_session:>6.0} B/session (INFO used_memory), {keys} keys, fill {fill_s:.1} s"
        );
        out.push(json!({
            "sessions": n,
            "used_memory_bytes_per_session": per_session,
            "keys": keys,
            "fill_s": fill_s,
        }));
    }
    let _ = redis.command(&["FLUSHALL"]);
    out
}

fn claims(json: &str) -> RegisteredClaims {
    serde_json::from_str(json).expect("claims")
}

fn revocation(counts: &[usize], iters: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for &n in counts {
        let view = RevocationView::default();
        let exp = i64::try_from(crate::unix_us() / 1_000_000).unwrap_or(0) + 3600;
        let events: Vec<RevocationEvent> = (0..n)
            .map(|i| RevocationEvent::Session {
                sid: format!("fam-{i:016x}"),
                expires_at: exp,
            })
            .collect();
        let t = Instant::now();
        view.replace_all(&events);
        let build = t.elapsed();
        // Live traffic: tokens whose family is not revoked (the common
        // case), every one with jti, sid and sub, so all three tables are
        // consulted.
        let live: Vec<RegisteredClaims> = (0..1024)
            .map(|i| {
                claims(&format!(
                    r#"{{"sub":"user-{i}","jti":"jti-{i}","sid":"live-{i:012x}","ver":0}}"#
                ))
            })
            .collect();
        let revoked: Vec<RegisteredClaims> = (0..1024)
            .map(|i| {
                claims(&format!(
                    r#"{{"sub":"user-{i}","jti":"jti-{i}","sid":"fam-{:016x}","ver":0}}"#,
                    (i * 7919) % n.max(1)
                ))
            })
            .collect();
        let time = |set: &[RegisteredClaims]| {
            let t = Instant::now();
            let mut hits = 0usize;
            for i in 0..iters {
                hits += usize::from(
                    view.check(std::hint::black_box(&set[i % set.len()]))
                        .is_some(),
                );
            }
            std::hint::black_box(hits);
            #[allow(clippy::cast_precision_loss)]
            let ns = t.elapsed().as_nanos() as f64 / iters as f64;
            (ns, hits)
        };
        let (miss_ns, miss_hits) = time(&live);
        let (hit_ns, hits) = if n > 0 { time(&revoked) } else { (f64::NAN, 0) };
        assert_eq!(miss_hits, 0);
        assert!(n == 0 || hits == iters);
        #[allow(clippy::cast_precision_loss)]
        let build_ns_per_entry = if n > 0 {
            build.as_nanos() as f64 / n as f64
        } else {
            0.0
        };
        eprintln!(
            "revocation   {n:>8} revoked: check {miss_ns:>5.0} ns (not revoked), {hit_ns:>5.0} ns (revoked); built in {:.3} s ({build_ns_per_entry:.0} ns/entry)",
            build.as_secs_f64()
        );
        out.push(json!({
            "revoked": n,
            "check_not_revoked_ns": miss_ns,
            "check_revoked_ns": if hit_ns.is_nan() { Value::Null } else { json!(hit_ns) },
            "build_s": build.as_secs_f64(),
            "build_ns_per_entry": build_ns_per_entry,
        }));
    }
    out
}

/// The server of the purge scenario: a MemoryStore holding `--live` live
/// and `--expired` expired sessions, the session app and the purge admin
/// routes.
pub async fn purge_server(flags: &Flags) -> Router {
    let live: usize = flags.num("live", 1_000_000);
    let expired: usize = flags.num("expired", 1_000_000);
    let store = MemoryStore::new().max_sessions(usize::MAX);
    let mut rng = Rng(42);
    let tokens: Vec<OpaqueToken> = (0..live).map(|_| rng.token()).collect();
    fill(&store, &tokens, 0, false, 1).await;
    let tokens: Vec<OpaqueToken> = (0..expired).map(|_| rng.token()).collect();
    fill(&store, &tokens, live, true, 1).await;
    let state = PurgeState {
        store: store.clone(),
        last: Arc::default(),
    };
    portcullis_session_memory(store).merge(purge_admin(state))
}

fn percentile(mut lat: Vec<u32>, q: f64) -> f64 {
    lat.sort_unstable();
    crate::client::quantile_us(&lat, q)
}

fn purge(flags: &Flags, server_cpu: &str) -> Value {
    let live: usize = flags.num("purge-live", 1_000_000);
    let expired: usize = flags.num("purge-expired", 1_000_000);
    let server = Server::start(
        "purge",
        server_cpu,
        &[
            "--live".into(),
            live.to_string(),
            "--expired".into(),
            expired.to_string(),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = LoadOpts {
        conns: flags.num("conns", 64),
        warmup: Duration::from_secs(1),
        window: Duration::from_secs(6),
    };
    let (m, window) = rt.block_on(async {
        let headers = login(server.addr).await;
        let addr = server.addr;
        // Start the purge 2.5 s into the 6 s window.
        let trigger = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3500)).await;
            crate::client::once(addr, &crate::client::request("POST", "/admin/purge", &[]))
                .await
                .expect("purge");
        });
        let m = measure(&server, "/me", &headers, &opts, None).await;
        trigger.await.expect("trigger");
        let mut window = None;
        for _ in 0..600 {
            let r = crate::client::once(addr, &crate::client::request("GET", "/admin/purge", &[]))
                .await
                .expect("purge stats");
            let text = String::from_utf8_lossy(&r.body).to_string();
            let v: Vec<u64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() == 3 {
                window = Some((v[0], v[1], v[2]));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (m, window)
    });
    drop(server);
    let (start, end, removed) = window.expect("purge finished");
    let (during, outside): (Vec<crate::client::Sample>, Vec<crate::client::Sample>) = m
        .samples
        .iter()
        .partition(|s| s.start_unix_us >= start && s.start_unix_us <= end);
    let during: Vec<u32> = during.iter().map(|s| s.latency_ns).collect();
    let outside: Vec<u32> = outside.iter().map(|s| s.latency_ns).collect();
    let purge_ms = (end - start) as f64 / 1000.0;
    let res = json!({
        "live": live,
        "expired": expired,
        "removed": removed,
        "purge_ms": purge_ms,
        "requests_during": during.len(),
        "p50_during_us": percentile(during.clone(), 0.5),
        "p99_during_us": percentile(during.clone(), 0.99),
        "max_during_us": percentile(during, 1.0),
        "p50_outside_us": percentile(outside.clone(), 0.5),
        "p99_outside_us": percentile(outside.clone(), 0.99),
        "max_outside_us": percentile(outside, 1.0),
    });
    eprintln!("purge: {res}");
    res
}

/// Reader stalls while `purge_expired` runs, with the reader and the purge
/// on different cores (run unpinned): what a request waits for a shard's
/// write lock. One thread loads random live sessions in a loop; the main
/// thread purges 1M expired sessions meanwhile.
fn purge_lock(flags: &Flags) -> Value {
    use std::sync::atomic::{AtomicBool, Ordering};
    let live: usize = flags.num("purge-live", 1_000_000);
    let expired: usize = flags.num("purge-expired", 1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = MemoryStore::new().max_sessions(usize::MAX);
    let mut rng = Rng(7);
    let live_tokens: Vec<OpaqueToken> = (0..live).map(|_| rng.token()).collect();
    rt.block_on(fill(&store, &live_tokens, 0, false, 1));
    let dead: Vec<OpaqueToken> = (0..expired).map(|_| rng.token()).collect();
    rt.block_on(fill(&store, &dead, live, true, 1));
    drop(dead);
    let keys: Vec<_> = (0..65_536)
        .map(|_| live_tokens[rng.below(live)].digest())
        .collect();
    drop(live_tokens);
    let stop = Arc::new(AtomicBool::new(false));
    let purging = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop, purging) = (store.clone(), Arc::clone(&stop), Arc::clone(&purging));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let (mut during, mut outside) = (Vec::new(), Vec::new());
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[i % keys.len()];
                i += 1;
                let p = purging.load(Ordering::Relaxed);
                let t = Instant::now();
                let rec = rt.block_on(store.load(key)).expect("load");
                let ns = u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX);
                assert!(rec.is_some());
                if p && purging.load(Ordering::Relaxed) {
                    during.push(ns);
                } else {
                    outside.push(ns);
                }
            }
            (during, outside)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    purging.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let removed = store.purge_expired();
    let purge = t.elapsed();
    purging.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (during, outside) = reader.join().expect("reader");
    let res = json!({
        "removed": removed,
        "purge_ms": purge.as_secs_f64() * 1000.0,
        "loads_during": during.len(),
        "load_p50_during_us": percentile(during.clone(), 0.5),
        "load_p99_during_us": percentile(during.clone(), 0.99),
        "load_p999_during_us": percentile(during.clone(), 0.999),
        "load_max_during_us": percentile(during, 1.0),
        "load_p99_outside_us": percentile(outside.clone(), 0.99),
        "load_max_outside_us": percentile(outside, 1.0),
    });
    eprintln!("purge-lock: {res}");
    res
}

fn list(flags: &Flags, key: &str, default: &str) -> Vec<usize> {
    flags
        .get(key)
        .unwrap_or(default)
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

pub fn run(flags: &Flags) {
    let out_dir = PathBuf::from(flags.get("out").unwrap_or("benches/results"));
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let server_cpu = flags.get("server-cpu").unwrap_or("0").to_owned();
    let client_cpu = flags.get("client-cpu").unwrap_or("1").to_owned();
    let parts: Vec<String> = flags
        .get("parts")
        .unwrap_or("memory,redis,revocation,purge")
        .split(',')
        .map(str::to_owned)
        .collect();
    let has = |p: &str| parts.iter().any(|x| x == p);
    let mut doc = json!({ "machine": crate::compare::machine() });
    if has("memory") {
        doc["memory_store"] = json!(memory_store(
            &list(flags, "sessions", "1000,100000,1000000"),
            flags.num("iters", 100_000)
        ));
    }
    if has("redis") {
        match Redis::start(Some(&client_cpu)) {
            Some(r) => {
                doc["redis_store"] = json!(redis_store(
                    &r,
                    &list(flags, "redis-sessions", "1000,100000,1000000")
                ))
            }
            None => eprintln!("redis-server not found: Redis scaling skipped"),
        }
    }
    if has("revocation") {
        doc["revocation"] = json!(revocation(
            &list(flags, "revoked", "0,10000,1000000"),
            flags.num("check-iters", 2_000_000)
        ));
    }
    if has("purge") {
        doc["purge"] = purge(flags, &server_cpu);
    }
    if has("purge-lock") {
        doc["purge_lock"] = purge_lock(flags);
    }
    // Parts run by separate invocations (purge-lock runs unpinned) add to
    // the same file.
    let path = out_dir.join("scaling.json");
    if let Some(old) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|_| flags.get("merge").is_some())
        && let (Some(old), Some(new)) = (old.as_object(), doc.as_object_mut())
    {
        for (k, v) in old {
            new.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
