"""GPU benchmarks of minitl's CUDA kernels against cuBLAS (cupy.matmul, torch) and torch eager.

    python -m benchmarks.bench_cuda             # the full set (H100: ~10 minutes)
    python -m benchmarks.bench_cuda --quick     # small sizes, smoke run
    python -m benchmarks.bench_cuda --only gemm lora

Subjects
  gemm   C = A B at 1024..8192 and transformer shapes (tokens x 4d x d, ...), FP32 (SIMT SGEMM
         vs cupy.matmul = cuBLAS and torch with TF32 off), TF32 and BF16 (tensor cores vs
         torch with TF32 on / bf16 inputs). Targets on H100: SGEMM >= 0.9x cuBLAS FP32 at
         4096-8192, BF16 mma.sync >= 0.8x cuBLAS.
  lora   LoRA linear y = x W^T + b + s (x A^T) B^T, W frozen, at tokens 4096..16384, d 4096,
         ranks 8..64: forward and forward+backward, minitl fused vs torch unfused, and against
         minitl's own base GEMM (target: fused <= 1.10x base).
  train  one training step (forward, backward, AdamW) of a small GPT and a BERT classifier,
         minitl on cuda vs the same architecture in torch eager (target <= 1.3x).

Times are medians of CUDA-event timings after warm-up. Each run writes
benchmarks/results/bench_cuda-<GPU>-<time>.json and a plot of the ratios (matplotlib).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import common
from .common import Row


def gpu_time(fn: Callable[[], Any], reps: int = 10, warmup: int = 2) -> float:
    """Median seconds per call, each call timed with CUDA events on the current stream."""
    import cupy as cp

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


def torch_time(fn: Callable[[], Any], reps: int = 10, warmup: int = 2) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def have_torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_info() -> dict[str, Any]:
    import cupy as cp

    from minitl.backend import cuda

    info: dict[str, Any] = {"gpu": cuda.info()["name"], "compute_capability": cuda.info()["cc"],
                            "sms": cuda.info()["sms"], "cupy": cp.__version__,
                            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def rand(shape: Sequence[int], seed: int, scale: float = 1.0) -> Any:
    import cupy as cp

    return cp.asarray((scale * np.random.default_rng(seed).standard_normal(shape))
                      .astype(np.float32))


# ---- GEMM --------------------------------------------------------------------------------------


def gemm_shapes(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(1024, 1024, 1024), (2048, 2048, 2048)]
    square = [(s, s, s) for s in (1024, 2048, 4096, 8192)]
    # transformer shapes (M = tokens): QKV / out proj, MLP up, MLP down, skinny decode
    tr = [(8192, 4096, 4096), (8192, 16384, 4096), (8192, 4096, 16384), (16, 4096, 4096)]
    return square + tr


def bench_gemm(quick: bool, reps: int) -> list[Row]:
    rows: list[Row] = []
    for m, n, k in gemm_shapes(quick):
        rows += gemm_case(m, n, k, reps)
    return rows


def gemm_case(m: int, n: int, k: int, reps: int) -> list[Row]:
    import cupy as cp

    from minitl.backend import cuda

    rows = []
    a, b = rand((m, k), 1), rand((k, n), 2)
    gflop = 2 * m * n * k / 1e9
    shape = f"{m}x{n}x{k}"
    for prec, label in (("highest", "fp32"), ("high", "tf32"), ("medium", "bf16")):
        cuda.set_matmul_precision(prec)
        mine = bf16_gemm_fn(a, b, m, n, k) if prec == "medium" else (lambda: cuda.gemm(a, b))
        t_mine = gpu_time(mine, reps)
        if prec == "highest":
            t_cublas = gpu_time(lambda: cp.matmul(a, b), reps)
            rows.append(Row(f"gemm {label}", shape, t_mine, t_cublas, "cupy", gflop))
        if have_torch_cuda():
            t_torch = torch_matmul_time(a, b, label, reps)
            rows.append(Row(f"gemm {label}", shape, t_mine, t_torch, "torch", gflop))
    cuda.set_matmul_precision("highest")
    return rows


def bf16_gemm_fn(a: Any, b: Any, m: int, n: int, k: int) -> Callable[[], Any]:
    """The BF16 tensor-core GEMM on operands converted once, outside the timing (as torch
    is timed on bf16 tensors)."""
    import cupy as cp

    from minitl.backend import cuda_tc

    a16, b16 = cuda_tc.to_bf16(a), cuda_tc.to_bf16(cp.ascontiguousarray(b.T))
    wgmma = cuda_tc.wgmma_usable(True)
    tile = tune_tile(m, n, k)

    def run() -> Any:
        c = cp.empty((m, n), cp.float32)
        if wgmma:
            cuda_tc.wgmma_launch(a16, k, b16, k, c, m, n, k, True)
        else:
            cuda_tc.mma_launch(tile, a16, k, b16, k, c, m, n, k, True)
        return c

    return run


def tune_tile(m: int, n: int, k: int) -> str:
    from minitl.backend import cuda_tune as tune

    return tune.mma_candidates(m, n, k)[0]


def torch_matmul_time(a: Any, b: Any, label: str, reps: int) -> float:
    import torch

    ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = label == "tf32"
    if label == "bf16":
        ta, tb = ta.bfloat16(), tb.bfloat16()
    try:
        return torch_time(lambda: ta @ tb, reps)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


# ---- LoRA ----------------------------------------------------------------------------------------


def bench_lora(quick: bool, reps: int) -> list[Row]:
    rows: list[Row] = []
    d = 1024 if quick else 4096
    for tokens in ((2048,) if quick else (4096, 8192, 16384)):
        for r in ((8, 64) if quick else (8, 16, 32, 64)):
            rows += lora_case(tokens, d, r, reps)
    return rows


def lora_case(tokens: int, d: int, r: int, reps: int) -> list[Row]:
    import minitl as mt
    import minitl.nn.functional as F

    x = mt.tensor(rand((tokens, d), 1), device="cuda", requires_grad=True)
    w = mt.tensor(rand((d, d), 2, d ** -0.5), device="cuda")
    bias = mt.tensor(rand((d,), 3), device="cuda")
    a = mt.tensor(rand((r, d), 4, d ** -0.5), device="cuda", requires_grad=True)
    bm = mt.tensor(rand((d, r), 5, 0.1), device="cuda", requires_grad=True)
    g = mt.tensor(rand((tokens, d), 6), device="cuda")
    s = 2.0

    def fwd() -> Any:
        with mt.no_grad():
            return F.lora_linear(x, w, bias, a, bm, s)

    def fwd_bwd() -> None:
        x.grad = a.grad = bm.grad = None
        F.lora_linear(x, w, bias, a, bm, s).backward(g)

    def base_fwd() -> Any:
        with mt.no_grad():
            return F.linear(x, w, bias)

    def base_fwd_bwd() -> None:
        x.grad = None
        F.linear(x, w, bias).backward(g)

    shape = f"N{tokens} d{d} r{r}"
    work = 2 * tokens * d * d / 1e9
    t = {name: gpu_time(fn, reps) for name, fn in
         (("fwd", fwd), ("fwd_bwd", fwd_bwd), ("base_fwd", base_fwd),
          ("base_fwd_bwd", base_fwd_bwd))}
    rows = [Row("lora fwd vs base", shape, t["fwd"], t["base_fwd"], "base", work),
            Row("lora fwd+bwd vs base", shape, t["fwd_bwd"], t["base_fwd_bwd"], "base",
                2 * work)]
    if have_torch_cuda():
        tt = torch_lora_times(x, w, bias, a, bm, g, s, reps)
        rows.append(Row("lora fwd", shape, t["fwd"], tt["fwd"], "torch", work))
        rows.append(Row("lora fwd+bwd", shape, t["fwd_bwd"], tt["fwd_bwd"], "torch", 2 * work))
    return rows


def torch_lora_times(x: Any, w: Any, bias: Any, a: Any, bm: Any, g: Any, s: float,
                     reps: int) -> dict[str, float]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False

    def t(v: Any, grad: bool = False) -> Any:
        return torch.as_tensor(v.data, device="cuda").requires_grad_(grad)

    tx, tw, tb, ta, tbm, tg = t(x, True), t(w), t(bias), t(a, True), t(bm, True), t(g)

    def unfused() -> Any:
        return tx @ tw.T + tb + s * (tx @ ta.T) @ tbm.T

    def fwd() -> Any:
        with torch.no_grad():
            return unfused()

    def fwd_bwd() -> None:
        tx.grad = ta.grad = tbm.grad = None
        unfused().backward(tg)

    return {"fwd": torch_time(fwd, reps), "fwd_bwd": torch_time(fwd_bwd, reps)}


# ---- training step -----------------------------------------------------------------------------


def bench_train(quick: bool, reps: int) -> list[Row]:
    import minitl as mt
    import minitl.nn.functional as F

    rows = []
    layers, d, heads, seq, batch, vocab = (2, 256, 4, 128, 8, 8192) if quick else \
        (6, 768, 12, 512, 8, 32768)
    cfg = mt.models.GPTConfig(vocab_size=vocab, block_size=seq, n_layer=layers, n_head=heads,
                              n_embd=d)
    mt.manual_seed(0)
    model = mt.models.GPT(cfg).to("cuda")
    opt = mt.optim.AdamW(model.parameters(), lr=1e-4)
    ids_np = np.random.default_rng(0).integers(0, vocab, (batch, seq + 1))
    x = mt.tensor(ids_np[:, :-1], device="cuda")
    y = mt.tensor(ids_np[:, 1:], device="cuda")

    def step() -> None:
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_mine = gpu_time(step, max(3, reps // 2))
    shape = f"L{layers} d{d} T{seq} B{batch} V{vocab}"
    params = sum(p.numel() for p in model.parameters())
    work = 6 * params * batch * seq / 1e9
    if have_torch_cuda():
        t_torch = torch_gpt_step_time(layers, d, heads, seq, batch, vocab, ids_np,
                                      max(3, reps // 2))
        rows.append(Row("train step gpt", shape, t_mine, t_torch, "torch", work))
    else:
        rows.append(Row("train step gpt", shape, t_mine, math.nan, "torch", work))
    return rows


def torch_gpt_step_time(layers: int, d: int, heads: int, seq: int, batch: int, vocab: int,
                        ids_np: np.ndarray, reps: int) -> float:
    """The same pre-LN GPT in plain torch eager (no torch.compile, no fused attention)."""
    import torch
    import torch.nn as tnn

    torch.backends.cuda.matmul.allow_tf32 = False

    class Block(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = tnn.LayerNorm(d), tnn.LayerNorm(d)
            self.qkv, self.proj = tnn.Linear(d, 3 * d), tnn.Linear(d, d)
            self.fc, self.out = tnn.Linear(d, 4 * d), tnn.Linear(4 * d, d)

        def forward(self, x: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // heads)
            mask = torch.ones(t, t, device=x.device, dtype=torch.bool).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
            return x + self.out(tnn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(vocab, d), tnn.Embedding(seq, d)
            self.blocks = tnn.ModuleList(Block() for _ in range(layers))
            self.ln = tnn.LayerNorm(d)

        def forward(self, idx: Any) -> Any:
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for blk in self.blocks:
                x = blk(x)
            return self.ln(x) @ self.wte.weight.T

    model = GPT().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    ids = torch.as_tensor(ids_np, device="cuda")
    x, y = ids[:, :-1], ids[:, 1:]

    def step() -> None:
        loss = tnn.functional.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return torch_time(step, reps)


# ---- report --------------------------------------------------------------------------------------


def plot(rows: Sequence[Row], info: dict[str, Any], path: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    labels = [f"{r.subject} vs {r.other}\n{r.shape}" for r in rows if math.isfinite(r.ratio)]
    ratios = [r.ratio for r in rows if math.isfinite(r.ratio)]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.28 * len(ratios))))
    ax.barh(range(len(ratios)), ratios)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(ratios)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("minitl time / other time (lower is better)")
    ax.set_title(f"minitl CUDA kernels on {info['gpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", nargs="*", choices=("gemm", "lora", "train"),
                   default=("gemm", "lora", "train"))
    p.add_argument("--reps", type=int, default=None, help="timed calls per measurement")


def run(args: argparse.Namespace) -> int:
    from minitl import backend

    try:
        backend.get_backend("cuda")
    except RuntimeError as err:
        print(f"bench_cuda: {err}", file=sys.stderr)
        return 2
    from minitl.backend import cuda

    reps = args.reps or (3 if args.quick else 10)
    info = gpu_info()
    print(f"gpu     : {info['gpu']} (cc {info['compute_capability']}, {info['sms']} SMs), "
          f"cupy {info['cupy']}, torch {info['torch']}\n")
    rows: list[Row] = []
    t0 = time.perf_counter()
    for subject, fn in (("gemm", bench_gemm), ("lora", bench_lora), ("train", bench_train)):
        if subject in args.only:
            new = fn(args.quick, reps)
            common.print_rows(new)
            rows += new
    info["minitl_cuda"] = cuda.status()
    info["seconds"] = round(time.perf_counter() - t0, 1)
    if not args.no_save:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", info["gpu"]).strip("-")
        path = common.save_rows(f"bench_cuda-{slug}", rows, info, args)
        plot(rows, info, path.with_suffix(".png"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
