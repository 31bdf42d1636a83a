//! Password hashing and verification for the portcullis auth layers.
