"""Shape checks for kernels that trust their operands' sizes.

A C++ kernel reads memory at offsets computed from the sizes it is given; csrc/bindings.cpp
checks every operand before the call, so a mismatch is a ValueError and never a stray read.
The CUDA kernels are launched from Python (backend/cuda.py, cuda_fused.py); the same checks,
written once here, run before each launch (`checked` wraps the kernels in `make_kernels`).
A wrong shape on a GPU would otherwise read past a buffer: an illegal address that kills the
CUDA context, or, worse, a plausible wrong answer.

Each check takes the kernel's own arguments and raises ValueError naming the operands;
messages follow the C++ bindings' wording.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from minitl.types import Array

__all__ = ["CHECKS", "checked"]



def _s(a: Array | None) -> str:
    return "None" if a is None else str(tuple(a.shape))


def _ndim(op: str, name: str, a: Array, ndim: int) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{op}: expected {name} to be {ndim}-D, got shape {_s(a)}")


def gemm(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: expected 2-D arrays, got shapes {_s(a)} and {_s(b)}")
    k = a.shape[0] if trans_a else a.shape[1]
    if k != (b.shape[1] if trans_b else b.shape[0]):
        raise ValueError(f"gemm: shapes {_s(a)} and {_s(b)} do not align (trans_a={trans_a}, "
                         f"trans_b={trans_b})")


def gemm_batched(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False) -> None:
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"gemm_batched: expected 3-D arrays with the same batch size, got "
                         f"shapes {_s(a)} and {_s(b)}")
    k = a.shape[1] if trans_a else a.shape[2]
    if k != (b.shape[2] if trans_b else b.shape[1]):
        raise ValueError(f"gemm_batched: shapes {_s(a)} and {_s(b)} do not align "
                         f"(trans_a={trans_a}, trans_b={trans_b})")


def _lora_error(op: str, shapes: str) -> ValueError:
    return ValueError(f"{op}: shapes do not fit: {shapes} (need x (N, Din), w (Dout, Din), "
                      f"b (Dout,), a (r, Din), bm (Dout, r), g (N, Dout), xa (N, r))")


def lora_linear_fwd(x: Array, w: Array, b: Array | None, a: Array, bm: Array,
                    scale: float) -> None:
    op = "lora_linear_fwd"
    for name, t, nd in (("x", x, 2), ("w", w, 2), ("b", b, 1), ("a", a, 2), ("bm", bm, 2)):
        if t is not None:
            _ndim(op, name, t, nd)
    din, dout, r = x.shape[1], w.shape[0], a.shape[0]
    if (w.shape[1] != din or a.shape[1] != din or bm.shape != (dout, r)
            or (b is not None and b.shape != (dout,))):
        raise _lora_error(op, f"x {_s(x)}, w {_s(w)}, b {_s(b)}, a {_s(a)}, bm {_s(bm)}")


def lora_linear_bwd(g: Array, x: Array, w: Array, a: Array, bm: Array, xa: Array,
                    scale: float, needs: Any) -> None:
    op = "lora_linear_bwd"
    for name, t in (("g", g), ("x", x), ("w", w), ("a", a), ("bm", bm), ("xa", xa)):
        _ndim(op, name, t, 2)
    if len(needs) != 5:
        raise ValueError(f"{op}: needs must hold 5 flags (dx, dw, db, da, dbm), got "
                         f"{len(needs)}")
    n, din, dout, r = x.shape[0], x.shape[1], w.shape[0], a.shape[0]
    if (w.shape[1] != din or a.shape[1] != din or bm.shape != (dout, r)
            or g.shape != (n, dout) or xa.shape != (n, r)):
        raise _lora_error(op, f"g {_s(g)}, x {_s(x)}, w {_s(w)}, a {_s(a)}, bm {_s(bm)}, "
                              f"xa {_s(xa)}")


def _rows(op: str, name: str, v: Array | None, d: int) -> None:
    if v is not None and tuple(v.shape) != (d,):
        raise ValueError(f"{op}: {name} of shape {_s(v)} does not fit rows of {d}")


def layernorm_fwd(x: Array, weight: Array | None, bias: Array | None, eps: float) -> None:
    _ndim("layernorm_fwd", "x", x, 2)
    _rows("layernorm_fwd", "weight", weight, x.shape[1])
    _rows("layernorm_fwd", "bias", bias, x.shape[1])


def layernorm_bwd(g: Array, x: Array, mean: Array, rstd: Array, weight: Array | None,
                  needs: Any) -> None:
    op = "layernorm_bwd"
    _ndim(op, "x", x, 2)
    m, d = x.shape
    if g.shape != x.shape or mean.size != m or rstd.size != m:
        raise ValueError(f"{op}: g {_s(g)}, mean {_s(mean)} and rstd {_s(rstd)} do not fit "
                         f"x {_s(x)} (need g like x, one mean and rstd per row)")
    _rows(op, "weight", weight, d)


def softmax_xent_fwd(x: Array, target: Array, weight: Array | None, ignore_index: int,
                     label_smoothing: float) -> None:
    op = "softmax_xent_fwd"
    _ndim(op, "x", x, 2)
    if target.shape != (x.shape[0],):
        raise ValueError(f"{op}: target of shape {_s(target)} for x {_s(x)} (need one per row)")
    _rows(op, "weight", weight, x.shape[1])


def softmax_xent_bwd(x: Array, lse: Array, target: Array, weight: Array | None,
                     ignore_index: int, label_smoothing: float, grad: Array) -> None:
    softmax_xent_fwd(x, target, weight, ignore_index, label_smoothing)
    m = x.shape[0]
    if lse.size != m or getattr(grad, "size", 1) not in (1, m):
        raise ValueError(f"softmax_xent_bwd: lse {_s(lse)} and grad "
                         f"{_s(grad) if hasattr(grad, 'shape') else 'scalar'} do not fit x "
                         f"{_s(x)} (need one lse per row, grad a scalar or one per row)")


def _col2im(op: str, cols: Array, x_shape: Any, lead: tuple[int, ...]) -> None:
    if len(x_shape) != 4 or cols.ndim != 6 or tuple(cols.shape[:len(lead)]) != lead:
        raise ValueError(f"{op}: cols of shape {_s(cols)} do not fit images {tuple(x_shape)}")


def col2im(cols: Array, x_shape: Any, stride: Any, padding: Any, dilation: Any) -> None:
    n, c = (x_shape[0], x_shape[1]) if len(x_shape) == 4 else (-1, -1)
    _col2im("col2im", cols, x_shape, (n, c))


def col2im_cm(cols: Array, x_shape: Any, stride: Any, padding: Any, dilation: Any) -> None:
    c = x_shape[1] if len(x_shape) == 4 else -1
    _col2im("col2im_cm", cols, x_shape, (c,))
    if len(x_shape) == 4 and cols.shape[3] != x_shape[0]:
        raise ValueError(f"col2im_cm: cols of shape {_s(cols)} do not fit images "
                         f"{tuple(x_shape)}")


CHECKS: dict[str, Callable[..., None]] = {
    "gemm": gemm, "gemm_batched": gemm_batched, "lora_linear_fwd": lora_linear_fwd,
    "lora_linear_bwd": lora_linear_bwd, "layernorm_fwd": layernorm_fwd,
    "layernorm_bwd": layernorm_bwd, "softmax_xent_fwd": softmax_xent_fwd,
    "softmax_xent_bwd": softmax_xent_bwd, "col2im": col2im, "col2im_cm": col2im_cm,
}


def checked(name: str, kernel: Callable[..., Any]) -> Callable[..., Any]:
    """`kernel` behind CHECKS[name] (unchanged when it has no check)."""
    check = CHECKS.get(name)
    if check is None:
        return kernel

    @functools.wraps(kernel)
    def run(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return kernel(*args, **kwargs)
    return run
