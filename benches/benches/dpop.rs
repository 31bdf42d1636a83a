//! The cost of DPoP (RFC 9449) through `JwtLayer`, in one run: a request
//! with a bearer token and one with a DPoP-bound token and a fresh proof,
//! both ES256 (the proof too), the verified-token cache on, in process
//! (the router called directly) and over a real loopback socket (hyper
//! client, keep-alive); the bearer request with the cache off (one
//! signature check, the cost the DPoP request adds on top of a cached
//! token) for reference. Then the replay cache's memory under a flood.
//!
//! `cargo bench -p portcullis-benches --bench dpop`
//!
//! Each DPoP request needs a proof never used before: proofs are signed
//! in criterion's setup (`iter_batched`), outside the timed part, as a
//! client signs them. The replay cache is a `MemoryReplayCache` large
//! enough for every proof of the run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BatchSize, Criterion};
use http::Request;
use portcullis::jwt::dpop::{
    DEFAULT_REPLAY_CAPACITY, DpopPolicy, DpopVerifier, MemoryReplayCache, ReplayCache,
    ReplayCacheError, sign_proof, thumbprint,
};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis_benches::call;

const ISS: &str = "https://bench.test";
const AUD: &str = "bench";
const ORIGIN: &str = "https://api.bench.test";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn me(claims: Claims) -> String {
    claims.subject().unwrap_or_default().to_owned()
}

struct Setup {
    issuer: JwtIssuer,
    client: SigningKey,
    bound: String,
    bearer: String,
}

fn setup() -> Setup {
    let issuer = JwtIssuer::builder(SigningKey::generate("k", Algorithm::ES256).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let client = SigningKey::generate("client", Algorithm::ES256).unwrap();
    let jwk = client.verifying_key().public_jwk().unwrap().clone();
    let jkt = thumbprint(&jwk).unwrap();
    let bound = issuer.token("alice").dpop_jkt(jkt).mint().unwrap().token;
    let bearer = issuer.token("alice").mint().unwrap().token;
    Setup {
        issuer,
        client,
        bound,
        bearer,
    }
}

fn app(s: &Setup, cache: usize) -> Router {
    let replay = MemoryReplayCache::new(4_000_000).key_share(4_000_000);
    let dpop = DpopVerifier::builder(ORIGIN)
        .algorithms([Algorithm::ES256])
        .replay_cache(replay)
        .build()
        .unwrap();
    let layer = JwtLayer::builder_for(&s.issuer)
        .cache(cache)
        .dpop(dpop, DpopPolicy::Accepted)
        .build()
        .unwrap();
    Router::new().route("/me", get(me)).layer(layer)
}

fn bearer_req(token: &str) -> Request<Body> {
    Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn dpop_req(s: &Setup) -> Request<Body> {
    let proof = sign_proof(
        &s.client,
        "GET",
        &format!("{ORIGIN}/me"),
        now(),
        Some(&s.bound),
        None,
    )
    .unwrap();
    Request::get("/me")
        .header("authorization", format!("DPoP {}", s.bound))
        .header("dpop", proof)
        .body(Body::empty())
        .unwrap()
}

fn in_process(c: &mut Criterion, rt: &tokio::runtime::Runtime, s: &Setup) {
    let cached = app(s, 10_000);
    let uncached = app(s, 0);
    // Both paths work before they are timed.
    rt.block_on(async {
        assert_eq!(call(&cached, bearer_req(&s.bearer)).await, 200);
        assert_eq!(call(&cached, dpop_req(s)).await, 200);
        assert_eq!(call(&uncached, bearer_req(&s.bearer)).await, 200);
    });
    let mut g = c.benchmark_group("dpop_in_process");
    g.bench_function("bearer_cache_on", |b| {
        b.to_async(rt).iter_batched(
            || bearer_req(&s.bearer),
            |req| async { black_box(call(&cached, req).await) },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("dpop_cache_on", |b| {
        b.to_async(rt).iter_batched(
            || dpop_req(s),
            |req| async { black_box(call(&cached, req).await) },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("bearer_cache_off", |b| {
        b.to_async(rt).iter_batched(
            || bearer_req(&s.bearer),
            |req| async { black_box(call(&uncached, req).await) },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn over_socket(c: &mut Criterion, rt: &tokio::runtime::Runtime, s: &Setup) {
    let (url, http) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(s, 10_000);
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (format!("http://{addr}/me"), portcullis_tests::client())
    });
    let send = |auth: String, proof: Option<String>| {
        let req = http.get(url.clone()).header("authorization", auth);
        async move {
            let mut req = req;
            if let Some(p) = proof {
                req = req.header("dpop", p);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            let _ = r.bytes().await.unwrap();
            status
        }
    };
    let mut g = c.benchmark_group("dpop_socket");
    g.bench_function("bearer_cache_on", |b| {
        b.to_async(rt).iter_batched(
            || format!("Bearer {}", s.bearer),
            |auth| send(auth, None),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("dpop_cache_on", |b| {
        b.to_async(rt).iter_batched(
            || {
                let proof = sign_proof(
                    &s.client,
                    "GET",
                    &format!("{ORIGIN}/me"),
                    now(),
                    Some(&s.bound),
                    None,
                )
                .unwrap();
                (format!("DPoP {}", s.bound), proof)
            },
            |(auth, proof)| send(auth, Some(proof)),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// The replay cache's memory under a flood of distinct proofs from many
/// keys: it fills to its capacity, then refuses, and its memory stays put.
fn flood(rt: &tokio::runtime::Runtime) {
    let cache = MemoryReplayCache::new(DEFAULT_REPLAY_CAPACITY);
    let until = now() + 60;
    let start = Instant::now();
    let (mut ok, mut full) = (0u64, 0u64);
    let mut memory = Vec::new();
    rt.block_on(async {
        for i in 0..(3 * DEFAULT_REPLAY_CAPACITY as u64) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i % 50_000).to_be_bytes());
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_be_bytes());
            match cache.first_use_by_key(&key, &id, until).await {
                Ok(true) => ok += 1,
                Err(ReplayCacheError::Full) => full += 1,
                other => panic!("{other:?}"),
            }
            if (i + 1) % DEFAULT_REPLAY_CAPACITY as u64 == 0 {
                memory.push((i + 1, cache.len(), cache.memory_bytes()));
            }
        }
    });
    println!(
        "\nreplay cache flood: {} proofs from 50 000 keys in {:?}: {ok} remembered, {full} refused (503)",
        3 * DEFAULT_REPLAY_CAPACITY,
        start.elapsed()
    );
    for (sent, len, bytes) in memory {
        println!(
            "  after {sent:>7} proofs: {len:>6} entries, {bytes:>9} bytes ({:.1} bytes/entry)",
            bytes as f64 / len as f64
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = setup();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    in_process(&mut c, &rt, &s);
    over_socket(&mut c, &rt, &s);
    c.final_summary();
    flood(&rt);
}
