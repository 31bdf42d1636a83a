//! `rediss://` against a real redis-server serving TLS with a CA this test
//! makes (rcgen): sessions round trip over TLS, a certificate the store
//! does not trust is refused before any command is sent, nothing falls
//! back to plain text, and the password never shows in `Debug` or errors.
//! Then Valkey (Debian's `valkey-server`): the session store conformance
//! suite on it, plain and over `valkeys://`.

use std::sync::Arc;
use std::time::Duration;

use portcullis::core::{
    Clock as _, ManualClock, OpaqueToken, SharedClock, StoreErrorKind, TokenDigest,
};
use portcullis::jwt::revocation::RevocationStore as _;
use portcullis::session::testing::{T0, record};
use portcullis::session::{SessionStore as _, SessionUpdate};
use portcullis_redis::{RedisConfig, RedisRevocationStore, RedisSessionStore};
use portcullis_tests::redis_harness::{
    Owned, RedisCluster, RedisServer, Reply, ServerOptions, TlsFiles, VALKEY_SERVER,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// Generous: these tests check behaviour, not latency.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The application's Redis user and its password (an ACL user, so that the
/// harness' own commands, as the default user, need none).
const USER: &str = "app";
const PASSWORD: &str = "s3cret-Pa55-7f1c";

/// A CA made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `hosts` (names or IP addresses), with its
    /// key and this CA, written to a fresh directory.
    fn server_files(&self, hosts: &[&str]) -> Pki {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            ca: dir.path().join("ca.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, self.pem()).unwrap();
        Pki { _dir: dir, files }
    }
}

/// A server's TLS files, kept while the server runs.
struct Pki {
    _dir: tempfile::TempDir,
    files: TlsFiles,
}

/// A server serving TLS with `pki`, with the application's ACL user.
fn tls_server(binary: Option<&str>, pki: &Pki) -> RedisServer {
    RedisServer::start_options(&ServerOptions {
        binary: binary.map(str::to_owned),
        // `user app on >password ~* &* +@all`, one word per argument.
        args: [
            "--user",
            USER,
            "on",
            &format!(">{PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ]
        .map(str::to_owned)
        .to_vec(),
        tls: Some(pki.files.clone()),
    })
}

/// `rediss://app:<password>@127.0.0.1:<TLS port>/`, in `scheme`.
fn url_with_password(server: &RedisServer, scheme: &str) -> String {
    let port = server.tls_port().unwrap();
    format!("{scheme}://{USER}:{PASSWORD}@127.0.0.1:{port}/")
}

fn store_on(config: RedisConfig) -> (RedisSessionStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let backend = config.timeout(TIMEOUT).build().unwrap();
    (RedisSessionStore::with_clock(backend, clock.clone()), clock)
}

fn digest() -> TokenDigest {
    OpaqueToken::generate().unwrap().digest()
}

/// The error and every source below it, `Display` and `Debug`.
fn whole(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{err} {err:?}");
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(&format!(" | {e} {e:?}"));
        source = e.source();
    }
    out
}

/// Calls of `command` the server has run (harness commands included).
fn calls(server: &RedisServer, command: &str) -> u64 {
    server.command_stats().calls(command)
}

/// Create, load, update, load, delete: the session store's whole cycle.
async fn round_trip(store: &RedisSessionStore, clock: &ManualClock) {
    let k = digest();
    let _ = store
        .create(&k, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap();
    let loaded = store.load(&k).await.unwrap().expect("the session");
    assert_eq!(loaded.user_id.as_deref(), Some("alice"));
    let now = clock.now();
    let update = SessionUpdate {
        set: [("cart".to_owned(), json!([1, 2]))].into(),
        last_seen: now,
        idle_deadline: now + Duration::from_secs(600),
        ..SessionUpdate::default()
    };
    store.update(&k, &update).await.unwrap();
    let loaded = store.load(&k).await.unwrap().expect("the session");
    assert_eq!(loaded.data.get("cart"), Some(&json!([1, 2])));
    assert_eq!(store.count_for_user("alice").await.unwrap(), 1);
    assert!(store.delete(&k).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap(), None);
}

#[tokio::test]
async fn sessions_round_trip_over_rediss_with_a_private_ca() {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    let (store, clock) =
        store_on(RedisConfig::new(url_with_password(&server, "rediss")).tls_root_ca_pem(ca.pem()));
    round_trip(&store, &clock).await;
    // The commands reached the server, through its TLS port (the only one
    // the store was given), as the application's user.
    assert!(calls(&server, "get") >= 2, "{:?}", server.command_stats());
    assert!(calls(&server, "auth") >= 1 || calls(&server, "hello") >= 1);
}

#[tokio::test]
async fn a_certificate_the_store_does_not_trust_is_refused_before_any_command() {
    let ca = Ca::new("the server's CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    let other = Ca::new("another CA");
    // A certificate from the trusted CA, but for another host.
    let wrong_host = ca.server_files(&["redis.invalid"]);
    let wrong_host_server = tls_server(None, &wrong_host);
    let cases = [
        (
            "the system's roots (no test CA among them)",
            &server,
            RedisConfig::new(url_with_password(&server, "rediss")),
        ),
        (
            "another CA",
            &server,
            RedisConfig::new(url_with_password(&server, "rediss")).tls_root_ca_pem(other.pem()),
        ),
        (
            "the right CA, the wrong host",
            &wrong_host_server,
            RedisConfig::new(url_with_password(&wrong_host_server, "rediss"))
                .tls_root_ca_pem(ca.pem()),
        ),
    ];
    for (case, target, config) in cases {
        let (store, clock) = store_on(config);
        let k = digest();
        let err = store.load(&k).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Backend, "{case}: {err:?}");
        let text = whole(&err);
        assert!(text.contains("certificate"), "{case}: {text}");
        assert!(!text.contains(PASSWORD), "{case}: {text}");
        let err = store
            .create(&k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Backend, "{case}: {err:?}");
        // Nothing ran: no login, no read, no write.
        for command in ["auth", "hello", "get", "set", "evalsha", "eval"] {
            assert_eq!(calls(target, command), 0, "{case}: {command}");
        }
        assert_eq!(target.dbsize(), 0, "{case}");
    }
}

#[tokio::test]
async fn rediss_to_a_plain_text_port_never_talks_in_clear() {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    // rediss:// at the port that speaks plain RESP.
    let url = format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{}/", server.port());
    // Redis reads the handshake as the start of a command and waits for
    // the rest: the handshake fails, or times out (the default bound,
    // 250 ms).
    let clock = Arc::new(ManualClock::new(T0));
    let backend = RedisConfig::new(url)
        .tls_root_ca_pem(ca.pem())
        .build()
        .unwrap();
    let store = RedisSessionStore::with_clock(backend, clock.clone());
    let k = digest();
    let err = store.load(&k).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            StoreErrorKind::Backend | StoreErrorKind::Timeout
        ),
        "{err:?}"
    );
    assert!(!whole(&err).contains(PASSWORD));
    let err = store
        .create(&k, &record(Some("alice"), clock.now()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            StoreErrorKind::Backend | StoreErrorKind::Timeout
        ),
        "{err:?}"
    );
    for command in ["auth", "hello", "get", "set", "evalsha", "eval"] {
        assert_eq!(calls(&server, command), 0, "{command}");
    }
    assert_eq!(server.dbsize(), 0);
}

#[tokio::test]
async fn the_password_never_shows_in_debug_or_errors() {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    let url = url_with_password(&server, "rediss");
    let config = RedisConfig::new(url.clone())
        .tls_root_ca_pem(ca.pem())
        .timeout(TIMEOUT);
    let debug = format!("{config:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("rediss://REDACTED@127.0.0.1"), "{debug}");
    let backend = config.build().unwrap();
    let store = RedisSessionStore::new(backend.clone());
    for debug in [format!("{backend:?}"), format!("{store:?}")] {
        assert!(!debug.contains(PASSWORD), "{debug}");
    }
    // It is the right password: the store works.
    assert_eq!(store.load(&digest()).await.unwrap(), None);

    // Errors: a wrong password, a refused certificate, bad configurations.
    let wrong = url.replace(PASSWORD, "not-the-s3cret");
    let (bad_login, _) = store_on(RedisConfig::new(wrong).tls_root_ca_pem(ca.pem()));
    let err = bad_login.load(&digest()).await.unwrap_err();
    assert!(!whole(&err).contains("not-the-s3cret"), "{}", whole(&err));
    let (untrusting, _) = store_on(RedisConfig::new(url.clone()));
    let err = untrusting.load(&digest()).await.unwrap_err();
    assert!(!whole(&err).contains(PASSWORD), "{}", whole(&err));
    for config in [
        RedisConfig::new(format!("{url}#insecure")),
        RedisConfig::new(url.replace("rediss", "redis")).tls_root_ca_pem(ca.pem()),
        RedisConfig::new(url.clone()).tls_root_ca_pem("no certificate here"),
        RedisConfig::new(url.replace("127.0.0.1", "[::zz]")),
    ] {
        let err = config.build().unwrap_err();
        let text = whole(&err);
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

/// A Redis Cluster over TLS: the configured CA verifies every node, the
/// ones the client discovers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_verifies_every_node() {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let cluster = RedisCluster::start_tls(&pki.files);
    // One node given: the client finds the others (at their TLS ports).
    let (store, clock) =
        store_on(RedisConfig::cluster(&cluster.tls_urls()[..1]).tls_root_ca_pem(ca.pem()));
    let before = cluster.dbsizes();
    let keys: Vec<TokenDigest> = (0..30).map(|_| digest()).collect();
    for k in &keys {
        let _ = store
            .create(k, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
    }
    let after = cluster.dbsizes();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "sessions on every node: {before:?} -> {after:?}"
    );
    assert_eq!(store.count_for_user("alice").await.unwrap(), 30);
    assert_eq!(
        store
            .delete_for_user("alice", Some(&keys[0]))
            .await
            .unwrap(),
        29
    );
    assert!(store.load(&keys[0]).await.unwrap().is_some());

    let (untrusting, _) = store_on(
        RedisConfig::cluster(cluster.tls_urls()).tls_root_ca_pem(Ca::new("another CA").pem()),
    );
    let err = untrusting.load(&keys[0]).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Backend, "{err:?}");
}

/// The revocation store's pub/sub subscriber connects over TLS as well: a
/// revocation on one instance reaches the other's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_other_instances_over_tls() {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let instance = || {
        let backend = RedisConfig::new(url_with_password(&server, "rediss"))
            .tls_root_ca_pem(ca.pem())
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        RedisRevocationStore::builder(backend)
            .clock(clock.clone())
            .start()
            .unwrap()
    };
    let (a, b) = (instance(), instance());
    for store in [&a, &b] {
        assert!(
            store.wait_synced(Duration::from_secs(5)).await,
            "first snapshot"
        );
    }
    let exp = i64::try_from(clock.now().secs()).unwrap() + 600;
    a.revoke_session("family-1", exp).await.unwrap();
    let view = b.view();
    let start = std::time::Instant::now();
    while !view.is_session_revoked("family-1") {
        assert!(start.elapsed() < Duration::from_secs(5), "never reached b");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        calls(&server, "subscribe") >= 2,
        "{:?}",
        server.command_stats()
    );
}

