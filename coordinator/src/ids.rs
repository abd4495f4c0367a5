//! Identifier newtypes, defined once in the shared vocabulary (`fedra_types::ids`) and
//! re-exported here so that `crate::ids::RunId` and friends keep resolving.

pub use fedra_types::ids::*;
