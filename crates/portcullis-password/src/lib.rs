//! Password hashing and verification for the portcullis auth layers: what
//! happens before `session.login(user)` or `refresher.login(user)`.
//!
//! - [`PasswordHasher`]: argon2id v19 in PHC strings at OWASP's parameters
//!   (m = 19456 KiB, t = 2, p = 1), run on tokio's blocking pool with a
//!   bounded number in flight and a bounded queue (503 + `Retry-After`
//!   past it); one [`verify`](PasswordHasher::verify) call with the same
//!   cost whether the user exists or not; `needs_rehash` when the
//!   parameters have been raised; stored hashes refused before hashing when
//!   they are not argon2id v19 or ask for more than a ceiling.
//! - [`PasswordPolicy`]: new passwords per NIST SP 800-63B rev. 4: at
//!   least 15 code points (8 with a second factor), up to 128, no
//!   composition rules, a [`Blocklist`] of common passwords and context
//!   words, errors with a message for the user.
//!
//! # A login handler
//!
//! Look the user up, hand whatever you found (or `None`) to `verify`, and
//! answer a mismatch and an unknown user with the same
//! [`invalid_credentials`] 401. On success, store a new hash when the old
//! one is weaker than the current parameters (the password is at hand only
//! now), then log the user in.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! use axum::body::Body;
//! use axum::extract::State;
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::post;
//! use axum::{Json, Router};
//! use portcullis_core::{ProblemJson, RenderRejection};
//! use portcullis_password::{invalid_credentials, PasswordHasher, Verification};
//!
//! #[derive(Clone)]
//! struct App {
//!     hasher: PasswordHasher,
//!     /// user name -> PHC string (your user table).
//!     users: Arc<Mutex<HashMap<String, String>>>,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Login {
//!     user: String,
//!     password: String,
//! }
//!
//! async fn login(State(app): State<App>, Json(form): Json<Login>) -> Response {
//!     let stored = app.users.lock().unwrap().get(&form.user).cloned();
//!     // `None` (no such user) costs one verification too.
//!     match app.hasher.verify(stored.as_deref(), form.password.as_str()).await {
//!         Ok(Verification::Verified { needs_rehash }) => {
//!             if needs_rehash {
//!                 // A failure here (busy) only delays the upgrade.
//!                 if let Ok(phc) = app.hasher.rehash(form.password).await {
//!                     app.users.lock().unwrap().insert(form.user.clone(), phc);
//!                 }
//!             }
//!             // session.login(&form.user).await? ...
//!             "welcome".into_response()
//!         }
//!         Ok(Verification::Mismatch) => {
//!             ProblemJson.render(&invalid_credentials(), false).map(Body::from)
//!         }
//!         // Busy: 503 + Retry-After; an unusable stored hash: the same 401
//!         // as a wrong password. (`IntoResponse` with the `axum` feature.)
//!         Err(e) => e.to_http_response().map(Body::from),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hasher = PasswordHasher::builder().build().unwrap();
//! let alice = hasher.hash_for("plum orchard at dusk, 1987", &["alice"]).await.unwrap();
//! let app = App {
//!     hasher,
//!     users: Arc::new(Mutex::new(HashMap::from([("alice".to_owned(), alice)]))),
//! };
//! let router: Router = Router::new().route("/login", post(login)).with_state(app);
//! # }
//! ```
//!
//! Put a brute-force throttle in front of the login route: the hasher makes
//! each guess cost the server ~20 ms of a core, it does not count guesses.
//!
//! # What the parameters cost
//!
//! On the project's 2-core machine (AVX2; `cargo bench -p
//! portcullis-benches --bench password`), one hash or verification at
//! m = 19456 KiB, t = 2, p = 1 takes 21 ms of one core when the machine is
//! idle (26 ms median with the machine busy at a load average of 4.8), and
//! uses 19 MiB; both cores verify about 95 passwords a second when idle.
//! Builds without optimisation are 10 to 20 times slower: the workspace
//! compiles `argon2` and `blake2` at `opt-level = 3` in the dev profile
//! too.
//!
//! # What the bound protects
//!
//! Without it, every concurrent login runs its own argon2 on the blocking
//! pool (up to 512 threads): a flood of N logins allocates N × 19 MiB and
//! takes every core, so every other request of the process (and the
//! logins themselves) slows down with N. With it, at most `max_in_flight`
//! hashes run (default: one per core), so memory stays under
//! `max_in_flight × ceiling.m_kib()` KiB, the async workers keep a share
//! of the CPU, and the callers beyond the queue get a quick 503 with
//! `Retry-After` instead of a long wait.
//!
//! Measured in one run of the bench (32 clients logging in back to back
//! against a real server, a probe asking a cheap route every 10 ms; the
//! machine busy at a load average of 4.8):
//!
//! | pool | login p50 | login p99 | cheap route p99 | logins/s | peak memory |
//! |---|---|---|---|---|---|
//! | bounded, 2 slots | 507 ms | 648 ms | 4.4 ms | 62 | 103 MiB |
//! | unbounded, 32 slots | 737 ms | 1452 ms | 164 ms | 40 | 694 MiB | The ceiling on stored hashes keeps
//! that memory bound true when a stored hash was tampered with (a hash
//! asking for m = 4000000000 KiB is refused before anything is allocated).
//!
//! Each slot's 19 MiB buffer is allocated once and reused: if every hash
//! allocated its own, the allocator would keep the freed buffers (glibc
//! keeps them per thread arena, and tokio's blocking pool has many
//! threads), and a flood against two slots measured here grew the
//! process by 820 MiB instead of 23 MiB. Only a stored hash asking for
//! more memory than the current parameters (up to the ceiling) gets a
//! buffer of its own for that call.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | no | `IntoResponse` for [`PasswordError`], on axum-core only |
//! | `tracing` | no | a `warn` event when a stored hash is refused, `debug` when busy (never a password or a hash) |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod hasher;
pub mod policy;
mod secret;

pub use error::{
    INVALID_CREDENTIALS, PasswordConfigError, PasswordError, StoredHashError, invalid_credentials,
};
pub use hasher::{
    Argon2Params, DEFAULT_CEILING_FACTOR, DEFAULT_QUEUE_PER_SLOT, DEFAULT_QUEUE_WAIT,
    DEFAULT_RETRY_AFTER, MAX_PASSWORD_BYTES, PasswordHasher, PasswordHasherBuilder, PoolStats,
    Verification,
};
pub use policy::{
    Blocklist, CommonPasswords, PasswordPolicy, PasswordPolicyBuilder, PolicyError, WordList,
};
pub use secret::Password;
