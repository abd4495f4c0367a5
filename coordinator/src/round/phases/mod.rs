//! The phases of one round attempt, one file each. Every phase function takes the phase's
//! own state and the run's [`RunCore`](super::run::RunCore) and returns a [`Transition`];
//! the run actor applies it. `Done` and `Failed` are states like the others: the actor
//! settles them (next round, end of run, failure records) in one place.
//!
//! ```text
//!   (Deferred ──clean window──▶) Selecting ──offer──▶ Training ──target/quorum──▶ Aggregating ──▶ Publishing ──┬──▶ Done
//!      │ give up            │ quorum unreachable         │ error       │  │ error    └─▶ Evaluating ──▶ Done
//!      └──────────────▶ Failed ◀─────────────────────────┴─────────────┼──┘
//!                                                                      └──▶ Released ──▶ (next round's) Selecting
//! ```
//!
//! Released: a round that is neither the last nor evaluated hands its model to the next
//! round while its checkpoint is written and committed (see [`publishing`]).

pub(super) mod aggregating;
pub(super) mod evaluating;
pub(super) mod publishing;
pub(super) mod selecting;
pub(super) mod training;

use super::PhaseName;
use crate::ids::{ClientId, RegionId, TaskId};
use crate::store::RunState;
use std::collections::HashMap;

/// The typed phase of a run's current round attempt.
#[derive(Debug)]
pub(super) enum Phase {
    /// A carbon-aware round waiting for its cleaner window (nothing is recorded yet).
    Deferred(selecting::Deferred),
    Selecting(selecting::Selecting),
    Training(training::Training),
    Aggregating(aggregating::Aggregating),
    Publishing(publishing::Publishing),
    /// The round's model went to the next round while its checkpoint is written (the run's
    /// `releasing`); the actor starts the next round.
    Released,
    Evaluating(evaluating::Evaluating),
    /// The round is committed; the actor starts the next one or ends the run.
    Done {
        final_round: bool,
    },
    /// The attempt ended without a checkpoint; the actor records it and ends the run.
    Failed(Failure),
}

/// How and why an attempt failed.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub reason: String,
    /// `Failed`, or `Cancelled` when a user asked.
    pub state: RunState,
}

impl Failure {
    pub fn failed(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), state: RunState::Failed }
    }
}

/// What a phase function decided.
#[derive(Debug)]
pub(super) enum Transition {
    Stay,
    /// Boxed: phases carry their working state, and most transitions are `Stay`.
    To(Box<Phase>),
}

impl Transition {
    pub fn to(phase: Phase) -> Self {
        Self::To(Box::new(phase))
    }

    pub fn fail(reason: impl Into<String>) -> Self {
        Self::to(Phase::Failed(Failure::failed(reason)))
    }
}

impl Phase {
    pub fn name(&self) -> PhaseName {
        match self {
            Phase::Deferred(_) => PhaseName::Deferred,
            Phase::Selecting(_) => PhaseName::Selecting,
            Phase::Training(_) => PhaseName::Training,
            Phase::Aggregating(_) => PhaseName::Aggregating,
            Phase::Publishing(_) | Phase::Released => PhaseName::Publishing,
            Phase::Evaluating(_) => PhaseName::Evaluating,
            Phase::Done { .. } => PhaseName::Done,
            Phase::Failed(_) => PhaseName::Failed,
        }
    }

    /// The tasks handed out in this phase, if it hands out tasks.
    pub fn assignments(&self) -> Option<&Assignments> {
        match self {
            Phase::Training(t) => Some(&t.assignments),
            Phase::Evaluating(e) => e.assignments(),
            _ => None,
        }
    }

    pub fn assignments_mut(&mut self) -> Option<&mut Assignments> {
        match self {
            Phase::Training(t) => Some(&mut t.assignments),
            Phase::Evaluating(e) => e.assignments_mut(),
            _ => None,
        }
    }
}

/// Where one client's task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AssignmentState {
    Assigned,
    Reported,
    /// The client went away, or its stream was full: it may not report any more.
    Dropped,
    /// Its update was refused for good (over the clipping bound in reject mode).
    Rejected,
}

#[derive(Debug)]
pub(super) struct Assignment {
    pub client: ClientId,
    pub region: RegionId,
    pub state: AssignmentState,
    /// Samples the client registered when it was leased: the most it may claim.
    pub registered_samples: u64,
    /// Clients behind the participant (a regional aggregator's inventory; 1 for a client):
    /// the most contributors its update may claim.
    pub members: u32,
}

/// The tasks of a phase that hands out tasks, by task id.
#[derive(Debug, Default)]
pub(super) struct Assignments(pub HashMap<TaskId, Assignment>);

impl Assignments {
    pub fn outstanding(&self) -> usize {
        self.0.values().filter(|a| a.state == AssignmentState::Assigned).count()
    }

    /// Client updates the still-assigned tasks could bring: one per client, a cohort's
    /// target per regional aggregator.
    pub fn outstanding_clients(&self) -> usize {
        self.0.values().filter(|a| a.state == AssignmentState::Assigned).map(|a| a.members.max(1) as usize).sum()
    }

    /// Tasks still assigned, for abandoning them.
    pub fn still_assigned(&self) -> Vec<TaskId> {
        self.0.iter().filter(|(_, a)| a.state == AssignmentState::Assigned).map(|(t, _)| t.clone()).collect()
    }

    pub fn ids(&self) -> Vec<TaskId> {
        self.0.keys().cloned().collect()
    }

    /// Marks the tasks of clients that went away as dropped; returns those that were
    /// still assigned.
    pub fn drop_gone(&mut self, tasks: &[TaskId], round: u32) -> Vec<TaskId> {
        let mut dropped = Vec::new();
        for task in tasks {
            if let Some(a) = self.0.get_mut(task)
                && a.state == AssignmentState::Assigned
            {
                tracing::warn!(client = %a.client, round, "selected client went away");
                metrics::counter!("fedra_clients_dropped_total", "reason" => "gone").increment(1);
                a.state = AssignmentState::Dropped;
                dropped.push(task.clone());
            }
        }
        dropped
    }
}
