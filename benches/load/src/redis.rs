//! A throwaway `redis-server` for the Redis contenders, and `INFO` over a
//! plain socket (commands processed, memory used).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// Starts `redis-server` on a free port, pinned to `cpu` when given,
    /// without persistence. `None` when there is no `redis-server`.
    pub fn start(cpu: Option<&str>) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu, "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut r = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if r.info("server").is_some() {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = r.child.kill();
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command and returns the bulk string reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        match line.as_bytes().first()? {
            b'$' => {
                let n: usize = line[1..].trim().parse().ok()?;
                let mut body = vec![0u8; n + 2];
                r.read_exact(&mut body).ok()?;
                body.truncate(n);
                String::from_utf8(body).ok()
            }
            b'+' | b':' => Some(line[1..].trim().to_owned()),
            _ => None,
        }
    }

    pub fn info(&self, section: &str) -> Option<String> {
        self.command(&["INFO", section])
    }

    /// A numeric field of `INFO section`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<u64> {
        let text = self.info(section)?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn commands_processed(&self) -> u64 {
        self.info_field("stats", "total_commands_processed")
            .unwrap_or(0)
    }

    pub fn used_memory(&self) -> u64 {
        self.info_field("memory", "used_memory").unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
