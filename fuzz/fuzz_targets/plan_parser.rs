//! Plans as users write them (TOML through the CLI's parser) and as the wire carries them
//! (protobuf into the coordinator's validation): a plan or a named refusal, never a panic.
#![no_main]

use fedra_proto::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(plan) = fedra_cli::plan_file::PlanFile::parse(text, "fuzz.toml")
    {
        let _ = fedra_coordinator::grpc::convert::plan_from_pb(fedra_cli::convert::plan_to_pb(&plan));
    }
    if let Ok(plan) = pb::RunPlan::decode(data) {
        let _ = fedra_coordinator::grpc::convert::plan_from_pb(plan);
    }
});
