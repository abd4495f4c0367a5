//! The coordinator lease (`store/lease.rs`) in memory, on the wall clock; handles made by
//! [`MemoryStore::peer`] play the other processes.

use super::*;
use crate::store::lease::{Acquired, FencingToken, LeaseState, LeaseStore};

fn lease_now() -> DateTime<Utc> {
    stored(Utc::now()).trunc_subsecs(3)
}

fn until(ttl: std::time::Duration) -> DateTime<Utc> {
    lease_now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn acquire_lease(&self, holder: &str, ttl: std::time::Duration) -> Result<Acquired, StoreError> {
        let mut d = self.data();
        if d.lease.expires_at > lease_now() {
            return Ok(Acquired::HeldBy(d.lease.clone()));
        }
        d.lease =
            LeaseState { holder: holder.to_string(), token: FencingToken(d.lease.token.0 + 1), expires_at: until(ttl) };
        self.fence.arm(d.lease.token);
        Ok(Acquired::Granted(d.lease.clone()))
    }

    async fn renew_lease(&self, token: FencingToken, ttl: std::time::Duration) -> Result<LeaseState, StoreError> {
        let mut d = self.data();
        if d.lease.token != token {
            return Err(StoreError::Fenced { mine: token, current: d.lease.token, holder: d.lease.holder.clone() });
        }
        d.lease.expires_at = until(ttl);
        Ok(d.lease.clone())
    }

    async fn release_lease(&self, token: FencingToken) -> Result<(), StoreError> {
        let mut d = self.data();
        if d.lease.token == token {
            d.lease.expires_at = lease_now();
        }
        Ok(())
    }

    async fn lease(&self) -> Result<LeaseState, StoreError> {
        Ok(self.data().lease.clone())
    }
}
