"""Convolution and pooling on NCHW tensors: conv2d (stride, padding incl. 'same'/'valid',
dilation, groups incl. depthwise), conv1d (as a conv2d of height 1), max_pool2d, avg_pool2d
and adaptive_avg_pool2d, all with PyTorch's output-size rules.

On the CPU `backend.conv2d_fwd` / `conv2d_bwd` run each pass whole, one image per thread:
as sums of shifted windows over zero-padded planes, no columns at all
(csrc/cpu/conv_direct.cpp), or as im2col + GEMM with the columns built in cache
(csrc/cpu/conv.cpp; 1x1, depthwise, tiny batches, non-finite operands). Elsewhere (CUDA)
`backend.im2col_cm` lays every receptive field of the whole batch out as a column,
(C kh kw, N OH OW), and each group's filters multiply those columns in one 2-D product;
backward is the adjoint: filters^T @ g gives column gradients that `backend.col2im_cm`
scatter-adds back. Pooling uses the per-image layout (`im2col`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array

IntPair = int | Sequence[int]


def _pair(v: IntPair, name: str, op: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(int(i) for i in v)
    if len(t) == 1:
        t = (t[0], t[0])
    if len(t) != 2:
        raise ValueError(f"{op}: {name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def _pad_input(xp: Any, x: Array, lo: tuple[int, int], hi: tuple[int, int],
               value: float = 0.0) -> Array:
    if not (lo[0] or lo[1] or hi[0] or hi[1]):
        return x
    return xp.pad(x, ((0, 0), (0, 0), (lo[0], hi[0]), (lo[1], hi[1])), constant_values=value)


class Conv2d(Function):
    """y = W * x + b (cross-correlation per group);
    dW = g @ cols^T, dcols = W^T @ g, dx = col2im(dcols), db = sum g.

    The whole batch is one GEMM per group: `im2col_cm` lays the receptive fields out as
    cols (C kh kw, N OH OW), so W_g (Co/G, K) @ cols_g (K, N L) replaces N small products,
    and dW_g = g_g (Co/G, N L) @ cols_g^T needs no sum over the batch afterwards. The
    products are backend.gemm (C++, the same OpenMP pool as the numba kernels): numpy's
    OpenBLAS is faster alone on these short-and-wide shapes, but its spinning worker
    threads and the OpenMP pool starve each other on two cores.
    """

    @staticmethod
    def forward(ctx: Context, x: Array, w: Array, b: Array | None, stride: tuple[int, int],
                pad_lo: tuple[int, int], pad_hi: tuple[int, int], dilation: tuple[int, int],
                groups: int) -> Array:
        xp = ctx.xp
        whole = getattr(ctx.backend, "conv2d_fwd", None)  # CPU backends only
        if whole is not None:
            # Backward rebuilds the columns image by image in cache, so only x is kept, and
            # only for dW (a frozen layer keeps nothing). A private copy, 1 / (kh kw) of the
            # columns: an in-place change of x after forward leaves the gradient exact.
            ctx.save_for_backward(x.copy() if ctx.needs_input_grad[1] else None, w)
            ctx.geom = (stride, pad_lo, pad_hi, dilation, groups)
            ctx.x_shape = x.shape
            return whole(x, w, b, stride, pad_lo, pad_hi, dilation, groups)
        n, _, h, wd = x.shape
        cout, cin_g, kh, kw = w.shape
        if pad_lo != pad_hi:  # asymmetric ('same' with an even kernel): pad here, not in im2col
            x = _pad_input(xp, x, pad_lo, pad_hi)
            pad = (0, 0)
        else:
            pad = pad_lo
        cols = ctx.backend.im2col_cm(x, kh, kw, stride, pad, dilation)  # (Cin, kh, kw, N, OH, OW)
        oh, ow = cols.shape[-2:]
        k, length = cin_g * kh * kw, n * oh * ow
        cols = cols.reshape(groups, k, length)  # (G, K, N L)
        w_g = w.reshape(groups, cout // groups, k)  # (G, Co/G, K)
        if groups == 1:
            y = ctx.backend.gemm(w_g[0], cols[0])  # (Co, N L)
        else:
            y = xp.matmul(w_g, cols).reshape(cout, length)
        if b is not None:
            y += b.reshape(cout, 1)
        ctx.save_for_backward(cols, w_g)
        ctx.geom = (x.shape, (h, wd), stride, pad, pad_lo, dilation, w.shape)
        return y.reshape(cout, n, oh, ow).transpose(1, 0, 2, 3)  # (N, Co, OH, OW) view

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        xp = ctx.xp
        nx, nw, nb = (ctx.needs_input_grad + (False,))[:3]
        if len(ctx.geom) == 5:  # the whole-pass kernels ran forward
            x, w = ctx.saved
            if x is None:  # dW not needed: the kernel reads x only for it
                x = xp.empty(ctx.x_shape, dtype=w.dtype)
            dx, dw = ctx.backend.conv2d_bwd(x, w, g, *ctx.geom, nx, nw)
            db = g.sum(axis=(0, 2, 3)) if nb else None
            return dx, dw, db, None, None, None, None, None
        cols, w_g = ctx.saved
        x_shape, (h, wd), stride, pad, pad_lo, dilation, w_shape = ctx.geom
        groups, _, length = cols.shape
        cout = w_shape[0]
        g_cm = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, cout // groups,
                                                                      length)  # (G, Co/G, N L)
        gemm = ctx.backend.gemm
        dx = dw = db = None
        if nw:
            if groups == 1:
                dw = gemm(g_cm[0], cols[0], trans_b=True).reshape(w_shape)
            else:
                dw = xp.matmul(g_cm, cols.transpose(0, 2, 1)).reshape(w_shape)
        if nx:
            if groups == 1:
                dcols = gemm(w_g[0], g_cm[0], trans_a=True)  # (K, N L)
            else:
                dcols = xp.matmul(w_g.transpose(0, 2, 1), g_cm)  # (G, K, N L)
            n, oh, ow = x_shape[0], g.shape[2], g.shape[3]
            dcols = dcols.reshape(x_shape[1], w_shape[2], w_shape[3], n, oh, ow)
            dx = ctx.backend.col2im_cm(dcols, x_shape, stride, pad, dilation)
            if tuple(dx.shape[-2:]) != (h, wd):  # undo the explicit asymmetric padding
                dx = dx[:, :, pad_lo[0]:pad_lo[0] + h, pad_lo[1]:pad_lo[1] + wd]
        if nb:
            db = g_cm.sum(axis=2).reshape(cout)
        return dx, dw, db, None, None, None, None, None


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; in ceil mode the last window must start inside the
    input or the left padding."""
    eff = d * (k - 1) + 1
    out = (size + 2 * p - eff + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_geometry(op: str, shape: tuple[int, ...], k: tuple[int, int], s: tuple[int, int],
                   p: tuple[int, int], d: tuple[int, int], ceil_mode: bool
                   ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output size, high-side padding that makes every window fit)."""
    out, hi = [], []
    for i in range(2):
        if p[i] > k[i] // 2:
            raise ValueError(f"{op}: padding {p} should be at most half of kernel size {k}")
        o = _pool_out(shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode)
        if o < 1:
            raise ValueError(f"{op}: input of shape {tuple(shape)} is too small for kernel "
                             f"{k} (dilation {d}, padding {p})")
        need = (o - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (shape[2 + i] + 2 * p[i])
        out.append(o)
        hi.append(p[i] + max(need, 0))
    return (out[0], out[1]), (hi[0], hi[1])


class MaxPool2d(Function):
    """y = max over each window (padding is -inf);  dx = g routed to the arg-max element."""

    @staticmethod
    def forward(ctx: Context, x: Array, k: tuple[int, int], s: tuple[int, int],
                p: tuple[int, int], d: tuple[int, int], ceil_mode: bool) -> Array:
        xp = ctx.xp
        n, c = x.shape[:2]
        (oh, ow), hi = _pool_geometry("max_pool2d", x.shape, k, s, p, d, ceil_mode)
        xpad = _pad_input(xp, x, p, hi, value=-math.inf)
        cols = ctx.backend.im2col(xpad, k[0], k[1], s, (0, 0), d)[..., :oh, :ow]
        cols = cols.reshape(n, c, k[0] * k[1], oh, ow)
        idx = cols.argmax(axis=2)[:, :, None]  # first maximum, as PyTorch
        ctx.idx, ctx.geom = idx, (x.shape, xpad.shape, k, s, p, d)
        return xp.take_along_axis(cols, idx, axis=2)[:, :, 0]

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None, None, None, None]:
        xp = ctx.xp
        x_shape, pad_shape, k, s, p, d = ctx.geom
        n, c, oh, ow = g.shape
        dcols = xp.zeros((n, c, k[0] * k[1], oh, ow), dtype=g.dtype)
        xp.put_along_axis(dcols, ctx.idx, g[:, :, None], axis=2)
        dx = ctx.backend.col2im(dcols.reshape(n, c, k[0], k[1], oh, ow), pad_shape, s,
                                (0, 0), d)
        dx = dx[:, :, p[0]:p[0] + x_shape[2], p[1]:p[1] + x_shape[3]]  # drop the padding
        return dx, None, None, None, None, None

    @staticmethod
    def indices(ctx: Context, width: int) -> Array:
        """Flat h * W + w input index of each maximum (PyTorch's return_indices)."""
        xp = ctx.xp
        _, _, k, s, p, d = ctx.geom
        idx = ctx.idx[:, :, 0]
        oh, ow = idx.shape[-2:]
        rows = xp.arange(oh).reshape(oh, 1) * s[0] - p[0] + (idx // k[1]) * d[0]
        cols = xp.arange(ow) * s[1] - p[1] + (idx % k[1]) * d[1]
        return (rows * width + cols).astype("int64")


class AvgPool2d(Function):
    """y = sum over each window / divisor;  dx = col2im(g / divisor spread over the window)."""

    @staticmethod
    def forward(ctx: Context, x: Array, k: tuple[int, int], s: tuple[int, int],
                p: tuple[int, int], ceil_mode: bool, count_include_pad: bool,
                divisor_override: int | None) -> Array:
        xp = ctx.xp
        (oh, ow), hi = _pool_geometry("avg_pool2d", x.shape, k, s, p, (1, 1), ceil_mode)
        xpad = _pad_input(xp, x, p, hi)
        cols = ctx.backend.im2col(xpad, k[0], k[1], s, (0, 0), (1, 1))[..., :oh, :ow]
        if divisor_override:
            div = xp.asarray(float(divisor_override), dtype=x.dtype)
        else:
            # PyTorch: a window counts padding (not the ceil-mode overhang) when
            # count_include_pad, else only the real elements it covers.
            sizes = []
            for i, o in enumerate((oh, ow)):
                start = xp.arange(o) * s[i] - p[i]
                end = xp.minimum(start + k[i], x.shape[2 + i] + p[i])
                if not count_include_pad:
                    end = xp.minimum(end, x.shape[2 + i])
                    start = xp.maximum(start, 0)
                sizes.append(end - start)
            div = (sizes[0][:, None] * sizes[1][None, :]).astype(x.dtype)
        ctx.div, ctx.geom = div, (x.shape, xpad.shape, k, s, p)
        return (cols.sum(axis=(2, 3)) / div).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, ...]:
        xp = ctx.xp
        x_shape, pad_shape, k, s, p = ctx.geom
        n, c, oh, ow = g.shape
        spread = xp.broadcast_to((g / ctx.div)[:, :, None, None], (n, c, k[0], k[1], oh, ow))
        dx = ctx.backend.col2im(xp.ascontiguousarray(spread), pad_shape, s, (0, 0), (1, 1))
        return (dx[:, :, p[0]:p[0] + x_shape[2], p[1]:p[1] + x_shape[3]],
                None, None, None, None, None, None)


def _adaptive_matrix(xp: Any, size: int, out: int, dtype: Any) -> Array:
    """(out, size) averaging matrix; row i averages the input range
    [floor(i size / out), ceil((i + 1) size / out)), PyTorch's adaptive window."""
    m = xp.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class AdaptiveAvgPool2d(Function):
    """y = P_h x P_w^T with averaging matrices P;  dx = P_h^T g P_w."""

    @staticmethod
    def forward(ctx: Context, x: Array, out_size: tuple[int, int]) -> Array:
        xp = ctx.xp
        ph = _adaptive_matrix(xp, x.shape[-2], out_size[0], x.dtype)  # (OH, H)
        pw = _adaptive_matrix(xp, x.shape[-1], out_size[1], x.dtype)  # (OW, W)
        ctx.save_for_backward(ph, pw)
        return xp.matmul(xp.matmul(ph, x), pw.T)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        ph, pw = ctx.saved
        return ctx.xp.matmul(ctx.xp.matmul(ph.T, g), pw), None


# ---- functional forms (torch.nn.functional signatures) ----------------------------------


def _check_float(op: str, x: Tensor, w: Tensor | None = None, b: Tensor | None = None) -> None:
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point input, got {x.dtype}")
    for name, t in (("weight", w), ("bias", b)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} dtype {t.dtype} differs from input dtype {x.dtype}")


def _conv_padding(padding: str | IntPair, k: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"conv2d: padding must be 'same', 'valid', an int or a pair, "
                             f"got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' is not supported for strided "
                             f"convolutions (stride={stride})")
        total = [dilation[i] * (k[i] - 1) for i in range(2)]
        lo = (total[0] // 2, total[1] // 2)
        return lo, (total[0] - lo[0], total[1] - lo[1])
    p = _pair(padding, "padding", "conv2d")
    if min(p) < 0:
        raise ValueError(f"conv2d: negative padding {p} is not supported")
    return p, p


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
           padding: str | IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation of (N, C_in, H, W) (or unbatched (C_in, H, W)) with weight
    (C_out, C_in / groups, kh, kw)."""
    _check_float("conv2d", input, weight, bias)
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation,
                      groups).squeeze(0)
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d: expected input (N, C, H, W) and weight (C_out, C_in/groups, "
                         f"kh, kw), got shapes {input.shape} and {weight.shape}")
    cin, cout = input.shape[1], weight.shape[0]
    if groups < 1 or cin % groups or cout % groups or weight.shape[1] * groups != cin:
        raise ValueError(f"conv2d: input of shape {input.shape} does not match weight of "
                         f"shape {weight.shape} with groups={groups} (need C_in = "
                         f"weight.shape[1] * groups and C_out divisible by groups)")
    if bias is not None and bias.shape != (cout,):
        raise ValueError(f"conv2d: bias of shape {bias.shape} does not match {cout} output "
                         f"channels")
    s = _pair(stride, "stride", "conv2d")
    d = _pair(dilation, "dilation", "conv2d")
    if min(s) < 1 or min(d) < 1:
        raise ValueError(f"conv2d: stride {s} and dilation {d} must be positive")
    k = (weight.shape[2], weight.shape[3])
    lo, hi = _conv_padding(padding, k, s, d)
    for i in range(2):
        if input.shape[2 + i] + lo[i] + hi[i] < d[i] * (k[i] - 1) + 1:
            raise ValueError(f"conv2d: input of shape {input.shape} (padded by {lo}/{hi}) is "
                             f"smaller than the dilated kernel of weight {weight.shape}")
    return Conv2d.apply(input, weight, bias, s, lo, hi, d, int(groups))


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
           padding: str | int = 0, dilation: int = 1, groups: int = 1) -> Tensor:
    """1-D cross-correlation of (N, C_in, L) as a conv2d of height 1."""
    if weight.ndim != 3 or input.ndim not in (2, 3):
        raise ValueError(f"conv1d: expected input (N, C, L) and weight (C_out, C_in/groups, k), "
                         f"got shapes {input.shape} and {weight.shape}")
    pad2: str | tuple[int, int] = padding if isinstance(padding, str) else (0, int(padding))
    out = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, int(stride)), pad2,
                 (1, int(dilation)), groups)
    return out.squeeze(-2)


def _pool_args(op: str, input: Tensor, kernel_size: IntPair, stride: IntPair | None,
               padding: IntPair) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    if input.ndim != 4:
        raise ValueError(f"{op}: expected input of shape (N, C, H, W), got {input.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point input, got {input.dtype}")
    k = _pair(kernel_size, "kernel_size", op)
    s = k if stride is None or stride == [] or stride == () else _pair(stride, "stride", op)
    if min(k) < 1 or min(s) < 1:
        raise ValueError(f"{op}: kernel_size {k} and stride {s} must be positive")
    return k, s, _pair(padding, "padding", op)


def _unbatched(fn: Any, input: Tensor, *args: Any, **kwargs: Any) -> Any:
    out = fn(input.unsqueeze(0), *args, **kwargs)
    if isinstance(out, tuple):
        return tuple(o.squeeze(0) for o in out)
    return out.squeeze(0)


def max_pool2d(input: Tensor, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Max over kh x kw windows (stride defaults to the kernel); -inf padding."""
    if input.ndim == 3:
        return _unbatched(max_pool2d, input, kernel_size, stride, padding, dilation, ceil_mode,
                          return_indices)
    k, s, p = _pool_args("max_pool2d", input, kernel_size, stride, padding)
    d = _pair(dilation, "dilation", "max_pool2d")
    out = MaxPool2d.apply(input, k, s, p, d, bool(ceil_mode))
    if not return_indices:
        return out
    ctx = out._ctx
    if ctx is None:  # not recorded (no grad): recompute once to get the indices
        from minitl.backend import get_backend
        from minitl.function import Context as _Ctx

        ctx = _Ctx(get_backend(input.device), (False,))
        MaxPool2d.forward(ctx, input.data, k, s, p, d, bool(ceil_mode))
    return out, Tensor._wrap(MaxPool2d.indices(ctx, input.shape[3]))


def avg_pool2d(input: Tensor, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Mean over kh x kw windows; zero padding counts in the divisor when count_include_pad."""
    if input.ndim == 3:
        return _unbatched(avg_pool2d, input, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override)
    k, s, p = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    return AvgPool2d.apply(input, k, s, p, bool(ceil_mode), bool(count_include_pad),
                           divisor_override)


def adaptive_avg_pool2d(input: Tensor, output_size: int | Sequence[int | None]) -> Tensor:
    """Average-pool (N, C, H, W) or (C, H, W) to `output_size`; None keeps that input size."""
    if input.ndim not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: expected (N, C, H, W) or (C, H, W), got "
                         f"{input.shape}")
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got "
                         f"{output_size!r}")
    out = tuple(input.shape[-2 + i] if v is None else int(v) for i, v in enumerate(size))
    if min(out) < 0:
        raise ValueError(f"adaptive_avg_pool2d: invalid output_size {output_size!r}")
    return AdaptiveAvgPool2d.apply(input, out)
