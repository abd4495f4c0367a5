#!/usr/bin/env bash
# Scale and store load (issue #15), SQLite and PostgreSQL side by side in one sitting:
#   1. `fedra-sim bench fleet`: 100,000 clients registered and subscribed through the round
#      engine (each registration a store write), all heartbeated, then a run that selects
#      1,000 of them: registrations per second, engine memory per registered client,
#      heartbeat cost, submit-to-selection time;
#   2. `fedra-sim bench rounds` at 1,000 x 100k (3 rounds) and 10,000 x 100k (1 round): round
#      wall time, coordinator CPU per round and peak RSS, coordinator process on SQLite, then
#      on PostgreSQL;
#   3. writes the "Scale and store load" section of BENCHMARKS.md.
# PostgreSQL: $PG (default postgres://postgres@127.0.0.1:5432/test); each store case gets a
# schema of its own, dropped afterwards. Environment: REGISTERED=100000, SELECT=1000,
# SKIP_10K=1 (skip the 10,000-client cases), OUT (default target/bench-scale).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-scale}
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
REGISTERED=${REGISTERED:-100000}
SELECT=${SELECT:-1000}
mkdir -p "$OUT"
cargo build --release -p fedra-sim -p fedra-coordinator
uptime > "$OUT/load.txt"

schemas=()
cleanup() { for s in "${schemas[@]}"; do psql -q "$PG" -c "DROP SCHEMA IF EXISTS $s CASCADE" || true; done; }
trap cleanup EXIT
fresh_schema() {
  local s="fedra_bench_$(date +%s%N | tail -c 10)"
  psql -q "$PG" -c "CREATE SCHEMA $s"
  schemas+=("$s")
  echo "$PG?options[search_path]=$s"
}

target/release/fedra-sim bench fleet --registered "$REGISTERED" --select "$SELECT" | tail -1 > "$OUT/fleet_sqlite.txt"
target/release/fedra-sim bench fleet --registered "$REGISTERED" --select "$SELECT" --store-url "$(fresh_schema)" \
  | tail -1 > "$OUT/fleet_postgres.txt"

target/release/fedra-sim bench rounds --grid 1000x100k --rounds 3 --json "$OUT/rounds_sqlite.json" || true
target/release/fedra-sim bench rounds --grid 1000x100k --rounds 3 --store-url "$(fresh_schema)" \
  --json "$OUT/rounds_postgres.json" || true
if [[ -z "${SKIP_10K:-}" ]]; then
  target/release/fedra-sim bench rounds --clients 10000 --params 100000 --rounds 1 --heartbeat-seconds 10 \
    --client-timeout-seconds 120 --json "$OUT/rounds10k_sqlite.json" || true
  target/release/fedra-sim bench rounds --clients 10000 --params 100000 --rounds 1 --heartbeat-seconds 10 \
    --client-timeout-seconds 120 --store-url "$(fresh_schema)" --json "$OUT/rounds10k_postgres.json" || true
fi
uptime >> "$OUT/load.txt"

python3 - "$OUT" "$(git rev-parse --short HEAD)" <<'PY' | python3 bench/write_section.py
import json, os, sys
out, commit = sys.argv[1], sys.argv[2]
load = open(os.path.join(out, "load.txt")).read().strip().splitlines()
print("## Scale and store load (SQLite vs PostgreSQL)\n")
print(f"Command: `bash bench/scale.sh` (release build), measured at commit {commit}; load average before / after: "
      f"`{load[0].strip()}` / `{load[-1].strip()}` (2 cores; nothing else should run).\n")
print("The round engine with a large registered fleet, in-process (`fedra-sim bench fleet`): each registration is a "
      "real store write, every client holds an open task stream, and the run needs the whole selected cohort.\n")
print("| store | registered | selected | registrations / s | engine bytes / registered client | heartbeat µs (mean) | submit → selected (s) | peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name in ("fleet_sqlite.txt", "fleet_postgres.txt"):
    p = os.path.join(out, name)
    if os.path.exists(p):
        print(open(p).read().strip())
print("\nEnd-to-end rounds against a `fedra-coordinator` process (`fedra-sim bench rounds`, the workload of "
      "\"End-to-end rounds\"), on each store.\n")
print("| N × P | store | state | first round (s) | steady round, median (s) | coordinator CPU s / round (steady, or first) | coordinator peak RSS MiB |")
print("|---|---|---|---:|---:|---:|---:|")
def fmt(v, d=3):
    return "–" if v is None else f"{v:.{d}f}"
for name, store in (("rounds_sqlite.json", "SQLite"), ("rounds_postgres.json", "PostgreSQL"),
                    ("rounds10k_sqlite.json", "SQLite"), ("rounds10k_postgres.json", "PostgreSQL")):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        continue
    for c in json.load(open(p))["cases"]:
        cpu = c.get("steady_coordinator_cpu_s_median") or c.get("first_round_coordinator_cpu_s")
        print(f"| {c['clients']:,} × {c['params']:,} | {store} | {c['state']} | {fmt(c.get('first_round_s'))} | "
              f"{fmt(c.get('steady_round_s_median'))} | {fmt(cpu)} | {c['coordinator_peak_rss'] / 2**20:.0f} |")
PY
