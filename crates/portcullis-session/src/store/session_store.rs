//! The [`SessionStore`] trait: what every session backend promises, one
//! clause per method (the conformance suite names the clause that broke).

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp, TokenDigest};

use super::record::{CreateOutcome, SessionCap, SessionRecord, SessionUpdate};

/// A session backend.
///
/// Records are keyed by the SHA-256 [`TokenDigest`] of the session id; a
/// store never sees an id. The trait is object safe: layers hold an
/// `Arc<dyn SessionStore>`. Every method must be safe to call concurrently.
///
/// A store judges expiry with the clock it was built with, so a test's
/// manual clock moves every deadline. Backends that can (Redis) also set a
/// native expiry so that dead records are cleaned up without a sweep.
///
/// Errors: [`StoreError::backend`] or [`StoreError::timeout`] whenever the
/// answer is unknown (layers turn these into 503 and never into "logged
/// out"); the other kinds only where a method's contract names them.
///
/// The [`testing`](crate::testing) module (feature `testing`) holds the
/// conformance suite every store, ours and yours, should pass; the
/// [module docs](crate::store) show a complete store.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new record under `key`.
    ///
    /// - *collision*: fails with [`StoreError::conflict`] when a live
    ///   record already has this key (an id collision), leaving it
    ///   untouched.
    /// - *cap*: when `cap` is given and `record.user_id` is set, counts the
    ///   user's live sessions (not counting `cap.replacing`) and either
    ///   evicts the oldest to make room ([`eviction_victims`](super::eviction_victims) picks them)
    ///   or returns [`CreateOutcome::LimitReached`] without storing
    ///   anything.
    /// - *atomic cap*: the count and the insert are one step: logins racing
    ///   against a cap never end above it.
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError>;

    /// Loads a record.
    ///
    /// - *round trip*: returns the record as it was written.
    /// - *expired is absent*: never returns a record whose idle or
    ///   absolute deadline has passed (`Ok(None)` instead, as for an
    ///   unknown key).
    /// - *corrupt*: a record that exists but cannot be decoded is
    ///   [`StoreError::corrupt`], for that key only.
    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError>;

    /// Applies `update` to an existing, live record.
    ///
    /// - *key-level*: keys in `update.set` are written, keys in
    ///   `update.remove` deleted, other keys untouched
    ///   ([`SessionRecord::apply`] does exactly this).
    /// - *concurrent writers*: two requests changing different keys both
    ///   survive.
    /// - *update-only*: when the record is absent or expired, fails with
    ///   [`StoreError::not_found`] and writes nothing. A session deleted
    ///   while a request was in flight is never resurrected.
    /// - *extends idle*: as [`SessionRecord::touch`] does.
    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError>;

    /// Extends the idle deadline and `last_seen` of a live record (the
    /// cheap write behind idle extension).
    ///
    /// - *slides*: as [`SessionRecord::touch`] does: never back, never past
    ///   the absolute deadline.
    /// - *data untouched*: the record's data stays as it is.
    /// - *touch-only*: fails with [`StoreError::not_found`] when the record
    ///   is gone, and writes nothing.
    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError>;

    /// Deletes a record.
    ///
    /// - *reports*: returns whether a live record was deleted.
    /// - *unknown is fine*: deleting an unknown key is `Ok(false)`.
    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError>;

    /// The user's sessions, in no particular order.
    ///
    /// - *this user only*: never another user's or an anonymous session.
    /// - *live only*: never an expired session.
    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError>;

    /// Deletes every session of the user except `except`, if given.
    ///
    /// - *except*: the kept session survives.
    /// - *this user only*: other users' and anonymous sessions stay.
    /// - *reports*: returns how many live sessions were deleted.
    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError>;

    /// How many sessions the user has.
    ///
    /// - *live only*: expired sessions do not count.
    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError>;
}

#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        (**self).create(key, record, cap).await
    }
    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        (**self).load(key).await
    }
    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        (**self).update(key, update).await
    }
    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        (**self).touch(key, last_seen, idle_deadline).await
    }
    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        (**self).delete(key).await
    }
    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        (**self).list_for_user(user_id).await
    }
    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        (**self).delete_for_user(user_id, except).await
    }
    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        (**self).count_for_user(user_id).await
    }
}
