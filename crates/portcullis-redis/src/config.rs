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
/// (connecting included), 100 ms pause after a failed connection attempt,
/// and, for a `rediss://` URL (feature `tls`), the system's root
/// certificates.
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    target: Target,
    key_prefix: String,
    timeout: Duration,
    reconnect_backoff: Duration,
    /// PEM: the only roots a TLS connection trusts, when set.
    #[cfg(feature = "tls")]
    tls_root_ca: Option<Vec<u8>>,
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
        let mut out = f.debug_struct("RedisConfig");
        out.field("target", &self.target)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("reconnect_backoff", &self.reconnect_backoff);
        #[cfg(feature = "tls")]
        out.field(
            "tls_roots",
            &if self.tls_root_ca.is_some() {
                "configured CA"
            } else {
                "system"
            },
        );
        out.finish()
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
pub(crate) use portcullis_core::store::redact_url as redact;

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
    /// A `rediss://` (or `valkeys://`) URL, but this build of
    /// portcullis-redis has no TLS: turn on its `tls` feature.
    #[error("a rediss:// (TLS) URL needs the `tls` feature of portcullis-redis")]
    TlsFeatureDisabled,
    /// A `rediss://` URL ending in `#insecure`, which would turn certificate
    /// verification off: not supported. A server whose certificate a
    /// private CA signed is reached by trusting that CA
    /// (`RedisConfig::tls_root_ca_pem`, feature `tls`).
    #[error(
        "rediss://...#insecure (no certificate verification) is not supported; trust the server's CA instead"
    )]
    TlsInsecure,
    /// Cluster node URLs that mix `redis://` and `rediss://`.
    #[error("the cluster's node URLs must all use TLS (rediss://) or none")]
    TlsMixed,
    /// A TLS root CA is configured, but the target is not a `rediss://`
    /// URL: the connection would not use it (nor TLS at all).
    #[error("a TLS root CA is configured, but the Redis URL is not rediss://")]
    RootCaWithoutTls,
    /// The TLS root CA PEM holds no certificate.
    #[error("the TLS root CA PEM holds no certificate")]
    NoRootCa,
    /// The TLS root CA PEM does not parse, or a certificate in it is not a
    /// usable trust anchor.
    #[error("invalid TLS root CA")]
    TlsRootCa(#[source] RedisError),
}

impl RedisConfig {
    /// One Redis server (or a proxy in front of several), by URL:
    /// `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS
    /// (feature `tls`; see [the crate docs](crate#tls)),
    /// `redis+unix:///path`. Valkey answers the same URLs, and also
    /// `valkey://` and `valkeys://`.
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
            #[cfg(feature = "tls")]
            tls_root_ca: None,
        }
    }

    /// Trusts only the CA certificates in `pem` (one or more PEM
    /// `CERTIFICATE` blocks) to sign the server's certificate on a
    /// `rediss://` connection, instead of the system's roots: for a Redis
    /// whose certificate a private CA signed. Feature `tls`.
    ///
    /// The server's certificate must still name the URL's host. The PEM is
    /// checked by [`build`](Self::build), which refuses it with a URL that
    /// is not `rediss://`.
    ///
    /// ```no_run
    /// use portcullis_redis::RedisConfig;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/myapp/redis-ca.pem")?;
    /// let backend = RedisConfig::new("rediss://:password@redis.internal:6380/")
    ///     .tls_root_ca_pem(ca)
    ///     .build()?;
    /// # let _ = backend;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_ca = Some(pem.into());
        self
    }

    /// The configured TLS root CA PEM, if any.
    #[allow(clippy::unused_self)]
    fn root_ca(&self) -> Option<&[u8]> {
        #[cfg(feature = "tls")]
        return self.tls_root_ca.as_deref();
        #[cfg(not(feature = "tls"))]
        None
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
    /// bad key prefix or a zero timeout; and for TLS: a `rediss://` URL
    /// without the `tls` feature, `#insecure`, cluster URLs mixing TLS and
    /// plain, a root CA that does not parse or holds no certificate, or a
    /// root CA with a target that is not `rediss://`.
    ///
    /// With TLS, the first build installs rustls' aws-lc-rs provider as the
    /// process default if the application has installed none (redis-rs
    /// builds its TLS configuration from the process default).
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
        let roots = self.root_ca();
        let source = match &self.target {
            Target::Url(url) => {
                if check_transport(url, TLS_BUILT_IN, roots.is_some())? {
                    tls_ready(roots)?;
                }
                let client = client(url, roots)?;
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
                let tls = urls
                    .iter()
                    .map(|url| check_transport(url, TLS_BUILT_IN, roots.is_some()))
                    .collect::<Result<Vec<_>, _>>()?;
                if tls.iter().any(|t| *t != tls[0]) {
                    return Err(RedisConfigError::TlsMixed);
                }
                if tls[0] {
                    tls_ready(roots)?;
                }
                // Plain clients for the nodes given: the revocation
                // store's subscriber connects to one of them (a message
                // published on any node of a cluster reaches every node).
                let nodes = urls
                    .iter()
                    .map(|url| client(url, roots))
                    .collect::<Result<Vec<_>, _>>()?;
                let builder =
                    deadpool_redis::redis::cluster::ClusterClientBuilder::new(urls.clone())
                        .connection_timeout(self.timeout)
                        .response_timeout(self.timeout)
                        .retries(2);
                #[cfg(feature = "tls")]
                let builder = match roots {
                    Some(pem) => builder.certs(root_certificates(pem)),
                    None => builder,
                };
                let client = builder.build().map_err(RedisConfigError::Url)?;
                Source::Shared(Box::new(SharedConnection::new(Factory::Cluster(
                    client, nodes,
                ))))
            }
            Target::Pool(pool) => {
                if roots.is_some() {
                    return Err(RedisConfigError::RootCaWithoutTls);
                }
                Source::Pool(pool.clone())
            }
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

/// Whether this build can open TLS connections (feature `tls`).
const TLS_BUILT_IN: bool = cfg!(feature = "tls");

/// Checks one URL's transport against what is built in and configured;
/// `Ok(true)` for a TLS URL (`rediss://`, `valkeys://`).
///
/// Checked here rather than left to redis-rs, whose answer depends on the
/// features some other crate of the build may have turned on: a TLS URL
/// without this crate's `tls` feature, or with `#insecure`, is refused
/// whatever redis-rs would accept.
fn check_transport(url: &str, tls_built_in: bool, root_ca: bool) -> Result<bool, RedisConfigError> {
    let tls = url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
    });
    if !tls {
        return if root_ca {
            Err(RedisConfigError::RootCaWithoutTls)
        } else {
            Ok(false)
        };
    }
    if !tls_built_in {
        return Err(RedisConfigError::TlsFeatureDisabled);
    }
    if url
        .split_once('#')
        .is_some_and(|(_, fragment)| fragment == "insecure")
    {
        return Err(RedisConfigError::TlsInsecure);
    }
    Ok(true)
}

