//! Checkpoint rows with their locations.

use super::*;
use crate::checkpoint::ArtifactLocation;

impl SqliteStore {
    pub(super) async fn checkpoint_locations(&self, id: &str) -> Result<Vec<(RegionId, ArtifactLocation)>, StoreError> {
        let rows = sqlx::query("SELECT region, path FROM checkpoint_locations WHERE checkpoint_id = ? ORDER BY region")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let region: String = r.try_get("region")?;
                let path: String = r.try_get("path")?;
                Ok((RegionId::new(region).map_err(corrupt("region"))?, ArtifactLocation::new(path)))
            })
            .collect()
    }

    pub(super) async fn checkpoint_of(&self, row: &SqliteRow) -> Result<CheckpointRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let run: String = row.try_get("run_id")?;
        let parent: Option<String> = row.try_get("parent_id")?;
        let locations = self.checkpoint_locations(&id).await?;
        Ok(CheckpointRecord {
            id: CheckpointId::new(id).map_err(corrupt("checkpoint id"))?,
            run: RunId::new(run).map_err(corrupt("run id"))?,
            round: u32_of(row, "round")?,
            model_name: row.try_get("model_name")?,
            sha256: row.try_get("sha256")?,
            parent: parent.map(CheckpointId::new).transpose().map_err(corrupt("checkpoint id"))?,
            manifest_json: row.try_get("manifest_json")?,
            signature_json: row.try_get("signature_json")?,
            created_at: parse_ts(row.try_get("created_at")?)?,
            locations,
        })
    }
}

/// Inserts a checkpoint and its locations inside `tx` (a round completing, a cohort run's
/// initial checkpoint).
pub(super) async fn insert_checkpoint(
    tx: &mut sqlx::SqliteConnection,
    cp: &CheckpointRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (id, run_id, round, model_name, sha256, parent_id, manifest_json, signature_json,
                                  created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(cp.id.as_str())
    .bind(cp.run.as_str())
    .bind(i64::from(cp.round))
    .bind(&cp.model_name)
    .bind(&cp.sha256)
    .bind(cp.parent.as_ref().map(CheckpointId::as_str))
    .bind(&cp.manifest_json)
    .bind(&cp.signature_json)
    .bind(ts(&cp.created_at))
    .execute(&mut *tx)
    .await
    .map_err(insert_failed(|| refusal::checkpoint_exists(&cp.id), Some(&cp.run)))?;
    for (region, path) in &cp.locations {
        sqlx::query("INSERT INTO checkpoint_locations (checkpoint_id, region, path) VALUES (?, ?, ?)")
            .bind(cp.id.as_str())
            .bind(region.as_str())
            .bind(path.as_str())
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(|| refusal::location_exists(&cp.id, region), None))?;
    }
    Ok(())
}
