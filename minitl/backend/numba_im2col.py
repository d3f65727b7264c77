"""numba im2col / col2im: the gathers behind conv2d's GEMM, and their scatter-add adjoints."""

from __future__ import annotations

import numpy as np

from minitl.backend.numba_common import Array, _c, _jit, _launch, prange

# ---- im2col / col2im ---------------------------------------------------------------------
# Receptive-field gathers written directly from the unpadded input (no padded copy): a tap
# that falls in the padding reads 0, and col2im drops it.


@_jit(parallel=True)
def _im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, channel_major, cols
            ):  # type: ignore[no-untyped-def]
    n, c, h, wd = x.shape
    xf, cf = x.reshape(-1), cols.reshape(-1)  # flat offsets: no per-row views
    for t in prange(n * c):  # one (image, channel) plane per task
        # channel-major tasks run image after image so a thread writes contiguous blocks
        ch, b = (t // n, t % n) if channel_major else (t % c, t // c)
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pw  # input column of output column 0
                q_lo = min(ow, max(0, (sw - 1 - off) // sw))  # first q inside the row
                q_hi = max(q_lo, min(ow, (wd - off + sw - 1) // sw))  # past the last one
                if channel_major:
                    base = (((ch * kh + i) * kw + j) * n + b) * oh * ow
                else:
                    base = (((b * c + ch) * kh + i) * kw + j) * oh * ow
                for r in range(oh):
                    hi = r * sh - ph + i * dh
                    o = base + r * ow
                    if hi < 0 or hi >= h:
                        for q in range(ow):
                            cf[o + q] = 0.0
                        continue
                    src = ((b * c + ch) * h + hi) * wd + off
                    for q in range(q_lo):
                        cf[o + q] = 0.0
                    for q in range(q_lo, q_hi):  # branch-free: contiguous when sw == 1
                        cf[o + q] = xf[src + q * sw]
                    for q in range(q_hi, ow):
                        cf[o + q] = 0.0


@_jit(parallel=True)
def _col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, channel_major, out
            ):  # type: ignore[no-untyped-def]
    n, c, h, wd = out.shape
    of, cf = out.reshape(-1), cols.reshape(-1)
    for t in prange(n * c):  # each (image, channel) plane is written by one task only
        ch, b = (t // n, t % n) if channel_major else (t % c, t // c)
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pw
                q_lo = min(ow, max(0, (sw - 1 - off) // sw))
                q_hi = max(q_lo, min(ow, (wd - off + sw - 1) // sw))
                if channel_major:
                    base = (((ch * kh + i) * kw + j) * n + b) * oh * ow
                else:
                    base = (((b * c + ch) * kh + i) * kw + j) * oh * ow
                for r in range(oh):
                    hi = r * sh - ph + i * dh
                    if hi < 0 or hi >= h:
                        continue
                    o = base + r * ow
                    dst = ((b * c + ch) * h + hi) * wd + off
                    for q in range(q_lo, q_hi):
                        of[dst + q * sw] += cf[o + q]


def _geometry(h: int, w: int, kh: int, kw: int, stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    from minitl.backend.reference import conv_out_size

    # raises for a geometry the kernels' row/column clamps do not cover (non-positive steps)
    return (conv_out_size(h, kh, stride[0], padding[0], dilation[0]),
            conv_out_size(w, kw, stride[1], padding[1], dilation[1]))


def _im2col_any(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int], channel_major: bool) -> Array:
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = _geometry(h, w, kh, kw, stride, padding, dilation)
    shape = (c, kh, kw, n, oh, ow) if channel_major else (n, c, kh, kw, oh, ow)
    cols = np.empty(shape, dtype=x.dtype)
    if cols.size:
        _launch(_im2col, cols.size, x, kh, kw, *stride, *padding, *dilation, oh, ow,
                channel_major, cols)
    return cols


def _col2im_any(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int],
                channel_major: bool) -> Array:
    cols = _c(cols)
    if cols.ndim != 6 or len(x_shape) != 4:
        raise ValueError(f"col2im: expected 6-D cols and a 4-D x_shape, got {cols.shape} and "
                         f"{tuple(x_shape)}")
    kh, kw = cols.shape[1:3] if channel_major else cols.shape[2:4]
    oh, ow = cols.shape[-2:]
    # the kernel walks the (image, channel) planes of x_shape and reads cols at the same
    # (image, channel): they must agree (rows and columns are clamped inside the kernel)
    n_c = (cols.shape[3], cols.shape[0]) if channel_major else tuple(cols.shape[:2])
    if n_c != tuple(x_shape[:2]):
        raise ValueError(f"col2im: cols of shape {cols.shape} do not fit x_shape "
                         f"{tuple(x_shape)} (batch and channels differ)")
    _geometry(x_shape[2], x_shape[3], kh, kw, stride, padding, dilation)
    out = np.zeros(tuple(x_shape), dtype=cols.dtype)
    if cols.size:
        _launch(_col2im, cols.size, cols, kh, kw, *stride, *padding, *dilation, oh, ow,
                channel_major, out)
    return out


def im2col(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int]) -> Array:
    """(N, C, H, W) -> (N, C, kh, kw, OH, OW), one (image, channel) plane per task."""
    return _im2col_any(x, kh, kw, stride, padding, dilation, False)


def col2im(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int]) -> Array:
    """Adjoint of im2col, each output plane accumulated by one thread (no atomics)."""
    return _col2im_any(cols, x_shape, stride, padding, dilation, False)


def im2col_cm(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
              dilation: tuple[int, int]) -> Array:
    """(N, C, H, W) -> (C, kh, kw, N, OH, OW), the layout of one whole-batch GEMM."""
    return _im2col_any(x, kh, kw, stride, padding, dilation, True)


def col2im_cm(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> Array:
    """Adjoint of im2col_cm."""
    return _col2im_any(cols, x_shape, stride, padding, dilation, True)
