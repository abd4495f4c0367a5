//! The Python package (`python/`, `import fedra`) as a data scientist uses it, against the
//! shipped binaries: its pytest suite (`python/tests`) starts a coordinator, sidecars and
//! inference nodes from the binaries built here, submits and watches runs, reads metrics,
//! pulls checkpoints into PyTorch and compares the PyTorch model's predictions with the
//! burn model's as `fedra-infer` serves them. Before that, every plan file of
//! `python/tests/plans` (and the quickstart plan) must become the same `RunPlan` from Python
//! as from the `fedra` CLI.
//!
//! The test brings its own Python packages (`target/py-fedra`, see [`crate::pyvenv`]; torch
//! makes it large) and installs the package from the current sources on every run, so a
//! change to `python/` or to the proto file is always what is tested. Nothing is skipped: a
//! missing Python, a failed install or a failed pytest fails the test with its output.

use crate::cli::{Bin, FEDRA, FEDRA_COORDINATOR, binary};
use crate::pyvenv::output;
use fedra_proto::pb;
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const REQUIREMENTS: &str = include_str!("../../../python/tests/requirements.txt");
const FEDRA_CLIENT: Bin = Bin { package: "fedra-client", name: "fedra-client" };
const FEDRA_INFER: Bin = Bin { package: "fedra-client", name: "fedra-infer" };

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace above tests/").to_path_buf()
}

/// The venv's Python with the requirements and the package from the current `python/`.
fn python_with_fedra() -> PathBuf {
    let python = crate::pyvenv::python_with("py-fedra", REQUIREMENTS);
    let started = Instant::now();
    output(
        "installing the fedra package from python/",
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"])
            .args(["--no-build-isolation", "--force-reinstall"])
            .arg(repo().join("python")),
    );
    eprintln!("python.rs: fedra package installed in {:.1} s", started.elapsed().as_secs_f64());
    python
}

/// The plan files both parsers read: every plan in `python/tests/plans`, and the quickstart's.
fn plan_files() -> Vec<PathBuf> {
    let dir = repo().join("python/tests/plans");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the plan fixtures in {}", dir.display());
    files.push(repo().join("sim/plans/quickstart.toml"));
    files
}

/// Python's `RunPlan` equals the CLI's for every plan file, field for field.
fn plans_match_the_cli(python: &Path) {
    for file in plan_files() {
        let cli = fedra_cli::plan_file::PlanFile::load(&file).unwrap_or_else(|e| panic!("the CLI's parser: {e}"));
        let want = fedra_cli::convert::plan_to_pb(&cli);
        let out = output(
            &format!("python -m fedra plan --binary {}", file.display()),
            Command::new(python).args(["-m", "fedra", "plan", "--binary"]).arg(&file),
        );
        let got = pb::RunPlan::decode(out.stdout.as_slice())
            .unwrap_or_else(|e| panic!("{}: Python wrote no RunPlan: {e}", file.display()));
        assert_eq!(got, want, "{}: the Python package's RunPlan differs from the CLI's", file.display());
    }
}

#[test]
fn python_package_submits_watches_pulls_and_matches_burn() {
    let binaries = [
        ("FEDRA_TEST_FEDRA", binary(FEDRA)),
        ("FEDRA_TEST_COORDINATOR", binary(FEDRA_COORDINATOR)),
        ("FEDRA_TEST_CLIENT", binary(FEDRA_CLIENT)),
        ("FEDRA_TEST_INFER", binary(FEDRA_INFER)),
    ];
    let started = Instant::now();
    let python = python_with_fedra();
    eprintln!("python.rs: Python ready in {:.1} s", started.elapsed().as_secs_f64());
    plans_match_the_cli(&python);

    let started = Instant::now();
    let mut pytest = Command::new(&python);
    pytest
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-rA", "--color=no", "tests"])
        .current_dir(repo().join("python"))
        .env_remove("FEDRA_TLS_DIR")
        .env_remove("FEDRA_COORDINATOR");
    for (var, path) in &binaries {
        pytest.env(var, path);
    }
    let out = pytest.output().expect("run pytest");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest failed ({}):\n{report}", out.status);
    // Exit status 0 with nothing collected or something skipped would prove nothing.
    let summary = report.lines().rev().find(|l| l.starts_with('=')).unwrap_or_default();
    assert!(summary.contains(" passed") && !summary.contains("skipped"), "pytest summary: {summary}\n{report}");
    eprintln!("python.rs: pytest {summary} in {:.1} s", started.elapsed().as_secs_f64());
}
