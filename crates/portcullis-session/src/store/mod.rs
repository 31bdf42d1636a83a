//! The implementer's page: the [`SessionStore`] trait with its contract
//! per method, the record and update types it trades in, the cap helper,
//! and the core types its signatures use, all re-exported here.
//!
//! Implement the trait with [`#[async_trait]`](macro@async_trait) (re-exported:
//! `portcullis_session::store::async_trait`), judge expiry with a
//! [`Clock`] you are handed, and run the conformance suite
//! ([`session_store_conformance!`](crate::session_store_conformance),
//! feature `testing`) in your tests: each failure names the method and the
//! clause of its contract that broke.
//!
//! A complete store, every method, in a `Mutex<HashMap>` (the crate's own
//! tests run the conformance suite on exactly this code):
//!
#![doc = concat!("```\n", include_str!("../../tests/support/hash_map_store.rs"), "\n```")]

mod instrumented;
mod record;
mod session_store;

pub use async_trait::async_trait;
pub use portcullis_core::{
    Clock, SharedClock, StoreError, StoreErrorKind, SystemClock, Timestamp, TokenDigest,
};

pub use instrumented::{CountingStore, InstrumentedStore};
pub use record::{
    CapPolicy, CreateOutcome, SessionCap, SessionMetadata, SessionRecord, SessionUpdate,
    eviction_victims,
};
pub use session_store::SessionStore;
