//! Who may call what: the certified caller of each request and the one authorization table.
//!
//! Identity comes only from the verified client certificate (see `fedra_pki`): the TLS
//! handshake checked the chain, the validity period and the CRL; [`Gate::admit`] reads the
//! `fedra://` identity, re-checks revocation and expiry (a connection can outlive either),
//! and looks the (role, RPC) pair up in [`access`]. Handlers then apply what the table's
//! [`Access`] leaves to them: ownership of runs, a region's checkpoints, a summary of the
//! privacy ledger, a client's own tasks.
//!
//! With `--insecure` (loopback only) there are no certificates: every caller is
//! [`Caller::Insecure`], allowed everything, and request fields are trusted as before.
//! That mode exists for local debugging and says so loudly at start.

use super::ApiError;
use fedra_pki::{PeerCert, Revocations};
use fedra_types::identity::{Identity, Role, truncated};
use fedra_types::ids::{ClientId, RegionId};
use std::sync::Arc;
use tonic::Request;
use tracing::warn;

/// Every RPC the coordinator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    SubmitRun,
    GetRun,
    ListRuns,
    WatchRun,
    CancelRun,
    Register,
    Subscribe,
    Heartbeat,
    FetchModel,
    PushUpdate,
    ReserveUpload,
    ReportEvaluation,
    PrivacyStatus,
    ListCheckpoints,
    FetchCheckpoint,
    ApproveRun,
    RejectRun,
    ApplyPolicy,
    ListAudit,
    ListModels,
    ModelHistory,
    WatchServing,
    PromoteModel,
    RollbackModel,
    ReportServing,
}

impl Rpc {
    pub const ALL: [Rpc; 25] = [
        Rpc::SubmitRun,
        Rpc::GetRun,
        Rpc::ListRuns,
        Rpc::WatchRun,
        Rpc::CancelRun,
        Rpc::Register,
        Rpc::Subscribe,
        Rpc::Heartbeat,
        Rpc::FetchModel,
        Rpc::PushUpdate,
        Rpc::ReserveUpload,
        Rpc::ReportEvaluation,
        Rpc::PrivacyStatus,
        Rpc::ListCheckpoints,
        Rpc::FetchCheckpoint,
        Rpc::ApproveRun,
        Rpc::RejectRun,
        Rpc::ApplyPolicy,
        Rpc::ListAudit,
        Rpc::ListModels,
        Rpc::ModelHistory,
        Rpc::WatchServing,
        Rpc::PromoteModel,
        Rpc::RollbackModel,
        Rpc::ReportServing,
    ];
}

/// What a role may do with an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Denied,
    /// Only on what the caller owns: its own runs (scientists), its own client id and tasks
    /// (clients).
    Own,
    /// Only on what was published to the caller's region (inference nodes).
    Region,
    /// Aggregates without the details (privacy: budgets and spend, not the accountant's
    /// parameters or which run spent it).
    Summary,
    Full,
}

