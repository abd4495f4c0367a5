//! A regional aggregator's upstream tasks.

use super::*;
use crate::store::upstream::refusal as upstream_refusal;

impl PgStore {
    /// Under an advisory lock on the task id: a task sent twice at once is stored once, and
    /// the second is refused as the trait says (not as a key violation).
    pub(super) async fn create_cohort_run_tx(
        &self,
        run: &RunRecord,
        cp: &CheckpointRecord,
        t: &UpstreamTask,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        advisory_lock(&mut tx, &format!("upstream_task/{}", t.task)).await?;
        let known = sqlx::query("SELECT 1 FROM upstream_tasks WHERE task_id = $1")
            .bind(t.task.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_some() {
            return Err(upstream_refusal::exists(&t.task));
        }
        if cp.run != run.id || t.run != run.id {
            return Err(refusal::no_run(&cp.run));
        }
        insert_run(&mut tx, run).await?;
        insert_checkpoint(&mut tx, cp).await?;
        sqlx::query(
            "INSERT INTO upstream_tasks (task_id, run_id, upstream_run, upstream_round, state, detail, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.task.as_str())
        .bind(t.run.as_str())
        .bind(t.upstream_run.as_str())
        .bind(i64::from(t.upstream_round))
        .bind(t.state)
        .bind(t.detail.as_deref())
        .bind(t.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn upstream_tasks(&self) -> Result<Vec<UpstreamTask>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM upstream_tasks ORDER BY created_at, task_id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(UpstreamTask {
                    task: TaskId::new(r.try_get::<String, _>("task_id")?).map_err(corrupt("task id"))?,
                    run: RunId::new(r.try_get::<String, _>("run_id")?).map_err(corrupt("run id"))?,
                    upstream_run: RunId::new(r.try_get::<String, _>("upstream_run")?).map_err(corrupt("run id"))?,
                    upstream_round: u32_of(r, "upstream_round")?,
                    state: r.try_get("state")?,
                    detail: r.try_get("detail")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// The task's row is locked before its state is read: one of two concurrent ends wins,
    /// the other is refused.
    pub(super) async fn end_upstream(
        &self,
        task: &TaskId,
        state: UpstreamState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let current: Option<UpstreamState> =
            sqlx::query_scalar("SELECT state FROM upstream_tasks WHERE task_id = $1 FOR UPDATE")
                .bind(task.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        match current {
            None => return Err(upstream_refusal::missing(task)),
            Some(UpstreamState::Training) => {}
            Some(other) => return Err(upstream_refusal::ended(task, other)),
        }
        sqlx::query("UPDATE upstream_tasks SET state = $1, detail = $2 WHERE task_id = $3")
            .bind(state)
            .bind(detail)
            .bind(task.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
