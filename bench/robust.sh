#!/usr/bin/env bash
# Robust aggregation's memory and round time against FedAvg's mean (issue #18), side by side in
# one sitting: `fedra-sim bench rounds` (a fedra-coordinator process, N sidecars over mutual
# TLS on loopback, trivial training) once per aggregation rule on the same case, and this
# script writes the "Robust aggregation: memory and round time" section of BENCHMARKS.md.
# Environment: CASE (default 100x10M), ROUNDS (2), RULES (mean median trimmed_mean:0.2
# norm_bound:3 multi_krum:10), OUT (target/bench-robust), SKIP_RUN=1 rewrites the section
# from an earlier run's JSON, NOTE="..." adds a line under the command.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-robust}
CASE=${CASE:-100x10M}
ROUNDS=${ROUNDS:-2}
RULES=${RULES:-mean median trimmed_mean:0.2 norm_bound:3 multi_krum:10}
mkdir -p "$OUT"
if [[ -z "${SKIP_RUN:-}" ]]; then
  cargo build --release -p fedra-sim -p fedra-coordinator
  uptime > "$OUT/load.txt"
  for rule in $RULES; do
    # Sidecars tolerate 2 minutes of coordinator silence: 100 × 10M keeps both cores busy.
    target/release/fedra-sim bench rounds --grid "$CASE" --rounds "$ROUNDS" --aggregator "$rule" \
      --heartbeat-seconds 10 --client-timeout-seconds 120 --json "$OUT/${rule%%:*}.json" | tee "$OUT/${rule%%:*}.txt"
  done
  uptime >> "$OUT/load.txt"
fi

OUT="$OUT" CASE="$CASE" ROUNDS="$ROUNDS" RULES="$RULES" NOTE="${NOTE:-}" python3 - <<'PY' > "$OUT/section.md"
import datetime, json, os
out, rules = os.environ["OUT"], os.environ["RULES"].split()
load = open(os.path.join(out, "load.txt")).read().strip().splitlines()
docs = [(r, json.load(open(os.path.join(out, r.split(":")[0] + ".json")))) for r in rules]
m = docs[0][1]["machine"]
mib = lambda b: f"{b / 2**20:.0f}"
f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
lines = [
    "## Robust aggregation: memory and round time",
    "",
    f"Command: `bash bench/robust.sh` (release build). For each rule it runs `target/release/fedra-sim bench rounds --grid {os.environ['CASE']} "
    f"--rounds {os.environ['ROUNDS']} --heartbeat-seconds 10 --client-timeout-seconds 120 --aggregator RULE` (one fedra-coordinator process, N sidecars in the benchmark process over mutual TLS on "
    "loopback, every client selected, trivial training), one rule after the other in the same sitting. "
    f"Measured {datetime.date.today().isoformat()} on {m['cores']} cores of `{m['cpu']}`, {m['memory_gib']:.0f} GiB RAM; "
    f"load average before / after: `{load[0].split('load average:')[-1].strip()}` / `{load[-1].split('load average:')[-1].strip()}`.",
]
if os.environ.get("NOTE"):
    lines += ["", os.environ["NOTE"]]
lines += [
    "",
    "Round: median of the steady rounds (all but the first). The robust rules spill every update to the coordinator's scratch "
    "file (N × P × 4 bytes on disk per round) and aggregate it in coordinate blocks through a 32 MiB buffer; the mean folds into "
    "an f64 running sum. RSS: the coordinator process's peak (`VmHWM`); bound: 3 × model + 64 MiB.",
    "",
    "| rule | N × P | state | round (s) | × mean | coordinator CPU/round (s) | peak RSS (MiB) | bound (MiB) | within |",
    "|---|---|---|---|---|---|---|---|---|",
]
base = None
for rule, doc in docs:
    for c in doc["cases"]:
        r = c.get("steady_round_s_median") or c.get("first_round_s")
        if rule == "mean":
            base = r
        ratio = f"{r / base:.2f}" if (r and base) else "-"
        within = "yes" if c["coordinator_peak_rss"] <= c["coordinator_rss_target"] else "no"
        lines.append(
            f"| `{rule}` | {c['clients']} × {c['params']:,} | {c['state']} | {f(r)} | {ratio} | "
            f"{f(c.get('steady_coordinator_cpu_s_median'))} | {mib(c['coordinator_peak_rss'])} | {mib(c['coordinator_rss_target'])} | {within} |"
        )
print("\n".join(lines))
PY
python3 bench/write_section.py < "$OUT/section.md"
