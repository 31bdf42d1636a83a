//! `FileStore`: durable sessions on one node's file system.
//!
//! ```no_run
//! use portcullis_session::{FileStore, SessionConfig, SessionLayer};
//!
//! let store = FileStore::open("/var/lib/myapp/sessions").unwrap();
//! let layer = SessionLayer::new(store, SessionConfig::default()).unwrap();
//! # let _ = layer;
//! ```
//!
//! Layout under the root directory:
//!
//! ```text
//! sessions/<sha256(id) hex>.json       one record per file (mode 0600)
//! users/<sha256(user id) hex>/<key>    empty marker: the per-user index
//! ```
//!
//! Writes are atomic: a record is written to a temporary file and then
//! hard-linked into place (create: fails if the name exists) or renamed
//! over the old file (update). A reader sees the old record or the new one,
//! never half of one, and a crash leaves at most a stray temporary file. A
//! file that does not decode is [`StoreError::corrupt`] for that session
//! only. Mutations are serialized by a lock inside the store, so the store
//! is safe for one process; do not point two processes at one directory.
//! File I/O runs on tokio's blocking pool.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::{OpaqueToken, SharedClock, StoreError, SystemClock, Timestamp, TokenDigest};

use crate::schedule::Every;
use crate::store::SessionStore;
use crate::store::{CreateOutcome, SessionCap, SessionRecord, SessionUpdate, eviction_victims};

/// Sessions as files in a directory. Cheap to clone.
///
/// Durability (on Unix): the record's data is synced before it is linked
/// or renamed into place, and the `sessions` directory is synced after
/// every link, rename and removal, before the call returns. A session
/// whose create, update or delete (logout) returned `Ok` is therefore still
/// created, updated or deleted after a power loss; a call that fails may
/// or may not have taken effect. A user's index marker is synced when it is
/// written (so "log out everywhere" finds every session after a power
/// loss); its removal is not (a marker of a dead session is pruned when
/// read).
///
/// Expired files are removed by the store itself: at most once per
/// [`FileStore::purge_interval`] (default 60 s), a `create` sweeps the
/// directory after its own write, so the directory stays bounded by the
/// sessions alive in one idle timeout plus one interval, without a
/// background task. [`FileStore::purge_expired`] sweeps at once.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: PathBuf,
    users: PathBuf,
    clock: SharedClock,
    /// Serializes every mutation (read-modify-write must not interleave
    /// with a delete, or a deleted session could come back).
    write_lock: Mutex<()>,
    purge: Every,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.inner.sessions.parent())
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (creating if needed) a store rooted at `dir`, on the system
    /// clock.
    ///
    /// # Errors
    ///
    /// The directories cannot be created.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with_clock(dir, SystemClock::shared())
    }

    /// Like [`FileStore::open`], judging expiry by `clock`.
    ///
    /// # Errors
    ///
    /// The directories cannot be created.
    pub fn open_with_clock(dir: impl AsRef<Path>, clock: SharedClock) -> io::Result<Self> {
        Self::open_with_clock_and_purge_interval(dir, clock, Duration::from_secs(60))
    }

    /// Like [`FileStore::open_with_clock`], removing expired files by itself
    /// at most once per `interval` (default 60 s; see [`FileStore`]).
    ///
    /// # Errors
    ///
    /// The directories cannot be created.
    pub fn open_with_clock_and_purge_interval(
        dir: impl AsRef<Path>,
        clock: SharedClock,
        interval: Duration,
    ) -> io::Result<Self> {
        let root = dir.as_ref();
        let sessions = root.join("sessions");
        let users = root.join("users");
        fs::create_dir_all(&sessions)?;
        fs::create_dir_all(&users)?;
        let now = clock.now().millis();
        Ok(Self {
            inner: Arc::new(Inner {
                sessions,
                users,
                clock,
                write_lock: Mutex::new(()),
                purge: Every::new(interval, now),
            }),
        })
    }

    /// The interval of the store's own sweep for expired files.
    #[must_use]
    pub fn purge_interval(&self) -> Duration {
        self.inner.purge.interval()
    }

    /// Removes every expired session file now; returns how many.
    ///
    /// # Errors
    ///
    /// The directory cannot be read.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.blocking(Inner::purge).await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(StoreError::backend)?
    }
}

