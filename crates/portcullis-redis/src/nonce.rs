//! Values unique to one call, so that a call resent after a broken
//! connection recognises what its first attempt wrote.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::TokenDigest;

/// A value unique to one call: this process' random tag and a counter.
pub(crate) fn nonce() -> String {
    static TAG: LazyLock<String> = LazyLock::new(|| {
        let mut bytes = [0u8; 8];
        // Not a secret: on failure, distinct counters still tell calls apart
        // within this process.
        let _ = portcullis_core::token::fill_random(&mut bytes);
        TokenDigest::of(&bytes).to_hex()[..16].to_owned()
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}{:x}", *TAG, COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonces_differ() {
        assert_ne!(super::nonce(), super::nonce());
    }
}
