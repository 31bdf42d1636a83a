//! `load compare`: every contender, `--runs` times, as ratios to the
//! baseline of the same run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::Flags;
use crate::apps::{CONTENDERS, Contender};
use crate::client;
use crate::redis::Redis;

/// CPU time the process has run, all threads, in nanoseconds
/// (`/proc/<pid>/task/*/schedstat`, first field).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": mem_kb / 1024 / 1024,
        "kernel": out("uname", &["-r"]),
        "rustc": out("rustc", &["-V"]),
        "redis": out("redis-server", &["--version"]),
        "loadavg": loadavg(),
    })
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A contender's server, pinned, killed on drop.
pub struct Server {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(name: &str, cpu: &str, extra: &[String]) -> Self {
        Self::start_wrapped(name, cpu, extra, &[])
    }

    /// Like [`Server::start`], the server's command prefixed by `wrap`
    /// (valgrind).
    pub fn start_wrapped(name: &str, cpu: &str, extra: &[String], wrap: &[String]) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new("taskset")
            .args(["-c", cpu])
            .args(wrap)
            .arg(exe)
            .args(["serve", name])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server (taskset)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server output");
        let port: u16 = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server {name} did not start: {line:?}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (valgrind writes its profile on the way out).
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in and returns the credential header the contender gave.
pub async fn login(addr: SocketAddr) -> Vec<(String, String)> {
    let resp = client::once(addr, &client::request("POST", "/login", &[]))
        .await
        .expect("login");
    assert_eq!(resp.status, 200, "login refused");
    if let Some((_, v)) = resp.headers.iter().find(|(k, _)| k == "set-cookie") {
        let pair = v.split(';').next().unwrap_or_default().to_owned();
        return vec![("cookie".into(), pair)];
    }
    let body = String::from_utf8(resp.body).expect("token");
    if body.split('.').count() == 3 {
        return vec![("authorization".into(), format!("Bearer {body}"))];
    }
    Vec::new()
}

pub struct Measured {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub cpu_us_per_req: f64,
    pub requests: usize,
    pub errors: u64,
    pub redis_cmds_per_req: Option<f64>,
    /// The probe's growth per request ([`measure_probed`]).
    pub probe_per_req: Option<f64>,
    pub samples: Vec<client::Sample>,
    /// Responses received, warm-up included.
    pub total: u64,
}

pub struct LoadOpts {
    pub conns: usize,
    pub warmup: Duration,
    pub window: Duration,
}

pub async fn measure(
    server: &Server,
    path: &str,
    headers: &[(String, String)],
    opts: &LoadOpts,
    redis: Option<&Redis>,
) -> Measured {
    measure_probed(
        server,
        path,
        std::slice::from_ref(&headers.to_vec()),
        opts,
        redis,
        None,
    )
    .await
}

/// Like [`measure`], with one credential per connection (connection `i`
/// sends `credentials[i % len]`), and `probe` (a counter such as a
/// database server's CPU time) read when the window opens and closes: its
/// growth per request lands in [`Measured::probe_per_req`].
pub async fn measure_probed(
    server: &Server,
    path: &str,
    credentials: &[Vec<(String, String)>],
    opts: &LoadOpts,
    redis: Option<&Redis>,
    probe: Option<&(dyn Fn() -> u64 + Sync)>,
) -> Measured {
    // One checked request first: the credentials must work.
    let reqs: Vec<Vec<u8>> = credentials
        .iter()
        .map(|h| client::request("GET", path, h))
        .collect();
    let check = client::once(server.addr, &reqs[0])
        .await
        .expect("first request");
    assert_eq!(
        check.status,
        200,
        "{path} refused: {}",
        String::from_utf8_lossy(&check.body)
    );
    let pid = server.pid();
    let cpu = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let cmds = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let probed = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let (c0, c1, r0, r1) = (
        Arc::clone(&cpu),
        Arc::clone(&cpu),
        Arc::clone(&cmds),
        Arc::clone(&cmds),
    );
    let (p0, p1) = (Arc::clone(&probed), Arc::clone(&probed));
    let out = client::run(
        server.addr,
        reqs,
        opts.conns,
        opts.warmup,
        opts.window,
        move || {
            c0[0].store(cpu_ns(pid), Ordering::SeqCst);
            if let Some(r) = redis {
                r0[0].store(r.commands_processed(), Ordering::SeqCst);
            }
            if let Some(p) = probe {
                p0[0].store(p(), Ordering::SeqCst);
            }
        },
        move || {
            c1[1].store(cpu_ns(pid), Ordering::SeqCst);
            if let Some(r) = redis {
                r1[1].store(r.commands_processed(), Ordering::SeqCst);
            }
            if let Some(p) = probe {
                p1[1].store(p(), Ordering::SeqCst);
            }
        },
    )
    .await
    .expect("load run");
    let mut lat: Vec<u32> = out.samples.iter().map(|s| s.latency_ns).collect();
    lat.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let n = lat.len() as f64;
    let cpu_ns = cpu[1]
        .load(Ordering::SeqCst)
        .saturating_sub(cpu[0].load(Ordering::SeqCst));
    #[allow(clippy::cast_precision_loss)]
    let redis_cmds_per_req = redis.map(|_| {
        // INFO itself is a command: subtract the one sent at the start.
        let d = cmds[1]
            .load(Ordering::SeqCst)
            .saturating_sub(cmds[0].load(Ordering::SeqCst) + 1);
        d as f64 / n
    });
    #[allow(clippy::cast_precision_loss)]
    let probe_per_req = probe.map(|_| {
        probed[1]
            .load(Ordering::SeqCst)
            .saturating_sub(probed[0].load(Ordering::SeqCst)) as f64
            / n
    });
    #[allow(clippy::cast_precision_loss)]
    Measured {
        probe_per_req,
        rps: n / out.window.as_secs_f64(),
        p50_us: client::quantile_us(&lat, 0.50),
        p99_us: client::quantile_us(&lat, 0.99),
        p999_us: client::quantile_us(&lat, 0.999),
        cpu_us_per_req: cpu_ns as f64 / 1000.0 / n,
        requests: lat.len(),
        errors: out.errors,
        redis_cmds_per_req,
        samples: out.samples,
        total: out.total,
    }
}

/// Total instructions in a callgrind profile.
fn callgrind_total(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `compare --callgrind DIR`: each server once under callgrind, collecting
/// only inside tokio's task polls (the connections: parsing, the layers,
/// the handler, writing the response; not start-up), divided by the
/// responses the client received. Userland instructions per request,
/// repeatable whatever else the machine runs.
fn callgrind(flags: &Flags, dir: &str) {
    let secs: u64 = flags.num("secs", 4);
    let server_cpu = flags.get("server-cpu").unwrap_or("0").to_owned();
    let other_cpu = flags.get("client-cpu").unwrap_or("1").to_owned();
    let out_dir = PathBuf::from(flags.get("out").unwrap_or("benches/results"));
    std::fs::create_dir_all(&out_dir).expect("out dir");
    std::fs::create_dir_all(dir).expect("callgrind dir");
    let only: Option<Vec<&str>> = flags.get("only").map(|s| s.split(',').collect());
    let redis = Redis::start(Some(&other_cpu));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = LoadOpts {
        conns: flags.num("conns", 64),
        warmup: Duration::from_millis(500),
        window: Duration::from_secs(secs),
    };
    let mut rows = Vec::new();
    for c in CONTENDERS
        .iter()
        .filter(|c| {
            only.as_ref()
                .is_none_or(|o| o.contains(&c.name) || c.name == "baseline")
        })
        .filter(|c| !c.needs_redis || redis.is_some())
    {
        if c.name == "baseline" {
            continue;
        }
        let wrap = |file: &PathBuf| {
            vec![
                "valgrind".to_owned(),
                "--tool=callgrind".to_owned(),
                "-q".to_owned(),
                "--toggle-collect=*run_task*".to_owned(),
                format!("--callgrind-out-file={}", file.display()),
            ]
        };
        let mut extra = Vec::new();
        if let (true, Some(r)) = (c.needs_redis, &redis) {
            extra = vec!["--redis".to_owned(), r.url()];
        }
        // The contender, then the baseline with the very same requests.
        let file = PathBuf::from(dir).join(format!("{}.out", c.name));
        let server = Server::start_wrapped(c.name, &server_cpu, &extra, &wrap(&file));
        let (headers, m) = rt.block_on(async {
            let headers = login(server.addr).await;
            let m = measure(&server, c.path, &headers, &opts, None).await;
            (headers, m)
        });
        server.terminate();
        let base_file = PathBuf::from(dir).join(format!("baseline-for-{}.out", c.name));
        let server = Server::start_wrapped("baseline", &server_cpu, &[], &wrap(&base_file));
        let b = rt.block_on(async {
            let _ = login(server.addr).await;
            measure(&server, c.path, &headers, &opts, None).await
        });
        server.terminate();
        // The login and the checked first request are inside too.
        #[allow(clippy::cast_precision_loss)]
        let per =
            |file: &PathBuf, n: u64| callgrind_total(file).unwrap_or(0) as f64 / (n + 2) as f64;
        let (mine, base) = (per(&file, m.total), per(&base_file, b.total));
        eprintln!(
            "callgrind {:38} {mine:>9.0} instructions/request, baseline with the same requests {base:>7.0}",
            c.name
        );
        rows.push(json!({
            "contender": c.name,
            "instructions_per_request": mine,
            "baseline_instructions_per_request": base,
            "requests": m.total + 2,
        }));
    }
    let path = out_dir.join("callgrind.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({ "rows": rows })).expect("json"),
    )
    .expect("write");
    eprintln!("wrote {}", path.display());
}

pub fn run(flags: &Flags) {
    if let Some(dir) = flags.get("callgrind") {
        callgrind(flags, dir);
        return;
    }
    let runs: usize = flags.num("runs", 3);
    let opts = LoadOpts {
        conns: flags.num("conns", 64),
        warmup: Duration::from_millis(flags.num("warmup-ms", 1000)),
        window: Duration::from_millis(flags.num("secs-ms", 0))
            .max(Duration::from_secs(flags.num("secs", 5))),
    };
    let server_cpu = flags.get("server-cpu").unwrap_or("0").to_owned();
    let other_cpu = flags.get("client-cpu").unwrap_or("1").to_owned();
    let out_dir = PathBuf::from(flags.get("out").unwrap_or("benches/results"));
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let only: Option<Vec<&str>> = flags.get("only").map(|s| s.split(',').collect());
    let redis = Redis::start(Some(&other_cpu));
    if redis.is_none() {
        eprintln!("redis-server not found: the Redis contenders are skipped");
    }
    let contenders: Vec<&Contender> = CONTENDERS
        .iter()
        .filter(|c| {
            only.as_ref()
                .is_none_or(|o| o.contains(&c.name) || c.name == "baseline")
        })
        .filter(|c| !c.needs_redis || redis.is_some())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let machine = machine();
    let mut rows = Vec::new();
    let base = CONTENDERS
        .iter()
        .find(|c| c.name == "baseline")
        .expect("baseline");
    for run in 0..runs {
        // Rotate the order so that slow drift of the machine does not
        // always fall on the same contenders.
        let mut order: Vec<&Contender> = contenders
            .iter()
            .copied()
            .filter(|c| c.name != "baseline")
            .collect();
        let k = run * order.len() / runs.max(1);
        order.rotate_left(k);
        for c in order {
            // Each contender is measured right next to its own baseline
            // (alternating which goes first), so a burst of load from
            // elsewhere on the machine skews one pair, not every ratio.
            let pair = if run % 2 == 0 { [base, c] } else { [c, base] };
            // The contender's server first, for its credential: the
            // baseline then gets the very same request bytes (a header it
            // ignores), so the difference is the auth layer's work, not
            // HTTP parsing of a longer request.
            let mut extra = Vec::new();
            if c.needs_redis
                && let Some(r) = &redis
            {
                extra = vec!["--redis".to_owned(), r.url()];
            }
            let mut contender = Some(Server::start(c.name, &server_cpu, &extra));
            let headers = rt.block_on(login(contender.as_ref().expect("server").addr));
            for who in pair {
                let server = if who.name == "baseline" {
                    Server::start(who.name, &server_cpu, &[])
                } else {
                    contender.take().expect("contender server")
                };
                let m = rt.block_on(measure(
                    &server,
                    c.path,
                    &headers,
                    &opts,
                    redis.as_ref().filter(|_| who.needs_redis),
                ));
                drop(server);
                eprintln!(
                    "run {} {:38} {:>9.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu {:>6.2} us/req{}",
                    run + 1,
                    who.name,
                    m.rps,
                    m.p50_us,
                    m.p99_us,
                    m.cpu_us_per_req,
                    m.redis_cmds_per_req
                        .map(|x| format!("  redis cmds/req {x:.3}"))
                        .unwrap_or_default()
                );
                if m.errors > 0 {
                    eprintln!("  !! {} non-2xx answers", m.errors);
                }
                rows.push(json!({
                    "run": run + 1,
                    "pair": c.name,
                    "contender": who.name,
                    "family": who.family,
                    "about": who.about,
                    "rps": m.rps,
                    "p50_us": m.p50_us,
                    "p99_us": m.p99_us,
                    "p999_us": m.p999_us,
                    "cpu_us_per_req": m.cpu_us_per_req,
                    "requests": m.requests,
                    "errors": m.errors,
                    "redis_cmds_per_req": m.redis_cmds_per_req,
                }));
            }
        }
    }
    let doc = json!({
        "machine": machine,
        "loadavg_after": loadavg(),
        "settings": {
            "runs": runs,
            "connections": opts.conns,
            "warmup_s": opts.warmup.as_secs_f64(),
            "window_s": opts.window.as_secs_f64(),
            "server_cpu": server_cpu,
            "client_cpu": other_cpu,
        },
        "rows": rows,
    });
    let path = out_dir.join("compare.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
