//! Who is calling: a role, a region where the role has one, and a name, as certified by
//! the deployment's CA. The identity travels in a certificate's SAN URI
//! (`fedra://client/eu-west/hospital-7`, `fedra://scientist/alice`) and is parsed into
//! [`Identity`] once, at the gRPC edge, after the TLS handshake verified the chain. Nothing
//! downstream ever takes a role, region or client id from a request field instead.

use crate::ids::{ClientId, IdError, RegionId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The URI scheme of fedra identities in certificates.
pub const SCHEME: &str = "fedra://";

/// What a certificate holder may do; the authorization table maps each RPC to roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A regional client sidecar: trains next to its region's data.
    Client,
    /// A coordinator (its server certificate; also how peers recognise each other).
    Coordinator,
    /// A regional aggregator, next to a region's clients.
    RegionalAggregator,
    /// A data scientist: submits, follows and cancels their own runs.
    Scientist,
    /// A compliance officer: reads everything, including privacy ledgers in full.
    Compliance,
    /// Approves what policies say needs approval.
    Approver,
    /// An inference node: reads the checkpoints published to its own region.
    Inference,
    /// An operator with every right.
    Admin,
}

impl Role {
    /// Every role, in declaration order (used by exhaustive authorization tests).
    pub const ALL: [Role; 8] = [
        Role::Client,
        Role::Coordinator,
        Role::RegionalAggregator,
        Role::Scientist,
        Role::Compliance,
        Role::Approver,
        Role::Inference,
        Role::Admin,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Coordinator => "coordinator",
            Role::RegionalAggregator => "regional-aggregator",
            Role::Scientist => "scientist",
            Role::Compliance => "compliance",
            Role::Approver => "approver",
            Role::Inference => "inference",
            Role::Admin => "admin",
        }
    }

    /// Roles bound to one region: their certificates must name it, the others' must not.
    pub const fn is_regional(self) -> bool {
        matches!(self, Role::Client | Role::RegionalAggregator | Role::Inference)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| IdentityError::UnknownRole(truncated(s)))
    }
}

/// An identity string or its parts are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity URI must start with {SCHEME}, got {0:?}")]
    Scheme(String),
    #[error(
        "unknown role {0:?} (expected client, coordinator, regional-aggregator, scientist, compliance, approver, inference or admin)"
    )]
    UnknownRole(String),
    #[error("role {role} needs a region: fedra://{role}/<region>/<name>")]
    MissingRegion { role: Role },
    #[error("role {role} has no region: fedra://{role}/<name>")]
    UnexpectedRegion { role: Role },
    #[error("identity URI {0:?} has the wrong number of path segments")]
    Shape(String),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// A certified caller. `name` is unique per role across the deployment; for clients it is
/// the client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity {
    role: Role,
    region: Option<RegionId>,
    name: ClientId,
}

impl Identity {
    /// # Errors
    /// A regional role without a region, a global role with one, or an invalid name.
    pub fn new(role: Role, region: Option<RegionId>, name: &str) -> Result<Self, IdentityError> {
        match (role.is_regional(), &region) {
            (true, None) => return Err(IdentityError::MissingRegion { role }),
            (false, Some(_)) => return Err(IdentityError::UnexpectedRegion { role }),
            _ => {}
        }
        Ok(Self { role, region, name: ClientId::new(name)? })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The region a regional role is bound to; `None` for global roles.
    pub fn region(&self) -> Option<&RegionId> {
        self.region.as_ref()
    }

    /// The holder's name within its role (a client's id for clients).
    pub fn name(&self) -> &ClientId {
        &self.name
    }

    /// The SAN URI form: `fedra://client/eu-west/hospital-7` or `fedra://scientist/alice`.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.region {
            Some(region) => write!(f, "{SCHEME}{}/{region}/{}", self.role, self.name),
            None => write!(f, "{SCHEME}{}/{}", self.role, self.name),
        }
    }
}

impl FromStr for Identity {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| IdentityError::Scheme(truncated(s)))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [role, name] => Identity::new(role.parse()?, None, name),
            [role, region, name] => Identity::new(role.parse()?, Some(RegionId::new(*region)?), name),
            _ => Err(IdentityError::Shape(truncated(s))),
        }
    }
}

impl TryFrom<String> for Identity {
    type Error = IdentityError;
    fn try_from(s: String) -> Result<Self, IdentityError> {
        s.parse()
    }
}

impl From<Identity> for String {
    fn from(id: Identity) -> String {
        id.to_string()
    }
}

/// At most 64 characters of untrusted input, for error messages and logs.
pub fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}… ({} chars)", s.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_and_global_identities_round_trip() {
        for uri in ["fedra://client/eu-west/hospital-7", "fedra://scientist/alice", "fedra://inference/us-east/node-1"]
        {
            let id: Identity = uri.parse().unwrap();
            assert_eq!(id.to_string(), uri);
        }
        let id: Identity = "fedra://client/eu-west/hospital-7".parse().unwrap();
        assert_eq!(id.role(), Role::Client);
        assert_eq!(id.region().unwrap().as_str(), "eu-west");
        assert_eq!(id.name().as_str(), "hospital-7");
    }

    #[test]
    fn malformed_identities_name_the_problem() {
        let err = |s: &str| s.parse::<Identity>().unwrap_err().to_string();
        assert!(err("https://client/eu/x").contains("must start with fedra://"));
        assert!(err("fedra://root/x").contains("unknown role"));
        assert!(err("fedra://client/hospital-7").contains("needs a region"));
        assert!(err("fedra://scientist/eu-west/alice").contains("has no region"));
        assert!(err("fedra://client/eu/a/b").contains("path segments"));
        assert!(err("fedra://client/eu/").contains("must not be empty"));
        assert!(err("fedra://client/eu/a b").contains("only letters"));
    }

    #[test]
    fn oversized_input_is_truncated_in_errors() {
        let long = format!("fedra://{}", "x".repeat(10_000));
        let msg = long.parse::<Identity>().unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}
