"""The LoRA linear layer (arXiv:2106.09685) y = x W^T + b + s (x A^T) B^T with W and b frozen:
minitl's fused op (F.lora_linear -> csrc/cpu/lora.cpp) against PyTorch's unfused autograd
expression and against minitl's own base layer F.linear(x, W, b) with no LoRA at all.

    python -m benchmarks.bench_lora            # N=4096, D=1024, r in 4..64
    python -m benchmarks.bench_lora --quick    # smoke run

"fwd" is the forward alone; "fwd+bwd" adds y.backward(g) computing dx, dA and dB (the input
gradient too, as for any layer that is not the first). Work per fwd+bwd call: the two base
GEMMs 4*N*D^2 plus the rank-r products 6*N*D*r flops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import minitl as mt
import minitl.nn.functional as F

from . import common


def make_inputs(n: int, d: int, r: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {"x": rand(n, d), "w": rand(d, d, scale=d ** -0.5), "b": rand(d),
            "a": rand(r, d, scale=d ** -0.5), "bm": rand(d, r, scale=0.1), "g": rand(n, d)}


def minitl_fns(v: dict[str, np.ndarray], s: float) -> dict[str, Callable[[], Any]]:
    x = mt.from_numpy(v["x"]).requires_grad_()
    w, b = mt.from_numpy(v["w"]), mt.from_numpy(v["b"])  # frozen
    a, bm = mt.from_numpy(v["a"]).requires_grad_(), mt.from_numpy(v["bm"]).requires_grad_()
    g = mt.from_numpy(v["g"])

    def lora_fwd() -> Any:
        with mt.no_grad():
            return F.lora_linear(x, w, b, a, bm, s)

    def lora_fwd_bwd() -> None:
        x.grad = a.grad = bm.grad = None
        F.lora_linear(x, w, b, a, bm, s).backward(g)

    def base_fwd() -> Any:
        with mt.no_grad():
            return F.linear(x, w, b)

    def base_fwd_bwd() -> None:
        x.grad = None
        F.linear(x, w, b).backward(g)

    return {"lora_fwd": lora_fwd, "lora_fwd_bwd": lora_fwd_bwd, "base_fwd": base_fwd,
            "base_fwd_bwd": base_fwd_bwd}


def torch_fns(v: dict[str, np.ndarray], s: float) -> dict[str, Callable[[], Any]]:
    import torch

    x = torch.from_numpy(v["x"]).requires_grad_()
    w, b = torch.from_numpy(v["w"]), torch.from_numpy(v["b"])  # frozen
    a = torch.from_numpy(v["a"]).requires_grad_()
    bm = torch.from_numpy(v["bm"]).requires_grad_()
    g = torch.from_numpy(v["g"])

    def unfused() -> Any:
        return x @ w.T + b + s * (x @ a.T) @ bm.T

    def fwd() -> Any:
        with torch.no_grad():
            return unfused()

    def fwd_bwd() -> None:
        x.grad = a.grad = bm.grad = None
        unfused().backward(g)

    return {"torch_fwd": fwd, "torch_fwd_bwd": fwd_bwd}


def bench_rank(n: int, d: int, r: int, rounds: int, calls: int) -> list[common.Row]:
    v = make_inputs(n, d, r)
    s = 2.0  # alpha / r with alpha = 2 r
    fns = minitl_fns(v, s)
    try:
        fns.update(torch_fns(v, s))
        has_torch = True
    except ImportError:
        has_torch = False
    shape = f"N={n} D={d} r={r}"
    rows = []
    for mode, gflop in (("fwd", 2 * n * d * d + 4 * n * d * r),
                        ("fwd_bwd", 4 * n * d * d + 12 * n * d * r)):
        cands = {"lora": fns[f"lora_{mode}"], "base": fns[f"base_{mode}"]}
        if has_torch:
            cands["torch"] = fns[f"torch_{mode}"]
        t = common.interleaved(cands, rounds=rounds, calls=calls)
        label = mode.replace("_", "+")
        if has_torch:
            rows.append(common.Row(f"lora {label} vs torch unfused", shape, t["lora"],
                                   t["torch"], "torch", gflop / 1e9,
                                   spread=t.spreads("lora", "torch")))
        rows.append(common.Row(f"lora {label} vs minitl base", shape, t["lora"], t["base"],
                               "base", gflop / 1e9, spread=t.spreads("lora", "base")))
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=None, help="LoRA ranks to run")
    args = p.parse_args()
    n, d = (512, 256) if args.quick else (4096, 1024)
    ranks = args.ranks or ([4, 16] if args.quick else [4, 8, 16, 32, 64])
    rounds = args.rounds or (2 if args.quick else 5)
    calls = args.calls or 2
    info = common.machine_info()
    common.print_machine(info)
    rows: list[common.Row] = []
    for r in ranks:
        new = bench_rank(n, d, r, rounds, calls)
        common.print_rows(new)
        rows += new
    print("summary:")
    common.print_rows(rows)
    if not args.no_save:
        common.save_rows("lora", rows, info, args)


if __name__ == "__main__":
    main()
