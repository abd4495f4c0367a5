#!/usr/bin/env bash
# Streaming aggregation throughput beside memcpy, measured side by side in one run.
# Writes the "Streaming aggregation" section of BENCHMARKS.md from criterion's medians.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p fedra-coordinator --bench aggregation -- --noplot "$@"
python3 - <<'PY' | python3 bench/write_section.py
import json, os, re, platform, subprocess, datetime
root = "target/criterion"
rows = []
for group in sorted(os.listdir(root)):
    if not group.startswith("aggregation_"):
        continue
    for name in ["memcpy", "decode_chunks", "fold_staged", "decode_and_fold", "verify_decode_and_fold", "fold_fixed", "stream_fold", "stream_fold_spilled", "stream_fold_2_uploads"]:
        gdir = os.path.join(root, group, name)
        if not os.path.isdir(gdir):
            continue
        for param in os.listdir(gdir):
            est = os.path.join(gdir, param, "new", "estimates.json")
            bench = os.path.join(gdir, param, "new", "benchmark.json")
            if not os.path.exists(est):
                continue
            median_ns = json.load(open(est))["median"]["point_estimate"]
            params = int(param)
            uploads = 2 if name == "stream_fold_2_uploads" else 1
            gbps = uploads * params * 4 / median_ns  # bytes per ns == GB/s
            rows.append((params, name, median_ns / 1e6, gbps))
order = {n: i for i, n in enumerate(["memcpy", "decode_chunks", "fold_staged", "decode_and_fold", "verify_decode_and_fold", "fold_fixed", "stream_fold", "stream_fold_spilled", "stream_fold_2_uploads"])}
rows.sort(key=lambda r: (r[0], order[r[1]]))
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
lines = [
    "## Streaming aggregation (coordinator hot path)",
    "",
    f"Command: `bash bench/aggregation.sh` (criterion, release build, one core). Measured {datetime.date.today()} on {os.cpu_count()} cores of `{cpu}`.",
    "GB/s are update bytes (4 bytes per f32 parameter) per second, from criterion's median; memcpy copies the same number of bytes in the same run.",
    "",
    "| parameters | step | median time (ms) | GB/s | vs memcpy |",
    "|---:|---|---:|---:|---:|",
]
memcpy = {p: g for p, n, _, g in rows if n == "memcpy"}
for p, n, ms, g in rows:
    lines.append(f"| {p:,} | {n} | {ms:.2f} | {g:.2f} | {g / memcpy[p]:.0%} |")
lines.append("")
lines.append("Steps: `decode_chunks` turns 1 MiB little-endian gRPC chunks into the staging buffer; `fold_staged` adds a staged update, weighted, into the f64 running sum (private rounds); `decode_and_fold` is both; `verify_decode_and_fold` adds what the upload handler also does per update on the staged path (a finiteness check of every value and the XXH3-128 transfer digest of the payload that the trailer declares). `fold_fixed` folds a staged update into the fixed-point sum of plain rounds on every core, then subtracts it (two passes per iteration, both counted). `stream_fold` is the streamed path of plain rounds, what one client's update costs the coordinator there: per received chunk the digest and a fixed-point fold straight from the chunk's bytes, on one thread; `stream_fold_spilled` adds appending each chunk to the upload's spill file (page cache) first; `stream_fold_2_uploads` is two uploads streaming at once into the same sum, each on its own thread (its GB/s counts both uploads' bytes; the sum's shards are locked per chunk). At 1M parameters (4 MB) everything stays in cache, so memcpy there is cache bandwidth; the 10M rows are the memory-bound case.")
print("\n".join(lines))
PY
