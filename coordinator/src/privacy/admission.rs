//! Budget admission and reservation: a private run is refused at submit time when it could
//! overspend a scope, and each private round reserves its cost in every scope it touches
//! before any client is asked to train (the guardrail "privacy cost is reserved before noise
//! is drawn and never under-counted, even across crashes").
//!
//! Concurrent runs may share a scope, so reading a scope's ledger and writing the
//! reservation must not interleave: [`Reservations`] serialises them within the process.

use super::{Budget, Budgets, LedgerEntry, LedgerState, PrivacyError, PrivacyScope, RoundMechanism};
use crate::checkpoint::ScopeEpsilon;
use crate::ids::{RegionId, RunId};
use crate::plan::{RunPlan, Sampling};
use crate::store::{LedgerFilter, Store, StoreError};
use chrono::Utc;
use std::sync::Arc;
use tracing::{info, warn};

/// Why admission or a reservation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reservations tried before a round whose ledger keeps growing under it fails.
const RESERVE_TRIES: u32 = 5;

/// The deployment's budgets plus the lock that makes check-then-reserve atomic.
#[derive(Debug, Clone)]
pub struct Reservations {
    budgets: Budgets,
    governance: crate::governance::Governance,
    lattice_slack: f64,
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// A private round's mechanism and what it has counted so far.
#[derive(Debug)]
pub struct PrivateRound {
    pub mechanism: RoundMechanism,
    /// Σ(2bᵢ − 1), bᵢ = [client i's update norm ≤ C] (adaptive clipping's count query).
    pub count_sum: i64,
    /// ε per scope after this round, as reserved.
    pub scopes: Vec<ScopeEpsilon>,
}

/// Which round attempt a reservation is for.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRef<'a> {
    pub run: &'a RunId,
    pub round: u32,
    pub attempt: u32,
}

impl Reservations {
    pub fn new(budgets: Budgets, lattice_slack: f64, governance: crate::governance::Governance) -> Self {
        Self { budgets, governance, lattice_slack, gate: Arc::new(tokio::sync::Mutex::new(())) }
    }

    pub fn lattice_slack(&self) -> f64 {
        self.lattice_slack
    }

    /// A scope's budget (refusing a scope without one) and its ledger so far.
    async fn scope_ledger(
        &self,
        store: &dyn Store,
        scope: &PrivacyScope,
    ) -> Result<(Budget, Vec<LedgerEntry>), AdmissionError> {
        let budget =
            self.governance.budget(&self.budgets, scope).ok_or_else(|| PrivacyError::NoBudget(scope.to_string()))?;
        let entries = store.list_ledger(&LedgerFilter { scope: Some(scope.clone()), run: None }).await?;
        Ok((budget, entries))
    }

