//! What the coordinator reports about runs, checkpoints and privacy scopes, as the data
//! scientist's side sees it: the return types of [`crate::control::ControlClient`] and what
//! the `fedra` commands print. [`crate::convert`] builds them from protobuf; nothing else
//! here knows the wire.
//!
//! The shared vocabulary (run states, training metrics) comes from `fedra-types`; what is
//! defined here are this side's snapshots, which differ from the coordinator's own (see
//! [`RunStatus`]).
//!
//! Every snapshot derives `serde::Serialize`: `--output json` prints these types, never
//! protobuf messages, so the JSON keys are the field names below (snake_case, stable),
//! absent values are `null` and numbers are numbers. A renamed field is a breaking change
//! for scripts that read that output.

use fedra_coordinator::registry::ModelState;
use fedra_types::metrics::TrainingMetrics;
use fedra_types::run::RunState;
use serde::Serialize;

/// Sample-weighted mean of clients' held-out evaluations of one round's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
    /// In JSON, objects with the keys `region`, `compute_seconds`, `energy_kwh` and
    /// `carbon_g` (`null` without a carbon feed for the region).
    #[serde(serialize_with = "energy_objects")]
    pub energy: Vec<(String, f64, f64, Option<f64>)>,
    /// What the round cost per region (measured; priced when the coordinator has prices).
    pub cost: Vec<RegionCost>,
}

pub use fedra_types::cost::RegionCost;

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
///
/// In JSON the id is `run_id`, as in every other document the CLI prints.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    #[serde(rename = "run_id")]
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
    /// Whether the plan asks for differential privacy (the watch display then shows ε).
    pub private: bool,
}

fn energy_objects<S: serde::Serializer>(rows: &[(String, f64, f64, Option<f64>)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct RegionEnergy<'a> {
        region: &'a str,
        compute_seconds: f64,
        energy_kwh: f64,
        carbon_g: Option<f64>,
    }
    s.collect_seq(rows.iter().map(|(region, compute_seconds, energy_kwh, carbon_g)| RegionEnergy {
        region,
        compute_seconds: *compute_seconds,
        energy_kwh: *energy_kwh,
        carbon_g: *carbon_g,
    }))
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

/// A checkpoint in the registry. In JSON: `checkpoint_id`, `run_id`, and the manifest as
/// an object under `manifest` (`null` when the coordinator sent none).
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    #[serde(rename = "checkpoint_id")]
    pub id: String,
    #[serde(rename = "run_id")]
    pub run: String,
    pub round: u32,
    pub model_name: String,
    pub regions: Vec<String>,
    pub sha256: String,
    /// RFC 3339, as the coordinator wrote it.
    pub created_at: String,
    pub published: bool,
    #[serde(rename = "manifest", serialize_with = "embedded_json")]
    pub manifest_json: String,
}

/// Writes a JSON text the coordinator sent as the JSON value it holds (`null` when empty),
/// so that a reader gets an object rather than a string to parse again.
///
/// # Errors
/// The text is not JSON (the error names the field).
fn embedded_json<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    if text.is_empty() {
        return s.serialize_none();
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| serde::ser::Error::custom(format!("checkpoint manifest_json is not JSON: {e}")))?;
    value.serialize(s)
}

/// One privacy scope's standing (`fedra privacy status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// One checkpoint's place in one region's registry of one model (`fedra model list`,
/// `show`, `promote`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEntry {
    pub region: String,
    pub model_name: String,
    pub checkpoint_id: String,
    #[serde(serialize_with = "state_name")]
    pub state: ModelState,
    pub run_id: String,
    pub round: u32,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// The promotion gate's verdict in this region, and why.
    pub gate_passed: bool,
    pub gate_detail: String,
    /// Whether an approver may promote it although the gate failed.
    pub gate_overridable: bool,
    /// The policy's promotion rule that applied (`file:line (text)`), if any.
    pub policy_rule: Option<String>,
    /// This region's federated evaluation: `None` when not evaluated.
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
    pub eval_samples: u64,
    /// A canary's share of requests (0 otherwise).
    pub canary_fraction: f64,
    pub approvals_needed: u32,
    pub approvers: Vec<String>,
}

