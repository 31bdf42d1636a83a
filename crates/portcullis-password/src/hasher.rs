//! [`PasswordHasher`]: argon2id on tokio's blocking pool, a bounded number
//! at a time.
//!
//! Over 500 lines in one file: the hasher, the pool its calls share, the
//! argon2 core running in the pool and the builder filling the hasher's
//! private state are one unit; split, each part would reach into the others.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher as _, Version,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{PasswordConfigError, PasswordError, StoredHashError};
use crate::policy::PasswordPolicy;
use crate::secret::Password;

/// Passwords longer than this many bytes are never hashed: verifying one
/// answers [`Verification::Mismatch`] at once (no policy can have accepted
/// it: [`HIGHEST_MAX_CHARS`](crate::policy::HIGHEST_MAX_CHARS) code points
/// are at most this many bytes).
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// Stored values longer than this are not parsed (an argon2id PHC string
/// at our parameters is 97 bytes).
const MAX_STORED_BYTES: usize = 512;

/// The default `Retry-After` of [`PasswordError::Busy`].
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The default longest wait for a hashing slot.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// The default queue length, per hashing slot.
pub const DEFAULT_QUEUE_PER_SLOT: usize = 16;

/// The default ceiling on a stored hash's cost, as a multiple of the
/// current parameters.
pub const DEFAULT_CEILING_FACTOR: u32 = 4;

/// argon2id cost parameters: memory in KiB, passes, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Argon2Params {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl Argon2Params {
    /// OWASP's Password Storage Cheat Sheet: "argon2id with a minimum
    /// configuration of 19 MiB of memory, an iteration count of 2, and 1
    /// degree of parallelism". The default.
    pub const OWASP: Self = Self {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };

    /// Parameters of your choice; [`PasswordHasherBuilder::build`] refuses
    /// anything cheaper than OWASP's equal sets (m=47104/t=1,
    /// m=19456/t=2, m=12288/t=3, m=9216/t=4, m=7168/t=5).
    #[must_use]
    pub const fn new(m_kib: u32, t: u32, p: u32) -> Self {
        Self { m_kib, t, p }
    }

    /// Memory in KiB (what one verification allocates).
    #[must_use]
    pub const fn m_kib(&self) -> u32 {
        self.m_kib
    }

    /// Passes over the memory.
    #[must_use]
    pub const fn t(&self) -> u32 {
        self.t
    }

    /// Lanes.
    #[must_use]
    pub const fn p(&self) -> u32 {
        self.p
    }

    const fn scaled(self, factor: u32) -> Self {
        Self {
            m_kib: self.m_kib.saturating_mul(factor),
            t: self.t.saturating_mul(factor),
            p: self.p.saturating_mul(factor),
        }
    }

    const fn covers(self, other: Self) -> bool {
        other.m_kib <= self.m_kib && other.t <= self.t && other.p <= self.p
    }

    fn config_error(self) -> PasswordConfigError {
        PasswordConfigError::ParamsOutOfRange {
            m_kib: self.m_kib,
            t: self.t,
            p: self.p,
        }
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP
    }
}

/// The answer of [`PasswordHasher::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verification {
    /// The password matches the stored hash.
    Verified {
        /// The stored hash is weaker than the current parameters (lower
        /// m, t or p, a shorter output): hash the password again with
        /// [`PasswordHasher::rehash`] and store the result.
        needs_rehash: bool,
    },
    /// A wrong password, or no such user: the same answer, at the same
    /// cost. Answer with [`invalid_credentials`](crate::invalid_credentials).
    Mismatch,
}

impl Verification {
    /// Whether the password matched.
    #[must_use]
    pub const fn is_verified(self) -> bool {
        matches!(self, Self::Verified { .. })
    }
}

/// What the bounded pool is doing; see [`PasswordHasher::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Hashes running now.
    pub in_flight: usize,
    /// The most hashes that ever ran at once.
    pub peak_in_flight: usize,
    /// The configured bound on `in_flight`.
    pub max_in_flight: usize,
    /// The configured queue length.
    pub queue_length: usize,
    /// Calls answered [`PasswordError::Busy`] so far.
    pub busy_refusals: u64,
    /// Hashes completed so far (verifications, dummy ones included, and
    /// new hashes).
    pub completed: u64,
}

