//! Persistence behind one trait, so that the round engine does not know which database it
//! talks to. The embedded default is SQLite ([`SqliteStore`], schema in
//! `coordinator/migrations/`); [`PgStore`] keeps the same contract in PostgreSQL (schema in
//! `coordinator/migrations-postgres/`, the same versions in its dialect), for deployments
//! that run the database as a service. [`StoreLocation`] (the `store_url` setting) says
//! which one a coordinator opens. Both run the same contract tests. [`MemoryStore`]
//! (tests and the `testutils` feature) keeps the same contract in memory, for engine tests
//! that run on a paused clock.
//!
//! What is stored is everything needed to tell a user what happened after a restart:
//! runs and their plans, every round attempt and its outcome, who was selected and who
//! reported, the client registry and the checkpoint registry. Each engine transition that
//! must be atomic (a round completing: round row, participations, checkpoint, run progress)
//! is one method, executed in one transaction.
//!
//! Writes are guarded by the state they move from, so that a late or repeated write cannot
//! overwrite an outcome that is already on record (a rejected update turned reported, a
//! published round turned failed, a cancelled run resurrected):
//!
//! ```text
//! run:           queued ⇄ running ──▶ succeeded | failed | cancelled   (terminal: final)
//! round attempt: in_progress ──▶ done | failed | interrupted            (final)
//! participation: selected ──▶ reported | rejected | dropped             (final)
//! ```
//!
//! Outcomes: "not found" on a read is `Ok(None)`; a write that does not fit what is stored
//! is a domain refusal ([`StoreError::AlreadyExists`], [`StoreError::NotFound`],
//! [`StoreError::Conflict`]) that writes nothing, identical on every backend; the other
//! [`StoreError`]s are infrastructure failures. The contract suite in `contract.rs` pins
//! all of it, and every backend runs it.

#[cfg(test)]
pub(crate) mod contract;
pub mod lease;
#[cfg(any(test, feature = "testutils"))]
mod memory;
mod open;
mod postgres;
pub mod registry;
mod reservations;
mod sqlite;
mod upstream;

#[cfg(any(test, feature = "testutils"))]
pub use memory::MemoryStore;
pub use open::{OpenStore, PgUrl, StoreLocation};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use upstream::{UpstreamState, UpstreamTask};

use crate::ids::{CheckpointId, ClientId, RegionId, RunId};
use crate::plan::RunPlan;
use crate::privacy::{LedgerEntry, PrivacyScope};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use fedra_types::audit::{AuditDraft, AuditEntry};
use fedra_types::identity::Identity;
use fedra_types::metrics::TrainingMetrics;
use std::fmt;

/// Why a store call failed.
///
/// The first three variants are domain refusals: the call does not fit what is stored, nothing
/// was written, and retrying the same call cannot succeed. Their `what` is the kind of record
/// (`"run"`, `"round attempt"`, `"participation"`, `"checkpoint"`, `"checkpoint location"`,
/// `"evaluation"`, `"privacy ledger entry"`) and `id` its key, `/`-separated where it has
/// several parts (`<run>/<round>/<attempt>[/<client>]`). The others are infrastructure
/// failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with this key is stored already.
    #[error("{what} {id} already exists")]
    AlreadyExists { what: &'static str, id: String },
    /// The write names a record that is not stored.
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    /// The record's current state does not allow the write (e.g. completing a round attempt
    /// that already failed); `state` is that state as stored.
    #[error("cannot {action} {what} {id}: it is {state}")]
    Conflict { what: &'static str, id: String, action: String, state: String },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open store at {path}: {reason}")]
    Open { path: String, reason: String },
    /// This coordinator's lease was taken over: the write was refused, nothing was written,
    /// and no later write of this process will be applied (see [`lease`]).
    #[error(
        "write refused: this coordinator's fencing token {mine} is superseded by token {current} \
         (the coordinator lease is now held by {holder:?}); this coordinator no longer leads"
    )]
    Fenced { mine: lease::FencingToken, current: lease::FencingToken, holder: String },
}

impl StoreError {
    /// Whether the call was refused for what is stored (the caller must change the call),
    /// as opposed to the store failing (the caller may retry).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. } | Self::NotFound { .. } | Self::Conflict { .. })
    }
}

/// Database errors are infrastructure failures, except a stored value that does not decode
/// (an unknown state text, say), which is corruption. Unique and foreign-key violations are
/// turned into refusals where the backend knows which record the write was about.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { index, source } => Self::Corrupt(format!("column {index}: {source}")),
            sqlx::Error::Decode(source) => Self::Corrupt(source.to_string()),
            other => Self::Database(other),
        }
    }
}

