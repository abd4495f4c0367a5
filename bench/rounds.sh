#!/usr/bin/env bash
# End-to-end rounds, fedra vs Flower (issue #6), measured side by side in one sitting:
#   1. fedra: `fedra-sim bench rounds` over the issue's grid (10x1M, 10x10M, 100x1M, 1000x100k,
#      5 rounds) and the 10,000 x 100k one-round case, each against a fresh fedra-coordinator
#      process with N real sidecars over loopback gRPC;
#   2. Flower 1.42 over the same grid with the same trivial workload (bench/flower_rounds.py):
#      simulation mode on the whole grid, deployment mode (SuperLink + SuperNodes on loopback)
#      on $DEPLOY_GRID (default 10x1M,10x10M); with the Python in $FLOWER_PYTHON (default:
#      the first of ~/.venvs/flwr/bin/python, python3 that can import flwr);
#   3. writes the "End-to-end rounds (fedra vs Flower)" section of BENCHMARKS.md.
# Environment: SKIP_FEDRA=1, SKIP_INPROC=1, SKIP_10K=1, SKIP_FLOWER=1, SKIP_DEPLOY=1 reuse the JSON of an earlier run in
# $OUT (default target/bench-rounds); GRID=10x1M,... and ROUNDS=5 change the grid; NOTE="..."
# adds a line under the command (e.g. which commit was measured).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-rounds}
GRID=${GRID:-10x1M,10x10M,100x1M,1000x100k}
ROUNDS=${ROUNDS:-5}
DEPLOY_GRID=${DEPLOY_GRID:-10x1M,10x10M}
mkdir -p "$OUT"
if [[ -z "${SKIP_FEDRA:-}" || -z "${SKIP_10K:-}" || -z "${SKIP_FLOWER:-}" ]]; then MEASURING=1; else MEASURING=; fi
[[ -n "$MEASURING" ]] && uptime > "$OUT/load.txt"

if [[ -z "${SKIP_FEDRA:-}" || -z "${SKIP_10K:-}" ]]; then
  cargo build --release -p fedra-sim -p fedra-coordinator
fi
if [[ -z "${SKIP_FEDRA:-}" ]]; then
  target/release/fedra-sim bench rounds --grid "$GRID" --rounds "$ROUNDS" --json "$OUT/fedra.json" || true
fi
if [[ -z "${SKIP_INPROC:-}" ]]; then
  target/release/fedra-sim bench rounds --grid "$GRID" --rounds "$ROUNDS" --transport inproc \
    --json "$OUT/fedra_inproc.json" || true
fi
if [[ -z "${SKIP_10K:-}" ]]; then
  target/release/fedra-sim bench rounds --clients 10000 --params 100000 --rounds 1 \
    --heartbeat-seconds 10 --client-timeout-seconds 120 --json "$OUT/fedra_10k.json" || true
fi
if [[ -z "${SKIP_FLOWER:-}" ]]; then
  PY=${FLOWER_PYTHON:-}
  if [[ -z "$PY" ]]; then
    for c in "$HOME/.venvs/flwr/bin/python" python3; do
      if command -v "$c" >/dev/null && "$c" -c 'import flwr' 2>/dev/null; then PY=$c; break; fi
    done
  fi
  if [[ -n "$PY" ]]; then
    "$PY" bench/flower_rounds.py --grid "$GRID" --rounds "$ROUNDS" --json "$OUT/flower_simulation.json" || true
    if [[ -z "${SKIP_DEPLOY:-}" ]]; then
      "$PY" bench/flower_rounds.py --mode deployment --grid "$DEPLOY_GRID" --rounds "$ROUNDS" \
        --json "$OUT/flower_deployment.json" || true
    fi
  else
    echo "flwr not importable: install with pip install \"flwr[simulation]==1.42.*\"; using the issue's reference numbers" >&2
    rm -f "$OUT/flower_simulation.json"
  fi
fi
[[ -n "$MEASURING" ]] && uptime >> "$OUT/load.txt"

