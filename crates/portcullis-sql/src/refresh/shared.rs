//! The part of the refresh stores that is the same on both databases
//! word for word, stamped for each by [`refresh_store_code!`]: sqlx's
//! query and connection types differ per database, the statements are
//! each backend's own `Sql`, and the rotation itself is `super::rotate`.

/// Defines, in a backend's module, `bind_insert`, the rotation's
/// connection (`Conn`, implementing `RotationRows`) and the
/// `RefreshStore` impl of `$store` on the module's `Inner` (which gives
/// `insert`, `insert_capped` and `purge_all`).
macro_rules! refresh_store_code {
    ($store:ident, $db:ty, $args:ty) => {
        fn bind_insert<'q>(
            q: sqlx::query::Query<'q, $db, $args>,
            row: &'q NewRow,
        ) -> sqlx::query::Query<'q, $db, $args> {
            q.bind(&row.key[..])
                .bind(row.id.as_str())
                .bind(&row.user_key[..])
                .bind(&row.user_id[..])
                .bind(&row.current[..])
                .bind(row.previous.as_ref().map(|p| &p[..]))
                .bind(row.previous_at)
                .bind(row.history.as_str())
                .bind(row.rotations)
                .bind(row.created_at)
                .bind(row.last_used_at)
                .bind(row.idle)
                .bind(row.absolute)
                .bind(row.claims.as_str())
                .bind(row.device.as_str())
                .bind(row.jkt.as_deref())
        }

        /// A rotation's statements on one pooled connection.
        struct Conn<'a> {
            conn: PoolConnection<$db>,
            sql: &'a Sql,
        }

        #[async_trait]
        impl RotationRows for Conn<'_> {
            async fn swap(&mut self, s: &Swap) -> Result<Option<RawRow>, StoreError> {
                sqlx::query_as(self.sql.swap.clone())
                    .bind(&s.key[..])
                    .bind(&s.presented[..])
                    .bind(&s.successor[..])
                    .bind(s.keep)
                    .bind(s.now)
                    .bind(s.idle)
                    .bind(s.device.as_deref())
                    .fetch_optional(&mut *self.conn)
                    .await
                    .store()
            }

            async fn read(&mut self, key: &[u8; 32]) -> Result<Option<(RawRow, bool)>, StoreError> {
                let row: Option<ReadRow> = sqlx::query_as(self.sql.read.clone())
                    .bind(&key[..])
                    .fetch_optional(&mut *self.conn)
                    .await
                    .store()?;
                Ok(row.map(split))
            }

            async fn mark_reused(
                &mut self,
                key: &[u8; 32],
                rotations: i64,
                current: &[u8; 32],
                now: i64,
            ) -> Result<Option<RawRow>, StoreError> {
                sqlx::query_as(self.sql.mark_reused.clone())
                    .bind(&key[..])
                    .bind(rotations)
                    .bind(&current[..])
                    .bind(now)
                    .fetch_optional(&mut *self.conn)
                    .await
                    .store()
            }

            async fn delete_ended(&mut self, key: &[u8; 32], now: i64) -> Result<(), StoreError> {
                sqlx::query(self.sql.delete_ended.clone())
                    .bind(&key[..])
                    .bind(now)
                    .execute(&mut *self.conn)
                    .await
                    .store()
                    .map(drop)
            }
        }

        #[async_trait]
        impl RefreshStore for $store {
            async fn create(
                &self,
                family: &Family,
                max_per_user: Option<usize>,
            ) -> Result<Vec<Family>, StoreError> {
                let row = NewRow::of(family)?;
                let inner = &self.inner;
                let result = bounded(inner.timeout, async {
                    match max_per_user {
                        None => inner.insert(&row).await.map(|()| Vec::new()),
                        Some(max) => inner.insert_capped(&row, family.created_at, max).await,
                    }
                })
                .await;
                self.purge_in_background();
                result
            }

            async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
                let inner = &self.inner;
                let result = bounded(inner.timeout, async {
                    let conn = inner.pool.acquire().await.store()?;
                    let mut rows = Conn {
                        conn,
                        sql: &inner.sql,
                    };
                    super::rotate(&mut rows, r).await
                })
                .await;
                self.purge_in_background();
                result
            }

            async fn get(
                &self,
                id: &FamilyId,
                now: Timestamp,
            ) -> Result<Option<Family>, StoreError> {
                let inner = &self.inner;
                bounded(inner.timeout, async {
                    let row: Option<RawRow> = sqlx::query_as(inner.sql.get.clone())
                        .bind(&family_key(id)[..])
                        .bind(ms(now))
                        .fetch_optional(&inner.pool)
                        .await
                        .store()?;
                    Ok(row.map(decode).transpose()?)
                })
                .await
            }

            async fn revoke(&self, id: &FamilyId) -> Result<Option<Family>, StoreError> {
                let inner = &self.inner;
                bounded(inner.timeout, async {
                    let row: Option<RawRow> = sqlx::query_as(inner.sql.revoke.clone())
                        .bind(&family_key(id)[..])
                        .fetch_optional(&inner.pool)
                        .await
                        .store()?;
                    Ok(decode_all(row.into_iter().collect()).pop())
                })
                .await
            }

            async fn revoke_user(
                &self,
                user_id: &str,
                except: Option<&FamilyId>,
            ) -> Result<Vec<Family>, StoreError> {
                let inner = &self.inner;
                bounded(inner.timeout, async {
                    let rows: Vec<RawRow> = sqlx::query_as(inner.sql.revoke_user.clone())
                        .bind(&user_key(user_id)[..])
                        .bind(user_id.as_bytes())
                        .bind(except.map(|id| family_key(id).to_vec()))
                        .fetch_all(&inner.pool)
                        .await
                        .store()?;
                    Ok(decode_all(rows))
                })
                .await
            }

            async fn list_user(
                &self,
                user_id: &str,
                now: Timestamp,
            ) -> Result<Vec<Family>, StoreError> {
                let inner = &self.inner;
                bounded(inner.timeout, async {
                    let rows: Vec<RawRow> = sqlx::query_as(inner.sql.list_user.clone())
                        .bind(&user_key(user_id)[..])
                        .bind(user_id.as_bytes())
                        .bind(ms(now))
                        .fetch_all(&inner.pool)
                        .await
                        .store()?;
                    Ok(decode_all(rows))
                })
                .await
            }

            async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
                self.inner.purge_all(now).await
            }
        }
    };
}
