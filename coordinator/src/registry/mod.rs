//! The regional model registry: which checkpoint serves each model in each region, how it
//! got there, and what an inference node should load.
//!
//! ```text
//!              gate passed, promote_to          promote (approver)
//!  published ─▶ candidate ───────────────▶ canary ─────────────▶ serving ─▶ retired
//!                  │  promote (approver)     │ rule / rollback      ▲  │      │
//!                  └─────────────────────────┼──────────────────────┘  │      │ rollback
//!                                            ▼                         ▼      │ restores
//!                                       rolled_back ◀──── rollback ── serving ◀┘
//! ```
//!
//! - A run's published checkpoint enters every region it was published to as a
//!   `candidate`, with the promotion gate's verdict for that region ([`gate`]).
//! - Promotion to `serving` retires the previous serving checkpoint; rollback takes the
//!   canary (if any) or the serving checkpoint out of service as `rolled_back` and restores
//!   the most recently retired one, in one store transaction.
//! - Every change is a [`Transition`] with actor and reason, kept append-only in the store
//!   and mirrored in the audit log.
//!
//! The pure rules live in [`lifecycle`] and [`gate`]; [`service`] is the one task that
//! applies them, so two commands for the same region never interleave.

pub mod gate;
pub mod lifecycle;
pub mod service;

use crate::ids::{CheckpointId, RegionId, RunId};
use chrono::{DateTime, Utc};
use std::fmt;

pub use service::{Registry, RegistryHandle};

/// A checkpoint's state in one region's registry of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelState {
    Candidate,
    Canary,
    Serving,
    Retired,
    RolledBack,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Canary => "canary",
            Self::Serving => "serving",
            Self::Retired => "retired",
            Self::RolledBack => "rolled_back",
        }
    }

    pub const ALL: [ModelState; 5] = [Self::Candidate, Self::Canary, Self::Serving, Self::Retired, Self::RolledBack];

    /// The state named by [`ModelState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether a node serves it (serving or canary).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Serving | Self::Canary)
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The promotion gate's verdict for a checkpoint in one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    /// Every check with its numbers, e.g. `accuracy 0.91 ≥ serving 0.90 − 0.01; 320 ≥ 100 samples`.
    pub detail: String,
}

/// What the policy's `[[promotion]]` rule required of a checkpoint in a region, fixed when
/// it entered the registry (under the set whose sha256 the registration reason names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyGate {
    /// The rule that applied: `policies/promotion.toml:9 (promotion model=* region=EU ...)`.
    pub rule: String,
    /// Whether the rule's own checks passed (they are part of the entry's [`Verdict`] too).
    pub passed: bool,
    /// Whether an approver may promote past a failed gate.
    pub allow_override: bool,
    /// Distinct approvals needed before the checkpoint may go live in the region.
    pub approvals_needed: u32,
}

/// A region's federated evaluation of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionEval {
    pub accuracy: f64,
    pub loss: f64,
    pub samples: u64,
}

/// One checkpoint in one region's registry of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryEntry {
    pub region: RegionId,
    pub model: String,
    pub checkpoint: CheckpointId,
    pub run: RunId,
    pub round: u32,
    pub state: ModelState,
    pub gate: Verdict,
    pub eval: Option<RegionEval>,
    pub canary_fraction: f64,
    pub updated_at: DateTime<Utc>,
    /// `None`: no policy rule applied, the plan's gate alone.
    pub policy: Option<PolicyGate>,
    /// Who approved it going live here, in the order they did.
    pub approvers: Vec<String>,
}

impl RegistryEntry {
    /// Approvals needed before it may go live (0: none).
    pub fn approvals_needed(&self) -> u32 {
        self.policy.as_ref().map_or(0, |p| p.approvals_needed)
    }

    /// Whether enough distinct approvers have approved it.
    pub fn approved(&self) -> bool {
        self.approvers.len() >= self.approvals_needed() as usize
    }

    /// Whether a failed gate may be overridden: not when the policy's rule failed it and
    /// does not allow overrides.
    pub fn gate_overridable(&self) -> bool {
        self.policy.as_ref().is_none_or(|p| p.passed || p.allow_override)
    }
}

/// An approver's approval of a checkpoint going live in one (region, model).
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub region: RegionId,
    pub model: String,
    pub checkpoint: CheckpointId,
    pub approver: String,
    pub reason: String,
}

/// A state change to apply: `checkpoint` moves from `from` to `to` in (region, model).
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub region: RegionId,
    pub model: String,
    pub checkpoint: CheckpointId,
    pub from: ModelState,
    pub to: ModelState,
    /// For a move to canary: its share of requests.
    pub canary_fraction: Option<f64>,
}

/// Everything one registry command changes, applied in one transaction: new candidates,
/// then approvals, then moves (each refused unless the checkpoint is still in `from`), then the audit
/// entries.
#[derive(Debug, Clone, Default)]
pub struct RegistryChange {
    pub inserts: Vec<RegistryEntry>,
    /// Approvals recorded before the moves (each refused if that approver already approved).
    pub approvals: Vec<Approval>,
    pub moves: Vec<Move>,
    pub actor: String,
    pub reason: String,
    pub audit: Vec<crate::store::AuditDraft>,
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub region: RegionId,
    pub model: String,
    pub checkpoint: CheckpointId,
    /// `None` when the checkpoint entered the registry.
    pub from: Option<ModelState>,
    pub to: ModelState,
    pub actor: String,
    pub reason: String,
}

/// Filter for listing entries; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct RegistryFilter {
    pub region: Option<RegionId>,
    pub model: Option<String>,
    /// Also retired and rolled-back entries.
    pub all: bool,
}

/// A registry command refused (or the store failing under it); each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("checkpoint {checkpoint} is not in the {model} registry of region {region}")]
    NotRegistered { region: RegionId, model: String, checkpoint: CheckpointId },
    #[error("checkpoint {checkpoint} is {state} in region {region}; only a candidate or canary can be promoted")]
    NotPromotable { region: RegionId, checkpoint: CheckpointId, state: ModelState },
    #[error(
        "checkpoint {checkpoint} failed the promotion gate in region {region} ({detail}); pass override_gate with a reason to promote it anyway"
    )]
    GateFailed { region: RegionId, checkpoint: CheckpointId, detail: String },
    #[error(
        "checkpoint {checkpoint} failed the promotion gate in region {region} under policy rule {rule} ({detail}), which allows no override"
    )]
    PolicyGateFailed { region: RegionId, checkpoint: CheckpointId, rule: String, detail: String },
    #[error(
        "checkpoint {checkpoint} needs {needed} distinct approvals to go live in region {region} and has {have} ({approvers})"
    )]
    AwaitingApprovals { region: RegionId, checkpoint: CheckpointId, needed: u32, have: u32, approvers: String },
    #[error("{approver} submitted run {run}, which produced checkpoint {checkpoint}, and may not approve it")]
    SelfApproval { approver: String, run: RunId, checkpoint: CheckpointId },
    #[error("{approver} has already approved checkpoint {checkpoint} in region {region}; another approver is needed")]
    AlreadyApproved { region: RegionId, checkpoint: CheckpointId, approver: String },
    #[error("nothing serves {model} in region {region}: there is nothing to roll back")]
    NothingServing { region: RegionId, model: String },
    #[error("a promotion can only go to canary or serving, not {0}")]
    BadTarget(ModelState),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the model registry is shutting down")]
    Stopped,
}
