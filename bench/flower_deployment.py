#!/usr/bin/env python3
"""One grid case of bench/flower_rounds.py in Flower's deployment mode: a flower-superlink
and N flower-supernode processes on loopback (insecure, subprocess isolation), a Flower App
generated in a temporary directory around the same ServerApp/ClientApp code as the
simulation (bench/flower_rounds.py is copied into the app), started with `flwr run`.
The ServerApp writes its round timings to a file; this script adds the process tree's
peak RSS and the loopback interface's bytes and writes the case's JSON to --out.

Usage: python bench/flower_deployment.py N P [--rounds 5] [--seed 7] --out case.json
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import flower_rounds as fr  # noqa: E402

SERVER_APP = '''
import json
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flowerbench.rounds import server_main

app = ServerApp()

@app.main()
def main(grid: Grid, context: Context):
    c = context.run_config
    timings = []

    def dump(t):
        with open(str(c["timings"]) + ".part", "w") as f:
            json.dump(t, f)

    try:
        server_main(grid, int(c["clients"]), int(c["params"]), int(c["rounds"]), int(c["seed"]), timings,
                    int(c["tree-root"]), on_round=dump)
    finally:
        with open(str(c["timings"]), "w") as f:
            json.dump(timings, f)
'''

CLIENT_APP = '''
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flowerbench.rounds import client_train

app = ClientApp()

@app.train()
def train(msg: Message, context: Context):
    return client_train(msg, context, int(context.run_config["seed"]))
'''

PYPROJECT = '''
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "flowerbench"
version = "1.0.0"
dependencies = ["flwr>=1.42", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedra"

[tool.flwr.app.components]
serverapp = "flowerbench.server_app:app"
clientapp = "flowerbench.client_app:app"

[tool.flwr.app.config]
clients = {clients}
params = {params}
rounds = {rounds}
seed = {seed}
tree-root = {root}
timings = "{timings}"
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lo_bytes():
    for line in open("/proc/net/dev"):
        if line.strip().startswith("lo:"):
            return int(line.split(":", 1)[1].split()[0])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clients", type=int)
    ap.add_argument("params", type=int)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="flower-deploy-")
    bindir = os.path.dirname(sys.executable)
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    app = os.path.join(tmp, "app")
    pkg = os.path.join(app, "flowerbench")
    os.makedirs(pkg)
    timings_path = os.path.join(tmp, "timings.json")
    shutil.copy(os.path.join(HERE, "flower_rounds.py"), os.path.join(pkg, "rounds.py"))
    open(os.path.join(pkg, "__init__.py"), "w").close()
    open(os.path.join(pkg, "server_app.py"), "w").write(SERVER_APP)
    open(os.path.join(pkg, "client_app.py"), "w").write(CLIENT_APP)
    open(os.path.join(app, "pyproject.toml"), "w").write(
        PYPROJECT.format(clients=args.clients, params=args.params, rounds=args.rounds, seed=args.seed,
                         root=os.getpid(), timings=timings_path)
    )
    # Flower 1.42 serves the Fleet, Control and ServerAppIo APIs over HTTP on one port.
    link = free_port()
    open(os.path.join(home, "config.toml"), "w").write(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = dict(os.environ, FLWR_HOME=home, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    logs = open(os.path.join(tmp, "processes.log"), "w")
    procs = []
    sampler = fr.TreeSampler(os.getpid())
    sampler.start()
    error = None
    t0 = time.time()
    lo0 = lo_bytes()
    try:
        procs.append(subprocess.Popen(
            [os.path.join(bindir, "flower-superlink"), "--insecure", "--port", str(link),
             "--database", os.path.join(tmp, "state.db")],
            env=env, stdout=logs, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True))
        time.sleep(3)
        for i in range(args.clients):
            procs.append(subprocess.Popen(
                [os.path.join(bindir, "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                 "--port", str(free_port()),
                 "--node-config", f"partition-id={i} num-partitions={args.clients}"],
                env=env, stdout=logs, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True))
        time.sleep(3)
        run = subprocess.run([os.path.join(bindir, "flwr"), "run", app, "bench", "--stream"], env=env,
                             stdout=logs, stderr=subprocess.STDOUT, timeout=args.timeout, cwd=tmp)
        deadline = time.time() + 30
        while not os.path.exists(timings_path) and time.time() < deadline:
            time.sleep(0.5)
        if not os.path.exists(timings_path):
            error = f"flwr run exited {run.returncode} and the ServerApp wrote no timings"
    except subprocess.TimeoutExpired:
        error = f"timed out after {args.timeout:.0f} s"
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        wall = time.time() - t0
        lo = lo_bytes() - lo0
        sampler.stop = True
        sampler.join()
        # Each SuperLink/SuperNode leads its own process group, so that the SuperExec,
        # ServerApp and ClientApp processes they spawn are stopped with them.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in reversed(procs):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
    partial = timings_path + ".part"
    timings = json.load(open(timings_path)) if os.path.exists(timings_path) else (
        json.load(open(partial)) if os.path.exists(partial) else [])
    result = fr.summarize(args.clients, args.params, args.rounds, timings, sampler.peak, "deployment", wall, error)
    result["loopback_bytes_total"] = lo
    if error:
        logs.flush()
        result["log_tail"] = open(os.path.join(tmp, "processes.log")).read()[-3000:]
    json.dump(result, open(args.out, "w"), indent=2)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
