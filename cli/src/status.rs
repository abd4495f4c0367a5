//! What the coordinator reports about runs, checkpoints and privacy scopes, as the data
//! scientist's side sees it: the return types of [`crate::control::ControlClient`] and what
//! the `fedra` commands print. [`crate::convert`] builds them from protobuf; nothing else
//! here knows the wire.
//!
//! The shared vocabulary (run states, training metrics) comes from `fedra-types`; what is
//! defined here are this side's snapshots, which differ from the coordinator's own (see
//! [`RunStatus`]).

use fedra_types::metrics::TrainingMetrics;
use fedra_types::run::RunState;

/// Sample-weighted mean of clients' held-out evaluations of one round's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSummary {
    pub round: u32,
    /// `None` for the mean over all regions.
    pub region: Option<String>,
    pub clients: u32,
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// One round attempt of a run.
#[derive(Debug, Clone)]
pub struct RoundRow {
    pub round: u32,
    /// The coordinator's name for where the attempt stands (`training`, `done`, ...).
    pub phase: String,
    pub selected: u32,
    pub reported: u32,
    pub samples: u64,
    pub metrics: Option<TrainingMetrics>,
    pub checkpoint: Option<String>,
    pub failure: Option<String>,
    /// Estimated energy and carbon per region: (region, compute seconds, kWh, g CO2e).
    pub energy: Vec<(String, f64, f64, Option<f64>)>,
}

/// The CLI side's one snapshot of a run: what `ControlClient::get` and `list` return and
/// what `fedra run show` and `fedra run list` print.
///
/// Why a snapshot of its own, when the coordinator has three: the coordinator's
/// `store::RunRecord` is the store's row (the full validated plan, typed ids, timestamps)
/// and `round::RunView` is the round engine's answer (that row plus round records,
/// evaluations and the live phase); both are internal to the coordinator. `pb::RunInfo` is
/// their wire form, with enums as integers, empty strings for "none" and the whole plan.
/// This one is what a data scientist reads: the model name and round count lifted out of
/// the plan, absent values as `None`, and the state as [`RunState`].
#[derive(Debug, Clone)]
pub struct RunStatus {
    pub id: String,
    pub model_name: String,
    pub state: RunState,
    pub total_rounds: u32,
    pub completed_rounds: u32,
    pub published_checkpoint: Option<String>,
    pub failure: Option<String>,
    /// RFC 3339, as the coordinator wrote it.
    pub created_at: String,
    pub rounds: Vec<RoundRow>,
    pub evaluations: Vec<EvalSummary>,
    /// The policy set the run was admitted under, if the coordinator has one.
    pub policy_sha256: Option<String>,
    pub approvals_needed: u32,
}

/// A step of a run, as streamed by `WatchRun`.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Selected {
        round: u32,
        clients: Vec<String>,
        target: u32,
    },
    UpdateReceived {
        round: u32,
        client: String,
        region: String,
        samples: u64,
        reported: u32,
        target: u32,
        metrics: TrainingMetrics,
    },
    Aggregated {
        round: u32,
        clients: u32,
        samples: u64,
        metrics: TrainingMetrics,
        /// Seconds the coordinator spent folding updates (0 when replayed from its store).
        fold_seconds: f64,
        /// Encoded bytes of the counted updates' chunks (0 when replayed from its store).
        update_bytes: u64,
    },
    Published {
        round: u32,
        checkpoint: String,
        regions: Vec<String>,
        sha256: String,
    },
    RoundFailed {
        round: u32,
        reason: String,
    },
    /// The policy in force stopped the run at a round boundary; it may resume.
    Blocked {
        round: u32,
        reason: String,
    },
    RunFinished {
        state: RunState,
        reason: Option<String>,
    },
    /// Overall mean first, then per region.
    Evaluated {
        round: u32,
        results: Vec<EvalSummary>,
    },
}

/// A checkpoint in the registry.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub id: String,
    pub run: String,
    pub round: u32,
    pub model_name: String,
    pub regions: Vec<String>,
    pub sha256: String,
    /// RFC 3339, as the coordinator wrote it.
    pub created_at: String,
    pub published: bool,
    pub manifest_json: String,
}

/// One privacy scope's standing (`fedra privacy status`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSummary {
    pub scope: String,
    /// `None` when no budget is configured for the scope.
    pub epsilon_budget: Option<f64>,
    pub delta: f64,
    pub epsilon_spent: f64,
    pub epsilon_remaining: Option<f64>,
    pub rounds_charged: u32,
    pub rounds_reserved: u32,
    pub accountant: String,
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub sampling_rate: f64,
    pub last_run: String,
}

/// `fedra audit list`: one line per entry (sequence, UTC time, actor, action, run, region,
/// detail), or with `json` one JSON object per line with every field, the chain hashes
/// included, for a SIEM.
pub fn audit_listing(entries: &[fedra_types::audit::AuditEntry], json: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for e in entries {
        if json {
            let line = serde_json::to_string(e).expect("audit entries serialize");
            let _ = writeln!(out, "{line}");
            continue;
        }
        let at = chrono::DateTime::from_timestamp_millis(e.draft.at_ms)
            .map_or_else(|| e.draft.at_ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let _ = writeln!(
            out,
            "{:>6}  {at}  {}  {}  {}  {}  {}",
            e.seq,
            e.draft.actor,
            e.draft.action,
            e.draft.run.as_deref().unwrap_or("-"),
            e.draft.region.as_deref().unwrap_or("-"),
            e.draft.detail
        );
    }
    out
}

#[cfg(test)]
mod audit_tests {
    use fedra_types::audit::{AuditAction, AuditDraft, AuditEntry};

    #[test]
    fn audit_lines_and_json_lines() {
        let e = AuditEntry::chain(
            None,
            AuditDraft::new(1_764_504_000_000, "fedra://scientist/alice", AuditAction::RunSubmitted, "model m")
                .run("run-1"),
        );
        let text = super::audit_listing(std::slice::from_ref(&e), false);
        assert_eq!(
            text,
            "     1  2025-11-30T12:00:00.000Z  fedra://scientist/alice  run_submitted  run-1  -  model m\n"
        );
        let json = super::audit_listing(std::slice::from_ref(&e), true);
        let back: AuditEntry = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(back, e);
    }
}