/// Syncs directory `dir` (its entries: names created, renamed, removed).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::backend)
}

/// Directories cannot be opened and synced this way off Unix.
#[cfg(not(unix))]
#[allow(clippy::unnecessary_wraps)]
fn sync_dir(_: &Path) -> Result<(), StoreError> {
    Ok(())
}

fn key_of_path(path: &Path) -> Option<TokenDigest> {
    let name = path.file_name()?.to_str()?;
    TokenDigest::from_hex(name.strip_suffix(".json")?).ok()
}

impl Inner {
    /// Removes every expired session file. The directory is read without
    /// the write lock; each removal takes it (and checks the record again),
    /// so requests are never held up for a whole sweep.
    fn purge(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.sessions).map_err(StoreError::backend)? {
            let path = entry.map_err(StoreError::backend)?.path();
            let Some(key) = key_of_path(&path) else {
                continue;
            };
            let now = self.clock.now();
            if !matches!(self.read(&key), Ok(Some(rec)) if rec.is_expired(now)) {
                continue;
            }
            let _guard = self.lock();
            if let Ok(Some(rec)) = self.read(&key) {
                if rec.is_expired(self.clock.now()) {
                    self.remove(&key, rec.user_id.as_deref())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Sweeps if the interval has passed since the last sweep (one caller
    /// wins the race; the others go on).
    fn maybe_purge(&self) {
        if self.purge.claim(self.clock.now().millis()) {
            // Best effort: a failed sweep is retried after the next interval.
            if self.purge().is_err() {
                portcullis_core::event!(debug, reason = "purge-failed", "file store sweep failed");
            }
        }
    }

    /// Syncs the `sessions` directory, so that a link, rename or removal in
    /// it survives a power loss.
    fn sync_dir(&self) -> Result<(), StoreError> {
        sync_dir(&self.sessions)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, key: &TokenDigest) -> PathBuf {
        self.sessions.join(format!("{}.json", key.to_hex()))
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        self.users.join(TokenDigest::of(user.as_bytes()).to_hex())
    }

    /// Reads a record, live or not; `None` when the file is absent.
    fn read(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        match fs::read(self.path(key)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(StoreError::corrupt),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::backend(e)),
        }
    }

    fn read_live(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let now = self.clock.now();
        Ok(self.read(key)?.filter(|r| !r.is_expired(now)))
    }

    /// Writes `record` to a fresh temporary file and returns its path.
    fn write_temp(&self, record: &SessionRecord) -> Result<PathBuf, StoreError> {
        let bytes = serde_json::to_vec(record).map_err(StoreError::backend)?;
        let nonce = OpaqueToken::generate()
            .map_err(StoreError::backend)?
            .digest()
            .to_hex();
        let tmp = self.sessions.join(format!(".tmp-{}", &nonce[..24]));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(StoreError::backend)?;
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::backend(e));
        }
        Ok(tmp)
    }

    /// Replaces the record atomically (rename over the old file).
    fn replace(&self, key: &TokenDigest, record: &SessionRecord) -> Result<(), StoreError> {
        let tmp = self.write_temp(record)?;
        fs::rename(&tmp, self.path(key)).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::backend(e)
        })?;
        self.sync_dir()
    }

    fn remove(&self, key: &TokenDigest, user: Option<&str>) -> Result<(), StoreError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => self.sync_dir()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::backend(e)),
        }
        if let Some(user) = user {
            let _ = fs::remove_file(self.user_dir(user).join(key.to_hex()));
        }
        Ok(())
    }

    /// `create` under the write lock.
    fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        let _guard = self.lock();
        let path = self.path(key);
        match self.read(key) {
            Ok(Some(old)) if !old.is_expired(self.clock.now()) => {
                return Err(StoreError::conflict());
            }
            Ok(Some(old)) => self.remove(key, old.user_id.as_deref())?,
            Ok(None) => {}
            Err(e) if e.kind() == portcullis_core::StoreErrorKind::Corrupt => {
                self.remove(key, None)?;
            }
            Err(e) => return Err(e),
        }
        let mut evicted = Vec::new();
        if let Some(user) = &record.user_id {
            if let Some(cap) = cap {
                let live = self
                    .live_for_user(user)?
                    .into_iter()
                    .filter(|(k, _)| Some(*k) != cap.replacing)
                    .map(|(k, r)| (k, r.created_at))
                    .collect();
                let Some(victims) = eviction_victims(live, &cap) else {
                    return Ok(CreateOutcome::LimitReached);
                };
                for victim in victims {
                    self.remove(&victim, Some(user))?;
                    evicted.push(victim);
                }
            }
            let dir = self.user_dir(user);
            let new_dir = !dir.is_dir();
            fs::create_dir_all(&dir).map_err(StoreError::backend)?;
            if new_dir {
                sync_dir(&self.users)?;
            }
            fs::write(dir.join(key.to_hex()), b"").map_err(StoreError::backend)?;
            sync_dir(&dir)?;
        }
        let tmp = self.write_temp(record)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.sync_dir()?;
                Ok(CreateOutcome::Created { evicted })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::conflict()),
            Err(e) => Err(StoreError::backend(e)),
        }
    }

    /// The user's live sessions; prunes markers of dead ones.
    fn live_for_user(&self, user: &str) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let dir = self.user_dir(user);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::backend(e)),
        };
        let mut live = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::backend)?;
            let Some(key) = entry
                .file_name()
                .to_str()
                .and_then(|n| TokenDigest::from_hex(n).ok())
            else {
                continue;
            };
            match self.read_live(&key) {
                Ok(Some(rec)) if rec.user_id.as_deref() == Some(user) => live.push((key, rec)),
                Ok(_) => {
                    let _ = fs::remove_file(entry.path());
                }
                // A corrupt record is that session's problem only.
                Err(e) if e.kind() == portcullis_core::StoreErrorKind::Corrupt => {}
                Err(e) => return Err(e),
            }
        }
        Ok(live)
    }
}

