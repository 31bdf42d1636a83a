//! `load report`: `compare.json`, `scaling.json` and `sql.json` to a markdown table
//! (`results.md`), a CSV (`compare.csv`) and an SVG chart.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use crate::Flags;
use crate::apps::CONTENDERS;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// One contender over the runs.
pub struct Summary {
    pub name: String,
    pub family: String,
    pub rps: Vec<f64>,
    /// Per-run ratios to the baseline of the same run.
    pub rps_ratio: Vec<f64>,
    pub cpu: Vec<f64>,
    pub cpu_ratio: Vec<f64>,
    pub cpu_over: Vec<f64>,
    pub p50: Vec<f64>,
    pub p50_ratio: Vec<f64>,
    pub p99: Vec<f64>,
    pub p99_ratio: Vec<f64>,
    pub redis_cmds: Vec<f64>,
    pub errors: u64,
}

fn f(row: &Value, k: &str) -> f64 {
    row[k].as_f64().unwrap_or(f64::NAN)
}

pub fn summarize(doc: &Value) -> Vec<Summary> {
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();
    let runs: Vec<u64> = {
        let mut r: Vec<u64> = rows.iter().filter_map(|r| r["run"].as_u64()).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    // A contender's row, and the baseline measured next to it (its pair).
    let find = |run: u64, name: &str| {
        rows.iter()
            .find(|r| r["run"].as_u64() == Some(run) && r["contender"] == name)
    };
    let base_of = |run: u64, name: &str| {
        rows.iter().find(|r| {
            r["run"].as_u64() == Some(run) && r["contender"] == "baseline" && r["pair"] == name
        })
    };
    let mut out = Vec::new();
    for c in CONTENDERS {
        let mut s = Summary {
            name: c.name.to_owned(),
            family: c.family.to_owned(),
            rps: vec![],
            rps_ratio: vec![],
            cpu: vec![],
            cpu_ratio: vec![],
            cpu_over: vec![],
            p50: vec![],
            p50_ratio: vec![],
            p99: vec![],
            p99_ratio: vec![],
            redis_cmds: vec![],
            errors: 0,
        };
        for &run in &runs {
            if c.name == "baseline" {
                // The baseline's own spread: every baseline of the run
                // against the run's median baseline.
                let all: Vec<&Value> = rows
                    .iter()
                    .filter(|r| r["run"].as_u64() == Some(run) && r["contender"] == "baseline")
                    .collect();
                let med = |k: &str| median(all.iter().map(|r| f(r, k)).collect());
                for r in &all {
                    s.rps.push(f(r, "rps"));
                    s.rps_ratio.push(f(r, "rps") / med("rps"));
                    s.cpu.push(f(r, "cpu_us_per_req"));
                    s.cpu_ratio
                        .push(f(r, "cpu_us_per_req") / med("cpu_us_per_req"));
                    s.cpu_over
                        .push(f(r, "cpu_us_per_req") - med("cpu_us_per_req"));
                    s.p50.push(f(r, "p50_us"));
                    s.p50_ratio.push(f(r, "p50_us") / med("p50_us"));
                    s.p99.push(f(r, "p99_us"));
                    s.p99_ratio.push(f(r, "p99_us") / med("p99_us"));
                }
                continue;
            }
            let (Some(r), Some(b)) = (find(run, c.name), base_of(run, c.name)) else {
                continue;
            };
            s.rps.push(f(r, "rps"));
            s.rps_ratio.push(f(r, "rps") / f(b, "rps"));
            s.cpu.push(f(r, "cpu_us_per_req"));
            s.cpu_ratio
                .push(f(r, "cpu_us_per_req") / f(b, "cpu_us_per_req"));
            s.cpu_over
                .push(f(r, "cpu_us_per_req") - f(b, "cpu_us_per_req"));
            s.p50.push(f(r, "p50_us"));
            s.p50_ratio.push(f(r, "p50_us") / f(b, "p50_us"));
            s.p99.push(f(r, "p99_us"));
            s.p99_ratio.push(f(r, "p99_us") / f(b, "p99_us"));
            if let Some(x) = r["redis_cmds_per_req"].as_f64() {
                s.redis_cmds.push(x);
            }
            s.errors += r["errors"].as_u64().unwrap_or(0);
        }
        if !s.rps.is_empty() {
            out.push(s);
        }
    }
    out
}

/// `median [min–max]` of a ratio.
fn spread(v: &[f64]) -> String {
    format!("{:.3} [{:.3}–{:.3}]", median(v.to_vec()), min(v), max(v))
}

fn by<'a>(s: &'a [Summary], name: &str) -> Option<&'a Summary> {
    s.iter().find(|x| x.name == name)
}

