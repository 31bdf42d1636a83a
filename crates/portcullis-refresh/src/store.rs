//! The `RefreshStore` trait.

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::{StoreError, Timestamp};

use crate::family::{Family, RotateOutcome, Rotation};
use crate::token::FamilyId;

/// A refresh-token backend: token families, keyed by [`FamilyId`].
///
/// Object safe (layers hold an `Arc<dyn RefreshStore>`); every method must
/// be safe to call concurrently. Stores judge expiry by the `now` callers
/// pass or by the clock they were built with, never by wall time alone.
/// Errors: [`StoreError::backend`] or [`StoreError::timeout`] when the
/// outcome is unknown; callers then answer 503 and the client retries with
/// the same token (which still works: rotation is idempotent inside the
/// grace window).
///
/// The [`testing`](crate::testing) module (feature `testing`) has the
/// conformance suite.
#[async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    /// Stores a new family. Fails with [`StoreError::conflict`] when the id
    /// exists.
    ///
    /// With `max_per_user = Some(n)`, atomically with the insert, the
    /// user's oldest live families (by `created_at`, then id) are deleted
    /// so that at most `n` remain counting the new one, and the deleted
    /// families are returned (the caller revokes their access tokens).
    /// Expired families never count against the cap and may be pruned on
    /// the way. The work per call must not grow with the size of the
    /// user's index beyond O(log n) per family touched.
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError>;

    /// Rotates atomically (compare-and-swap on the presented digest), with
    /// exactly the semantics of [`Family::classify`] and [`Family::rotate`]:
    ///
    /// - family absent: [`RotateOutcome::Invalid`];
    /// - family expired at `rotation.now`: [`RotateOutcome::Expired`] with
    ///   it when the presented token is one it issued (or
    ///   [`RotateOutcome::Invalid`], which loses the `family_expired`
    ///   event), else [`RotateOutcome::Invalid`]; an expired family may be
    ///   deleted;
    /// - presented is current: rotate, return [`RotateOutcome::Rotated`];
    /// - presented is the previous token inside the grace window: if the
    ///   current token is `rotation.successor`, return
    ///   [`RotateOutcome::Repeat`] without writing, else
    ///   [`RotateOutcome::KeyMismatch`];
    /// - presented is older, or the previous one after the window: delete
    ///   the family and return [`RotateOutcome::Reused`] with it (the
    ///   deletion must be durable even though the request fails);
    /// - otherwise [`RotateOutcome::Invalid`], nothing written.
    ///
    /// Two racing calls with the same presented token must end with one
    /// rotation: one gets `Rotated`, the other `Repeat`.
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;

    /// A live family.
    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError>;

    /// Deletes a family; returns it if it was there.
    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError>;

    /// Deletes every family of a user except `except`; returns the deleted
    /// families.
    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError>;

    /// The user's live families.
    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError>;

    /// Deletes expired families; returns how many.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
}

#[async_trait]
impl<S: RefreshStore + ?Sized> RefreshStore for Arc<S> {
    async fn create(
        &self,
        family: &Family,
        max_per_user: Option<usize>,
    ) -> Result<Vec<Family>, StoreError> {
        (**self).create(family, max_per_user).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        (**self).rotate(rotation).await
    }
    async fn get(&self, id: &FamilyId, now: Timestamp) -> Result<Option<Family>, StoreError> {
        (**self).get(id, now).await
    }
    async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
        (**self).revoke(id).await
    }
    async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&FamilyId>,
    ) -> Result<Vec<Family>, StoreError> {
        (**self).revoke_user(user_id, except).await
    }
    async fn list_user(&self, user_id: &str, now: Timestamp) -> Result<Vec<Family>, StoreError> {
        (**self).list_user(user_id, now).await
    }
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        (**self).purge_expired(now).await
    }
}
