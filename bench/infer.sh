#!/usr/bin/env bash
# The inference node (`fedra-sim bench infer`), written to BENCHMARKS.md's section of that
# name. BIN_DIR: a directory holding a release build of fedra-sim (default: build it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -p fedra-sim --bins
    BIN_DIR=target/release
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
table=$("$BIN_DIR/fedra-sim" bench infer "$@")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git rev-parse --short HEAD)
{
    echo "## Inference node"
    echo
    echo "Command: \`bash bench/infer.sh\` (release build). Measured $(date +%F) at commit $commit on $(nproc) cores; load average before / after: \`$load_before\` / \`$load_after\`. A coordinator and two sidecars train one round of each model (64 features, 10 classes; the MLP has hidden layers 256 and 128), the checkpoint is promoted to serving in eu, and an in-process inference node (the code \`fedra-infer\` runs) verifies and loads it. One gRPC client on loopback then sends 3,000 requests back to back per point, after 300 warm-up requests. Predictions/s and p50/p99 are the client's (the whole gRPC round trip); CPU seconds per 1,000 predictions are the node's per-request thread CPU time of the prediction itself (burn on the CPU), as the node reports it."
    echo
    echo "$table"
} | python3 bench/write_section.py
