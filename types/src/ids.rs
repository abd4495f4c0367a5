//! Identifier newtypes. IDs are validated once, where they enter the system, so that the
//! rest of the code never handles a raw string that might be empty or malformed. They live
//! in the shared vocabulary because every side names runs, clients, regions, tasks and
//! checkpoints, and must agree on what a valid one looks like.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An identifier failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Accepts 1..=128 chars of `[A-Za-z0-9._:-]`: safe in paths, SQL keys and log lines.
fn check(kind: &'static str, value: &str) -> Result<(), IdError> {
    // The value is echoed into error messages and logs: never whole when it is huge.
    let err = |reason| IdError { kind, value: crate::identity::truncated(value), reason };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.len() > 128 {
        return Err(err("longer than 128 characters"));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')) {
        return Err(err("only letters, digits, '.', '_', '-' and ':' are allowed"));
    }
    if value.starts_with('.') {
        return Err(err("must not start with '.'"));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// # Errors
            /// [`IdError`] when the value is empty, too long or has unsafe characters.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A run: `run-` followed by a random 12-hex-digit suffix.
    RunId, "run id"
);
string_id!(
    /// A client sidecar, chosen by its operator (unique across the deployment).
    ClientId, "client id"
);
string_id!(
    /// A data-residency region such as `eu` or `us-east`.
    RegionId, "region"
);
string_id!(
    /// One assignment of a client to one round attempt.
    TaskId, "task id"
);
string_id!(
    /// A checkpoint: `<run id>.r<round>`.
    CheckpointId, "checkpoint id"
);

impl RunId {
    /// A fresh random run id.
    pub fn generate() -> Self {
        let u = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("run-{}", &u[..12]))
    }
}

impl TaskId {
    /// A fresh random task id, unguessable so that a client cannot push for another's task.
    pub fn generate() -> Self {
        Self(format!("task-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl CheckpointId {
    /// The checkpoint written by `round` of `run`.
    pub fn for_round(run: &RunId, round: RoundNumber) -> Self {
        Self(format!("{}.r{:04}", run.0, round.0))
    }
}

/// A 1-based round number within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoundNumber(pub u32);

impl fmt::Display for RoundNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl RoundNumber {
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_unsafe_values() {
        assert!(ClientId::new("eu-1").is_ok());
        assert!(ClientId::new("").is_err());
        assert!(ClientId::new("../etc").is_err());
        assert!(RegionId::new("eu west").is_err());
        assert!(RegionId::new("x".repeat(129)).is_err());
        let run = RunId::generate();
        assert!(RunId::new(run.to_string()).is_ok());
        assert_eq!(CheckpointId::for_round(&run, RoundNumber(3)).as_str(), format!("{run}.r0003"));
    }
}
