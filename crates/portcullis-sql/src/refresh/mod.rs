//! The refresh stores.
