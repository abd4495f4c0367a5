//! The PostgreSQL implementation of [`Store`]: the same contract as [`SqliteStore`] (same
//! refusals, orderings and texts), on a database that several coordinator processes may
//! share. Migrations (`coordinator/migrations-postgres/`) are embedded in the binary. sqlx
//! rows never leave this module.
//!
//! # Concurrency
//! SQLite has one writer at a time (`BEGIN IMMEDIATE`), so every read-check-write there is
//! atomic for free. Here transactions run at READ COMMITTED and take what each write needs,
//! always in the order run row → round rows → participation rows → audit log, so that two
//! writers never wait on each other in a cycle:
//!
//! - single guarded statements (`set_run_state`, `finish_run`, `reject_update`,
//!   `charge_privacy`, `upsert_client`): PostgreSQL re-checks an UPDATE's WHERE on the row's
//!   latest version once it holds the row lock, so the guard and the write are one step;
//! - writes that depend on the run's state (`begin_round`, `complete_round`, `approve_run`)
//!   lock the run row first (`SELECT … FOR UPDATE`): a round cannot begin or complete, nor
//!   an approval count, beside a concurrent cancellation or a second approver;
//! - `record_updates` locks its attempts' round rows (in key order) before it touches a
//!   participation, as `fail_round`, `complete_round` and `interrupt_open_rounds` do, so a
//!   batch and a closing attempt serialise instead of deadlocking;
//! - `reserve_privacy` takes a transaction-scoped advisory lock per scope (in scope order)
//!   before it reads the scope's ledger and checks the entries' stated ε
//!   (`store/reservations.rs`): rows not yet written cannot be row-locked;
//! - `apply_registry` takes an advisory lock per (region, model) it touches, so registry
//!   commands on one model serialise as the registry task serialises them in one process;
//! - `create_cohort_run` takes an advisory lock on the task id, `end_upstream_task` locks the
//!   task's row;
//! - the audit log's chain is appended under `LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE
//!   MODE` (readers are not blocked), taken last, so two appenders never chain onto one head.
//!
//! Advisory lock keys are hashed with the schema name, so that stores in different schemas
//! of one database do not wait on each other.

use super::*;
use crate::ids::TaskId;
use crate::privacy::LedgerState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;

/// PostgreSQL-backed store. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The lease token this store object's writes are checked against (`store/lease.rs`).
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

/// Connections one store holds at most: the engine's run actors, the registry task and the
/// services share them.
const MAX_CONNECTIONS: u32 = 8;

/// How long a session may sit in an open transaction waiting for this process before the
/// server ends it (our transactions await only their own statements).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "SET idle_in_transaction_session_timeout = '5s'";

