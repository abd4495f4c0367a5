//! The privacy ledger's domain: one entry per (scope, round attempt), and the arithmetic
//! that turns entries into ε spent and decides whether a round still fits its budget.
//!
//! Reservation discipline: a private round writes its entries as `Reserved` *before* any
//! client is asked to train and before any noise is drawn; they become `Charged` when the
//! aggregate is released (published). Reserved entries count exactly like charged ones and
//! are never removed, so a crash between the two can only make fedra over-count.

use super::PrivacyError;
use super::accountant::{self, Accountant, RoundCost};
use super::budget::{Budget, PrivacyScope};
use crate::ids::RunId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether a round's privacy cost is reserved (round in progress or interrupted) or
/// charged (its aggregate was released). Both count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    Reserved,
    Charged,
}

impl LedgerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Charged => "charged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "charged" => Some(Self::Charged),
            _ => None,
        }
    }
}

/// One round attempt's privacy cost in one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub scope: PrivacyScope,
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub state: LedgerState,
    pub accountant: Accountant,
    /// The round's cost: its ρ (zCDP) when no amplification is claimed, and its RDP curve.
    pub cost: RoundCost,
    /// z as planned (the effective multiplier after discretisation is in `cost`).
    pub noise_multiplier: f64,
    /// C used in this round.
    pub clip_norm: f64,
    /// q, the probability that a client takes part (1 with fixed selection).
    pub sampling_rate: f64,
    /// The scope's δ, at which `epsilon_cumulative` is stated.
    pub delta: f64,
    /// ε of the scope including this entry (and every entry before it).
    pub epsilon_cumulative: f64,
    /// C for the next round under adaptive clipping, set when the round is released.
    pub next_clip_norm: Option<f64>,
    pub created_at: DateTime<Utc>,
}

/// ε spent at `delta` by `entries` (all states count).
///
/// # Errors
/// Accounting failures (invalid δ).
pub fn spent(entries: &[LedgerEntry], delta: f64) -> Result<f64, PrivacyError> {
    if entries.is_empty() {
        return Ok(0.0);
    }
    let costs: Vec<RoundCost> = entries.iter().map(|e| e.cost.clone()).collect();
    Ok(accountant::epsilon(&costs, delta)?.epsilon)
}

/// Admits `cost` into a scope with `budget` and prior `entries`, returning ε after it.
///
/// # Errors
/// [`PrivacyError::OverBudget`] naming the scope, the budget, what is spent and what the
/// round would cost, when ε after the round would exceed the budget.
pub fn admit(
    scope: &PrivacyScope,
    budget: Budget,
    entries: &[LedgerEntry],
    cost: &[RoundCost],
) -> Result<f64, PrivacyError> {
    let before = spent(entries, budget.delta)?;
    let mut costs: Vec<RoundCost> = entries.iter().map(|e| e.cost.clone()).collect();
    costs.extend_from_slice(cost);
    let after = accountant::epsilon(&costs, budget.delta)?.epsilon;
    if after > budget.epsilon {
        return Err(PrivacyError::OverBudget {
            scope: scope.to_string(),
            budget: budget.epsilon,
            delta: budget.delta,
            spent: before,
            cost: after - before,
        });
    }
    Ok(after)
}

/// A scope's standing, for `fedra privacy status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeStatus {
    pub scope: PrivacyScope,
    pub budget: Option<Budget>,
    /// δ at which ε is stated: the budget's, else the latest entry's.
    pub delta: f64,
    pub epsilon_spent: f64,
    pub rounds_charged: u32,
    pub rounds_reserved: u32,
    pub latest: Option<LedgerEntry>,
}

impl ScopeStatus {
    /// Builds the status of `scope` from its entries (oldest first).
    ///
    /// # Errors
    /// Accounting failures.
    pub fn new(scope: PrivacyScope, budget: Option<Budget>, entries: &[LedgerEntry]) -> Result<Self, PrivacyError> {
        let delta = budget.map(|b| b.delta).or_else(|| entries.last().map(|e| e.delta)).unwrap_or(1e-6);
        Ok(Self {
            epsilon_spent: spent(entries, delta)?,
            rounds_charged: entries.iter().filter(|e| e.state == LedgerState::Charged).count() as u32,
            rounds_reserved: entries.iter().filter(|e| e.state == LedgerState::Reserved).count() as u32,
            latest: entries.last().cloned(),
            scope,
            budget,
            delta,
        })
    }

    /// ε left (never negative); `None` without a budget.
    pub fn epsilon_remaining(&self) -> Option<f64> {
        self.budget.map(|b| (b.epsilon - self.epsilon_spent).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RegionId;

    fn entry(rho: f64, state: LedgerState) -> LedgerEntry {
        LedgerEntry {
            scope: PrivacyScope::new("m", RegionId::new("eu").unwrap()),
            run: RunId::new("r1").unwrap(),
            round: 1,
            attempt: 1,
            state,
            accountant: Accountant::Zcdp,
            cost: RoundCost::gaussian(rho),
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            sampling_rate: 1.0,
            delta: 1e-6,
            epsilon_cumulative: 0.0,
            next_clip_norm: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn reserved_entries_count_and_over_budget_rounds_are_refused() {
        let scope = PrivacyScope::new("m", RegionId::new("eu").unwrap());
        let budget = Budget { epsilon: 3.0, delta: 1e-6 };
        let charged = entry(0.02, LedgerState::Charged);
        let reserved = entry(0.02, LedgerState::Reserved);
        let one = spent(std::slice::from_ref(&charged), 1e-6).unwrap();
        let two = spent(&[charged.clone(), reserved.clone()], 1e-6).unwrap();
        assert!(two > one * 1.3, "a reservation counts like a charge: {one} vs {two}");
        // Fill the scope until the next round no longer fits.
        let mut entries = vec![];
        let cost = RoundCost::gaussian(0.02);
        loop {
            match admit(&scope, budget, &entries, std::slice::from_ref(&cost)) {
                Ok(after) => {
                    assert!(after <= 3.0);
                    entries.push(entry(0.02, LedgerState::Reserved));
                }
                Err(PrivacyError::OverBudget { scope: s, budget: b, spent, cost: c, .. }) => {
                    assert_eq!(s, "m@eu");
                    assert_eq!(b, 3.0);
                    assert!(spent <= 3.0 && spent + c > 3.0, "spent {spent} + cost {c}");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(entries.len() < 10_000);
        }
        let status = ScopeStatus::new(scope, Some(budget), &entries).unwrap();
        assert_eq!(status.rounds_reserved as usize, entries.len());
        assert!(status.epsilon_remaining().unwrap() < 0.5);
    }
}
