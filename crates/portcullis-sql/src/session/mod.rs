//! The session stores.
