"""The fused light ops, minitl against PyTorch on the shapes a bert-mini / resnet-mini training
step runs: layer_norm, softmax + cross-entropy, GELU, softmax, attention, embedding backward,
the AdamW update and conv2d (im2col + GEMM), each forward alone and forward + backward.

    python -m benchmarks.bench_ops              # the training-step shapes
    python -m benchmarks.bench_ops --quick      # smaller shapes, 2 rounds
    python -m benchmarks.bench_ops --only gelu cross_entropy

Both sides go through their autograd (minitl's ops call the backend kernels: numba on the CPU,
see `kernels` in the header), so the times include each library's per-op overhead. Byte
counts are the compulsory traffic of the fused kernels (reads + writes, float32), for GB/s.

Napkin math (one core streams ~10-15 GB/s): cross-entropy over 2048 x 30522 logits reads
250 MB forward and reads + writes 500 MB backward; everything else here is < 20 MB a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import common


@dataclass
class Case:
    """One op at one shape: `minitl(grad)` / `torch(grad)` build zero-argument closures that
    run the forward (grad=False) or forward + backward (grad=True)."""

    name: str
    shape: str
    minitl: Callable[[bool], Callable[[], Any]]
    torch: Callable[[bool], Callable[[], Any]]
    nbytes: float  # compulsory bytes moved by the forward kernel


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _pair(make_mt: Callable[[], tuple[Any, Callable[..., Any]]],
          make_t: Callable[[], tuple[Any, Callable[..., Any]]]
          ) -> tuple[Callable[[bool], Callable[[], Any]], Callable[[bool], Callable[[], Any]]]:
    """From (leaves, fn) factories, closures that run fn(*leaves) and, with grad, backward
    through sum(out * w) with a fixed w (so every output element gets a gradient)."""

    def wrap(make: Callable[[], tuple[Any, Callable[..., Any]]], lib: str
             ) -> Callable[[bool], Callable[[], Any]]:
        def build(grad: bool) -> Callable[[], Any]:
            leaves, fn = make()
            if lib == "minitl":
                import minitl as mt

                def run() -> Any:
                    for t in leaves:
                        t.grad = None
                    if not grad:
                        with mt.no_grad():
                            return fn(*leaves)
                    out = fn(*leaves)
                    out.backward(mt.ones_like(out) if out.ndim else None)
                    return out
            else:
                import torch

                def run() -> Any:
                    for t in leaves:
                        t.grad = None
                    if not grad:
                        with torch.no_grad():
                            return fn(*leaves)
                    out = fn(*leaves)
                    out.backward(torch.ones_like(out) if out.ndim else None)
                    return out
            return run

        return build

    return wrap(make_mt, "minitl"), wrap(make_t, "torch")


def _leaves(lib: str, arrays: Sequence[np.ndarray], grads: Sequence[bool]) -> list[Any]:
    if lib == "minitl":
        import minitl as mt

        return [mt.tensor(a, requires_grad=g) for a, g in zip(arrays, grads)]
    import torch

    return [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grads)]


def cases(quick: bool) -> list[Case]:
    import torch
    import torch.nn.functional as tf

    import minitl.nn.functional as F

    rng = _rng()
    n = 512 if quick else 2048  # tokens: B T = 16 x 128
    d, ff, v = 256, 1024, (8192 if quick else 30522)
    f32 = np.float32
    out: list[Case] = []

    # layer_norm over (N, D)
    x, w, b = (rng.standard_normal((n, d)).astype(f32), rng.standard_normal(d).astype(f32),
               rng.standard_normal(d).astype(f32))
    mt_fn, t_fn = _pair(
        lambda: (_leaves("minitl", [x, w, b], [True] * 3),
                 lambda x, w, b: F.layer_norm(x, (d,), w, b, 1e-12)),
        lambda: (_leaves("torch", [x, w, b], [True] * 3),
                 lambda x, w, b: tf.layer_norm(x, (d,), w, b, 1e-12)))
    out.append(Case("layer_norm", f"{n}x{d}", mt_fn, t_fn, 8.0 * n * d))

    # softmax + cross-entropy over (N, V) logits, ~15% of the targets kept
    logits = rng.standard_normal((n, v)).astype(f32)
    target = np.where(rng.random(n) < 0.15, rng.integers(0, v, n), -100)
    mt_fn, t_fn = _pair(
        lambda: (_leaves("minitl", [logits], [True]),
                 lambda z: F.cross_entropy(z, mt_tensor(target))),
        lambda: (_leaves("torch", [logits], [True]),
                 lambda z: tf.cross_entropy(z, torch.from_numpy(target))))
    out.append(Case("cross_entropy", f"{n}x{v}", mt_fn, t_fn, 4.0 * n * v))

    # GELU (exact, erf) on the FFN activation (N, 4D)
    h = (2 * rng.standard_normal((n, ff))).astype(f32)
    mt_fn, t_fn = _pair(lambda: (_leaves("minitl", [h], [True]), lambda z: F.gelu(z)),
                        lambda: (_leaves("torch", [h], [True]), lambda z: tf.gelu(z)))
    out.append(Case("gelu", f"{n}x{ff}", mt_fn, t_fn, 8.0 * n * ff))

    # softmax over attention scores (B, h, T, T)
    bsz, heads, t = n // 128, 4, 128
    s = rng.standard_normal((bsz, heads, t, t)).astype(f32)
    mt_fn, t_fn = _pair(lambda: (_leaves("minitl", [s], [True]), lambda z: z.softmax(-1)),
                        lambda: (_leaves("torch", [s], [True]), lambda z: z.softmax(-1)))
    out.append(Case("softmax", f"{bsz}x{heads}x{t}x{t}", mt_fn, t_fn, 8.0 * s.size))

    # scaled dot-product attention, heads of 64, dropout off (deterministic)
    q, k, vv = (rng.standard_normal((bsz, heads, t, d // heads)).astype(f32) for _ in range(3))
    mt_fn, t_fn = _pair(
        lambda: (_leaves("minitl", [q, k, vv], [True] * 3), F.scaled_dot_product_attention),
        lambda: (_leaves("torch", [q, k, vv], [True] * 3), tf.scaled_dot_product_attention))
    out.append(Case("attention", f"{bsz}x{heads}x{t}x{d // heads}", mt_fn, t_fn,
                    4.0 * (4 * q.size + 2 * s.size)))

    # embedding lookup + backward into the (V, D) table
    ids = rng.integers(0, v, (bsz, t))
    table = (0.02 * rng.standard_normal((v, d))).astype(f32)
    mt_fn, t_fn = _pair(
        lambda: (_leaves("minitl", [table], [True]),
                 lambda wt: F.embedding(mt_tensor(ids), wt, padding_idx=0)),
        lambda: (_leaves("torch", [table], [True]),
                 lambda wt: tf.embedding(torch.from_numpy(ids), wt, padding_idx=0)))
    out.append(Case("embedding", f"{bsz}x{t} of {v}x{d}", mt_fn, t_fn, 8.0 * ids.size * d))

    # conv2d 3x3, padding 1, on resnet-mini's first stage
    nb, c = (16 if quick else 64), 16
    img = rng.standard_normal((nb, c, 28, 28)).astype(f32)
    ker = (0.1 * rng.standard_normal((c, c, 3, 3))).astype(f32)
    mt_fn, t_fn = _pair(
        lambda: (_leaves("minitl", [img, ker], [True, True]),
                 lambda a, wt: F.conv2d(a, wt, padding=1)),
        lambda: (_leaves("torch", [img, ker], [True, True]),
                 lambda a, wt: tf.conv2d(a, wt, padding=1)))
    out.append(Case("conv2d 3x3", f"{nb}x{c}x28x28", mt_fn, t_fn, 4.0 * 10 * img.size))
    return out


def mt_tensor(a: np.ndarray) -> Any:
    import minitl as mt

    return mt.tensor(a)


def adamw_case(quick: bool) -> tuple[str, Callable[[], Any], Callable[[], Any], float]:
    """AdamW over bert-mini's parameter shapes (~11M floats): one optimizer step."""
    import torch

    import minitl as mt
    from minitl.models import BertConfig, BertForMaskedLM

    cfg = BertConfig.named("bert-tiny" if quick else "bert-mini")
    shapes = [tuple(p.shape) for p in BertForMaskedLM(cfg).parameters()]
    rng = _rng()
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mp = [mt.tensor(a.copy(), requires_grad=True) for a in arrays]
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for p, g in zip(mp, grads):
        p.grad = mt.tensor(g)
    for p, g in zip(tp, grads):
        p.grad = torch.from_numpy(g)
    mopt = mt.optim.AdamW(mp, lr=1e-4)
    topt = torch.optim.AdamW(tp, lr=1e-4)  # PyTorch's default on the CPU: for-loop path
    numel = sum(a.size for a in arrays)
    return f"{len(shapes)} tensors, {numel / 1e6:.1f}M", mopt.step, topt.step, 28.0 * numel


