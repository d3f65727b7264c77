"""conv2d forward and backward as whole kernels: the C++ version (one image per thread; shifted
windows of padded planes in csrc/cpu/conv_direct.cpp, im2col + GEMM with the columns built in
L2 in csrc/cpu/conv.cpp) and its numpy reference (whole-batch im2col + GEMM).

Both take x (N, C, H, W), weight (Co, C / groups, kh, kw), stride, the (top, left) padding
`pad_lo`, the (bottom, right) padding `pad_hi`, dilation and groups, so 'same' padding with an
even kernel needs no padded copy. The wrappers send anything but float32 numpy arrays to the
reference; `self_check()` compares the two on shapes that cut SIMD tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.backend import reference
from minitl.backend.cpu import all_close, float32_draws, native_module

Pair = tuple[int, int]
KERNELS = ("conv2d_fwd", "conv2d_bwd")


def _padded(x: np.ndarray, pad_lo: Pair, pad_hi: Pair) -> tuple[np.ndarray, Pair]:
    """x padded explicitly when the padding is asymmetric, and the padding im2col still adds."""
    if tuple(pad_lo) == tuple(pad_hi):
        return x, tuple(pad_lo)  # type: ignore[return-value]
    xp = reference._xp(x)
    width = ((0, 0), (0, 0), (pad_lo[0], pad_hi[0]), (pad_lo[1], pad_hi[1]))
    return xp.pad(x, width), (0, 0)


def conv2d_fwd_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair,
                         pad_lo: Pair, pad_hi: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """y = W * x + b: cols (G, K, N L) from im2col_cm, y_g = W_g (Co/G, K) @ cols_g."""
    xp = reference._xp(x)
    xpad, pad = _padded(x, pad_lo, pad_hi)
    n = x.shape[0]
    cout, cin_g, kh, kw = w.shape
    cols = reference.im2col_cm(xpad, kh, kw, stride, pad, dilation)  # (C, kh, kw, N, OH, OW)
    oh, ow = cols.shape[-2:]
    cols = cols.reshape(groups, cin_g * kh * kw, n * oh * ow)
    y = xp.matmul(w.reshape(groups, cout // groups, -1), cols).reshape(cout, n, oh, ow)
    if b is not None:
        y = y + b.reshape(cout, 1, 1, 1)
    return xp.ascontiguousarray(y.transpose(1, 0, 2, 3))


def conv2d_bwd_reference(x: np.ndarray, w: np.ndarray, gy: np.ndarray, stride: Pair,
                         pad_lo: Pair, pad_hi: Pair, dilation: Pair, groups: int,
                         need_dx: bool, need_dw: bool) -> tuple[Any, Any]:
    """dW_g = gy_g (Co/G, N L) @ cols_g^T;  dx = col2im(W_g^T @ gy_g)."""
    xp = reference._xp(x)
    xpad, pad = _padded(x, pad_lo, pad_hi)
    n, c, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    oh, ow = gy.shape[-2:]
    g_cm = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(groups, cout // groups, -1)
    w_g = w.reshape(groups, cout // groups, -1)  # (G, Co/G, K)
    dx = dw = None
    if need_dw:
        cols = reference.im2col_cm(xpad, kh, kw, stride, pad, dilation)
        cols = cols.reshape(groups, cin_g * kh * kw, n * oh * ow)
        dw = xp.matmul(g_cm, cols.transpose(0, 2, 1)).reshape(w.shape)
    if need_dx:
        dcols = xp.matmul(w_g.transpose(0, 2, 1), g_cm).reshape(c, kh, kw, n, oh, ow)
        dx = reference.col2im_cm(dcols, xpad.shape, stride, pad, dilation)
        dx = dx[:, :, pad_lo[0] - pad[0]:, pad_lo[1] - pad[1]:][:, :, :h, :wd]
    return dx, dw


def _native_ok(*arrays: Any) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.dtype.isnative
               for a in arrays if a is not None)


def _pair(v: Any) -> Pair:
    return (int(v[0]), int(v[1]))


def conv2d_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair, pad_lo: Pair,
               pad_hi: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """y (N, Co, OH, OW) on the C++ kernel for float32 operands, else the reference."""
    mod = native_module()
    if mod is None or not _native_ok(x, w, b):
        return conv2d_fwd_reference(x, w, b, stride, pad_lo, pad_hi, dilation, groups)
    c = np.ascontiguousarray
    return mod.conv2d_fwd(c(x), c(w), None if b is None else c(b), _pair(stride),
                          _pair(pad_lo), _pair(pad_hi), _pair(dilation), int(groups))


def conv2d_bwd(x: np.ndarray, w: np.ndarray, gy: np.ndarray, stride: Pair, pad_lo: Pair,
               pad_hi: Pair, dilation: Pair, groups: int, need_dx: bool, need_dw: bool
               ) -> tuple[Any, Any]:
    """(dx, dweight) on the C++ kernel for float32 operands; one not needed is None."""
    mod = native_module()
    if mod is None or not _native_ok(x, w, gy):
        return conv2d_bwd_reference(x, w, gy, stride, pad_lo, pad_hi, dilation, groups,
                                    need_dx, need_dw)
    c = np.ascontiguousarray
    return tuple(mod.conv2d_bwd(c(x), c(w), c(gy), _pair(stride), _pair(pad_lo),
                                _pair(pad_hi), _pair(dilation), int(groups), bool(need_dx),
                                bool(need_dw)))  # type: ignore[return-value]


def self_check() -> dict[str, bool]:
    """Native against reference on a strided, padded, grouped case and a depthwise one (ms)."""
    rng = np.random.default_rng(0)

    rand, close = float32_draws(rng), all_close

    ok_f, ok_b = True, True
    # (x, w, stride, pad_lo, pad_hi, dilation, groups)
    cases = [(rand(3, 6, 9, 11), rand(10, 3, 3, 2), (2, 1), (1, 0), (2, 1), (1, 2), 2),
             (rand(2, 5, 8, 7), rand(5, 1, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 5)]
    for x, w, s, lo, hi, d, grp in cases:
        b = rand(w.shape[0])
        y = conv2d_fwd(x, w, b, s, lo, hi, d, grp)
        ok_f &= close([y], [conv2d_fwd_reference(x, w, b, s, lo, hi, d, grp)])
        gy = rand(*y.shape)
        ok_b &= close(conv2d_bwd(x, w, gy, s, lo, hi, d, grp, True, True),
                      conv2d_bwd_reference(x, w, gy, s, lo, hi, d, grp, True, True))
    return {"conv2d_fwd": bool(ok_f), "conv2d_bwd": bool(ok_b)}
