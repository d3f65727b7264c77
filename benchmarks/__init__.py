"""minitl benchmarks: each `bench_*.py` times minitl against numpy / PyTorch doing the same
work and prints `subject | shape | minitl | torch | ratio | GFLOP/s`, e.g.

    python -m benchmarks.bench_gemm --quick
    python -m benchmarks.bench_lora

`common.py` holds the shared timing discipline (warm-up, interleaved A/B rounds, medians), the
machine report and the JSON rows saved under `benchmarks/results/`.
"""