/// Hashes and verifies passwords with argon2id (v19, PHC strings) on
/// tokio's blocking pool, a bounded number at a time. Cheap to clone (an
/// `Arc` inside): build one at startup and share it.
///
/// - **Bounded**: at most `max_in_flight` hashes run at once (default: the
///   number of cores), each in an `m` KiB buffer (19 MiB by default) that
///   is kept and reused, so a login flood takes at most that many cores
///   and that much memory.
///   Callers beyond it wait in a queue of `queue_length` for up to
///   `queue_wait`; past either, the call answers [`PasswordError::Busy`]
///   (503 + `Retry-After`). A slot is released when its hash finishes, even
///   if the caller went away meanwhile.
/// - **Equal cost**: [`verify`](Self::verify) takes the stored hash as an
///   `Option`; for `None` (no such user) it verifies against a dummy hash
///   made at build time with the live parameters, and answers
///   [`Verification::Mismatch`], as for a wrong password.
/// - **Hostile stored hashes**: before verifying, the stored hash's
///   algorithm and parameters are read and anything that is not argon2id
///   v19 or costs more than the ceiling (default 4 × the current
///   parameters in each of m, t, p) is refused with
///   [`PasswordError::StoredHash`], without allocating its memory.
/// - **Upgrades**: a verified password whose hash is weaker than the
///   current parameters comes back with `needs_rehash: true`.
///
/// It needs a tokio runtime with the time driver (`#[tokio::main]` has
/// one); without a runtime a call answers [`PasswordError::Internal`].
///
/// ```
/// use portcullis_password::{PasswordHasher, Verification};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hasher = PasswordHasher::builder().build()?;
/// let stored = hasher.hash_for("plum orchard at dusk, 1987", &["alice"]).await?;
/// assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
///
/// let ok = hasher.verify(Some(&stored), "plum orchard at dusk, 1987").await?;
/// assert_eq!(ok, Verification::Verified { needs_rehash: false });
/// let wrong = hasher.verify(Some(&stored), "plum orchard at dawn, 1987").await?;
/// assert_eq!(wrong, Verification::Mismatch);
/// // No such user: the same answer, at the same cost.
/// assert_eq!(hasher.verify(None, "anything").await?, Verification::Mismatch);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    params: Argon2Params,
    ceiling: Argon2Params,
    /// `max_in_flight` permits: one per running hash.
    slots: Arc<Semaphore>,
    /// `max_in_flight + queue_length` permits: one per caller running or
    /// waiting.
    admission: Arc<Semaphore>,
    max_in_flight: usize,
    queue_length: usize,
    queue_wait: Duration,
    retry_after: Duration,
    dummy: Box<str>,
    policy: PasswordPolicy,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    busy_refusals: AtomicU64,
    completed: AtomicU64,
    /// The memory of the current parameters, in blocks of 1 KiB.
    blocks: usize,
    /// Memory buffers of `blocks` blocks, reused: at most one per slot.
    buffers: Mutex<Vec<Vec<Block>>>,
}

impl Inner {
    /// Runs `argon2` over a memory buffer: a reused one of the current
    /// size when the parameters need no more, else one for this call.
    /// Reusing keeps memory at one buffer per slot: freed 19 MiB buffers
    /// are otherwise kept by the allocator, per thread arena, and a
    /// process' memory grows far past what is in flight.
    fn fill(
        &self,
        argon2: &Argon2<'_>,
        blocks: usize,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> argon2::Result<()> {
        if blocks > self.blocks {
            let mut own = vec![Block::default(); blocks];
            return argon2.hash_password_into_with_memory(password, salt, out, &mut own[..]);
        }
        let reused = self.buffers.lock().ok().and_then(|mut b| b.pop());
        let mut buffer = reused.unwrap_or_else(|| vec![Block::default(); self.blocks]);
        let result =
            argon2.hash_password_into_with_memory(password, salt, out, &mut buffer[..blocks]);
        if let Ok(mut buffers) = self.buffers.lock() {
            buffers.push(buffer);
        }
        result
    }

    /// Whether `password` hashes to `hash` (argon2id v19, checked by the
    /// caller), compared in constant time.
    fn verify_phc(&self, password: &[u8], hash: &PasswordHash) -> Result<bool, ()> {
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return Err(());
        };
        let params = Params::try_from(hash).map_err(drop)?;
        let blocks = params.block_count();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = [0_u8; Output::MAX_LENGTH];
        let out = out.get_mut(..expected.as_bytes().len()).ok_or(())?;
        self.fill(&argon2, blocks, password, salt, out)
            .map_err(drop)?;
        // `Output`'s equality is constant-time.
        Ok(Output::new(out).map_err(drop)? == *expected)
    }

    /// A new PHC string at the current parameters, with a random salt.
    fn hash_new(&self, password: &[u8]) -> Result<String, ()> {
        let salt = argon2::password_hash::try_generate_salt().map_err(drop)?;
        let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
        self.fill(&self.argon2, self.blocks, password, &salt, &mut out)
            .map_err(drop)?;
        let phc = PasswordHash {
            algorithm: ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(self.argon2.params()).map_err(drop)?,
            salt: Some(Salt::new(&salt).map_err(drop)?),
            hash: Some(Output::new(&out).map_err(drop)?),
        };
        Ok(phc.to_string())
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("PasswordHasher")
            .field("params", &i.params)
            .field("ceiling", &i.ceiling)
            .field("max_in_flight", &i.max_in_flight)
            .field("queue_length", &i.queue_length)
            .field("queue_wait", &i.queue_wait)
            .field("retry_after", &i.retry_after)
            .field("policy", &i.policy)
            .finish_non_exhaustive()
    }
}

