//! The fuzz targets' bodies, one module per parser, plus what they share.
//!
//! Each `fuzz_targets/<name>.rs` is one line that hands libFuzzer's input
//! to [`<name>::run`](cookie::run); the checks live here so a reproducer
//! (`fuzz/regressions/<target>/`) can be replayed by a plain test that
//! calls the same function. Every target asserts invariants besides "no
//! panic": reference implementations agree, accepted input is canonical
//! (it re-encodes to the very same text), round trips hold.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub mod cookie;
pub mod csrf;
pub mod jwks;
pub mod jwt;
pub mod opaque_token;
pub mod refresh_token;

/// Runs a future that needs no I/O (every layer here answers from memory)
/// to completion on this thread.
///
/// # Panics
///
/// When the future is still pending after many polls: nothing it awaits
/// can wake it, so it would hang forever.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a future that waits for no I/O never completed");
}

/// Lossy text of fuzzer bytes: most parsers take `&str`.
#[must_use]
pub fn text(data: &[u8]) -> &str {
    match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default(),
    }
}