/// The default roots are the system's: a process whose system store (here
/// `SSL_CERT_FILE`, which rustls-native-certs reads) holds the test CA
/// connects without `tls_root_ca_pem`.
///
/// The test runs itself again in a child process (the system store is
/// read from the environment of the process); in the child,
/// `PORTCULLIS_TLS_CHILD_URL` is set and the test does the round trip.
#[test]
fn the_system_roots_are_trusted_by_default() {
    if let Ok(url) = std::env::var("PORTCULLIS_TLS_CHILD_URL") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (store, clock) = store_on(RedisConfig::new(url));
            round_trip(&store, &clock).await;
        });
        return;
    }
    let ca = Ca::new("a CA in the system store");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    let run = |cert_file: &std::path::Path| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_system_roots_are_trusted_by_default",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("SSL_CERT_FILE", cert_file)
            .env_remove("SSL_CERT_DIR")
            .env(
                "PORTCULLIS_TLS_CHILD_URL",
                url_with_password(&server, "rediss"),
            )
            .output()
            .unwrap()
    };
    let trusted = run(&pki.files.ca);
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // The same child with another CA in the system store is refused.
    let other = Ca::new("another CA");
    let other_file = pki.files.ca.with_file_name("other-ca.pem");
    std::fs::write(&other_file, other.pem()).unwrap();
    let refused = run(&other_file);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success() && output.contains("UnknownIssuer"),
        "{output}"
    );
}

