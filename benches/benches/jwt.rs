//! Per-request cost of `JwtLayer` for HS256, RS256, ES256 and EdDSA, with
//! the verified-token cache off and on, against `jsonwebtoken::decode`
//! alone and against the same router without the layer, in one run; for
//! HS256 also with a populated revocation view (its read path).
//!
//! `cargo bench -p portcullis-benches --bench jwt`
//!
//! Read it as: layer overhead = `layer_*` − `router_baseline`; compare the
//! HS256 overhead with `jsonwebtoken_decode/HS256`.

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use portcullis::jwt::revocation::{RevocationEvent, RevocationView};
use portcullis::jwt::{Algorithm, Claims, JwtIssuer, JwtLayer, SigningKey};
use portcullis_benches::call;

const ISS: &str = "https://bench.test";
const AUD: &str = "bench";
const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/rsa2048-private.pem");
const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn signing_key(alg: Algorithm) -> SigningKey {
    match alg {
        Algorithm::HS256 => SigningKey::hmac("k", alg, HS_SECRET).unwrap(),
        Algorithm::RS256 => SigningKey::from_pkcs8_pem("k", alg, RSA_PRIVATE).unwrap(),
        _ => SigningKey::generate("k", alg).unwrap(),
    }
}

/// The equivalent `jsonwebtoken::decode` call: same key, same checks it
/// can express (exp, iss, aud).
fn decoding(
    alg: Algorithm,
    issuer: &JwtIssuer,
) -> (jsonwebtoken::DecodingKey, jsonwebtoken::Validation) {
    let key = match alg {
        Algorithm::HS256 => jsonwebtoken::DecodingKey::from_secret(HS_SECRET),
        _ => {
            let jwk = issuer.jwks().keys.into_iter().next().unwrap();
            jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap()
        }
    };
    let jalg = match alg {
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        _ => jsonwebtoken::Algorithm::EdDSA,
    };
    let mut v = jsonwebtoken::Validation::new(jalg);
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD]);
    (key, v)
}

async fn me(claims: Claims) -> String {
    claims.subject().unwrap_or_default().to_owned()
}

fn bench(c: &mut Criterion) {
    portcullis::jwt::ensure_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let baseline = Router::new().route("/me", get(|| async { String::from("alice") }));
    let mut group = c.benchmark_group("jwt");
    let req = |token: &str| {
        Request::get("/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let token_hs = {
        let issuer = JwtIssuer::builder(signing_key(Algorithm::HS256))
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        issuer
            .token("alice")
            .lifetime(std::time::Duration::from_secs(3600))
            .mint()
            .unwrap()
            .token
    };
    group.bench_function("router_baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&baseline, req(&token_hs)).await) });
    });
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let issuer = JwtIssuer::builder(signing_key(alg))
            .issuer(ISS)
            .audience(AUD)
            .build()
            .unwrap();
        let token = issuer
            .token("alice")
            .lifetime(std::time::Duration::from_secs(3600))
            .mint()
            .unwrap()
            .token;
        let (key, validation) = decoding(alg, &issuer);
        group.bench_function(format!("jsonwebtoken_decode/{alg}"), |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &key, &validation)
                        .unwrap(),
                )
            });
        });
        let layer = |cache: usize| {
            let jwt = JwtLayer::builder(issuer.keys())
                .issuer(ISS)
                .audience(AUD)
                .cache(cache)
                .build()
                .unwrap();
            Router::new().route("/me", get(me)).layer(jwt)
        };
        let uncached = layer(0);
        group.bench_function(format!("layer_nocache/{alg}"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(call(&uncached, req(&token)).await) });
        });
        let cached = layer(10_000);
        group.bench_function(format!("layer_cache/{alg}"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(call(&cached, req(&token)).await) });
        });
        if alg == Algorithm::HS256 {
            // The cached path plus the revocation view's check, its tables
            // not empty (1 000 entries of each kind, none for this token).
            let view = RevocationView::default();
            for i in 0..1_000 {
                view.apply(&RevocationEvent::Token {
                    jti: format!("jti-{i}"),
                    expires_at: i64::MAX / 2,
                });
                view.apply(&RevocationEvent::Session {
                    sid: format!("sid-{i}"),
                    expires_at: i64::MAX / 2,
                });
                view.apply(&RevocationEvent::User {
                    user: format!("user-{i}"),
                    version: 1,
                });
            }
            let jwt = JwtLayer::builder(issuer.keys())
                .issuer(ISS)
                .audience(AUD)
                .revocation(view)
                .build()
                .unwrap();
            let revocable = Router::new().route("/me", get(me)).layer(jwt);
            group.bench_function(format!("layer_cache_revocation/{alg}"), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(call(&revocable, req(&token)).await) });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