/// What serves one model in one region (`fedra model show`): the serving and canary
/// checkpoints picked out of `entries`, which lists every checkpoint with its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServingSummary {
    pub region: String,
    pub model_name: String,
    pub serving: Option<String>,
    pub canary: Option<String>,
    /// The canary's share of requests, when there is a canary.
    pub canary_fraction: Option<f64>,
    pub entries: Vec<ModelEntry>,
}

impl ServingSummary {
    /// Picks the serving and canary checkpoints out of one region's entries for `model_name`.
    pub fn new(region: String, model_name: String, entries: Vec<ModelEntry>) -> Self {
        let pick = |s: ModelState| entries.iter().find(|e| e.state == s);
        let canary = pick(ModelState::Canary);
        Self {
            serving: pick(ModelState::Serving).map(|e| e.checkpoint_id.clone()),
            canary: canary.map(|e| e.checkpoint_id.clone()),
            canary_fraction: canary.map(|e| e.canary_fraction),
            region,
            model_name,
            entries,
        }
    }
}

/// One transition in a region's registry (`fedra model history`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelTransitionRow {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub region: String,
    pub model_name: String,
    pub checkpoint_id: String,
    /// `None` when the checkpoint entered the registry with this transition.
    #[serde(serialize_with = "optional_state_name")]
    pub from: Option<ModelState>,
    #[serde(serialize_with = "state_name")]
    pub to: ModelState,
    pub actor: String,
    pub reason: String,
}

/// The outcome of `fedra model rollback`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollback {
    /// The checkpoint taken out of service.
    pub rolled_back: String,
    /// What serves now; `None` when nothing served before it.
    pub serving: Option<ModelEntry>,
}

/// An inference node's latest report (`fedra drift status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    pub node: String,
    pub region: String,
    pub model_name: String,
    /// RFC 3339, UTC.
    pub reported_at: String,
    pub arms: Vec<ArmStats>,
    /// `None` when the node reported no drift section.
    pub drift: Option<DriftSummary>,
    /// Checkpoints the node refused to load, with why; latest first.
    pub refused: Vec<String>,
}

/// One arm's live statistics on an inference node since it loaded that checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmStats {
    pub checkpoint_id: String,
    pub canary: bool,
    pub requests: u64,
    pub rows: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_1000: f64,
    /// At the node's configured price per CPU-hour; 0 when none is configured.
    pub cost_per_1000: f64,
}

/// Drift of a node's live inputs against its checkpoint's reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftSummary {
    pub checkpoint_id: String,
    /// False for a checkpoint without a reference (a private run): nothing was compared
    /// and the numbers below are 0.
    pub has_reference: bool,
    pub drifted: bool,
    pub rows: u64,
    pub max_psi: f64,
    pub max_ks: f64,
    pub prediction_psi: f64,
    /// The most drifted features, largest PSI first.
    pub features: Vec<FeatureDrift>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: u32,
    pub psi: f64,
    pub ks: f64,
    pub reference_mean: f64,
    pub live_mean: f64,
}

