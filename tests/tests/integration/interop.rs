//! Checkpoints are usable outside fedra: the Python `safetensors` package loads them with
//! the documented tensor names, shapes and values.
//!
//! The test brings its own Python packages (`target/py-interop`, see [`crate::pyvenv`]).

use fedra_coordinator::checkpoint::{Checkpoints, PublishRequest};
use fedra_coordinator::ids::{CheckpointId, RegionId, RoundNumber, RunId};
use fedra_coordinator::model::{Architecture, ConvLayer, ModelSpec};
use fedra_coordinator::round::TrainingMetrics;
use std::path::Path;
use std::process::Command;

const REQUIREMENTS: &str = include_str!("../../python/requirements.txt");

#[tokio::test]
async fn python_safetensors_loads_fedra_checkpoints() -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_checkpoint.py");
    let python = crate::pyvenv::python_with("py-interop", REQUIREMENTS);
    let models = [
        Architecture::LogisticRegression { input_dim: 5, classes: 3 },
        Architecture::Mlp { input_dim: 6, hidden: vec![8, 4], classes: 3 },
        Architecture::Cnn {
            height: 8,
            width: 8,
            channels: 1,
            conv: vec![ConvLayer { filters: 4, kernel: 3 }, ConvLayer { filters: 8, kernel: 3 }],
            dense: vec![16],
            classes: 10,
        },
    ];
    for (i, arch) in models.into_iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let model = ModelSpec::new(format!("interop-{i}"), arch)?;
        let mut params = model.initialise(i as u64 + 1);
        // Values a float parser could get wrong: negative zero, subnormal, extremes.
        params[0] = -0.0;
        params[1] = f32::MIN_POSITIVE / 8.0;
        params[2] = f32::MAX;
        let run = RunId::generate();
        let id = CheckpointId::for_round(&run, RoundNumber(1));
        let req = PublishRequest {
            id: id.clone(),
            run: run.clone(),
            round: 1,
            attempt: 1,
            parent: None,
            model: model.clone(),
            contributors: vec![],
            metrics: TrainingMetrics::default(),
            regions: vec![RegionId::new("eu")?],
            privacy: None,
            policy_sha256: None,
            server_state: None,
            references: Default::default(),
            aggregation: None,
        };
        let published = Checkpoints::with_ephemeral_key(dir.path())
            .publish(req, fedra_proto::chunking::SharedParams::new(params.clone()))
            .await?;
        let mut offset = 0;
        let tensors: Vec<_> = model
            .layout()
            .tensors
            .iter()
            .map(|t| {
                let n = t.numel();
                let values = &params[offset..offset + n];
                offset += n;
                serde_json::json!({ "name": t.name, "shape": t.shape, "values": values })
            })
            .collect();
        let expected = dir.path().join("expected.json");
        std::fs::write(
            &expected,
            serde_json::to_string(&serde_json::json!({
                "tensors": tensors,
                "metadata": { "checkpoint_id": id.as_str(), "format": "fedra.checkpoint.v1" },
            }))?,
        )?;
        let out = Command::new(&python).arg(&script).arg(published.locations[0].1.as_str()).arg(&expected).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python could not load {} as documented:\n{stdout}{}",
            model.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("ok:"), "{stdout}");
    }
    Ok(())
}