def main(argv: Sequence[str] | None = None) -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="subjects to run (default all)")
    args = p.parse_args(argv)
    info = common.machine_info()
    common.print_machine(info)
    rounds = args.rounds or (2 if args.quick else 7)
    calls = args.calls or 3
    rows: list[common.Row] = []
    for case in cases(args.quick):
        if args.only and case.name.split()[0] not in args.only:
            continue
        new = []
        for grad in (False, True):
            t = common.interleaved({"minitl": case.minitl(grad), "torch": case.torch(grad)},
                                   rounds=rounds, calls=calls)
            label = f"{case.name} {'fwd+bwd' if grad else 'fwd'}"
            new.append(common.Row(label, case.shape, t["minitl"], t["torch"], "torch",
                                  extra={"GB/s minitl fwd": case.nbytes / 1e9 / t["minitl"]}
                                  if not grad else {}, spread=t.spreads()))
        common.print_rows(new)
        rows += new
    if not args.only or "adamw" in args.only:
        shape, mine, theirs, nbytes = adamw_case(args.quick)
        t = common.interleaved({"minitl": mine, "torch": theirs}, rounds=rounds, calls=calls)
        row = common.Row("adamw step", shape, t["minitl"], t["torch"], "torch",
                         extra={"GB/s minitl": nbytes / 1e9 / t["minitl"]},
                         spread=t.spreads())
        common.print_rows([row])
        rows.append(row)
    print("summary (ratio = minitl time / torch time; below 1 means minitl is faster):")
    common.print_rows(rows)
    if not args.no_save:
        common.save_rows("ops", rows, info, args)


if __name__ == "__main__":
    main()