OUT="$OUT" GRID="$GRID" ROUNDS="$ROUNDS" DEPLOY_GRID="$DEPLOY_GRID" NOTE="${NOTE:-}" python3 - <<'PY' > "$OUT/section.md"
import datetime, json, os
out = os.environ["OUT"]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
fedra, fedra10k, flower = load("fedra.json"), load("fedra_10k.json"), load("flower_simulation.json")
inproc = {(c["clients"], c["params"]): c for c in (load("fedra_inproc.json") or {}).get("cases", [])}
deploy = load("flower_deployment.json")
# The issue's reference figures ("measured on this kind of machine"), used where Flower did
# not run in this sitting.
REF_SIM = {(10, 1_000_000): 0.36, (10, 10_000_000): 1.85, (100, 1_000_000): 2.5, (1000, 100_000): 18.7}
REF_DEPLOY = {(10, 1_000_000): "≈ 13", (10, 10_000_000): "≈ 22", (100, 1_000_000): "cannot run (24 GiB)", (1000, 100_000): "not tried"}
MiB = 1024 * 1024
def f(v, d=3):
    return "–" if v is None else f"{v:.{d}f}"
m = (fedra or fedra10k or {}).get("machine", {})
load_txt = open(os.path.join(out, "load.txt")).read().strip().replace("\n", " / ") if os.path.exists(os.path.join(out, "load.txt")) else "?"
lines = [
    "## End-to-end rounds (fedra vs Flower)",
    "",
    f"Command: `bash bench/rounds.sh` (release build). It runs `target/release/fedra-sim bench rounds --grid {os.environ['GRID']} --rounds {os.environ['ROUNDS']} --json {out}/fedra.json`, "
    f"`target/release/fedra-sim bench rounds --clients 10000 --params 100000 --rounds 1 --heartbeat-seconds 10 --client-timeout-seconds 120`, and "
    f"`python bench/flower_rounds.py --grid {os.environ['GRID']} --rounds {os.environ['ROUNDS']}` (Flower {flower['flwr'] if flower else 'not run'}, simulation mode, Ray backend, 1 CPU per virtual client) and "
    f"`python bench/flower_rounds.py --mode deployment --grid {os.environ['DEPLOY_GRID']}` (flower-superlink + one flower-supernode process per client on loopback, `flwr run`) back to back. "
    f"Measured {datetime.date.today()} on {m.get('cores', '?')} cores of `{m.get('cpu', '?')}`, {m.get('memory_gib', 0):.0f} GiB RAM, Linux {m.get('kernel', '?')}; load average before / after: `{load_txt}` (other builds may share the machine).",
    "",
] + ([os.environ["NOTE"], ""] if os.environ.get("NOTE") else []) + [
    "Workload: every client is selected every round, FedAvg, evaluation off; local training returns the received parameters plus a seeded per-client uniform perturbation of amplitude 1e-3 (samples = 1), so no two updates are equal. "
    "fedra's model is a logistic regression with 10 classes and input_dim = P/10 − 1, i.e. exactly P float32 parameters (more classes above 10.5M parameters, see \"A 1 GB model\"). "
    "Each case starts a fresh `fedra-coordinator` process (log level warn, heartbeats every 5 s) and N sidecars in the bench process, one gRPC connection each; the coordinator's CPU and peak RSS are read from its own `/proc/<pid>`. "
    "A round lasts from the previous round's `Published` event (round 1: the submit call) to its own; a round's checkpoint is written while the next round selects and trains, so the steady rounds are those between the first and the last (the last has nothing to overlap its own write with); Flower's round is timed the same way inside its strategy (end of `aggregate_train` to end of `aggregate_train`). "
    "Wire bytes are the kernel's TCP payload counters (`TCP_INFO` bytes_acked + bytes_received) of the sidecars' connections over the whole run, per round, against the ideal 2·N·P·4 (all HTTP/2, gRPC and protobuf framing and heartbeats included; TCP/IP headers not). "
    "Aggregation throughput is given two ways: update bytes (N·P·4) per coordinator CPU second of a steady round (all the coordinator's per-round CPU, gRPC and kernel TCP included, charged to aggregation: a lower bound), and update bytes per second of the fold itself, as the coordinator reports it in the round's Aggregated event (fold GB/s; memcpy on this machine is 7.5–12.6 GB/s, see \"Streaming aggregation\").",
    "",
    "| N × P | state | first round (s) | steady round, median (min–max) (s) | coordinator CPU s / round | aggregation GB/s (≥) | fold GB/s | coordinator peak RSS MiB (target) | wire MB / round (× ideal) | sidecar process CPU s / round |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
cases = (fedra or {}).get("cases", []) + (fedra10k or {}).get("cases", [])
for c in cases:
    wire = c.get("wire_bytes_per_round") or c.get("first_round_wire_bytes")
    cpu = c.get("steady_coordinator_cpu_s_median") or c.get("first_round_coordinator_cpu_s")
    lines.append(
        f"| {c['clients']:,} × {c['params']:,} | {c['state']} | {f(c.get('first_round_s'))} | "
        + (f"{f(c.get('steady_round_s_median'))} ({f(c.get('steady_round_s_min'))}–{f(c.get('steady_round_s_max'))})" if c.get('steady_round_s_median') is not None else "–")
        + f" | {f(cpu)} | "
        f"{f(c.get('aggregation_gbps_lower_bound'), 2)} | {f(c.get('fold_gbps'), 2)} | {c['coordinator_peak_rss'] / MiB:.0f} ({c['coordinator_rss_target'] / MiB:.0f}) | "
        f"{(wire or 0) / 1e6:.1f} ({f(c.get('wire_ratio'), 4)}) | {f(c.get('steady_bench_cpu_s_median'), 2)} |"
    )
fl = {(c["clients"], c["params"]): c for c in (flower or {}).get("cases", [])}
dep = {(c["clients"], c["params"]): c for c in (deploy or {}).get("cases", [])}
lines += [
    "",
    "fedra against Flower, steady-state round wall time (median). Target: fedra ≤ 1/10 of Flower simulation.",
    "",
    "The floor is the same case with no protocol (`bench rounds` measures it right after each case, see `sim/src/bench_rounds/floor.rs`): a server process and N client tasks on loopback TCP move the round's 2·N·P·4 bytes, the server folds each upload once as it arrives. Target: within 2× of the floor where P ≥ 1M.",
    "",
    "`fedra inproc` is `bench rounds --transport inproc`: the same engine and sidecar session code, the coordinator in the bench process, models and updates handed over as shared buffers instead of gRPC chunks (simulation only; the gRPC services stay the production path).",
    "",
    "| N × P | fedra (s) | floor (s) | fedra / floor | fedra inproc (s) | Flower simulation, this sitting (s) | fedra / Flower | inproc / Flower | target ≤ 0.1 | Flower simulation, issue reference (s) | Flower deployment, this sitting (s) | fedra / Flower deployment | Flower deployment, issue reference (s) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
]
misses = []
for c in (fedra or {}).get("cases", []):
    key = (c["clients"], c["params"])
    ours = c.get("steady_round_s_median")
    theirs_case = fl.get(key)
    theirs = theirs_case.get("steady_round_s_median") if theirs_case and theirs_case.get("state") == "succeeded" else None
    base = theirs if theirs is not None else REF_SIM.get(key)
    label = "" if theirs is not None else " (vs reference)"
    ratio = ours / base if ours is not None and base else None
    ip = inproc.get(key, {}).get("steady_round_s_median")
    ip_ratio = ip / base if ip is not None and base else None
    best = min(r for r in (ratio, ip_ratio) if r is not None) if (ratio, ip_ratio) != (None, None) else None
    ok = "–" if best is None else ("met" if best <= 0.1 else f"missed by {best / 0.1:.1f}×")
    if ip_ratio is not None and ip_ratio > 0.1:
        misses.append(f"round time at {c['clients']:,} × {c['params']:,} in process: {ip_ratio:.3f} of Flower simulation{label}, {ip_ratio / 0.1:.1f}× the target")
    over = c.get("round_over_floor")
    if over is not None and over > 2 and c["params"] >= 1_000_000:
        misses.append(f"round time at {c['clients']:,} × {c['params']:,}: {over:.2f}× the floor, target 2×")
    if ratio is not None and ratio > 0.1:
        misses.append(f"round time at {c['clients']:,} × {c['params']:,}: {ratio:.3f} of Flower{label}, {ratio / 0.1:.1f}× the target")
    lines.append(
        f"| {c['clients']:,} × {c['params']:,} | {f(ours)} | {f(c.get('floor_round_s'))} | {f(c.get('round_over_floor'), 2)} | {f(ip)} | {f(theirs) if theirs_case else 'not run'}"
        f"{'' if not theirs_case or theirs_case.get('state') == 'succeeded' else ' (' + theirs_case.get('state', '?') + ')'} | "
        f"{f(ratio)}{label} | {f(ip_ratio)} | {ok} | {REF_SIM.get(key, '–')} | "
        + (f"{f(dep[key].get('steady_round_s_median'))}{'' if dep[key].get('state') == 'succeeded' else ' (' + dep[key].get('state', '?') + ')'} | "
           f"{f(ours / dep[key]['steady_round_s_median']) if ours is not None and dep[key].get('steady_round_s_median') else '–'} | " if key in dep else "not run | – | ")
        + f"{REF_DEPLOY.get(key, '–')} |"
    )
lines += ["", "Other targets:", ""]
for c in cases:
    size = f"{c['clients']:,} × {c['params']:,}"
    if c["coordinator_peak_rss"]:
        r = c["coordinator_peak_rss"] / c["coordinator_rss_target"]
        if r > 1:
            misses.append(f"peak RSS at {size}: {c['coordinator_peak_rss'] / MiB:.0f} MiB, {r:.2f}× the target")
    if c.get("wire_ratio") is not None and abs(c["wire_ratio"] - 1) > 0.05:
        misses.append(f"wire bytes at {size}: {c['wire_ratio']:.3f}× ideal")
    if c["clients"] >= 10000 and c["state"] != "succeeded":
        misses.append(f"{size} in one round did not complete: {c.get('error')}")
big = [c for c in cases if c["clients"] >= 10000]
# Only from 1,000 clients up: below that the growth is the process's own warm-up (threads,
# TLS and store caches), not what a connection costs.
idle = [(c, c.get("idle_bytes_per_connection")) for c in cases if c.get("idle_bytes_per_connection") is not None and c["clients"] >= 1000]
if idle:
    lines.append(
        "- idle connection cost ≤ 16 KiB per connected client (coordinator RSS growth from before the sidecars connect to all connected and idle, per client): "
        + "; ".join(f"{c['clients']:,} clients {b / 1024:.1f} KiB" for c, b in idle)
    )
    for c, b in idle:
        if b > 16 * 1024:
            misses.append(f"idle connection cost at {c['clients']:,} clients: {b / 1024:.1f} KiB per client, target 16 KiB")
lines.append(
    "- coordinator peak RSS ≤ 3 × model + 64 MiB at every N: "
    + ("met" if all(c["coordinator_peak_rss"] and c["coordinator_peak_rss"] <= c["coordinator_rss_target"] for c in cases) else "missed (see below)")
)
lines.append(
    "- bytes on the wire within 5 % of 2·N·P·4: "
    + ("met on every case that completed a round" if all(abs(c["wire_ratio"] - 1) <= 0.05 for c in cases if c.get("wire_ratio") is not None) else "missed (see below)")
)
lines.append(
    "- 10,000 clients × 100k parameters, one round: "
    + (f"{big[0]['state']}, round {f(big[0].get('first_round_s'))} s, sidecars connected in {big[0]['connect_s']:.0f} s" if big else "not run")
)
if misses:
    lines += ["", "Missed, by how much:", ""] + [f"- {m}" for m in misses]
print("\n".join(lines))
PY
python3 bench/write_section.py < "$OUT/section.md"
