//! Throwaway `redis-server` processes for tests and benches.
//!
//! - [`RedisServer`]: one server on a free loopback port, no persistence,
//!   in its own temporary directory; killed when dropped. Tests can kill,
//!   restart (same port, data lost), freeze (`SIGSTOP`) and thaw it.
//!   [`ServerOptions`] start another program (`valkey-server`), or serve
//!   TLS as well ([`TlsFiles`]).
//! - [`RedisCluster`]: a local three-master Redis Cluster (no replicas).
//! - [`RoundTripProxy`]: a TCP proxy that counts request/reply exchanges,
//!   to measure round trips directly.
//! - [`CutProxy`]: a TCP proxy that can cut one instance off Redis (every
//!   connection through it closed, new ones refused) and let it back.
//! - [`Fleet`]: several app servers sharing one Redis (scale-out).
//! - [`redis_command`]: a tiny RESP client, independent of the code under
//!   test, for `INFO` and the like.
//!
//! A missing `redis-server` fails the test with instructions; nothing is
//! skipped.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis::session::{SessionConfig, SessionStore};
use portcullis_redis::testing::CommandStats;
use portcullis_redis::{RedisConfig, RedisSessionStore};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{TestServer, client, cookie_value, session_app};

const INSTALL: &str = "install it (Debian/Ubuntu: `apt-get install redis-server redis-tools`; \
                       macOS: `brew install redis`), or run scripts/test, which installs it";

const INSTALL_VALKEY: &str = "install it (Debian 12: `apt-get install -t bookworm-backports \
                              valkey-server` with bookworm-backports in the apt sources; Debian 13: \
                              `apt-get install valkey-server`), or run scripts/test, which installs it";

/// The Valkey server program, for [`ServerOptions::binary`].
pub const VALKEY_SERVER: &str = "valkey-server";

/// The program [`RedisServer::start`] runs: `$PORTCULLIS_REDIS_SERVER`
/// when set (`valkey-server` runs every Redis test on Valkey), else
/// `redis-server`.
pub fn default_server_binary() -> String {
    std::env::var("PORTCULLIS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn install_hint(binary: &str) -> &'static str {
    if binary.contains("valkey") {
        INSTALL_VALKEY
    } else {
        INSTALL
    }
}

/// Panics with install instructions unless `binary` runs.
fn require(binary: &str) {
    let ok = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{binary}` not found: the Redis tests need a real Redis; {}",
        install_hint(binary)
    );
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A simple or bulk string reply as text.
    pub fn text(&self) -> String {
        match self {
            Self::Simple(s) | Self::Error(s) => s.clone(),
            Self::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Self::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1.min(line.len()));
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad RESP line {line:?}"),
        )
    };
    let number = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(n) => {
                let mut buf = vec![0; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                Reply::Bulk(Some(buf))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Reply::Array(None),
            Ok(n) => Reply::Array(Some(
                (0..n).map(|_| read_reply(r)).collect::<io::Result<_>>()?,
            )),
        },
        _ => return Err(bad()),
    })
}

/// Sends one command to the Redis at `port` on a fresh connection.
pub fn redis_command(port: u16, args: &[&str]) -> io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    read_reply(&mut BufReader::new(stream))
}

/// `INFO commandstats` of the Redis at `port`.
pub fn command_stats(port: u16) -> CommandStats {
    CommandStats::parse(
        &redis_command(port, &["INFO", "commandstats"])
            .unwrap()
            .text(),
    )
}

/// The PEM files of a TLS-serving [`RedisServer`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (`--tls-cert-file`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key-file`).
    pub key: PathBuf,
    /// A CA (`--tls-ca-cert-file`; required by the server, used only for
    /// client certificates, which it does not ask for).
    pub ca: PathBuf,
}

/// How to start a [`RedisServer`]; the default is [`RedisServer::start`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// The program: [`default_server_binary`] when `None`;
    /// [`VALKEY_SERVER`] for Valkey.
    pub binary: Option<String>,
    /// Extra server arguments.
    pub args: Vec<String>,
    /// Also serve TLS, on a port of its own ([`RedisServer::tls_url`]),
    /// with `--tls-auth-clients no`. The plain port stays open on
    /// loopback for the harness' own commands (readiness, `INFO`, ...),
    /// which speak plain RESP.
    pub tls: Option<TlsFiles>,
}

