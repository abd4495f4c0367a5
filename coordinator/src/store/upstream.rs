//! What a regional aggregator keeps about the cohort tasks its global coordinator sent it.

use crate::ids::{RunId, TaskId};
use chrono::{DateTime, Utc};

/// One cohort task of the global coordinator and the local run that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTask {
    /// The global coordinator's task id: the key that makes a resend idempotent.
    pub task: TaskId,
    /// The local one-round run that trains the cohort.
    pub run: RunId,
    pub upstream_run: RunId,
    pub upstream_round: u32,
    pub state: UpstreamState,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Where a cohort task stands. `Training` moves to one of the two others, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum UpstreamState {
    /// The local run is queued or training, or its aggregate is not yet accepted upstream.
    Training,
    /// The global coordinator accepted the region's aggregate (or had it already).
    Pushed,
    /// Nothing will be sent: the local run failed, or the global round closed first.
    Abandoned,
}

impl UpstreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Training => "training",
            Self::Pushed => "pushed",
            Self::Abandoned => "abandoned",
        }
    }
}

/// The upstream-task refusals every backend returns.
pub(super) mod refusal {
    use super::super::StoreError;
    use crate::ids::TaskId;

    pub fn exists(task: &TaskId) -> StoreError {
        StoreError::AlreadyExists { what: "upstream task", id: task.to_string() }
    }

    pub fn missing(task: &TaskId) -> StoreError {
        StoreError::NotFound { what: "upstream task", id: task.to_string() }
    }

    pub fn ended(task: &TaskId, state: super::UpstreamState) -> StoreError {
        StoreError::Conflict {
            what: "upstream task",
            id: task.to_string(),
            action: "end".into(),
            state: state.as_str().to_string(),
        }
    }
}
