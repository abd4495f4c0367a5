//! Inserting a run row (a submitted run, a regional aggregator's cohort run).

use super::*;

/// Inserts a new run row (create_run, and a regional aggregator's cohort run).
pub(super) async fn insert_run(conn: &mut sqlx::SqliteConnection, run: &RunRecord) -> Result<(), StoreError> {
    let plan = serde_json::to_string(&run.plan).map_err(corrupt("run plan"))?;
    let now = ts(&run.created_at);
    sqlx::query(
        "INSERT INTO runs (id, plan_json, state, completed_rounds, published_checkpoint, failure, created_at, updated_at, owner,
                           policy_sha256, approvals_needed)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(run.id.as_str())
    .bind(plan)
    .bind(run.state)
    .bind(i64::from(run.completed_rounds))
    .bind(run.published_checkpoint.as_ref().map(CheckpointId::as_str))
    .bind(run.failure.as_deref())
    .bind(&now)
    .bind(&now)
    .bind(run.owner.as_ref().map(Identity::uri))
    .bind(run.policy_sha256.as_deref())
    .bind(i64::from(run.approvals_needed))
    .execute(&mut *conn)
    .await
    .map_err(insert_failed(|| refusal::run_exists(&run.id), None))?;
    Ok(())
}
