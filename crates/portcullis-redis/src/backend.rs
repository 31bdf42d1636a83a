//! [`RedisBackend`]: what every Redis store calls through. Each call is
//! bounded by the timeout, retried once on a fresh connection when it is
//! idempotent and its connection broke, and mapped to a `StoreError`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{
    self, Cmd, ErrorKind, FromRedisValue, RedisError, ScriptInvocation, ServerErrorKind,
};
use portcullis_core::StoreError;
use tokio::time::{Instant, timeout_at};

use crate::connection::{Conn, Factory, Lease, Source, unavailable};

/// A connection to Redis shared by the stores built on it. Cheap to clone.
///
/// Built by [`RedisConfig::build`](crate::RedisConfig::build). Every call is bounded by the configured
/// timeout (connecting included) and fails with [`StoreError::timeout`] or
/// [`StoreError::backend`] when Redis does not answer; a connection that
/// failed or timed out is dropped and the next call opens a new one, so
/// service resumes by itself when Redis comes back.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) source: Source,
    pub(crate) key_prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) reconnect_backoff: Duration,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner.source {
            Source::Shared(shared) => match shared.factory {
                Factory::Single(..) => "multiplexed",
                #[cfg(feature = "cluster")]
                Factory::Cluster(..) => "cluster",
            },
            Source::Pool(_) => "pool",
        };
        f.debug_struct("RedisBackend")
            .field("connection", &kind)
            .field("key_prefix", &self.inner.key_prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Whether sending a call twice has the effect (and the answer) of sending
/// it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "session"), allow(dead_code))]
pub(crate) enum Idempotent {
    Yes,
    No,
}

/// How an attempt failed.
enum Failure {
    /// On a connection now dropped: may be retried if idempotent.
    Broken(StoreError),
    /// Anything else (a timeout is final: no time is left).
    Final(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Self::Broken(e) | Self::Final(e) => e,
        }
    }
}

/// One call: a command or a script.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "session"), allow(dead_code))]
pub(crate) enum Op<'a> {
    Cmd(&'a Cmd),
    Script(&'a ScriptInvocation<'a>),
    /// Commands sent together and answered together: one round trip (on a
    /// cluster, every command of a pipeline must be in one slot).
    #[cfg(feature = "throttle")]
    Pipeline(&'a redis::Pipeline),
    /// A command sent where `routing` says on a cluster (a plain command
    /// elsewhere).
    #[cfg(feature = "cluster")]
    Routed(&'a Cmd, &'a redis::cluster_routing::RoutingInfo),
}

/// Whether an error leaves the connection in doubt (so it is replaced):
/// everything but an answer from the server, and `READONLY`: the server is
/// now a replica (after a failover), so a new connection, which resolves
/// the address again, should reach the new primary.
fn breaks_connection(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => true,
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType => false,
        _ => true,
    }
}

impl RedisBackend {
    /// The key prefix.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The bound on one Redis call.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The pause after a failed connection attempt.
    #[must_use]
    pub fn reconnect_backoff(&self) -> Duration {
        self.inner.reconnect_backoff
    }

