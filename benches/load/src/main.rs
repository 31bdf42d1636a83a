//! The side-by-side load comparison and the scaling benchmarks (issue 9).
//!
//! Run everything with `scripts/bench`. By hand:
//!
//! ```text
//! load compare --runs 3 --secs 5 --conns 64 --out benches/results
//! load scaling --out benches/results
//! load sql     --runs 3 --secs 3 --out benches/results   (PostgreSQL, SQLite)
//! load report  --out benches/results --svg docs/images/perf.svg
//! load serve <contender> [--redis URL]     (one contender's server)
//! ```
//!
//! `compare` starts each contender's server pinned to `--server-cpu`
//! (default 0) with `taskset`, runs the load generator on the core it was
//! itself pinned to, and reads the server's CPU time from
//! `/proc/<pid>/task/*/schedstat`.

mod apps;
mod client;
mod compare;
mod inproc;
mod pg;
mod redis;
mod report;
mod scaling;
mod sql;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `--key value` flags after the subcommand.
pub struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> (Vec<String>, Self) {
        let mut pos = Vec::new();
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(k) = a.strip_prefix("--") {
                if k == "bench" {
                    continue; // added by `cargo bench`
                }
                let v = it.next().cloned().unwrap_or_default();
                map.insert(k.to_owned(), v);
            } else {
                pos.push(a.clone());
            }
        }
        (pos, Self(map))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        self.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
}

fn serve(name: &str, flags: &Flags) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = if name == "purge" {
            scaling::purge_server(flags).await
        } else if name.starts_with("sql-") {
            sql::build(name, flags).await
        } else {
            apps::build(name, flags.get("redis")).await
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "READY {port}");
            let _ = out.flush();
        }
        axum::serve(listener, app).await.expect("serve");
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (pos, flags) = Flags::parse(&args);
    match pos.first().map(String::as_str) {
        Some("serve") => serve(pos.get(1).map_or("baseline", String::as_str), &flags),
        Some("compare") => compare::run(&flags),
        Some("scaling") => scaling::run(&flags),
        Some("report") => report::run(&flags),
        Some("sql") => sql::run(&flags),
        Some("sql-worker") => sql::worker(pos.get(1).map_or("", String::as_str), &flags),
        Some("inproc") => inproc::run(pos.get(1).map_or("baseline", String::as_str), &flags),
        Some("list") => {
            for c in apps::CONTENDERS {
                println!("{:40} {}", c.name, c.about);
            }
        }
        _ => {
            eprintln!("usage: load compare|scaling|sql|report|serve <contender>|list [--flags]");
            std::process::exit(2);
        }
    }
}