#[async_trait]
impl SessionStore for FileStore {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        let (key, record) = (*key, record.clone());
        self.blocking(move |inner| {
            let created = inner.create(&key, &record, cap);
            if created.is_ok() {
                // After this create's own write, with the lock released.
                inner.maybe_purge();
            }
            created
        })
        .await
    }

    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let key = *key;
        self.blocking(move |inner| inner.read_live(&key)).await
    }

    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        let (key, update) = (*key, update.clone());
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let mut rec = inner.read_live(&key)?.ok_or_else(StoreError::not_found)?;
            rec.apply(&update);
            inner.replace(&key, &rec)
        })
        .await
    }

    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        let key = *key;
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let mut rec = inner.read_live(&key)?.ok_or_else(StoreError::not_found)?;
            rec.touch(last_seen, idle_deadline);
            inner.replace(&key, &rec)
        })
        .await
    }

    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        let key = *key;
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let now = inner.clock.now();
            match inner.read(&key) {
                Ok(Some(rec)) => {
                    inner.remove(&key, rec.user_id.as_deref())?;
                    Ok(!rec.is_expired(now))
                }
                Ok(None) => Ok(false),
                Err(e) if e.kind() == portcullis_core::StoreErrorKind::Corrupt => {
                    inner.remove(&key, None)?;
                    Ok(true)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |inner| inner.live_for_user(&user)).await
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        let (user, except) = (user_id.to_owned(), except.copied());
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let mut deleted = 0;
            for (key, _) in inner.live_for_user(&user)? {
                if Some(key) != except {
                    inner.remove(&key, Some(&user))?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |inner| Ok(inner.live_for_user(&user)?.len()))
            .await
    }
}