/// Per-run ratio of two contenders' throughput, `a / b`, each first taken
/// relative to the baseline measured next to it (so a burst of load from
/// elsewhere during one of them does not decide the ratio).
fn pair(s: &[Summary], a: &str, b: &str) -> Option<Vec<f64>> {
    let (a, b) = (by(s, a)?, by(s, b)?);
    Some(
        a.rps_ratio
            .iter()
            .zip(&b.rps_ratio)
            .map(|(x, y)| x / y)
            .collect(),
    )
}

fn targets(s: &[Summary]) -> String {
    let mut out =
        String::from("| target | measured (median [min–max] over runs) | met |\n|---|---|---|\n");
    let mut line = |what: &str, v: Option<Vec<f64>>, ok: &dyn Fn(f64) -> bool| {
        if let Some(v) = v {
            let m = median(v.clone());
            let _ = writeln!(
                out,
                "| {what} | {} | {} |",
                spread(&v),
                if ok(m) { "yes" } else { "**no**" }
            );
        }
    };
    let ratio = |n: &str| by(s, n).map(|x| x.rps_ratio.clone());
    line(
        "session read, memory store >= 0.96x baseline",
        ratio("portcullis-session-memory"),
        &|m| m >= 0.96,
    );
    line(
        "request not touching the session >= 0.98x baseline",
        ratio("portcullis-session-memory-untouched"),
        &|m| m >= 0.98,
    );
    line(
        "sessions on Redis >= 1.5x tower-sessions' Redis",
        pair(s, "portcullis-session-redis", "tower-sessions-redis"),
        &|m| m >= 1.5,
    );
    line(
        "JwtLayer HS256 >= 0.72x baseline",
        ratio("portcullis-jwt-hs256"),
        &|m| m >= 0.72,
    );
    line(
        "JwtLayer HS256 ahead of jwt-authorizer HS256",
        pair(s, "portcullis-jwt-hs256", "jwt-authorizer-hs256"),
        &|m| m > 1.0,
    );
    line(
        "JwtLayer HS256 ahead of the hand-written jsonwebtoken layer",
        pair(s, "portcullis-jwt-hs256", "jsonwebtoken-hs256"),
        &|m| m > 1.0,
    );
    line(
        "JwtLayer HS256, cache off (every token verified) >= 0.72x baseline",
        ratio("portcullis-jwt-hs256-nocache"),
        &|m| m >= 0.72,
    );
    line(
        "JwtLayer HS256, cache off, ahead of jwt-authorizer HS256",
        pair(s, "portcullis-jwt-hs256-nocache", "jwt-authorizer-hs256"),
        &|m| m > 1.0,
    );
    line(
        "JwtLayer HS256, cache off, ahead of the hand-written jsonwebtoken layer",
        pair(s, "portcullis-jwt-hs256-nocache", "jsonwebtoken-hs256"),
        &|m| m > 1.0,
    );
    line(
        "ES256 with the cache >= 0.9x HS256 (cache off, every token verified)",
        pair(
            s,
            "portcullis-jwt-es256-cache",
            "portcullis-jwt-hs256-nocache",
        ),
        &|m| m >= 0.9,
    );
    line(
        "ES256 with the cache >= 0.9x HS256 with the cache (both served from it)",
        pair(s, "portcullis-jwt-es256-cache", "portcullis-jwt-hs256"),
        &|m| m >= 0.9,
    );
    if let Some(r) = by(s, "portcullis-session-redis")
        && !r.redis_cmds.is_empty()
    {
        let _ = writeln!(
            out,
            "| one Redis round trip per session request | {} commands/request | {} |",
            spread(&r.redis_cmds),
            if median(r.redis_cmds.clone()) <= 1.05 {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    if let Some(r) = by(s, "tower-sessions-redis")
        && !r.redis_cmds.is_empty()
    {
        let _ = writeln!(
            out,
            "| (tower-sessions' Redis store, for comparison) | {} commands/request | |",
            spread(&r.redis_cmds)
        );
    }
    out
}

fn table(s: &[Summary]) -> String {
    let mut out = String::from(
        "| contender | req/s | throughput vs baseline | server CPU µs/req | CPU vs baseline | p50 µs | p50 vs baseline | p99 µs | p99 vs baseline |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for x in s {
        let _ = writeln!(
            out,
            "| {}{} | {:.0} | {} | {:.2} (+{:.2}) | {} | {:.0} | {} | {:.0} | {} |",
            x.name,
            if x.errors > 0 { " (errors!)" } else { "" },
            median(x.rps.clone()),
            spread(&x.rps_ratio),
            median(x.cpu.clone()),
            median(x.cpu_over.clone()),
            spread(&x.cpu_ratio),
            median(x.p50.clone()),
            spread(&x.p50_ratio),
            median(x.p99.clone()),
            spread(&x.p99_ratio),
        );
    }
    out
}

fn scaling_md(doc: &Value) -> String {
    let mut out = String::new();
    if let Some(rows) = doc["memory_store"].as_array() {
        out.push_str("\nMemoryStore, random sessions per request (in-process, one core):\n\n| live sessions | resident bytes/session | request through SessionLayer | router alone | session cost |\n|---:|---:|---:|---:|---:|\n");
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} ns | {:.0} ns | {:.0} ns |",
                r["sessions"],
                f(r, "resident_bytes_per_session"),
                f(r, "request_ns"),
                f(r, "router_alone_ns"),
                f(r, "session_overhead_ns")
            );
        }
    }
    if let Some(rows) = doc["redis_store"].as_array() {
        out.push_str("\nRedisSessionStore (`INFO memory` used_memory growth):\n\n| live sessions | bytes/session |\n|---:|---:|\n");
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {:.0} |",
                r["sessions"],
                f(r, "used_memory_bytes_per_session")
            );
        }
    }
    if let Some(rows) = doc["revocation"].as_array() {
        out.push_str("\nJWT revocation view (token carries jti, sid, sub and ver):\n\n| revoked entries | check, not revoked | check, revoked | building the view |\n|---:|---:|---:|---:|\n");
        for r in rows {
            let hit = r["check_revoked_ns"]
                .as_f64()
                .map_or("–".to_owned(), |x| format!("{x:.0} ns"));
            let _ = writeln!(
                out,
                "| {} | {:.0} ns | {} | {:.0} ns/entry |",
                r["revoked"],
                f(r, "check_not_revoked_ns"),
                hit,
                f(r, "build_ns_per_entry")
            );
        }
    }
    let p = &doc["purge"];
    if p.is_object() {
        let _ = write!(
            out,
            "\nMemoryStore purge under load: `purge_expired` removed {} expired sessions (of {} + {}) in {:.0} ms while 64 connections read sessions. Requests that started during the purge: {} (p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs); outside it: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs.\n",
            p["removed"],
            p["live"],
            p["expired"],
            f(p, "purge_ms"),
            p["requests_during"],
            f(p, "p50_during_us"),
            f(p, "p99_during_us"),
            f(p, "max_during_us"),
            f(p, "p50_outside_us"),
            f(p, "p99_outside_us"),
            f(p, "max_outside_us"),
        );
    }
    out
}