fn state_name<S: serde::Serializer>(state: &ModelState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

fn optional_state_name<S: serde::Serializer>(state: &Option<ModelState>, s: S) -> Result<S::Ok, S::Error> {
    match state {
        Some(state) => s.serialize_str(state.as_str()),
        None => s.serialize_none(),
    }
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

#[cfg(test)]
mod json_tests {
    //! The JSON shapes `--output json` prints: the keys scripts read.
    use super::*;
    use serde_json::{Value, json};

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    fn run() -> RunStatus {
        RunStatus {
            id: "run-1".into(),
            model_name: "cli-lr".into(),
            state: RunState::Succeeded,
            total_rounds: 2,
            completed_rounds: 2,
            published_checkpoint: Some("run-1.r0002".into()),
            failure: None,
            created_at: "2026-12-01T12:00:00Z".into(),
            rounds: vec![RoundRow {
                round: 1,
                phase: "done".into(),
                selected: 3,
                reported: 3,
                samples: 300,
                metrics: Some(TrainingMetrics {
                    loss_before: 1.1,
                    loss_after: 0.5,
                    accuracy_after: 0.75,
                    train_seconds: 0.2,
                }),
                checkpoint: Some("run-1.r0001".into()),
                failure: None,
                energy: vec![("eu".into(), 1.5, 0.001, None)],
                cost: vec![RegionCost {
                    region: fedra_types::ids::RegionId::new("eu").unwrap(),
                    updates: 2,
                    update_bytes: 80,
                    broadcast_bytes: 80,
                    coordinator_cpu_seconds: 0.01,
                    client_train_seconds: 1.5,
                    cost: Some(0.25),
                    currency: Some("EUR".into()),
                }],
            }],
            evaluations: vec![],
            policy_sha256: None,
            approvals_needed: 0,
            private: false,
        }
    }

    #[test]
    fn a_run_serializes_with_stable_snake_case_keys_nulls_and_numbers() {
        let v = serde_json::to_value(run()).unwrap();
        assert_eq!(
            keys(&v),
            [
                "approvals_needed",
                "completed_rounds",
                "created_at",
                "evaluations",
                "failure",
                "model_name",
                "policy_sha256",
                "private",
                "published_checkpoint",
                "rounds",
                "run_id",
                "state",
                "total_rounds"
            ]
        );
        assert_eq!((&v["run_id"], &v["state"], &v["total_rounds"]), (&json!("run-1"), &json!("succeeded"), &json!(2)));
        assert_eq!(v["failure"], Value::Null);
        let round = &v["rounds"][0];
        assert_eq!(
            keys(round),
            ["checkpoint", "cost", "energy", "failure", "metrics", "phase", "reported", "round", "samples", "selected"]
        );
        assert_eq!(round["metrics"]["accuracy_after"], json!(0.75));
        assert_eq!(
            round["energy"],
            json!([{"region": "eu", "compute_seconds": 1.5, "energy_kwh": 0.001, "carbon_g": null}])
        );
        assert_eq!(round["cost"][0]["update_bytes"], 80);
        assert_eq!(round["cost"][0]["cost"], 0.25);
        assert_eq!(round["cost"][0]["currency"], "EUR");
    }

    #[test]
    fn a_checkpoint_carries_its_manifest_as_an_object() {
        let mut c = CheckpointSummary {
            id: "run-1.r0001".into(),
            run: "run-1".into(),
            round: 1,
            model_name: "m".into(),
            regions: vec!["eu".into()],
            sha256: "ab".into(),
            created_at: "2026-12-01T12:00:00Z".into(),
            published: true,
            manifest_json: r#"{"format": "fedra-checkpoint-v1", "round": 1}"#.into(),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            keys(&v),
            [
                "checkpoint_id",
                "created_at",
                "manifest",
                "model_name",
                "published",
                "regions",
                "round",
                "run_id",
                "sha256"
            ]
        );
        assert_eq!(v["manifest"]["round"], json!(1));
        c.manifest_json = String::new();
        assert_eq!(serde_json::to_value(&c).unwrap()["manifest"], Value::Null);
        c.manifest_json = "{not json".into();
        let e = serde_json::to_value(&c).unwrap_err().to_string();
        assert!(e.starts_with("checkpoint manifest_json is not JSON"), "{e}");
    }

    #[test]
    fn registry_states_are_their_names_and_an_unknown_origin_is_null() {
        let t = ModelTransitionRow {
            seq: 1,
            at: "2026-12-01T12:00:00.000Z".into(),
            region: "eu".into(),
            model_name: "m".into(),
            checkpoint_id: "run-1.r0002".into(),
            from: None,
            to: ModelState::Candidate,
            actor: "coordinator".into(),
            reason: "published".into(),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!((&v["from"], &v["to"]), (&Value::Null, &json!("candidate")));
        let t = ModelTransitionRow { from: Some(ModelState::RolledBack), ..t };
        assert_eq!(serde_json::to_value(&t).unwrap()["from"], json!("rolled_back"));
    }

    #[test]
    fn a_scope_without_a_budget_has_null_budget_and_remaining() {
        let s = ScopeSummary {
            scope: "m@eu".into(),
            epsilon_budget: None,
            delta: 1e-6,
            epsilon_spent: 0.5,
            epsilon_remaining: None,
            rounds_charged: 2,
            rounds_reserved: 0,
            accountant: "zcdp".into(),
            noise_multiplier: 1.0,
            clip_norm: 0.5,
            sampling_rate: 1.0,
            last_run: "run-1".into(),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!((&v["epsilon_budget"], &v["epsilon_remaining"]), (&Value::Null, &Value::Null));
        assert_eq!(v["epsilon_spent"], json!(0.5));
    }
}
