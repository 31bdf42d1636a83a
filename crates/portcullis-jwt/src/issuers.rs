//! Several trusted issuers, each with its own keys and rules, chosen by
//! the token's `iss` before any key is touched.

/// The issuers a layer trusts.
#[derive(Debug, Default)]
pub struct IssuerSet {}