/// Rows of `sql.json`'s session runs for one contender and operation.
fn sql_rows<'a>(rows: &'a [Value], name: &str, op: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["contender"] == name && r["op"] == op)
        .collect()
}

/// Per-run ratio of two contenders' requests/s for one operation (each run
/// measures both).
fn sql_ratio(rows: &[Value], a: &str, b: &str, op: &str) -> Vec<f64> {
    sql_rows(rows, a, op)
        .iter()
        .filter_map(|x| {
            let y = sql_rows(rows, b, op)
                .into_iter()
                .find(|y| y["run"] == x["run"])?;
            Some(f(x, "rps") / f(y, "rps"))
        })
        .collect()
}

fn sql_md(doc: &Value) -> String {
    let mut out = String::new();
    let v = &doc["versions"];
    let list = |k: &str| {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .unwrap_or_default()
    };
    let st = &doc["settings"];
    let _ = write!(
        out,
        "
SQL session stores. Versions: PostgreSQL {}, SQLite {} (libsqlite3-sys {}, one build shared by both sqlx versions); portcullis on sqlx {}, tower-sessions {} with tower-sessions-sqlx-store {} (sqlx {}: the published store is on sqlx 0.8). Settings: {} runs, {} connections, {} s warm-up + {} s measured per contender and operation; contenders' servers on CPU {}, load generator and PostgreSQL on CPU {}. Pools: {} (PostgreSQL {} connections on each side: portcullis half in its pool and half of the session store's own for loads, `read_connections`; SQLite {}). PostgreSQL: {}. SQLite: {}. READ is `GET /me` (an authenticated request that loads the session and returns the user), WRITE is `GET /write` (sets one key to a new value). Each connection has a session of its own, holding the user and one more key on both sides. Ratios are taken within each run: median [min–max] over the runs.\n\n",
        v["postgres"].as_str().unwrap_or("–"),
        v["sqlite"].as_str().unwrap_or("?"),
        list("libsqlite3-sys"),
        v["sqlx_portcullis"].as_str().unwrap_or("?"),
        list("tower-sessions"),
        list("tower-sessions-sqlx-store"),
        v["sqlx_tower_sessions"].as_str().unwrap_or("?"),
        st["runs"],
        st["connections"],
        st["warmup_s"],
        st["window_s"],
        st["server_cpu"].as_str().unwrap_or("0"),
        st["client_cpu"].as_str().unwrap_or("1"),
        st["pool_options"].as_str().unwrap_or("?"),
        st["pg_pool"],
        st["sqlite_pool"],
        st["postgres"].as_str().unwrap_or("?"),
        st["sqlite"].as_str().unwrap_or("?"),
    );
    let load = |part: &str| {
        let l = &doc[format!("{part}_loadavg")];
        format!(
            "load average before/after this part: {} / {}",
            l[0].as_str().unwrap_or("?"),
            l[1].as_str().unwrap_or("?")
        )
    };
    if let Some(rows) = doc["sessions"].as_array() {
        let _ = writeln!(out, "Session READ and WRITE ({}):\n", load("sessions"));
        out.push_str("| contender | op | req/s | vs portcullis MemoryStore | server CPU µs/req | PostgreSQL CPU µs/req | PostgreSQL statements/req | p50 µs | p99 µs | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut names: Vec<&str> = Vec::new();
        for r in rows {
            if let Some(n) = r["contender"].as_str()
                && !names.contains(&n)
            {
                names.push(n);
            }
        }
        for op in ["read", "write"] {
            for name in &names {
                let rs = sql_rows(rows, name, op);
                if rs.is_empty() {
                    continue;
                }
                let col = |k: &str| median(rs.iter().map(|r| f(r, k)).collect());
                let pg_cpu = rs
                    .iter()
                    .filter_map(|r| r["postgres_cpu_us_per_req"].as_f64())
                    .collect::<Vec<_>>();
                let statements = rs
                    .iter()
                    .filter_map(|r| r["postgres_statements_per_req"].as_f64())
                    .collect::<Vec<_>>();
                let errors: u64 = rs.iter().filter_map(|r| r["errors"].as_u64()).sum();
                let vs_mem = sql_ratio(rows, name, "portcullis-memory", op);
                let _ = writeln!(
                    out,
                    "| {name} | {op} | {:.0} | {} | {:.2} | {} | {} | {:.0} | {:.0} | {errors} |",
                    col("rps"),
                    if vs_mem.is_empty() {
                        "–".to_owned()
                    } else {
                        spread(&vs_mem)
                    },
                    col("cpu_us_per_req"),
                    if pg_cpu.is_empty() {
                        "–".to_owned()
                    } else {
                        format!("{:.2}", median(pg_cpu))
                    },
                    if statements.is_empty() {
                        "–".to_owned()
                    } else {
                        format!("{:.2}", median(statements))
                    },
                    col("p50_us"),
                    col("p99_us"),
                );
            }
        }
        let hot = |name: &str| {
            median(
                sql_rows(rows, name, "write")
                    .iter()
                    .filter_map(|r| r["postgres_hot_update_share"].as_f64())
                    .collect(),
            )
        };
        let (ours, theirs) = (hot("portcullis-pg"), hot("tower-sessions-pg"));
        if !ours.is_nan() || !theirs.is_nan() {
            let _ = writeln!(
                out,
                "\nPostgreSQL HOT updates (no index entry written) among the session table's row updates of the WRITE runs: portcullis {:.0} %, tower-sessions {:.0} %.",
                ours * 100.0,
                theirs * 100.0
            );
        }
        out.push_str("\n| target / comparison (same run) | measured (median [min–max] over runs) | met |\n|---|---|---|\n");
        let mut line = |what: &str, v: Vec<f64>, target: Option<f64>| {
            if v.is_empty() {
                return;
            }
            let m = median(v.clone());
            let met = match target {
                Some(t) if m >= t => "yes",
                Some(_) => "**no**",
                None => "",
            };
            let _ = writeln!(out, "| {what} | {} | {met} |", spread(&v));
        };
        line(
            "portcullis PgSessionStore READ >= 1.3x tower-sessions PostgresStore (req/s)",
            sql_ratio(rows, "portcullis-pg", "tower-sessions-pg", "read"),
            Some(1.3),
        );
        line(
            "portcullis PgSessionStore WRITE / tower-sessions PostgresStore",
            sql_ratio(rows, "portcullis-pg", "tower-sessions-pg", "write"),
            None,
        );
        line(
            "portcullis SqliteSessionStore READ / tower-sessions SqliteStore",
            sql_ratio(rows, "portcullis-sqlite", "tower-sessions-sqlite", "read"),
            None,
        );
        line(
            "portcullis SqliteSessionStore WRITE / tower-sessions SqliteStore",
            sql_ratio(rows, "portcullis-sqlite", "tower-sessions-sqlite", "write"),
            None,
        );
    }
    if let Some(r) = doc["refresh"].as_object() {
        let _ = write!(
            out,
            "\nRefresh rotation through `RefreshStore::rotate` directly (not HTTP), 64 families rotating concurrently, in a process pinned to the server core (single-threaded runtime); PostgreSQL on the other core; {}:\n\n| store | rotations/s | p50 µs | p99 µs | rotating process CPU µs/rotation | PostgreSQL CPU µs/rotation | errors |\n|---|---:|---:|---:|---:|---:|---:|\n",
            load("refresh")
        );
        for (name, label) in [
            ("pg", "PgRefreshStore"),
            ("sqlite", "SqliteRefreshStore"),
            ("memory", "MemoryRefreshStore (floor)"),
        ] {
            let Some(x) = r.get(name) else { continue };
            let _ = writeln!(
                out,
                "| {label} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} |",
                f(x, "rotations_per_s"),
                f(x, "p50_us"),
                f(x, "p99_us"),
                f(x, "cpu_us_per_rotation"),
                x["postgres_cpu_us_per_rotation"]
                    .as_f64()
                    .map_or("–".to_owned(), |v| format!("{v:.2}")),
                x["errors"],
            );
        }
    }
    if let Some(rows) = doc["size"].as_array() {
        let _ = write!(
            out,
            "\nBytes per session on disk (the user and one more key per session; ours also keeps the SHA-256 of the user id with a user index, and its expiry index; PostgreSQL: `pg_total_relation_size` of the table with indexes and TOAST; SQLite: the file after a WAL checkpoint; {}):\n\n| store | sessions | bytes/session |\n|---|---:|---:|\n",
            load("size")
        );
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} |",
                r["contender"].as_str().unwrap_or("?"),
                r["sessions"],
                f(r, "bytes_per_session"),
            );
        }
    }
    for p in doc["purge"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "\n{} purge under load: `purge_expired()` removed {} expired sessions (of {} live + {} expired) in {:.0} ms ({:.0} rows/s; batches of {} with {} ms pauses) while {} connections read a session. Requests that started during the purge: {} (p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs); outside it, same run: {} (p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs); errors {}; `purge_expired()` calls that failed and were made again: {}. ({})\n",
            if p["backend"] == "pg" {
                "PgSessionStore"
            } else {
                "SqliteSessionStore"
            },
            p["removed"],
            p["live"],
            p["expired"],
            f(p, "purge_ms"),
            f(p, "rows_per_s"),
            p["batch"],
            f(p, "pause_ms"),
            p["connections"],
            p["requests_during"],
            f(p, "p50_during_us"),
            f(p, "p99_during_us"),
            f(p, "max_during_us"),
            p["requests_outside"],
            f(p, "p50_outside_us"),
            f(p, "p99_outside_us"),
            f(p, "max_outside_us"),
            p["errors"],
            p["failed_calls"],
            load("purge"),
        );
    }
    out
}

