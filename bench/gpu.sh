#!/usr/bin/env bash
# The GPU path, built here and measured on a GPU machine, in three steps:
#
#   bash bench/gpu.sh build            # here: release builds with the client's `wgpu` feature into .gpu/
#   bash bench/gpu.sh device           # on the GPU machine, from the repo root with .gpu/ (and .gl/): writes $OUT
#   bash bench/gpu.sh section DIR      # here: BENCHMARKS.md's "Local training on a GPU" from DIR's results
#
# What `device` measures, in one sitting: burn's training throughput on the GPU (wgpu over
# Vulkan) and on that machine's CPU (flex backend), PyTorch CUDA on the same models and
# shapes (bench/pytorch_mlp.py --device cuda), then the quickstart with `--device wgpu`
# (a coordinator and six sidecars whose local training runs on the GPU).
#
# Why wgpu and not CUDA: burn 0.22's `cuda` feature pulls cubecl-cuda, which depends on
# cubecl-llvm unconditionally, whose build script (tracel-llvm-bundler) downloads an LLVM
# 23 bundle from GitHub; nothing but the package registries is reachable here, and no
# Debian LLVM is version 23. `--features cuda` therefore cannot build offline; wgpu can.
#
# `.gl/` holds the Vulkan/GL loader packages (libvulkan1 …) for machines whose image has no
# loader; see the device tool's README. FEDRA_BENCH_SCALE (default 10) multiplies every
# case's sample count so that a GPU epoch is long enough to time.
set -euo pipefail
cd "$(dirname "$0")/.."

step=${1:-}
case "$step" in
build)
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/gpu}
    cargo build --release -p fedra-sim --features wgpu --bin fedra-sim
    bench=$(cargo bench -p fedra-client --features wgpu --bench training --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "training" and m.get("executable"):
        print(m["executable"])')
    mkdir -p .gpu
    cp "$CARGO_TARGET_DIR/release/fedra-sim" .gpu/fedra-sim
    cp "$bench" .gpu/training
    strip .gpu/fedra-sim .gpu/training
    # Compressed, both fit the device tool's 64 MiB carry limit (137 MB stripped, 24 MB xz).
    xz -T0 -6 -f .gpu/fedra-sim .gpu/training
    ls -la .gpu
    ;;
device)
    out=${OUT:-.gpu/out}
    mkdir -p "$out"
    for f in .gpu/*.xz; do
        [ -e "$f" ] || continue
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], "wb"))' "$f"
        chmod +x "${f%.xz}"
    done
    if ! ldconfig -p | grep -q libvulkan && ls .gl/*.deb >/dev/null 2>&1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
    scale=${FEDRA_BENCH_SCALE:-10}
    # wgpu falls back to a CPU adapter (lavapipe) when it finds no GPU; pin the discrete
    # GPU so that a missing driver fails loudly instead of measuring the CPU.
    export CUBECL_WGPU_DEFAULT_DEVICE=${CUBECL_WGPU_DEFAULT_DEVICE:-DiscreteGpu(0)}
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        nproc
        grep -m1 'model name' /proc/cpuinfo || true
        python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' || true
    } >"$out/machine.txt" 2>&1
    # burn on the GPU, then on the CPU of the same machine (one thread: the workspace builds
    # burn's flex backend without rayon), then PyTorch CUDA. Each line is one JSON object.
    # GPU utilisation once a second while burn trains on it: proof the GPU did the work.
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 >"$out/gpu_util.csv" 2>&1 &
    smi=$!
    FEDRA_BENCH_DEVICE=wgpu FEDRA_BENCH_SCALE=$scale timeout 200 .gpu/training >"$out/burn_wgpu.jsonl" 2>"$out/burn_wgpu.err" || echo "burn wgpu exited $?" >>"$out/burn_wgpu.err"
    kill "$smi" 2>/dev/null || true
    FEDRA_BENCH_DEVICE=cpu FEDRA_BENCH_SCALE=1 timeout 60 .gpu/training >"$out/burn_cpu.jsonl" 2>"$out/burn_cpu.err" || echo "burn cpu exited $?" >>"$out/burn_cpu.err"
    timeout 90 python3 bench/pytorch_mlp.py --device cuda --cnn --scale "$scale" >"$out/torch_cuda.jsonl" 2>"$out/torch_cuda.err" || echo "torch exited $?" >>"$out/torch_cuda.err"
    start=$(date +%s.%N)
    timeout 90 .gpu/fedra-sim quickstart --device wgpu --out /tmp/fedra-gpu-quickstart >"$out/quickstart.txt" 2>&1 && qs=0 || qs=$?
    end=$(date +%s.%N)
    echo "{\"exit\": $qs, \"seconds\": $(python3 -c "print(round($end - $start, 2))")}" >"$out/quickstart.json"
    tail -n 5 "$out"/*.err 2>/dev/null || true
    cat "$out"/*.jsonl "$out/quickstart.json"
    ;;
section)
    dir=${2:?usage: bash bench/gpu.sh section DIR}
    DIR="$dir" python3 - <<'PY' | python3 bench/write_section.py
import json, os, datetime
d = os.environ["DIR"]
def rows(name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
machine = open(os.path.join(d, "machine.txt")).read().split("\n")
wgpu, cpu, torch = rows("burn_wgpu.jsonl"), rows("burn_cpu.jsonl"), rows("torch_cuda.jsonl")
qs = json.load(open(os.path.join(d, "quickstart.json")))
by = lambda rs: {r["model"]: r for r in rs}
w, c, t = by(wgpu), by(cpu), by(torch)
lines = ["## Local training on a GPU (client)", "",
         f"Command: `bash bench/gpu.sh build` here, `bash bench/gpu.sh device` on the GPU machine, `bash bench/gpu.sh section DIR`. "
         f"Measured {datetime.date.today()} on {machine[0].strip()} with {machine[1].strip()} CPU cores ({machine[2].split(':')[-1].strip()}); "
         f"{machine[3].strip()}. burn 0.22 wgpu backend (Vulkan) vs PyTorch CUDA (data resident on the GPU), same models and shapes, "
         "one epoch, median of 5 after a warm-up; burn on that machine's CPU (flex, one thread) for scale.", "",
         "| model | parameters | batch | samples/epoch (GPU) | burn wgpu samples/s | PyTorch CUDA samples/s | burn / PyTorch | burn CPU samples/s | burn GPU / CPU |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for name in [r["model"] for r in (wgpu or cpu)]:
    a, b, e = w.get(name), t.get(name), c.get(name)
    f = lambda r: f"{r['samples_per_s']:,.0f}" if r else "n/a"
    ratio = lambda x, y: f"{x['samples_per_s'] / y['samples_per_s']:.2f}" if x and y else "n/a"
    ref = a or e
    lines.append(f"| {name} | {ref['params']:,} | {ref['batch']} | {a['samples'] if a else 'n/a'} | {f(a)} | {f(b)} | {ratio(a, b)} | {f(e)} | {ratio(a, e)} |")
lines += ["", f"Quickstart with `--device wgpu` (coordinator and six sidecars training on the GPU, mTLS): exit {qs['exit']}, {qs['seconds']} s wall."]
print("\n".join(lines))
PY
    ;;
*)
    echo "usage: bash bench/gpu.sh build|device|section DIR" >&2
    exit 64
    ;;
esac