    /// This host's clock minus Redis' (`TIME`), in milliseconds: positive
    /// when this host is ahead. Measured against the middle of one call, so
    /// it is exact to about half a round trip.
    ///
    /// The stores judge expiry by the application's clock (see the [crate
    /// docs](crate#clocks)) and tolerate a skew between instances below
    /// [`EXPIRY_GRACE`](crate::EXPIRY_GRACE); every instance measuring
    /// its skew against the one Redis bounds the skew between any two (at
    /// most the sum of theirs). Use it in a health check.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when Redis does not answer (or answers nonsense).
    pub async fn clock_skew(&self) -> Result<i64, StoreError> {
        let before = std::time::SystemTime::now();
        let (secs, micros): (u64, u64) = self
            .run(Op::Cmd(&redis::cmd("TIME")), Idempotent::Yes)
            .await?;
        let after = std::time::SystemTime::now();
        let since_epoch = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i128::try_from(d.as_micros()).unwrap_or(i128::MAX))
        };
        let here = (since_epoch(before) + since_epoch(after)) / 2;
        let redis = i128::from(secs) * 1_000_000 + i128::from(micros);
        i64::try_from((here - redis) / 1000).map_err(|_| StoreError::backend(UnexpectedTime))
    }

    /// Redis' clock (`TIME`) in whole seconds since the epoch.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) async fn server_secs(&self) -> Result<i64, StoreError> {
        let (secs, _micros): (u64, u64) = self
            .run(Op::Cmd(&redis::cmd("TIME")), Idempotent::Yes)
            .await?;
        i64::try_from(secs).map_err(|_| StoreError::backend(UnexpectedTime))
    }

    /// Sends `PING`: checks that Redis answers (for a readiness probe, or to
    /// connect eagerly at start).
    ///
    /// # Errors
    ///
    /// [`StoreError::backend`] or [`StoreError::timeout`] when Redis does
    /// not answer in time.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .run(Op::Cmd(&redis::cmd("PING")), Idempotent::Yes)
            .await?;
        Ok(())
    }

    /// Plain clients for a dedicated connection (the revocation store's
    /// pub/sub subscriber): the server's, or each configured cluster
    /// node's. None for a pool, which does not say where it connects.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn subscriber_clients(&self) -> Vec<redis::Client> {
        match &self.inner.source {
            Source::Shared(shared) => match &shared.factory {
                Factory::Single(client, _) => vec![client.clone()],
                #[cfg(feature = "cluster")]
                Factory::Cluster(_, nodes) => nodes.clone(),
            },
            Source::Pool(_) => Vec::new(),
        }
    }

    /// The names of the keys matching `pattern` (a `SCAN MATCH` glob), on
    /// every primary of a cluster. A key present from start to end is
    /// listed once; keys created or deleted meanwhile may or may not be.
    /// Each `SCAN` call has its own time bound.
    #[cfg_attr(not(feature = "refresh"), allow(dead_code))]
    pub(crate) async fn scan_match(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        #[cfg(feature = "cluster")]
        if let Source::Shared(shared) = &self.inner.source {
            if matches!(shared.factory, Factory::Cluster(..)) {
                return self.scan_cluster(pattern).await;
            }
        }
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let cmd = scan_cmd(cursor, pattern);
            let (next, batch): (u64, Vec<Vec<u8>>) =
                self.run(Op::Cmd(&cmd), Idempotent::Yes).await?;
            keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// `SCAN` on every primary: the first call fans out to all of them,
    /// then each node's cursor is followed on that node.
    #[cfg(feature = "cluster")]
    async fn scan_cluster(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};

        let mut keys = Vec::new();
        let first = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply: redis::Value = self
            .run(Op::Routed(&scan_cmd(0, pattern), &first), Idempotent::Yes)
            .await?;
        let redis::Value::Map(nodes) = reply else {
            return Err(StoreError::backend(UnexpectedScanReply));
        };
        for (addr, page) in nodes {
            let addr: String = redis::from_redis_value(addr)
                .map_err(|_| StoreError::backend(UnexpectedScanReply))?;
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| StoreError::backend(UnexpectedScanReply))?;
            let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut page = page;
            loop {
                if let redis::Value::ServerError(e) = page {
                    return Err(StoreError::backend(RedisError::from(e)));
                }
                let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(page)
                    .map_err(|_| StoreError::backend(UnexpectedScanReply))?;
                keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
                if next == 0 {
                    break;
                }
                page = self
                    .run(Op::Routed(&scan_cmd(next, pattern), &node), Idempotent::Yes)
                    .await?;
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Runs one command or script under the timeout; replaces the
    /// connection when the call leaves it in doubt. An idempotent call that
    /// failed on a broken connection (say, one Redis closed when it
    /// restarted) is sent once more on a new connection, within the same
    /// time bound.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        op: Op<'_>,
        idempotent: Idempotent,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        match self.attempt(op, deadline).await {
            Err(Failure::Broken(_)) if idempotent == Idempotent::Yes => self
                .attempt(op, deadline)
                .await
                .map_err(Failure::into_error),
            result => result.map_err(Failure::into_error),
        }
    }

    async fn attempt<T: FromRedisValue>(
        &self,
        op: Op<'_>,
        deadline: Instant,
    ) -> Result<T, Failure> {
        let inner = &*self.inner;
        let mut lease = match &inner.source {
            // The usual case takes the current connection without waiting
            // (and without arming a timer).
            Source::Shared(shared) => match shared.current(inner.reconnect_backoff) {
                Some(Ok((generation, conn))) => Lease::Shared(generation, conn),
                Some(Err(e)) => return Err(Failure::Final(e)),
                None => match timeout_at(deadline, shared.get(inner.reconnect_backoff)).await {
                    Ok(Ok((generation, conn))) => Lease::Shared(generation, conn),
                    Ok(Err(e)) => return Err(Failure::Final(e)),
                    Err(_) => return Err(Failure::Final(StoreError::timeout())),
                },
            },
            Source::Pool(pool) => match timeout_at(deadline, pool.get()).await {
                Ok(Ok(conn)) => Lease::Pooled(conn),
                Ok(Err(e)) => return Err(Failure::Final(StoreError::backend(e))),
                Err(_) => return Err(Failure::Final(StoreError::timeout())),
            },
        };
        let result = match (op, &mut lease) {
            // One command on the multiplexed connection: its own response
            // timeout, set to what is left, bounds it (one timer, not two).
            (Op::Cmd(cmd), Lease::Shared(_, Conn::Multiplexed(conn))) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(())
                } else {
                    conn.set_response_timeout(left);
                    Ok(cmd.query_async(conn).await)
                }
            }
            _ => timeout_at(deadline, async {
                match op {
                    Op::Cmd(cmd) => cmd.query_async(&mut lease).await,
                    Op::Script(script) => script.invoke_async(&mut lease).await,
                    #[cfg(feature = "throttle")]
                    Op::Pipeline(pipe) => pipe.query_async(&mut lease).await,
                    #[cfg(feature = "cluster")]
                    Op::Routed(cmd, routing) => match &mut lease {
                        Lease::Shared(_, Conn::Cluster(c)) => c
                            .route_command(cmd.clone(), routing.clone())
                            .await
                            .and_then(|v| redis::from_redis_value(v).map_err(RedisError::from)),
                        _ => cmd.query_async(&mut lease).await,
                    },
                }
            })
            .await
            .map_err(|_| ()),
        };
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => {
                portcullis_core::event!(debug, reason = "redis-timeout", "Redis call timed out");
                self.discard(lease);
                Err(Failure::Final(StoreError::timeout()))
            }
            Ok(Err(e)) if breaks_connection(&e) => {
                self.discard(lease);
                Err(Failure::Broken(unavailable(e)))
            }
            Ok(Err(e)) => Err(Failure::Final(server_error(e))),
            Err(_) => {
                portcullis_core::event!(debug, reason = "redis-timeout", "Redis call timed out");
                self.discard(lease);
                Err(Failure::Final(StoreError::timeout()))
            }
        }
    }

    /// Drops a connection left in doubt.
    fn discard(&self, lease: Lease) {
        match (&self.inner.source, lease) {
            (Source::Shared(shared), Lease::Shared(generation, _)) => shared.discard(generation),
            // A pooled connection in doubt must not go back to the pool.
            (_, Lease::Pooled(conn)) => drop(deadpool_redis::Connection::take(conn)),
            (Source::Pool(_), Lease::Shared(..)) => {}
        }
    }
}