/// A throwaway `redis-server`: a free loopback port, no persistence, its
/// own temporary directory. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    binary: String,
    tls_port: Option<u16>,
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server and waits until it answers `PING`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_options(&ServerOptions {
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            ..ServerOptions::default()
        })
    }

    /// Starts a standalone Valkey (`valkey-server`).
    pub fn start_valkey() -> Self {
        Self::start_options(&ServerOptions {
            binary: Some(VALKEY_SERVER.to_owned()),
            ..ServerOptions::default()
        })
    }

    /// Starts a server as `options` say, and waits until it answers
    /// `PING` on its plain port.
    pub fn start_options(options: &ServerOptions) -> Self {
        let binary = options.binary.clone().unwrap_or_else(default_server_binary);
        require(&binary);
        let mut last = String::new();
        for _ in 0..5 {
            let mut args = options.args.clone();
            let tls_port = options.tls.as_ref().map(|tls| {
                let port = free_port();
                for (flag, value) in [
                    ("--tls-port", port.to_string()),
                    ("--tls-cert-file", tls.cert.display().to_string()),
                    ("--tls-key-file", tls.key.display().to_string()),
                    ("--tls-ca-cert-file", tls.ca.display().to_string()),
                    ("--tls-auth-clients", "no".to_owned()),
                ] {
                    args.push(flag.to_owned());
                    args.push(value);
                }
                port
            });
            let mut server = Self {
                port: free_port(),
                binary: binary.clone(),
                tls_port,
                args,
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{binary} did not start: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let log = dir.join("redis.log");
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}; {}", self.binary, install_hint(&self.binary)))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{} exited ({status}): {}", self.binary, tail(&log)));
            }
            if redis_command(self.port, &["PING"]).is_ok_and(|r| r == Reply::Simple("PONG".into()))
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} not ready after 10 s: {}",
                    self.binary,
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TLS port, for a server started with [`ServerOptions::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `rediss://127.0.0.1:<TLS port>/`. Panics unless the server serves
    /// TLS ([`ServerOptions::tls`]).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with TLS files");
        format!("rediss://127.0.0.1:{port}/")
    }

    /// The program it runs (`redis-server`, `valkey-server`).
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// The process id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (`SIGKILL`): connections drop, the data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        // The port may linger for a moment after the kill.
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not restart on port {}: {last}",
            self.binary, self.port
        );
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing
    /// answers. The harshest failure for timeouts.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Sends one command.
    pub fn command(&self, args: &[&str]) -> Reply {
        redis_command(self.port, args).unwrap()
    }

    /// `INFO commandstats`.
    pub fn command_stats(&self) -> CommandStats {
        command_stats(self.port)
    }

    /// `DBSIZE`.
    pub fn dbsize(&self) -> i64 {
        match self.command(&["DBSIZE"]) {
            Reply::Int(n) => n,
            other => panic!("DBSIZE: {other:?}"),
        }
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Logs every command from now on in `SLOWLOG` (threshold 0 µs), with
    /// room for `len` entries, and empties the log.
    pub fn slowlog_everything(&self, len: usize) {
        self.command(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
        self.command(&["CONFIG", "SET", "slowlog-max-len", &len.to_string()]);
        self.command(&["SLOWLOG", "RESET"]);
    }

    /// The `SLOWLOG` entries since the last reset, oldest first, as
    /// (server time in µs, the command's arguments), then empties the log.
    /// The time is the one Redis spent executing the command: a script
    /// with everything it called.
    pub fn slowlog_take(&self) -> Vec<(u64, Vec<String>)> {
        let Reply::Array(Some(entries)) = self.command(&["SLOWLOG", "GET", "-1"]) else {
            panic!("SLOWLOG GET");
        };
        self.command(&["SLOWLOG", "RESET"]);
        let mut out: Vec<(u64, Vec<String>)> = entries
            .iter()
            .filter_map(|e| match e {
                Reply::Array(Some(f)) => match (f.get(2), f.get(3)) {
                    (Some(Reply::Int(us)), Some(Reply::Array(Some(args)))) => Some((
                        u64::try_from(*us).unwrap_or(0),
                        args.iter().map(Reply::text).collect(),
                    )),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        out.reverse();
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A local Redis Cluster of three masters (no replicas), each a
/// [`RedisServer`] with `--cluster-enabled yes`. Killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, gives each a third of the 16384 slots
    /// (`CLUSTER ADDSLOTSRANGE`), joins them (`CLUSTER MEET`) and waits
    /// until every node reports `cluster_state:ok` and knows the others.
    pub fn start() -> Self {
        Self::start_nodes(None)
    }

    /// [`start`](Self::start), every node also serving TLS with `tls`
    /// (the same certificate for all: it must name 127.0.0.1), the cluster
    /// bus too (`--tls-cluster yes`). Nodes tell TLS clients their TLS
    /// ports ([`tls_urls`](Self::tls_urls)), plain clients their plain
    /// ones.
    pub fn start_tls(tls: &TlsFiles) -> Self {
        Self::start_nodes(Some(tls))
    }

    fn start_nodes(tls: Option<&TlsFiles>) -> Self {
        require(&default_server_binary());
        let nodes: Vec<(RedisServer, String)> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-port",
                    &bus,
                ];
                if tls.is_some() {
                    args.extend(["--tls-cluster", "yes"]);
                }
                let server = RedisServer::start_options(&ServerOptions {
                    args: args.into_iter().map(str::to_owned).collect(),
                    tls: tls.cloned(),
                    ..ServerOptions::default()
                });
                (server, bus)
            })
            .collect();
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for ((node, _), (from, to)) in nodes.iter().zip(ranges) {
            let reply = node.command(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &from.to_string(),
                &to.to_string(),
            ]);
            assert_eq!(reply, Reply::Simple("OK".into()), "ADDSLOTSRANGE");
        }
        for (node, bus) in &nodes[1..] {
            let reply = nodes[0].0.command(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &node.port().to_string(),
                bus,
            ]);
            assert_eq!(reply, Reply::Simple("OK".into()), "MEET");
        }
        let cluster = Self {
            nodes: nodes.into_iter().map(|(n, _)| n).collect(),
        };
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.nodes.iter().all(|n| {
                let info = n.command(&["CLUSTER", "INFO"]).text();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes' `rediss://` URLs (a cluster from
    /// [`start_tls`](Self::start_tls)).
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::tls_url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> i64 {
        match self.nodes[0].command(&["CLUSTER", "KEYSLOT", key]) {
            Reply::Int(n) => n,
            other => panic!("CLUSTER KEYSLOT: {other:?}"),
        }
    }

    /// Keys on each node (`DBSIZE`).
    pub fn dbsizes(&self) -> Vec<i64> {
        self.nodes.iter().map(RedisServer::dbsize).collect()
    }
}

/// A TCP proxy in front of a Redis that counts round trips: each time the
/// server answers after the client spoke, one exchange. Exact for a client
/// that waits for each reply before its next request; pipelined commands
/// in one write count once, as they should.
#[derive(Debug)]
pub struct RoundTripProxy {
    addr: SocketAddr,
    exchanges: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundTripProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let exchanges = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&exchanges);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = relay(client, server, counter).await;
                    }
                });
            }
        });
        Self {
            addr,
            exchanges,
            task,
        }
    }

    /// `redis://<proxy address>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::SeqCst)
    }
}

