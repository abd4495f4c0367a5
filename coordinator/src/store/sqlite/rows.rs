//! Turning SQLite rows and errors into domain records: timestamps, metrics, runs, rounds,
//! ledger entries, and insert failures as domain refusals.

use super::*;
use crate::privacy::LedgerState;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

pub(super) fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// Classifies an INSERT's failure by database error code: a unique or primary-key violation
/// means the record is stored already (`exists`), a foreign-key violation that the run it
/// belongs to is not (`run`, when the row references one).
pub(super) fn insert_failed<'a>(
    exists: impl FnOnce() -> StoreError + 'a,
    run: Option<&'a RunId>,
) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |e| match e.as_database_error() {
        Some(d) if d.is_unique_violation() => exists(),
        Some(d) if d.is_foreign_key_violation() && run.is_some() => refusal::no_run(run.expect("checked")),
        _ => e.into(),
    }
}

/// Binds `?` placeholders for the terminal run states, in the order of [`RunState::TERMINAL`].
pub(super) const NOT_TERMINAL: &str = "state NOT IN (?, ?, ?)";

/// Metrics are stored when all three losses/accuracy are; `train_seconds` is NULL in rows
/// written before migration 0004 and reads as 0 there.
pub(super) fn metrics_of(row: &SqliteRow) -> Result<Option<TrainingMetrics>, StoreError> {
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

pub(super) fn u32_of(row: &SqliteRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(corrupt(col))
}

pub(super) fn u64_of(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(corrupt(col))
}

pub(super) fn ledger_of(r: &SqliteRow) -> Result<LedgerEntry, StoreError> {
    use crate::privacy::accountant::Accountant;
    let model: String = r.try_get("model_name")?;
    let region: String = r.try_get("region")?;
    let run: String = r.try_get("run_id")?;
    let state: String = r.try_get("state")?;
    let accountant: String = r.try_get("accountant")?;
    let cost: String = r.try_get("cost_json")?;
    let created: String = r.try_get("created_at")?;
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
        created_at: parse_ts(&created)?,
    })
}

pub(super) fn run_of(row: &SqliteRow) -> Result<RunRecord, StoreError> {
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
        created_at: parse_ts(row.try_get("created_at")?)?,
        owner: owner.map(|o| o.parse()).transpose().map_err(corrupt("run owner"))?,
        policy_sha256: row.try_get("policy_sha256")?,
        approvals_needed: u32_of(row, "approvals_needed")?,
    })
}

pub(super) fn round_of(row: &SqliteRow) -> Result<RoundRecord, StoreError> {
    let run: String = row.try_get("run_id")?;
    let checkpoint: Option<String> = row.try_get("checkpoint_id")?;
    let finished: Option<String> = row.try_get("finished_at")?;
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
        started_at: parse_ts(row.try_get("started_at")?)?,
        finished_at: finished.as_deref().map(parse_ts).transpose()?,
        energy: serde_json::from_str(&row.try_get::<String, _>("energy_json")?)
            .map_err(|e| StoreError::Corrupt(format!("rounds.energy_json: {e}")))?,
        cost: serde_json::from_str(&row.try_get::<String, _>("cost_json")?)
            .map_err(|e| StoreError::Corrupt(format!("rounds.cost_json: {e}")))?,
    })
}
