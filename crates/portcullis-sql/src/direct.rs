//! A few PostgreSQL connections of a store's own, beside the application's
//! pool, for the statement of every authenticated request (the session
//! load): sqlx pings each pooled connection on its way back to the pool, a
//! second round trip per call that these connections do not pay.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, PgPool};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Up to `max` connections opened with the pool's connect options, kept
/// idle between calls. A connection whose call failed or was dropped
/// half-way (a timeout) is closed, never reused.
pub(crate) struct DirectConnections {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Semaphore,
    max: usize,
}

impl fmt::Debug for DirectConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the connect options: they hold the password.
        f.debug_struct("DirectConnections")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl DirectConnections {
    /// `None` when `max` is 0 (the calls use the pool).
    pub(crate) fn new(pool: &PgPool, max: usize) -> Option<Self> {
        (max > 0).then(|| Self {
            // These connections run primary-key lookups only: one plan per
            // statement for good (never planned again per execution), and
            // on the index however small the table is (a scan of a small
            // table costs more per statement than the index, and more
            // again per key of `id_digest = ANY($1)`).
            options: (*pool.connect_options()).clone().options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
            ]),
            idle: Mutex::new(Vec::with_capacity(max)),
            permits: Semaphore::new(max),
            max,
        })
    }

    /// The most connections open at a time.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// An idle connection, or a new one when none is idle (at most `max`
    /// at a time: the others wait).
    pub(crate) async fn lease(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        self.open(permit).await
    }

    /// Like [`lease`](Self::lease) when fewer than `max` are in use;
    /// `None` at once otherwise.
    pub(crate) async fn try_lease(&self) -> Result<Option<Lease<'_>>, sqlx::Error> {
        match self.permits.try_acquire() {
            Ok(permit) => self.open(permit).await.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn open<'a>(&'a self, permit: SemaphorePermit<'a>) -> Result<Lease<'a>, sqlx::Error> {
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or_default();
        let conn = match idle {
            Some(c) => c,
            None => PgConnection::connect_with(&self.options).await?,
        };
        Ok(Lease {
            owner: self,
            conn: Some(conn),
            keep: false,
            _permit: permit,
        })
    }
}

/// A connection in use; [`keep`](Lease::keep) it after a call that ended
/// cleanly, or drop it to close it.
pub(crate) struct Lease<'a> {
    owner: &'a DirectConnections,
    /// `Some` until the lease is dropped.
    conn: Option<PgConnection>,
    keep: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Puts the connection back for the next call.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // A lease dropped without `keep` closes its connection with it.
        let conn = self.conn.take();
        if let (true, Some(conn), Ok(mut idle)) = (self.keep, conn, self.owner.idle.lock()) {
            idle.push(conn);
        }
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only when dropped"))
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only when dropped"))
    }
}
