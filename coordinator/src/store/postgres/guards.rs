//! Reads that decide whether a write may happen, the refusal that names why not, and the
//! locks that keep those reads true until the write commits (see the parent module's
//! "Concurrency").

use super::*;
use sqlx::PgConnection;

/// The terminal run states' texts, bound as a `text[]` (`state <> ALL($n)`).
pub(super) fn terminal() -> Vec<&'static str> {
    RunState::TERMINAL.iter().map(|s| s.as_str()).collect()
}

fn progress_of(row: &PgRow) -> Result<(RunState, u32), StoreError> {
    Ok((row.try_get("state")?, u32_of(row, "completed_rounds")?))
}

/// A run's stored state and completed rounds; `None` when it is not stored.
pub(super) async fn run_progress(conn: &mut PgConnection, run: &RunId) -> Result<Option<(RunState, u32)>, StoreError> {
    let row = sqlx::query("SELECT state, completed_rounds FROM runs WHERE id = $1")
        .bind(run.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(progress_of).transpose()
}

/// As [`run_progress`], locking the run row until the transaction ends: writes that depend
/// on the run's state take it first.
pub(super) async fn lock_run(conn: &mut PgConnection, run: &RunId) -> Result<Option<(RunState, u32)>, StoreError> {
    let row = sqlx::query("SELECT state, completed_rounds FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(progress_of).transpose()
}

/// Locks the round rows of `attempts` (those stored), in key order, until the transaction
/// ends: before a participation row, as every method that closes an attempt does.
pub(super) async fn lock_attempts<'a>(
    conn: &mut PgConnection,
    attempts: impl Iterator<Item = (&'a RunId, u32, u32)>,
) -> Result<(), StoreError> {
    let mut keys: Vec<(&str, i64, i64)> =
        attempts.map(|(run, round, attempt)| (run.as_str(), i64::from(round), i64::from(attempt))).collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT 1 FROM rounds WHERE (run_id, round, attempt) IN (SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]))
         ORDER BY run_id, round, attempt FOR UPDATE",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the transaction-scoped advisory lock named `key` in this schema, waiting for
/// whoever holds it; released at commit or rollback.
pub(super) async fn advisory_lock(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || $1, 0))")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// A round attempt's stored status; `None` when it is not stored.
pub(super) async fn round_status(
    conn: &mut PgConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
) -> Result<Option<RoundStatus>, StoreError> {
    Ok(sqlx::query_scalar("SELECT status FROM rounds WHERE run_id = $1 AND round = $2 AND attempt = $3")
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .fetch_optional(conn)
        .await?)
}

/// A participation's stored status; `None` when it is not stored.
pub(super) async fn participation_status(
    conn: &mut PgConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
    client: &ClientId,
) -> Result<Option<ParticipationStatus>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT status FROM participations WHERE run_id = $1 AND round = $2 AND attempt = $3 AND client_id = $4",
    )
    .bind(run.as_str())
    .bind(i64::from(round))
    .bind(i64::from(attempt))
    .bind(client.as_str())
    .fetch_optional(conn)
    .await?)
}

/// Why a write guarded on a non-terminal run changed no row.
pub(super) async fn run_refusal(conn: &mut PgConnection, run: &RunId, action: &str) -> Result<StoreError, StoreError> {
    Ok(match run_progress(conn, run).await? {
        None => refusal::no_run(run),
        Some((state, _)) => refusal::run_conflict(run, action, state),
    })
}

/// Why a write guarded on an in-progress round attempt changed no row.
pub(super) async fn attempt_refusal(
    conn: &mut PgConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
    action: &str,
) -> Result<StoreError, StoreError> {
    Ok(match round_status(conn, run, round, attempt).await? {
        None => refusal::no_attempt(run, round, attempt),
        Some(status) => refusal::attempt_conflict(run, round, attempt, action, status),
    })
}

/// Marks an attempt's reservations charged; how many it changed.
pub(super) async fn charge_in(
    tx: &mut sqlx::PgConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
    next_clip_norm: Option<f64>,
) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "UPDATE privacy_ledger SET state = $1, charged_at = $2, next_clip_norm = $3
         WHERE run_id = $4 AND round = $5 AND attempt = $6 AND state = $7",
    )
    .bind(LedgerState::Charged.as_str())
    .bind(Utc::now())
    .bind(next_clip_norm)
    .bind(run.as_str())
    .bind(i64::from(round))
    .bind(i64::from(attempt))
    .bind(LedgerState::Reserved.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected())
}