/// A fresh TLS Redis per store, trusting its CA: the store keeps the
/// server (and its files) alive.
async fn tls_store(clock: SharedClock) -> Owned<RedisSessionStore> {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(None, &pki);
    let backend = RedisConfig::new(url_with_password(&server, "rediss"))
        .tls_root_ca_pem(ca.pem())
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    Owned::new(
        RedisSessionStore::with_clock(backend, clock),
        Arc::new((server, pki)),
    )
}

/// The whole conformance suite over TLS (every script, over the
/// encrypted connection).
mod over_tls {
    portcullis::session::session_store_conformance!(super::tls_store);
}

/// A fresh Valkey per store.
async fn valkey_store(clock: SharedClock) -> Owned<RedisSessionStore> {
    let server = RedisServer::start_valkey();
    assert_eq!(server.binary(), VALKEY_SERVER);
    let backend = RedisConfig::new(server.url())
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    Owned::new(
        RedisSessionStore::with_clock(backend, clock),
        Arc::new(server),
    )
}

/// The conformance suite on Valkey.
mod valkey {
    portcullis::session::session_store_conformance!(super::valkey_store);
}

#[tokio::test]
async fn valkey_serves_sessions_over_valkeys() {
    let ca = Ca::new("portcullis test CA");
    let pki = ca.server_files(&["127.0.0.1"]);
    let server = tls_server(Some(VALKEY_SERVER), &pki);
    let Reply::Bulk(Some(info)) = server.command(&["INFO", "server"]) else {
        panic!("INFO server");
    };
    assert!(
        String::from_utf8_lossy(&info).contains("valkey_version:"),
        "a Valkey server"
    );
    let (store, clock) =
        store_on(RedisConfig::new(url_with_password(&server, "valkeys")).tls_root_ca_pem(ca.pem()));
    round_trip(&store, &clock).await;
    assert!(calls(&server, "get") >= 2);
}
