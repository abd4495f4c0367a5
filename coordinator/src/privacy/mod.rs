//! Differential privacy (client-level: neighbouring datasets differ by one client's whole
//! contribution): per-round mechanisms, scopes and budgets, and the ledger's domain. No SQL
//! and no protobuf here. The math lives in `fedra-dp`: the noise sampler (shared with the
//! clients) in `fedra_dp::noise`, and the accountant (zCDP through OpenDP, Rényi DP for
//! Poisson-sampled rounds), re-exported here as [`accountant`].

pub mod admission;
pub mod budget;
pub mod ledger;
pub mod mechanism;
pub mod release;

/// Re-exported so that `crate::privacy::accountant::X` keeps naming the accountant.
pub use fedra_dp::accountant;

pub use budget::{Budget, Budgets, PrivacyScope};
pub use ledger::{LedgerEntry, LedgerState, ScopeStatus};
pub use mechanism::RoundMechanism;

/// A privacy rule refused something, or accounting failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    #[error(
        "privacy budget of scope {scope} would be exceeded: budget ε={budget} at δ={delta}, spent ε={spent:.4}, this would cost ε={cost:.4} more"
    )]
    OverBudget { scope: String, budget: f64, delta: f64, spent: f64, cost: f64 },
    #[error(
        "privacy budget of scope {scope} would be exceeded by this run: budget ε={budget} at δ={delta}, spent ε={spent:.4}, its {rounds} rounds would cost ε={cost:.4} more"
    )]
    RunOverBudget { scope: String, budget: f64, delta: f64, spent: f64, cost: f64, rounds: u32 },
    #[error("no privacy budget is configured for scope {0}: add a [[privacy.budgets]] rule to the coordinator config")]
    NoBudget(String),
    #[error("privacy accounting: {0}")]
    Accounting(String),
    #[error("privacy noise: {0}")]
    Noise(String),
    #[error("update norm {norm} exceeds the clipping bound {bound} (tolerance included)")]
    OverClipBound { norm: f64, bound: f64 },
    #[error(
        "reported norm before clipping {reported} is below the norm {received} of the update received: \
         adaptive clipping's vote would not be the client's"
    )]
    NormUnderReported { reported: f64, received: f64 },
}

impl From<accountant::AccountingError> for PrivacyError {
    fn from(e: accountant::AccountingError) -> Self {
        Self::Accounting(e.to_string())
    }
}

impl From<fedra_dp::noise::NoiseError> for PrivacyError {
    fn from(e: fedra_dp::noise::NoiseError) -> Self {
        Self::Noise(e.to_string())
    }
}
