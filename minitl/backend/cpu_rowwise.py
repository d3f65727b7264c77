"""Wrappers of the row-wise kernels of the native extension (csrc/cpu/rowwise.cpp): softmax,
layer_norm and softmax cross-entropy, forward and backward.

Each wrapper has the signature of its numpy reference (backend/reference.py) and sends what
the kernels do not take (float64 or mixed dtypes, non-numpy arrays, empty or 0-d arrays) to
that reference; strided operands are made contiguous first. Class targets are checked on a
private int64 copy (guards.checked_indices) before the kernel reads x and the weights by
them. `self_check()` compares each kernel with its reference on rows that cut the SIMD width.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.backend import reference
from minitl.backend.cpu import all_close, float32_draws, native_module
from minitl.backend.guards import check_length, check_same_shape, checked_indices
from minitl.types import Array

KERNELS = ("softmax_fwd", "softmax_bwd", "layernorm_fwd", "layernorm_bwd", "softmax_xent_fwd",
           "softmax_xent_bwd")


def _native(*arrays: Any) -> Any:
    """minitl._C when every array given (None skipped) is a non-empty float32 numpy array in
    native byte order, else None."""
    mod = native_module()
    if mod is None:
        return None
    for a in arrays:
        if a is not None and not (isinstance(a, np.ndarray) and a.dtype == np.float32
                                  and a.dtype.isnative and a.size):
            return None
    return mod


_c = np.ascontiguousarray


def softmax_fwd(x: Array, safe: bool) -> Array:
    """Softmax over the last axis of x on the C++ kernel; see reference.softmax_fwd."""
    mod = _native(x)
    if mod is None or x.ndim == 0:
        return reference.softmax_fwd(x, safe)
    return mod.softmax_fwd(_c(x), bool(safe))


def softmax_bwd(g: Array, y: Array) -> Array:
    """dx = y (g - sum(g y)) over the last axis on the C++ kernel."""
    check_same_shape("softmax_bwd", g=g, y=y)
    mod = _native(g, y)
    if mod is None or y.ndim == 0:
        return reference.softmax_bwd(g, y)
    return mod.softmax_bwd(_c(g), _c(y))


def layernorm_fwd(x: Array, weight: Array | None, bias: Array | None, eps: float
                  ) -> tuple[Array, Array, Array]:
    """(y (M, D), mean (M, 1), rstd (M, 1)) on the C++ kernel for float32 x (M, D)."""
    mod = _native(x, weight, bias)
    if mod is None or x.ndim != 2:
        return reference.layernorm_fwd(x, weight, bias, eps)
    y, mean, rstd = mod.layernorm_fwd(_c(x), None if weight is None else _c(weight),
                                      None if bias is None else _c(bias), float(eps))
    return y, mean, rstd


def layernorm_bwd(g: Array, x: Array, mean: Array, rstd: Array, weight: Array | None,
                  needs: tuple[bool, ...]) -> tuple[Array | None, ...]:
    """(dx, dweight, dbias) of layernorm_fwd on the C++ kernel; one `needs` does not ask for
    is None. dweight and dbias are summed over a fixed number of row chunks."""
    check_same_shape("layernorm_bwd", g=g, x=x)
    mod = _native(g, x, mean, rstd, weight)
    if mod is None or x.ndim != 2:
        return reference.layernorm_bwd(g, x, mean, rstd, weight, needs)
    return tuple(mod.layernorm_bwd(_c(g), _c(x), _c(mean), _c(rstd),
                                   None if weight is None else _c(weight),
                                   tuple(bool(v) for v in needs[:3])))


def softmax_xent_fwd(x: Array, target: Array, weight: Array | None, ignore_index: int,
                     label_smoothing: float) -> tuple[Array, Array]:
    """(loss (M,), lse (M,)) on the C++ kernel: one pass for the max, one for the sum of
    exponentials; no (M, C) array is written."""
    mod = _native(x, weight)
    if mod is None or x.ndim != 2:
        return reference.softmax_xent_fwd(x, target, weight, ignore_index, label_smoothing)
    m, c = x.shape
    check_length("softmax_xent_fwd", "target", target, m)
    own = checked_indices("softmax_xent_fwd", target, c, "classes", ignore_index)
    loss, lse = mod.softmax_xent_fwd(_c(x), own, None if weight is None else _c(weight),
                                     int(ignore_index), float(label_smoothing))
    return loss, lse


def softmax_xent_bwd(x: Array, lse: Array, target: Array, weight: Array | None,
                     ignore_index: int, label_smoothing: float, grad: Array) -> Array:
    """dx (M, C) of softmax_xent_fwd on the C++ kernel; ignored rows are 0."""
    mod = _native(x, lse, weight)
    if mod is None or x.ndim != 2:
        return reference.softmax_xent_bwd(x, lse, target, weight, ignore_index,
                                          label_smoothing, grad)
    m, c = x.shape
    # the targets were checked in forward, but the saved array may have changed since
    check_length("softmax_xent_bwd", "target", target, m)
    check_length("softmax_xent_bwd", "lse", lse, m)
    own = checked_indices("softmax_xent_bwd", target, c, "classes", ignore_index,
                          backward=True)
    grad = _c(np.broadcast_to(np.asarray(grad, dtype=np.float32), (m,)))
    return mod.softmax_xent_bwd(_c(x), _c(lse).reshape(m), own,
                                None if weight is None else _c(weight), int(ignore_index),
                                float(label_smoothing), grad)


def self_check() -> dict[str, bool]:
    """Each kernel against its reference on rows of 1, 17 and 131 (cutting 16-lane vectors),
    with weights, a bias, ignored targets and label smoothing (a few ms)."""
    rng = np.random.default_rng(0)

    rand = float32_draws(rng)

    def close(got: Any, want: Any) -> bool:
        return all_close(got, want, atol=1e-5)

    ok = dict.fromkeys(KERNELS, True)
    for n in (1, 17, 131):
        x, g, w, b = rand(5, n) * 3, rand(5, n), rand(n), rand(n)
        y = reference.softmax_fwd(x, True)
        ok["softmax_fwd"] &= close([softmax_fwd(x, True)], [y])
        ok["softmax_bwd"] &= close([softmax_bwd(g, y)], [reference.softmax_bwd(g, y)])
        want = reference.layernorm_fwd(x, w, b, 1e-5)
        ok["layernorm_fwd"] &= close(layernorm_fwd(x, w, b, 1e-5), want)
        needs = (True, True, True)
        ok["layernorm_bwd"] &= close(layernorm_bwd(g, x, want[1], want[2], w, needs),
                                     reference.layernorm_bwd(g, x, want[1], want[2], w, needs))
        t = rng.integers(0, n, 5)
        t[1] = -100
        for weight, eps in ((None, 0.0), (np.abs(w), 0.1)):
            loss, lse = reference.softmax_xent_fwd(x, t, weight, -100, eps)
            ok["softmax_xent_fwd"] &= close(softmax_xent_fwd(x, t, weight, -100, eps),
                                            (loss, lse))
            gl = np.abs(g[:, 0])
            ok["softmax_xent_bwd"] &= close(
                [softmax_xent_bwd(x, lse, t, weight, -100, eps, gl)],
                [reference.softmax_xent_bwd(x, lse, t, weight, -100, eps, gl)])
    return {name: bool(v) for name, v in ok.items()}
