//! The Greeter over a real socket with a real tonic client: statuses for
//! missing, expired, foreign and valid tokens, and the role-guarded method.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grpc_tonic::proto::{HelloRequest, StatsRequest};
use grpc_tonic::{ADMIN_ROLE, GreeterClient, serve, with_token};
use portcullis::core::{Clock as _, ManualClock, SystemClock};
use portcullis::jwt::{Algorithm, JwtIssuer, JwtIssuerBuilder, JwtLayer, SigningKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

const ISS: &str = "https://auth.grpc.test";
const AUD: &str = "greeter";

struct Fixture {
    key: SigningKey,
    issuer: JwtIssuer,
    client: GreeterClient,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Fixture {
    async fn start() -> Self {
        let key = SigningKey::generate("k1", Algorithm::ES256).unwrap();
        let issuer = JwtIssuer::builder(key.clone())
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        let jwt = JwtLayer::builder(issuer.keys())
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, jwt, async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            key,
            issuer,
            client: GreeterClient::new(channel),
            stop: Some(stop),
            server,
        }
    }

    /// A token signed by the same key but minted by `configure`'s issuer.
    fn token_from(&self, configure: impl FnOnce(JwtIssuerBuilder) -> JwtIssuerBuilder) -> String {
        let builder = JwtIssuer::builder(self.key.clone()).issuer(ISS);
        configure(builder)
            .build()
            .unwrap()
            .token("mallory")
            .mint()
            .unwrap()
            .token
    }

    async fn hello(&mut self, token: Option<&str>) -> Result<(String, String), tonic::Status> {
        let msg = HelloRequest { name: "you".into() };
        let request = match token {
            Some(t) => with_token(msg, t).unwrap(),
            None => tonic::Request::new(msg),
        };
        let reply = self.client.say_hello(request).await?.into_inner();
        Ok((reply.message, reply.subject))
    }

    async fn stats(&mut self, token: Option<&str>) -> Result<u64, tonic::Status> {
        let request = match token {
            Some(t) => with_token(StatsRequest {}, t).unwrap(),
            None => tonic::Request::new(StatsRequest {}),
        };
        Ok(self.client.stats(request).await?.into_inner().greetings)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn statuses_for_each_kind_of_token() {
    let mut f = Fixture::start().await;
    let bob = f.issuer.token("bob").mint().unwrap().token;
    let alice = f
        .issuer
        .token("alice")
        .roles([ADMIN_ROLE])
        .mint()
        .unwrap()
        .token;

    // No token: UNAUTHENTICATED, from the layer (the handler never runs).
    let err = f.hello(None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A valid token: OK, and the reply names its subject.
    let (message, subject) = f.hello(Some(&bob)).await.unwrap();
    assert_eq!(message, "Hello, you!");
    assert_eq!(subject, "bob");

    // Expired: minted an hour ago with a 15-minute lifetime.
    let an_hour_ago = SystemClock.now().millis() - 3_600_000;
    let clock = Arc::new(ManualClock::new(an_hour_ago));
    let expired = f.token_from(|b| b.audience(AUD).clock(clock));
    let err_expired = f.hello(Some(&expired)).await.unwrap_err();
    assert_eq!(err_expired.code(), Code::Unauthenticated, "{err_expired:?}");

    // Another service's audience.
    let foreign = f.token_from(|b| b.audience("another-service"));
    let err_foreign = f.hello(Some(&foreign)).await.unwrap_err();
    assert_eq!(err_foreign.code(), Code::Unauthenticated, "{err_foreign:?}");
    // One uniform message, whatever failed.
    assert_eq!(err_expired.message(), err_foreign.message());

    // Not a JWT at all.
    let err = f.hello(Some("not-a-token")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Stats needs the admin role: bob is refused after authentication,
    // alice gets the count, which shows that only bob's call ran SayHello.
    let err = f.stats(None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = f.stats(Some(&bob)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(f.stats(Some(&alice)).await.unwrap(), 1);

    f.stop().await;
}
