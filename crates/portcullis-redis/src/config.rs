//! [`RedisConfig`]: where and how to reach Redis, validated into a
//! [`RedisBackend`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{AsyncConnectionConfig, Client, RedisError};

use crate::backend::{Inner, RedisBackend};
use crate::connection::{Factory, SharedConnection, Source};
/// Default bound on one Redis call, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Default pause after a failed connection attempt, during which calls fail
/// at once instead of trying again.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "portcullis";

/// Where and how to reach Redis; [`RedisConfig::build`] turns it into a
/// [`RedisBackend`] that stores share.
///
/// ```
/// use std::time::Duration;
/// use portcullis_redis::RedisConfig;
///
/// let backend = RedisConfig::new("redis://127.0.0.1:6379/")
///     .key_prefix("myapp")
///     .timeout(Duration::from_millis(200))
///     .build()
///     .unwrap();
/// assert_eq!(backend.key_prefix(), "myapp");
/// ```
///
/// Defaults: key prefix `portcullis`, every Redis call bounded by 250 ms
/// (connecting included), 100 ms pause after a failed connection attempt.
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    target: Target,
    key_prefix: String,
    timeout: Duration,
    reconnect_backoff: Duration,
}

#[derive(Clone)]
enum Target {
    Url(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    Pool(deadpool_redis::Pool),
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("target", &self.target)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .finish()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => f.debug_tuple("Url").field(&redact(url)).finish(),
            #[cfg(feature = "cluster")]
            Self::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
            Self::Pool(pool) => f
                .debug_tuple("Pool")
                .field(&pool.status().max_size)
                .finish(),
        }
    }
}

/// A URL without anything that may hold a credential: the user
/// information (`user:password@`) and the whole query (redis-rs reads
/// `?pass=` and `?user=` on `unix://` and `redis+unix://` URLs).
pub(crate) fn redact(url: &str) -> String {
    let (url, had_query) = match url.split_once('?') {
        Some((before, _)) => (before, true),
        None => (url, false),
    };
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://REDACTED@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    };
    if had_query {
        out.push_str("?REDACTED");
    }
    out
}

/// A [`RedisConfig`] that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL does not parse as a Redis URL.
    #[error("invalid Redis URL")]
    Url(#[source] RedisError),
    /// A cluster needs at least one node URL.
    #[error("a Redis Cluster needs at least one node URL")]
    NoNodes,
    /// The key prefix is empty, longer than 64 bytes, or holds whitespace or
    /// control characters.
    #[error("the key prefix must be 1 to 64 printable characters without whitespace")]
    KeyPrefix,
    /// The timeout is zero.
    #[error("the Redis timeout must be non-zero")]
    Timeout,
}

impl RedisConfig {
    /// One Redis server (or a proxy in front of several), by URL:
    /// `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS when
    /// `deadpool-redis` has a TLS feature, `redis+unix:///path`.
    ///
    /// The store keeps one multiplexed connection: concurrent calls share
    /// it (pipelined on the wire), and no health check is sent per call.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_target(Target::Url(url.into()))
    }

    /// A Redis Cluster, by the URLs of some of its nodes (the rest are
    /// discovered). Feature `cluster`.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster<I, U>(urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        Self::with_target(Target::Cluster(urls.into_iter().map(Into::into).collect()))
    }

    /// An existing `deadpool-redis` pool.
    ///
    /// Every call checks a connection out of the pool, and deadpool checks
    /// each checkout with an `UNWATCH` + `PING` exchange: one more round trip
    /// per call (two per session load instead of one). Prefer
    /// [`RedisConfig::new`] unless the application must share its pool.
    pub fn from_pool(pool: deadpool_redis::Pool) -> Self {
        Self::with_target(Target::Pool(pool))
    }

    fn with_target(target: Target) -> Self {
        Self {
            target,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
        }
    }

    /// The prefix of every key (default `portcullis`), so that several
    /// applications can share one Redis. The stores add `:` and their own
    /// namespace after it (see the [crate docs](crate#key-layout)).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Bounds every Redis call, connecting included (default 250 ms). When
    /// it passes the call fails with [`StoreError::timeout`](portcullis_core::StoreError::timeout) (layers answer
    /// 503) and the connection is replaced.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failed connection attempt, calls fail at once for this long
    /// (default 100 ms) rather than each trying to connect again.
    pub const fn reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// Checks the configuration and builds the backend. Connects lazily:
    /// nothing is sent to Redis until the first call, so an application
    /// starts (and answers 503 where it needs Redis) while Redis is down.
    ///
    /// # Errors
    ///
    /// [`RedisConfigError`] for an unparsable URL, an empty node list, a
    /// bad key prefix or a zero timeout.
    pub fn build(self) -> Result<RedisBackend, RedisConfigError> {
        let prefix = &self.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(RedisConfigError::KeyPrefix);
        }
        if self.timeout.is_zero() {
            return Err(RedisConfigError::Timeout);
        }
        let source = match self.target {
            Target::Url(url) => {
                let client = Client::open(url.as_str()).map_err(RedisConfigError::Url)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                Source::Shared(Box::new(SharedConnection::new(Factory::Single(
                    client, config,
                ))))
            }
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(RedisConfigError::NoNodes);
                }
                // Plain clients for the nodes given: the revocation
                // store's subscriber connects to one of them (a message
                // published on any node of a cluster reaches every node).
                let nodes = urls
                    .iter()
                    .map(|url| Client::open(url.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(RedisConfigError::Url)?;
                let client = deadpool_redis::redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(2)
                    .build()
                    .map_err(RedisConfigError::Url)?;
                Source::Shared(Box::new(SharedConnection::new(Factory::Cluster(
                    client, nodes,
                ))))
            }
            Target::Pool(pool) => Source::Pool(pool),
        };
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                source,
                key_prefix: self.key_prefix,
                timeout: self.timeout,
                reconnect_backoff: self.reconnect_backoff,
            }),
        })
    }
}
