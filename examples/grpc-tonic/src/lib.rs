//! A small tonic gRPC service behind portcullis' [`JwtLayer`], without
//! protoc.
//!
//! `portcullis.example.v1.Greeter` has two unary methods:
//!
//! - `SayHello`: any valid access token; the reply names the token's
//!   subject;
//! - `Stats`: also needs the `admin` role, checked by [`RequireClaimsLayer`]
//!   around that one method; without it the caller gets
//!   `PERMISSION_DENIED`.
//!
//! Without a token, or with an expired one or one for another audience, the
//! layer answers `UNAUTHENTICATED` before the service runs.
//!
//! The protobuf messages ([`proto`]) are prost structs written by hand, and
//! the server ([`GreeterServer`]) and client ([`GreeterClient`]) are written
//! against tonic's `server::Grpc` and `client::Grpc`: what tonic-build would
//! generate from the `greeter.proto` in the README, with nothing to run at
//! build time.

use std::convert::Infallible;
use std::future::{Future, Ready, poll_fn, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use portcullis::jwt::{Claims, JwtLayer, RequireClaims, RequireClaimsLayer};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tonic::metadata::errors::InvalidMetadataValue;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{IntoRequest, Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_layer::Layer as _;
use tower_service::Service;

/// The protobuf messages of `greeter.proto`, as prost would generate them.
pub mod proto {
    /// `message HelloRequest { string name = 1; }`
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct HelloRequest {
        /// Who to greet.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// `message HelloReply { string message = 1; string subject = 2; }`
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct HelloReply {
        /// The greeting.
        #[prost(string, tag = "1")]
        pub message: String,
        /// The subject (`sub`) of the caller's access token.
        #[prost(string, tag = "2")]
        pub subject: String,
    }

    /// `message StatsRequest {}`
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct StatsRequest {}

    /// `message StatsReply { uint64 greetings = 1; }`
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct StatsReply {
        /// Greetings served so far.
        #[prost(uint64, tag = "1")]
        pub greetings: u64,
    }
}

use proto::{HelloReply, HelloRequest, StatsReply, StatsRequest};

/// The gRPC service name.
pub const SERVICE: &str = "portcullis.example.v1.Greeter";
/// The path of `SayHello`.
pub const SAY_HELLO: &str = "/portcullis.example.v1.Greeter/SayHello";
/// The path of `Stats`.
pub const STATS: &str = "/portcullis.example.v1.Greeter/Stats";
/// The role `Stats` needs.
pub const ADMIN_ROLE: &str = "admin";

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

#[derive(Debug, Default)]
struct State {
    greetings: AtomicU64,
}

/// `SayHello`: reads the claims `JwtLayer` put into the request.
#[derive(Debug, Clone)]
struct SayHello(Arc<State>);

impl UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = Ready<Result<Response<HelloReply>, Status>>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        let Some(claims) = request.extensions().get::<Claims>() else {
            // Only reachable when the service runs without JwtLayer in
            // front: a server fault, not the caller's.
            return ready(Err(Status::internal("the service runs without JwtLayer")));
        };
        let subject = claims.subject().unwrap_or_default().to_owned();
        let name = &request.get_ref().name;
        let name = if name.is_empty() {
            subject.as_str()
        } else {
            name.as_str()
        };
        self.0.greetings.fetch_add(1, Ordering::Relaxed);
        ready(Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
            subject,
        })))
    }
}

/// `Stats`, as an HTTP-level service so that [`RequireClaimsLayer`] can wrap it.
#[derive(Debug, Clone)]
struct StatsRoute(Arc<State>);

impl UnaryService<StatsRequest> for StatsRoute {
    type Response = StatsReply;
    type Future = Ready<Result<Response<StatsReply>, Status>>;

    fn call(&mut self, _: Request<StatsRequest>) -> Self::Future {
        ready(Ok(Response::new(StatsReply {
            greetings: self.0.greetings.load(Ordering::Relaxed),
        })))
    }
}

impl Service<http::Request<Body>> for StatsRoute {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let route = self.clone();
        Box::pin(async move { Ok(Grpc::new(ProstCodec::default()).unary(route, req).await) })
    }
}

/// The `Greeter` service for tonic's [`Server`]: routes each method, with
/// `Stats` behind `RequireClaimsLayer::role("admin")`.
#[derive(Debug, Clone)]
pub struct GreeterServer {
    state: Arc<State>,
    stats: RequireClaims<StatsRoute>,
}

impl GreeterServer {
    /// A fresh service (no greetings yet).
    #[must_use]
    pub fn new() -> Self {
        let state = Arc::new(State::default());
        let stats = RequireClaimsLayer::role(ADMIN_ROLE).layer(StatsRoute(Arc::clone(&state)));
        Self { state, stats }
    }
}

impl Default for GreeterServer {
    fn default() -> Self {
        Self::new()
    }
}

impl NamedService for GreeterServer {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for GreeterServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            SAY_HELLO => {
                let method = SayHello(Arc::clone(&self.state));
                Box::pin(
                    async move { Ok(Grpc::new(ProstCodec::default()).unary(method, req).await) },
                )
            }
            STATS => {
                let mut stats = self.stats.clone();
                Box::pin(async move {
                    poll_fn(|cx| stats.poll_ready(cx)).await?;
                    // A refusal from RequireClaims is already a gRPC status
                    // (trailers-only, grpc-status 7).
                    Ok(stats.call(req).await?.map(Body::new))
                })
            }
            _ => Box::pin(ready(Ok(
                Status::unimplemented("no such method").into_http()
            ))),
        }
    }
}

/// Serves the `Greeter` behind `jwt` on `listener` until `shutdown`
/// completes.
///
/// # Errors
///
/// A transport error from tonic's server.
pub async fn serve(
    listener: TcpListener,
    jwt: JwtLayer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .layer(jwt)
        .add_service(GreeterServer::new())
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}

/// A client for the `Greeter`.
#[derive(Debug, Clone)]
pub struct GreeterClient {
    inner: tonic::client::Grpc<Channel>,
}

impl GreeterClient {
    /// A client over `channel` (for example
    /// `Channel::from_static("http://127.0.0.1:50051").connect().await?`).
    #[must_use]
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }

    /// Calls `SayHello`.
    ///
    /// # Errors
    ///
    /// The call's status: `UNAUTHENTICATED` without a valid token.
    pub async fn say_hello(
        &mut self,
        request: impl IntoRequest<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(SAY_HELLO);
        self.inner
            .unary(request.into_request(), path, ProstCodec::default())
            .await
    }

    /// Calls `Stats`.
    ///
    /// # Errors
    ///
    /// The call's status: `UNAUTHENTICATED` without a valid token,
    /// `PERMISSION_DENIED` without the admin role.
    pub async fn stats(
        &mut self,
        request: impl IntoRequest<StatsRequest>,
    ) -> Result<Response<StatsReply>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(STATS);
        self.inner
            .unary(request.into_request(), path, ProstCodec::default())
            .await
    }
}

/// `message` as a request carrying `authorization: Bearer <token>`.
///
/// # Errors
///
/// The token holds characters a header value cannot.
pub fn with_token<T>(message: T, token: &str) -> Result<Request<T>, InvalidMetadataValue> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
