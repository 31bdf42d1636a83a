//! DPoP (RFC 9449): proof-of-possession for access and refresh tokens.
