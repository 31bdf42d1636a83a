//! The store conformance suite on the memory store (run with
//! `--features testing`).
#![cfg(feature = "testing")]

use portcullis_throttle::MemoryThrottleStore;

portcullis_throttle::throttle_store_conformance!(|| async { MemoryThrottleStore::new() });