impl Drop for RoundTripProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards both ways; counts a new exchange at the first server bytes
/// after client bytes.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    exchanges: Arc<AtomicU64>,
) -> io::Result<()> {
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Whether the client has spoken since the server last answered.
    let spoke = Arc::new(AtomicBool::new(false));
    let up = {
        let spoke = Arc::clone(&spoke);
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = cr.read(&mut buf).await?;
                if n == 0 {
                    return io::Result::Ok(());
                }
                spoke.store(true, Ordering::SeqCst);
                sw.write_all(&buf[..n]).await?;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(());
            }
            if spoke.swap(false, Ordering::SeqCst) {
                exchanges.fetch_add(1, Ordering::SeqCst);
            }
            cw.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// The session cookie of [`session_app`] with the default configuration.
pub const SESSION_COOKIE: &str = "__Host-session";

/// Several app servers ([`session_app`]) on distinct ports, each with its
/// own [`RedisSessionStore`] (its own connection, as separate processes
/// would have), sharing one Redis; no sticky routing: tests pick the
/// instance of every request.
#[derive(Debug)]
pub struct Fleet {
    pub apps: Vec<TestServer>,
    pub http: reqwest::Client,
}

impl Fleet {
    /// `n` instances, each with its own store (own connection) on `config`.
    pub async fn start(
        n: usize,
        backend: impl Fn() -> RedisConfig,
        config: impl Fn() -> SessionConfig,
    ) -> Self {
        let mut apps = Vec::new();
        for _ in 0..n {
            let store: Arc<dyn SessionStore> =
                Arc::new(RedisSessionStore::new(backend().build().unwrap()));
            apps.push(TestServer::start(session_app::router(store, config())).await);
        }
        Self {
            apps,
            http: client(),
        }
    }

    pub async fn send(
        &self,
        app: usize,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.apps[app].url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, app: usize, path: &str, cookie: &str) -> reqwest::Response {
        self.send(app, reqwest::Method::GET, path, Some(cookie))
            .await
    }

    pub async fn post(&self, app: usize, path: &str, cookie: Option<&str>) -> reqwest::Response {
        self.send(app, reqwest::Method::POST, path, cookie).await
    }

    pub async fn login(&self, app: usize, user: &str) -> String {
        let resp = self.post(app, &format!("/login/{user}"), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        cookie_value(&resp, SESSION_COOKIE).unwrap()
    }

    /// `GET /me` on `app`: the status and the user.
    pub async fn me(&self, app: usize, cookie: &str) -> (StatusCode, Option<String>) {
        let resp = self.get(app, "/me", cookie).await;
        let status = resp.status();
        let user = if status == StatusCode::OK {
            resp.json::<Value>().await.unwrap()["user"]
                .as_str()
                .map(str::to_owned)
        } else {
            None
        };
        (status, user)
    }
}

/// A store that keeps its Redis alive: the server (or cluster) is killed
/// when the last clone of the store is dropped. For the conformance macro,
/// whose factory returns only a store.
#[derive(Debug, Clone)]
pub struct Owned<S> {
    store: S,
    _owner: Arc<dyn std::any::Any + Send + Sync>,
}

impl<S> Owned<S> {
    pub fn new(store: S, owner: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        Self {
            store,
            _owner: owner,
        }
    }
}

mod owned_store {
    use portcullis::core::{StoreError, Timestamp, TokenDigest};
    use portcullis::session::{
        CreateOutcome, SessionCap, SessionRecord, SessionStore, SessionUpdate,
    };

    use super::Owned;

    #[async_trait::async_trait]
    impl<S: SessionStore> SessionStore for Owned<S> {
        async fn create(
            &self,
            key: &TokenDigest,
            record: &SessionRecord,
            cap: Option<SessionCap>,
        ) -> Result<CreateOutcome, StoreError> {
            self.store.create(key, record, cap).await
        }
        async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
            self.store.load(key).await
        }
        async fn update(
            &self,
            key: &TokenDigest,
            update: &SessionUpdate,
        ) -> Result<(), StoreError> {
            self.store.update(key, update).await
        }
        async fn touch(
            &self,
            key: &TokenDigest,
            last_seen: Timestamp,
            idle_deadline: Timestamp,
        ) -> Result<(), StoreError> {
            self.store.touch(key, last_seen, idle_deadline).await
        }
        async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
            self.store.delete(key).await
        }
        async fn list_for_user(
            &self,
            user_id: &str,
        ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
            self.store.list_for_user(user_id).await
        }
        async fn delete_for_user(
            &self,
            user_id: &str,
            except: Option<&TokenDigest>,
        ) -> Result<u64, StoreError> {
            self.store.delete_for_user(user_id, except).await
        }
        async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
            self.store.count_for_user(user_id).await
        }
    }
}