mod refusal;

/// Why a participation ends dropped when the coordinator restarts mid-round.
const RESTARTED: &str = "coordinator restarted";

/// Which audit entries to list; all `None` = every entry. Entries come oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub run: Option<RunId>,
    pub region: Option<RegionId>,
    /// The acting identity, exactly as recorded (`fedra://scientist/alice`).
    pub actor: Option<String>,
    /// Entries at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Entries with a sequence number above this one (paging).
    pub after_seq: Option<i64>,
    /// At most this many entries.
    pub limit: Option<u32>,
}

/// Which ledger entries to list; all `None` = every entry.
#[derive(Debug, Clone, Default)]
pub struct LedgerFilter {
    pub scope: Option<PrivacyScope>,
    pub run: Option<RunId>,
}

/// Lifecycle of a run as persisted: the shared vocabulary's `fedra_types::run::RunState`,
/// re-exported so that `crate::store::RunState` keeps resolving.
pub use fedra_types::run::RunState;

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: RunId,
    pub plan: RunPlan,
    pub state: RunState,
    /// Rounds completed and published, in order; the next round is `completed_rounds + 1`.
    pub completed_rounds: u32,
    pub published_checkpoint: Option<CheckpointId>,
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Who submitted it, as certified; `None` when the coordinator ran with `--insecure`.
    /// Scientists see and cancel only runs they own.
    pub owner: Option<Identity>,
    /// The sha256 of the policy set the run was admitted under; `None` without a policy.
    pub policy_sha256: Option<String>,
    /// Distinct approvals a `pending_approval` run needs before it is queued (0: none).
    pub approvals_needed: u32,
}

/// Where a run's approvals stand after one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalCount {
    pub approvals: u32,
    pub needed: u32,
    /// The approval completed the count: the run moved from `pending_approval` to `queued`.
    pub queued: bool,
}

/// Outcome of one round attempt as persisted (stored as the snake_case variant name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RoundStatus {
    /// Started, not finished (selecting, training, aggregating or publishing).
    InProgress,
    Done,
    Failed,
    /// The coordinator stopped while the attempt was in progress; the round is re-run.
    Interrupted,
}

/// The stored text (for messages and logs).
impl fmt::Display for RoundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InProgress => "in_progress",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub status: RoundStatus,
    pub selected: u32,
    pub reported: u32,
    pub samples: u64,
    pub metrics: Option<TrainingMetrics>,
    pub checkpoint: Option<CheckpointId>,
    pub failure: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// A completed round's estimated energy and carbon per region (empty otherwise).
    pub energy: Vec<crate::carbon::RegionEnergy>,
    /// A completed round's measured cost per region (empty otherwise; see `crate::cost`).
    pub cost: Vec<crate::cost::RegionCost>,
}

/// What became of a selected client in one round attempt (stored as the snake_case variant
/// name). Only `Selected` is open; the other three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ParticipationStatus {
    Selected,
    Reported,
    /// Selected but did not report before the round closed.
    Dropped,
    /// Reported an update that was refused (e.g. over the clipping bound).
    Rejected,
}

/// The stored text (for messages and logs).
impl fmt::Display for ParticipationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Selected => "selected",
            Self::Reported => "reported",
            Self::Dropped => "dropped",
            Self::Rejected => "rejected",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipationRecord {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub client: ClientId,
    pub region: RegionId,
    pub status: ParticipationStatus,
    pub samples: u64,
    pub metrics: Option<TrainingMetrics>,
    pub update_norm: Option<f64>,
    /// Why a participation ended as it did, when that needs saying (a restart, a refusal,
    /// an update the coordinator re-clipped).
    pub detail: Option<String>,
}

/// A dataset as a client describes it (never the data itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatasetDescriptor {
    pub name: String,
    pub samples: u64,
    pub features: u32,
    pub classes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    pub id: ClientId,
    pub region: RegionId,
    pub datasets: Vec<DatasetDescriptor>,
    pub devices: Vec<String>,
    pub registered_at: DateTime<Utc>,
    /// Clients behind this participant: 1 for a client sidecar; for a regional aggregator
    /// registered with a global coordinator, its region's inventory (how many clients it can
    /// draw a cohort from, never which).
    pub members: u32,
}