impl PgStore {
    /// Connects to the database at `url` and applies migrations.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the database cannot be reached, [`StoreError::Migration`]
    /// when the schema cannot be brought up to date.
    pub async fn open(url: &super::open::PgUrl) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url.expose())
            .map_err(|e| StoreError::Open { path: url.to_string(), reason: e.to_string() })?;
        Self::connect_with(opts, &url.to_string()).await
    }

    /// Connects with `opts` (a test's own `search_path`, say) and applies migrations;
    /// `shown` names the database in errors.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub async fn connect_with(opts: PgConnectOptions, shown: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A coordinator frozen mid-transaction (a stopped VM, a long pause) would hold its
            // share lock on the lease row, and with it any takeover, for as long as it stays
            // frozen: the server ends such a session instead, rolling the transaction back.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute(IDLE_IN_TRANSACTION_TIMEOUT).await.map(|_| ())
                })
            })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Open { path: shown.to_string(), reason: e.to_string() })?;
        // sqlx holds an advisory lock while it migrates: coordinators starting together
        // migrate once.
        sqlx::migrate!("./migrations-postgres").run(&pool).await?;
        Ok(Self { pool, fence: crate::store::lease::Fence::default() })
    }

    /// A write transaction (READ COMMITTED); each method takes the locks it needs (see the
    /// module documentation).
    ///
    /// Once the store is fenced, the transaction first share-locks the coordinator lease row
    /// and checks that its token is still this object's (`store/lease.rs`): a takeover
    /// updates that row, so it waits for every write transaction in flight, and every later
    /// one sees the new token and is refused.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.fence.token().is_some() {
            let (token, holder) = lease::current_shared(&mut tx).await?;
            self.fence.check(token, &holder)?;
        }
        Ok(tx)
    }

    /// Closes the pool (used on shutdown and in restart tests).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        insert_run(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_run_state(&self, run: &RunId, state: RunState, failure: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE runs SET state = $1, failure = COALESCE($2, failure), updated_at = $3 WHERE id = $4 AND state <> ALL($5)",
        )
        .bind(state)
        .bind(failure)
        .bind(Utc::now())
        .bind(run.as_str())
        .bind(terminal())
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
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1").bind(run.as_str()).fetch_optional(&self.pool).await?;
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
             WHERE ($1::text IS NULL OR owner = $1)
               AND ($2::text IS NULL OR (created_at, id) > (SELECT created_at, id FROM runs WHERE id = $2))
             ORDER BY created_at, id LIMIT $3",
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
                 SELECT COALESCE(MAX(attempt), 0) AS a FROM rounds WHERE run_id = $1 AND round = $2
                 UNION ALL
                 SELECT COALESCE(MAX(attempt), 0) AS a FROM privacy_ledger WHERE run_id = $1 AND round = $2) AS attempts",
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
        // Locked: a concurrent cancellation waits until the attempt is on record, or wins.
        match lock_run(&mut tx, run).await? {
            None => return Err(refusal::no_run(run)),
            Some((state, _)) if state.is_terminal() => {
                return Err(refusal::run_conflict(run, "begin a round of", state));
            }
            Some(_) => {}
        }
        sqlx::query(
            "INSERT INTO rounds (run_id, round, attempt, status, selected, started_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .bind(RoundStatus::InProgress)
        .bind(selected.len() as i64)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await
        .map_err(insert_failed(|| refusal::attempt_exists(run, round, attempt), Some(run)))?;
        for (client, region) in selected {
            sqlx::query(
                "INSERT INTO participations (run_id, round, attempt, client_id, region, status)
                 VALUES ($1, $2, $3, $4, $5, $6)",
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
        lock_attempts(&mut tx, updates.iter().map(|p| (&p.run, p.round, p.attempt))).await?;
        let mut outcome = UpdatesOutcome::default();
        for p in updates {
            let m = p.metrics;
            let changed = sqlx::query(
                "UPDATE participations SET status = $1, samples = $2, loss_before = $3, loss_after = $4, accuracy = $5,
                     train_seconds = $6, update_norm = $7, detail = $8
                 WHERE run_id = $9 AND round = $10 AND attempt = $11 AND client_id = $12 AND status = $13",
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
                "UPDATE rounds SET reported = reported + 1, samples = samples + $1
                 WHERE run_id = $2 AND round = $3 AND attempt = $4",
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
            "UPDATE rounds SET status = $1, failure = $2, finished_at = $3
             WHERE run_id = $4 AND round = $5 AND attempt = $6 AND status = $7",
        )
        .bind(RoundStatus::Failed)
        .bind(reason)
        .bind(Utc::now())
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
        drop_pending(&mut tx, run, round, attempt).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn complete_round(&self, c: &RoundCompletion) -> Result<(), StoreError> {
        let now = Utc::now();
        let run = c.run.as_str();
        let mut tx = self.write_tx().await?;
        // The run row first (see the module docs), read before the attempt's guard but
        // refused after it, in the trait's order of checks.
        let progress = lock_run(&mut tx, &c.run).await?;
        let changed = sqlx::query(
            "UPDATE rounds SET status = $1, reported = $2, samples = $3, loss_before = $4, loss_after = $5,
                 accuracy = $6, train_seconds = $7, checkpoint_id = $8, finished_at = $9, energy_json = $14, cost_json = $15
             WHERE run_id = $10 AND round = $11 AND attempt = $12 AND status = $13",
        )
        .bind(RoundStatus::Done)
        .bind(i64::from(c.reported))
        .bind(c.samples as i64)
        .bind(c.metrics.loss_before)
        .bind(c.metrics.loss_after)
        .bind(c.metrics.accuracy_after)
        .bind(c.metrics.train_seconds)
        .bind(c.checkpoint.id.as_str())
        .bind(now)
        .bind(run)
        .bind(i64::from(c.round))
        .bind(i64::from(c.attempt))
        .bind(RoundStatus::InProgress)
        .bind(serde_json::to_string(&c.energy).map_err(|e| StoreError::Corrupt(format!("energy: {e}")))?)
        .bind(serde_json::to_string(&c.cost).map_err(|e| StoreError::Corrupt(format!("cost: {e}")))?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(attempt_refusal(&mut tx, &c.run, c.round, c.attempt, "complete").await?);
        }
        // The attempt exists, so its run does.
        let (state, completed) = progress.ok_or_else(|| refusal::no_run(&c.run))?;
        if state.is_terminal() {
            return Err(refusal::run_conflict(&c.run, "complete a round of", state));
        }
        if u64::from(c.round) != u64::from(completed) + 1 {
            return Err(refusal::out_of_order(&c.run, c.round, completed));
        }
        let cp = &c.checkpoint;
        insert_checkpoint(&mut tx, cp).await?;
        drop_pending(&mut tx, &c.run, c.round, c.attempt).await?;
        let (state, published) =
            if c.final_round { (RunState::Succeeded, Some(cp.id.as_str())) } else { (RunState::Running, None) };
        sqlx::query(
            "UPDATE runs SET completed_rounds = $1, state = $2, published_checkpoint = COALESCE($3, published_checkpoint),
                 updated_at = $4
             WHERE id = $5",
        )
        .bind(i64::from(c.round))
        .bind(state)
        .bind(published)
        .bind(now)
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
        // Round rows in key order, as record_updates locks them.
        sqlx::query("SELECT 1 FROM rounds WHERE status = $1 ORDER BY run_id, round, attempt FOR UPDATE")
            .bind(RoundStatus::InProgress)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("UPDATE rounds SET status = $1, failure = $2, finished_at = $3 WHERE status = $4")
            .bind(RoundStatus::Interrupted)
            .bind(RESTARTED)
            .bind(Utc::now())
            .bind(RoundStatus::InProgress)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE participations SET status = $1, detail = $2
             WHERE status = $3 AND EXISTS (SELECT 1 FROM rounds r WHERE r.run_id = participations.run_id
                 AND r.round = participations.round AND r.attempt = participations.attempt AND r.status = $4)",
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
        let rows = sqlx::query("SELECT * FROM rounds WHERE run_id = $1 ORDER BY round, attempt")
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(round_of).collect()
    }

    async fn list_participations(&self, run: &RunId) -> Result<Vec<ParticipationRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM participations WHERE run_id = $1 ORDER BY round, attempt, client_id")
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(participation_of).collect()
    }

    async fn finish_run(&self, run: &RunId, published: &CheckpointId) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE runs SET state = $1, published_checkpoint = $2, updated_at = $3 WHERE id = $4 AND state <> ALL($5)",
        )
        .bind(RunState::Succeeded)
        .bind(published.as_str())
        .bind(Utc::now())
        .bind(run.as_str())
        .bind(terminal())
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
                "INSERT INTO evaluations (run_id, round, region, clients, samples, loss, accuracy)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let rows = sqlx::query("SELECT * FROM evaluations WHERE run_id = $1 ORDER BY round, region")
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(evaluation_of).collect()
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
            "UPDATE participations SET status = $1, detail = $2
             WHERE run_id = $3 AND round = $4 AND attempt = $5 AND client_id = $6 AND status = $7",
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
        let mut tx = self.write_tx().await?;
        let mut scopes: Vec<String> = entries.iter().map(|e| e.scope.to_string()).collect();
        scopes.sort();
        scopes.dedup();
        // Held until commit: no other reservation of these scopes is read or written meanwhile.
        for scope in &scopes {
            advisory_lock(&mut tx, &format!("privacy_ledger/{scope}")).await?;
        }
        let rows = sqlx::query(
            "SELECT * FROM privacy_ledger WHERE scope = ANY($1) ORDER BY created_at, run_id, round, attempt, scope",
        )
        .bind(&scopes)
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows.iter().map(ledger_of).collect::<Result<Vec<_>, _>>()?;
        for e in entries {
            let cost =
                serde_json::to_string(&e.cost).map_err(|err| StoreError::Corrupt(format!("ledger cost: {err}")))?;
            sqlx::query(
                "INSERT INTO privacy_ledger (scope, model_name, region, run_id, round, attempt, state, accountant, rho,
                     cost_json, noise_multiplier, clip_norm, sampling_rate, delta, epsilon_cumulative, next_clip_norm,
                     created_at, charged_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL)",
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
            .bind(e.created_at)
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
        let rows = sqlx::query(
            "SELECT * FROM privacy_ledger WHERE ($1::text IS NULL OR scope = $1) AND ($2::text IS NULL OR run_id = $2)
             ORDER BY created_at, run_id, round, attempt, scope",
        )
        .bind(filter.scope.as_ref().map(ToString::to_string))
        .bind(filter.run.as_ref().map(RunId::as_str))
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
            sqlx::query("SELECT * FROM checkpoints WHERE id = $1").bind(id.as_str()).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(self.checkpoint_of(&r).await?)),
            None => Ok(None),
        }
    }

    async fn list_checkpoints(&self, f: &CheckpointFilter) -> Result<Vec<CheckpointRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.* FROM checkpoints c JOIN runs r ON r.id = c.run_id
             WHERE ($1::text IS NULL OR c.model_name = $1)
               AND ($2::text IS NULL OR c.run_id = $2)
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM checkpoint_locations l
                                                WHERE l.checkpoint_id = c.id AND l.region = $3))
             ORDER BY r.created_at, c.run_id, c.round",
        )
        .bind(f.model_name.as_deref())
        .bind(f.run.as_ref().map(RunId::as_str))
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

/// The selected clients of an attempt that did not report become dropped (the attempt
/// failed or completed; its round row is locked by the caller).
async fn drop_pending(tx: &mut sqlx::PgConnection, run: &RunId, round: u32, attempt: u32) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE participations SET status = $1 WHERE run_id = $2 AND round = $3 AND attempt = $4 AND status = $5",
    )
    .bind(ParticipationStatus::Dropped)
    .bind(run.as_str())
    .bind(i64::from(round))
    .bind(i64::from(attempt))
    .bind(ParticipationStatus::Selected)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
