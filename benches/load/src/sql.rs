//! `load sql`: the SQL session stores against tower-sessions' sqlx store,
//! on one throwaway PostgreSQL server and SQLite files.
//!
//! - `sessions`: session READ (`GET /me`, an authenticated request that
//!   loads the session) and session WRITE (`GET /write`, changes one key)
//!   through each contender's layer: portcullis on `MemoryStore`,
//!   `PgSessionStore` and `SqliteSessionStore`; tower-sessions 0.14 on
//!   tower-sessions-sqlx-store's `PostgresStore` and `SqliteStore`. Servers
//!   pinned to `--server-cpu`; the load generator and PostgreSQL on
//!   `--client-cpu`. Both sides get pools with the same options (no
//!   checkout ping, the same size), the same PostgreSQL server, the same
//!   SQLite settings (WAL, `synchronous=NORMAL`) and the same session
//!   payload (the user and one more key). Each connection has a session
//!   of its own.
//! - `refresh`: refresh rotations through `RefreshStore::rotate` directly
//!   (64 families rotating concurrently in a process pinned to the server
//!   core): rotations/s and the latency of one.
//! - `size`: bytes per session on disk at 100k sessions, ours and
//!   tower-sessions' (PostgreSQL: `pg_total_relation_size` of the table
//!   with its indexes and TOAST, per row; SQLite: the file after a WAL
//!   checkpoint, per row).
//! - `purge`: our store's `purge_expired()` (its batched purge) removing
//!   1M expired sessions while 64 connections read sessions: how long it
//!   takes, and the latency of the requests that ran during it against
//!   those of the same run that did not.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use futures_util::future::BoxFuture;
use portcullis::core::{
    Clock as _, Deadlines, OpaqueToken, StoreError, SystemClock, Timestamp, TokenDigest,
};
use portcullis::session::{
    MemoryStore, Session, SessionConfig, SessionLayer, SessionMetadata, SessionRecord, SessionStore,
};
use portcullis_refresh::{DeviceInfo, Family, FamilyId, RefreshStore, RotateOutcome, Rotation};
use portcullis_sql::sqlx;
use serde_json::{Value, json};
use tower_sessions_sqlx_store::sqlx as sqlx8;

use crate::Flags;
use crate::compare::{LoadOpts, Server, login, measure_probed};
use crate::pg::Pg;

/// Pool size on both sides (`Database::connect`'s: 16 on PostgreSQL, 8 on
/// SQLite).
const PG_CONNS: u32 = 16;
const SQLITE_CONNS: u32 = 8;
const ACQUIRE: Duration = Duration::from_secs(5);

/// A contender of the session runs.
pub struct SqlContender {
    pub name: &'static str,
    pub family: &'static str,
    /// `pg`, `sqlite` or `memory`.
    pub db: &'static str,
    pub about: &'static str,
}

pub const SQL_CONTENDERS: &[SqlContender] = &[
    SqlContender {
        name: "portcullis-memory",
        family: "portcullis",
        db: "memory",
        about: "SessionLayer + MemoryStore (no database: the floor)",
    },
    SqlContender {
        name: "portcullis-pg",
        family: "portcullis",
        db: "pg",
        about: "SessionLayer + PgSessionStore (sqlx 0.9)",
    },
    SqlContender {
        name: "tower-sessions-pg",
        family: "peer",
        db: "pg",
        about: "tower-sessions 0.14 + tower-sessions-sqlx-store 0.15 PostgresStore (sqlx 0.8)",
    },
    SqlContender {
        name: "portcullis-sqlite",
        family: "portcullis",
        db: "sqlite",
        about: "SessionLayer + SqliteSessionStore (sqlx 0.9)",
    },
    SqlContender {
        name: "tower-sessions-sqlite",
        family: "peer",
        db: "sqlite",
        about: "tower-sessions 0.14 + tower-sessions-sqlx-store 0.15 SqliteStore (sqlx 0.8)",
    },
];

// ---- pools: the same options on both sqlx versions ------------------------

/// Our stores' pool: half the connections of the peer's, because each
/// session store opens as many again of its own for loads
/// (`PgConfig::read_connections`), so both sides hold `PG_CONNS`.
async fn pool9_pg(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(PG_CONNS / 2)
        .acquire_timeout(ACQUIRE)
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("connect (sqlx 0.9)")
}

async fn pool8_pg(url: &str) -> sqlx8::PgPool {
    sqlx8::postgres::PgPoolOptions::new()
        .max_connections(PG_CONNS)
        .acquire_timeout(ACQUIRE)
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("connect (sqlx 0.8)")
}

async fn pool9_sqlite(path: &Path) -> sqlx::SqlitePool {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    SqlitePoolOptions::new()
        .max_connections(SQLITE_CONNS)
        .acquire_timeout(ACQUIRE)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .expect("open (sqlx 0.9)")
}

async fn pool8_sqlite(path: &Path) -> sqlx8::SqlitePool {
    use sqlx8::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    SqlitePoolOptions::new()
        .max_connections(SQLITE_CONNS)
        .acquire_timeout(ACQUIRE)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .expect("open (sqlx 0.8)")
}

