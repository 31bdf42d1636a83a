//! The revocation stores.
