//! The audit log's vocabulary and its hash chain.
//!
//! Every entry carries the sha256 of the entry before it, and its own hash covers that link
//! and every field, so an entry that is altered, inserted or deleted breaks the chain at or
//! after it. The chain is computed by whoever appends (the coordinator's store, inside the
//! transaction that writes the entry) and re-computed by whoever checks it (`fedra audit
//! verify`, on the entries exported over gRPC), from this one definition.
//!
//! What the chain does not show: the removal of the *newest* entries (the rest still chain
//! correctly). `fedra audit verify` prints the head (sequence number and hash) so that an
//! officer can keep it elsewhere and compare later.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Stored by name; names never change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A plan was submitted (before the policy decided).
    RunSubmitted,
    /// The policy admitted the run.
    RunAdmitted,
    /// The policy refused the run; the detail names the rule.
    RunRefused,
    /// The policy parked the run until approvals arrive.
    RunPendingApproval,
    /// An approver approved a parked run.
    RunApproved,
    /// An approver rejected a parked run.
    RunRejected,
    /// A run stopped at a round boundary because the policy in force no longer allows it.
    RunBlockedByPolicy,
    /// A blocked run resumed because the policy allows it again.
    RunResumed,
    /// A run was cancelled.
    RunCancelled,
    /// A policy set was applied (the detail carries its sha256).
    PolicyApplied,
    /// A policy set was refused (invalid), the old one kept.
    PolicyRefused,
    /// Privacy was reserved for a round.
    PrivacyReserved,
    /// Privacy was charged for a completed round.
    PrivacyCharged,
    /// A client update was refused (the detail says why).
    UpdateRefused,
    /// A checkpoint was published to a region.
    CheckpointPublished,
    /// A publication to a region was withheld by the policy.
    PublicationWithheld,
    /// A checkpoint was promoted (canary, serving).
    CheckpointPromoted,
    /// A checkpoint was rolled back.
    CheckpointRolledBack,
    /// A run's published checkpoint entered a region's model registry as a candidate, with
    /// the promotion gate's verdict there.
    CheckpointGated,
    /// An approver approved a checkpoint going live in a region (the policy's promotion
    /// rule requires approvals).
    CheckpointApproved,
    /// A carbon-aware round was deferred to a cleaner window (the detail has the times and
    /// intensities).
    RoundDeferred,
}

impl AuditAction {
    pub const ALL: [AuditAction; 21] = [
        AuditAction::RunSubmitted,
        AuditAction::RunAdmitted,
        AuditAction::RunRefused,
        AuditAction::RunPendingApproval,
        AuditAction::RunApproved,
        AuditAction::RunRejected,
        AuditAction::RunBlockedByPolicy,
        AuditAction::RunResumed,
        AuditAction::RunCancelled,
        AuditAction::PolicyApplied,
        AuditAction::PolicyRefused,
        AuditAction::PrivacyReserved,
        AuditAction::PrivacyCharged,
        AuditAction::UpdateRefused,
        AuditAction::CheckpointPublished,
        AuditAction::PublicationWithheld,
        AuditAction::CheckpointPromoted,
        AuditAction::CheckpointRolledBack,
        AuditAction::CheckpointGated,
        AuditAction::CheckpointApproved,
        AuditAction::RoundDeferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::RunSubmitted => "run_submitted",
            AuditAction::RunAdmitted => "run_admitted",
            AuditAction::RunRefused => "run_refused",
            AuditAction::RunPendingApproval => "run_pending_approval",
            AuditAction::RunApproved => "run_approved",
            AuditAction::RunRejected => "run_rejected",
            AuditAction::RunBlockedByPolicy => "run_blocked_by_policy",
            AuditAction::RunResumed => "run_resumed",
            AuditAction::RunCancelled => "run_cancelled",
            AuditAction::PolicyApplied => "policy_applied",
            AuditAction::PolicyRefused => "policy_refused",
            AuditAction::PrivacyReserved => "privacy_reserved",
            AuditAction::PrivacyCharged => "privacy_charged",
            AuditAction::UpdateRefused => "update_refused",
            AuditAction::CheckpointPublished => "checkpoint_published",
            AuditAction::PublicationWithheld => "publication_withheld",
            AuditAction::CheckpointPromoted => "checkpoint_promoted",
            AuditAction::CheckpointRolledBack => "checkpoint_rolled_back",
            AuditAction::CheckpointGated => "checkpoint_gated",
            AuditAction::CheckpointApproved => "checkpoint_approved",
            AuditAction::RoundDeferred => "round_deferred",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown action name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action {0:?}")]
pub struct UnknownAction(pub String);

impl FromStr for AuditAction {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(crate::identity::truncated(s)))
    }
}

