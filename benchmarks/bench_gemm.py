"""SGEMM throughput: minitl's C++ GEMM (csrc/cpu/gemm.cpp) against numpy (its BLAS) and
PyTorch on the same float32 operands, square sizes 256-4096 and the skinny products a
transformer layer runs.

    python -m benchmarks.bench_gemm            # full sweep (~2 minutes on two cores)
    python -m benchmarks.bench_gemm --quick    # smoke run

It ends with minitl's GEMM timed right after a numpy product against the same GEMM in a run of
minitl GEMMs, with numpy's OpenBLAS on minitl's OpenMP team (minitl.threads.share_blas_pool,
the default) and on its own threads.

Napkin math: 2*M*N*K flops per call; a Zen 3 / Haswell-class core peaks at 32 flop/cycle
(two 8-wide FMAs), ~93 GFLOP/s per core at 2.9 GHz.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from minitl.backend import cpu

from . import common


@dataclass(frozen=True)
class Shape:
    """C (m, n) = op(A) (m, k) @ op(B) (k, n)."""

    m: int
    n: int
    k: int
    trans_a: bool = False
    trans_b: bool = False
    label: str = ""

    @property
    def gflop(self) -> float:
        return 2.0 * self.m * self.n * self.k / 1e9

    def __str__(self) -> str:
        t = ("A^T " if self.trans_a else "") + ("B^T" if self.trans_b else "")
        return f"{self.m}x{self.n}x{self.k} {t}".strip()


SQUARES = [256, 512, 1024, 2048, 4096]
TRANSFORMER = [
    Shape(4096, 1024, 1024, trans_b=True, label="linear x W^T"),
    Shape(2048, 256, 1024, trans_b=True, label="down-proj x W^T"),
    Shape(2048, 1024, 256, trans_b=True, label="up-proj x W^T"),
    Shape(4096, 1024, 1024, label="dx = g W"),
    Shape(1024, 1024, 4096, trans_a=True, label="dW = g^T x"),
    Shape(16, 1024, 4096, trans_a=True, label="LoRA dA = gb^T x"),
    Shape(1024, 16, 4096, trans_a=True, label="LoRA dB = g^T xa"),
]


def operands(s: Shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((s.k, s.m) if s.trans_a else (s.m, s.k), dtype=np.float32)
    b = rng.standard_normal((s.n, s.k) if s.trans_b else (s.k, s.n), dtype=np.float32)
    return a, b


def bench_shape(s: Shape, rounds: int, calls: int) -> tuple[common.Row, common.Row]:
    a, b = operands(s)
    mod = cpu.native_module()
    assert mod is not None, "minitl._C is not built: python setup.py build_ext --inplace"
    op_a, op_b = (a.T if s.trans_a else a), (b.T if s.trans_b else b)
    candidates = {
        "minitl": lambda: mod.gemm(a, b, s.trans_a, s.trans_b),
        "numpy": lambda: op_a @ op_b,
    }
    try:
        import torch

        ta, tb = torch.from_numpy(op_a), torch.from_numpy(op_b)
        candidates["torch"] = lambda: ta @ tb
    except ImportError:
        pass
    t = common.interleaved(candidates, rounds=rounds, calls=calls)
    subject = f"gemm {s.label}".strip()
    vs_numpy = common.Row(subject, str(s), t["minitl"], t["numpy"], "numpy", s.gflop,
                          spread=t.spreads("minitl", "numpy"))
    vs_torch = common.Row(subject, str(s), t["minitl"], t.get("torch", float("nan")), "torch",
                          s.gflop, spread=t.spreads("minitl", "torch"))
    return vs_numpy, vs_torch


def bench_after_numpy(n: int, rounds: int) -> list[common.Row]:
    """minitl's n^3 GEMM timed right after a numpy n^3 product ("minitl" column) against the
    same GEMM in a run of minitl GEMMs with no numpy product anywhere near ("other"), with
    numpy's OpenBLAS sharing minitl's thread pool and then on its own threads (the sharing is
    restored as found). The run of GEMMs starts with warm-up calls: on an idle machine the
    first calls also pay for waking the cores, which is not what is measured here."""
    from minitl import threads

    a, b = operands(Shape(n, n, n))
    mod = cpu.native_module()
    assert mod is not None, "minitl._C is not built: python setup.py build_ext --inplace"

    def timed_gemm() -> float:
        t0 = time.perf_counter()
        mod.gemm(a, b, False, False)
        return time.perf_counter() - t0

    time.sleep(common.SETTLE_S)  # numpy's own workers, if any, stop spinning
    for _ in range(3):
        mod.gemm(a, b, False, False)
    alone = [timed_gemm() for _ in range(rounds)]
    was_shared = threads.blas_pool_shared()
    rows = []
    try:
        for shared in (True, False):
            if threads.share_blas_pool(shared) != shared:
                continue  # numpy's BLAS takes no threads callback: nothing to compare
            after_numpy = []
            for _ in range(rounds):
                a @ b
                after_numpy.append(timed_gemm())
            pool = "shared pool" if shared else "numpy's own pool"
            rows.append(common.Row(f"gemm after numpy ({pool})", f"{n}^3",
                                   statistics.median(after_numpy), statistics.median(alone),
                                   "minitl alone", 2.0 * n**3 / 1e9,
                                   spread=(common.spread_of(after_numpy),
                                           common.spread_of(alone))))
    finally:
        threads.share_blas_pool(was_shared)
    return rows


def plot(rows: list[common.Row], path: str) -> None:
    """GFLOP/s against size for the square shapes, if matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    squares = [r for r in rows if r.subject == "gemm" and r.gflop]
    sizes = [int(r.shape.split("x")[0]) for r in squares]
    fig, ax = plt.subplots(figsize=(6, 4))
    gflop = [r.gflop or 0.0 for r in squares]
    ax.plot(sizes, [f / r.minitl_s for f, r in zip(gflop, squares)], "o-", label="minitl")
    ax.plot(sizes, [f / r.other_s for f, r in zip(gflop, squares)], "s--",
            label=squares[0].other)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M = N = K")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("float32 GEMM")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    sizes = [128, 256, 512] if args.quick else SQUARES
    shapes = [Shape(n, n, n) for n in sizes]
    shapes += [Shape(512, 256, 256, trans_b=True, label="linear x W^T")] if args.quick \
        else TRANSFORMER
    info = common.machine_info()
    common.print_machine(info)

    vs_numpy, vs_torch = [], []
    for s in shapes:
        big = s.gflop > 30
        rounds = args.rounds or (2 if args.quick else (3 if big else 7))
        calls = args.calls or (1 if big else 3)
        row_np, row_torch = bench_shape(s, rounds, calls)
        vs_numpy.append(row_np)
        vs_torch.append(row_torch)
        common.print_rows([row_np, row_torch])
    after_numpy = [r for n in ([256] if args.quick else [1024, 2048])
                   for r in bench_after_numpy(n, 3 if args.quick else 9)]
    common.print_rows(after_numpy)
    print("summary vs numpy:")
    common.print_rows(vs_numpy)
    print("summary vs torch:")
    common.print_rows(vs_torch)
    if not args.no_save:
        path = common.save_rows("gemm", vs_numpy + vs_torch + after_numpy, info, args)
        plot(vs_numpy, str(path.with_suffix(".png")))


if __name__ == "__main__":
    main()
