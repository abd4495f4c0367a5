//! A run's lifecycle. The coordinator persists it and streams it; the CLI shows it and
//! decides its exit code on it: one enum, so that both agree on which states are final.

use serde::{Deserialize, Serialize};

/// Lifecycle of a run. With the `sqlx` feature (the coordinator's store) it binds as the
/// snake_case text of its variant name, in text columns so that the schema stays portable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Admitted by the policy only once enough approvers approve (not scheduled until then).
    PendingApproval,
    Queued,
    Running,
    /// Stopped at a round boundary because the policy in force no longer allows it; resumes
    /// when a policy in force allows it again.
    BlockedByPolicy,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    /// The states a run never leaves.
    pub const TERMINAL: [RunState; 3] = [Self::Succeeded, Self::Failed, Self::Cancelled];

    /// The lowercase name users see (`fedra run list`, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::BlockedByPolicy => "blocked_by_policy",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended and will not change again.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_terminal_states() {
        let all = [
            RunState::PendingApproval,
            RunState::Queued,
            RunState::Running,
            RunState::BlockedByPolicy,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["pending_approval", "queued", "running", "blocked_by_policy", "succeeded", "failed", "cancelled"]
        );
        for s in all {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(all.map(RunState::is_terminal), [false, false, false, false, true, true, true]);
    }
}