/// An entry before the store numbers and chains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDraft {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The identity that acted (`fedra://…`), or `coordinator` for the coordinator itself.
    pub actor: String,
    pub action: AuditAction,
    /// The run concerned, if any.
    pub run: Option<String>,
    /// The region concerned, if any.
    pub region: Option<String>,
    /// What else a reader needs (the rule that decided, a hash, a reason), as text.
    pub detail: String,
}

impl AuditDraft {
    /// An entry about nothing in particular (no run, no region); see [`Self::run`] and
    /// [`Self::region`].
    pub fn new(at_ms: i64, actor: impl Into<String>, action: AuditAction, detail: impl Into<String>) -> Self {
        Self { at_ms, actor: actor.into(), action, run: None, region: None, detail: detail.into() }
    }

    /// About this run.
    pub fn run(mut self, run: impl fmt::Display) -> Self {
        self.run = Some(run.to_string());
        self
    }

    /// About this region.
    pub fn region(mut self, region: impl fmt::Display) -> Self {
        self.region = Some(region.to_string());
        self
    }
}

/// A stored entry: a draft with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3 … without gaps.
    pub seq: i64,
    #[serde(flatten)]
    pub draft: AuditDraft,
    /// The previous entry's `hash` ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// sha256 over `prev_hash` and every field, see [`entry_hash`].
    pub hash: String,
}

/// The hash of an entry with sequence number `seq` after `prev_hash`: sha256 over the
/// fields, each prefixed by its length so that no two field lists hash alike.
pub fn entry_hash(seq: i64, prev_hash: &str, draft: &AuditDraft) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"fedra-audit-v1");
    field(&seq.to_be_bytes());
    field(prev_hash.as_bytes());
    field(&draft.at_ms.to_be_bytes());
    field(draft.actor.as_bytes());
    field(draft.action.as_str().as_bytes());
    field(draft.run.as_deref().unwrap_or("\u{0}").as_bytes());
    field(draft.region.as_deref().unwrap_or("\u{0}").as_bytes());
    field(draft.detail.as_bytes());
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditEntry {
    /// Chains `draft` after `prev` (the current head, `None` for an empty log).
    pub fn chain(prev: Option<&AuditEntry>, draft: AuditDraft) -> Self {
        let (seq, prev_hash) = prev.map_or((1, GENESIS.to_string()), |p| (p.seq + 1, p.hash.clone()));
        let hash = entry_hash(seq, &prev_hash, &draft);
        Self { seq, draft, prev_hash, hash }
    }
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {seq}: its contents do not match its hash (altered)")]
    Altered { seq: i64 },
    #[error(
        "entry {seq}: it does not follow entry {prev_seq}'s hash (an entry was inserted, deleted or altered before it)"
    )]
    Unlinked { seq: i64, prev_seq: i64 },
    #[error("entry {seq}: expected sequence number {expected} (an entry was deleted or inserted)")]
    Gap { seq: i64, expected: i64 },
    #[error("entry {seq}: the first entry must follow the genesis hash")]
    BadGenesis { seq: i64 },
}

impl ChainBreak {
    /// The sequence number of the first bad entry.
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Altered { seq }
            | ChainBreak::Unlinked { seq, .. }
            | ChainBreak::Gap { seq, .. }
            | ChainBreak::BadGenesis { seq } => *seq,
        }
    }
}

