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
//! | [`store`] | [`StoreError`], the store observer behind counting and fault injection |
//! | [`request`] | bearer tokens, user agent, client address, bounded body reads |
//! | [`origin`] | the trusted-origin policy ([`OriginCheck`]) of CSRF and refresh |
//! | [`lifetime`] | idle and absolute lifetimes, the retry on id collisions |
//! | [`active`] | [`ActiveSession`], a device in "your active sessions" |
//! | [`events`] | the typed [`AuthEvent`](events::AuthEvent) stream every layer emits, its recorder (metrics) |
//! | [`event!`] | the tracing macro every layer logs through |
//! | [`layer_span!`] | the `portcullis.<layer>` span of session and CSRF |
//! | [`inner_service_accessors!`] | `get_ref`, `get_mut`, `into_inner` of a middleware service |
//!
//! This crate has no cargo features.

pub mod active;
pub mod body;
pub mod clock;
pub mod cookie;
pub mod events;
pub mod future;
pub mod lifetime;
pub mod origin;
pub mod rejection;
pub mod request;
pub mod store;
pub mod token;

/// Emits a `tracing` event when the **calling** crate's `tracing` feature
/// is on, and compiles to nothing otherwise: every layer crate logs through
/// it, at `debug`/`warn` with a `reason` field, never a token, cookie or
/// key value. Events go to the calling crate's target (`portcullis_jwt`,
/// `portcullis_session`, ...), so `RUST_LOG=portcullis_jwt=debug` shows
/// why the JWT layer refused a request.
///
/// The calling crate needs an optional `tracing` dependency enabled by a
/// feature named `tracing`.
///
/// ```text
/// portcullis_core::event!(debug, reason = "expired", "token refused");
/// ```
#[macro_export]
macro_rules! event {
    ($level:ident, $($rest:tt)*) => {{
        #[cfg(feature = "tracing")]
        ::tracing::$level!($($rest)*);
    }};
}

/// Defines `LayerSpan`, a layer's tracing span for one request, in the
/// calling crate: named `$name` (`portcullis.session`, ...), with
/// `otel.kind = "internal"`, `portcullis.decision` and `error.type`
/// recorded when the layer decides, and `http.route` when the route is
/// known. Like [`event!`], it compiles to an empty value without the
/// **calling** crate's `tracing` feature, and a disabled span gets no
/// field work. Never put a token, a cookie or a path in it.
///
/// ```text
/// portcullis_core::layer_span!("portcullis.session");
/// let span = LayerSpan::new(route);
/// span.decided(Decision::Success, None);
/// ```
#[macro_export]
macro_rules! layer_span {
    ($name:literal) => {
        /// The layer's span for one request (nothing without the `tracing`
        /// feature): the decision and its reason code once decided, the
        /// route when it is known.
        #[derive(Clone)]
        pub(crate) struct LayerSpan {
            #[cfg(feature = "tracing")]
            span: ::tracing::Span,
        }

        impl LayerSpan {
            /// Opens the span for a request to `route`.
            #[cfg_attr(not(feature = "tracing"), allow(clippy::missing_const_for_fn))]
            pub(crate) fn new(route: Option<&str>) -> Self {
                #[cfg(feature = "tracing")]
                {
                    use ::tracing::field::Empty;
                    let span = ::tracing::debug_span!(
                        $name,
                        otel.kind = "internal",
                        portcullis.decision = Empty,
                        error.type = Empty,
                        http.route = Empty,
                    );
                    if !span.is_disabled() {
                        if let Some(route) = route {
                            span.record("http.route", route);
                        }
                    }
                    Self { span }
                }
                #[cfg(not(feature = "tracing"))]
                {
                    let _ = route;
                    Self {}
                }
            }

            /// Records what the layer decided, and why.
            #[cfg_attr(not(feature = "tracing"), allow(clippy::unused_self))]
            pub(crate) fn decided(
                &self,
                decision: $crate::events::Decision,
                reason: Option<&'static str>,
            ) {
                #[cfg(feature = "tracing")]
                if !self.span.is_disabled() {
                    self.span.record("portcullis.decision", decision.as_str());
                    if let Some(reason) = reason {
                        self.span.record("error.type", reason);
                    }
                }
                #[cfg(not(feature = "tracing"))]
                let _ = (decision, reason);
            }

            /// The span, to enter while the layer decides.
            #[cfg(feature = "tracing")]
            #[allow(dead_code)]
            pub(crate) const fn span(&self) -> &::tracing::Span {
                &self.span
            }
        }
    };
}

/// Defines `get_ref`, `get_mut` and `into_inner` on a middleware service
/// whose inner service is the field `inner` of type `S`: the accessors
/// every tower service offers (tower-http does the same). Used inside the
/// service's inherent `impl<S, ..>` block.
///
/// ```
/// struct Wrapper<S> {
///     inner: S,
/// }
///
/// impl<S> Wrapper<S> {
///     portcullis_core::inner_service_accessors!();
/// }
///
/// let mut w = Wrapper { inner: 1_u8 };
/// *w.get_mut() += 1;
/// assert_eq!(*w.get_ref(), 2);
/// assert_eq!(w.into_inner(), 2);
/// ```
#[macro_export]
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub const fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub const fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes this service, returning the inner one.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub use active::ActiveSession;
pub use body::ResponseBody;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use cookie::{CookieConfig, CookieConfigError, SameSite};
pub use future::{After, AfterResponse, LayerFuture, NoHook};
pub use lifetime::{Deadlines, Lifetimes};
pub use origin::{OriginCheck, OriginError};
pub use rejection::{ProblemJson, Rejection, RejectionKind, RenderRejection};
pub use store::{BoxError, StoreError, StoreErrorKind, StoreObserver};
pub use token::{OpaqueToken, TokenDigest, TokenFormatError};
