//! Structural conversion between the wire messages and the model types of
//! [`fedra_types::model`]. Shared by both sides' conversion modules so that they cannot
//! disagree on how an architecture or a layout is written; validation is separate
//! ([`Architecture::validate`]). This is wire code, so it lives here, beside the generated
//! messages; the types themselves are the shared vocabulary and live in `fedra-types`.

use crate::pb;
use fedra_types::model::{Architecture, ConvLayer, TensorLayout, TensorSpec};

fn widen(v: &[u32]) -> Vec<usize> {
    v.iter().map(|x| *x as usize).collect()
}

fn narrow(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The architecture a `ModelSpec.architecture` oneof describes (callers reject an unset
/// oneof themselves, naming their field).
pub fn architecture_from_pb(a: &pb::model_spec::Architecture) -> Architecture {
    use pb::model_spec::Architecture as A;
    match a {
        A::LogisticRegression(m) => {
            Architecture::LogisticRegression { input_dim: m.input_dim as usize, classes: m.classes as usize }
        }
        A::Mlp(m) => {
            Architecture::Mlp { input_dim: m.input_dim as usize, hidden: widen(&m.hidden), classes: m.classes as usize }
        }
        A::Cnn(m) => Architecture::Cnn {
            height: m.height as usize,
            width: m.width as usize,
            channels: m.channels as usize,
            conv: m.conv.iter().map(|c| ConvLayer { filters: c.filters as usize, kernel: c.kernel as usize }).collect(),
            dense: widen(&m.dense),
            classes: m.classes as usize,
        },
    }
}

pub fn architecture_to_pb(a: &Architecture) -> pb::model_spec::Architecture {
    use pb::model_spec::Architecture as A;
    let list = |v: &[usize]| v.iter().map(|x| narrow(*x)).collect::<Vec<_>>();
    match a {
        Architecture::LogisticRegression { input_dim, classes } => {
            A::LogisticRegression(pb::LogisticRegression { input_dim: narrow(*input_dim), classes: narrow(*classes) })
        }
        Architecture::Mlp { input_dim, hidden, classes } => {
            A::Mlp(pb::Mlp { input_dim: narrow(*input_dim), hidden: list(hidden), classes: narrow(*classes) })
        }
        Architecture::Cnn { height, width, channels, conv, dense, classes } => A::Cnn(pb::Cnn {
            height: narrow(*height),
            width: narrow(*width),
            channels: narrow(*channels),
            conv: conv.iter().map(|c| pb::ConvLayer { filters: narrow(c.filters), kernel: narrow(c.kernel) }).collect(),
            dense: list(dense),
            classes: narrow(*classes),
        }),
    }
}

pub fn layout_to_pb(l: &TensorLayout) -> pb::TensorLayout {
    pb::TensorLayout {
        tensors: l
            .tensors
            .iter()
            .map(|t| pb::TensorSpec { name: t.name.clone(), shape: t.shape.iter().map(|d| *d as u64).collect() })
            .collect(),
    }
}

pub fn layout_from_pb(l: &pb::TensorLayout) -> TensorLayout {
    TensorLayout {
        tensors: l
            .tensors
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), shape: t.shape.iter().map(|d| *d as usize).collect() })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_round_trip_through_the_wire() {
        let archs = [
            Architecture::LogisticRegression { input_dim: 3, classes: 2 },
            Architecture::Mlp { input_dim: 784, hidden: vec![200, 200], classes: 10 },
            Architecture::Cnn {
                height: 8,
                width: 8,
                channels: 1,
                conv: vec![ConvLayer { filters: 4, kernel: 3 }],
                dense: vec![16],
                classes: 10,
            },
        ];
        for a in archs {
            assert_eq!(architecture_from_pb(&architecture_to_pb(&a)), a);
            assert_eq!(layout_from_pb(&layout_to_pb(&a.layout())), a.layout());
        }
    }
}