impl ClientRecord {
    /// Total samples over the client's datasets: the most it may claim as a FedAvg weight.
    pub fn samples(&self) -> u64 {
        self.datasets.iter().map(|d| d.samples).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    pub id: CheckpointId,
    pub run: RunId,
    pub round: u32,
    pub model_name: String,
    pub sha256: String,
    pub parent: Option<CheckpointId>,
    /// The provenance manifest exactly as written next to the weights.
    pub manifest_json: String,
    /// `manifest.sig`: the coordinator's Ed25519 signature over `manifest_json`'s bytes
    /// (empty for checkpoints recorded before manifests were signed).
    pub signature_json: String,
    pub created_at: DateTime<Utc>,
    /// Where the checkpoint was published: per region, its weights' path (a directory store)
    /// or URL (`s3://bucket/key`), as text in `checkpoint_locations.path`.
    pub locations: Vec<(RegionId, crate::checkpoint::ArtifactLocation)>,
}

/// Sample-weighted mean of clients' held-out evaluations of one round's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRecord {
    pub run: RunId,
    pub round: u32,
    /// `None` for the mean over all regions.
    pub region: Option<RegionId>,
    pub clients: u32,
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// Filter for [`Store::list_checkpoints`]; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct CheckpointFilter {
    pub region: Option<RegionId>,
    pub model_name: Option<String>,
    pub run: Option<RunId>,
}

/// Everything that changes when a round completes, written in one transaction.
#[derive(Debug, Clone)]
pub struct RoundCompletion {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub reported: u32,
    pub samples: u64,
    pub metrics: TrainingMetrics,
    pub checkpoint: CheckpointRecord,
    /// The run's last round: the run succeeds and this checkpoint becomes its published one.
    pub final_round: bool,
    /// Audit entries for what this round did (publications, privacy charges), appended in
    /// the same transaction: the round is on record exactly when they are.
    pub audit: Vec<AuditDraft>,
    /// A private round's charge, made in this transaction: no crash leaves its cost reserved.
    pub charge: Option<PrivacyCharge>,
    /// The round's estimated energy and carbon per region (see `crate::carbon`).
    pub energy: Vec<crate::carbon::RegionEnergy>,
    /// The round's measured cost per region, priced when prices are configured.
    pub cost: Vec<crate::cost::RegionCost>,
}

/// What [`RoundCompletion::charge`] writes into the attempt's ledger entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyCharge {
    pub next_clip_norm: Option<f64>,
}

/// What [`Store::record_updates`] did with a batch: every update is either recorded or
/// refused, one by one, so that one stale update does not cost the others their record.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use = "refused updates are not on record"]
pub struct UpdatesOutcome {
    /// Updates written: their participation moved from selected to reported.
    pub recorded: usize,
    /// Updates not written, in batch order.
    pub refused: Vec<RefusedUpdate>,
}

/// An update [`Store::record_updates`] left unwritten, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedUpdate {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub client: ClientId,
    pub reason: UpdateRefusal,
}

/// Why an update was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateRefusal {
    /// No participation: the client was not selected for this round attempt (or the attempt
    /// does not exist).
    NotSelected,
    /// The participation already ended with this status (reported, rejected or dropped) and
    /// keeps it, with its samples, metrics and detail.
    Closed(ParticipationStatus),
}

impl fmt::Display for UpdateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSelected => f.write_str("the client is not selected for this round attempt"),
            Self::Closed(status) => write!(f, "the participation is already {status}"),
        }
    }
}

