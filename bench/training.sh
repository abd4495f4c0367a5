#!/usr/bin/env bash
# Local training throughput of every model (burn, CPU) beside the same MLP and CNN in PyTorch
# (CPU), measured in one sitting on one thread and on every core. Writes the "Local training"
# section of BENCHMARKS.md.
#
# burn runs three ways: the workspace's build (burn's flex backend without its `rayon` and
# `simd` features: one thread), and a build with `--features cpu-parallel` on
# RAYON_NUM_THREADS=1 and on every core. PyTorch runs `bench/pytorch_mlp.py --cnn` (1 thread,
# then every core). $PYTHON picks the interpreter that has torch (default: ~/.venvs/torch if
# present, else python3); the PyTorch part is skipped with a note if torch is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
py_bin=${PYTHON:-$( [ -x ~/.venvs/torch/bin/python ] && echo ~/.venvs/torch/bin/python || echo python3 )}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
burn() { cargo bench -q -p fedra-client --bench training "$@" 2>/dev/null | grep '^{'; }
# Build both variants first so that no compilation runs while another variant is timed.
cargo bench -q -p fedra-client --bench training --no-run >/dev/null 2>&1
cargo bench -q -p fedra-client --bench training --features cpu-parallel --no-run >/dev/null 2>&1
serial=$(burn)
par1=$(RAYON_NUM_THREADS=1 burn --features cpu-parallel)
parn=$(RAYON_NUM_THREADS=$cores burn --features cpu-parallel)
py=$("$py_bin" bench/pytorch_mlp.py --cnn 2>/dev/null || true)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
SERIAL="$serial" PAR1="$par1" PARN="$parn" PY="$py" CORES="$cores" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
    python3 - <<'PY' | python3 bench/write_section.py
import json, os, datetime
rows = lambda key: [json.loads(l) for l in os.environ[key].splitlines() if l.strip()]
serial, par1, parn, py = rows("SERIAL"), rows("PAR1"), rows("PARN"), rows("PY")
cores = int(os.environ["CORES"])
by = lambda rs: {r["model"]: r["samples_per_s"] for r in rs}
s, p1, pn = by(serial), by(par1), by(parn)
t1 = {r["model"]: r["samples_per_s"] for r in py if r["threads"] == 1}
tn = {r["model"]: r["samples_per_s"] for r in py if r["threads"] != 1}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
fmt = lambda v: f"{v:,.0f}" if v else "n/a"
ratio = lambda a, b: f"{a / b:.2f}" if a and b else "n/a"
lines = ["## Local training (client, CPU)", "",
         f"Command: `bash bench/training.sh`. Measured {datetime.date.today()} on {cores} cores of `{cpu}`; "
         f"load average before {os.environ['LOAD_BEFORE']}, after {os.environ['LOAD_AFTER']}. burn 0.22 flex backend "
         "(release), one epoch, median of 5 after a warm-up; synthetic data. *serial*: the workspace's build (flex "
         "without `rayon`/`simd`); *rayon*: `--features cpu-parallel` (burn's `rayon` and `simd`) on 1 thread and on every core "
         "(`RAYON_NUM_THREADS`).", "",
         f"| model | parameters | batch | optimizer | burn serial | burn rayon 1 thread | burn rayon {cores} threads |",
         "|---|---:|---:|---|---:|---:|---:|"]
for r in serial:
    m = r["model"]
    lines.append(f"| {m} | {r['params']:,} | {r['batch']} | {r['optimizer']} | {fmt(s.get(m))} | {fmt(p1.get(m))} | {fmt(pn.get(m))} |")
lines.append("")
if py:
    lines += [f"Against PyTorch on CPU (`bench/pytorch_mlp.py --cnn`, same shapes and batches), samples/s, on 1 thread and on {cores}:", "",
              f"| model | torch 1 | burn best 1 | burn / torch, 1 thread | torch {cores} | burn best {cores} | burn / torch, {cores} threads |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for m in t1:
        b1 = max(v for v in (s.get(m), p1.get(m)) if v) if (s.get(m) or p1.get(m)) else None
        bn = max(v for v in (s.get(m), pn.get(m)) if v) if (s.get(m) or pn.get(m)) else None
        lines.append(f"| {m} | {fmt(t1[m])} | {fmt(b1)} | {ratio(b1, t1[m])} | {fmt(tn.get(m))} | {fmt(bn)} | {ratio(bn, tn.get(m))} |")
    lines.append("")
    lines.append(f"PyTorch {py[0]['torch']}. *burn best* is the faster of the serial and the rayon build at that thread count.")
else:
    lines.append("PyTorch was not installed when this was measured (`pip install torch numpy`), so no ratio is given.")
print("\n".join(lines))
PY
