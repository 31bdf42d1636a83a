//! Token introspection (RFC 7662) for opaque access tokens.
