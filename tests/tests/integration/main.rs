//! fedra's integration tests: one binary, one module per area. Every test builds a real
//! federation with [`sandbox`]: a coordinator and N client sidecars in this process (or,
//! for the crash tests, the real coordinator binary as a child process), over real gRPC on
//! loopback, with a real SQLite store (PostgreSQL in `postgres.rs`) and real checkpoints on
//! disk (in a real S3-compatible server in `objstore.rs`). `transport.rs` runs the same
//! contracts over gRPC and over the in-process link of `fedra-sim --transport inproc`.

mod aggregation;
mod carbon;
mod cli;
mod compression;
mod crash;
mod dashboard;
mod evaluation;
mod failover;
mod faults;
mod hierarchy;
mod hostile;
mod identity;
mod interop;
mod objstore;
mod ops;
mod policy;
mod postgres;
mod privacy;
mod python;
mod pyvenv;
mod registry;
mod rejections;
mod restart;
mod robust;
mod sandbox;
mod sim;
mod spine;
mod transport;