/// The permits a running hash holds; moved into the blocking task so that
/// they are released when the hash ends, not when the caller goes away.
struct Running {
    inner: Arc<Inner>,
    _slot: OwnedSemaphorePermit,
    _admission: OwnedSemaphorePermit,
}

impl Running {
    fn new(inner: Arc<Inner>, slot: OwnedSemaphorePermit, admission: OwnedSemaphorePermit) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self {
            inner,
            _slot: slot,
            _admission: admission,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.inner.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl PasswordHasher {
    /// A builder with the defaults: [`Argon2Params::OWASP`], one slot per
    /// core, a queue of 16 per slot waited on for up to 1 s, and
    /// [`PasswordPolicy::default`].
    pub fn builder() -> PasswordHasherBuilder {
        PasswordHasherBuilder::default()
    }

    /// The parameters new hashes get.
    #[must_use]
    pub fn params(&self) -> Argon2Params {
        self.inner.params
    }

    /// The most a stored hash may cost.
    #[must_use]
    pub fn ceiling(&self) -> Argon2Params {
        self.inner.ceiling
    }

    /// The policy [`hash`](Self::hash) applies.
    #[must_use]
    pub fn policy(&self) -> &PasswordPolicy {
        &self.inner.policy
    }

    /// What the pool is doing (for metrics and tests).
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let i = &self.inner;
        PoolStats {
            in_flight: i.in_flight.load(Ordering::SeqCst),
            peak_in_flight: i.peak_in_flight.load(Ordering::SeqCst),
            max_in_flight: i.max_in_flight,
            queue_length: i.queue_length,
            busy_refusals: i.busy_refusals.load(Ordering::SeqCst),
            completed: i.completed.load(Ordering::SeqCst),
        }
    }

    /// Checks `password` against a user's `stored` hash, or, with `None`
    /// (no such user), against the dummy hash at the same cost, answering
    /// [`Verification::Mismatch`]. Call it with whatever the user lookup
    /// gave, so both paths cost one verification.
    ///
    /// # Errors
    ///
    /// - [`PasswordError::Busy`]: no slot free and the queue full, or the
    ///   wait ran out (answer 503 + `Retry-After`).
    /// - [`PasswordError::StoredHash`]: the stored hash was refused (not
    ///   argon2id v19, malformed, above the ceiling); the dummy was
    ///   verified instead, so the cost is the same. Answer as a wrong
    ///   password ([`PasswordError::rejection`] does) and fix the record.
    /// - [`PasswordError::Internal`]: no tokio runtime, or hashing failed.
    pub async fn verify(
        &self,
        stored: Option<&str>,
        password: impl Into<Password>,
    ) -> Result<Verification, PasswordError> {
        let password = password.into();
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Ok(Verification::Mismatch);
        }
        let inner = &self.inner;
        let (hash, known) = match stored.map(|s| check_stored(s, inner.ceiling)) {
            Some(Ok(hash)) => (hash, Ok(true)),
            None => (self.dummy()?, Ok(false)),
            Some(Err(refused)) => {
                portcullis_core::event!(
                    warn,
                    reason = "stored_hash_refused",
                    error = %refused,
                    "a stored password hash was refused; the dummy was verified instead"
                );
                (self.dummy()?, Err(refused))
            }
        };
        let needs_rehash = needs_rehash(&hash, inner.params);
        let outcome = self
            .run(move |inner| inner.verify_phc(password.expose().as_bytes(), &hash))
            .await?;
        match (known, outcome) {
            (Err(refused), _) => Err(PasswordError::StoredHash(refused)),
            (Ok(false), _) | (Ok(true), Ok(false)) => Ok(Verification::Mismatch),
            (Ok(true), Ok(true)) => Ok(Verification::Verified { needs_rehash }),
            (Ok(true), Err(())) => Err(PasswordError::Internal {
                reason: "argon2 could not verify",
            }),
        }
    }

    /// Hashes a new password after checking it against the policy (without
    /// context words of the user: prefer [`hash_for`](Self::hash_for)).
    ///
    /// # Errors
    ///
    /// [`PasswordError::Policy`], [`PasswordError::Busy`],
    /// [`PasswordError::Internal`].
    pub async fn hash(&self, password: impl Into<Password>) -> Result<String, PasswordError> {
        self.hash_for(password, &[]).await
    }

    /// Hashes a new password after checking it against the policy with this
    /// user's `context` words (user name, e-mail address), giving the PHC
    /// string to store.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Policy`], [`PasswordError::Busy`],
    /// [`PasswordError::Internal`].
    pub async fn hash_for(
        &self,
        password: impl Into<Password>,
        context: &[&str],
    ) -> Result<String, PasswordError> {
        let password = password.into();
        self.inner.policy.check(password.expose(), context)?;
        self.rehash(password).await
    }

