#!/usr/bin/env bash
# dev/gemm_cuda/run.sh — build every CUDA SGEMM step with nvcc, run each on GPU 0, print a table.
#
# Usage: dev/gemm_cuda/run.sh [M N K [repeats]]    defaults: 4096 4096 4096, 10
# ARCH picks the target (default: native, the GPU in this machine; e.g. ARCH=sm_90 to build
# elsewhere). Steps 04-07 need M, N multiples of 128 and K of 32. A step's figure is the median
# of its cudaEvent-timed repeats after one warm-up launch, whose result is also the one checked.
# Exits 1 when any step fails its check. Binaries go to a temporary directory (BUILD_DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${1:-4096} N=${2:-4096} K=${3:-4096} REPS=${4:-10}
ARCH=${ARCH:-native}
build=${BUILD_DIR:-$(mktemp -d)}
[[ -n ${BUILD_DIR:-} ]] || trap 'rm -rf "$build"' EXIT

status=0
for src in "$here"/[0-9][0-9]_*.cu; do
    step=$(basename "$src" .cu)
    nvcc -arch="$ARCH" -O3 -std=c++17 -o "$build/$step" "$src"
    "$build/$step" "$M" "$N" "$K" "$REPS" | tee -a "$build/lines.txt" || status=1
done
echo
echo "$(nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null \
      || echo 'no nvidia-smi'); $(nvcc --version | tail -1)"
echo "| step | M N K | GFLOP/s (median) | range | max rel err |"
echo "|---|---|---|---|---|"
awk -F' [|] ' 'NF >= 6 { printf "| %s | %s | %s | %s | %s%s |\n", $1, $2, $3, $4, $5, \
               ($6 == "ok" ? "" : " FAILED") }' "$build/lines.txt"
exit $status
