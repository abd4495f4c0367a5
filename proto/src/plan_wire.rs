//! Writing the shared plan types (`fedra_types::plan`) as protobuf: the CLI sends plans and
//! the coordinator echoes them back (run views), so both sides need the same conversion.
//! Reading them back is the coordinator's own business (it validates at its edge).

use crate::pb;
use fedra_types::plan::{Clipping, DpMechanism, LocalTraining, Optimizer, OverBound, PrivacyPlan, Sampling};

/// A run plan's `[privacy]` as its wire message.
pub fn privacy_to_pb(p: &PrivacyPlan) -> pb::PrivacyPlan {
    use pb::privacy_plan::Clipping as C;
    pb::PrivacyPlan {
        mechanism: match p.mechanism {
            DpMechanism::Central => pb::DpMechanism::Central,
            DpMechanism::Local => pb::DpMechanism::Local,
        } as i32,
        noise_multiplier: p.noise_multiplier,
        clipping: Some(match p.clipping {
            Clipping::Fixed { norm } => C::Fixed(pb::FixedClipping { norm }),
            Clipping::Adaptive { initial_norm, target_quantile, learning_rate, count_noise_std } => {
                C::Adaptive(pb::AdaptiveClipping { initial_norm, target_quantile, learning_rate, count_noise_std })
            }
        }),
        over_bound: match p.over_bound {
            OverBound::Reject => pb::OverBound::Reject,
            OverBound::Reclip => pb::OverBound::Reclip,
        } as i32,
        poisson: match p.sampling {
            Sampling::Poisson { rate } => Some(pb::PoissonSampling { rate }),
            Sampling::Fixed => None,
        },
        expected_clients: p.expected_clients,
    }
}

/// A plan's `[local]` training hyperparameters as their wire message.
pub fn local_to_pb(l: &LocalTraining) -> pb::LocalTraining {
    pb::LocalTraining {
        epochs: l.epochs,
        batch_size: l.batch_size,
        learning_rate: l.learning_rate,
        proximal_mu: l.proximal_mu,
        optimizer: match l.optimizer {
            Optimizer::Sgd => pb::Optimizer::Sgd,
            Optimizer::Adam => pb::Optimizer::Adam,
        } as i32,
        momentum: l.momentum,
    }
}
