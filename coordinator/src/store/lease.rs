//! The coordinator lease and its fencing token: how several coordinator processes share one
//! store with exactly one of them leading.
//!
//! The store holds one lease row: its holder, its fencing token and its expiry, all judged
//! by the database's clock (so that hosts with skewed clocks agree). A coordinator
//! acquires the lease when it is free or expired, which increments the token, and renews
//! it well before it expires; the others stand by and try again. Acquiring also *fences*
//! the store object it was called on: from then on every write transaction of that object
//! first checks, inside the transaction, that the lease's token is still the one it was
//! granted, and refuses with [`StoreError::Fenced`] otherwise. A leader that stalls past
//! its expiry (a GC pause, a stopped VM, a partition) and wakes up after another took over
//! therefore cannot apply a single write: the check and the write are one transaction, and
//! a takeover's update of the lease row waits for (PostgreSQL: `FOR SHARE`) or excludes
//! (SQLite: one writer) every write transaction in flight.
//!
//! A store object that never acquired the lease is not fenced (tests, tools reading the
//! store); the coordinator always acquires before its first write.

use super::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The lease's fencing token: incremented by every acquisition, so a larger token is a
/// later leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The lease as stored: who holds it, with which token, until when (database clock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// Empty when no coordinator ever held it.
    pub holder: String,
    pub token: FencingToken,
    pub expires_at: DateTime<Utc>,
}

/// What an acquisition attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours until `expires_at`, with this token; the store object is fenced.
    Granted(LeaseState),
    /// Another coordinator holds an unexpired lease.
    HeldBy(LeaseState),
}

/// The lease operations every backend provides (see the module documentation).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease for `holder` until `ttl` from now (database clock) if no other
    /// holder's lease is unexpired, incrementing the token, and fences this store object
    /// with the new token. A lease that expires exactly now is expired, so `ttl` zero grants
    /// a lease the next acquisition may take at once.
    async fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<Acquired, StoreError>;

    /// Extends the lease held with `token` to `ttl` from now.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when another coordinator took the lease since (the lease is not
    /// ours any more, whatever its expiry says).
    async fn renew_lease(&self, token: FencingToken, ttl: Duration) -> Result<LeaseState, StoreError>;

    /// Ends the lease held with `token` now, so that a standby takes over without waiting
    /// for the expiry (a graceful shutdown). Nothing happens when the token is not current.
    async fn release_lease(&self, token: FencingToken) -> Result<(), StoreError>;

    /// The lease as stored.
    async fn lease(&self) -> Result<LeaseState, StoreError>;
}

/// The token a store object's writes are fenced with (shared by its clones: one process).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fence(Arc<AtomicI64>);

impl Fence {
    /// From now on writes must find `token` current.
    pub(crate) fn arm(&self, token: FencingToken) {
        self.0.store(token.0, Ordering::SeqCst);
    }

    /// The token writes are checked against; `None` before any acquisition.
    pub(crate) fn token(&self) -> Option<FencingToken> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            t => Some(FencingToken(t)),
        }
    }

    /// Refuses a write when the stored lease (`current`, held by `holder`) is not this
    /// object's.
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub(crate) fn check(&self, current: FencingToken, holder: &str) -> Result<(), StoreError> {
        match self.token() {
            Some(mine) if mine != current => Err(StoreError::Fenced { mine, current, holder: holder.to_string() }),
            _ => Ok(()),
        }
    }
}

/// Milliseconds since the epoch as a time (lease rows store the database clock so).
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A lease duration in whole milliseconds, as the SQL arithmetic takes it.
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}
