//! Reads that decide whether a write may happen, and the refusal that names why not,
//! within the write's own transaction.

use super::*;
use sqlx::{Row, SqliteConnection};

/// A run's stored state and completed rounds; `None` when it is not stored.
pub(super) async fn run_progress(
    conn: &mut SqliteConnection,
    run: &RunId,
) -> Result<Option<(RunState, u32)>, StoreError> {
    let row = sqlx::query("SELECT state, completed_rounds FROM runs WHERE id = ?")
        .bind(run.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((r.try_get("state")?, u32_of(&r, "completed_rounds")?))).transpose()
}

/// A round attempt's stored status; `None` when it is not stored.
pub(super) async fn round_status(
    conn: &mut SqliteConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
) -> Result<Option<RoundStatus>, StoreError> {
    Ok(sqlx::query_scalar("SELECT status FROM rounds WHERE run_id = ? AND round = ? AND attempt = ?")
        .bind(run.as_str())
        .bind(i64::from(round))
        .bind(i64::from(attempt))
        .fetch_optional(conn)
        .await?)
}

/// A participation's stored status; `None` when it is not stored.
pub(super) async fn participation_status(
    conn: &mut SqliteConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
    client: &ClientId,
) -> Result<Option<ParticipationStatus>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT status FROM participations WHERE run_id = ? AND round = ? AND attempt = ? AND client_id = ?",
    )
    .bind(run.as_str())
    .bind(i64::from(round))
    .bind(i64::from(attempt))
    .bind(client.as_str())
    .fetch_optional(conn)
    .await?)
}

/// Why a write guarded on a non-terminal run changed no row.
pub(super) async fn run_refusal(
    conn: &mut SqliteConnection,
    run: &RunId,
    action: &str,
) -> Result<StoreError, StoreError> {
    Ok(match run_progress(conn, run).await? {
        None => refusal::no_run(run),
        Some((state, _)) => refusal::run_conflict(run, action, state),
    })
}

/// Why a write guarded on an in-progress round attempt changed no row.
pub(super) async fn attempt_refusal(
    conn: &mut SqliteConnection,
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
    tx: &mut sqlx::SqliteConnection,
    run: &RunId,
    round: u32,
    attempt: u32,
    next_clip_norm: Option<f64>,
) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "UPDATE privacy_ledger SET state = ?, charged_at = ?, next_clip_norm = ? \
         WHERE run_id = ? AND round = ? AND attempt = ? AND state = ?",
    )
    .bind(LedgerState::Charged.as_str())
    .bind(ts(&Utc::now()))
    .bind(next_clip_norm)
    .bind(run.as_str())
    .bind(i64::from(round))
    .bind(i64::from(attempt))
    .bind(LedgerState::Reserved.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected())
}
