#!/usr/bin/env bash
# DP noise throughput: fedra's exact lattice sampler on one thread and on all cores, OpenDP's
# exact make_gaussian and a plain rand_distr::Normal fill (one thread), side by side in one run.
# Writes the "DP noise sampling" section of BENCHMARKS.md.
# Extra arguments go to the bench binary, e.g. `--opendp-reps 2` or `--quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/noise_bench.json"
# No core pinning: the all-cores rows need every core; the 1-thread rows run on one thread.
load_before=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
cargo bench -p fedra-dp --bench noise --no-run
cargo bench -p fedra-dp --bench noise -- --out "$out" "$@"
LOAD_BEFORE="$load_before" OUT="$out" python3 - <<'PY' | python3 bench/write_section.py
import json, os, datetime
rows = json.load(open(os.environ["OUT"]))
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
def per_cpu(r):
    c = r.get("values_per_cpu_s")
    return f"{c:,.0f}" if c else "–"
def rate(what, n):
    for r in rows:
        if r["what"].startswith(what) and r["values"] == n:
            return r
    return None
load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
load_before = os.environ.get("LOAD_BEFORE", "?")
lines = [
    "## DP noise sampling",
    "",
    f"Command: `bash bench/noise.sh` (release build, `dp/benches/noise.rs`; fedra on 1 thread and on all {os.cpu_count()} cores, the other rows on 1 thread). Measured {datetime.date.today()} on {os.cpu_count()} cores of `{cpu}` (1-minute load average {load_before} before and {load} after the run: other jobs share this machine, so compare rows, not runs).",
    "Task: add noise of std σ = z·C (z = 1, C = 1, rounding slack 1e-3) to every coordinate of an f64 vector; values/s from the median of the reps, all rows from the same run.",
    "RNG: fedra uses `SecureRng` (ChaCha12, OS-seeded; on several threads, one ChaCha12 stream per thread under a key drawn from it); the Normal baseline uses `ChaCha12Rng` too; OpenDP draws from the OS per call (its own design).",
    "",
    "| sampler | values | reps | median time (s) | values/s | values per CPU-second | 10M values take (s) | notes |",
    "|---|---:|---:|---:|---:|---:|---:|---|",
]
opendp = None
for r in rows:
    if r["what"].startswith("OpenDP"):
        opendp = r
        continue
    if not r["what"].startswith("fedra DiscreteGaussian"):
        ten = r["median_s"] * 1e7 / r["values"]
        lines.append(f"| {r['what']} | {r['values']:,} | {r['reps']} | {r['median_s']:.3f} | {r['values_per_s']:,.0f} | {per_cpu(r)} | {ten:.2f}{'' if r['values'] == 10_000_000 else ' (scaled)'} | {r['note']} |")
if opendp:
    ten = opendp["median_s"] * 1e7 / opendp["values"]
    lines.append(f"| {opendp['what']} | {opendp['values']:,} | {opendp['reps']} | {opendp['median_s']:.1f} | {opendp['values_per_s']:,.0f} | – | {ten:,.0f} (extrapolated) | {opendp['note']} |")
lines += [
    "",
    "Values per CPU-second: values per second of CPU time, which other jobs on the machine disturb far less than the wall-clock rate; one-thread rows from the measuring thread's CPU time over all reps (`/proc/thread-self/schedstat`, which the kernel updates every few ms), several-thread rows from the whole process's CPU time over all reps (`/proc/self/stat`, 10 ms ticks), so they show whether splitting costs extra work, not the speed-up.",
    "",
    "OpenDP's 10M figure is extrapolated linearly from its 1M run (its cost is per value: one independent big-rational draw each); running 10M would take about as many seconds as the last column says.",
    "",
    "Single-value sampler (`DiscreteGaussian::sample`, integer σ² in lattice units, 1M draws):",
    "",
    "| σ² | values/s | values per CPU-second |",
    "|---|---:|---:|",
]
for r in rows:
    if r["what"].startswith("fedra DiscreteGaussian"):
        lines.append(f"| {r['what'].split('= ')[1]} | {r['values_per_s']:,.0f} | {per_cpu(r)} |")
fedra = rate("fedra LatticeGaussian::add_noise, 1 thread", 10_000_000)
multi = next((r for r in rows if r["what"].startswith("fedra LatticeGaussian::add_noise, ") and "threads" in r["what"] and r["values"] == 10_000_000), None)
normal = rate("rand_distr", 10_000_000)
if fedra:
    verdict = "met" if fedra["values_per_s"] >= 50e6 else "not met"
    lines += ["", f"Issue #17 target, at least 50M values/s on one core at 10M values: {verdict} here ({fedra['values_per_s'] / 1e6:.1f}M values/s wall-clock on 1 thread" + (f", {fedra['values_per_cpu_s'] / 1e6:.1f}M per CPU-second" if fedra.get("values_per_cpu_s") else "") + ")."]
    if multi:
        lines += ["", f"On all cores ({multi['what'].split(', ')[1]}): {multi['values_per_s'] / 1e6:.1f}M values/s, {multi['values_per_s'] / fedra['values_per_s']:.2f}× the 1-thread row (vectors of at least 2^20 values take this path in `add_noise`)."]
if fedra and normal:
    extra = f" and {fedra['values_per_s'] / opendp['values_per_s']:,.0f}× OpenDP's" if opendp else ""
    lines += ["", f"At 10M values fedra's exact sampler on one thread runs at {fedra['values_per_s'] / normal['values_per_s']:.0%} of the unsafe float fill's speed{extra}."]
print("\n".join(lines))
PY
