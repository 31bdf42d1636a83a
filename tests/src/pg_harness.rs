//! Throwaway PostgreSQL servers for tests and benches.
//!
//! [`PgServer::start`] runs `initdb` in a temporary directory and starts a
//! server on a free loopback port (trust authentication, user
//! `portcullis`, `fsync` off, `pg_stat_statements` loaded). As root (CI
//! runs as root, and PostgreSQL refuses to run as root) every server
//! command runs as the `postgres` user through `runuser`. The server runs
//! under a small shell that stops it and deletes its directory when the
//! test process ends, even when the process is killed: a static, shared
//! server never outlives its tests.
//!
//! A missing PostgreSQL fails the test with instructions; nothing is
//! skipped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::redis_harness::free_port;

const INSTALL: &str = "the PostgreSQL tests need a real PostgreSQL server: install it \
                       (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`), \
                       or run scripts/test, which installs it";

/// The directory of `initdb`, `postgres`, `pg_ctl`, `psql`: the highest
/// version under `/usr/lib/postgresql/*/bin` (Debian), else `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let path = String::from_utf8(found.stdout).ok()?;
    Path::new(path.trim()).parent().map(Path::to_path_buf)
}

/// Whether this process runs as root (read from /proc: no `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id");
    assert!(
        out.status.success(),
        "running as root, but there is no `postgres` user to run the server as; {INSTALL}"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

/// A throwaway PostgreSQL server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    watchdog: Option<Child>,
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl PgServer {
    /// `initdb` and start on a free port.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed (with instructions), or does not
    /// start (with its log).
    #[must_use]
    pub fn start() -> Self {
        let bin = bin_dir().unwrap_or_else(|| panic!("`initdb` not found; {INSTALL}"));
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let (uid, gid) = (id_of("-u"), id_of("-g"));
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let mut server = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
            watchdog: None,
        };
        let data = server.data_dir();
        let out = server
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "portcullis",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("PostgreSQL did not start: {}", server.log_tail());
    }

    /// A server shared by every test of this test binary (one `initdb`),
    /// stopped when the process ends.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts the postmaster under a watchdog shell that stops it (fast
    /// shutdown) when its stdin closes, that is when this process ends or
    /// the server is stopped; waits until it accepts connections.
    fn spawn(&mut self) -> bool {
        // `read` returns at EOF when this process ends (however it ends)
        // or on a line from `stop`/`Drop`: the server stops, and its
        // directory goes too unless the line is `keep` (a restart follows).
        let script = r#"dir="$1"; postgres="$2"; shift 2; "$postgres" "$@" & pid=$!; read cmd; kill -INT $pid 2>/dev/null; wait $pid; [ "$cmd" = keep ] || rm -rf "$dir""#;
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", script, "sh"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", script, "sh"]);
            c
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        if self.as_postgres {
            let (uid, gid) = (id_of("-u"), id_of("-g"));
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let child = cmd
            .arg(self.dir.path())
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "shared_preload_libraries=pg_stat_statements",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the PostgreSQL server");
        self.watchdog = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.psql_status("postgres", "SELECT 1").is_ok() {
                return true;
            }
            let exited = self
                .watchdog
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.watchdog = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (user `portcullis`, no password).
    #[must_use]
    pub fn url(&self, db: &str) -> String {
        format!("postgres://portcullis@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    #[must_use]
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    fn psql_status(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "portcullis", "-d", db, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` in database `db` with `psql` (independent of the code
    /// under test) and returns its unaligned output.
    ///
    /// # Panics
    ///
    /// When the statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_status(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// The database name of a URL from [`fresh_database`](Self::fresh_database).
    #[must_use]
    pub fn database_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or("postgres")
    }

    /// Closes every connection to `db` from the server side
    /// (`pg_terminate_backend`), as an administrator or a fail-over does.
    pub fn terminate_connections(&self, db: &str) -> u32 {
        self.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        )
        .parse()
        .unwrap_or(0)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`): committed data
    /// survives, unlogged tables too.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server as a crash does (`pg_ctl stop -m immediate`):
    /// unlogged tables are emptied at the next start.
    pub fn crash(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "30", "stop", "-m", mode])
            .output();
        if let Some(mut c) = self.watchdog.take() {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"keep\n");
            }
            let _ = c.wait();
        }
    }

    /// Starts the stopped server again on the same port.
    ///
    /// # Panics
    ///
    /// When it does not start.
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "PostgreSQL did not restart: {}",
            self.log_tail()
        );
    }

    /// The last lines of the server log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Loads `pg_stat_statements` into `db` and clears its counters.
    pub fn reset_statement_stats(&self, db: &str) {
        self.psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        self.psql(db, "SELECT pg_stat_statements_reset()");
    }

    /// `(calls, query)` of every statement run in `db` since
    /// [`reset_statement_stats`](Self::reset_statement_stats), the
    /// bookkeeping of `pg_stat_statements` itself left out.
    #[must_use]
    pub fn statement_stats(&self, db: &str) -> Vec<(u64, String)> {
        let out = self.psql(
            db,
            &format!(
                "SELECT calls, replace(query, E'\\n', ' ') FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{db}' \
                 AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
            ),
        );
        out.lines()
            .filter_map(|l| {
                let (calls, query) = l.split_once('|')?;
                Some((calls.parse().ok()?, query.to_owned()))
            })
            .collect()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.watchdog.take() {
            // `immediate`: a test server's data is thrown away anyway.
            let _ = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "10", "stop", "-m", "immediate"])
                .output();
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = c.wait();
        }
    }
}
