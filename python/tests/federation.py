"""A real federation for the tests: the shipped binaries (``fedra`` for the PKI,
``fedra-coordinator``, ``fedra-client`` sidecars, ``fedra-infer``) started as processes on
loopback with mutual TLS, each logging to a file. Addresses come from the processes' own
"serving" and "listening" log lines (they bind port 0), and every wait polls for the event it needs under
a deadline, naming what did not happen and showing the log.

The binaries come from environment variables (``FEDRA_TEST_FEDRA``,
``FEDRA_TEST_COORDINATOR``, ``FEDRA_TEST_CLIENT``, ``FEDRA_TEST_INFER``), which the Rust
integration test ``tests/tests/integration/python.rs`` sets; without them, from
``target/debug`` of the repository.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

REPO = Path(__file__).resolve().parents[2]
# The sidecars' synthetic data: rows of DIM features, CLASSES classes.
DIM = 32
CLASSES = 3
ANSI = re.compile(r"\x1b\[[0-9;]*m")
T = TypeVar("T")

BINARIES = {
    "fedra": "FEDRA_TEST_FEDRA",
    "fedra-coordinator": "FEDRA_TEST_COORDINATOR",
    "fedra-client": "FEDRA_TEST_CLIENT",
    "fedra-infer": "FEDRA_TEST_INFER",
}


def binary(name: str) -> Path:
    """The path of a fedra binary: its environment variable, else ``target/debug/NAME``."""
    var = BINARIES[name]
    path = Path(os.environ.get(var) or REPO / "target" / "debug" / name)
    if not path.is_file():
        raise RuntimeError(
            f"{name} not found at {path}: set {var} (the Rust test python.rs does) or build it "
            f"with `cargo build --bin {name}`"
        )
    return path


def wait_for(what: str, check: Callable[[], T | None], timeout: float, detail: Callable[[], str] = str) -> T:
    """Polls ``check`` until it returns a value, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:g} s\n{detail()}")
        time.sleep(0.05)


@dataclass
class Process:
    """A started binary and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return ANSI.sub("", self.log.read_text(errors="replace")) if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(self.text().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails early if the process exited."""

        def check() -> re.Match[str] | None:
            m = re.search(pattern, self.text())
            if m is None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode} before {pattern!r}\n{self.tail()}")
            return m

        return wait_for(f"{self.name}: {pattern!r} in its log", check, timeout, self.tail)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, args: list[str], log: Path, cwd: Path) -> Process:
    env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
    out = log.open("wb")
    popen = subprocess.Popen([str(binary(name)), *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    return Process(f"{name} {' '.join(args[:2])}", popen, log)


def fedra_cli(args: list[str], cwd: Path) -> str:
    """Runs the ``fedra`` CLI; its stdout, or an error with its stderr."""
    out = subprocess.run([str(binary("fedra")), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"fedra {' '.join(args)} exited with {out.returncode}: {out.stderr.strip()}")
    return out.stdout


@dataclass
class Federation:
    """A coordinator with sidecars, and the identities callers connect as."""

    root: Path
    processes: list[Process] = field(default_factory=list)
    address: str = ""

    def identity(self, role: str, name: str, region: str | None = None, hosts: tuple[str, ...] = ()) -> Path:
        """Issues a certificate of the federation's CA into ``<root>/<name>-tls``."""
        out = self.root / f"{name}-tls"
        args = ["pki", "issue", "--ca", "ca", "--role", role, "--name", name, "--out", str(out)]
        if region:
            args += ["--region", region]
        for h in hosts:
            args += ["--host", h]
        fedra_cli(args, self.root)
        return out

    def start_coordinator(self, extra: list[str] | None = None) -> Process:
        tls = self.identity("coordinator", "coordinator-1", hosts=("localhost", "127.0.0.1"))
        config = self.root / "coordinator.toml"
        config.write_text(
            "version = 1\n"
            'listen = "127.0.0.1:0"\n'
            f'data_dir = "{self.root / "coordinator-data"}"\n'
            "heartbeat_interval_seconds = 1\n"
            "[tls]\n"
            f'dir = "{tls}"\n'
            f'crl = "{self.root / "ca" / "crl.pem"}"\n'
        )
        p = start("fedra-coordinator", ["--config", str(config), *(extra or [])], self.root / "coordinator.log", self.root)
        self.processes.append(p)
        self.address = "https://" + p.wait_log(r"coordinator serving.*?addr=(\S+)").group(1)
        return p

    def start_sidecar(self, client_id: str, region: str, dim: int, classes: int, seed: int) -> Process:
        tls = self.identity("client", client_id, region=region)
        config = self.root / f"{client_id}.toml"
        config.write_text(
            "version = 1\n"
            f'client_id = "{client_id}"\n'
            f'region = "{region}"\n'
            f'coordinator = "{self.address}"\n'
            'devices = ["cpu"]\n'
            f'tls_dir = "{tls}"\n'
            "[dataset]\n"
            'kind = "synthetic"\n'
            f"dim = {dim}\nclasses = {classes}\nsamples = 200\nseed = {seed}\ntask_seed = 7\n"
            "client_shift = 0.3\nholdout_fraction = 0.2\n"
        )
        p = start("fedra-client", ["--config", str(config)], self.root / f"{client_id}.log", self.root)
        self.processes.append(p)
        return p

    def start_inference_node(self, region: str, model: str) -> tuple[Process, str]:
        """A ``fedra-infer`` node for ``model`` in ``region``; returns it and its address."""
        name = f"infer-{region}-{model}"
        tls = self.identity("inference", name, region=region)
        args = ["--coordinator", self.address, "--tls-dir", str(tls), "--region", region, "--model", model,
                "--listen", "127.0.0.1:0", "--report-seconds", "3600"]
        p = start("fedra-infer", args, self.root / f"{name}.log", self.root)
        self.processes.append(p)
        return p, p.wait_log(r"inference node listening.*?addr=(\S+)").group(1)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()


def federation(root: Path, sidecars: list[tuple[str, str]], dim: int, classes: int) -> Federation:
    """A CA, a coordinator and ``sidecars`` (client id, region) registered with it."""
    root.mkdir(parents=True, exist_ok=True)
    fedra_cli(["pki", "init", "--ca", "ca"], root)
    f = Federation(root)
    try:
        f.start_coordinator()
        started = [f.start_sidecar(cid, region, dim, classes, seed=i + 1) for i, (cid, region) in enumerate(sidecars)]
        for p in started:
            p.wait_log("registered and waiting for tasks")
    except BaseException:
        f.stop()
        raise
    return f