    /// Refuses a private run at submit time when a scope it can touch (the plan's regions,
    /// or `known_regions` when it allows all) has no budget, or when all its rounds
    /// together would overspend one.
    ///
    /// # Errors
    /// [`PrivacyError::NoBudget`], [`PrivacyError::RunOverBudget`], store failures.
    pub async fn admit_run(
        &self,
        store: &dyn Store,
        plan: &RunPlan,
        known_regions: Vec<RegionId>,
    ) -> Result<(), AdmissionError> {
        let Some(p) = &plan.privacy else { return Ok(()) };
        let dim = plan.model.layout().total();
        let mechanism = RoundMechanism::new(p, dim, p.clipping.initial_norm(), self.lattice_slack)?;
        let costs = vec![mechanism.cost.clone(); plan.rounds as usize];
        let mut regions: Vec<RegionId> =
            if plan.regions.is_all() { known_regions } else { plan.regions.iter().cloned().collect() };
        regions.sort();
        regions.dedup();
        for region in regions {
            let scope = PrivacyScope::new(plan.model.name(), region);
            let (budget, entries) = self.scope_ledger(store, &scope).await?;
            if let Err(e) = super::ledger::admit(&scope, budget, &entries, &costs) {
                warn!(scope = %scope, error = %e, rounds = plan.rounds, "private run refused at submit");
                return Err(match e {
                    PrivacyError::OverBudget { scope, budget, delta, spent, cost } => {
                        PrivacyError::RunOverBudget { scope, budget, delta, spent, cost, rounds: plan.rounds }
                    }
                    other => other,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Builds a private round's mechanism and reserves its cost in every scope it touches
    /// (the regions of the selected clients; with Poisson sampling, of every eligible
    /// client, since the analysis covers them all) in one store transaction.
    ///
    /// # Errors
    /// A scope without budget or over it, invalid mechanism parameters, store failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn reserve_round(
        &self,
        store: &dyn Store,
        plan: &RunPlan,
        attempt: AttemptRef<'_>,
        dim: usize,
        clip_norm: f64,
        selected: &[RegionId],
        population: &[RegionId],
    ) -> Result<Option<PrivateRound>, AdmissionError> {
        let Some(p) = &plan.privacy else { return Ok(None) };
        let mechanism = RoundMechanism::new(p, dim, clip_norm, self.lattice_slack)?;
        let mut regions: Vec<RegionId> = match p.sampling {
            Sampling::Poisson { .. } => population.to_vec(),
            Sampling::Fixed => selected.to_vec(),
        };
        regions.sort();
        regions.dedup();
        let _serialised = self.gate.lock().await;
        // Another coordinator on the same database may reserve in a scope between this
        // read of the ledger and the write; the store then refuses the stale reservation
        // (nothing is written) and the round is admitted again on the grown ledger.
        let mut tries = 0;
        loop {
            tries += 1;
            let (entries, scopes) = self.round_entries(store, plan, attempt, &mechanism, clip_norm, &regions).await?;
            match store.reserve_privacy(&entries).await {
                Err(crate::store::StoreError::Conflict { what: "privacy ledger entry", .. })
                    if tries < RESERVE_TRIES =>
                {
                    warn!(run = %attempt.run, round = attempt.round, tries, "the ledger grew under this reservation; admitting again");
                }
                Err(e) => return Err(e.into()),
                Ok(()) => {
                    info!(run = %attempt.run, round = attempt.round, scopes = entries.len(), rho = mechanism.rho, "privacy cost reserved");
                    return Ok(Some(PrivateRound { mechanism, count_sum: 0, scopes }));
                }
            }
        }
    }

    /// The ledger entries (and resulting ε per scope) of one round's reservation, admitted
    /// against each scope's ledger as it is now.
    async fn round_entries(
        &self,
        store: &dyn Store,
        plan: &RunPlan,
        attempt: AttemptRef<'_>,
        mechanism: &RoundMechanism,
        clip_norm: f64,
        regions: &[RegionId],
    ) -> Result<(Vec<LedgerEntry>, Vec<ScopeEpsilon>), AdmissionError> {
        let Some(p) = &plan.privacy else { return Ok((Vec::new(), Vec::new())) };
        let mut entries = Vec::with_capacity(regions.len());
        let mut scopes = Vec::with_capacity(regions.len());
        for region in regions.iter().cloned() {
            let scope = PrivacyScope::new(plan.model.name(), region);
            let (budget, prior) = self.scope_ledger(store, &scope).await?;
            let after = super::ledger::admit(&scope, budget, &prior, std::slice::from_ref(&mechanism.cost))?;
            scopes.push(ScopeEpsilon { scope: scope.to_string(), epsilon: after, delta: budget.delta });
            entries.push(LedgerEntry {
                scope,
                run: attempt.run.clone(),
                round: attempt.round,
                attempt: attempt.attempt,
                state: LedgerState::Reserved,
                accountant: mechanism.accountant,
                cost: mechanism.cost.clone(),
                noise_multiplier: p.noise_multiplier,
                clip_norm,
                sampling_rate: mechanism.sampling_rate,
                delta: budget.delta,
                epsilon_cumulative: after,
                next_clip_norm: None,
                created_at: Utc::now(),
            });
        }
        Ok((entries, scopes))
    }
}
