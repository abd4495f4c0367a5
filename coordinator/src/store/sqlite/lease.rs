//! The coordinator lease (`store/lease.rs`) in SQLite: one row, the database clock in
//! milliseconds. Each statement below is atomic on its own; a fenced write transaction
//! reads the row under `BEGIN IMMEDIATE` (SQLite's one writer), so a takeover and a fenced
//! write never interleave.

use super::*;
use crate::store::lease::{Acquired, FencingToken, LeaseState, LeaseStore, from_ms, ttl_ms};

/// The database's clock, milliseconds since the epoch.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The lease's token and holder, read inside a write transaction (the fence check).
pub(super) async fn current(conn: &mut sqlx::SqliteConnection) -> Result<(FencingToken, String), StoreError> {
    let row = sqlx::query("SELECT token, holder FROM coordinator_lease WHERE id = 1").fetch_one(conn).await?;
    Ok((FencingToken(row.try_get("token")?), row.try_get("holder")?))
}

fn state(row: &SqliteRow) -> Result<LeaseState, StoreError> {
    Ok(LeaseState {
        holder: row.try_get("holder")?,
        token: FencingToken(row.try_get("token")?),
        expires_at: from_ms(row.try_get("expires_at_ms")?),
    })
}

const SELECT: &str = "SELECT holder, token, expires_at_ms FROM coordinator_lease WHERE id = 1";

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(&self, holder: &str, ttl: std::time::Duration) -> Result<Acquired, StoreError> {
        let granted = sqlx::query(&format!(
            "UPDATE coordinator_lease SET holder = ?, token = token + 1, expires_at_ms = {NOW_MS} + ?
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
            "UPDATE coordinator_lease SET expires_at_ms = {NOW_MS} + ? WHERE id = 1 AND token = ?
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
        sqlx::query(&format!("UPDATE coordinator_lease SET expires_at_ms = {NOW_MS} WHERE id = 1 AND token = ?"))
            .bind(token.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self) -> Result<LeaseState, StoreError> {
        state(&sqlx::query(SELECT).fetch_one(&self.pool).await?)
    }
}
