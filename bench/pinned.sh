#!/usr/bin/env bash
# Memory that certified but hostile connections can pin in a coordinator process
# (`fedra-sim bench pinned-memory`), written to BENCHMARKS.md's section of that name.
# BIN_DIR: a directory holding release builds of fedra-sim and fedra-coordinator (default:
# build them into target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -p fedra-sim -p fedra-coordinator --bins
    BIN_DIR=target/release
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
table=$("$BIN_DIR/fedra-sim" bench pinned-memory --coordinator "$BIN_DIR/fedra-coordinator")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git rev-parse --short HEAD)
{
    echo "## Memory a hostile connection can pin"
    echo
    echo "Command: \`bash bench/pinned.sh\` (release builds). Measured $(date +%F) at commit $commit on $(nproc) cores; load average before / after: \`$load_before\` / \`$load_after\`. A raw HTTP/2 client (h2 over rustls, one client certificate) opens as many connections as one identity may hold (8) to a real \`fedra-coordinator\` process, 16 \`PushUpdate\` streams on each (the server's limit), and on every stream announces a message of the largest size FleetService accepts (3 MiB + 64 KiB) and sends all of it but the last byte. RSS is the coordinator's VmRSS; \"per connection\" is (pinned − before) / connections; the bound is SECURITY.md's (one 16 MiB connection window + 16 partial messages). Then one more connection with the same certificate is tried (it must be refused), an honest scientist lists runs (it must be answered), and the hostile connections are closed."
    echo
    echo "$table"
} | python3 bench/write_section.py
