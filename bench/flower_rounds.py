#!/usr/bin/env python3
"""Flower 1.42 counterpart of `fedra-sim bench rounds` (issue #6): the same grid of
N clients x P float32 parameters, FedAvg over every client each round, evaluation off,
and the same trivial local training (each client returns the received parameters plus a
seeded per-client uniform perturbation of amplitude 1e-3, and weighs 1 sample).

Modes:
  simulation  flwr.simulation.run_simulation (Ray backend), one fresh Python process per
              grid case;
  deployment  flower-superlink + N flower-supernode processes on loopback, the run started
              with `flwr run` (bench/flower_deployment.py).

Round wall time is measured inside the ServerApp's strategy: round k ends when
aggregate_train(k) returns; round 1 starts when configure_train(1) is called, and a steady
round k > 1 lasts from the end of round k-1 to the end of round k (fedra's bench uses the
same definition with its Published events). CPU seconds and peak RSS are of the whole
local process tree (driver, Ray or SuperLink/SuperNodes and their workers), for context:
Flower has no separate coordinator process in simulation.

Usage: python bench/flower_rounds.py [--mode simulation] [--grid 10x1M,10x10M,100x1M,1000x100k]
       [--rounds 5] [--json out.json]
Needs `pip install "flwr[simulation]==1.42.*"`.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

ISSUE_GRID = "10x1M,10x10M,100x1M,1000x100k"
AMPLITUDE = 1e-3


def parse_count(v):
    mult = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(v[-1], 1)
    return int(v[:-1] if mult > 1 else v) * mult


def parse_grid(text):
    out = []
    for case in text.split(","):
        n, p = case.lower().split("x")
        out.append((parse_count(n), parse_count(p.replace("m", "M"))))
    return out


# ---------------------------------------------------------------------------------------
# Process-tree accounting from /proc (no psutil in Flower's dependencies)
# ---------------------------------------------------------------------------------------
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _procs():
    table = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        # rest[0] is field 3 (state): ppid = field 4, utime 14, stime 15, cutime 16, cstime 17, rss 24
        table[int(pid)] = (int(rest[1]), rest)
    return table


def tree(root):
    """(cpu seconds incl. reaped children, rss bytes) summed over root and descendants."""
    table = _procs()
    kids = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    todo, cpu, rss = [root], 0.0, 0
    while todo:
        pid = todo.pop()
        if pid not in table:
            continue
        rest = table[pid][1]
        cpu += sum(int(rest[i - 3]) for i in (14, 15, 16, 17)) / CLK
        rss += int(rest[24 - 3]) * PAGE
        todo.extend(kids.get(pid, []))
    return cpu, rss


class TreeSampler(threading.Thread):
    """Samples the process tree's RSS every 0.2 s and keeps the peak."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.peak, self.stop = root, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, tree(self.root)[1])
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------
# The Flower apps (Message API of Flower >= 1.21)
# ---------------------------------------------------------------------------------------
def client_train(msg, context, seed):
    """The trivial local training: received arrays + seeded uniform noise of amplitude 1e-3."""
    import numpy as np
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    arrays = msg.content["arrays"].to_numpy_ndarrays()
    rnd = int(msg.content["config"]["server-round"])
    pid = int(context.node_config.get("partition-id", context.node_id))
    rng = np.random.default_rng([seed, pid, rnd])
    out = [
        a + (rng.random(a.shape, dtype=np.float32) * np.float32(2 * AMPLITUDE) - np.float32(AMPLITUDE))
        for a in arrays
    ]
    content = RecordDict({"arrays": ArrayRecord(out), "metrics": MetricRecord({"num-examples": 1})})
    return Message(content=content, reply_to=msg)


def server_main(grid, clients, params, rounds, seed, timings, tree_root, on_round=None):
    """FedAvg over every node for `rounds` rounds, timing each round into `timings`
    (and calling `on_round(timings)` after each, so a stuck run keeps its finished rounds)."""
    import numpy as np
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            timings.append({"round": server_round, "configure": time.time(), "tree_cpu_start": tree(tree_root)[0]})
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            t = timings[-1]
            t["replies"] = len(replies)
            t["aggregate_start"] = time.time()
            out = super().aggregate_train(server_round, replies)
            t["aggregate_end"] = time.time()
            t["tree_cpu_end"] = tree(tree_root)[0]
            print(
                f"  flower round {server_round}: replies {len(replies)}, "
                f"configure->aggregated {t['aggregate_end'] - t['configure']:.3f} s, "
                f"aggregate {t['aggregate_end'] - t['aggregate_start']:.3f} s",
                file=sys.stderr,
                flush=True,
            )
            if on_round:
                on_round(timings)
            return out

    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=clients,
        min_available_nodes=clients,
    )
    initial = np.random.default_rng(seed).uniform(-0.05, 0.05, params).astype(np.float32)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([initial]), num_rounds=rounds)


def build_apps(clients, params, rounds, seed, timings, tree_root):
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context):
        return client_train(msg, context, seed)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context):
        server_main(grid, clients, params, rounds, seed, timings, tree_root)

    return server_app, client_app