async fn pg_backend(
    url: &str,
    purge: Option<portcullis_sql::PurgeConfig>,
) -> portcullis_sql::PgBackend {
    let mut config = portcullis_sql::PgConfig::new(pool9_pg(url).await)
        .read_connections(usize::try_from(PG_CONNS / 2).unwrap_or(8));
    if let Some(p) = purge {
        config = config.purge(p);
    }
    let backend = config.build().expect("pg backend");
    backend.migrate().await.expect("migrate (pg)");
    backend
}

async fn sqlite_backend(
    path: &Path,
    purge: Option<portcullis_sql::PurgeConfig>,
) -> portcullis_sql::SqliteBackend {
    let mut config = portcullis_sql::SqliteConfig::new(pool9_sqlite(path).await);
    if let Some(p) = purge {
        config = config.purge(p);
    }
    let backend = config.build().expect("sqlite backend");
    backend.migrate().await.expect("migrate (sqlite)");
    backend
}

async fn ts_pg(url: &str) -> tower_sessions_sqlx_store::PostgresStore {
    let store = tower_sessions_sqlx_store::PostgresStore::new(pool8_pg(url).await);
    store.migrate().await.expect("migrate (tower-sessions pg)");
    store
}

async fn ts_sqlite(path: &Path) -> tower_sessions_sqlx_store::SqliteStore {
    let store = tower_sessions_sqlx_store::SqliteStore::new(pool8_sqlite(path).await);
    store
        .migrate()
        .await
        .expect("migrate (tower-sessions sqlite)");
    store
}

// ---- the apps ------------------------------------------------------------

/// The value `GET /write` stores: a new one every request, so that every
/// write is a real change.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Logins so far: each one is another user (a user's session cap stays out
/// of the way).
static LOGINS: AtomicU64 = AtomicU64::new(0);

fn next_user() -> String {
    format!("user-{:07}", LOGINS.fetch_add(1, Ordering::Relaxed))
}

/// `POST /login`: the user and one more key, the same on both sides.
async fn ours_login(session: Session) -> StatusCode {
    if session.login(next_user()).await.is_err() || session.insert("theme", "dark").await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

async fn ours_write(session: Session) -> StatusCode {
    match session
        .insert("n", WRITES.fetch_add(1, Ordering::Relaxed))
        .await
    {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn ours_app(store: impl SessionStore) -> Router {
    let layer = SessionLayer::new(store, SessionConfig::default()).expect("session config");
    Router::new()
        .route("/login", post(ours_login))
        .route("/me", get(crate::apps::session_me))
        .route("/write", get(ours_write))
        .layer(layer)
}

async fn ts_login(session: tower_sessions::Session) -> StatusCode {
    if session.cycle_id().await.is_err()
        || session.insert("user", next_user()).await.is_err()
        || session.insert("theme", "dark").await.is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

async fn ts_write(session: tower_sessions::Session) -> StatusCode {
    match session
        .insert("n", WRITES.fetch_add(1, Ordering::Relaxed))
        .await
    {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn ts_app<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
    Router::new()
        .route("/login", post(ts_login))
        .route("/me", get(crate::apps::ts_me))
        .route("/write", get(ts_write))
        .layer(tower_sessions::SessionManagerLayer::new(store))
}

/// Builds the server of SQL contender `name` (`--pg URL`, `--sqlite PATH`).
pub async fn build(name: &str, flags: &Flags) -> Router {
    let pg = || flags.get("pg").expect("this contender needs --pg URL");
    let sqlite = || {
        PathBuf::from(
            flags
                .get("sqlite")
                .expect("this contender needs --sqlite PATH"),
        )
    };
    match name {
        "sql-portcullis-memory" => ours_app(MemoryStore::new()),
        "sql-portcullis-pg" => {
            let backend = pg_backend(pg(), None).await;
            ours_app(portcullis_sql::PgSessionStore::new(&backend))
        }
        "sql-portcullis-sqlite" => {
            let backend = sqlite_backend(&sqlite(), None).await;
            ours_app(portcullis_sql::SqliteSessionStore::new(&backend))
        }
        "sql-tower-sessions-pg" => ts_app(ts_pg(pg()).await),
        "sql-tower-sessions-sqlite" => ts_app(ts_sqlite(&sqlite()).await),
        "sql-purge" => purge_server(flags).await,
        other => panic!("unknown SQL contender {other}"),
    }
}

// ---- sessions: read and write --------------------------------------------

/// The `[[package]]` blocks of the lock file this binary was built from.
fn lock_packages() -> Vec<&'static str> {
    include_str!("../Cargo.lock")
        .split("[[package]]")
        .skip(1)
        .collect()
}

fn lock_field<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    block
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
        .map(|v| v.trim_matches('"'))
}

/// Every locked version of `name`.
fn lock_versions(name: &str) -> Vec<String> {
    lock_packages()
        .into_iter()
        .filter(|b| lock_field(b, "name") == Some(name))
        .filter_map(|b| lock_field(b, "version").map(str::to_owned))
        .collect()
}

/// The version of `dep` that package `of` depends on.
fn lock_dep_version(of: &str, dep: &str) -> Option<String> {
    let block = lock_packages()
        .into_iter()
        .find(|b| lock_field(b, "name") == Some(of))?;
    let deps = block.split("dependencies = [").nth(1)?;
    let line = deps
        .lines()
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
        .find(|l| *l == dep || l.starts_with(&format!("{dep} ")))?;
    match line.split_whitespace().nth(1) {
        Some(v) => Some(v.to_owned()),
        None => lock_versions(dep).into_iter().next(),
    }
}

fn versions(pg: Option<&Pg>, sqlite: &str) -> Value {
    json!({
        "postgres": pg.map(Pg::version),
        "sqlite": sqlite,
        "libsqlite3-sys": lock_versions("libsqlite3-sys"),
        "sqlx_portcullis": lock_dep_version("portcullis-sql", "sqlx"),
        "sqlx_tower_sessions": lock_dep_version("tower-sessions-sqlx-store", "sqlx"),
        "tower-sessions": lock_versions("tower-sessions"),
        "tower-sessions-sqlx-store": lock_versions("tower-sessions-sqlx-store"),
    })
}

fn sqlite_version(dir: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = pool9_sqlite(&dir.join("version.db")).await;
        let v: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await
            .expect("sqlite_version");
        let pool8 = pool8_sqlite(&dir.join("version8.db")).await;
        let v8: String = sqlx8::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool8)
            .await
            .expect("sqlite_version");
        assert_eq!(v, v8, "one libsqlite3-sys for both sqlx versions");
        v
    })
}

