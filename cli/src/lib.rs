//! The data scientist's side of fedra: the `fedra` command line and the control-plane
//! client behind it. Kept apart from the `fedra-client` sidecar so that submitting a run
//! needs neither burn nor any training code.
//!
//! Layers: [`plan_file`] parses the run plan a data scientist writes (into the shared
//! `fedra_types::plan` vocabulary); [`control`] is the gRPC control API; [`status`] holds
//! what the coordinator reports, as this side sees it; [`convert`] is the only module that
//! converts protobuf messages; [`commands`] is the CLI over [`control`]; [`policy`] is
//! `fedra policy`, which works on local policy files only; [`registry`] is `fedra model`
//! and `fedra drift`; [`verify`] is `fedra checkpoint verify`; [`output`] is the global
//! `--output text|json` and its JSON contract, [`tables`] the text form of listings, and
//! [`watch`] the live (terminal) or plain rendering of `fedra run watch`.

pub mod commands;
pub mod control;
pub mod convert;
pub mod output;
pub mod pki;
pub mod plan_file;
pub mod policy;
pub mod registry;
pub mod status;
pub mod tables;
pub mod verify;
pub mod watch;
