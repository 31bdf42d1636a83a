//! A closed-loop HTTP/1.1 load generator on plain tokio sockets.
//!
//! Every connection sends one pre-serialized request, reads the response
//! (status line, `Content-Length`, body) and sends the next: one request in
//! flight per connection, keep-alive, no pipelining. Parsing is the least
//! that HTTP/1.1 needs, so that the client (pinned to its own core) is never
//! the bottleneck of a server pinned to the other. Latency is measured per
//! request from the first byte written to the last byte read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One finished request inside the measured window.
#[derive(Clone, Copy)]
pub struct Sample {
    /// Wall-clock start, microseconds since the Unix epoch (to line up with
    /// events the server reports, such as a purge).
    pub start_unix_us: u64,
    /// Latency in nanoseconds.
    pub latency_ns: u32,
}

/// What one load run measured.
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub errors: u64,
    pub window: Duration,
    /// Every response received, warm-up included.
    pub total: u64,
}

/// A serialized request.
pub fn request(method: &str, path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (k, v) in headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    if method == "POST" {
        out.push_str("content-length: 0\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A parsed response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response from `stream`; `buf` keeps bytes read past it (none
/// in a closed loop). Returns the status and the header block and body when
/// `keep` is set.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    keep: bool,
) -> std::io::Result<(u16, Option<Response>)> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| std::io::Error::other("non-UTF-8 response head"))?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut len = 0usize;
    let mut headers = Vec::new();
    for line in head.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = v
                .parse()
                .map_err(|_| std::io::Error::other("bad content-length"))?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err(std::io::Error::other("chunked responses are not supported"));
        }
        if keep {
            headers.push((k.to_ascii_lowercase(), v.to_owned()));
        }
    }
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let resp = keep.then(|| Response {
        status,
        headers,
        body: buf[head_end..head_end + len].to_vec(),
    });
    buf.drain(..head_end + len);
    Ok((status, resp))
}

/// One request on a fresh connection (log in, admin calls).
pub async fn once(addr: SocketAddr, req: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(req).await?;
    let mut buf = Vec::new();
    let (_, resp) = read_response(&mut stream, &mut buf, true).await?;
    resp.ok_or_else(|| std::io::Error::other("no response"))
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

async fn connection(
    addr: SocketAddr,
    req: Arc<[u8]>,
    measure_from: Instant,
    end: Instant,
) -> std::io::Result<(Vec<Sample>, u64, u64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut samples = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut total = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let wall = unix_us();
        stream.write_all(&req).await?;
        let (status, _) = read_response(&mut stream, &mut buf, false).await?;
        let t1 = Instant::now();
        total += 1;
        if t0 >= measure_from && t1 <= end {
            if (200..300).contains(&status) {
                samples.push(Sample {
                    start_unix_us: wall,
                    latency_ns: u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX),
                });
            } else {
                errors += 1;
            }
        }
    }
    Ok((samples, errors, total))
}

/// Runs `conns` connections for `warmup + secs`, connection `i` sending
/// `reqs[i % reqs.len()]`; `at_start` and `at_end` run
/// when the measured window opens and closes (to sample the server's CPU
/// time). Only requests that started and finished inside the window count.
pub async fn run(
    addr: SocketAddr,
    reqs: Vec<Vec<u8>>,
    conns: usize,
    warmup: Duration,
    window: Duration,
    at_start: impl FnOnce(),
    at_end: impl FnOnce(),
) -> std::io::Result<Outcome> {
    let reqs: Vec<Arc<[u8]>> = reqs.into_iter().map(Into::into).collect();
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + window;
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let req = Arc::clone(&reqs[i % reqs.len()]);
            tokio::spawn(connection(addr, req, measure_from, end))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    at_start();
    tokio::time::sleep_until(end.into()).await;
    at_end();
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut total = 0;
    for t in tasks {
        let (s, e, n) = t.await.map_err(std::io::Error::other)??;
        samples.extend_from_slice(&s);
        errors += e;
        total += n;
    }
    Ok(Outcome {
        samples,
        errors,
        window,
        total,
    })
}

async fn connection_until(
    addr: SocketAddr,
    req: Arc<[u8]>,
    measure_from: Instant,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(Vec<Sample>, u64, u64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut samples = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut total = 0;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let wall = unix_us();
        stream.write_all(&req).await?;
        let (status, _) = read_response(&mut stream, &mut buf, false).await?;
        let t1 = Instant::now();
        total += 1;
        if t0 >= measure_from {
            if (200..300).contains(&status) {
                samples.push(Sample {
                    start_unix_us: wall,
                    latency_ns: u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX),
                });
            } else {
                errors += 1;
            }
        }
    }
    Ok((samples, errors, total))
}

/// Like [`run`], for a window of unknown length: the connections run until
/// `stop` is set (after `warmup`, every request counts).
pub async fn run_until(
    addr: SocketAddr,
    req: Vec<u8>,
    conns: usize,
    warmup: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Outcome> {
    let req: Arc<[u8]> = req.into();
    let measure_from = Instant::now() + warmup;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(connection_until(
                addr,
                Arc::clone(&req),
                measure_from,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut total = 0;
    for t in tasks {
        let (s, e, n) = t.await.map_err(std::io::Error::other)??;
        samples.extend_from_slice(&s);
        errors += e;
        total += n;
    }
    Ok(Outcome {
        samples,
        errors,
        window: measure_from.elapsed(),
        total,
    })
}

/// The `q` quantile (0..=1) of sorted latencies, in microseconds.
pub fn quantile_us(sorted_ns: &[u32], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted_ns[i]) / 1000.0
}
