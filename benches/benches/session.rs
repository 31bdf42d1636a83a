//! Per-request overhead of `SessionLayer` on the memory store: a request
//! that never touches the session, one that reads it, one that writes a
//! key; each against the same router without the layer, in one run.
//!
//! `cargo bench -p portcullis-benches --bench session`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_benches::call;
use portcullis_benches::session_app::{apps, request};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let apps = rt.block_on(apps());
    let mut group = c.benchmark_group("session");
    for name in ["untouched", "read", "write"] {
        group.bench_function(format!("{name}/baseline"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(call(&apps.baseline, request(name, &apps.cookie)).await)
            });
        });
        group.bench_function(format!("{name}/layer"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(call(&apps.layered, request(name, &apps.cookie)).await)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