struct Ctx<'a> {
    pg: Option<&'a Pg>,
    dir: &'a Path,
    server_cpu: String,
}

impl Ctx<'_> {
    /// The flags of contender `c`'s server (a fresh database or file), and
    /// the PostgreSQL database's name.
    fn storage(&self, c: &SqlContender, tag: &str) -> Option<(Vec<String>, Option<String>)> {
        match c.db {
            "pg" => {
                let pg = self.pg?;
                let db = format!("{}_{tag}", c.name.replace('-', "_"));
                Some((vec!["--pg".into(), pg.fresh_database(&db)], Some(db)))
            }
            "sqlite" => {
                let path = self.dir.join(format!("{}-{tag}.db", c.name));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                Some((vec!["--sqlite".into(), path.display().to_string()], None))
            }
            _ => Some((Vec::new(), None)),
        }
    }
}

fn sessions(ctx: &Ctx<'_>, runs: usize, opts: &LoadOpts, only: Option<&str>) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let pg_cpu = ctx.pg.map(|pg| move || pg.cpu_ns());
    for run in 0..runs {
        let mut order: Vec<&SqlContender> = SQL_CONTENDERS
            .iter()
            .filter(|c| c.db != "pg" || ctx.pg.is_some())
            .filter(|c| only.is_none_or(|o| o.split(',').any(|x| x == c.name)))
            .collect();
        let k = run * order.len() / runs.max(1);
        order.rotate_left(k);
        for c in order {
            let Some((extra, db)) = ctx.storage(c, &format!("r{run}")) else {
                continue;
            };
            let server = Server::start(&format!("sql-{}", c.name), &ctx.server_cpu, &extra);
            // One session per connection, as many users would have: 64
            // requests on one row would measure its row lock instead.
            let credentials: Vec<Vec<(String, String)>> = rt.block_on(async {
                let mut all = Vec::new();
                for _ in 0..opts.conns {
                    all.push(login(server.addr).await);
                }
                all
            });
            for (op, path) in [("read", "/me"), ("write", "/write")] {
                let probe: Option<&(dyn Fn() -> u64 + Sync)> = match (&pg_cpu, c.db) {
                    (Some(f), "pg") => Some(f as &(dyn Fn() -> u64 + Sync)),
                    _ => None,
                };
                if let (Some(pg), Some(_)) = (ctx.pg, &db) {
                    pg.reset_statements();
                }
                let m = rt.block_on(measure_probed(
                    &server,
                    path,
                    &credentials,
                    opts,
                    None,
                    probe,
                ));
                #[allow(clippy::cast_precision_loss)]
                let db_cpu = m.probe_per_req.map(|ns| ns / 1000.0);
                // Every request the server answered (warm-up and the checked
                // first one included) against every statement it ran.
                #[allow(clippy::cast_precision_loss)]
                let statements = match (ctx.pg, &db) {
                    (Some(pg), Some(db)) => Some(pg.statements(db) as f64 / (m.total + 1) as f64),
                    _ => None,
                };
                eprintln!(
                    "run {} {:24} {op:5} {:>8.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us  server cpu {:>6.2} us/req{}",
                    run + 1,
                    c.name,
                    m.rps,
                    m.p50_us,
                    m.p99_us,
                    m.cpu_us_per_req,
                    db_cpu
                        .zip(statements)
                        .map(|(x, n)| format!(
                            "  postgres cpu {x:.2} us/req, {n:.3} statements/req"
                        ))
                        .unwrap_or_default()
                );
                if m.errors > 0 {
                    eprintln!("  !! {} non-2xx answers", m.errors);
                }
                rows.push(json!({
                    "run": run + 1,
                    "contender": c.name,
                    "family": c.family,
                    "db": c.db,
                    "about": c.about,
                    "op": op,
                    "rps": m.rps,
                    "p50_us": m.p50_us,
                    "p99_us": m.p99_us,
                    "p999_us": m.p999_us,
                    "cpu_us_per_req": m.cpu_us_per_req,
                    "postgres_cpu_us_per_req": db_cpu,
                    "postgres_statements_per_req": statements,
                    "requests": m.requests,
                    "errors": m.errors,
                }));
            }
            drop(server);
            // How many of the table's updates were HOT (no index entry
            // written), counted once the backends have exited.
            if let (Some(pg), Some(db)) = (ctx.pg, &db) {
                std::thread::sleep(Duration::from_millis(1500));
                let q = pg.psql(
                    db,
                    "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables \
                     WHERE relname IN ('sessions', 'session')",
                );
                let v: Vec<f64> = q
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [upd, hot] = v[..]
                    && let Some(row) = rows.last_mut()
                {
                    eprintln!(
                        "  {} row updates, {:.1} % HOT",
                        upd,
                        100.0 * hot / upd.max(1.0)
                    );
                    row["postgres_updates"] = json!(upd);
                    row["postgres_hot_update_share"] = json!(hot / upd.max(1.0));
                }
            }
        }
    }
    rows
}

