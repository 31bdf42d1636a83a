//! OAuth 2.0 protected resource metadata (RFC 9728).
