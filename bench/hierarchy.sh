#!/usr/bin/env bash
# Regional aggregators against one flat coordinator (issue #13), side by side in one sitting:
# `fedra-sim bench rounds --regions R` runs each case flat (one fedra-coordinator process and
# N sidecars) and then in tiers (a global fedra-coordinator process, R regional-aggregator
# processes, the N sidecars dealt over the regions), and this script writes the "Regional
# aggregators against a flat coordinator" section of BENCHMARKS.md from its JSON.
# Environment: GRID (default 30x1M,3000x100k), REGIONS (3), ROUNDS (5), OUT
# (target/bench-hierarchy), SKIP_RUN=1 rewrites the section from an earlier run's JSON,
# NOTE="..." adds a line under the command (e.g. which commit was measured).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-hierarchy}
GRID=${GRID:-30x1M,3000x100k}
REGIONS=${REGIONS:-3}
ROUNDS=${ROUNDS:-5}
mkdir -p "$OUT"
if [[ -z "${SKIP_RUN:-}" ]]; then
  cargo build --release -p fedra-sim -p fedra-coordinator
  uptime > "$OUT/load.txt"
  target/release/fedra-sim bench rounds --grid "$GRID" --rounds "$ROUNDS" --regions "$REGIONS" \
    --json "$OUT/tiers.json" | tee "$OUT/table.txt"
  uptime >> "$OUT/load.txt"
fi

OUT="$OUT" GRID="$GRID" REGIONS="$REGIONS" ROUNDS="$ROUNDS" NOTE="${NOTE:-}" python3 - <<'PY' > "$OUT/section.md"
import datetime, json, os
out = os.environ["OUT"]
doc = json.load(open(os.path.join(out, "tiers.json")))
load = open(os.path.join(out, "load.txt")).read().strip().splitlines()
m = doc["machine"]
mib = lambda b: f"{b / 2**20:.0f}" if b else "-"
f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
flat = {(c["clients"], c["params"]): c for c in doc["cases"]}
lines = [
    "## Regional aggregators against a flat coordinator",
    "",
    f"Command: `bash bench/hierarchy.sh` (release build). It runs `target/release/fedra-sim bench rounds --grid {os.environ['GRID']} "
    f"--rounds {os.environ['ROUNDS']} --regions {os.environ['REGIONS']}`: each case first flat (one fedra-coordinator process, N sidecars "
    "in the benchmark process over mutual TLS on loopback, every client selected, FedAvg of a logistic regression), then in tiers "
    "(a global fedra-coordinator process and R regional-aggregator processes, the same N sidecars dealt round-robin over the regions, "
    "each connected to its region's aggregator; the global coordinator starts last so that every aggregator registers with its "
    "whole inventory). "
    f"Measured {datetime.date.today().isoformat()} on {m['cores']} cores of `{m['cpu']}`, {m['memory_gib']:.0f} GiB RAM; "
    f"load average before / after: `{load[0].split('load average:')[-1].strip()}` / `{load[-1].split('load average:')[-1].strip()}` "
    "(the benchmark keeps every core busy; four coordinator processes and the sidecars share them in tiers).",
]
if os.environ.get("NOTE"):
    lines += ["", os.environ["NOTE"]]
lines += [
    "",
    "Round: median of the steady rounds (all but the first). Bytes: TCP payload per round on the flat coordinator's port "
    "(every client's model down and update up, kernel TCP counters of the sidecars' sockets) and into and out of the global "
    "coordinator (every aggregator RPC, TLS records, counted by a relay in the benchmark process in front of it). "
    "RSS: peak (`VmHWM`) of each process.",
    "",
    "| N × P | R | state flat / tiers | round flat (s) | round tiers (s) | ×flat | bytes/round flat (MB) | global tier (MB) | global ÷ 2·R·P·4 | global ÷ flat | peak RSS flat (MiB) | global (MiB) | largest regional (MiB) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for t in doc.get("tiered", []):
    c = flat.get((t["clients"], t["params"]), {})
    rf = c.get("steady_round_s_median") or c.get("first_round_s")
    rt = t.get("steady_round_s_median") or t.get("first_round_s")
    bf = c.get("wire_bytes_per_round") or c.get("first_round_wire_bytes")
    bt = t.get("global_bytes_per_round")
    lines.append(
        f"| {t['clients']:,} × {t['params']:,} | {t['regions']} | {c.get('state', '-')} / {t['state']} | {f(rf)} | {f(rt)} | "
        f"{f(rt / rf, 2) if rf and rt else '-'} | {f(bf / 1e6 if bf else None, 1)} | {f(bt / 1e6 if bt else None, 1)} | "
        f"{f(bt / t['ideal_global_bytes'] if bt else None, 3)} | {f(bt / bf if bt and bf else None, 3)} | "
        f"{mib(c.get('coordinator_peak_rss'))} | {mib(t['global_peak_rss'])} | {mib(t['regional_peak_rss_max'])} |"
    )
print("\n".join(lines))
PY
python3 bench/write_section.py < "$OUT/section.md"
