"""CUDA wrappers of the fused kernels in csrc/cuda/fused.cu and im2col.cu.

Each wrapper has the signature of its numpy reference (minitl/backend/reference.py), runs the
kernel for float32 CuPy arrays, and hands anything else (float64, other ranks) to the
reference. Each kernel is checked against the reference once, on small ragged inputs, before
its first use; one that fails is dropped with a warning (see cuda.verified).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.backend import cuda as cu
from minitl.backend import reference
from minitl.backend.guards import check_indices, check_length
from minitl.types import Array


def _fn(name: str, source: str = "fused.cu") -> Any:
    return cu.get_kernel(source, name)


def _rows_grid(m: int) -> tuple[int, int, int]:
    return (max(1, min(m, 8 * cu.info()["sms"])), 1, 1)


def _row_block(d: int) -> tuple[int, int, int]:
    return (256 if d >= 1024 else 128 if d >= 256 else 64, 1, 1)


def _flat_grid(n: int) -> tuple[int, int, int]:
    return (max(1, min(cu.cdiv(n, 256), 32 * cu.info()["sms"])), 1, 1)


def _ok(name: str, check: Any) -> bool:
    return cu.verified(name, check, name)


def _c(x: Array) -> Array:
    return cu.cupy().ascontiguousarray(x)


# ---- LayerNorm ----------------------------------------------------------------------------------


def _check_layernorm() -> bool:
    x, w, b, g = cu.rand(7, 300, seed=1), cu.rand(300, seed=2), cu.rand(300, seed=3), cu.rand(
        7, 300, seed=4)
    got, want = layernorm_fwd(x, w, b, 1e-5, _check=False), reference.layernorm_fwd(x, w, b, 1e-5)
    ok = all(cu.close(p, q, 1e-4) for p, q in zip(got, want))
    gb = layernorm_bwd(g, x, got[1], got[2], w, (True, True, True), _check=False)
    wb = reference.layernorm_bwd(g, x, got[1], got[2], w, (True, True, True))
    return ok and all(cu.close(p, q, 1e-3) for p, q in zip(gb, wb))


def layernorm_fwd(x: Array, weight: Array | None, bias: Array | None, eps: float,
                  _check: bool = True) -> tuple[Array, Array, Array]:
    if (not cu.is_f32(x, weight, bias) or x.ndim != 2 or x.size == 0
            or (_check and not _ok("layernorm", _check_layernorm))):
        return reference.layernorm_fwd(x, weight, bias, eps)
    cp = cu.cupy()
    x = _c(x)
    m, d = x.shape
    y = cp.empty_like(x)
    mean, rstd = cp.empty((m, 1), cp.float32), cp.empty((m, 1), cp.float32)
    cu.launch(_fn("layernorm_fwd_f32"), _rows_grid(m), _row_block(d),
              (x, cu.ptr(None if weight is None else _c(weight)),
               cu.ptr(None if bias is None else _c(bias)), y, mean, rstd, cu.i32(m), cu.i32(d),
               cu.f32(eps)))
    return y, mean, rstd


def layernorm_bwd(g: Array, x: Array, mean: Array, rstd: Array, weight: Array | None,
                  needs: tuple[bool, ...], _check: bool = True) -> tuple[Array | None, ...]:
    m = x.shape[0] if x.ndim == 2 else 0
    d = x.shape[1] if x.ndim == 2 else 0
    if (not cu.is_f32(g, x, mean, rstd, weight) or x.ndim != 2 or x.size == 0
            or 2 * d * 4 > 200 * 1024 or (_check and not _ok("layernorm", _check_layernorm))):
        return reference.layernorm_bwd(g, x, mean, rstd, weight, needs)
    cp = cu.cupy()
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    grid = _rows_grid(m)
    parts = grid[0]
    dx = cp.empty_like(x) if need_x else None
    dw_part = cp.empty((parts, d), cp.float32) if need_w else None
    db_part = cp.empty((parts, d), cp.float32) if need_b else None
    smem = 2 * d * 4 if (need_w or need_b) else 0
    cu.launch(_fn("layernorm_bwd_f32"), grid, _row_block(d),
              (_c(g), _c(x), _c(mean), _c(rstd), cu.ptr(None if weight is None else _c(weight)),
               cu.ptr(dx), cu.ptr(dw_part), cu.ptr(db_part), cu.i32(m), cu.i32(d)), smem)
    return (dx, None if dw_part is None else dw_part.sum(axis=0),
            None if db_part is None else db_part.sum(axis=0))


# ---- softmax + cross-entropy ---------------------------------------------------------------------


def _check_xent() -> bool:
    cp = cu.cupy()
    x, w = cu.rand(9, 37, seed=1), cp.abs(cu.rand(37, seed=2))
    t = cp.asarray(np.array([0, 5, -100, 36, 2, 2, -100, 1, 30], dtype=np.int64))
    gr = cu.rand(9, seed=3)
    ok = True
    for weight, eps in ((None, 0.0), (w, 0.1)):
        got = softmax_xent_fwd(x, t, weight, -100, eps, _check=False)
        want = reference.softmax_xent_fwd(x, t, weight, -100, eps)
        ok &= all(cu.close(p, q, 1e-4) for p, q in zip(got, want))
        ok &= cu.close(softmax_xent_bwd(x, want[1], t, weight, -100, eps, gr, _check=False),
                       reference.softmax_xent_bwd(x, want[1], t, weight, -100, eps, gr), 1e-4)
    return ok


def softmax_xent_fwd(x: Array, target: Array, weight: Array | None, ignore_index: int,
                     label_smoothing: float, _check: bool = True) -> tuple[Array, Array]:
    if (not cu.is_f32(x, weight) or x.ndim != 2 or x.size == 0
            or (_check and not _ok("softmax_xent", _check_xent))):
        return reference.softmax_xent_fwd(x, target, weight, ignore_index, label_smoothing)
    cp = cu.cupy()
    m, c = x.shape
    # the kernel reads x[row, target[row]] unchecked (an illegal address kills the context)
    check_length("softmax_xent_fwd", "target", target, m)
    check_indices("softmax_xent_fwd", target, c, "classes", ignore_index)
    loss, lse = cp.empty(m, cp.float32), cp.empty(m, cp.float32)
    cu.launch(_fn("softmax_xent_fwd_f32"), _rows_grid(m), _row_block(c),
              (_c(x), _c(target.astype(cp.int64, copy=False)),
               cu.ptr(None if weight is None else _c(weight)), loss, lse, cu.i32(m), cu.i32(c),
               np.int64(ignore_index), cu.f32(label_smoothing)))
    return loss, lse


def softmax_xent_bwd(x: Array, lse: Array, target: Array, weight: Array | None,
                     ignore_index: int, label_smoothing: float, grad: Array,
                     _check: bool = True) -> Array:
    cp = cu.cupy()
    if (not cu.is_f32(x, lse, weight) or x.ndim != 2 or x.size == 0
            or not isinstance(grad, cp.ndarray)
            or (_check and not _ok("softmax_xent", _check_xent))):
        return reference.softmax_xent_bwd(x, lse, target, weight, ignore_index, label_smoothing,
                                          grad)
    m, c = x.shape
    check_length("softmax_xent_bwd", "target", target, m)
    check_indices("softmax_xent_bwd", target, c, "classes", ignore_index, backward=True)
    grad = _c(cp.broadcast_to(grad.astype(cp.float32, copy=False), (m,)))
    dx = cp.empty_like(x)
    cu.launch(_fn("softmax_xent_bwd_f32"), _rows_grid(m), _row_block(c),
              (_c(x), _c(lse), _c(target.astype(cp.int64, copy=False)),
               cu.ptr(None if weight is None else _c(weight)), grad, dx, cu.i32(m), cu.i32(c),
               np.int64(ignore_index), cu.f32(label_smoothing)))
    return dx


# ---- softmax -------------------------------------------------------------------------------------


def _check_softmax() -> bool:
    cp = cu.cupy()
    x = cu.rand(5, 3, 70, seed=1)
    x[0, 1, :] = -cp.inf
    y = softmax_fwd(x, True, _check=False)
    g = cu.rand(5, 3, 70, seed=2)
    return (cu.close(y, reference.softmax_fwd(x, True), 1e-5)
            and cu.close(softmax_bwd(g, y, _check=False), reference.softmax_bwd(g, y), 1e-5))


def _warps_grid(m: int) -> tuple[int, int, int]:
    return (max(1, min(cu.cdiv(m, 8), 32 * cu.info()["sms"])), 1, 1)


def softmax_fwd(x: Array, safe: bool, _check: bool = True) -> Array:
    if (not cu.is_f32(x) or x.ndim == 0 or x.size == 0
            or (_check and not _ok("softmax", _check_softmax))):
        return reference.softmax_fwd(x, safe)
    cp = cu.cupy()
    x = _c(x)
    s = x.shape[-1]
    m = x.size // s
    y = cp.empty_like(x)
    cu.launch(_fn("softmax_fwd_f32"), _warps_grid(m), (256, 1, 1),
              (x, y, cu.i32(m), cu.i32(s), cu.i32(int(safe))))
    return y


def softmax_bwd(g: Array, y: Array, _check: bool = True) -> Array:
    if (not cu.is_f32(g, y) or y.ndim == 0 or y.size == 0 or g.shape != y.shape
            or (_check and not _ok("softmax", _check_softmax))):
        return reference.softmax_bwd(g, y)
    cp = cu.cupy()
    s = y.shape[-1]
    m = y.size // s
    dx = cp.empty(y.shape, cp.float32)
    cu.launch(_fn("softmax_bwd_f32"), _warps_grid(m), (256, 1, 1),
              (_c(g), _c(y), dx, cu.i32(m), cu.i32(s)))
    return dx


# ---- GELU ------------------------------------------------------------------------------------


def _check_gelu() -> bool:
    x, g = 3 * cu.rand(1001, seed=1), cu.rand(1001, seed=2)
    return all(cu.close(gelu_fwd(x, ap, _check=False), reference.gelu_fwd(x, ap), 1e-5)
               and cu.close(gelu_bwd(g, x, ap, _check=False), reference.gelu_bwd(g, x, ap),
                            1e-5)
               for ap in ("none", "tanh"))


def gelu_fwd(x: Array, approximate: str, _check: bool = True) -> Array:
    if not cu.is_f32(x) or x.size == 0 or (_check and not _ok("gelu", _check_gelu)):
        return reference.gelu_fwd(x, approximate)
    cp = cu.cupy()
    x = _c(x)
    y = cp.empty_like(x)
    cu.launch(_fn("gelu_fwd_f32"), _flat_grid(x.size), (256, 1, 1),
              (x, y, np.int64(x.size), cu.i32(int(approximate == "tanh"))))
    return y


def gelu_bwd(g: Array, x: Array, approximate: str, _check: bool = True) -> Array:
    if (not cu.is_f32(g, x) or x.size == 0 or g.shape != x.shape
            or (_check and not _ok("gelu", _check_gelu))):
        return reference.gelu_bwd(g, x, approximate)
    cp = cu.cupy()
    dx = cp.empty(x.shape, cp.float32)
    cu.launch(_fn("gelu_bwd_f32"), _flat_grid(x.size), (256, 1, 1),
              (_c(g), _c(x), dx, np.int64(x.size), cu.i32(int(approximate == "tanh"))))
    return dx


# ---- embedding backward --------------------------------------------------------------------------


def _check_embedding() -> bool:
    cp = cu.cupy()
    g = cu.rand(50, 33, seed=1)
    ids = cp.asarray(np.random.default_rng(0).integers(0, 11, 50))
    return all(cu.close(embedding_bwd(g, ids, 11, pad, freq, _check=False),
                        reference.embedding_bwd(g, ids, 11, pad, freq), 1e-5)
               for pad, freq in ((None, False), (3, True)))


def embedding_bwd(g: Array, ids: Array, num_embeddings: int, padding_idx: int | None,
                  scale_grad_by_freq: bool, _check: bool = True) -> Array:
    if (not cu.is_f32(g) or g.ndim != 2 or ids.ndim != 1 or g.size == 0
            or (_check and not _ok("embedding_bwd", _check_embedding))):
        return reference.embedding_bwd(g, ids, num_embeddings, padding_idx, scale_grad_by_freq)
    cp = cu.cupy()
    m, d = g.shape
    # the kernel adds into dw[ids[r]] unchecked; the saved ids may have changed since forward
    check_length("embedding_bwd", "ids", ids, m)
    check_indices("embedding_bwd", ids, num_embeddings, "embeddings", backward=True)
    ids = _c(ids.astype(cp.int64, copy=False))
    dw = cp.zeros((num_embeddings, d), cp.float32)
    cu.launch(_fn("embedding_bwd_f32"), _flat_grid(m * d), (256, 1, 1),
              (_c(g), ids, dw, cu.i32(m), cu.i32(d),
               np.int64(-1 if padding_idx is None else padding_idx)))
    if scale_grad_by_freq:
        counts = cp.bincount(ids, minlength=num_embeddings)
        dw /= cp.maximum(counts, 1)[:, None].astype(cp.float32)
    return dw


# ---- AdamW ------------------------------------------------------------------------------------


def _check_adamw() -> bool:
    ok = True
    for decoupled, ams, maximize in ((True, False, False), (False, True, True)):
        state = [cu.rand(257, seed=s) for s in range(5)]
        state[3] = state[3] ** 2  # exp_avg_sq >= 0
        state[4] = state[3] * 1.5
        mine = [s.copy() for s in state]
        kw: dict[str, Any] = {"step": 3, "lr": 1e-2, "beta1": 0.9, "beta2": 0.999,
                              "eps": 1e-8, "weight_decay": 0.1, "decoupled": decoupled,
                              "maximize": maximize}
        reference.adamw_step(state[0], state[1], state[2], state[3],
                             state[4] if ams else None, **kw)
        adamw_step(mine[0], mine[1], mine[2], mine[3], mine[4] if ams else None, **kw,
                   _check=False)
        ok &= all(cu.close(p, q, 1e-5) for p, q in zip(mine, state))
    return ok


def adamw_step(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
               max_exp_avg_sq: Array | None, step: int, lr: float, beta1: float, beta2: float,
               eps: float, weight_decay: float, decoupled: bool, maximize: bool,
               _check: bool = True) -> None:
    arrays = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    if (not cu.is_f32(*arrays)
            or not all(a is None or (a.flags.c_contiguous and a.shape == param.shape)
                       for a in arrays)
            or param.size == 0 or (_check and not _ok("adamw_step", _check_adamw))):
        reference.adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
                             beta2, eps, weight_decay, decoupled, maximize)
        return
    decay = 1 - lr * weight_decay if (weight_decay != 0 and decoupled) else 1.0
    wd_l2 = weight_decay if (weight_decay != 0 and not decoupled) else 0.0
    cu.launch(_fn("adamw_step_f32"), _flat_grid(param.size), (256, 1, 1),
              (param, grad, exp_avg, exp_avg_sq, cu.ptr(max_exp_avg_sq), np.int64(param.size),
               cu.f32(decay), cu.f32(wd_l2), cu.f32(beta1), cu.f32(beta2), cu.f32(eps),
               cu.f32(lr / (1 - beta1 ** step)), cu.f32((1 - beta2 ** step) ** 0.5),
               cu.i32(int(maximize))))


# ---- im2col / col2im ---------------------------------------------------------------------------


def _conv_args(x_shape: tuple[int, ...], kh: int, kw: int, stride: tuple[int, int],
               padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[Any, ...]:
    n, c, h, w = x_shape
    oh = reference.conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = reference.conv_out_size(w, kw, stride[1], padding[1], dilation[1])
    return tuple(cu.i32(v) for v in (n, c, h, w, kh, kw, *stride, *padding, *dilation, oh, ow))


def _check_im2col() -> bool:
    x = cu.rand(2, 3, 9, 8, seed=1)
    for st, pd, dl in (((1, 1), (0, 0), (1, 1)), ((2, 3), (1, 2), (2, 1))):
        cols = im2col(x, 3, 2, st, pd, dl, _check=False)
        if not cu.close(cols, reference.im2col(x, 3, 2, st, pd, dl), 1e-6):
            return False
        if not cu.close(col2im(cols, x.shape, st, pd, dl, _check=False),
                        reference.col2im(cols, x.shape, st, pd, dl), 1e-5):
            return False
    return True


def im2col(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int], _check: bool = True) -> Array:
    if (not cu.is_f32(x) or x.ndim != 4 or x.size == 0
            or (_check and not _ok("im2col", _check_im2col))):
        return reference.im2col(x, kh, kw, stride, padding, dilation)
    cp = cu.cupy()
    args = _conv_args(x.shape, kh, kw, stride, padding, dilation)
    n, c = x.shape[:2]
    cols = cp.empty((n, c, kh, kw, int(args[-2]), int(args[-1])), cp.float32)
    if cols.size:
        cu.launch(_fn("im2col_f32", "im2col.cu"), _flat_grid(cols.size), (256, 1, 1),
                  (_c(x), cols, *args))
    return cols


def col2im(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int], _check: bool = True) -> Array:
    if (not cu.is_f32(cols) or cols.ndim != 6 or cols.size == 0
            or (_check and not _ok("im2col", _check_im2col))):
        return reference.col2im(cols, x_shape, stride, padding, dilation)
    cp = cu.cupy()
    kh, kw = cols.shape[2:4]
    args = _conv_args(x_shape, kh, kw, stride, padding, dilation)
    x = cp.empty(tuple(x_shape), cp.float32)
    cu.launch(_fn("col2im_f32", "im2col.cu"), _flat_grid(x.size), (256, 1, 1),
              (_c(cols), x, *args))
    return x


def im2col_cm(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
              dilation: tuple[int, int]) -> Array:
    """(C, kh, kw, N, OH, OW): im2col, then one transposing copy."""
    return cu.cupy().ascontiguousarray(
        im2col(x, kh, kw, stride, padding, dilation).transpose(1, 2, 3, 0, 4, 5))


def col2im_cm(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> Array:
    return col2im(cu.cupy().ascontiguousarray(cols.transpose(3, 0, 1, 2, 4, 5)), x_shape,
                  stride, padding, dilation)
