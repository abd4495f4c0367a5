//! The shipped binaries as users run them: `fedra` against a live coordinator, and
//! `fedra-coordinator` refusing bad config. Errors are one line and a non-zero exit.

use crate::sandbox::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// A shipped binary: the package that builds it and its target name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bin {
    pub(crate) package: &'static str,
    pub(crate) name: &'static str,
}

/// The data scientist's CLI. Its package is named here and nowhere else: if the CLI moves
/// to a crate of its own (e.g. `cli/`, `fedra-cli`), this is the line to change.
pub(crate) const FEDRA: Bin = Bin { package: "fedra-cli", name: "fedra" };
pub(crate) const FEDRA_COORDINATOR: Bin = Bin { package: "fedra-coordinator", name: "fedra-coordinator" };

/// The path of `bin`, built from the current sources. Cargo builds a package's own
/// binaries for its integration tests, but not other packages' binaries, and a
/// `target/<profile>/<name>` left by an earlier build may be stale. So every test process
/// runs `cargo build` for the binary once (a no-op when it is up to date) and takes the
/// path from cargo's own report of the artifact.
pub(crate) fn binary(bin: Bin) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    built.entry(bin.name).or_insert_with(|| build(bin)).clone()
}

/// The `fedra-coordinator` binary built from the current sources (debug builds carry the
/// crash points `crash.rs` arms).
pub(crate) fn coordinator_binary() -> PathBuf {
    binary(FEDRA_COORDINATOR)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// The package's id and directory, from `cargo metadata`.
fn package(name: &str) -> (String, PathBuf) {
    let out = cargo().args(["metadata", "--no-deps", "--format-version", "1"]).output().expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata output");
    let pkg = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no package {name} in the workspace"));
    let manifest = Path::new(pkg["manifest_path"].as_str().expect("manifest_path"));
    (pkg["id"].as_str().expect("package id").to_string(), manifest.parent().expect("package dir").to_path_buf())
}

fn build(bin: Bin) -> PathBuf {
    let (id, _) = package(bin.package);
    // The profile the tests were built with, read off this test binary's path
    // (`target/<profile dir>/deps/…`).
    let exe = std::env::current_exe().expect("test binary path");
    let profile = match exe.parent().and_then(Path::parent).and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(dir) => dir.to_string(),
    };
    // `--workspace --tests` keeps the feature set identical to the README's test build,
    // so only the binary itself is (re)linked, never a second copy of the dependencies.
    let out = cargo()
        .args(["build", "--workspace", "--tests", "--bin", bin.name, "--profile", &profile])
        .args(["--message-format", "json-render-diagnostics"])
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "building {} failed:\n{}", bin.name, String::from_utf8_lossy(&out.stderr));
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| {
            m["reason"] == "compiler-artifact"
                && m["package_id"] == id.as_str()
                && m["target"]["name"] == bin.name
                && m["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin"))
                // Not the bin's unit-test harness, which `--tests` builds too.
                && m["profile"]["test"] == false
        })
        .and_then(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no binary {} of package {}", bin.name, bin.package));
    assert!(exe.exists(), "{} is not built", exe.display());
    exe
}

/// Every source file cargo's dep-info lists for the binary (`<exe>.d`, one line
/// `<exe>: <source> <source> …`; spaces in paths are escaped with a backslash).
fn sources_of(exe: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string(exe.with_extension("d")).expect("dep-info next to the binary");
    let deps = info.lines().next().and_then(|l| l.split_once(": ")).map(|(_, d)| d).unwrap_or_default();
    let mut paths = vec![String::new()];
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => paths.last_mut().unwrap().extend(chars.next()),
            ' ' => paths.push(String::new()),
            c => paths.last_mut().unwrap().push(c),
        }
    }
    paths.into_iter().filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

