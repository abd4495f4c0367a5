//! The coordinator lease (`store/lease.rs`) in PostgreSQL: one row, the database clock in
//! milliseconds. A fenced write transaction share-locks the row (`current_shared`); an
//! acquisition or renewal updates it, so the two serialise on the row lock: a takeover
//! waits for the old leader's transactions in flight, and the old leader's later ones read
//! the new token and are refused. Concurrent acquisitions serialise the same way, and
//! PostgreSQL re-checks the second one's expiry condition on the row the first committed.

use super::*;
use crate::store::lease::{Acquired, FencingToken, LeaseState, LeaseStore, from_ms, ttl_ms};

/// The database's clock, milliseconds since the epoch (`clock_timestamp`, not the
/// transaction's start, since a transaction may have waited for the row lock).
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The lease's token and holder, share-locked for the rest of the write transaction.
pub(super) async fn current_shared(conn: &mut sqlx::PgConnection) -> Result<(FencingToken, String), StoreError> {
    let row = sqlx::query("SELECT token, holder FROM coordinator_lease WHERE id = 1 FOR SHARE").fetch_one(conn).await?;
    Ok((FencingToken(row.try_get("token")?), row.try_get("holder")?))
}

fn state(row: &PgRow) -> Result<LeaseState, StoreError> {
    Ok(LeaseState {
        holder: row.try_get("holder")?,
        token: FencingToken(row.try_get("token")?),
        expires_at: from_ms(row.try_get("expires_at_ms")?),
    })
}

const SELECT: &str = "SELECT holder, token, expires_at_ms FROM coordinator_lease WHERE id = 1";

#[async_trait]
impl LeaseStore for PgStore {
    async fn acquire_lease(&self, holder: &str, ttl: std::time::Duration) -> Result<Acquired, StoreError> {
        let granted = sqlx::query(&format!(
            "UPDATE coordinator_lease SET holder = $1, token = token + 1, expires_at_ms = {NOW_MS} + $2
             WHERE id = 1 AND expires_at_ms <= {NOW_MS} RETURNING holder, token, expires_at_ms"
        ))
        .bind(holder)
        .bind(ttl_ms(ttl))
        .fetch_optional(&self.pool)
        .await?;
        match granted {
            Some(row) => {
                let lease = state(&row)?;
                self.fence.arm(lease.token);
                Ok(Acquired::Granted(lease))
            }
            None => Ok(Acquired::HeldBy(state(&sqlx::query(SELECT).fetch_one(&self.pool).await?)?)),
        }
    }

    async fn renew_lease(&self, token: FencingToken, ttl: std::time::Duration) -> Result<LeaseState, StoreError> {
        let renewed = sqlx::query(&format!(
            "UPDATE coordinator_lease SET expires_at_ms = {NOW_MS} + $1 WHERE id = 1 AND token = $2
             RETURNING holder, token, expires_at_ms"
        ))
        .bind(ttl_ms(ttl))
        .bind(token.0)
        .fetch_optional(&self.pool)
        .await?;
        match renewed {
            Some(row) => state(&row),
            None => {
                let current = state(&sqlx::query(SELECT).fetch_one(&self.pool).await?)?;
                Err(StoreError::Fenced { mine: token, current: current.token, holder: current.holder })
            }
        }
    }

    async fn release_lease(&self, token: FencingToken) -> Result<(), StoreError> {
        sqlx::query(&format!("UPDATE coordinator_lease SET expires_at_ms = {NOW_MS} WHERE id = 1 AND token = $1"))
            .bind(token.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self) -> Result<LeaseState, StoreError> {
        state(&sqlx::query(SELECT).fetch_one(&self.pool).await?)
    }
}