/// Checks the root CA PEM (when one is configured) and makes sure rustls
/// has a process-wide crypto provider before redis-rs asks for it.
fn tls_ready(roots: Option<&[u8]>) -> Result<(), RedisConfigError> {
    #[cfg(feature = "tls")]
    {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        if let Some(pem) = roots {
            // Unparsable blocks are left to redis-rs, which says why.
            if CertificateDer::pem_slice_iter(pem).next().is_none() {
                return Err(RedisConfigError::NoRootCa);
            }
        }
        // rustls picks the provider its crate features name, and panics
        // when a build turns on two of them: install ours first. Losing a
        // race with another installer is fine: a provider is installed.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
    }
    #[cfg(not(feature = "tls"))]
    let _ = roots;
    Ok(())
}

/// The redis-rs certificates for trusting `pem` only.
#[cfg(feature = "tls")]
fn root_certificates(pem: &[u8]) -> deadpool_redis::redis::TlsCertificates {
    deadpool_redis::redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// A client for `url`, trusting `roots` only (when set) on TLS.
fn client(url: &str, roots: Option<&[u8]>) -> Result<Client, RedisConfigError> {
    let client = Client::open(url).map_err(RedisConfigError::Url)?;
    #[cfg(feature = "tls")]
    if let Some(pem) = roots {
        return Client::build_with_tls(
            client.get_connection_info().clone(),
            root_certificates(pem),
        )
        .map_err(RedisConfigError::TlsRootCa);
    }
    #[cfg(not(feature = "tls"))]
    let _ = roots;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an error is the one expected.
    type Is = fn(&RedisConfigError) -> bool;

    #[test]
    fn transport_checks() {
        use RedisConfigError as E;
        // (url, tls built in, root CA configured, expected)
        let cases: &[(&str, bool, bool, Result<bool, Is>)] = &[
            ("redis://127.0.0.1/", true, false, Ok(false)),
            ("redis://127.0.0.1/", false, false, Ok(false)),
            ("redis+unix:///tmp/r.sock", true, false, Ok(false)),
            ("valkey://127.0.0.1/", true, false, Ok(false)),
            ("rediss://127.0.0.1/", true, false, Ok(true)),
            ("rediss://127.0.0.1/", true, true, Ok(true)),
            ("REDISS://127.0.0.1/", true, false, Ok(true)),
            ("valkeys://127.0.0.1/", true, false, Ok(true)),
            (
                "rediss://127.0.0.1/",
                false,
                false,
                Err(|e| matches!(e, E::TlsFeatureDisabled)),
            ),
            (
                "valkeys://h/",
                false,
                false,
                Err(|e| matches!(e, E::TlsFeatureDisabled)),
            ),
            (
                "rediss://h/#insecure",
                true,
                false,
                Err(|e| matches!(e, E::TlsInsecure)),
            ),
            (
                "rediss://h/#insecure",
                true,
                true,
                Err(|e| matches!(e, E::TlsInsecure)),
            ),
            (
                "redis://127.0.0.1/",
                true,
                true,
                Err(|e| matches!(e, E::RootCaWithoutTls)),
            ),
            (
                "redis://127.0.0.1/",
                false,
                true,
                Err(|e| matches!(e, E::RootCaWithoutTls)),
            ),
        ];
        for (url, built_in, root_ca, want) in cases {
            let got = check_transport(url, *built_in, *root_ca);
            match (want, &got) {
                (Ok(want), Ok(got)) => assert_eq!(want, got, "{url}"),
                (Err(is), Err(e)) => assert!(is(e), "{url}: {e:?}"),
                _ => panic!("{url} built_in={built_in} root_ca={root_ca}: {got:?}"),
            }
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_tls_url_without_the_feature_is_refused_at_build() {
        for url in ["rediss://:hunter2@127.0.0.1:6380/", "valkeys://127.0.0.1/"] {
            let err = RedisConfig::new(url).build().unwrap_err();
            assert!(
                matches!(err, RedisConfigError::TlsFeatureDisabled),
                "{err:?}"
            );
            assert!(err.to_string().contains("`tls` feature"), "{err}");
            assert!(!format!("{err} {err:?}").contains("hunter2"));
        }
    }

    #[cfg(feature = "tls")]
    mod tls {
        use super::*;

        /// A self-signed CA certificate (nothing connects: only parsed).
        const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUfuueLQhWoKcJK1uT3eQJmhIRywMwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwScG9ydGN1bGxpcy10ZXN0LWNhMCAXDTI2MTIwNjE3MTEwNloY
DzIxMjYxMTEyMTcxMTA2WjAdMRswGQYDVQQDDBJwb3J0Y3VsbGlzLXRlc3QtY2Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAS7ACJeiS6PUmj0o+aEmUy8tmHNBaUH
gMWg+6/gZkrOvPiTr/lE/0llGzNaxVSINqT6adXKEmQwfYS7N/CJYGgMo1MwUTAd
BgNVHQ4EFgQULPrRBNmpYfhxlk+qk8MteJSxX5IwHwYDVR0jBBgwFoAULPrRBNmp
Yfhxlk+qk8MteJSxX5IwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF
AiBcDD6XuJbgbGANkWC5n7W3ZFl+xTAUKFtFIttJSlw0PgIhAIt9emoEGS/p2+y7
UNvUctsZYMe8j9TE/TEzatdJIPxr
-----END CERTIFICATE-----
";

        fn build(config: RedisConfig) -> Result<RedisBackend, RedisConfigError> {
            config.build()
        }

        #[test]
        fn a_root_ca_builds_with_a_tls_url_only() {
            let tls = RedisConfig::new("rediss://:hunter2@127.0.0.1:6380/").tls_root_ca_pem(CA);
            let debug = format!("{tls:?}");
            assert!(debug.contains("configured CA"), "{debug}");
            assert!(!debug.contains("hunter2"), "{debug}");
            build(tls).unwrap();
            let plain = build(RedisConfig::new("redis://127.0.0.1/").tls_root_ca_pem(CA));
            assert!(matches!(plain, Err(RedisConfigError::RootCaWithoutTls)));
        }

        #[test]
        fn a_root_ca_that_is_no_certificate_is_refused() {
            let url = "rediss://127.0.0.1:6380/";
            let none = build(RedisConfig::new(url).tls_root_ca_pem("not a PEM"));
            assert!(matches!(none, Err(RedisConfigError::NoRootCa)), "{none:?}");
            let key_only = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
            let none = build(RedisConfig::new(url).tls_root_ca_pem(key_only));
            assert!(matches!(none, Err(RedisConfigError::NoRootCa)), "{none:?}");
            let garbled = CA.replace("MIIBkTCC", "MIIB!TCC");
            let bad = build(RedisConfig::new(url).tls_root_ca_pem(garbled));
            assert!(
                matches!(bad, Err(RedisConfigError::TlsRootCa(_))),
                "{bad:?}"
            );
            let not_der = "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n";
            let bad = build(RedisConfig::new(url).tls_root_ca_pem(not_der));
            assert!(
                matches!(bad, Err(RedisConfigError::TlsRootCa(_))),
                "{bad:?}"
            );
        }

        #[test]
        fn insecure_tls_is_refused() {
            let err = build(RedisConfig::new("rediss://127.0.0.1:6380/#insecure")).unwrap_err();
            assert!(matches!(err, RedisConfigError::TlsInsecure), "{err:?}");
        }

        #[cfg(feature = "cluster")]
        #[test]
        fn cluster_urls_agree_on_tls() {
            let mixed = build(RedisConfig::cluster([
                "rediss://127.0.0.1:7000/",
                "redis://127.0.0.1:7001/",
            ]));
            assert!(
                matches!(mixed, Err(RedisConfigError::TlsMixed)),
                "{mixed:?}"
            );
            build(
                RedisConfig::cluster(["rediss://127.0.0.1:7000/", "rediss://127.0.0.1:7001/"])
                    .tls_root_ca_pem(CA),
            )
            .unwrap();
        }

        /// Run alone (nextest runs each test in its own process), the
        /// first build is what installs the provider.
        #[test]
        fn building_a_tls_backend_installs_a_crypto_provider() {
            build(RedisConfig::new("rediss://127.0.0.1:6380/")).unwrap();
            assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        }
    }
}