    /// Hashes a password **without** the policy: for the password a user
    /// has just proven with [`Verification::Verified`] `{ needs_rehash:
    /// true }` (it may predate the policy). New passwords go through
    /// [`hash_for`](Self::hash_for).
    ///
    /// # Errors
    ///
    /// [`PasswordError::Busy`], [`PasswordError::Internal`] (also for a
    /// password over [`MAX_PASSWORD_BYTES`]).
    pub async fn rehash(&self, password: impl Into<Password>) -> Result<String, PasswordError> {
        let password = password.into();
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::Internal {
                reason: "password longer than MAX_PASSWORD_BYTES",
            });
        }
        self.run(move |inner| inner.hash_new(password.expose().as_bytes()))
            .await?
            .map_err(|_| PasswordError::Internal {
                reason: "argon2 could not hash",
            })
    }

    fn dummy(&self) -> Result<PasswordHash, PasswordError> {
        check_stored(&self.inner.dummy, self.inner.ceiling).map_err(|_| PasswordError::Internal {
            reason: "the dummy hash does not parse",
        })
    }

    fn busy(&self) -> PasswordError {
        self.inner.busy_refusals.fetch_add(1, Ordering::SeqCst);
        portcullis_core::event!(
            debug,
            reason = "password_busy",
            "every password hashing slot is taken and the queue is full"
        );
        PasswordError::Busy {
            retry_after: self.inner.retry_after,
        }
    }

    /// Runs `job` on the blocking pool once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| PasswordError::Internal {
                reason: "no tokio runtime",
            })?;
        let inner = &self.inner;
        let Ok(admission) = Arc::clone(&inner.admission).try_acquire_owned() else {
            return Err(self.busy());
        };
        let slot = match Arc::clone(&inner.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) if inner.queue_wait.is_zero() => return Err(self.busy()),
            Err(_) => {
                match tokio::time::timeout(
                    inner.queue_wait,
                    Arc::clone(&inner.slots).acquire_owned(),
                )
                .await
                {
                    Ok(Ok(slot)) => slot,
                    _ => return Err(self.busy()),
                }
            }
        };
        let running = Running::new(Arc::clone(inner), slot, admission);
        handle
            .spawn_blocking(move || {
                let result = job(&running.inner);
                drop(running);
                result
            })
            .await
            .map_err(|_| PasswordError::Internal {
                reason: "the hashing task failed",
            })
    }
}

/// Parses a stored PHC string and refuses, before any hashing, anything
/// but argon2id v19 within `ceiling`.
fn check_stored(stored: &str, ceiling: Argon2Params) -> Result<PasswordHash, StoredHashError> {
    if stored.len() > MAX_STORED_BYTES {
        return Err(StoredHashError::Malformed);
    }
    let hash = PasswordHash::new(stored).map_err(|_| StoredHashError::Malformed)?;
    if hash.algorithm != ARGON2ID_IDENT || hash.version != Some(Version::V0x13.into()) {
        return Err(StoredHashError::Unsupported);
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(StoredHashError::Malformed);
    }
    // Reads m, t, p; allocates nothing of the memory they ask for.
    let params = Params::try_from(&hash).map_err(|_| StoredHashError::Malformed)?;
    let asked = Argon2Params::new(params.m_cost(), params.t_cost(), params.p_cost());
    if !ceiling.covers(asked) {
        return Err(StoredHashError::AboveCeiling {
            m_kib: asked.m_kib,
            t: asked.t,
            p: asked.p,
        });
    }
    Ok(hash)
}

/// Lower m, t or p than `current`, or an output under 32 bytes.
fn needs_rehash(hash: &PasswordHash, current: Argon2Params) -> bool {
    Params::try_from(hash).map_or(true, |p| {
        p.m_cost() < current.m_kib
            || p.t_cost() < current.t
            || p.p_cost() < current.p
            || p.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN) < Params::DEFAULT_OUTPUT_LEN
    })
}

/// Builds a [`PasswordHasher`]; see the setters for each default.
#[derive(Debug)]
#[must_use]
pub struct PasswordHasherBuilder {
    params: Argon2Params,
    ceiling: Option<Argon2Params>,
    max_in_flight: Option<usize>,
    queue_length: Option<usize>,
    queue_wait: Duration,
    retry_after: Duration,
    policy: PasswordPolicy,
}

impl Default for PasswordHasherBuilder {
    fn default() -> Self {
        Self {
            params: Argon2Params::OWASP,
            ceiling: None,
            max_in_flight: None,
            queue_length: None,
            queue_wait: DEFAULT_QUEUE_WAIT,
            retry_after: DEFAULT_RETRY_AFTER,
            policy: PasswordPolicy::default(),
        }
    }
}