/// A stale binary (one left by an earlier build) would run old code under a test of the
/// new: the binaries the tests run are at least as new as every source they are built
/// from.
#[test]
fn cli_binaries_are_built_from_the_current_sources() {
    for bin in [FEDRA, FEDRA_COORDINATOR] {
        let path = binary(bin);
        let built = std::fs::metadata(&path).and_then(|m| m.modified()).expect("binary mtime");
        let sources = sources_of(&path);
        let (_, dir) = package(bin.package);
        assert!(sources.iter().any(|s| s.starts_with(&dir)), "{} lists no source of {}", path.display(), bin.package);
        for source in sources {
            let changed = std::fs::metadata(&source).and_then(|m| m.modified()).expect("source mtime");
            assert!(changed <= built, "{} is older than {}: a stale binary", path.display(), source.display());
        }
    }
}

async fn run(bin: Bin, args: Vec<String>) -> Output {
    let path = binary(bin);
    tokio::task::spawn_blocking(move || Command::new(path).args(args).output().expect("spawn")).await.expect("join")
}

/// Runs the `fedra` CLI built from the current sources.
pub(crate) async fn fedra(args: Vec<String>) -> Output {
    run(FEDRA, args).await
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
    let alice = cluster.pki().identity_dir(&"fedra://scientist/alice".parse()?)?;
    let tls = alice.dir.to_str().unwrap().to_string();
    let args = |a: &[&str]| -> Vec<String> {
        ["--coordinator", ep.as_str(), "--tls-dir", tls.as_str()].iter().chain(a).map(|s| s.to_string()).collect()
    };

    let out = run(FEDRA, args(&["run", "submit", plan_path.to_str().unwrap(), "--watch"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    let run_id = stdout.lines().next().unwrap().to_string();
    assert!(run_id.starts_with("run-"));
    assert!(stdout.contains("round 2: published"), "{stdout}");
    assert!(stdout.trim_end().ends_with("run succeeded"), "{stdout}");

    let out = run(FEDRA, args(&["run", "list"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&run_id));
    let out = run(FEDRA, args(&["run", "show", &run_id])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("state succeeded  rounds 2/2"));
    let out = run(FEDRA, args(&["checkpoint", "list", "--region", "eu"])).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(listing.lines().filter(|l| l.starts_with(&run_id)).count(), 2, "{listing}");
    cli_json_and_plain_watch(&run_id, &args).await?;
    let cp = format!("{run_id}.r0002");
    let pull_dir = dir.path().join("pulled");
    let out = run(FEDRA, args(&["checkpoint", "pull", &cp, "-o", pull_dir.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = read_manifest(&pull_dir.join("model.safetensors"))?;
    assert_eq!(manifest.checkpoint_id.as_str(), cp);

    // Refusals: one line on stderr, a meaningful exit code.
    let out = run(FEDRA, args(&["run", "cancel", &run_id])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).starts_with(&format!("fedra: run {run_id} already ended")));
    std::fs::write(dir.path().join("bad.toml"), "version = 1\nrounds = 2\nround = 3\n")?;
    let out = run(FEDRA, args(&["run", "submit", dir.path().join("bad.toml").to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("bad.toml"));
    let zero_rounds = std::fs::read_to_string(&plan_path)?.replace("rounds = 2", "rounds = 0");
    std::fs::write(dir.path().join("zero.toml"), zero_rounds)?;
    let out = run(FEDRA, args(&["run", "submit", dir.path().join("zero.toml").to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("plan.rounds must be in 1..=100000, got 0"));
    let out = run(
        FEDRA,
        vec!["--coordinator".into(), "http://127.0.0.1:1".into(), "--insecure".into(), "run".into(), "list".into()],
    )
    .await;
    assert_eq!(out.status.code(), Some(69));
    assert!(one_line(&out.stderr).starts_with("fedra: cannot connect to coordinator at http://127.0.0.1:1"));
    // Without an identity the CLI says what to pass, before connecting anywhere.
    let out = run(FEDRA, vec!["--coordinator".into(), ep.clone(), "run".into(), "list".into()]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).starts_with("fedra: no identity: pass --tls-dir"), "{}", one_line(&out.stderr));
    // Another scientist neither sees nor cancels alice's run; an approver cannot submit.
    let bob = cluster.pki().identity_dir(&"fedra://scientist/bob".parse()?)?;
    let as_bob = |a: &[&str]| -> Vec<String> {
        ["--coordinator", ep.as_str(), "--tls-dir", bob.dir.to_str().unwrap()]
            .iter()
            .chain(a)
            .map(|s| s.to_string())
            .collect()
    };
    let out = run(FEDRA, as_bob(&["run", "list"])).await;
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stdout).contains(&run_id));
    let out = run(FEDRA, as_bob(&["run", "show", &run_id])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("was not submitted by fedra://scientist/bob"), "{}", one_line(&out.stderr));
    let approver = cluster.pki().identity_dir(&"fedra://approver/carol".parse()?)?;
    let out = run(
        FEDRA,
        [
            "--coordinator",
            ep.as_str(),
            "--tls-dir",
            approver.dir.to_str().unwrap(),
            "run",
            "submit",
            plan_path.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("role approver may not call SubmitRun"), "{}", one_line(&out.stderr));
    cluster.shutdown().await;
    Ok(())
}

/// A JSON document on stdout, from a command that succeeded and wrote nothing on stderr.
fn json_stdout(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"))
}

/// `--output json` on the listings and records of a succeeded two-round run, the plain
/// lines of `run watch` through a pipe, and the live display on a terminal.
async fn cli_json_and_plain_watch(run_id: &str, args: &impl Fn(&[&str]) -> Vec<String>) -> anyhow::Result<()> {
    use serde_json::json;
    // The global flag goes before or after the subcommand.
    let runs =
        json_stdout(&run(FEDRA, [vec!["--output".to_string(), "json".into()], args(&["run", "list"])].concat()).await);
    let ours: Vec<_> = runs.as_array().expect("an array").iter().filter(|r| r["run_id"] == run_id).collect();
    assert_eq!(ours.len(), 1, "{runs:#}");
    assert_eq!(
        (&ours[0]["state"], &ours[0]["total_rounds"], &ours[0]["completed_rounds"]),
        (&json!("succeeded"), &json!(2), &json!(2))
    );
    assert_eq!(ours[0]["published_checkpoint"], json!(format!("{run_id}.r0002")));

    let shown = json_stdout(&run(FEDRA, args(&["run", "show", run_id, "--output", "json"])).await);
    assert_eq!(
        (&shown["run_id"], &shown["state"], &shown["model_name"]),
        (&json!(run_id), &json!("succeeded"), &json!("cli-lr"))
    );
    assert_eq!(shown["failure"], serde_json::Value::Null);
    let rounds = shown["rounds"].as_array().expect("rounds");
    let done: Vec<_> = rounds.iter().filter(|r| r["phase"] == "done").map(|r| r["round"].as_u64()).collect();
    assert_eq!(done, [Some(1), Some(2)], "{shown:#}");
    for r in rounds.iter().filter(|r| r["phase"] == "done") {
        assert!(r["reported"].as_u64() >= Some(2) && r["metrics"]["loss_after"].is_f64(), "{r:#}");
    }

    let listed = json_stdout(&run(FEDRA, args(&["checkpoint", "list", "--region", "eu", "--output", "json"])).await);
    let ours: Vec<_> = listed.as_array().expect("an array").iter().filter(|c| c["run_id"] == run_id).collect();
    assert_eq!(ours.len(), 2, "{listed:#}");
    for c in ours {
        assert_eq!(c["manifest"]["checkpoint_id"], c["checkpoint_id"], "the manifest is an object: {c:#}");
        assert!(c["regions"].as_array().is_some_and(|r| r.contains(&json!("eu"))), "{c:#}");
    }

    // Errors do not change with the format: one line on stderr, nothing on stdout.
    let out = run(FEDRA, args(&["run", "show", "run-does-not-exist", "--output", "json"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty() && one_line(&out.stderr).starts_with("fedra: "));
    // An unknown format is a usage error (clap's exit 2), naming the value and the choices.
    let out = run(FEDRA, args(&["--output", "yaml", "run", "list"])).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr.lines().next().unwrap_or_default();
    assert!(reason.contains("invalid value 'yaml'") && reason.contains("--output"), "{stderr}");
    assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
    assert!(out.stdout.is_empty());

    // Watching an ended run through a pipe replays its plain lines and exits 0.
    let out = run(FEDRA, args(&["run", "watch", run_id])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains('\x1b') && !stdout.contains('\r'), "no terminal control in a pipe: {stdout:?}");
    for round in [1, 2] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("round {round}: published {run_id}.r000{round} to eu"))),
            "{stdout}"
        );
    }
    assert_eq!(stdout.lines().last(), Some("run succeeded"), "{stdout}");
    // With --output json, the run's final snapshot.
    let watched = json_stdout(&run(FEDRA, args(&["run", "watch", run_id, "--output", "json"])).await);
    assert_eq!((&watched["run_id"], &watched["state"]), (&json!(run_id), &json!("succeeded")));

    // On a terminal (a pty from util-linux `script`), the live bar: rounds completed of
    // total, then the final line; exit status passed through (`-e`).
    let fedra = binary(FEDRA);
    let mut line = shell_quote(fedra.to_str().expect("utf-8 path"));
    for a in args(&["run", "watch", run_id]) {
        line.push(' ');
        line.push_str(&shell_quote(&a));
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script").args(["-q", "-e", "-c", &line, "/dev/null"]).env("COLUMNS", "160").output()
    })
    .await??;
    let screen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{screen} {}", String::from_utf8_lossy(&out.stderr));
    assert!(screen.contains(&format!("{run_id} [")) && screen.contains("2/2 rounds"), "no bar: {screen:?}");
    assert!(screen.contains(&format!("round 2: published {run_id}.r0002")), "{screen:?}");
    assert!(screen.trim_end().ends_with("run succeeded"), "{screen:?}");
    assert!(!screen.contains("selected 3 clients"), "client-level events only move the bar: {screen:?}");
    Ok(())
}

/// `s` as one word for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
    // A scientist submits; compliance reads the ledger in full (the accountant column).
    let sci = cluster.pki().identity_dir(&"fedra://scientist/alice".parse()?)?;
    let compliance = cluster.pki().identity_dir(&"fedra://compliance/dora".parse()?)?;
    let as_sci = |a: &[&str]| -> Vec<String> {
        ["--coordinator", ep.as_str(), "--tls-dir", sci.dir.to_str().unwrap()]
            .iter()
            .chain(a)
            .map(|s| s.to_string())
            .collect()
    };
    let args = |a: &[&str]| -> Vec<String> {
        ["--coordinator", ep.as_str(), "--tls-dir", compliance.dir.to_str().unwrap()]
            .iter()
            .chain(a)
            .map(|s| s.to_string())
            .collect()
    };
    let out = run(FEDRA, args(&["privacy", "status"])).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no privacy spent yet");
    let out = run(FEDRA, as_sci(&["run", "submit", plan_path.to_str().unwrap(), "--watch"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(FEDRA, args(&["privacy", "status"])).await;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}");
    let row = table.lines().find(|l| l.starts_with("dp-lr@eu")).unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let spent: f64 = cols[1].parse()?;
    let left: f64 = cols[2].parse()?;
    assert!(spent > 0.0 && (spent + left - 20.0).abs() < 1e-3, "{row}");
    assert_eq!((cols[3], cols[5], cols[6], cols[10]), ("20.0000", "2", "0", "zcdp"), "{row}");
    // The same standing as JSON: numbers as numbers.
    let scopes = json_stdout(&run(FEDRA, args(&["privacy", "status", "--output", "json"])).await);
    let scope = scopes.as_array().and_then(|s| s.iter().find(|s| s["scope"] == "dp-lr@eu"));
    let scope = scope.unwrap_or_else(|| panic!("{scopes:#}"));
    // The table rounds to 4 decimals; JSON carries the full value.
    assert!(scope["epsilon_spent"].as_f64().is_some_and(|e| (e - spent).abs() <= 5e-5), "{scope:#}");
    assert_eq!((&scope["epsilon_budget"], &scope["rounds_charged"]), (&serde_json::json!(20.0), &serde_json::json!(2)));
    // The audit log as one array of the objects `--json` prints one per line.
    let entries = json_stdout(&run(FEDRA, args(&["audit", "list", "--output", "json"])).await);
    let entries = entries.as_array().expect("an array");
    let lines = run(FEDRA, args(&["audit", "list", "--json"])).await;
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&lines.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert!(!entries.is_empty() && entries[..] == lines[..entries.len()], "{entries:#?} vs {lines:#?}");
    assert!(entries.iter().any(|e| e["action"] == "run_submitted" && e["hash"].is_string()), "{entries:#?}");
    let out = run(FEDRA, args(&["audit", "list", "--json", "--output", "json"])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("pass one"), "{}", one_line(&out.stderr));

    // A plan file with both clipping kinds is refused locally (exit 64, one line).
    let both = std::fs::read_to_string(&plan_path)? + "[privacy.adaptive]\ninitial_norm = 1.0\n";
    std::fs::write(dir.path().join("both.toml"), both)?;
    let out = run(FEDRA, args(&["run", "submit", dir.path().join("both.toml").to_str().unwrap()])).await;
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
    let out = run(FEDRA_COORDINATOR, vec!["--config".into(), cfg.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(64));
    let line = one_line(&out.stderr);
    assert!(line.starts_with("fedra-coordinator: bad config: config file") && line.contains("chunk_byte"), "{line}");
    std::fs::write(&cfg, "version = 1\nchunk_bytes = 6\n")?;
    let out = run(FEDRA_COORDINATOR, vec!["--config".into(), cfg.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("chunk_bytes: must be a multiple of 4"));
    // Mutual TLS is the default: no identity, no start; plain text only on loopback.
    std::fs::write(&cfg, "version = 1\n")?;
    let out = run(FEDRA_COORDINATOR, vec!["--config".into(), cfg.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("tls.dir: is required"), "{}", one_line(&out.stderr));
    let out = run(FEDRA_COORDINATOR, vec!["--insecure".into(), "--listen".into(), "0.0.0.0:0".into()]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("only on a loopback address"), "{}", one_line(&out.stderr));
    Ok(())
}

#[tokio::test]
async fn fedra_pki_provisions_issues_lists_and_revokes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    let pki = |a: &[&str]| -> Vec<String> {
        ["pki"].iter().chain(a).map(|s| s.to_string()).chain(["--ca".to_string(), ca.display().to_string()]).collect()
    };
    let out = run(FEDRA, pki(&["init"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(FEDRA, pki(&["init"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("refusing to replace a CA key"));
    let h7 = dir.path().join("h7");
    let out = run(
        FEDRA,
        pki(&[
            "issue",
            "--role",
            "client",
            "--region",
            "eu-west",
            "--name",
            "hospital-7",
            "--out",
            h7.to_str().unwrap(),
        ]),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.starts_with("fedra://client/eu-west/hospital-7 serial "), "{stdout}");
    let serial = stdout.split_whitespace().nth(2).unwrap().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(h7.join("key.pem"))?.permissions().mode() & 0o777, 0o600);
    }
    // A client needs a region; a scientist must not have one.
    let out = run(FEDRA, pki(&["issue", "--role", "client", "--name", "x"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("role client needs a region"), "{}", one_line(&out.stderr));
    let out = run(FEDRA, pki(&["issue", "--role", "root", "--name", "x"])).await;
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown role");
    let out = run(FEDRA, pki(&["list"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{serial}  fedra://client/eu-west/hospital-7")));
    let out = run(FEDRA, pki(&["revoke", &serial])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(ca.join("revoked.txt"))?.contains(&serial));
    Ok(())
}