def summarize(clients, params, rounds, timings, peak_rss, mode, wall_total, error=None):
    done = [t for t in timings if "aggregate_end" in t]
    per_round = []
    prev_end = None
    for t in done:
        start = t["configure"] if prev_end is None else prev_end
        per_round.append(
            {
                "round": t["round"],
                "wall_s": t["aggregate_end"] - start,
                "configure_to_aggregated_s": t["aggregate_end"] - t["configure"],
                "aggregate_s": t["aggregate_end"] - t["aggregate_start"],
                "replies": t.get("replies"),
                "tree_cpu_s": t["tree_cpu_end"] - t["tree_cpu_start"],
            }
        )
        prev_end = t["aggregate_end"]
    steady = sorted(r["wall_s"] for r in per_round if r["round"] > 1)
    med = lambda v: (v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2) if v else None
    ok = len(done) == rounds and all(r["replies"] == clients for r in per_round)
    return {
        "mode": mode,
        "clients": clients,
        "params": params,
        "rounds": rounds,
        "state": "succeeded" if ok and error is None else "failed",
        "error": error,
        "first_round_s": per_round[0]["wall_s"] if per_round else None,
        "steady_round_s_median": med(steady),
        "steady_round_s_min": steady[0] if steady else None,
        "steady_round_s_max": steady[-1] if steady else None,
        "steady_aggregate_s_median": med(sorted(r["aggregate_s"] for r in per_round if r["round"] > 1)),
        "steady_tree_cpu_s_median": med(sorted(r["tree_cpu_s"] for r in per_round if r["round"] > 1)),
        "tree_peak_rss": peak_rss,
        "total_wall_s": wall_total,
        "per_round": per_round,
    }


def one_simulation_case(clients, params, rounds, seed, out_path):
    from flwr.simulation import run_simulation

    timings = []
    sampler = TreeSampler(os.getpid())
    sampler.start()
    server_app, client_app = build_apps(clients, params, rounds, seed, timings, os.getpid())
    t0 = time.time()
    error = None
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=clients,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    except BaseException as e:  # noqa: BLE001 - reported in the JSON
        error = repr(e)
    sampler.stop = True
    sampler.join()
    result = summarize(clients, params, rounds, timings, sampler.peak, "simulation", time.time() - t0, error)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)


def machine():
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:")) / 1024 / 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["simulation", "deployment"], default="simulation")
    ap.add_argument("--grid", default=ISSUE_GRID)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--timeout", type=float, default=900, help="per case, seconds")
    ap.add_argument("--one-case", nargs=2, type=int, metavar=("N", "P"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one_case:
        one_simulation_case(*args.one_case, args.rounds, args.seed, args.out)
        return

    import flwr

    results = []
    for clients, params in parse_grid(args.grid):
        print(f"flower {args.mode}: {clients} clients x {params} parameters", file=sys.stderr, flush=True)
        out = f"/tmp/flower_rounds_{os.getpid()}_{clients}x{params}.json"
        if args.mode == "simulation":
            cmd = [sys.executable, os.path.abspath(__file__), "--one-case", str(clients), str(params),
                   "--rounds", str(args.rounds), "--seed", str(args.seed), "--out", out]
        else:
            cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "flower_deployment.py"),
                   str(clients), str(params), "--rounds", str(args.rounds), "--seed", str(args.seed), "--out", out]
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, timeout=args.timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if os.path.exists(out):
                r = json.load(open(out))
                os.remove(out)
            else:
                tail = "\n".join(proc.stderr.splitlines()[-15:])
                r = {"mode": args.mode, "clients": clients, "params": params, "rounds": args.rounds, "state": "failed",
                     "error": f"exit {proc.returncode}: {tail}"}
        except subprocess.TimeoutExpired:
            r = {"mode": args.mode, "clients": clients, "params": params, "rounds": args.rounds, "state": "failed",
                 "error": f"timed out after {args.timeout:.0f} s"}
        for line in [l for l in (r.get("error") or "").splitlines()][-5:]:
            print("  " + line, file=sys.stderr)
        print(
            f"  -> {r['state']}: first {r.get('first_round_s')}, steady median {r.get('steady_round_s_median')} s, "
            f"tree peak RSS {(r.get('tree_peak_rss') or 0) / 2**20:.0f} MiB ({time.time() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        results.append(r)
        if args.json:
            doc = {"flwr": flwr.__version__, "mode": args.mode, "machine": machine(), "rounds": args.rounds,
                   "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "cases": results}
            json.dump(doc, open(args.json, "w"), indent=2)
    print(f"{'N':>5} {'P':>10}  {'state':<9} {'first(s)':>9} {'steady(s)':>10}")
    for r in results:
        f = lambda v: "-" if v is None else f"{v:.3f}"
        print(f"{r['clients']:>5} {r['params']:>10}  {r['state']:<9} {f(r.get('first_round_s')):>9} {f(r.get('steady_round_s_median')):>10}")


if __name__ == "__main__":
    main()
