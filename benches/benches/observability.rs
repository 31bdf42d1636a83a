//! The cost of observability: a session read (a logged-in request through
//! `SessionLayer` on `MemoryStore`, the `session` bench's `read` case) and
//! a JWT check (HS256, verified-token cache on, the `jwt` bench's
//! `layer_cache/HS256`), each with events off (`Events::default()`), with
//! events on (one handle: `OtelRecorder` on an `SdkMeterProvider` with a
//! periodic reader and exporter, default decision sampling, an audit trail
//! drained by a task, `client_ip` and `route` set), and the router without
//! the layer, in one run.
//!
//! `cargo bench -p portcullis-benches --bench observability`
//!
//! The machine is shared and noisy, so the run is made of rounds
//! (`OBS_ROUNDS`, default 7); in each round every function is measured
//! once, off and on next to each other in alternating order. The summary
//! at the end gives, per round, criterion's median time per request of
//! each function and the on/off ratio, then the median and the range of
//! the ratios over the rounds.
//!
//! Then a paired measurement, finer than criterion's seconds-long
//! windows: `OBS_PAIRED_ROUNDS` (default 15) rounds of 100 pairs of
//! blocks of 2 000 requests, off and on in alternating order, plus "on"
//! as a candidate change would make it (`OBS_CANDIDATE`: `notrace`, the
//! default, or `nocontext`: see `Observability::candidate`). A round's ratio is the median of its pairs' ratios:
//! both halves of a pair ran within milliseconds of each other, under the
//! same load.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use criterion::Criterion;
use portcullis::events::Events;
use portcullis::session::SessionConfig;
use portcullis_benches::jwt_app::Jwt;
use portcullis_benches::observability::{Observability, served};
use portcullis_benches::{call, session_app};

type MakeRequest = Box<dyn Fn() -> http::Request<axum::body::Body>>;

/// The apps of one case and how to make their requests (the same
/// request, but each session app knows its own cookie).
struct Case {
    name: &'static str,
    off: Router,
    on: Router,
    /// "on" as the candidate change makes it.
    fast: Router,
    baseline: Router,
    off_req: MakeRequest,
    on_req: MakeRequest,
    fast_req: MakeRequest,
}

/// ns per request of `n` requests of `app`.
fn block(rt: &tokio::runtime::Runtime, app: &Router, req: &MakeRequest, n: u32) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            black_box(call(app, req()).await);
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
    })
}

fn min_max(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// The paired measurement of one case (see the crate docs).
fn paired(rt: &tokio::runtime::Runtime, case: &Case, rounds: usize, candidate: &str) {
    const PAIRS: usize = 100;
    const N: u32 = 2_000;
    println!(
        "\n{} (paired: {PAIRS} pairs of {N}-request blocks per round; ns/request: medians of the blocks)\n",
        case.name
    );
    println!("| round | off | on | on/off | on, {candidate} | its ratio to off |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let (mut ratios, mut fast_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut off, mut on, mut fast) = (Vec::new(), Vec::new(), Vec::new());
        let (mut r, mut rf) = (Vec::new(), Vec::new());
        for pair in 0..PAIRS {
            let (o, a, f) = if (pair + round) % 2 == 0 {
                let o = block(rt, &case.off, &case.off_req, N);
                let a = block(rt, &case.on, &case.on_req, N);
                let f = block(rt, &case.fast, &case.fast_req, N);
                (o, a, f)
            } else {
                let f = block(rt, &case.fast, &case.fast_req, N);
                let a = block(rt, &case.on, &case.on_req, N);
                let o = block(rt, &case.off, &case.off_req, N);
                (o, a, f)
            };
            r.push(a / o);
            rf.push(f / o);
            off.push(o);
            on.push(a);
            fast.push(f);
        }
        let (ratio, fast_ratio) = (median(&mut r), median(&mut rf));
        println!(
            "| {round} | {:.0} | {:.0} | {ratio:.4} | {:.0} | {fast_ratio:.4} |",
            median(&mut off),
            median(&mut on),
            median(&mut fast)
        );
        ratios.push(ratio);
        fast_ratios.push(fast_ratio);
    }
    let (lo, hi) = min_max(&ratios);
    let (flo, fhi) = min_max(&fast_ratios);
    println!(
        "\non/off over {rounds} rounds: median {:.4} [{lo:.4}–{hi:.4}]; {candidate}: median {:.4} [{flo:.4}–{fhi:.4}]",
        median(&mut ratios),
        median(&mut fast_ratios)
    );
}

/// Where criterion writes its estimates: `target/criterion`, found from
/// this executable (`target/release/deps/observability-…`).
fn criterion_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("criterion")
}