fn callgrind_md(doc: &Value) -> String {
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();
    let mut out = String::from(
        "\nUserland instructions per request in the server (callgrind, collecting inside tokio's task polls only, so start-up is left out; repeatable whatever else the machine runs). Each contender next to the baseline app answering the very same requests. Under valgrind SHA-2 runs without the CPU's SHA extensions, so hashing counts for more here than it costs on the CPU:\n\n| contender | instructions/request | baseline, same requests | added by the auth layer |\n|---|---:|---:|---:|\n",
    );
    for r in &rows {
        let v = f(r, "instructions_per_request");
        let b = f(r, "baseline_instructions_per_request");
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:+.0} |",
            r["contender"].as_str().unwrap_or("?"),
            v,
            b,
            v - b
        );
    }
    out
}

fn csv(doc: &Value) -> String {
    let mut out = String::from(
        "run,contender,family,rps,p50_us,p99_us,p999_us,cpu_us_per_req,requests,errors,redis_cmds_per_req\n",
    );
    for r in doc["rows"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{},{},{},{:.1},{:.2},{:.2},{:.2},{:.3},{},{},{}",
            r["run"],
            r["contender"].as_str().unwrap_or(""),
            r["family"].as_str().unwrap_or(""),
            f(r, "rps"),
            f(r, "p50_us"),
            f(r, "p99_us"),
            f(r, "p999_us"),
            f(r, "cpu_us_per_req"),
            r["requests"],
            r["errors"],
            r["redis_cmds_per_req"]
                .as_f64()
                .map_or(String::new(), |x| format!("{x:.3}"))
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars: throughput as a ratio of the baseline (median), with
/// the min–max of the runs as a whisker; then the server CPU per request.
pub fn svg(s: &[Summary], machine: &str) -> String {
    let bar_h = 22.0;
    let gap = 8.0;
    let left = 290.0;
    let width = 1040.0;
    let plot_w = 400.0;
    let cpu_left = left + plot_w + 80.0;
    let cpu_w = width - cpu_left - 100.0;
    let top = 78.0;
    // CPU bars beyond this are drawn cut (ES256 without a cache).
    let cpu_cap = 30.0;
    #[allow(clippy::cast_precision_loss)]
    let height = top + s.len() as f64 * (bar_h + gap) + 64.0;
    let max_cpu = s
        .iter()
        .map(|x| median(x.cpu.clone()))
        .fold(0.0, f64::max)
        .min(cpu_cap);
    let color = |fam: &str| match fam {
        "baseline" => "#9e9e9e",
        "portcullis" => "#1f6feb",
        "floor" => "#8250df",
        _ => "#d1242f",
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        o,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">GET /me, 64 connections, server pinned to one core: throughput and server CPU per request</text>"#
    );
    let _ = writeln!(
        o,
        r##"<text x="10" y="38" fill="#555">{}</text>"##,
        esc(machine)
    );
    let _ = writeln!(
        o,
        r#"<text x="{left}" y="62" font-weight="bold">requests/s ÷ baseline (median; whisker: min–max)</text>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{cpu_left}" y="62" font-weight="bold">server CPU µs per request (median)</text>"#
    );
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = left + t * plot_w;
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            top - 4.0,
            height - 50.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{t:.2}</text>"##,
            height - 36.0
        );
    }
    for (i, x) in s.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let y = top + i as f64 * (bar_h + gap);
        let m = median(x.rps_ratio.clone()).min(1.2);
        let (lo, hi) = (min(&x.rps_ratio).min(1.2), max(&x.rps_ratio).min(1.2));
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + bar_h * 0.7,
            esc(&x.name)
        );
        let _ = writeln!(
            o,
            r#"<rect x="{left}" y="{y:.1}" width="{:.1}" height="{bar_h}" fill="{}"/>"#,
            m * plot_w,
            color(&x.family)
        );
        let wy = y + bar_h / 2.0;
        let _ = writeln!(
            o,
            r##"<line x1="{:.1}" y1="{wy:.1}" x2="{:.1}" y2="{wy:.1}" stroke="#000" stroke-width="1.5"/>"##,
            left + lo * plot_w,
            left + hi * plot_w
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{m:.2}</text>"#,
            left + hi.max(m) * plot_w + 4.0,
            y + bar_h * 0.7
        );
        let c = median(x.cpu.clone());
        let w = c.min(cpu_cap) / max_cpu * cpu_w;
        let _ = writeln!(
            o,
            r#"<rect x="{cpu_left}" y="{y:.1}" width="{w:.1}" height="{bar_h}" fill="{}" opacity="0.75"/>"#,
            color(&x.family)
        );
        let cut = if c > cpu_cap { " ≫" } else { "" };
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{c:.1}{cut}</text>"#,
            cpu_left + w + 4.0,
            y + bar_h * 0.7
        );
    }
    let ly = height - 12.0;
    let legend = [
        ("portcullis", "portcullis"),
        ("peer", "peer crate"),
        ("floor", "hand-written jsonwebtoken::decode layer"),
        ("baseline", "no auth"),
    ];
    let mut x = 10.0;
    for (fam, label) in legend {
        let _ = writeln!(
            o,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"#,
            ly - 10.0,
            color(fam),
            x + 16.0
        );
        #[allow(clippy::cast_precision_loss)]
        let step = 40.0 + label.len() as f64 * 7.0;
        x += step;
    }
    o.push_str("</svg>\n");
    o
}

