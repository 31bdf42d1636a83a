//! The connections behind a [`RedisBackend`](crate::RedisBackend): one
//! multiplexed connection (or a cluster client) shared by every call,
//! replaced when it breaks, with a backoff while Redis is unreachable; or
//! the app's deadpool pool.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value,
};
use portcullis_core::StoreError;
use tokio::time::Instant;

pub(crate) enum Source {
    Shared(Box<SharedConnection>),
    Pool(deadpool_redis::Pool),
}

/// Builds connections that many calls share at once.
pub(crate) enum Factory {
    Single(Client, AsyncConnectionConfig),
    /// The cluster, and plain clients for the node URLs configured.
    #[cfg(feature = "cluster")]
    Cluster(deadpool_redis::redis::cluster::ClusterClient, Vec<Client>),
}

/// One shared (multiplexed) connection, replaced when it fails.
pub(crate) struct SharedConnection {
    pub(crate) factory: Factory,
    pub(crate) slot: Mutex<Slot>,
    /// Held while connecting, so that concurrent calls wait for one attempt
    /// instead of each opening a connection.
    pub(crate) connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) current: Option<(u64, Conn)>,
    pub(crate) generation: u64,
    pub(crate) failed_at: Option<Instant>,
}

impl SharedConnection {
    pub(crate) fn new(factory: Factory) -> Self {
        Self {
            factory,
            slot: Mutex::new(Slot::default()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection, or `Err` during the backoff after a failed
    /// attempt.
    pub(crate) fn current(&self, backoff: Duration) -> Option<Result<(u64, Conn), StoreError>> {
        let slot = self.slot();
        if let Some((generation, conn)) = &slot.current {
            return Some(Ok((*generation, conn.clone())));
        }
        match slot.failed_at {
            Some(at) if at.elapsed() < backoff => Some(Err(StoreError::backend(Unreachable))),
            _ => None,
        }
    }

    pub(crate) async fn get(&self, backoff: Duration) -> Result<(u64, Conn), StoreError> {
        if let Some(found) = self.current(backoff) {
            return found;
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected (or failed) while this one waited.
        if let Some(found) = self.current(backoff) {
            return found;
        }
        // Records a failure if the attempt errs or is cancelled by the
        // caller's timeout.
        let mut attempt = Attempt {
            shared: self,
            done: false,
        };
        let conn = match &self.factory {
            Factory::Single(client, config) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Conn::Multiplexed),
            #[cfg(feature = "cluster")]
            Factory::Cluster(client, _) => client.get_async_connection().await.map(Conn::Cluster),
        }
        .map_err(unavailable)?;
        attempt.done = true;
        let mut slot = self.slot();
        slot.generation += 1;
        slot.failed_at = None;
        let generation = slot.generation;
        slot.current = Some((generation, conn.clone()));
        portcullis_core::event!(debug, reason = "redis-connected", "connected to Redis");
        Ok((generation, conn))
    }

    /// Drops the connection of `generation` (if still current).
    pub(crate) fn discard(&self, generation: u64) {
        let mut slot = self.slot();
        if slot
            .current
            .as_ref()
            .is_some_and(|(current, _)| *current == generation)
        {
            slot.current = None;
            portcullis_core::event!(
                warn,
                reason = "redis-connection-lost",
                "Redis connection failed; the next call reconnects"
            );
        }
    }
}

struct Attempt<'a> {
    pub(crate) shared: &'a SharedConnection,
    pub(crate) done: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.slot().failed_at = Some(Instant::now());
            portcullis_core::event!(
                debug,
                reason = "redis-connect-failed",
                "could not connect to Redis"
            );
        }
    }
}

/// Redis could not be reached recently; calls fail at once until the
/// backoff passes.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unreachable (waiting before the next connection attempt)")]
pub(crate) struct Unreachable;

/// A connection as the stores use it.
#[derive(Clone)]
pub(crate) enum Conn {
    Multiplexed(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(deadpool_redis::redis::cluster_async::ClusterConnection),
}

/// A connection for one call: shared, or checked out of a pool.
pub(crate) enum Lease {
    Shared(u64, Conn),
    Pooled(deadpool_redis::Connection),
}

impl ConnectionLike for Lease {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Shared(_, Conn::Multiplexed(c)) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Shared(_, Conn::Cluster(c)) => c.req_packed_command(cmd),
            Self::Pooled(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Shared(_, Conn::Multiplexed(c)) => c.req_packed_commands(cmd, offset, count),
            #[cfg(feature = "cluster")]
            Self::Shared(_, Conn::Cluster(c)) => c.req_packed_commands(cmd, offset, count),
            Self::Pooled(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Shared(_, Conn::Multiplexed(c)) => c.get_db(),
            #[cfg(feature = "cluster")]
            Self::Shared(_, Conn::Cluster(c)) => c.get_db(),
            Self::Pooled(c) => c.get_db(),
        }
    }
}

/// A call that got no answer: a timeout, or a backend failure.
pub(crate) fn unavailable(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::timeout()
    } else {
        StoreError::backend(e)
    }
}
