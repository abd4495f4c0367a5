#!/usr/bin/env bash
# Local training throughput of every model (burn, CPU) beside the same MLP in PyTorch
# (CPU), measured in one sitting. Writes the "Local training" section of BENCHMARKS.md.
# Needs: pip install torch numpy (the PyTorch part is skipped with a note if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
rust=$(cargo bench -q -p fedra-client --bench training 2>/dev/null | grep '^{')
py=$(python3 bench/pytorch_mlp.py 2>/dev/null || true)
RUST="$rust" PY="$py" python3 - <<'PY' | python3 bench/write_section.py
import json, os, datetime
rust = [json.loads(l) for l in os.environ["RUST"].splitlines() if l.strip()]
py = [json.loads(l) for l in os.environ["PY"].splitlines() if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
lines = ["## Local training (client, CPU)", "",
         f"Command: `bash bench/training.sh`. Measured {datetime.date.today()} on {os.cpu_count()} cores of `{cpu}`; burn 0.22 flex backend (release), one epoch, median of 5 after a warm-up; synthetic data.", "",
         "| model | parameters | batch | optimizer | burn samples/s |", "|---|---:|---:|---|---:|"]
for r in rust:
    lines.append(f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['optimizer']} | {r['samples_per_s']:,.0f} |")
lines.append("")
if py:
    lines += ["Same MLP in PyTorch on CPU (`bench/pytorch_mlp.py`, same shapes, batch 64):", "",
              "| model | torch threads | torch samples/s | burn samples/s | burn / torch |", "|---|---:|---:|---:|---:|"]
    burn = {r["model"]: r["samples_per_s"] for r in rust}
    for p in py:
        b = burn.get(p["model"])
        ratio = f"{b / p['samples_per_s']:.2f}" if b else "n/a"
        lines.append(f"| {p['model']} | {p['threads']} | {p['samples_per_s']:,.0f} | {b:,.0f} | {ratio} |")
    lines.append("")
    lines.append(f"PyTorch {py[0]['torch']}.")
else:
    lines.append("PyTorch was not installed when this was measured (`pip install torch numpy`), so no ratio is given.")
print("\n".join(lines))
PY
