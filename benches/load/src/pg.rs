//! A throwaway PostgreSQL server for the SQL part, started as
//! `tests/src/pg_harness.rs` starts the tests' servers: `initdb` in a
//! temporary directory, trust authentication (user `portcullis`), a free
//! loopback port, every server command as the `postgres` user through
//! `runuser` when running as root (PostgreSQL refuses to run as root). The
//! postmaster runs under a small shell that stops it when this process
//! ends, even when it is killed. Pinned to a core with `taskset` (its
//! backends inherit the affinity).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of `initdb`, `postgres`, `psql`: the highest version under
/// `/usr/lib/postgresql/*/bin` (Debian), else `PATH`.
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
    let path = path.trim();
    (!path.is_empty())
        .then(|| Path::new(path).parent().map(Path::to_path_buf))
        .flatten()
}

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

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// CPU time of a process and its children, nanoseconds.
pub fn tree_cpu_ns(pid: u32) -> u64 {
    let children: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    crate::compare::cpu_ns(pid) + children.into_iter().map(tree_cpu_ns).sum::<u64>()
}

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
    watchdog: Option<Child>,
}

impl Pg {
    /// `initdb` and start, pinned to `cpu`. `None` (with the reason on
    /// stderr) when PostgreSQL is not installed or does not start.
    pub fn start(cpu: Option<&str>) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            eprintln!("PostgreSQL not found (initdb): the SQL part is skipped");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-bench-pg-")
            .tempdir()
            .ok()?;
        if as_postgres {
            let (Some(uid), Some(gid)) = (id_of("-u"), id_of("-g")) else {
                eprintln!("running as root without a `postgres` user: the SQL part is skipped");
                return None;
            };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).ok()?;
        }
        let mut pg = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
            watchdog: None,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data_dir())
            .args(["-A", "trust", "-U", "portcullis", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        for _ in 0..5 {
            pg.port = free_port();
            if pg.spawn(cpu) {
                pg.psql(
                    "postgres",
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
                );
                return Some(pg);
            }
        }
        eprintln!("PostgreSQL did not start: {}", pg.log_tail());
        None
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The postmaster under a shell that stops it (fast shutdown) when its
    /// stdin closes, that is when this process ends.
    fn spawn(&mut self, cpu: Option<&str>) -> bool {
        let script = r#"postgres="$1"; shift; "$postgres" "$@" & pid=$!; read _; kill -INT $pid 2>/dev/null; wait $pid"#;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]);
                c
            }
            None => Command::new("env"),
        };
        if self.as_postgres {
            cmd.args(["runuser", "-u", "postgres", "--"]);
        }
        cmd.args(["sh", "-c", script, "sh"]);
        let Ok(log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        else {
            return false;
        };
        if self.as_postgres
            && let (Some(uid), Some(gid)) = (id_of("-u"), id_of("-g"))
        {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        // fsync off: writes measure the work of the statements, not this
        // machine's disk (the same for every store).
        let Ok(child) = cmd
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=512MB", "-c", "max_connections=200"])
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
        else {
            return false;
        };
        self.watchdog = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_psql("postgres", "SELECT 1").is_ok() {
                return true;
            }
            if let Some(c) = &mut self.watchdog
                && c.try_wait().ok().flatten().is_some()
            {
                self.watchdog = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://portcullis@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (dropping an older one) and returns its URL.
    pub fn fresh_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "portcullis", "-d", db, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` in `db` with `psql`; its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// Clears `pg_stat_statements` (every database).
    pub fn reset_statements(&self) {
        self.psql("postgres", "SELECT pg_stat_statements_reset()");
    }

    /// Statements run in `db` since [`reset_statements`](Self::reset_statements)
    /// (`BEGIN` and `COMMIT` included).
    pub fn statements(&self, db: &str) -> u64 {
        self.psql(
            "postgres",
            &format!(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{db}'"
            ),
        )
        .parse()
        .unwrap_or(0)
    }

    /// `SHOW server_version`.
    pub fn version(&self) -> String {
        self.try_psql("postgres", "SHOW server_version")
            .unwrap_or_default()
    }

    /// The postmaster's pid (`postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
    }

    /// CPU time of the postmaster and every backend, nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.postmaster_pid().map_or(0, tree_cpu_ns)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(mut c) = self.watchdog.take() {
            let _ = self
                .command("pg_ctl")
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