/// The authorization table: one `match`, so adding a role or an RPC does not compile until
/// every pair is decided. `auth::tests` spells the whole matrix out once more.
pub const fn access(role: Role, rpc: Rpc) -> Access {
    use Access::*;
    use Role::*;
    match rpc {
        Rpc::SubmitRun => match role {
            Scientist | Admin => Full,
            _ => Denied,
        },
        Rpc::GetRun | Rpc::ListRuns | Rpc::WatchRun => match role {
            Scientist => Own,
            Compliance | Approver | Admin => Full,
            _ => Denied,
        },
        Rpc::CancelRun => match role {
            Scientist => Own,
            Admin => Full,
            _ => Denied,
        },
        Rpc::Register
        | Rpc::Subscribe
        | Rpc::Heartbeat
        | Rpc::FetchModel
        | Rpc::PushUpdate
        | Rpc::ReserveUpload
        | Rpc::ReportEvaluation => {
            // The tier decides which of the two may register (FleetApi::check_tier).
            match role {
                Client | RegionalAggregator => Own,
                _ => Denied,
            }
        }
        Rpc::PrivacyStatus => match role {
            Compliance | Admin => Full,
            Scientist | Approver => Summary,
            _ => Denied,
        },
        Rpc::ListCheckpoints | Rpc::FetchCheckpoint | Rpc::ListModels | Rpc::ModelHistory | Rpc::WatchServing => {
            match role {
                Scientist | Compliance | Approver | Admin => Full,
                Inference => Region,
                _ => Denied,
            }
        }
        // Changing what serves is an approval: never the scientist who trained it.
        Rpc::PromoteModel | Rpc::RollbackModel => match role {
            Approver | Admin => Full,
            _ => Denied,
        },
        // An inference node reports its own region's live statistics.
        Rpc::ReportServing => match role {
            Inference => Region,
            Admin => Full,
            _ => Denied,
        },
        // The policy set's [roles] narrows these further (approve, read_audit).
        Rpc::ApproveRun | Rpc::RejectRun => match role {
            Approver | Admin => Full,
            _ => Denied,
        },
        Rpc::ApplyPolicy => match role {
            Admin => Full,
            _ => Denied,
        },
        Rpc::ListAudit => match role {
            Compliance | Admin => Full,
            _ => Denied,
        },
    }
}

/// The caller of one request, after authentication and the table lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Certified {
        identity: Identity,
        access: Access,
    },
    /// `--insecure`: no identity, everything allowed, request fields trusted.
    Insecure,
}

impl Caller {
    /// The certified identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Certified { identity, .. } => Some(identity),
            Caller::Insecure => None,
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Caller::Certified { access, .. } => *access,
            Caller::Insecure => Access::Full,
        }
    }

    /// The client id a fleet request acts as: the certificate's name, which the request's
    /// own field must repeat or leave empty. Insecure callers are taken at their word.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a malformed field, PERMISSION_DENIED when it names someone else.
    pub fn client_id(&self, field: &str, claimed: &str) -> Result<ClientId, ApiError> {
        match self {
            Caller::Insecure => super::convert::client_id(field, claimed),
            Caller::Certified { identity, .. } => {
                if !claimed.is_empty() && claimed != identity.name().as_str() {
                    return Err(ApiError::Denied(format!(
                        "{field} {:?} is not the caller: the certificate says {identity}",
                        truncated(claimed)
                    )));
                }
                Ok(identity.name().clone())
            }
        }
    }

    /// The region a client registers in: the certificate's, which the request's field must
    /// repeat or leave empty.
    ///
    /// # Errors
    /// As [`Self::client_id`].
    pub fn region(&self, field: &str, claimed: &str) -> Result<RegionId, ApiError> {
        match self.identity().and_then(Identity::region) {
            None => super::convert::region_id(field, claimed),
            Some(region) => {
                if !claimed.is_empty() && claimed != region.as_str() {
                    return Err(ApiError::Denied(format!(
                        "{field} {:?} is not the caller's region: the certificate says {}",
                        truncated(claimed),
                        self.identity().expect("certified")
                    )));
                }
                Ok(region.clone())
            }
        }
    }

    /// Whether the caller may act on a run owned by `owner`.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming the owner's role, not the owner.
    pub fn check_owner(&self, what: &str, owner: Option<&Identity>) -> Result<(), ApiError> {
        match self {
            Caller::Insecure | Caller::Certified { access: Access::Full, .. } => Ok(()),
            Caller::Certified { identity, access: Access::Own } if owner == Some(identity) => Ok(()),
            Caller::Certified { identity, .. } => {
                Err(ApiError::Denied(format!("{what} was not submitted by {identity}; only its owner or an admin may")))
            }
        }
    }
}

/// Authenticates and authorizes requests. Shared by the four services.
#[derive(Debug, Clone)]
pub struct Gate {
    /// `None`: the coordinator runs with `--insecure`.
    revocations: Option<Arc<Revocations>>,
}

impl Gate {
    pub fn mutual(revocations: Arc<Revocations>) -> Self {
        Self { revocations: Some(revocations) }
    }

    pub fn insecure() -> Self {
        Self { revocations: None }
    }

