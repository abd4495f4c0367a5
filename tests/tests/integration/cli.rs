//! The shipped binaries as users run them: `fedra` against a live coordinator, and
//! `fedra-coordinator` refusing bad config. Errors are one line and a non-zero exit.

use crate::sandbox::*;
use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/<name>`. Cargo builds a package's own binaries for its integration
/// tests, but not other packages' binaries: build them here when they are missing (a
/// fresh clone running `cargo nextest run --workspace`).
fn binary(name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let path = dir.join(name);
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            // `--tests` keeps the feature set identical to the test build, so only the
            // binaries themselves are linked (no second build of the dependencies).
            .args(["build", "-q", "--workspace", "--bins", "--tests"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
    }
    assert!(path.exists(), "{} is not built", path.display());
    path
}

async fn run(name: &str, args: Vec<String>) -> Output {
    let bin = binary(name);
    tokio::task::spawn_blocking(move || Command::new(bin).args(args).output().expect("spawn")).await.expect("join")
}

fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).to_string();
    assert_eq!(text.trim_end().lines().count(), 1, "expected one line, got {text:?}");
    text.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedra_cli_submits_watches_lists_and_pulls() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..3).map(|i| blob_client(i, "eu", 6, 3, 100)).collect();
    let cluster = Cluster::builder().clients(specs).start().await?;
    let dir = tempfile::tempdir()?;
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(
        &plan_path,
        r#"version = 1
rounds = 2
clients_per_round = 3
min_clients = 2
round_deadline_seconds = 30
[model]
kind = "logistic_regression"
name = "cli-lr"
input_dim = 6
classes = 3
[local]
epochs = 1
batch_size = 16
learning_rate = 0.1
"#,
    )?;
    let ep = cluster.endpoint();
    let args =
        |a: &[&str]| -> Vec<String> { ["--coordinator", ep.as_str()].iter().chain(a).map(|s| s.to_string()).collect() };

    let out = run("fedra", args(&["run", "submit", plan_path.to_str().unwrap(), "--watch"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    let run_id = stdout.lines().next().unwrap().to_string();
    assert!(run_id.starts_with("run-"));
    assert!(stdout.contains("round 2: published"), "{stdout}");
    assert!(stdout.trim_end().ends_with("run succeeded"), "{stdout}");

    let out = run("fedra", args(&["run", "list"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&run_id));
    let out = run("fedra", args(&["run", "show", &run_id])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("state succeeded  rounds 2/2"));
    let out = run("fedra", args(&["checkpoint", "list", "--region", "eu"])).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(listing.lines().filter(|l| l.starts_with(&run_id)).count(), 2, "{listing}");
    let cp = format!("{run_id}.r0002");
    let pull_dir = dir.path().join("pulled");
    let out = run("fedra", args(&["checkpoint", "pull", &cp, "-o", pull_dir.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = read_manifest(&pull_dir.join("model.safetensors"))?;
    assert_eq!(manifest.checkpoint_id.as_str(), cp);

    // Refusals: one line on stderr, a meaningful exit code.
    let out = run("fedra", args(&["run", "cancel", &run_id])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).starts_with(&format!("fedra: run {run_id} already ended")));
    std::fs::write(dir.path().join("bad.toml"), "version = 1\nrounds = 2\nround = 3\n")?;
    let out = run("fedra", args(&["run", "submit", dir.path().join("bad.toml").to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("bad.toml"));
    let zero_rounds = std::fs::read_to_string(&plan_path)?.replace("rounds = 2", "rounds = 0");
    std::fs::write(dir.path().join("zero.toml"), zero_rounds)?;
    let out = run("fedra", args(&["run", "submit", dir.path().join("zero.toml").to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("plan.rounds must be in 1..=100000, got 0"));
    let out =
        run("fedra", vec!["--coordinator".into(), "http://127.0.0.1:1".into(), "run".into(), "list".into()]).await;
    assert_eq!(out.status.code(), Some(69));
    assert!(one_line(&out.stderr).starts_with("fedra: cannot connect to coordinator at http://127.0.0.1:1"));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedra_privacy_status_shows_what_each_scope_spent() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..2).map(|i| blob_client(i, "eu", 6, 3, 100)).collect();
    let cluster = Cluster::builder()
        .clients(specs)
        .privacy_budget(fedra_coordinator::privacy::budget::RawBudgetRule {
            model: None,
            region: None,
            epsilon: 20.0,
            delta: 1e-6,
        })
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(
        &plan_path,
        r#"version = 1
rounds = 2
clients_per_round = 2
min_clients = 2
round_deadline_seconds = 30
[model]
kind = "logistic_regression"
name = "dp-lr"
input_dim = 6
classes = 3
[local]
epochs = 1
batch_size = 16
learning_rate = 0.1
[privacy]
mechanism = "central"
noise_multiplier = 1.0
clip_norm = 0.5
expected_clients = 2
"#,
    )?;
    let ep = cluster.endpoint();
    let args =
        |a: &[&str]| -> Vec<String> { ["--coordinator", ep.as_str()].iter().chain(a).map(|s| s.to_string()).collect() };
    let out = run("fedra", args(&["privacy", "status"])).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no privacy spent yet");
    let out = run("fedra", args(&["run", "submit", plan_path.to_str().unwrap(), "--watch"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("fedra", args(&["privacy", "status"])).await;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}");
    let row = table.lines().find(|l| l.starts_with("dp-lr@eu")).unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let spent: f64 = cols[1].parse()?;
    let left: f64 = cols[2].parse()?;
    assert!(spent > 0.0 && (spent + left - 20.0).abs() < 1e-3, "{row}");
    assert_eq!((cols[3], cols[5], cols[6], cols[10]), ("20.0000", "2", "0", "zcdp"), "{row}");

    // A plan file with both clipping kinds is refused locally (exit 64, one line).
    let both = std::fs::read_to_string(&plan_path)? + "[privacy.adaptive]\ninitial_norm = 1.0\n";
    std::fs::write(dir.path().join("both.toml"), both)?;
    let out = run("fedra", args(&["run", "submit", dir.path().join("both.toml").to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("exactly one of clip_norm"), "{}", one_line(&out.stderr));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn coordinator_refuses_bad_config_with_exit_64() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("coordinator.toml");
    std::fs::write(&cfg, "version = 1\nlisten = \"127.0.0.1:0\"\nchunk_byte = 5\n")?;
    let out = run("fedra-coordinator", vec!["--config".into(), cfg.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(64));
    let line = one_line(&out.stderr);
    assert!(line.starts_with("fedra-coordinator: bad config: config file") && line.contains("chunk_byte"), "{line}");
    std::fs::write(&cfg, "version = 1\nchunk_bytes = 6\n")?;
    let out = run("fedra-coordinator", vec!["--config".into(), cfg.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("chunk_bytes: must be a multiple of 4"));
    Ok(())
}
