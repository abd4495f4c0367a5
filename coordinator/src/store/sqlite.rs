//! The SQLite implementation of [`Store`]: one file under the data directory, WAL mode,
//! migrations embedded in the binary. sqlx rows never leave this file.

use super::*;
use crate::ids::TaskId;
use crate::privacy::LedgerState;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;

/// SQLite-backed store. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The lease token this store object's writes are checked against (`lease.rs`).
    fence: crate::store::lease::Fence,
}

mod audit;
mod checkpoints;
mod clients;
mod guards;
mod lease;
mod registry;
mod rows;
mod runs;
mod upstream;
use audit::append_in;
use checkpoints::insert_checkpoint;
use guards::*;
use rows::*;
use runs::insert_run;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened, [`StoreError::Migration`] when
    /// the schema cannot be brought up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, fence: super::lease::Fence::default() })
    }

    /// A write transaction that holds SQLite's write lock from its first statement
    /// (`BEGIN IMMEDIATE`). A deferred transaction that reads and then writes fails with
    /// SQLITE_BUSY_SNAPSHOT (not retried by the busy timeout) when another connection
    /// committed in between; an immediate one waits for the lock instead, so concurrent
    /// writers (run actors, the audit log) queue rather than fail.
    ///
    /// Once the store is fenced, the transaction first checks that the coordinator lease is
    /// still this object's (`lease.rs`): holding the write lock, no takeover can slip in
    /// between the check and the writes.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if self.fence.token().is_some() {
            let (token, holder) = lease::current(&mut tx).await?;
            self.fence.check(token, &holder)?;
        }
        Ok(tx)
    }

    /// Closes the pool, checkpointing the WAL (used on shutdown and in restart tests).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        insert_run(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_run_state(&self, run: &RunId, state: RunState, failure: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let [t0, t1, t2] = RunState::TERMINAL;
        let changed = sqlx::query(&format!(
            "UPDATE runs SET state = ?, failure = COALESCE(?, failure), updated_at = ? WHERE id = ? AND {NOT_TERMINAL}"
        ))
        .bind(state)
        .bind(failure)
        .bind(ts(&Utc::now()))
        .bind(run.as_str())
        .bind(t0)
        .bind(t1)
        .bind(t2)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(run_refusal(&mut tx, run, "set the state of").await?);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_run(&self, run: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?").bind(run.as_str()).fetch_optional(&self.pool).await?;
        row.as_ref().map(run_of).transpose()
    }

    async fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(run_of).collect()
    }

    async fn list_runs_page(
        &self,
        owner: Option<&Identity>,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM runs
             WHERE (?1 IS NULL OR owner = ?1)
               AND (?2 IS NULL OR (created_at, id) > (SELECT created_at, id FROM runs WHERE id = ?2))
             ORDER BY created_at, id LIMIT ?3",
        )
        .bind(owner.map(Identity::uri))
        .bind(after.map(RunId::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_of).collect()
    }

    async fn next_attempt(&self, run: &RunId, round: u32) -> Result<u32, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(a) AS a FROM (
                 SELECT COALESCE(MAX(attempt), 0) AS a FROM rounds WHERE run_id = ?1 AND round = ?2
                 UNION ALL
                 SELECT COALESCE(MAX(attempt), 0) AS a FROM privacy_ledger WHERE run_id = ?1 AND round = ?2)",
        )
        .bind(run.as_str())
        .bind(i64::from(round))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32_of(&row, "a")? + 1)
    }

    async fn begin_round(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        selected: &[(ClientId, RegionId)],
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        match run_progress(&mut tx, run).await? {
            None => return Err(refusal::no_run(run)),
            Some((state, _)) if state.is_terminal() => {
                return Err(refusal::run_conflict(run, "begin a round of", state));
            }
            Some(_) => {}
        }
        sqlx::query(
            "INSERT INTO rounds (run_id, round, attempt, status, selected, started_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .bind(RoundStatus::InProgress)
        .bind(selected.len() as i64)
        .bind(ts(&Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(insert_failed(|| refusal::attempt_exists(run, round, attempt), Some(run)))?;
        for (client, region) in selected {
            sqlx::query(
                "INSERT INTO participations (run_id, round, attempt, client_id, region, status) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(run.as_str())
            .bind(i64::from(round))
            .bind(i64::from(attempt))
            .bind(client.as_str())
            .bind(region.as_str())
            .bind(ParticipationStatus::Selected)
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(|| refusal::participation_exists(run, round, attempt, client), None))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_updates(&self, updates: &[ParticipationRecord]) -> Result<UpdatesOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut outcome = UpdatesOutcome::default();
        for p in updates {
            let m = p.metrics;
            let changed = sqlx::query(
                "UPDATE participations SET status = ?, samples = ?, loss_before = ?, loss_after = ?, accuracy = ?,
                     train_seconds = ?, update_norm = ?, detail = ?
                 WHERE run_id = ? AND round = ? AND attempt = ? AND client_id = ? AND status = ?",
            )
            .bind(ParticipationStatus::Reported)
            .bind(p.samples as i64)
            .bind(m.map(|m| m.loss_before))
            .bind(m.map(|m| m.loss_after))
            .bind(m.map(|m| m.accuracy_after))
            .bind(m.map(|m| m.train_seconds))
            .bind(p.update_norm)
            .bind(p.detail.as_deref())
            .bind(p.run.as_str())
            .bind(i64::from(p.round))
            .bind(i64::from(p.attempt))
            .bind(p.client.as_str())
            .bind(ParticipationStatus::Selected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                let reason = match participation_status(&mut tx, &p.run, p.round, p.attempt, &p.client).await? {
                    None => UpdateRefusal::NotSelected,
                    Some(status) => UpdateRefusal::Closed(status),
                };
                outcome.refused.push(RefusedUpdate {
                    run: p.run.clone(),
                    round: p.round,
                    attempt: p.attempt,
                    client: p.client.clone(),
                    reason,
                });
                continue;
            }
            sqlx::query(
                "UPDATE rounds SET reported = reported + 1, samples = samples + ? WHERE run_id = ? AND round = ? AND attempt = ?",
            )
            .bind(p.samples as i64)
            .bind(p.run.as_str())
            .bind(i64::from(p.round))
            .bind(i64::from(p.attempt))
            .execute(&mut *tx)
            .await?;
            outcome.recorded += 1;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn fail_round(&self, run: &RunId, round: u32, attempt: u32, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE rounds SET status = ?, failure = ?, finished_at = ?
             WHERE run_id = ? AND round = ? AND attempt = ? AND status = ?",
        )
        .bind(RoundStatus::Failed)
        .bind(reason)
        .bind(ts(&Utc::now()))
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .bind(RoundStatus::InProgress)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(attempt_refusal(&mut tx, run, round, attempt, "fail").await?);
        }
        sqlx::query(
            "UPDATE participations SET status = ? WHERE run_id = ? AND round = ? AND attempt = ? AND status = ?",
        )
        .bind(ParticipationStatus::Dropped)
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .bind(ParticipationStatus::Selected)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn complete_round(&self, c: &RoundCompletion) -> Result<(), StoreError> {
        let now = ts(&Utc::now());
        let run = c.run.as_str();
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE rounds SET status = ?, reported = ?, samples = ?, loss_before = ?, loss_after = ?, accuracy = ?,
                 train_seconds = ?, checkpoint_id = ?, finished_at = ?, energy_json = ?, cost_json = ?
             WHERE run_id = ? AND round = ? AND attempt = ? AND status = ?",
        )
        .bind(RoundStatus::Done)
        .bind(i64::from(c.reported))
        .bind(c.samples as i64)
        .bind(c.metrics.loss_before)
        .bind(c.metrics.loss_after)
        .bind(c.metrics.accuracy_after)
        .bind(c.metrics.train_seconds)
        .bind(c.checkpoint.id.as_str())
        .bind(&now)
        .bind(serde_json::to_string(&c.energy).map_err(|e| StoreError::Corrupt(format!("energy: {e}")))?)
        .bind(serde_json::to_string(&c.cost).map_err(|e| StoreError::Corrupt(format!("cost: {e}")))?)
        .bind(run)
        .bind(i64::from(c.round))
        .bind(i64::from(c.attempt))
        .bind(RoundStatus::InProgress)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(attempt_refusal(&mut tx, &c.run, c.round, c.attempt, "complete").await?);
        }
        // The attempt exists, so its run does.
        let (state, completed) = run_progress(&mut tx, &c.run).await?.ok_or_else(|| refusal::no_run(&c.run))?;
        if state.is_terminal() {
            return Err(refusal::run_conflict(&c.run, "complete a round of", state));
        }
        if u64::from(c.round) != u64::from(completed) + 1 {
            return Err(refusal::out_of_order(&c.run, c.round, completed));
        }
        let cp = &c.checkpoint;
        insert_checkpoint(&mut tx, cp).await?;
        sqlx::query(
            "UPDATE participations SET status = ? WHERE run_id = ? AND round = ? AND attempt = ? AND status = ?",
        )
        .bind(ParticipationStatus::Dropped)
        .bind(run)
        .bind(i64::from(c.round))
        .bind(i64::from(c.attempt))
        .bind(ParticipationStatus::Selected)
        .execute(&mut *tx)
        .await?;
        let (state, published) =
            if c.final_round { (RunState::Succeeded, Some(cp.id.as_str())) } else { (RunState::Running, None) };
        sqlx::query(
            "UPDATE runs SET completed_rounds = ?, state = ?, published_checkpoint = COALESCE(?, published_checkpoint), updated_at = ?
             WHERE id = ?",
        )
        .bind(i64::from(c.round))
        .bind(state)
        .bind(published)
        .bind(&now)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        if let Some(charge) = c.charge {
            charge_in(&mut tx, &c.run, c.round, c.attempt, charge.next_clip_norm).await?;
        }
        append_in(&mut tx, &c.audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn interrupt_open_rounds(&self) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("UPDATE rounds SET status = ?, failure = ?, finished_at = ? WHERE status = ?")
            .bind(RoundStatus::Interrupted)
            .bind(RESTARTED)
            .bind(ts(&Utc::now()))
            .bind(RoundStatus::InProgress)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE participations SET status = ?, detail = ?
             WHERE status = ? AND EXISTS (SELECT 1 FROM rounds r WHERE r.run_id = participations.run_id
                 AND r.round = participations.round AND r.attempt = participations.attempt AND r.status = ?)",
        )
        .bind(ParticipationStatus::Dropped)
        .bind(RESTARTED)
        .bind(ParticipationStatus::Selected)
        .bind(RoundStatus::Interrupted)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn list_rounds(&self, run: &RunId) -> Result<Vec<RoundRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM rounds WHERE run_id = ? ORDER BY round, attempt")
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(round_of).collect()
    }

    async fn list_participations(&self, run: &RunId) -> Result<Vec<ParticipationRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM participations WHERE run_id = ? ORDER BY round, attempt, client_id")
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let run: String = r.try_get("run_id")?;
                let client: String = r.try_get("client_id")?;
                let region: String = r.try_get("region")?;
                Ok(ParticipationRecord {
                    run: RunId::new(run).map_err(corrupt("run id"))?,
                    round: u32_of(r, "round")?,
                    attempt: u32_of(r, "attempt")?,
                    client: ClientId::new(client).map_err(corrupt("client id"))?,
                    region: RegionId::new(region).map_err(corrupt("region"))?,
                    status: r.try_get("status")?,
                    samples: u64_of(r, "samples")?,
                    metrics: metrics_of(r)?,
                    update_norm: r.try_get("update_norm")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn finish_run(&self, run: &RunId, published: &CheckpointId) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let [t0, t1, t2] = RunState::TERMINAL;
        let changed = sqlx::query(&format!(
            "UPDATE runs SET state = ?, published_checkpoint = ?, updated_at = ? WHERE id = ? AND {NOT_TERMINAL}"
        ))
        .bind(RunState::Succeeded)
        .bind(published.as_str())
        .bind(ts(&Utc::now()))
        .bind(run.as_str())
        .bind(t0)
        .bind(t1)
        .bind(t2)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(run_refusal(&mut tx, run, "finish").await?);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_evaluations(&self, results: &[EvaluationRecord]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for r in results {
            sqlx::query(
                "INSERT INTO evaluations (run_id, round, region, clients, samples, loss, accuracy) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.run.as_str())
            .bind(i64::from(r.round))
            .bind(r.region.as_ref().map(RegionId::as_str).unwrap_or(""))
            .bind(i64::from(r.clients))
            .bind(r.samples as i64)
            .bind(r.loss)
            .bind(r.accuracy)
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(|| refusal::evaluation_exists(r), Some(&r.run)))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_evaluations(&self, run: &RunId) -> Result<Vec<EvaluationRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM evaluations WHERE run_id = ? ORDER BY round, region")
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let run: String = r.try_get("run_id")?;
                let region: String = r.try_get("region")?;
                Ok(EvaluationRecord {
                    run: RunId::new(run).map_err(corrupt("run id"))?,
                    round: u32_of(r, "round")?,
                    region: if region.is_empty() {
                        None
                    } else {
                        Some(RegionId::new(region).map_err(corrupt("region"))?)
                    },
                    clients: u32_of(r, "clients")?,
                    samples: u64_of(r, "samples")?,
                    loss: r.try_get("loss")?,
                    accuracy: r.try_get("accuracy")?,
                })
            })
            .collect()
    }

    async fn reject_update(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        client: &ClientId,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE participations SET status = ?, detail = ?
             WHERE run_id = ? AND round = ? AND attempt = ? AND client_id = ? AND status = ?",
        )
        .bind(ParticipationStatus::Rejected)
        .bind(reason)
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .bind(client.as_str())
        .bind(ParticipationStatus::Selected)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(match participation_status(&mut tx, run, round, attempt, client).await? {
                None => refusal::no_participation(run, round, attempt, client),
                Some(status) => {
                    refusal::participation_conflict(run, round, attempt, client, "reject the update of", status)
                }
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reserve_privacy(&self, entries: &[LedgerEntry]) -> Result<(), StoreError> {
        // The write lock, taken first, keeps every other reservation out until commit.
        let mut tx = self.write_tx().await?;
        let mut stored = Vec::new();
        let mut scopes: Vec<String> = entries.iter().map(|e| e.scope.to_string()).collect();
        scopes.sort();
        scopes.dedup();
        for scope in &scopes {
            let rows = sqlx::query(
                "SELECT * FROM privacy_ledger WHERE scope = ? ORDER BY created_at, run_id, round, attempt, scope",
            )
            .bind(scope)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                stored.push(ledger_of(r)?);
            }
        }
        for e in entries {
            let cost =
                serde_json::to_string(&e.cost).map_err(|err| StoreError::Corrupt(format!("ledger cost: {err}")))?;
            sqlx::query(
                "INSERT INTO privacy_ledger (scope, model_name, region, run_id, round, attempt, state, accountant, rho, \
                 cost_json, noise_multiplier, clip_norm, sampling_rate, delta, epsilon_cumulative, next_clip_norm, \
                 created_at, charged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            )
            .bind(e.scope.to_string())
            .bind(&e.scope.model)
            .bind(e.scope.region.as_str())
            .bind(e.run.as_str())
            .bind(i64::from(e.round))
            .bind(i64::from(e.attempt))
            .bind(e.state.as_str())
            .bind(e.accountant.as_str())
            .bind(e.cost.rho())
            .bind(cost)
            .bind(e.noise_multiplier)
            .bind(e.clip_norm)
            .bind(e.sampling_rate)
            .bind(e.delta)
            .bind(e.epsilon_cumulative)
            .bind(e.next_clip_norm)
            .bind(ts(&e.created_at))
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(|| refusal::ledger_entry_exists(e), Some(&e.run)))?;
        }
        super::reservations::check_claims(&stored, entries)?;
        tx.commit().await?;
        Ok(())
    }

    async fn charge_privacy(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        next_clip_norm: Option<f64>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = charge_in(&mut tx, run, round, attempt, next_clip_norm).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn list_ledger(&self, filter: &LedgerFilter) -> Result<Vec<LedgerEntry>, StoreError> {
        let scope = filter.scope.as_ref().map(ToString::to_string);
        let run = filter.run.as_ref().map(|r| r.as_str().to_string());
        let rows = sqlx::query(
            "SELECT * FROM privacy_ledger WHERE (? IS NULL OR scope = ?) AND (? IS NULL OR run_id = ?) \
             ORDER BY created_at, run_id, round, attempt, scope",
        )
        .bind(scope.clone())
        .bind(scope)
        .bind(run.clone())
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ledger_of).collect()
    }

    async fn upsert_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        self.upsert_client_row(c).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.client_rows().await
    }

    async fn get_checkpoint(&self, id: &CheckpointId) -> Result<Option<CheckpointRecord>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM checkpoints WHERE id = ?").bind(id.as_str()).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(self.checkpoint_of(&r).await?)),
            None => Ok(None),
        }
    }

    async fn list_checkpoints(&self, f: &CheckpointFilter) -> Result<Vec<CheckpointRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.* FROM checkpoints c JOIN runs r ON r.id = c.run_id
             WHERE (? IS NULL OR c.model_name = ?)
               AND (? IS NULL OR c.run_id = ?)
               AND (? IS NULL OR EXISTS (SELECT 1 FROM checkpoint_locations l WHERE l.checkpoint_id = c.id AND l.region = ?))
             ORDER BY r.created_at, c.run_id, c.round",
        )
        .bind(f.model_name.as_deref())
        .bind(f.model_name.as_deref())
        .bind(f.run.as_ref().map(RunId::as_str))
        .bind(f.run.as_ref().map(RunId::as_str))
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.region.as_ref().map(RegionId::as_str))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.checkpoint_of(r).await?);
        }
        Ok(out)
    }

    async fn approve_run(&self, run: &RunId, approver: &str) -> Result<ApprovalCount, StoreError> {
        self.approve(run, approver).await
    }

    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditEntry>, StoreError> {
        self.append_audit_entries(drafts).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.list_audit_entries(filter).await
    }

    async fn create_cohort_run(
        &self,
        run: &RunRecord,
        cp: &CheckpointRecord,
        t: &UpstreamTask,
    ) -> Result<(), StoreError> {
        self.create_cohort_run_tx(run, cp, t).await
    }

    async fn list_upstream_tasks(&self) -> Result<Vec<UpstreamTask>, StoreError> {
        self.upstream_tasks().await
    }

    async fn end_upstream_task(
        &self,
        t: &TaskId,
        state: UpstreamState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.end_upstream(t, state, detail).await
    }
}

#[cfg(test)]
mod tests;
