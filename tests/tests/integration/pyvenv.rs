//! Python packages for the tests that need them (the checkpoint interop test's
//! `safetensors`, the object-storage test's S3 server `moto`), installed from PyPI into a
//! venv under the target directory on first use, so that `cargo nextest run --workspace`
//! works on a machine with only `python3`. A lock file serialises the set-up across test
//! processes (nextest runs each test in its own), and a marker holding the requirements
//! makes it happen once, and again when they change.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// `target/<name>/bin/python`, with `requirements` (a requirements.txt's text) installed.
///
/// # Panics
/// The venv cannot be created or the packages cannot be installed (the message says which).
pub fn python_with(name: &str, requirements: &str) -> PathBuf {
    // This test binary is `target/<profile>/deps/<name>`.
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("target dir above target/<profile>/deps");
    let venv = target.join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join("fedra-requirements.txt");
    let lock = std::fs::File::create(target.join(format!("{name}.lock"))).expect("create the venv lock file");
    // Held until this function returns: one process sets up, the others wait and reuse.
    lock.lock().expect("lock the venv lock file");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == requirements) {
        return python;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove an unfinished or outdated venv");
    }
    let run = |what: &str, cmd: &mut Command| {
        output(what, cmd);
    };
    run(
        &format!("creating the {name} venv (python3 -m venv; on Debian/Ubuntu it needs the python3-venv package)"),
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    );
    let file = venv.join("requirements.txt");
    std::fs::write(&file, requirements).expect("write requirements");
    run(
        &format!("installing the {name} venv's Python packages from PyPI"),
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&file),
    );
    // Written last: a venv without it is unfinished and is rebuilt.
    std::fs::File::create(&marker).and_then(|mut f| f.write_all(requirements.as_bytes())).expect("write the marker");
    python
}

/// Runs `cmd` to completion and returns its output.
///
/// # Panics
/// It cannot start or exits unsuccessfully; the message names `what` and shows its output.
pub fn output(what: &str, cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
