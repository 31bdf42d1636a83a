//! A tonic gRPC service behind portcullis' `JwtLayer`.
//!
//! ```text
//! cargo run -p grpc-tonic
//! ```
//!
//! Serves `portcullis.example.v1.Greeter` on `127.0.0.1:$PORT` (default
//! 50051) and prints two access tokens, minted by an in-process
//! `JwtIssuer` with a fresh ES256 key: alice has the admin role, bob does
//! not. Call it with grpcurl and `greeter.proto` (see the README):
//! `SayHello` needs a valid token, `Stats` needs the admin role too.

use std::error::Error;

use grpc_tonic::{ADMIN_ROLE, serve};
use portcullis::jwt::{Algorithm, JwtIssuer, JwtLayer, SigningKey};
use tokio::net::TcpListener;

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "greeter";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p:?}: {e}"))?,
        Err(_) => 50051,
    };
    let issuer = JwtIssuer::builder(SigningKey::generate("demo-1", Algorithm::ES256)?)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()?;
    let jwt = JwtLayer::builder(issuer.keys())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;

    let alice = issuer.token("alice").roles([ADMIN_ROLE]).mint()?;
    let bob = issuer.token("bob").mint()?;
    eprintln!("Greeter on {addr}; tokens valid for {} s", alice.expires_in);
    eprintln!("ALICE={} (admin)", alice.token);
    eprintln!("BOB={}", bob.token);
    eprintln!(
        "grpcurl -plaintext -import-path examples/grpc-tonic -proto greeter.proto \
         -H \"authorization: Bearer $ALICE\" -d '{{\"name\":\"you\"}}' {addr} portcullis.example.v1.Greeter/SayHello"
    );

    serve(listener, jwt, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