/// Criterion's median time per iteration (ns) of `group/function`.
fn median_ns(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn main() {
    let rounds: usize = std::env::var("OBS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let candidate = std::env::var("OBS_CANDIDATE").unwrap_or_else(|_| "notrace".into());
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (obs, fast_obs, cases) = rt.block_on(async {
        let obs = Observability::new();
        let fast_obs = Observability::candidate(&candidate);
        let session_req = |cookie: String| -> MakeRequest {
            Box::new(move || served(session_app::request("read", &cookie)))
        };
        let off = session_app::apps_with(SessionConfig::default()).await;
        let on = session_app::apps_with(SessionConfig::default().events(obs.events.clone())).await;
        let fast =
            session_app::apps_with(SessionConfig::default().events(fast_obs.events.clone())).await;
        let session = Case {
            name: "obs_session_read",
            off: off.layered,
            on: on.layered,
            fast: fast.layered,
            baseline: off.baseline,
            off_req: session_req(off.cookie),
            on_req: session_req(on.cookie),
            fast_req: session_req(fast.cookie),
        };
        let jwt = Arc::new(Jwt::new());
        let jwt_req = || -> MakeRequest {
            let jwt = Arc::clone(&jwt);
            Box::new(move || served(jwt.request()))
        };
        let jwt_case = Case {
            name: "obs_jwt_check",
            off: jwt.layered(Events::default()),
            on: jwt.layered(obs.events.clone()),
            fast: jwt.layered(fast_obs.events.clone()),
            baseline: Jwt::baseline(),
            off_req: jwt_req(),
            on_req: jwt_req(),
            fast_req: jwt_req(),
        };
        let cases = vec![session, jwt_case];
        // Every app answers its request as the handler means it to.
        for case in &cases {
            for (app, req) in [
                (&case.off, &case.off_req),
                (&case.on, &case.on_req),
                (&case.fast, &case.fast_req),
                (&case.baseline, &case.off_req),
            ] {
                assert_eq!(call(app, req()).await, 200, "{}", case.name);
            }
        }
        (obs, fast_obs, cases)
    });

    for round in 0..rounds {
        for case in &cases {
            let mut group = c.benchmark_group(case.name);
            let (off_req, on_req) = (&case.off_req, &case.on_req);
            group.bench_function(format!("baseline_r{round}"), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(call(&case.baseline, off_req()).await) });
            });
            let mut order = [("off", false), ("on", true)];
            if round % 2 == 1 {
                order.reverse();
            }
            for (mode, on) in order {
                group.bench_function(format!("{mode}_r{round}"), |b| {
                    if on {
                        b.to_async(&rt)
                            .iter(|| async { black_box(call(&case.on, on_req()).await) });
                    } else {
                        b.to_async(&rt)
                            .iter(|| async { black_box(call(&case.off, off_req()).await) });
                    }
                });
            }
            group.finish();
        }
    }
    c.final_summary();

    println!("\nobservability: per round, criterion's median ns/request");
    for case in &cases {
        println!(
            "\n{}\n\n| round | baseline | off | on | on/off |",
            case.name
        );
        println!("|---:|---:|---:|---:|---:|");
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let get = |f: &str| median_ns(&dir, case.name, &format!("{f}_r{round}"));
            if let (Some(b), Some(off), Some(on)) = (get("baseline"), get("off"), get("on")) {
                ratios.push(on / off);
                println!(
                    "| {round} | {b:.0} | {off:.0} | {on:.0} | {:.4} |",
                    on / off
                );
            }
        }
        if !ratios.is_empty() {
            let (lo, hi) = min_max(&ratios);
            println!(
                "\non/off over {} rounds: median {:.4} [{lo:.4}–{hi:.4}]",
                ratios.len(),
                median(&mut ratios)
            );
        }
    }
    let paired_rounds: usize = std::env::var("OBS_PAIRED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    if paired_rounds > 0 {
        println!("\nobservability, paired");
        for case in &cases {
            paired(&rt, case, paired_rounds, &candidate);
        }
    }

    // What the "on" apps fed the exporter and the audit trail: they were
    // observed, not idle.
    rt.block_on(tokio::task::yield_now());
    println!("\nexported (sums; histograms: counts):");
    for (name, total) in obs.exported() {
        println!("  {name}: {total}");
    }
    drop(fast_obs);
    println!(
        "audit trail: {} user(s) in the recent-activity log; subscribers {:?}",
        obs.recent.users(),
        obs.events.subscribers()
    );
}