/// The persistence contract of the coordinator. Every method is atomic: it writes all it
/// says or, when it returns an error, nothing.
///
/// Every write lists its outcomes. The refusals ([`StoreError::AlreadyExists`],
/// [`StoreError::NotFound`], [`StoreError::Conflict`]) are the same on every backend; any
/// method may also fail with an infrastructure error ([`StoreError::Database`],
/// [`StoreError::Corrupt`]), which is not listed again below.
#[async_trait]
pub trait Store: registry::RegistryStore + lease::LeaseStore + Send + Sync + 'static {
    /// Stores a new run as given.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] (`"run"`) when a run with this id is stored.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Sets the run's state, and its failure reason when one is given (else the reason on
    /// record stays). A terminal state is final.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"run"`) for an unknown run; [`StoreError::Conflict`]
    /// (`"run"`) when the run is terminal already (succeeded, failed or cancelled), even when
    /// `state` is the same.
    async fn set_run_state(&self, run: &RunId, state: RunState, failure: Option<&str>) -> Result<(), StoreError>;
    async fn get_run(&self, run: &RunId) -> Result<Option<RunRecord>, StoreError>;
    /// All runs, oldest first.
    async fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// One page of runs, oldest first (by creation time, then id): at most `limit` runs
    /// that come after the run `after` (from the start when `None`; nothing when `after` is
    /// not a stored run), only those submitted by `owner` when given. Listings are served
    /// from here, page by page, never as one unbounded answer.
    async fn list_runs_page(
        &self,
        owner: Option<&Identity>,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError>;

    /// The attempt number a new attempt of `round` must use (1 for the first): above every
    /// attempt of the round on record, in the rounds or in the privacy ledger (a crash
    /// between reserving an attempt's cost and recording the attempt leaves only the
    /// reservation, which keeps counting under its own number).
    async fn next_attempt(&self, run: &RunId, round: u32) -> Result<u32, StoreError>;
    /// Records a round attempt as in progress with its selected clients, each participation
    /// `selected`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"run"`) for an unknown run; [`StoreError::Conflict`]
    /// (`"run"`) when the run is terminal; [`StoreError::AlreadyExists`] (`"round attempt"`)
    /// when the attempt is stored, (`"participation"`) when a client is selected twice.
    async fn begin_round(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        selected: &[(ClientId, RegionId)],
    ) -> Result<(), StoreError>;
    /// Marks selected clients as reported with their samples, metrics, update norm and
    /// detail, in one transaction (the engine batches them). The records' `status` and
    /// `region` are not read: the status written is `reported`, the region stays the one of
    /// the selection.
    ///
    /// Only a `selected` participation moves to `reported`; any other update is refused and
    /// changes nothing, while the rest of the batch is still recorded. Refused are an update
    /// for a client with no participation in that attempt ([`UpdateRefusal::NotSelected`]) and
    /// one whose participation already ended ([`UpdateRefusal::Closed`]): rejected (its
    /// refusal stays on record), dropped (the attempt ended without it), or reported (an
    /// update counts once, also twice in one batch). The attempt's `reported` and `samples`
    /// counters grow by the recorded updates only.
    ///
    /// # Errors
    /// Infrastructure failures only; then nothing of the batch is written.
    async fn record_updates(&self, updates: &[ParticipationRecord]) -> Result<UpdatesOutcome, StoreError>;
    /// Marks an in-progress attempt failed with `reason`; its selected clients that did not
    /// report become dropped.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"round attempt"`) for an unknown attempt;
    /// [`StoreError::Conflict`] (`"round attempt"`) when it is not in progress (a done
    /// round keeps its published outcome).
    async fn fail_round(&self, run: &RunId, round: u32, attempt: u32, reason: &str) -> Result<(), StoreError>;
    /// Completes an in-progress attempt (its totals and mean metrics), drops its selected
    /// clients that did not report, registers its checkpoint and advances the run to
    /// `round` completed rounds (and, for the final round, succeeded with this checkpoint
    /// published), atomically.
    ///
    /// # Errors
    /// In the order they are checked: [`StoreError::NotFound`] (`"round attempt"`) for an
    /// unknown attempt; [`StoreError::Conflict`] (`"round attempt"`) when it is not in
    /// progress; [`StoreError::Conflict`] (`"run"`) when the run is terminal, or when `round`
    /// is not its next round (rounds complete once each, in order);
    /// [`StoreError::AlreadyExists`] (`"checkpoint"`) when the checkpoint id is stored,
    /// (`"checkpoint location"`) when it lists a region twice.
    async fn complete_round(&self, completion: &RoundCompletion) -> Result<(), StoreError>;
    /// Marks every in-progress attempt interrupted (called once at start-up) and drops their
    /// selected clients; returns how many attempts.
    async fn interrupt_open_rounds(&self) -> Result<u64, StoreError>;
    /// Every attempt of a run, ordered by round then attempt.
    async fn list_rounds(&self, run: &RunId) -> Result<Vec<RoundRecord>, StoreError>;
    /// Every participation of a run, ordered by round, attempt, client.
    async fn list_participations(&self, run: &RunId) -> Result<Vec<ParticipationRecord>, StoreError>;

    /// Marks a run succeeded with `published` as its published checkpoint (used when the
    /// last round's evaluation ends after the round itself was committed).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"run"`) for an unknown run; [`StoreError::Conflict`]
    /// (`"run"`) when the run is terminal already.
    async fn finish_run(&self, run: &RunId, published: &CheckpointId) -> Result<(), StoreError>;
    /// Stores a round's evaluation results (overall and per region), atomically.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"run"`) for an unknown run; [`StoreError::AlreadyExists`]
    /// (`"evaluation"`, id `<run>/<round>/<region or "all">`) when a result for the same run,
    /// round and region is stored or comes twice in `results`.
    async fn record_evaluations(&self, results: &[EvaluationRecord]) -> Result<(), StoreError>;
    /// Every evaluation result of a run, ordered by round then region (overall first).
    async fn list_evaluations(&self, run: &RunId) -> Result<Vec<EvaluationRecord>, StoreError>;

    /// Marks a selected client's update as refused, with the reason (audit trail).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"participation"`) when the client has no participation in
    /// the attempt; [`StoreError::Conflict`] (`"participation"`) when it is not `selected`
    /// any more (reported, dropped or rejected already: the first outcome stays).
    async fn reject_update(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        client: &ClientId,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// Writes a round's privacy reservations (one per scope) in one transaction, if each
    /// entry's `epsilon_cumulative` is still at least its scope's ε with it: checked and
    /// written under a lock that keeps other reservations of the scope out, so that
    /// coordinators sharing the database cannot overspend a budget (`reservations.rs`).
    ///
    /// # Errors
    /// Entry by entry: [`StoreError::NotFound`] (`"run"`) for an unknown run;
    /// [`StoreError::AlreadyExists`] (`"privacy ledger entry"`, id
    /// `<scope>/<run>/<round>/<attempt>`) when an entry for the same scope and round attempt
    /// is stored or comes twice in `entries`. Then [`StoreError::Conflict`] (`"privacy ledger
    /// entry"`, same id) for the first entry that states less ε than its scope spends with
    /// it: another reservation of the scope was written after the caller read the ledger.
    async fn reserve_privacy(&self, entries: &[LedgerEntry]) -> Result<(), StoreError>;
    /// Turns a round attempt's reservations into charges (its aggregate was released),
    /// recording the clipping norm for the next round. Returns the rows changed: 0 when
    /// nothing of that attempt is reserved (unknown, or charged already).
    async fn charge_privacy(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        next_clip_norm: Option<f64>,
    ) -> Result<u64, StoreError>;
    /// Ledger entries, oldest first, of one scope, one run, or all.
    async fn list_ledger(&self, filter: &LedgerFilter) -> Result<Vec<LedgerEntry>, StoreError>;

    /// Stores a client, replacing the record of the same id.
    async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// All clients, ordered by id.
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    /// A checkpoint with its locations, ordered by region.
    async fn get_checkpoint(&self, id: &CheckpointId) -> Result<Option<CheckpointRecord>, StoreError>;
    /// Matching checkpoints, ordered by run creation, then round.
    async fn list_checkpoints(&self, filter: &CheckpointFilter) -> Result<Vec<CheckpointRecord>, StoreError>;

    /// Records `approver`'s approval of a `pending_approval` run; the approval that reaches
    /// the run's `approvals_needed` moves it to `queued` in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"run"`); [`StoreError::Conflict`] when the run is not
    /// pending approval; [`StoreError::AlreadyExists`] (`"approval"`, id `<run>/<approver>`)
    /// when this approver approved it already.
    async fn approve_run(&self, run: &RunId, approver: &str) -> Result<ApprovalCount, StoreError>;

    /// Appends entries to the audit log, in order, each chained to the one before
    /// (`fedra_types::audit::AuditEntry::chain`), atomically: all or none. Concurrent appends
    /// are serialised, so the chain never forks. Returns the stored entries.
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditEntry>, StoreError>;
    /// Matching audit entries, oldest first (by sequence number).
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;

    /// A regional aggregator's local run for one cohort task of its global coordinator, in
    /// one transaction: the run, its initial checkpoint (the global model it was sent, whose
    /// run must be `run`) and the task's record, in state `training`.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] (`"upstream task"`) when the task is stored (it is served
    /// once), (`"run"`) or (`"checkpoint"`) as [`Self::create_run`] and rounds do.
    async fn create_cohort_run(
        &self,
        run: &RunRecord,
        initial: &CheckpointRecord,
        task: &UpstreamTask,
    ) -> Result<(), StoreError>;
    /// Every upstream task, oldest first.
    async fn list_upstream_tasks(&self) -> Result<Vec<UpstreamTask>, StoreError>;
    /// Ends an upstream task (`pushed` or `abandoned`) with an optional detail.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (`"upstream task"`); [`StoreError::Conflict`] when it has
    /// ended already.
    async fn end_upstream_task(
        &self,
        task: &crate::ids::TaskId,
        state: UpstreamState,
        detail: Option<&str>,
    ) -> Result<(), StoreError>;
}
