//! JWKS documents: from JSON or a file (and from a URL with the
//! `jwks-remote` feature).

mod document;
#[cfg(feature = "jwks-remote")]
mod remote;

pub use document::{
    JwksError, cache_control_max_age, key_set_from_file, key_set_from_json, url_allowed,
};
#[cfg(feature = "jwks-remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks-remote")))]
pub use remote::{FetchedJwks, HttpFetcher, JwksFetcher, RemoteJwks, RemoteJwksBuilder};
