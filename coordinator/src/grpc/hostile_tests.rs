//! Property tests standing in for the fuzz targets in the normal suite: whatever bytes or
//! numbers a caller sends, the edge answers with a value or a named refusal, never a panic,
//! and what it accepts satisfies the plan's invariants.

use super::convert::plan_from_pb;
use fedra_proto::pb;
use proptest::prelude::*;
use prost::Message;

fn valid_plan() -> pb::RunPlan {
    pb::RunPlan {
        model: Some(pb::ModelSpec {
            name: "m".into(),
            architecture: Some(pb::model_spec::Architecture::LogisticRegression(pb::LogisticRegression {
                input_dim: 4,
                classes: 3,
            })),
        }),
        rounds: 3,
        clients_per_round: 2,
        min_clients: 1,
        round_deadline_seconds: 30.0,
        local: Some(pb::LocalTraining { epochs: 1, batch_size: 8, learning_rate: 0.1, ..Default::default() }),
        regions: vec!["eu".into()],
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Mutated wire bytes of a valid plan: decoding may fail; a decoded plan is converted
    /// or refused, never a panic.
    #[test]
    fn mutated_plan_bytes_never_panic(mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = valid_plan().encode_to_vec();
        for (i, b) in mutations {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(plan) = pb::RunPlan::decode(bytes.as_slice()) {
            let _ = plan_from_pb(plan);
        }
    }

    /// Arbitrary numbers in every numeric field: accepted plans keep the invariants.
    #[test]
    fn accepted_plans_keep_their_invariants(
        rounds in any::<u32>(), per_round in any::<u32>(), min in any::<u32>(),
        over in prop_oneof![any::<f64>(), -2.0..5.0f64], deadline in prop_oneof![any::<f64>(), 0.0..1e6f64],
        epochs in any::<u32>(), batch in any::<u32>(), lr in any::<f64>(), mu in any::<f64>(),
        momentum in any::<f64>(), priority in any::<i32>(), input_dim in any::<u32>(), classes in any::<u32>(),
    ) {
        let mut p = valid_plan();
        p.rounds = rounds;
        p.clients_per_round = per_round;
        p.min_clients = min;
        p.over_selection = over;
        p.round_deadline_seconds = deadline;
        p.priority = priority;
        p.local = Some(pb::LocalTraining { epochs, batch_size: batch, learning_rate: lr, proximal_mu: mu, momentum, ..Default::default() });
        p.model.as_mut().unwrap().architecture =
            Some(pb::model_spec::Architecture::LogisticRegression(pb::LogisticRegression { input_dim, classes }));
        if let Ok(plan) = plan_from_pb(p) {
            prop_assert!(plan.rounds >= 1);
            prop_assert!(plan.min_clients >= 1 && plan.min_clients <= plan.clients_per_round);
            prop_assert!(plan.over_selection.is_finite() && plan.over_selection >= 0.0);
            prop_assert!(!plan.round_deadline.is_zero());
            prop_assert!(plan.local.learning_rate.is_finite() && plan.local.learning_rate > 0.0);
            prop_assert!((-100..=100).contains(&plan.priority));
            prop_assert!(plan.model.layout().total() >= 1);
        }
    }
}
