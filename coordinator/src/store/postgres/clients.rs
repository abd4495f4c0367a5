//! The client registry (a regional aggregator registered upstream is one row too).

use super::*;

impl PgStore {
    /// One statement (after the fence check): an insert that becomes an update of the same
    /// id, atomically.
    pub(super) async fn upsert_client_row(&self, c: &ClientRecord) -> Result<(), StoreError> {
        let datasets = serde_json::to_string(&c.datasets).map_err(corrupt("datasets"))?;
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO clients (id, region, datasets_json, devices, samples, registered_at, members)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET region = excluded.region, datasets_json = excluded.datasets_json,
                 devices = excluded.devices, samples = excluded.samples, registered_at = excluded.registered_at,
                 members = excluded.members",
        )
        .bind(c.id.as_str())
        .bind(c.region.as_str())
        .bind(datasets)
        .bind(c.devices.join(","))
        .bind(c.samples() as i64)
        .bind(c.registered_at)
        .bind(i64::from(c.members))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn client_rows(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let region: String = r.try_get("region")?;
                let datasets: String = r.try_get("datasets_json")?;
                let devices: String = r.try_get("devices")?;
                Ok(ClientRecord {
                    id: ClientId::new(id).map_err(corrupt("client id"))?,
                    region: RegionId::new(region).map_err(corrupt("region"))?,
                    datasets: serde_json::from_str(&datasets).map_err(corrupt("datasets"))?,
                    devices: devices.split(',').filter(|d| !d.is_empty()).map(str::to_string).collect(),
                    registered_at: r.try_get("registered_at")?,
                    members: u32_of(r, "members")?,
                })
            })
            .collect()
    }
}
