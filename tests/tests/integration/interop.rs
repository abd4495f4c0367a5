//! Checkpoints are usable outside fedra: the Python `safetensors` package loads them with
//! the documented tensor names, shapes and values.
//!
//! The test brings its own Python packages: on first use it creates a venv under the
//! target directory (`target/py-interop`) and installs `tests/python/requirements.txt`
//! from PyPI into it, so `cargo nextest run --workspace` works on a machine with only
//! `python3`. A lock file serialises the set-up across test processes (nextest runs each
//! test in its own), and a marker holding the requirements makes it happen once.

use fedra_coordinator::checkpoint::{Checkpoints, PublishRequest};
use fedra_coordinator::ids::{CheckpointId, RegionId, RoundNumber, RunId};
use fedra_coordinator::model::{Architecture, ConvLayer, ModelSpec};
use fedra_coordinator::round::TrainingMetrics;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const REQUIREMENTS: &str = include_str!("../../python/requirements.txt");

/// `target/py-interop/bin/python`, with the requirements installed.
fn interop_python() -> PathBuf {
    // This test binary is `target/<profile>/deps/<name>`.
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("target dir above target/<profile>/deps");
    let venv = target.join("py-interop");
    let python = venv.join("bin").join("python");
    let marker = venv.join("fedra-requirements.txt");
    let lock = std::fs::File::create(target.join("py-interop.lock")).expect("create the venv lock file");
    // Held until this function returns: one process sets up, the others wait and reuse.
    lock.lock().expect("lock the venv lock file");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == REQUIREMENTS) {
        return python;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove an unfinished or outdated venv");
    }
    let run = |what: &str, cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "creating the interop venv (python3 -m venv; on Debian/Ubuntu it needs the python3-venv package)",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    );
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).expect("write requirements");
    run(
        "installing the interop test's Python packages from PyPI",
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
    );
    // Written last: a venv without it is unfinished and is rebuilt.
    std::fs::File::create(&marker).and_then(|mut f| f.write_all(REQUIREMENTS.as_bytes())).expect("write the marker");
    python
}

#[tokio::test]
async fn python_safetensors_loads_fedra_checkpoints() -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_checkpoint.py");
    let python = interop_python();
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
            parent: None,
            model: model.clone(),
            contributors: vec![],
            metrics: TrainingMetrics::default(),
            regions: vec![RegionId::new("eu")?],
            privacy: None,
            policy_sha256: None,
            server_state: None,
            references: Default::default(),
        };
        let (published, params) = Checkpoints::with_ephemeral_key(dir.path()).publish(req, params).await?;
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
