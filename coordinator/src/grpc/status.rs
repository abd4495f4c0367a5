//! The one mapping from errors to gRPC status codes. Every message names what was wrong so
//! the caller knows what to fix.

use crate::aggregation::AggregationError;
use crate::privacy::PrivacyError;
use crate::registry::RegistryError;
use crate::round::RoundError;
use crate::store::StoreError;
use fedra_proto::chunking::ChunkError;
use fedra_proto::compressed::CodecError;
use tonic::{Code, Status};

/// Anything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is missing or invalid.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("update stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("update stream: {0}")]
    Protocol(String),
    /// A compressed chunk broke its encoding's contract (see `fedra_proto::compressed`).
    #[error("update stream: {0}")]
    Codec(CodecError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// No usable certified identity (no certificate, revoked, expired since the handshake).
    #[error("{0}")]
    Unauthenticated(String),
    /// A certified caller asked for something its role or ownership does not allow, or
    /// claimed in a field an identity its certificate does not state.
    #[error("{0}")]
    Denied(String),
    /// The same transfer is already in progress.
    #[error("{0}")]
    Busy(String),
    /// The request cannot be carried out in the current state (an invalid policy set).
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The uncompressed path's errors keep their own variants (and messages).
impl From<CodecError> for ApiError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Chunk(c) => ApiError::Chunk(c),
            e @ CodecError::NotFinite(_) => ApiError::Invalid(e.to_string()),
            e => ApiError::Codec(e),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::Invalid(_) | ApiError::Chunk(_) | ApiError::Protocol(_) | ApiError::Codec(_) => {
                Code::InvalidArgument
            }
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Denied(_) => Code::PermissionDenied,
            ApiError::Busy(_) | ApiError::Precondition(_) => Code::FailedPrecondition,
            ApiError::Store(e) => store_code(e),
            ApiError::Registry(e) => match e {
                RegistryError::NotRegistered { .. } => Code::NotFound,
                RegistryError::NotPromotable { .. }
                | RegistryError::GateFailed { .. }
                | RegistryError::PolicyGateFailed { .. }
                | RegistryError::AwaitingApprovals { .. }
                | RegistryError::NothingServing { .. }
                | RegistryError::Invalid(_) => Code::FailedPrecondition,
                RegistryError::BadTarget(_) => Code::InvalidArgument,
                RegistryError::AlreadyApproved { .. } => Code::AlreadyExists,
                RegistryError::SelfApproval { .. } => Code::PermissionDenied,
                RegistryError::Store(e) => store_code(e),
                RegistryError::Stopped => Code::Unavailable,
            },
            ApiError::Round(e) => match e {
                RoundError::Store(e) => store_code(e),
                RoundError::Aggregation(
                    AggregationError::OutOfRange { .. }
                    | AggregationError::NotFinite(_)
                    | AggregationError::WeightBudget { .. },
                ) => Code::InvalidArgument,
                RoundError::Checkpoint(_) | RoundError::Aggregation(_) | RoundError::Internal(_) => Code::Internal,
                RoundError::RunNotFound(_) | RoundError::CheckpointNotFound(_) => Code::NotFound,
                RoundError::InitialCheckpoint { .. }
                | RoundError::UpdateLength { .. }
                | RoundError::TooManySamples { .. }
                | RoundError::ZeroSamples
                | RoundError::ModelTooLarge { .. }
                | RoundError::NoCarbonFeed
                | RoundError::Contributors { .. }
                | RoundError::Scopes(_)
                | RoundError::Reference(_)
                | RoundError::Cohort { .. } => Code::InvalidArgument,
                RoundError::RunEnded { .. }
                | RoundError::UnknownClient(_)
                | RoundError::UnknownTask(_)
                | RoundError::RoundClosed { .. }
                | RoundError::WrongTaskKind { .. }
                | RoundError::AlreadyReported { .. }
                | RoundError::Dropped { .. }
                | RoundError::Refused { .. } => Code::FailedPrecondition,
                RoundError::NotYourTask { .. } | RoundError::PolicyRefused(_) | RoundError::WrongTier(_) => {
                    Code::PermissionDenied
                }
                RoundError::Privacy(p) => match p {
                    PrivacyError::OverBudget { .. }
                    | PrivacyError::RunOverBudget { .. }
                    | PrivacyError::NoBudget(_) => Code::FailedPrecondition,
                    PrivacyError::OverClipBound { .. } | PrivacyError::NormUnderReported { .. } => {
                        Code::InvalidArgument
                    }
                    PrivacyError::Accounting(_) | PrivacyError::Noise(_) => Code::Internal,
                },
                RoundError::UpdateKind { .. } => Code::InvalidArgument,
                RoundError::ShuttingDown => Code::Unavailable,
            },
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error answered to a caller");
        }
        Status::new(code, e.to_string())
    }
}

impl From<RoundError> for Status {
    fn from(e: RoundError) -> Self {
        ApiError::from(e).into()
    }
}

/// A store refusal is the caller's to fix; anything else is ours.
fn store_code(e: &crate::store::StoreError) -> Code {
    use crate::store::StoreError;
    match e {
        StoreError::AlreadyExists { .. } => Code::AlreadyExists,
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::Conflict { .. } => Code::FailedPrecondition,
        // Another coordinator leads now: the caller retries there.
        StoreError::Fenced { .. } => Code::Unavailable,
        _ => Code::Internal,
    }
}