/// `SCAN <cursor> MATCH <pattern> COUNT 1000`.
#[cfg_attr(not(feature = "refresh"), allow(dead_code))]
fn scan_cmd(cursor: u64, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000);
    cmd
}

/// A `TIME` reply far outside any clock.
#[derive(Debug, thiserror::Error)]
#[error("Redis answered TIME with an impossible time")]
struct UnexpectedTime;

/// A `SCAN` reply of an unexpected shape.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply to SCAN")]
#[cfg_attr(not(all(feature = "refresh", feature = "cluster")), allow(dead_code))]
struct UnexpectedScanReply;

/// `pattern` with the glob characters of `SCAN MATCH` escaped: matches
/// exactly `literal`.
#[cfg_attr(not(feature = "refresh"), allow(dead_code))]
pub(crate) fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() + 8);
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An error the server answered with. `WRONGTYPE` means a key of ours holds
/// something we did not write: corrupt.
fn server_error(e: RedisError) -> StoreError {
    if e.code() == Some("WRONGTYPE") {
        StoreError::corrupt(e)
    } else {
        StoreError::backend(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_TIMEOUT, RedisConfig, RedisConfigError, redact};

    #[test]
    fn credentials_never_print() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://u:hunter2@h:1/0", "redis://REDACTED@h:1/0"),
            ("redis://:p@ss@h/0", "redis://REDACTED@h/0"),
            (
                "redis+unix:///run/redis.sock?db=0&pass=hunter2",
                "redis+unix:///run/redis.sock?REDACTED",
            ),
            ("unix:///s?user=u&pass=hunter2", "unix:///s?REDACTED"),
            (
                "rediss://u:hunter2@h/0?insecure",
                "rediss://REDACTED@h/0?REDACTED",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
            assert!(!redact(url).contains("hunter2"));
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/0"),
            "redis://REDACTED@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        let config = RedisConfig::new("redis://:s3cret@localhost/");
        assert!(!format!("{config:?}").contains("s3cret"));
        let backend = config.build().unwrap();
        assert!(!format!("{backend:?}").contains("s3cret"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        for prefix in ["", "a b", "tab\there", &"x".repeat(65)] {
            assert!(matches!(
                RedisConfig::new("redis://localhost/")
                    .key_prefix(prefix)
                    .build(),
                Err(RedisConfigError::KeyPrefix)
            ));
        }
        assert!(matches!(
            RedisConfig::new("redis://localhost/")
                .timeout(Duration::ZERO)
                .build(),
            Err(RedisConfigError::Timeout)
        ));
        assert!(matches!(
            RedisConfig::new("not a url").build(),
            Err(RedisConfigError::Url(_))
        ));
        assert!(
            RedisConfig::new("redis://localhost/")
                .key_prefix("app{1}")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn which_errors_replace_the_connection() {
        let io = |kind| RedisError::from(std::io::Error::from(kind));
        assert!(breaks_connection(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(breaks_connection(&io(std::io::ErrorKind::TimedOut)));
        assert!(breaks_connection(&RedisError::from((
            ErrorKind::Parse,
            "bad"
        ))));
        assert!(breaks_connection(&RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "replica"
        ))));
        assert!(!breaks_connection(&RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "script error"
        ))));
        assert!(!breaks_connection(&RedisError::from((
            ErrorKind::Extension,
            "WRONGTYPE"
        ))));
        assert!(
            unavailable(io(std::io::ErrorKind::TimedOut)).kind()
                == portcullis_core::StoreErrorKind::Timeout
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_and_bounded() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let backend = RedisConfig::new("redis://127.0.0.1:1/").build().unwrap();
        let started = std::time::Instant::now();
        let err = backend.ping().await.unwrap_err();
        assert!(err.is_unavailable());
        // The backoff answers the next call without trying again.
        let err = backend.ping().await.unwrap_err();
        assert!(err.is_unavailable());
        assert!(started.elapsed() < DEFAULT_TIMEOUT * 2);
    }
}
