//! Shared vocabulary of the portcullis authentication layers.
//!
//! Users rarely depend on this crate directly: the layer crates
//! (`portcullis-session`, `portcullis-jwt`, ...) and the `portcullis` facade
//! re-export what they need. Store implementers use [`store::StoreError`] and
//! [`token`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`token`] | 256-bit opaque tokens and their SHA-256 digests (store keys) |
//! | [`clock`] | the injectable [`Clock`]: system and manual |
//! | [`cookie`] | secure cookie settings and a strict `Cookie` reader |
//! | [`rejection`] | the one mapping from auth failures to responses |
//! | [`body`] | the response body every layer returns |
//! | [`future`] | the response future every layer returns |
//! | [`store`] | [`StoreError`] |
//!
//! This crate has no cargo features.

pub mod body;
pub mod clock;
pub mod cookie;
pub mod future;
pub mod rejection;
pub mod store;
pub mod token;

pub use body::ResponseBody;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use cookie::{CookieConfig, CookieConfigError, SameSite};
pub use future::LayerFuture;
pub use rejection::{ProblemJson, Rejection, RejectionKind, RenderRejection};
pub use store::{BoxError, StoreError, StoreErrorKind};
pub use token::{OpaqueToken, TokenDigest, TokenFormatError};