// ---- refresh rotation ----------------------------------------------------

/// The digest of a new random token (as a login or a rotation makes).
fn random_digest() -> TokenDigest {
    OpaqueToken::generate().expect("random").digest()
}

fn family(user: usize, now: Timestamp) -> Family {
    Family {
        id: FamilyId::generate().expect("family id"),
        user_id: format!("user-{user:07}"),
        claims: serde_json::Map::new(),
        device: DeviceInfo::default(),
        created_at: now,
        last_used_at: now,
        deadlines: Deadlines {
            idle: now + Duration::from_secs(14 * 86_400),
            absolute: now + Duration::from_secs(90 * 86_400),
        },
        current: random_digest(),
        previous: None,
        history: Vec::new(),
        rotations: 0,
        jkt: None,
    }
}

/// `sql-worker rotate`: `--conns` families rotating concurrently for
/// `--secs` (after a second's warm-up); prints one JSON line.
async fn rotate_worker<S: RefreshStore>(store: S, flags: &Flags) -> Value {
    let conns: usize = flags.num("conns", 64);
    let secs: u64 = flags.num("secs", 3);
    let now = SystemClock.now();
    let mut families = Vec::new();
    for i in 0..conns {
        let f = family(i, now);
        store.create(&f, None).await.expect("create family");
        families.push((f.id.clone(), f.current));
    }
    let store = Arc::new(store);
    let begin = Instant::now();
    let measure_from = begin + Duration::from_secs(1);
    let end = measure_from + Duration::from_secs(secs);
    let cpu0 = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = families
        .into_iter()
        .map(|(id, mut current)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let successor = random_digest();
                    let rotation = Rotation {
                        family: id.clone(),
                        presented: current,
                        successor,
                        now: SystemClock.now(),
                        grace: Duration::from_secs(30),
                        idle: Duration::from_secs(14 * 86_400),
                        history_limit: 16,
                        device: DeviceInfo::default(),
                    };
                    let out = store.rotate(&rotation).await;
                    let t1 = Instant::now();
                    match out {
                        Ok(RotateOutcome::Rotated(_)) => {
                            current = successor;
                            if t0 >= measure_from && t1 <= end {
                                lat.push(u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX));
                            }
                        }
                        _ => errors += 1,
                    }
                    // Lets the timer run on this one thread even when a
                    // store never waits (the memory store).
                    tokio::task::yield_now().await;
                }
                (lat, errors)
            })
        })
        .collect();
    let pid = std::process::id();
    // PostgreSQL's CPU time, when its postmaster's pid is given.
    let pg_pid: Option<u32> = flags.get("pg-pid").and_then(|p| p.parse().ok());
    tokio::time::sleep_until(measure_from.into()).await;
    cpu0.store(crate::compare::cpu_ns(pid), Ordering::SeqCst);
    let pg0 = pg_pid.map(crate::pg::tree_cpu_ns);
    tokio::time::sleep_until(end.into()).await;
    let cpu = crate::compare::cpu_ns(pid).saturating_sub(cpu0.load(Ordering::SeqCst));
    let pg_cpu = pg_pid
        .map(crate::pg::tree_cpu_ns)
        .zip(pg0)
        .map(|(b, a)| b.saturating_sub(a));
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("rotation task");
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let n = lat.len() as f64;
    #[allow(clippy::cast_precision_loss)]
    let res = json!({
        "concurrent_families": conns,
        "rotations": lat.len(),
        "rotations_per_s": n / secs as f64,
        "p50_us": crate::client::quantile_us(&lat, 0.5),
        "p99_us": crate::client::quantile_us(&lat, 0.99),
        "cpu_us_per_rotation": cpu as f64 / 1000.0 / n,
        "postgres_cpu_us_per_rotation": pg_cpu.map(|ns| ns as f64 / 1000.0 / n),
        "errors": errors,
    });
    res
}