/// A TCP proxy in front of a Redis that can cut every connection through
/// it and refuse new ones (one instance's network path to Redis fails while
/// Redis itself stays up), then let connections through again.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let relays = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (gate, list) = (Arc::clone(&open), Arc::clone(&relays));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !gate.load(Ordering::SeqCst) {
                    // Closed at once: the client's handshake fails.
                    drop(client);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                list.lock().unwrap().push(relay);
            }
        });
        Self {
            addr,
            open,
            relays,
            task,
        }
    }

    /// `redis://<proxy address>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

/// A refresh store that keeps its Redis alive (see [`Owned`]).
mod owned_refresh_store {
    use portcullis::core::{StoreError, Timestamp};
    use portcullis::refresh::{Family, FamilyId, RefreshStore, RotateOutcome, Rotation};

    use super::Owned;

    #[async_trait::async_trait]
    impl<S: RefreshStore> RefreshStore for Owned<S> {
        async fn create(
            &self,
            family: &Family,
            max_per_user: Option<usize>,
        ) -> Result<Vec<Family>, StoreError> {
            self.store.create(family, max_per_user).await
        }
        async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
            self.store.rotate(rotation).await
        }
        async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
            self.store.get(id, now).await
        }
        async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
            self.store.revoke(id).await
        }
        async fn revoke_user(
            &self,
            user_id: &str,
            except: Option<&FamilyId>,
        ) -> Result<Vec<Family>, StoreError> {
            self.store.revoke_user(user_id, except).await
        }
        async fn list_user(
            &self,
            user_id: &str,
            now: Timestamp,
        ) -> Result<Vec<Family>, StoreError> {
            self.store.list_user(user_id, now).await
        }
        async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
            self.store.purge_expired(now).await
        }
    }
}
