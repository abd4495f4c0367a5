#!/usr/bin/env bash
# Rounds before and after a change, side by side in one sitting: `fedra-sim bench rounds` over
# the issue grid for (1) an earlier build's binaries in $BASE_BIN (fedra-sim and
# fedra-coordinator, e.g. built from a worktree of the commit to compare against), (2) this
# tree with --insecure (plain text) and (3) this tree with mutual TLS (the default), then the
# same three in reverse order, and prints a Markdown table of the steady-round medians and
# coordinator CPU per round. Usage: BASE_BIN=/path/to/bin BASE_NAME=30cee5b bash bench/compare_rounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASE_BIN:?set BASE_BIN to a directory with an earlier fedra-sim and fedra-coordinator}"
BASE_NAME=${BASE_NAME:-base}
OUT=${OUT:-target/bench-compare}
GRID=${GRID:-10x1M,10x10M,100x1M,1000x100k}
mkdir -p "$OUT"
cargo build --release -p fedra-sim -p fedra-coordinator
uptime > "$OUT/load.txt"
run() { "$@" bench rounds --grid "$GRID" --rounds 5 --json "$OUT/$NAME.json" > "$OUT/$NAME.log" 2>&1 || true; }
NAME=base1 run "$BASE_BIN/fedra-sim"
NAME=plain1 run target/release/fedra-sim --insecure
NAME=tls1 run target/release/fedra-sim
NAME=tls2 run target/release/fedra-sim
NAME=plain2 run target/release/fedra-sim --insecure
NAME=base2 run "$BASE_BIN/fedra-sim"
uptime >> "$OUT/load.txt"
OUT="$OUT" BASE_NAME="$BASE_NAME" python3 - <<'PY'
import json, os
out = os.environ["OUT"]
def load(n):
    return {(c["clients"], c["params"]): c for c in json.load(open(os.path.join(out, n + ".json")))["cases"]}
runs = {n: load(n) for n in ["base1", "base2", "plain1", "plain2", "tls1", "tls2"]}
base = os.environ["BASE_NAME"]
print(f"| N × P | steady round (s): {base}, pass 1 / 2 | this tree, plain, 1 / 2 | this tree, mTLS, 1 / 2 | coordinator CPU s/round: {base} | plain | mTLS |")
print("|---|---:|---:|---:|---:|---:|---:|")
for key in runs["base1"]:
    def pair(a, b, f):
        return " / ".join(f"{runs[n][key][f]:.3f}" if key in runs[n] and runs[n][key][f] is not None else "–" for n in (a, b))
    print(f"| {key[0]:,} × {key[1]:,} | {pair('base1','base2','steady_round_s_median')} | {pair('plain1','plain2','steady_round_s_median')} | "
          f"{pair('tls1','tls2','steady_round_s_median')} | {pair('base1','base2','steady_coordinator_cpu_s_median')} | "
          f"{pair('plain1','plain2','steady_coordinator_cpu_s_median')} | {pair('tls1','tls2','steady_coordinator_cpu_s_median')} |")
PY