/// `load sql-worker rotate|fill ...`: work that runs in a process of its
/// own, pinned to the server core.
pub fn worker(what: &str, flags: &Flags) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        match (what, flags.get("pg"), flags.get("sqlite")) {
            ("rotate", Some(url), _) => {
                let backend = pg_backend(url, None).await;
                rotate_worker(portcullis_sql::PgRefreshStore::new(&backend), flags).await
            }
            ("rotate", None, Some(path)) => {
                let backend = sqlite_backend(Path::new(path), None).await;
                rotate_worker(portcullis_sql::SqliteRefreshStore::new(&backend), flags).await
            }
            ("rotate", None, None) => {
                rotate_worker(portcullis_refresh::MemoryRefreshStore::new(), flags).await
            }
            _ => panic!("usage: load sql-worker rotate [--pg URL | --sqlite PATH]"),
        }
    });
    println!("{out}");
}

fn run_worker(server_cpu: &str, args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new("taskset")
        .args(["-c", server_cpu])
        .arg(exe)
        .arg("sql-worker")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("worker");
    assert!(out.status.success(), "worker {args:?} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("worker json")
}

fn refresh(ctx: &Ctx<'_>, secs: u64, conns: usize) -> Value {
    let mut out = serde_json::Map::new();
    let mut targets: Vec<(&str, Vec<String>)> = vec![("memory", Vec::new())];
    if let Some(pg) = ctx.pg {
        targets.push((
            "pg",
            vec!["--pg".into(), pg.fresh_database("refresh_rotate")],
        ));
    }
    let path = ctx.dir.join("refresh.db");
    targets.push((
        "sqlite",
        vec!["--sqlite".into(), path.display().to_string()],
    ));
    for (name, mut args) in targets {
        args.splice(0..0, ["rotate".to_owned()]);
        if name == "pg"
            && let Some(pid) = ctx.pg.and_then(Pg::postmaster_pid)
        {
            args.extend(["--pg-pid".to_owned(), pid.to_string()]);
        }
        args.extend([
            "--secs".into(),
            secs.to_string(),
            "--conns".into(),
            conns.to_string(),
        ]);
        let res = run_worker(&ctx.server_cpu, &args);
        eprintln!("refresh rotation, {name:6}: {res}");
        out.insert(name.to_owned(), res);
    }
    Value::Object(out)
}

// ---- bytes per session ---------------------------------------------------

fn our_record(i: usize, now: Timestamp, expired: bool) -> SessionRecord {
    let mut data = BTreeMap::new();
    data.insert("theme".to_owned(), Value::from("dark"));
    let (idle, abs) = if expired {
        (
            now - Duration::from_secs(3600),
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
        metadata: SessionMetadata::default(),
    }
}

async fn fill_ours<S: SessionStore>(store: &S, n: usize) {
    let now = SystemClock.now();
    let parallel = 64;
    for start in (0..n).step_by(parallel) {
        let futs = (start..(start + parallel).min(n)).map(|i| {
            let rec = our_record(i, now, false);
            async move {
                let key = random_digest();
                let _ = store
                    .create(&key, &rec, None)
                    .await
                    .expect("create session");
            }
        });
        futures_util::future::join_all(futs).await;
    }
}

async fn fill_ts<S: tower_sessions::SessionStore>(store: &S, n: usize) {
    use tower_sessions::session::{Id, Record};
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::days(14);
    let parallel = 64;
    for start in (0..n).step_by(parallel) {
        let futs = (start..(start + parallel).min(n)).map(|i| async move {
            let mut data = HashMap::new();
            data.insert("user".to_owned(), Value::from(format!("user-{i:07}")));
            data.insert("theme".to_owned(), Value::from("dark"));
            let mut record = Record {
                id: Id::default(),
                data,
                expiry_date: expiry,
            };
            store.create(&mut record).await.expect("create session");
        });
        futures_util::future::join_all(futs).await;
    }
}

fn sqlite_file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn size(ctx: &Ctx<'_>, n: usize) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = Vec::new();
    let mut row = |contender: &str, db: &str, bytes: u64, rows: u64, secs: f64| {
        #[allow(clippy::cast_precision_loss)]
        let per = bytes as f64 / rows.max(1) as f64;
        eprintln!(
            "size {contender:24} {rows} sessions: {bytes} bytes, {per:.0} bytes/session (filled in {secs:.1} s)"
        );
        out.push(json!({
            "contender": contender,
            "db": db,
            "sessions": rows,
            "bytes": bytes,
            "bytes_per_session": per,
            "fill_s": secs,
        }));
    };
    if let Some(pg) = ctx.pg {
        let url = pg.fresh_database("size_ours");
        let t = Instant::now();
        rt.block_on(async {
            let backend = pg_backend(&url, None).await;
            fill_ours(&portcullis_sql::PgSessionStore::new(&backend), n).await;
        });
        let secs = t.elapsed().as_secs_f64();
        let q = pg.psql(
            "size_ours",
            "SELECT pg_total_relation_size('portcullis.sessions') || ' ' || count(*) FROM portcullis.sessions",
        );
        let (b, r) = q.split_once(' ').expect("size row");
        row(
            "portcullis-pg",
            "pg",
            b.parse().unwrap_or(0),
            r.parse().unwrap_or(0),
            secs,
        );

        let url = pg.fresh_database("size_ts");
        let t = Instant::now();
        rt.block_on(async { fill_ts(&ts_pg(&url).await, n).await });
        let secs = t.elapsed().as_secs_f64();
        let q = pg.psql(
            "size_ts",
            "SELECT pg_total_relation_size('tower_sessions.session') || ' ' || count(*) FROM tower_sessions.session",
        );
        let (b, r) = q.split_once(' ').expect("size row");
        row(
            "tower-sessions-pg",
            "pg",
            b.parse().unwrap_or(0),
            r.parse().unwrap_or(0),
            secs,
        );
    }
    let path = ctx.dir.join("size-ours.db");
    let t = Instant::now();
    let rows = rt.block_on(async {
        let backend = sqlite_backend(&path, None).await;
        fill_ours(&portcullis_sql::SqliteSessionStore::new(&backend), n).await;
        let pool = backend.pool();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await
            .expect("checkpoint");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM portcullis_sessions")
            .fetch_one(pool)
            .await
            .expect("count");
        rows
    });
    let secs = t.elapsed().as_secs_f64();
    row(
        "portcullis-sqlite",
        "sqlite",
        sqlite_file_bytes(&path),
        u64::try_from(rows).unwrap_or(0),
        secs,
    );
    let path = ctx.dir.join("size-ts.db");
    let t = Instant::now();
    let rows = rt.block_on(async {
        let pool = pool8_sqlite(&path).await;
        let store = tower_sessions_sqlx_store::SqliteStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        fill_ts(&store, n).await;
        sqlx8::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
            .expect("checkpoint");
        let rows: i64 = sqlx8::query_scalar("SELECT count(*) FROM tower_sessions")
            .fetch_one(&pool)
            .await
            .expect("count");
        rows
    });
    let secs = t.elapsed().as_secs_f64();
    row(
        "tower-sessions-sqlite",
        "sqlite",
        sqlite_file_bytes(&path),
        u64::try_from(rows).unwrap_or(0),
        secs,
    );
    out
}

// ---- purge under load ----------------------------------------------------

#[derive(Clone)]
struct PurgeState {
    /// One `purge_expired()` call.
    purge: Arc<dyn Fn() -> BoxFuture<'static, Result<u64, StoreError>> + Send + Sync>,
    /// The table's rows (`count(*)`).
    rows: Arc<dyn Fn() -> BoxFuture<'static, u64> + Send + Sync>,
    last: Arc<std::sync::Mutex<Option<PurgeDone>>>,
}

/// `(start_us, end_us, removed, failed calls)` of a finished purge.
type PurgeDone = (u64, u64, u64, u64);

/// The purge scenario's server: our store on `--backend pg|sqlite` with
/// `--live` live and `--expired` expired sessions (copies of one real row,
/// inserted by SQL), the background purge off, the session app and
/// `POST /admin/purge` (runs `purge_expired()` in a task), `GET
/// /admin/purge` (`start_us end_us removed` once done).
async fn purge_server(flags: &Flags) -> Router {
    let live: usize = flags.num("live", 100_000);
    let expired: usize = flags.num("expired", 1_000_000);
    // The store's purge only when asked (none started by requests).
    let purge = portcullis_sql::PurgeConfig {
        every: Duration::ZERO,
        ..portcullis_sql::PurgeConfig::default()
    };
    let now = SystemClock.now();
    let now_ms = i64::try_from(now.millis()).unwrap_or(i64::MAX);
    let live_idle = now_ms + 1_800_000;
    let dead_idle = now_ms - 3_600_000;
    let (app, purge_fn): (Router, PurgeState) = if let Some(url) = flags.get("pg") {
        let backend = pg_backend(url, Some(purge)).await;
        let store = portcullis_sql::PgSessionStore::new(&backend);
        let _ = store
            .create(&random_digest(), &our_record(0, now, false), None)
            .await
            .expect("template row");
        let pool = backend.pool().clone();
        const COUNT: &str = "SELECT count(*) FROM portcullis.sessions";
        for (tag, n, idle) in [("live", live, live_idle), ("dead", expired, dead_idle)] {
            let sql = format!(
                "INSERT INTO portcullis.sessions (id_digest, user_digest, user_id, created_at, \
                 last_seen, idle_deadline, absolute_deadline, metadata, data) \
                 SELECT sha256(convert_to('{tag}-' || i, 'UTF8')), \
                        sha256(convert_to('user-{tag}-' || i, 'UTF8')), \
                        convert_to('user-{tag}-' || i, 'UTF8'), \
                        created_at - 7200000, last_seen - 7200000, {idle}, absolute_deadline, metadata, data \
                 FROM generate_series(1, {n}) i, (SELECT * FROM portcullis.sessions LIMIT 1) t"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("seed");
        }
        sqlx::query("VACUUM ANALYZE portcullis.sessions")
            .execute(&pool)
            .await
            .expect("vacuum");
        let s = store.clone();
        (
            ours_app(store),
            PurgeState {
                purge: Arc::new(move || {
                    let s = s.clone();
                    Box::pin(async move { s.purge_expired().await })
                }),
                rows: Arc::new(move || {
                    let pool = pool.clone();
                    Box::pin(async move {
                        let n: i64 = sqlx::query_scalar(COUNT)
                            .fetch_one(&pool)
                            .await
                            .expect("count");
                        u64::try_from(n).unwrap_or(0)
                    })
                }),
                last: Arc::default(),
            },
        )
    } else {
        let path = PathBuf::from(flags.get("sqlite").expect("--pg URL or --sqlite PATH"));
        let backend = sqlite_backend(&path, Some(purge)).await;
        let store = portcullis_sql::SqliteSessionStore::new(&backend);
        let _ = store
            .create(&random_digest(), &our_record(0, now, false), None)
            .await
            .expect("template row");
        let pool = backend.pool().clone();
        const COUNT: &str = "SELECT count(*) FROM portcullis_sessions";
        for (n, idle) in [(live, live_idle), (expired, dead_idle)] {
            let sql = format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
                 INSERT INTO portcullis_sessions (id_digest, user_digest, user_id, created_at, \
                 last_seen, idle_deadline, absolute_deadline, metadata, data) \
                 SELECT randomblob(32), randomblob(32), CAST('user-' || i AS BLOB), \
                        created_at - 7200000, last_seen - 7200000, {idle}, absolute_deadline, metadata, data \
                 FROM s, (SELECT * FROM portcullis_sessions LIMIT 1)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("seed");
        }
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
            .expect("checkpoint");
        let s = store.clone();
        (
            ours_app(store),
            PurgeState {
                purge: Arc::new(move || {
                    let s = s.clone();
                    Box::pin(async move { s.purge_expired().await })
                }),
                rows: Arc::new(move || {
                    let pool = pool.clone();
                    Box::pin(async move {
                        let n: i64 = sqlx::query_scalar(COUNT)
                            .fetch_one(&pool)
                            .await
                            .expect("count");
                        u64::try_from(n).unwrap_or(0)
                    })
                }),
                last: Arc::default(),
            },
        )
    };
    let admin = Router::new()
        .route(
            "/admin/purge",
            post(|State(s): State<PurgeState>| async move {
                tokio::spawn(async move {
                    let before = (s.rows)().await;
                    let start = crate::unix_us();
                    // As an application's periodic task would: a call that
                    // fails (a batch timed out) is made again; the batches
                    // before the failure stay deleted.
                    let mut failed = 0;
                    while (s.purge)().await.is_err() && failed < 100 {
                        failed += 1;
                    }
                    let end = crate::unix_us();
                    let removed = before.saturating_sub((s.rows)().await);
                    *s.last.lock().expect("purge lock") = Some((start, end, removed, failed));
                });
                "started"
            })
            .get(|State(s): State<PurgeState>| async move {
                match *s.last.lock().expect("purge lock") {
                    Some((a, b, n, f)) => format!("{a} {b} {n} {f}"),
                    None => String::new(),
                }
            }),
        )
        .with_state(purge_fn);
    app.merge(admin)
}

fn percentile(mut lat: Vec<u32>, q: f64) -> f64 {
    lat.sort_unstable();
    crate::client::quantile_us(&lat, q)
}

fn purge(ctx: &Ctx<'_>, flags: &Flags, backend: &str) -> Option<Value> {
    let live: usize = flags.num("purge-live", 100_000);
    let expired: usize = flags.num("purge-expired", 1_000_000);
    let conns: usize = flags.num("conns", 64);
    let mut extra = match backend {
        "pg" => vec!["--pg".to_owned(), ctx.pg?.fresh_database("purge")],
        _ => {
            let path = ctx.dir.join("purge.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            vec!["--sqlite".to_owned(), path.display().to_string()]
        }
    };
    extra.extend([
        "--live".into(),
        live.to_string(),
        "--expired".into(),
        expired.to_string(),
    ]);
    let t = Instant::now();
    let server = Server::start("sql-purge", &ctx.server_cpu, &extra);
    eprintln!(
        "purge ({backend}): {live} live + {expired} expired sessions seeded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (outcome, window) = rt.block_on(async {
        let headers = login(server.addr).await;
        let addr = server.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(crate::client::run_until(
            addr,
            crate::client::request("GET", "/me", &headers),
            conns,
            Duration::from_secs(1),
            Arc::clone(&stop),
        ));
        // 1 s warm-up, 3 s without the purge, the purge, 3 s after it.
        tokio::time::sleep(Duration::from_secs(4)).await;
        crate::client::once(addr, &crate::client::request("POST", "/admin/purge", &[]))
            .await
            .expect("purge");
        let mut window = None;
        for _ in 0..6000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let r = crate::client::once(addr, &crate::client::request("GET", "/admin/purge", &[]))
                .await
                .expect("purge stats");
            let text = String::from_utf8_lossy(&r.body).to_string();
            let v: Vec<u64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() == 4 {
                window = Some((v[0], v[1], v[2], v[3]));
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let outcome = load.await.expect("load").expect("load run");
        (outcome, window)
    });
    drop(server);
    let (start, end, removed, failed_calls) = window.expect("purge finished");
    let (during, outside): (Vec<&crate::client::Sample>, Vec<_>) = outcome
        .samples
        .iter()
        .partition(|s| s.start_unix_us >= start && s.start_unix_us <= end);
    let during: Vec<u32> = during.iter().map(|s| s.latency_ns).collect();
    let outside: Vec<u32> = outside.iter().map(|s| s.latency_ns).collect();
    #[allow(clippy::cast_precision_loss)]
    let purge_ms = end.saturating_sub(start) as f64 / 1000.0;
    #[allow(clippy::cast_precision_loss)]
    let res = json!({
        "backend": backend,
        "live": live,
        "expired": expired,
        "removed": removed,
        "failed_calls": failed_calls,
        "purge_ms": purge_ms,
        "rows_per_s": removed as f64 / (purge_ms / 1000.0),
        "batch": portcullis_sql::PurgeConfig::default().batch,
        "pause_ms": portcullis_sql::PurgeConfig::default().pause.as_secs_f64() * 1000.0,
        "connections": conns,
        "errors": outcome.errors,
        "requests_during": during.len(),
        "p50_during_us": percentile(during.clone(), 0.5),
        "p99_during_us": percentile(during.clone(), 0.99),
        "max_during_us": percentile(during, 1.0),
        "requests_outside": outside.len(),
        "p50_outside_us": percentile(outside.clone(), 0.5),
        "p99_outside_us": percentile(outside.clone(), 0.99),
        "max_outside_us": percentile(outside, 1.0),
    });
    eprintln!("purge ({backend}): {res}");
    Some(res)
}

// ---- the part ------------------------------------------------------------

pub fn run(flags: &Flags) {
    let out_dir = PathBuf::from(flags.get("out").unwrap_or("benches/results"));
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let server_cpu = flags.get("server-cpu").unwrap_or("0").to_owned();
    let client_cpu = flags.get("client-cpu").unwrap_or("1").to_owned();
    let parts: Vec<String> = flags
        .get("parts")
        .unwrap_or("sessions,refresh,size,purge")
        .split(',')
        .map(str::to_owned)
        .collect();
    let has = |p: &str| parts.iter().any(|x| x == p);
    let runs: usize = flags.num("runs", 3);
    let opts = LoadOpts {
        conns: flags.num("conns", 64),
        warmup: Duration::from_millis(flags.num("warmup-ms", 1000)),
        window: Duration::from_secs(flags.num("secs", 3)),
    };
    let dir = tempfile::Builder::new()
        .prefix("portcullis-bench-sql-")
        .tempdir()
        .expect("temp dir");
    // PostgreSQL beside the load generator, as Redis in `compare`: the
    // server core runs the contender alone.
    let pg = Pg::start(Some(&client_cpu));
    let ctx = Ctx {
        pg: pg.as_ref(),
        dir: dir.path(),
        server_cpu,
    };
    let machine = crate::compare::machine();
    let mut doc = json!({
        "machine": machine,
        "versions": versions(pg.as_ref(), &sqlite_version(dir.path())),
        "settings": {
            "runs": runs,
            "connections": opts.conns,
            "warmup_s": opts.warmup.as_secs_f64(),
            "window_s": opts.window.as_secs_f64(),
            "server_cpu": ctx.server_cpu,
            "client_cpu": client_cpu,
            "pg_pool": PG_CONNS,
            "sqlite_pool": SQLITE_CONNS,
            "pool_options": "test_before_acquire(false), acquire_timeout 5 s, on both sqlx versions",
            "postgres": "throwaway server on the client core: fsync=off, full_page_writes=off, shared_buffers=512MB",
            "sqlite": "WAL, synchronous=NORMAL, one file per contender",
        },
    });
    let path = out_dir.join("sql.json");
    let merge = flags.get("merge").is_some();
    // Each part with the load average around it (a part run again with
    // `--merge 1` keeps its own), written as soon as it is done.
    let mut part = |name: &str, f: &mut dyn FnMut() -> Value| {
        if has(name) {
            let before = crate::compare::loadavg();
            doc[name] = f();
            doc[format!("{name}_loadavg")] = json!([before, crate::compare::loadavg()]);
            save(&doc, &path, merge);
        }
    };
    part("sessions", &mut || {
        json!(sessions(&ctx, runs, &opts, flags.get("only")))
    });
    part("refresh", &mut || {
        refresh(&ctx, opts.window.as_secs().max(1), opts.conns)
    });
    part("size", &mut || {
        json!(size(&ctx, flags.num("size-sessions", 100_000)))
    });
    part("purge", &mut || {
        let backends = flags.get("purge-backends").unwrap_or("pg,sqlite");
        json!(
            backends
                .split(',')
                .filter_map(|b| purge(&ctx, flags, b))
                .collect::<Vec<_>>()
        )
    });
    doc["loadavg_after"] = json!(crate::compare::loadavg());
    save(&doc, &path, merge);
}

/// Writes `sql.json`; with `merge`, the parts of the file that `doc` lacks
/// stay (`--merge 1`: parts run again replace theirs).
fn save(doc: &Value, path: &Path, merge: bool) {
    let mut doc = doc.clone();
    if let Some(old) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|_| merge)
        && let (Some(old), Some(new)) = (old.as_object(), doc.as_object_mut())
    {
        for (k, v) in old {
            new.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