impl PasswordHasherBuilder {
    /// The parameters of new hashes (default [`Argon2Params::OWASP`]).
    /// Raising them makes older hashes come back with `needs_rehash`.
    pub const fn params(mut self, params: Argon2Params) -> Self {
        self.params = params;
        self
    }

    /// The most a stored hash may cost in each of m, t, p (default
    /// 4 × [`params`](Self::params)); never below the current parameters.
    /// With `max_in_flight` slots, verification memory is bounded by
    /// `max_in_flight × ceiling.m_kib()` KiB.
    pub const fn stored_ceiling(mut self, ceiling: Argon2Params) -> Self {
        self.ceiling = Some(ceiling);
        self
    }

    /// How many hashes may run at once (default: the number of cores,
    /// [`std::thread::available_parallelism`]).
    pub const fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// How many callers may wait for a slot (default 16 per slot); `0`
    /// refuses every call that finds all slots taken.
    pub const fn queue_length(mut self, n: usize) -> Self {
        self.queue_length = Some(n);
        self
    }

    /// The longest a caller waits for a slot (default 1 s); `ZERO` never
    /// waits.
    pub const fn queue_wait(mut self, wait: Duration) -> Self {
        self.queue_wait = wait;
        self
    }

    /// The `Retry-After` of [`PasswordError::Busy`] (default 1 s).
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The policy [`PasswordHasher::hash`] applies (default
    /// [`PasswordPolicy::default`]).
    pub fn policy(mut self, policy: PasswordPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The hasher. Computes the dummy hash (one hash at the chosen
    /// parameters, about 20 ms at the default ones): build it once, at
    /// startup.
    ///
    /// # Errors
    ///
    /// Parameters cheaper than OWASP's or out of range, a ceiling below
    /// them, `max_in_flight` of 0, a queue too long, or a failure of the
    /// random generator.
    pub fn build(self) -> Result<PasswordHasher, PasswordConfigError> {
        let p = self.params;
        if p.m_kib < 7 * 1024 || u64::from(p.m_kib) * u64::from(p.t) < 7 * 1024 * 5 {
            return Err(PasswordConfigError::ParamsTooWeak {
                m_kib: p.m_kib,
                t: p.t,
                p: p.p,
            });
        }
        if p.m_kib > 4 * 1024 * 1024 || p.t > 64 || p.p == 0 || p.p > 64 {
            return Err(p.config_error());
        }
        let params = Params::new(p.m_kib, p.t, p.p, None).map_err(|_| p.config_error())?;
        let ceiling = self.ceiling.unwrap_or(p.scaled(DEFAULT_CEILING_FACTOR));
        if !ceiling.covers(p) {
            return Err(PasswordConfigError::CeilingBelowParams);
        }
        let max_permits = Semaphore::MAX_PERMITS / 2;
        let max_in_flight = self.max_in_flight.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        });
        if max_in_flight == 0 || max_in_flight > max_permits {
            return Err(PasswordConfigError::MaxInFlight {
                value: max_in_flight,
                max: max_permits,
            });
        }
        let queue_length = self
            .queue_length
            .unwrap_or(max_in_flight.saturating_mul(DEFAULT_QUEUE_PER_SLOT));
        if queue_length > max_permits {
            return Err(PasswordConfigError::QueueLength {
                value: queue_length,
                max: max_permits,
            });
        }
        let blocks = params.block_count();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = dummy_hash(&argon2)?;
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                argon2,
                params: p,
                ceiling,
                slots: Arc::new(Semaphore::new(max_in_flight)),
                admission: Arc::new(Semaphore::new(max_in_flight + queue_length)),
                max_in_flight,
                queue_length,
                queue_wait: self.queue_wait,
                retry_after: self.retry_after,
                dummy,
                policy: self.policy,
                in_flight: AtomicUsize::new(0),
                peak_in_flight: AtomicUsize::new(0),
                busy_refusals: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                blocks,
                buffers: Mutex::new(Vec::with_capacity(max_in_flight)),
            }),
        })
    }
}

