//! Turning PostgreSQL rows and errors into domain records: metrics, runs, rounds,
//! participations, evaluations, ledger entries, and insert failures as domain refusals.

use super::*;
use crate::privacy::LedgerState;
use sqlx::Row;
use sqlx::postgres::PgRow;

pub(super) fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// SQLSTATE of a unique or primary-key violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of a foreign-key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// Whether `e` is the database refusing a duplicate key.
pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == UNIQUE_VIOLATION)
}

/// Classifies an INSERT's failure by SQLSTATE, as SQLite's store does by its error codes: a
/// unique or primary-key violation means the record is stored already (`exists`), a
/// foreign-key violation that the run it belongs to is not (`run`, when the row references
/// one). The transaction is aborted either way; callers return at once.
pub(super) fn insert_failed<'a>(
    exists: impl FnOnce() -> StoreError + 'a,
    run: Option<&'a RunId>,
) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |e| {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        match (code.as_deref(), run) {
            (Some(UNIQUE_VIOLATION), _) => exists(),
            (Some(FOREIGN_KEY_VIOLATION), Some(run)) => refusal::no_run(run),
            _ => e.into(),
        }
    }
}

/// Metrics are stored when all three losses/accuracy are; `train_seconds` is NULL in rows
/// written before migration 0004 and reads as 0 there.
pub(super) fn metrics_of(row: &PgRow) -> Result<Option<TrainingMetrics>, StoreError> {
    let before: Option<f64> = row.try_get("loss_before")?;
    let after: Option<f64> = row.try_get("loss_after")?;
    let acc: Option<f64> = row.try_get("accuracy")?;
    let train_seconds: Option<f64> = row.try_get("train_seconds")?;
    Ok(match (before, after, acc) {
        (Some(loss_before), Some(loss_after), Some(accuracy_after)) => Some(TrainingMetrics {
            loss_before,
            loss_after,
            accuracy_after,
            train_seconds: train_seconds.unwrap_or(0.0),
        }),
        _ => None,
    })
}

pub(super) fn u32_of(row: &PgRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(corrupt(col))
}

pub(super) fn u64_of(row: &PgRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(corrupt(col))
}

pub(super) fn ledger_of(r: &PgRow) -> Result<LedgerEntry, StoreError> {
    use crate::privacy::accountant::Accountant;
    let model: String = r.try_get("model_name")?;
    let region: String = r.try_get("region")?;
    let run: String = r.try_get("run_id")?;
    let state: String = r.try_get("state")?;
    let accountant: String = r.try_get("accountant")?;
    let cost: String = r.try_get("cost_json")?;
    Ok(LedgerEntry {
        scope: PrivacyScope::new(model, RegionId::new(region).map_err(corrupt("ledger region"))?),
        run: RunId::new(run).map_err(corrupt("ledger run id"))?,
        round: u32_of(r, "round")?,
        attempt: u32_of(r, "attempt")?,
        state: LedgerState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("ledger state {state:?}")))?,
        accountant: Accountant::parse(&accountant)
            .ok_or_else(|| StoreError::Corrupt(format!("ledger accountant {accountant:?}")))?,
        cost: serde_json::from_str(&cost).map_err(corrupt("ledger cost"))?,
        noise_multiplier: r.try_get("noise_multiplier")?,
        clip_norm: r.try_get("clip_norm")?,
        sampling_rate: r.try_get("sampling_rate")?,
        delta: r.try_get("delta")?,
        epsilon_cumulative: r.try_get("epsilon_cumulative")?,
        next_clip_norm: r.try_get("next_clip_norm")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn run_of(row: &PgRow) -> Result<RunRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let plan: String = row.try_get("plan_json")?;
    let published: Option<String> = row.try_get("published_checkpoint")?;
    let owner: Option<String> = row.try_get("owner")?;
    Ok(RunRecord {
        id: RunId::new(id).map_err(corrupt("run id"))?,
        plan: serde_json::from_str(&plan).map_err(corrupt("run plan"))?,
        state: row.try_get("state")?,
        completed_rounds: u32_of(row, "completed_rounds")?,
        published_checkpoint: published.map(CheckpointId::new).transpose().map_err(corrupt("checkpoint id"))?,
        failure: row.try_get("failure")?,
        created_at: row.try_get("created_at")?,
        owner: owner.map(|o| o.parse()).transpose().map_err(corrupt("run owner"))?,
        policy_sha256: row.try_get("policy_sha256")?,
        approvals_needed: u32_of(row, "approvals_needed")?,
    })
}

pub(super) fn round_of(row: &PgRow) -> Result<RoundRecord, StoreError> {
    let run: String = row.try_get("run_id")?;
    let checkpoint: Option<String> = row.try_get("checkpoint_id")?;
    Ok(RoundRecord {
        run: RunId::new(run).map_err(corrupt("run id"))?,
        round: u32_of(row, "round")?,
        attempt: u32_of(row, "attempt")?,
        status: row.try_get("status")?,
        selected: u32_of(row, "selected")?,
        reported: u32_of(row, "reported")?,
        samples: u64_of(row, "samples")?,
        metrics: metrics_of(row)?,
        checkpoint: checkpoint.map(CheckpointId::new).transpose().map_err(corrupt("checkpoint id"))?,
        failure: row.try_get("failure")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        energy: serde_json::from_str(&row.try_get::<String, _>("energy_json")?)
            .map_err(|e| StoreError::Corrupt(format!("rounds.energy_json: {e}")))?,
        cost: serde_json::from_str(&row.try_get::<String, _>("cost_json")?)
            .map_err(|e| StoreError::Corrupt(format!("rounds.cost_json: {e}")))?,
    })
}

pub(super) fn participation_of(r: &PgRow) -> Result<ParticipationRecord, StoreError> {
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
}

/// Region `''` is the mean over all regions.
pub(super) fn evaluation_of(r: &PgRow) -> Result<EvaluationRecord, StoreError> {
    let run: String = r.try_get("run_id")?;
    let region: String = r.try_get("region")?;
    Ok(EvaluationRecord {
        run: RunId::new(run).map_err(corrupt("run id"))?,
        round: u32_of(r, "round")?,
        region: if region.is_empty() { None } else { Some(RegionId::new(region).map_err(corrupt("region"))?) },
        clients: u32_of(r, "clients")?,
        samples: u64_of(r, "samples")?,
        loss: r.try_get("loss")?,
        accuracy: r.try_get("accuracy")?,
    })
}
