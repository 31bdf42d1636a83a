//! Per-request overhead of `CsrfLayer`: a safe request, an unsafe request
//! with the token in a header, and one with the token in a urlencoded form
//! body; each against the same router without the layer, in one run.
//!
//! - `signed/*`: signed tokens bound to the pre-session cookie, so the
//!   numbers are the layer's own cost (no store).
//! - `session/*`: synchronizer tokens in the portcullis session; baseline
//!   is the same router with `SessionLayer` only, so the difference is what
//!   CSRF adds on top of sessions (the secret's read included).
//!
//! `cargo bench -p portcullis-benches --bench csrf -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_benches::call;
use portcullis_benches::csrf_app::{request, session_case, signed_case};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = rt.block_on(async { vec![signed_case().await, session_case().await] });
    for case in &cases {
        let mut group = c.benchmark_group(format!("csrf/{}", case.name));
        let req = |kind: &str| request(case, kind);
        // Sanity: the layered router accepts each request.
        for kind in ["safe", "header", "form"] {
            let status = rt.block_on(call(&case.layered, req(kind)));
            assert_eq!(status, 200, "{} {kind}", case.name);
        }
        for kind in ["safe", "header", "form"] {
            group.bench_function(format!("{kind}/baseline"), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(call(&case.baseline, req(kind)).await) });
            });
            group.bench_function(format!("{kind}/layer"), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(call(&case.layered, req(kind)).await) });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
