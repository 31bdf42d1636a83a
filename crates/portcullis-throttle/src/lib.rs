//! Brute-force protection for login and refresh routes.

pub mod memory;
pub mod store;

pub use memory::MemoryThrottleStore;
pub use store::{Backoff, ThrottleKey, ThrottleScope, ThrottleState, ThrottleStore};