/// The hash unknown users are verified against: a random password (a
/// random salt, hashed) at the live parameters.
fn dummy_hash(argon2: &Argon2<'static>) -> Result<Box<str>, PasswordConfigError> {
    let rng = |_| PasswordConfigError::DummyHash {
        reason: "the random generator failed",
    };
    let password = argon2::password_hash::try_generate_salt().map_err(rng)?;
    argon2
        .hash_password(&password)
        .map(|h| h.to_string().into_boxed_str())
        .map_err(|_| PasswordConfigError::DummyHash {
            reason: "argon2 could not hash",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyError;

    const PW: &str = "plum orchard at dusk, 1987";

    fn hasher() -> PasswordHasher {
        PasswordHasher::builder().build().unwrap()
    }

    fn forged(params: &str) -> String {
        // A real salt and output, with the parameters swapped.
        format!(
            "$argon2id$v=19${params}$c2FsdHNhbHRzYWx0$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"
        )
    }

    #[tokio::test]
    async fn correct_and_incorrect() {
        let h = hasher();
        let stored = h.hash(PW).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(stored.len(), 97);
        assert_eq!(
            h.verify(Some(&stored), PW).await.unwrap(),
            Verification::Verified {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(Some(&stored), "plum orchard at dusk, 1988")
                .await
                .unwrap(),
            Verification::Mismatch
        );
        assert_eq!(h.verify(None, PW).await.unwrap(), Verification::Mismatch);
        // Two hashes of one password differ (random salts).
        assert_ne!(stored, h.hash(PW).await.unwrap());
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(
            h.verify(Some(&stored), long).await.unwrap(),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn agrees_with_the_argon2_crate() {
        use argon2::PasswordVerifier as _;
        let h = hasher();
        // Ours verified by argon2's own verify_password.
        let ours = h.hash(PW).await.unwrap();
        let reference = Argon2::default();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(reference.verify_password(PW.as_bytes(), &parsed).is_ok());
        assert!(reference.verify_password(b"other", &parsed).is_err());
        // argon2's hashes verified by ours: the current parameters, more
        // memory and lanes (a buffer of its own), a 64-byte output.
        for (params, needs_rehash) in [
            (Params::new(19_456, 2, 1, None), false),
            (Params::new(24_576, 2, 2, None), false),
            (Params::new(19_456, 2, 1, Some(64)), false),
            (Params::new(9216, 4, 1, None), true),
        ] {
            let a2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.unwrap());
            let theirs = a2.hash_password(PW.as_bytes()).unwrap().to_string();
            assert_eq!(
                h.verify(Some(&theirs), PW).await.unwrap(),
                Verification::Verified { needs_rehash },
                "{theirs}"
            );
            assert_eq!(
                h.verify(Some(&theirs), "other").await.unwrap(),
                Verification::Mismatch
            );
        }
        // Buffers are reused: never more than one per slot is kept.
        let kept = h.inner.buffers.lock().unwrap();
        assert!(!kept.is_empty() && kept.len() <= h.stats().max_in_flight);
        assert!(kept.iter().all(|b| b.len() == h.inner.blocks));
    }

    #[tokio::test]
    async fn unknown_users_cost_one_verification() {
        let h = hasher();
        let before = h.stats().completed;
        assert_eq!(h.verify(None, PW).await.unwrap(), Verification::Mismatch);
        assert_eq!(h.stats().completed, before + 1);
        // The dummy has the live parameters.
        assert!(h.inner.dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let other = PasswordHasher::builder()
            .params(Argon2Params::new(12_288, 3, 1))
            .build()
            .unwrap();
        assert!(
            other
                .inner
                .dummy
                .starts_with("$argon2id$v=19$m=12288,t=3,p=1$")
        );
    }

    #[tokio::test]
    async fn rehash_after_raising_params() {
        let old = PasswordHasher::builder()
            .params(Argon2Params::new(12_288, 3, 1))
            .build()
            .unwrap();
        let stored = old.hash(PW).await.unwrap();
        let new = hasher();
        assert_eq!(
            new.verify(Some(&stored), PW).await.unwrap(),
            Verification::Verified { needs_rehash: true }
        );
        // A wrong password says nothing about rehashing.
        assert_eq!(
            new.verify(Some(&stored), "nope").await.unwrap(),
            Verification::Mismatch
        );
        let fresh = new.rehash(PW).await.unwrap();
        assert_eq!(
            new.verify(Some(&fresh), PW).await.unwrap(),
            Verification::Verified {
                needs_rehash: false
            }
        );
        // A stronger stored hash is left alone.
        let strong = PasswordHasher::builder()
            .params(Argon2Params::new(19_456, 3, 1))
            .build()
            .unwrap()
            .hash(PW)
            .await
            .unwrap();
        assert_eq!(
            new.verify(Some(&strong), PW).await.unwrap(),
            Verification::Verified {
                needs_rehash: false
            }
        );
    }

    #[test]
    fn stored_hash_table() {
        let ceiling = Argon2Params::OWASP.scaled(4);
        let cases: &[(String, Result<(), StoredHashError>)] = &[
            (forged("m=19456,t=2,p=1"), Ok(())),
            (forged("m=77824,t=8,p=4"), Ok(())),
            (
                forged("m=4000000000,t=1,p=1"),
                Err(StoredHashError::AboveCeiling {
                    m_kib: 4_000_000_000,
                    t: 1,
                    p: 1,
                }),
            ),
            (
                forged("m=77825,t=1,p=1"),
                Err(StoredHashError::AboveCeiling {
                    m_kib: 77_825,
                    t: 1,
                    p: 1,
                }),
            ),
            (
                forged("m=19456,t=9,p=1"),
                Err(StoredHashError::AboveCeiling {
                    m_kib: 19_456,
                    t: 9,
                    p: 1,
                }),
            ),
            (
                forged("m=19456,t=2,p=5"),
                Err(StoredHashError::AboveCeiling {
                    m_kib: 19_456,
                    t: 2,
                    p: 5,
                }),
            ),
            (
                forged("m=19456,t=2,p=1").replace("argon2id", "argon2i"),
                Err(StoredHashError::Unsupported),
            ),
            (
                forged("m=19456,t=2,p=1").replace("argon2id", "argon2d"),
                Err(StoredHashError::Unsupported),
            ),
            (
                forged("m=19456,t=2,p=1").replace("v=19", "v=16"),
                Err(StoredHashError::Unsupported),
            ),
            (
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_owned(),
                Err(StoredHashError::Malformed),
            ),
            ("garbage".to_owned(), Err(StoredHashError::Malformed)),
            (String::new(), Err(StoredHashError::Malformed)),
            (
                "$argon2id$v=19$m=19456,t=2,p=1".to_owned(),
                Err(StoredHashError::Malformed),
            ),
            (forged("m=abc,t=2,p=1"), Err(StoredHashError::Malformed)),
            (forged("m=1,t=2,p=1"), Err(StoredHashError::Malformed)),
            (
                format!("{}{}", forged("m=19456,t=2,p=1"), "A".repeat(600)),
                Err(StoredHashError::Malformed),
            ),
            ("$".repeat(100_000), Err(StoredHashError::Malformed)),
        ];
        for (stored, want) in cases {
            assert_eq!(
                check_stored(stored, ceiling).map(|_| ()),
                *want,
                "{stored:.80}"
            );
        }
    }

    #[tokio::test]
    async fn hostile_stored_hashes_are_typed_errors() {
        let h = hasher();
        let hostile = [
            (forged("m=4000000000,t=1,p=1"), "above"),
            (
                forged("m=19456,t=2,p=1").replace("argon2id", "argon2i"),
                "unsupported",
            ),
            ("garbage".to_owned(), "malformed"),
        ];
        for (stored, what) in hostile {
            let before = h.stats().completed;
            let err = h.verify(Some(&stored), PW).await.unwrap_err();
            assert!(
                matches!(err, PasswordError::StoredHash(_)),
                "{what}: {err:?}"
            );
            // The same cost as any verification: the dummy ran.
            assert_eq!(h.stats().completed, before + 1, "{what}");
            // Neither the hash nor the password in what may be logged.
            let shown = format!("{err:?} {err}");
            let tail = stored.rsplit('$').next().unwrap();
            assert!(!shown.contains(tail), "{shown}");
            assert!(!shown.contains(PW), "{shown}");
        }
    }

    #[tokio::test]
    async fn hash_applies_the_policy() {
        let h = hasher();
        assert_eq!(
            h.hash("short").await.unwrap_err(),
            PasswordError::Policy(PolicyError::TooShort { min: 15 })
        );
        assert_eq!(
            h.hash("Password123456789").await.unwrap_err(),
            PasswordError::Policy(PolicyError::Blocklisted)
        );
        assert_eq!(
            h.hash_for("alice wonderland 1865", &["Alice"])
                .await
                .unwrap_err(),
            PasswordError::Policy(PolicyError::ContainsContext)
        );
        // rehash is for a password the user has just proven: no policy.
        assert!(h.rehash("short").await.is_ok());
    }

    #[tokio::test]
    async fn busy_when_every_slot_is_taken_and_no_queue() {
        let h = PasswordHasher::builder()
            .max_in_flight(1)
            .queue_length(0)
            .retry_after(Duration::from_secs(7))
            .build()
            .unwrap();
        let stored = h.hash(PW).await.unwrap();
        let held = occupy(&h);
        let before = h.stats().completed;
        for stored in [Some(stored.as_str()), None] {
            assert_eq!(
                h.verify(stored, PW).await.unwrap_err(),
                PasswordError::Busy {
                    retry_after: Duration::from_secs(7)
                }
            );
        }
        assert_eq!(h.stats().busy_refusals, 2);
        assert_eq!(h.stats().completed, before, "nothing was hashed");
        drop(held);
        assert!(h.verify(Some(&stored), PW).await.unwrap().is_verified());
    }

    /// Takes a slot and a place, as a running hash does.
    fn occupy(h: &PasswordHasher) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        (
            Arc::clone(&h.inner.slots).try_acquire_owned().unwrap(),
            Arc::clone(&h.inner.admission).try_acquire_owned().unwrap(),
        )
    }

    #[tokio::test]
    async fn busy_when_the_wait_runs_out() {
        let h = PasswordHasher::builder()
            .max_in_flight(1)
            .queue_length(1)
            .queue_wait(Duration::from_millis(50))
            .build()
            .unwrap();
        let _running = occupy(&h);
        let waited = h.verify(None, PW).await.unwrap_err();
        assert!(matches!(waited, PasswordError::Busy { .. }), "{waited:?}");
        assert_eq!(h.stats().busy_refusals, 1);
    }

    #[tokio::test]
    async fn busy_when_the_queue_is_full() {
        let h = PasswordHasher::builder()
            .max_in_flight(1)
            .queue_length(1)
            .queue_wait(Duration::from_secs(60))
            .build()
            .unwrap();
        let running = occupy(&h);
        // One caller waiting fills the queue ...
        let h2 = h.clone();
        let waiting = tokio::spawn(async move { h2.verify(None, PW).await });
        while h.inner.admission.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // ... so the next is refused at once.
        let full = h.verify(None, PW).await.unwrap_err();
        assert!(matches!(full, PasswordError::Busy { .. }), "{full:?}");
        // The slot comes free: the waiting caller is served.
        drop(running);
        assert_eq!(waiting.await.unwrap().unwrap(), Verification::Mismatch);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_the_bound_in_flight() {
        let h = PasswordHasher::builder()
            .max_in_flight(2)
            .queue_length(64)
            .queue_wait(Duration::from_secs(60))
            .build()
            .unwrap();
        let calls: Vec<_> = (0..24)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.verify(None, PW).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap(), Verification::Mismatch);
        }
        let s = h.stats();
        assert_eq!(s.peak_in_flight, 2, "{s:?}");
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.busy_refusals, 0);
    }

    #[tokio::test]
    async fn a_dropped_caller_keeps_its_slot_until_the_hash_ends() {
        let h = PasswordHasher::builder()
            .max_in_flight(1)
            .queue_length(0)
            .build()
            .unwrap();
        let h2 = h.clone();
        let call = tokio::spawn(async move { h2.verify(None, PW).await });
        while h.stats().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        call.abort();
        // The hash still runs on the blocking pool and holds the slot.
        assert!(matches!(
            h.verify(None, PW).await,
            Err(PasswordError::Busy { .. })
        ));
        while h.inner.admission.available_permits() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(h.verify(None, PW).await.unwrap(), Verification::Mismatch);
    }

    #[test]
    fn without_a_runtime_the_answer_is_an_error() {
        let h = hasher();
        // Polled outside any runtime: no panic, a typed error.
        assert_eq!(
            futures_poll(h.verify(None, PW)),
            Some(Err(PasswordError::Internal {
                reason: "no tokio runtime"
            }))
        );
    }

    /// Polls a future once with a no-op waker.
    fn futures_poll<F: std::future::Future>(fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn builder_refuses_weak_or_absurd_settings() {
        let b = PasswordHasher::builder;
        let cases = [
            (
                b().params(Argon2Params::new(4096, 3, 1)),
                PasswordConfigError::ParamsTooWeak {
                    m_kib: 4096,
                    t: 3,
                    p: 1,
                },
            ),
            (
                b().params(Argon2Params::new(19_456, 1, 1)),
                PasswordConfigError::ParamsTooWeak {
                    m_kib: 19_456,
                    t: 1,
                    p: 1,
                },
            ),
            (
                b().params(Argon2Params::new(19_456, 2, 0)),
                PasswordConfigError::ParamsOutOfRange {
                    m_kib: 19_456,
                    t: 2,
                    p: 0,
                },
            ),
            (
                b().params(Argon2Params::new(19_456, 65, 1)),
                PasswordConfigError::ParamsOutOfRange {
                    m_kib: 19_456,
                    t: 65,
                    p: 1,
                },
            ),
            (
                b().stored_ceiling(Argon2Params::new(19_456, 1, 1)),
                PasswordConfigError::CeilingBelowParams,
            ),
            (
                b().max_in_flight(0),
                PasswordConfigError::MaxInFlight {
                    value: 0,
                    max: Semaphore::MAX_PERMITS / 2,
                },
            ),
            (
                b().queue_length(usize::MAX),
                PasswordConfigError::QueueLength {
                    value: usize::MAX,
                    max: Semaphore::MAX_PERMITS / 2,
                },
            ),
        ];
        for (builder, want) in cases {
            assert_eq!(builder.build().unwrap_err(), want);
        }
        // Every one of OWASP's equal sets is accepted.
        for (m, t) in [(47_104, 1), (19_456, 2), (12_288, 3), (9216, 4), (7168, 5)] {
            b().params(Argon2Params::new(m, t, 1)).build().unwrap();
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let h = hasher();
        let shown = format!("{h:?}");
        assert!(!shown.contains("argon2id$"), "{shown}");
        let salt_and_hash = h.inner.dummy.rsplit('$').next().unwrap();
        assert!(!shown.contains(salt_and_hash));
        assert!(shown.contains("m_kib: 19456"));
    }
}