pub fn run(flags: &Flags) {
    let dir = PathBuf::from(flags.get("out").unwrap_or("benches/results"));
    let read = |name: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    let mut md = String::new();
    if let Some(doc) = read("compare.json") {
        let s = summarize(&doc);
        let m = &doc["machine"];
        let machine = format!(
            "{} ({} cores), {} GiB, Linux {}, {}; load average before/after: {} / {}",
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["memory_gib"],
            m["kernel"].as_str().unwrap_or("?"),
            m["rustc"].as_str().unwrap_or("?"),
            m["loadavg"].as_str().unwrap_or("?"),
            doc["loadavg_after"].as_str().unwrap_or("?"),
        );
        let st = &doc["settings"];
        let _ = writeln!(
            md,
            "Machine: {machine}.\n\nSettings: {} runs, {} connections, {} s warm-up + {} s measured per server; server on CPU {}, load generator (and Redis) on CPU {}. In every run each contender is measured right next to a baseline of its own, and its ratios are to that baseline: median [min–max] over the runs (baseline row: each baseline against the run's median baseline).\n",
            st["runs"],
            st["connections"],
            st["warmup_s"],
            st["window_s"],
            st["server_cpu"].as_str().unwrap_or("0"),
            st["client_cpu"].as_str().unwrap_or("1")
        );
        md.push_str(&table(&s));
        md.push_str("\nTargets:\n\n");
        md.push_str(&targets(&s));
        std::fs::write(dir.join("compare.csv"), csv(&doc)).expect("csv");
        if let Some(path) = flags.get("svg") {
            let short = format!(
                "{}, {} cores; {} runs; server CPU {}, client CPU {}",
                m["cpu"].as_str().unwrap_or("?"),
                m["cores"],
                st["runs"],
                st["server_cpu"].as_str().unwrap_or("0"),
                st["client_cpu"].as_str().unwrap_or("1")
            );
            if let Some(parent) = PathBuf::from(path).parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::write(path, svg(&s, &short)).expect("svg");
            eprintln!("wrote {path}");
        }
    }
    if let Some(doc) = read("callgrind.json") {
        md.push_str(&callgrind_md(&doc));
    }
    if let Some(doc) = read("scaling.json") {
        md.push_str("\nScaling:\n");
        md.push_str(&scaling_md(&doc));
    }
    if let Some(doc) = read("sql.json") {
        md.push_str(&sql_md(&doc));
    }
    std::fs::write(dir.join("results.md"), &md).expect("md");
    println!("{md}");
}