    /// The request's caller, if its role may call `rpc` at all.
    ///
    /// # Errors
    /// UNAUTHENTICATED without a usable certificate, PERMISSION_DENIED when the role may
    /// not call `rpc`. Both are logged with the caller.
    pub fn admit<T>(&self, req: &Request<T>, rpc: Rpc) -> Result<Caller, ApiError> {
        let Some(revocations) = &self.revocations else { return Ok(Caller::Insecure) };
        let Some(der) = req.peer_certs().and_then(|chain| chain.first().map(|c| c.as_ref().to_vec())) else {
            warn!(?rpc, "request without a client certificate refused");
            return Err(ApiError::Unauthenticated(fedra_pki::PeerError::NoCertificate.to_string()));
        };
        let peer = PeerCert::from_der(&der).map_err(|e| {
            warn!(?rpc, error = %e, "request with an unusable certificate refused");
            ApiError::Unauthenticated(e.to_string())
        })?;
        revocations.check(&peer).map_err(|e| {
            warn!(?rpc, caller = %peer.identity, error = %e, "request refused");
            ApiError::Unauthenticated(e.to_string())
        })?;
        let access = access(peer.identity.role(), rpc);
        if access == Access::Denied {
            warn!(?rpc, caller = %peer.identity, "role not allowed to call this RPC");
            return Err(ApiError::Denied(format!("role {} may not call {rpc:?}", peer.identity.role())));
        }
        Ok(Caller::Certified { identity: peer.identity, access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole matrix, as a reviewer reads it: one row per RPC, one column per role in
    /// [`Role::ALL`] order (client, coordinator, regional-aggregator, scientist, compliance,
    /// approver, inference, admin). `-` denied, `O` own, `R` region, `S` summary, `F` full.
    const MATRIX: [(Rpc, &str); 25] = [
        (Rpc::SubmitRun, "---F---F"),
        (Rpc::GetRun, "---OFF-F"),
        (Rpc::ListRuns, "---OFF-F"),
        (Rpc::WatchRun, "---OFF-F"),
        (Rpc::CancelRun, "---O---F"),
        (Rpc::Register, "O-O-----"),
        (Rpc::Subscribe, "O-O-----"),
        (Rpc::Heartbeat, "O-O-----"),
        (Rpc::FetchModel, "O-O-----"),
        (Rpc::PushUpdate, "O-O-----"),
        (Rpc::ReserveUpload, "O-O-----"),
        (Rpc::ReportEvaluation, "O-O-----"),
        (Rpc::PrivacyStatus, "---SFS-F"),
        (Rpc::ListCheckpoints, "---FFFRF"),
        (Rpc::FetchCheckpoint, "---FFFRF"),
        (Rpc::ApproveRun, "-----F-F"),
        (Rpc::RejectRun, "-----F-F"),
        (Rpc::ApplyPolicy, "-------F"),
        (Rpc::ListAudit, "----F--F"),
        (Rpc::ListModels, "---FFFRF"),
        (Rpc::ModelHistory, "---FFFRF"),
        (Rpc::WatchServing, "---FFFRF"),
        (Rpc::PromoteModel, "-----F-F"),
        (Rpc::RollbackModel, "-----F-F"),
        (Rpc::ReportServing, "------RF"),
    ];

    #[test]
    fn every_rpc_and_role_is_decided_as_the_matrix_says() {
        assert_eq!(MATRIX.len(), Rpc::ALL.len());
        for (i, rpc) in Rpc::ALL.into_iter().enumerate() {
            let (row_rpc, row) = MATRIX[i];
            assert_eq!(row_rpc, rpc);
            for (role, want) in Role::ALL.into_iter().zip(row.chars()) {
                let want = match want {
                    '-' => Access::Denied,
                    'O' => Access::Own,
                    'R' => Access::Region,
                    'S' => Access::Summary,
                    'F' => Access::Full,
                    other => panic!("bad matrix cell {other}"),
                };
                assert_eq!(access(role, rpc), want, "{role} × {rpc:?}");
            }
        }
    }
}