/// Checks a whole log, in sequence order from entry 1. Returns the head (last entry's seq
/// and hash; `(0, GENESIS)` for an empty log) or the first break.
///
/// # Errors
/// The first entry that is altered, out of sequence or not linked to its predecessor.
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Result<(i64, String), ChainBreak> {
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        let expected = prev.map_or(1, |p| p.seq + 1);
        if e.seq != expected {
            return Err(ChainBreak::Gap { seq: e.seq, expected });
        }
        if entry_hash(e.seq, &e.prev_hash, &e.draft) != e.hash {
            return Err(ChainBreak::Altered { seq: e.seq });
        }
        match prev {
            None if e.prev_hash != GENESIS => return Err(ChainBreak::BadGenesis { seq: e.seq }),
            Some(p) if e.prev_hash != p.hash => return Err(ChainBreak::Unlinked { seq: e.seq, prev_seq: p.seq }),
            _ => {}
        }
        prev = Some(e);
    }
    Ok(prev.map_or((0, GENESIS.to_string()), |p| (p.seq, p.hash.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(i: i64) -> AuditDraft {
        AuditDraft {
            at_ms: 1_700_000_000_000 + i,
            actor: format!("fedra://scientist/s{i}"),
            action: AuditAction::ALL[(i as usize) % AuditAction::ALL.len()],
            run: (i % 2 == 0).then(|| format!("run-{i:012}")),
            region: (i % 3 == 0).then(|| "eu-west".to_string()),
            detail: format!("detail {i}"),
        }
    }

    fn log(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let e = AuditEntry::chain(out.last(), draft(i));
            out.push(e);
        }
        out
    }

    #[test]
    fn an_untouched_log_verifies_and_reports_its_head() {
        let l = log(5);
        assert_eq!(verify(&l), Ok((5, l[4].hash.clone())));
        assert_eq!(verify(&[]), Ok((0, GENESIS.to_string())));
    }

    #[test]
    fn an_edit_an_insertion_and_a_deletion_each_name_the_first_bad_entry() {
        let mut edited = log(5);
        edited[2].draft.detail = "nothing happened".into();
        assert_eq!(verify(&edited), Err(ChainBreak::Altered { seq: 3 }));

        let mut rehashed = log(5);
        rehashed[2].draft.actor = "fedra://admin/mallory".into();
        rehashed[2].hash = entry_hash(3, &rehashed[2].prev_hash, &rehashed[2].draft);
        assert_eq!(verify(&rehashed), Err(ChainBreak::Unlinked { seq: 4, prev_seq: 3 }));

        let mut deleted = log(5);
        deleted.remove(1);
        assert_eq!(verify(&deleted), Err(ChainBreak::Gap { seq: 3, expected: 2 }));

        let mut inserted = log(5);
        let fake = AuditEntry::chain(Some(&inserted[1]), draft(99));
        inserted.insert(2, fake);
        assert_eq!(verify(&inserted), Err(ChainBreak::Gap { seq: 3, expected: 4 }));
    }

    #[test]
    fn fields_are_separated_so_moving_bytes_between_them_changes_the_hash() {
        let a = AuditDraft { run: Some("ab".into()), region: Some("c".into()), ..draft(1) };
        let b = AuditDraft { run: Some("a".into()), region: Some("bc".into()), ..draft(1) };
        assert_ne!(entry_hash(1, GENESIS, &a), entry_hash(1, GENESIS, &b));
        let none = AuditDraft { run: None, ..draft(1) };
        let empty = AuditDraft { run: Some(String::new()), ..draft(1) };
        assert_ne!(entry_hash(1, GENESIS, &none), entry_hash(1, GENESIS, &empty));
    }

    #[test]
    fn action_names_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>(), Ok(a));
        }
        assert!("run_exploded".parse::<AuditAction>().is_err());
    }
}
