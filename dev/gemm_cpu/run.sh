#!/usr/bin/env bash
# dev/gemm_cpu/run.sh — build every CPU SGEMM step with this machine's g++, run them in
# interleaved rounds (so a burst of someone else's load hits every step alike), print a table.
#
# Usage: dev/gemm_cpu/run.sh [M N K [repeats [rounds]]]   defaults: 1024 1024 1024, 5, 3
# A step's figures are medians over rounds of its medians over repeats (wall-clock GFLOP/s and
# GFLOP per CPU-second, see common.h). Steps 01-05 run on one
# thread; 06 and 07 at 1 and 2 threads (OMP_NUM_THREADS). AVX-512 variants are built only when
# /proc/cpuinfo lists avx512f. Exits 1 when any step fails its check. Binaries go to a
# temporary directory (BUILD_DIR to choose one); nothing is written under dev/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${1:-1024} N=${2:-1024} K=${3:-1024} REPS=${4:-5} ROUNDS=${5:-3}
PYTHON=${PYTHON:-python3}
build=${BUILD_DIR:-$(mktemp -d)}
[[ -n ${BUILD_DIR:-} ]] || trap 'rm -rf "$build"' EXIT
flags=(-O3 -fopenmp -mavx2 -mfma)
has512=$(grep -qw avx512f /proc/cpuinfo && echo 1 || echo 0)
if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
    echo "run.sh: steps 05-06 use AVX2 + FMA, which this CPU lacks" >&2
    exit 2
fi

steps=(01_naive 02_loop_order 03_blocking 04_packing 05_microkernel 06_threads)
for s in "${steps[@]}"; do g++ "${flags[@]}" -o "$build/$s" "$here/$s.cpp"; done
runs=("01_naive 1" "02_loop_order 1" "03_blocking 1" "04_packing 1" "05_microkernel 1")
runs+=("06_threads 1" "06_threads 2")
if [[ $has512 == 1 ]]; then
    for s in 05_microkernel 06_threads; do
        g++ "${flags[@]}" -mavx512f -DUSE_AVX512 -o "$build/${s}_avx512" "$here/$s.cpp"
    done
    runs+=("05_microkernel_avx512 1" "06_threads_avx512 1" "06_threads_avx512 2")
fi
minitl=0
if "$PYTHON" -c "import minitl._C" 2>/dev/null; then
    minitl=1
    runs+=("07_minitl 1" "07_minitl 2")
fi

load_before=$(cut -d' ' -f1 /proc/loadavg)
status=0
for ((r = 0; r < ROUNDS; ++r)); do
    for run in "${runs[@]}"; do
        read -r s t <<<"$run"
        export OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t
        cmd=("$build/$s")
        [[ $s != 07_minitl ]] || cmd=("$PYTHON" "$here/07_minitl.py")
        "${cmd[@]}" "$M" "$N" "$K" "$REPS" >>"$build/lines.txt" || status=1
    done
done
load_after=$(cut -d' ' -f1 /proc/loadavg)

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "$(g++ --version | head -1); 1-minute load $load_before before, $load_after after"
[[ $minitl == 1 ]] || echo "07_minitl skipped: $PYTHON cannot import minitl._C"
"$PYTHON" - "$build/lines.txt" "$ROUNDS" <<'PY'
import statistics, sys
rows: dict[tuple[str, str], list[list[str]]] = {}
for line in open(sys.argv[1]):
    f = [x.strip() for x in line.split("|")]
    rows.setdefault((f[0], f[2]), []).append(f)
print(f"\n| step | M N K | threads | GFLOP/s | range | GFLOP/cpu-s | max rel err |")
print("|---|---|---|---|---|---|---|")
for (step, threads), fs in sorted(rows.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
    med = statistics.median(float(f[3]) for f in fs)
    lo = min(float(f[4].split("-")[0]) for f in fs)
    hi = max(float(f[4].split("-")[1]) for f in fs)
    cpu = statistics.median(float(f[5]) for f in fs)
    err = max(float(f[6]) for f in fs)
    bad = "" if all(f[7] == "ok" for f in fs) else " FAILED"
    print(f"| {step} | {fs[0][1]} | {threads} | {med:.1f} | {lo:.1f}-{hi:.1f} | {cpu:.1f} "
          f"| {err:.0e}{bad} |")
PY
exit $status
