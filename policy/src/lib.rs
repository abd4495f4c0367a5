//! fedra's policy engine. Compliance officers review the TOML files of a policy set
//! (`policies/`, documented in `policies/README.md`); this crate parses them once into
//! validated rules ([`PolicySet::load`], reporting every problem with file, line and
//! column), decides with them, each decision naming the rule that decided
//! ([`decide`], [`PolicySet::admit`]), explains them in plain language
//! ([`PolicySet::explain`]) and compares two sets by meaning ([`diff()`]).
//!
//! No I/O beyond reading a policy directory, no async, no gRPC, no database: the
//! coordinator calls these pure functions at submit, round start, selection, export and
//! publication, and the `fedra policy` commands call them offline.
//!
//! Modules: [`raw`] (the file syntax, spanned), `compile` (raw → [`rules`]), [`set`] (the
//! loaded set and its hash), [`decide`], [`admit`], [`explain`], [`mod@diff`], [`error`].

pub mod admit;
mod compile;
pub mod decide;
pub mod diff;
pub mod error;
pub mod explain;
pub mod raw;
pub mod rules;
pub mod set;

pub use admit::{Finding, PlanFacts, PrivacyFacts, Verdict};
pub use decide::Refusal;
pub use diff::{Change, diff};
pub use error::{Location, PolicyError, PolicyErrors};
pub use raw::PolicySource;
pub use rules::{Action, RuleRef, Selector};
pub use set::{PolicySet, set_sha256};
