//! The custom store shown in the `store` module's docs passes the
//! conformance suite: the example is a working store, not a sketch.
#![cfg(feature = "testing")]

include!("support/hash_map_store.rs");

portcullis_session::session_store_conformance!(|clock| async move { HashMapStore::new(clock) });

/// A store that breaks one clause: `update` of a deleted session answers
/// `Ok` instead of `not_found`.
#[derive(Debug)]
struct LenientUpdate(HashMapStore);

#[async_trait]
impl SessionStore for LenientUpdate {
    async fn create(
        &self,
        key: &TokenDigest,
        record: &SessionRecord,
        cap: Option<SessionCap>,
    ) -> Result<CreateOutcome, StoreError> {
        self.0.create(key, record, cap).await
    }
    async fn load(&self, key: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        self.0.load(key).await
    }
    async fn update(&self, key: &TokenDigest, update: &SessionUpdate) -> Result<(), StoreError> {
        let _ = self.0.update(key, update).await;
        Ok(())
    }
    async fn touch(
        &self,
        key: &TokenDigest,
        last_seen: Timestamp,
        idle_deadline: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.touch(key, last_seen, idle_deadline).await
    }
    async fn delete(&self, key: &TokenDigest) -> Result<bool, StoreError> {
        self.0.delete(key).await
    }
    async fn list_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenDigest, SessionRecord)>, StoreError> {
        self.0.list_for_user(user_id).await
    }
    async fn delete_for_user(
        &self,
        user_id: &str,
        except: Option<&TokenDigest>,
    ) -> Result<u64, StoreError> {
        self.0.delete_for_user(user_id, except).await
    }
    async fn count_for_user(&self, user_id: &str) -> Result<usize, StoreError> {
        self.0.count_for_user(user_id).await
    }
}

#[tokio::test]
async fn a_failure_names_the_method_and_the_clause() {
    let failed = tokio::spawn(portcullis_session::testing::update_never_resurrects(
        |clock| async move { LenientUpdate(HashMapStore::new(clock)) },
    ))
    .await
    .expect_err("a lenient update must fail the suite");
    let panic = failed.into_panic();
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(
        message.starts_with("update: a deleted session must not come back (update-only)"),
        "{message}"
    );
}
