//! fedra-sim: a real coordinator and N real client sidecars in one process, talking gRPC
//! over loopback. The same library code as the `fedra-coordinator` and `fedra-client`
//! binaries runs here, driven through `fedra-cli`'s control API as the `fedra` CLI drives
//! it; only the processes are folded into one.
//!
//! [`cluster`] builds such a federation (the integration tests use it as their sandbox);
//! its sidecars reach the coordinator over gRPC, or over [`inproc`]: the same session and
//! engine code, the model and updates handed over as buffers instead of encoded chunks.
//! [`quickstart`] is the README's main job.

pub mod bench_fleet;
pub mod bench_infer;
pub mod bench_pinned;
pub mod bench_rounds;
pub mod cluster;
mod cluster_links;
pub mod cluster_process;
pub mod datasets;
pub mod faults;
pub mod hierarchy;
pub mod inproc;
pub mod pki;
pub mod proxy;
pub mod quickstart;
pub mod report;
pub mod scenario;
