//! The refusals every backend returns, built in one place so that they are identical.

use super::*;

pub(super) fn attempt_key(run: &RunId, round: u32, attempt: u32) -> String {
    format!("{run}/{round}/{attempt}")
}

pub(super) fn participation_key(run: &RunId, round: u32, attempt: u32, client: &ClientId) -> String {
    format!("{run}/{round}/{attempt}/{client}")
}

pub(super) fn no_run(run: &RunId) -> StoreError {
    StoreError::NotFound { what: "run", id: run.to_string() }
}

pub(super) fn run_exists(run: &RunId) -> StoreError {
    StoreError::AlreadyExists { what: "run", id: run.to_string() }
}

pub(super) fn run_conflict(run: &RunId, action: impl Into<String>, state: RunState) -> StoreError {
    StoreError::Conflict { what: "run", id: run.to_string(), action: action.into(), state: state.to_string() }
}

/// `completed` rounds are on record, so `round` is not the run's next one.
pub(super) fn out_of_order(run: &RunId, round: u32, completed: u32) -> StoreError {
    StoreError::Conflict {
        what: "run",
        id: run.to_string(),
        action: format!("complete round {round} of"),
        state: format!("at round {}", u64::from(completed) + 1),
    }
}

pub(super) fn no_attempt(run: &RunId, round: u32, attempt: u32) -> StoreError {
    StoreError::NotFound { what: "round attempt", id: attempt_key(run, round, attempt) }
}

pub(super) fn attempt_exists(run: &RunId, round: u32, attempt: u32) -> StoreError {
    StoreError::AlreadyExists { what: "round attempt", id: attempt_key(run, round, attempt) }
}

pub(super) fn attempt_conflict(run: &RunId, round: u32, attempt: u32, action: &str, status: RoundStatus) -> StoreError {
    StoreError::Conflict {
        what: "round attempt",
        id: attempt_key(run, round, attempt),
        action: action.to_string(),
        state: status.to_string(),
    }
}

pub(super) fn no_participation(run: &RunId, round: u32, attempt: u32, client: &ClientId) -> StoreError {
    StoreError::NotFound { what: "participation", id: participation_key(run, round, attempt, client) }
}

pub(super) fn participation_exists(run: &RunId, round: u32, attempt: u32, client: &ClientId) -> StoreError {
    StoreError::AlreadyExists { what: "participation", id: participation_key(run, round, attempt, client) }
}

pub(super) fn participation_conflict(
    run: &RunId,
    round: u32,
    attempt: u32,
    client: &ClientId,
    action: &str,
    status: ParticipationStatus,
) -> StoreError {
    StoreError::Conflict {
        what: "participation",
        id: participation_key(run, round, attempt, client),
        action: action.to_string(),
        state: status.to_string(),
    }
}

pub(super) fn checkpoint_exists(id: &CheckpointId) -> StoreError {
    StoreError::AlreadyExists { what: "checkpoint", id: id.to_string() }
}

pub(super) fn location_exists(id: &CheckpointId, region: &RegionId) -> StoreError {
    StoreError::AlreadyExists { what: "checkpoint location", id: format!("{id}/{region}") }
}

pub(super) fn evaluation_exists(e: &EvaluationRecord) -> StoreError {
    let region = e.region.as_ref().map_or("all", RegionId::as_str);
    StoreError::AlreadyExists { what: "evaluation", id: format!("{}/{}/{region}", e.run, e.round) }
}

pub(super) fn ledger_entry_exists(e: &LedgerEntry) -> StoreError {
    StoreError::AlreadyExists {
        what: "privacy ledger entry",
        id: format!("{}/{}/{}/{}", e.scope, e.run, e.round, e.attempt),
    }
}
