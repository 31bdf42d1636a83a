//! JWKS documents: from JSON or a file (and, with the `jwks-remote`
//! feature, from a URL, or found by OpenID Connect discovery).

#[cfg(feature = "jwks-remote")]
mod discovery;
mod document;
#[cfg(feature = "jwks-remote")]
mod remote;

#[cfg(feature = "jwks-remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks-remote")))]
pub use discovery::{
    Discovery, DiscoveryBuilder, DiscoveryError, OPENID_CONFIGURATION, ProviderMetadata,
};
pub use document::{
    JwksError, cache_control_max_age, key_set_from_file, key_set_from_json, url_allowed,
};
#[cfg(feature = "jwks-remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks-remote")))]
pub use remote::{FetchedJwks, HttpFetcher, JwksFetcher, RemoteJwks, RemoteJwksBuilder};
