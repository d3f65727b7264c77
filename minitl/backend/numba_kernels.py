"""numba kernels for the CPU: the fused light ops, compiled lazily and cached on disk.

Each public function here has a numpy reference of the same name and signature in
`reference.py` (the tests hold every kernel to it) and is installed by `backend/__init__.py`
wherever C++ does not provide that kernel. This module is imported on the first op, never at
`import minitl`; every kernel compiles on its first call (`cache=True`: later processes load
the machine code from `__pycache__` in milliseconds).

Why numba and not C++ for these: they are memory-bound loops over rows (a few flops per byte),
where numba's LLVM output matches hand-written C++ and is far shorter to read; the GEMMs,
where register blocking and packing decide the speed, are C++ (csrc/cpu/gemm.cpp).

Two details decide the speed:
- No SVML on this stack, so `math.exp` is a scalar libm call (~20 cycles). float32 kernels
  use `_exp`, a Cephes-style exp (range reduction + degree-6 polynomial + exponent bits) that
  LLVM vectorizes to 8 lanes: ~1 cycle per element, ~2 ulp, flushed to 0 below e^-87.3.
  float64 kernels keep libm (exact), so float64 results agree with the references to
  rounding.
- `fastmath` is the set below, without `nnan`/`ninf`: reductions may be reordered (that is
  what lets them vectorize), but masked -inf logits and fully masked rows stay correct.

Napkin math (one core, ~15 GB/s): each row kernel reads and writes every element once or
twice, so e.g. softmax-xent forward over (2048, 30522) float32 logits streams 250 MB: ~20 ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from numba.core import types
    from numba.extending import overload
except ImportError:  # numba is a runtime dependency; this guards broken installs
    pass

# AdamW, im2col/col2im and the SGNS update live in their own modules; the backend installs
# kernels by name from this one, so it re-exports them.
from minitl.backend.guards import check_length, check_same_shape, checked_indices
from minitl.backend.numba_adam import adamw_step  # noqa: F401
from minitl.backend.numba_common import (
    _FM,
    Array,
    _c,
    _chunks,
    _jit,
    _launch,
    _rows2d,
    numba,
    prange,
)
from minitl.backend.numba_im2col import col2im, col2im_cm, im2col, im2col_cm  # noqa: F401
from minitl.backend.numba_sgns import sgns_update  # noqa: F401


def provided_kernels() -> tuple[str, ...]:
    """Names of backend kernels (see backend.KERNELS) implemented here, when numba imports."""
    if numba is None:
        return ()
    return ("layernorm_fwd", "layernorm_bwd", "softmax_xent_fwd", "softmax_xent_bwd",
            "softmax_fwd", "softmax_bwd", "gelu_fwd", "gelu_bwd", "embedding_bwd", "adamw_step",
            "im2col", "col2im", "im2col_cm", "col2im_cm", "sgns_update", "erf")


# ---- scalar helpers (inlined into the kernels) -------------------------------------------


def _exp(t: float) -> float:
    """e^t: a vectorizable polynomial for float32, libm for float64 (see the docstring)."""
    return math.exp(t)


def _phi(t: float) -> float:
    """The standard normal cdf (1 + erf(t / sqrt 2)) / 2. float32: erfc from Abramowitz-Stegun
    7.1.26 (|error| < 1.5e-7, the formula of PyTorch's vectorized float32 erf), taken from the
    near side so the left tail does not cancel; float64: libm's erfc."""
    return 0.5 * math.erfc(-t * 0.7071067811865476)


if numba is not None:
    _f32 = np.float32

    def _exp_f32(t):  # type: ignore[no-untyped-def]
        # e^t = 2^k e^r, k = round(t / ln 2), |r| <= ln 2 / 2; ln 2 split in two for accuracy
        tc = min(max(t, _f32(-87.33654)), _f32(88.0))  # k <= 127: finite
        k = np.floor(tc * _f32(1.44269504088896341) + _f32(0.5))
        r = tc - k * _f32(0.693359375) - k * _f32(-2.12194440e-4)
        p = _f32(1.9875691500e-4)
        p = p * r + _f32(1.3981999507e-3)
        p = p * r + _f32(8.3334519073e-3)
        p = p * r + _f32(4.1665795894e-2)
        p = p * r + _f32(1.6666665459e-1)
        p = p * r + _f32(5.0000001201e-1)
        p = p * r * r + r + _f32(1.0)
        scale = np.int32((np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)
        return _f32(0.0) if t < _f32(-87.33654) else p * scale

    def _phi_f32(t):  # type: ignore[no-untyped-def]
        a = abs(t) * _f32(0.7071067811865476)
        u = _f32(1.0) / (_f32(1.0) + _f32(0.3275911) * a)
        poly = _f32(1.061405429)
        poly = poly * u + _f32(-1.453152027)
        poly = poly * u + _f32(1.421413741)
        poly = poly * u + _f32(-0.284496736)
        poly = poly * u + _f32(0.254829592)
        half_erfc = _f32(0.5) * poly * u * _exp(-a * a)  # (1 - erf(a)) / 2
        return _f32(1.0) - half_erfc if t >= _f32(0.0) else half_erfc

    def _by_width(f32_impl: Any, f64_impl: Any) -> Any:
        def choose(t):  # type: ignore[no-untyped-def]
            if isinstance(t, types.Float) and t.bitwidth == 32:
                return f32_impl
            return f64_impl

        return choose

    overload(_exp)(_by_width(_exp_f32, lambda t: math.exp(t)))
    overload(_phi)(_by_width(_phi_f32, lambda t: 0.5 * math.erfc(-t * 0.7071067811865476)))


def _row_max_body(x, i):  # type: ignore[no-untyped-def]
    # eight independent running maxima: a max reduction is not reassociable without nnan
    # (which would break -inf masks), so one accumulator would wait on every compare
    n = x.shape[1]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[i, 0]
    j = 0
    while j + 8 <= n:
        m0, m1 = max(m0, x[i, j]), max(m1, x[i, j + 1])
        m2, m3 = max(m2, x[i, j + 2]), max(m3, x[i, j + 3])
        m4, m5 = max(m4, x[i, j + 4]), max(m5, x[i, j + 5])
        m6, m7 = max(m6, x[i, j + 6]), max(m7, x[i, j + 7])
        j += 8
    for q in range(j, n):
        m0 = max(m0, x[i, q])
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


if numba is not None:
    _row_max = numba.njit(inline="always")(_row_max_body)


# ---- LayerNorm ---------------------------------------------------------------------------


@_jit(parallel=True, fastmath=_FM)
def _layernorm_fwd(x, w, b, has_w, has_b, eps, y, mean, rstd):  # type: ignore[no-untyped-def]
    m, d = x.shape
    for i in prange(m):
        s = 0.0
        for j in range(d):
            s += x[i, j]
        mu = s / d
        v = 0.0
        for j in range(d):
            c = x[i, j] - mu
            v += c * c
        r = 1.0 / math.sqrt(v / d + eps)
        mean[i] = mu
        rstd[i] = r
        for j in range(d):
            h = (x[i, j] - mu) * r
            if has_w:
                h = h * w[j]
            if has_b:
                h = h + b[j]
            y[i, j] = h


def layernorm_fwd(x: Array, weight: Array | None, bias: Array | None, eps: float
                  ) -> tuple[Array, Array, Array]:
    """x (M, D) -> (y (M, D), mean (M, 1), rstd (M, 1)): one pass per row for the mean, one
    for the centred variance, one writing y (statistics accumulate in float64)."""
    if x.size == 0:
        from minitl.backend import reference

        return reference.layernorm_fwd(x, weight, bias, eps)
    x = _c(x)
    m, d = x.shape
    y = np.empty_like(x)
    mean, rstd = np.empty((m, 1), x.dtype), np.empty((m, 1), x.dtype)
    _launch(_layernorm_fwd, x.size, x, _rows2d(weight, d, x.dtype), _rows2d(bias, d, x.dtype),
            weight is not None, bias is not None, float(eps), y, mean[:, 0], rstd[:, 0])
    return y, mean, rstd


@_jit(parallel=True, fastmath=_FM)
def _layernorm_bwd(g, x, mean, rstd, w, has_w, need_dx, nchunk, dx, dw_part, db_part
                   ):  # type: ignore[no-untyped-def]
    m, d = x.shape
    per = (m + nchunk - 1) // nchunk
    for ch in prange(nchunk):
        for i in range(ch * per, min(m, (ch + 1) * per)):
            mu, r = mean[i], rstd[i]
            s1 = 0.0  # sum dxhat
            s2 = 0.0  # sum dxhat * xhat
            for j in range(d):
                xh = (x[i, j] - mu) * r
                gj = g[i, j]
                dw_part[ch, j] += gj * xh
                db_part[ch, j] += gj
                dh = gj * w[j] if has_w else gj
                s1 += dh
                s2 += dh * xh
            if need_dx:
                a1, a2 = s1 / d, s2 / d
                for j in range(d):
                    xh = (x[i, j] - mu) * r
                    dh = g[i, j] * w[j] if has_w else g[i, j]
                    dx[i, j] = r * (dh - a1 - xh * a2)


def layernorm_bwd(g: Array, x: Array, mean: Array, rstd: Array, weight: Array | None,
                  needs: tuple[bool, ...]) -> tuple[Array | None, ...]:
    """(dx, dweight, dbias) of layernorm_fwd in one sweep over the rows; dweight and dbias are
    summed per chunk of rows in parallel, then over the chunks."""
    check_same_shape("layernorm_bwd", g=g, x=x)
    if x.size == 0:
        from minitl.backend import reference

        return reference.layernorm_bwd(g, x, mean, rstd, weight, needs)
    g, x = _c(g), _c(x)
    m, d = x.shape
    nchunk = _chunks(m)
    dx = np.empty_like(x) if needs[0] else np.empty((0, 0), x.dtype)
    dw_part = np.zeros((nchunk, d), np.float64)
    db_part = np.zeros((nchunk, d), np.float64)
    _launch(_layernorm_bwd, x.size, g, x, _c(mean).reshape(m), _c(rstd).reshape(m),
            _rows2d(weight, d, x.dtype), weight is not None, bool(needs[0]), nchunk,
            dx, dw_part, db_part)
    return (dx if needs[0] else None,
            dw_part.sum(axis=0).astype(x.dtype) if needs[1] else None,
            db_part.sum(axis=0).astype(x.dtype) if needs[2] else None)


# ---- softmax + cross-entropy -------------------------------------------------------------


@_jit(parallel=True, fastmath=_FM)
def _xent_fwd(x, target, w, has_w, ignore_index, eps, wsum, loss, lse
              ):  # type: ignore[no-untyped-def]
    m, c = x.shape
    for i in prange(m):
        mx = _row_max(x, i)
        s = 0.0
        for j in range(c):
            s += _exp(x[i, j] - mx)
        ls = math.log(s) + mx
        lse[i] = ls
        t = target[i]
        if t == ignore_index:
            loss[i] = 0.0
            continue
        wt = w[t] if has_w else 1.0
        li = (1.0 - eps) * wt * (ls - x[i, t])
        if eps != 0.0:
            wx = 0.0
            for j in range(c):
                wx += x[i, j] * w[j] if has_w else x[i, j]
            li += (eps / c) * (ls * wsum - wx)
        loss[i] = li


def softmax_xent_fwd(x: Array, target: Array, weight: Array | None, ignore_index: int,
                     label_smoothing: float) -> tuple[Array, Array]:
    """(loss (M,), lse (M,)) in one parallel sweep over the rows of x (M, C): max, then the
    sum of exponentials (float64 accumulator), then the target logit. No (M, C) output."""
    x = _c(x)
    m, c = x.shape
    # the kernel reads x[i, target[i]] and w[target[i]]: every target is checked first
    check_length("softmax_xent_fwd", "target", target, m)
    target = checked_indices("softmax_xent_fwd", target, c, "classes", ignore_index)
    if x.size == 0:
        from minitl.backend import reference

        return reference.softmax_xent_fwd(x, target, weight, ignore_index, label_smoothing)
    loss, lse = np.empty(m, x.dtype), np.empty(m, x.dtype)
    wsum = float(c) if weight is None else float(weight.sum())
    _launch(_xent_fwd, x.size, x, target,
            _rows2d(weight, c, x.dtype), weight is not None, int(ignore_index),
            float(label_smoothing), wsum, loss, lse)
    return loss, lse


@_jit(parallel=True, fastmath=_FM)
def _xent_bwd(x, lse, target, w, has_w, ignore_index, eps, wsum, grad, dx
              ):  # type: ignore[no-untyped-def]
    m, c = x.shape
    for i in prange(m):
        t = target[i]
        if t == ignore_index or grad[i] == 0.0:
            for j in range(c):
                dx[i, j] = 0.0
            continue
        gi = grad[i]
        wt = w[t] if has_w else 1.0
        scale = x.dtype.type(gi * ((1.0 - eps) * wt + (eps / c) * wsum))
        ls = lse[i]
        for j in range(c):
            dx[i, j] = _exp(x[i, j] - ls) * scale
        if eps != 0.0:
            se = gi * eps / c
            for j in range(c):
                dx[i, j] -= se * w[j] if has_w else se
        dx[i, t] -= gi * (1.0 - eps) * wt


def softmax_xent_bwd(x: Array, lse: Array, target: Array, weight: Array | None,
                     ignore_index: int, label_smoothing: float, grad: Array) -> Array:
    """dx (M, C) = grad_i (p_ic sum_c q_ic - q_ic), one pass over x writing dx."""
    x = _c(x)
    m, c = x.shape
    # the targets were checked in forward, but the saved array may have changed since
    check_length("softmax_xent_bwd", "target", target, m)
    check_length("softmax_xent_bwd", "lse", lse, m)
    target = checked_indices("softmax_xent_bwd", target, c, "classes", ignore_index,
                             backward=True)
    dx = np.empty_like(x)
    if x.size == 0:
        return dx
    wsum = float(c) if weight is None else float(weight.sum())
    grad = np.broadcast_to(np.asarray(grad, dtype=x.dtype), (m,))
    _launch(_xent_bwd, x.size, x, _c(lse).reshape(m), target,
            _rows2d(weight, c, x.dtype), weight is not None, int(ignore_index),
            float(label_smoothing), wsum, _c(grad), dx)
    return dx


# ---- softmax along the last axis ---------------------------------------------------------


@_jit(parallel=True, fastmath=_FM)
def _softmax_fwd(x, safe, y):  # type: ignore[no-untyped-def]
    m, n = x.shape
    for i in prange(m):
        mx = _row_max(x, i)
        if safe and mx == -np.inf:  # every key masked: a zero row, not NaN
            for j in range(n):
                y[i, j] = 0.0
            continue
        s = 0.0
        for j in range(n):
            e = _exp(x[i, j] - mx)
            y[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(n):
            y[i, j] *= inv


def softmax_fwd(x: Array, safe: bool) -> Array:
    """Softmax over the last axis of x (M, S), rows in parallel."""
    x = _c(x)
    y = np.empty_like(x)
    if x.size:
        _launch(_softmax_fwd, x.size, x.reshape(-1, x.shape[-1]), bool(safe),
                y.reshape(-1, x.shape[-1]))
    return y


@_jit(parallel=True, fastmath=_FM)
def _softmax_bwd(g, y, dx):  # type: ignore[no-untyped-def]
    m, n = y.shape
    for i in prange(m):
        s = 0.0
        for j in range(n):
            s += g[i, j] * y[i, j]
        for j in range(n):
            dx[i, j] = y[i, j] * (g[i, j] - s)


def softmax_bwd(g: Array, y: Array) -> Array:
    """dx = y (g - sum(g y)) over the last axis, rows in parallel."""
    check_same_shape("softmax_bwd", g=g, y=y)
    g, y = _c(g), _c(y)
    dx = np.empty_like(y)
    if y.size:
        n = y.shape[-1]
        _launch(_softmax_bwd, y.size, g.reshape(-1, n), y.reshape(-1, n), dx.reshape(-1, n))
    return dx


# ---- GELU --------------------------------------------------------------------------------

_K_BETA = 0.3989422804014327  # 1 / sqrt(2 pi)
_K_TANH = 0.7978845608028654  # sqrt(2 / pi)
_K_CUBE = 0.044715


def _gelu_loops() -> tuple[Any, Any]:
    def fwd_body(x, exact, y, lo, hi):  # type: ignore[no-untyped-def]
        one = x.dtype.type(1.0)
        for i in range(lo, hi):
            v = x[i]
            if exact:
                y[i] = v * _phi(v)
            else:  # (1 + tanh u) / 2 = sigmoid(2u), from e^-2|u| <= 1: no overflow, no
                # cancellation where 1 + tanh u would cancel
                u = x.dtype.type(_K_TANH) * (v + x.dtype.type(_K_CUBE) * v * v * v)
                a = _exp(x.dtype.type(-2.0) * abs(u))
                y[i] = v / (one + a) if u >= 0 else v * a / (one + a)

    def bwd_body(g, x, exact, dx, lo, hi):  # type: ignore[no-untyped-def]
        one, half = x.dtype.type(1.0), x.dtype.type(0.5)
        for i in range(lo, hi):
            v = x[i]
            if exact:
                cdf = _phi(v)
                pdf = x.dtype.type(_K_BETA) * _exp(-half * v * v)
                dx[i] = g[i] * (cdf + v * pdf)
            else:  # with s = sigmoid(2u): (1 + t) / 2 = s and (1 - t^2) / 2 = 2 s (1 - s)
                u = x.dtype.type(_K_TANH) * (v + x.dtype.type(_K_CUBE) * v * v * v)
                a = _exp(x.dtype.type(-2.0) * abs(u))
                r = one / (one + a)
                s = r if u >= 0 else a * r
                du = x.dtype.type(_K_TANH) * (one + x.dtype.type(3.0 * _K_CUBE) * v * v)
                dx[i] = g[i] * (s + x.dtype.type(2.0) * v * (a * r * r) * du)

    return fwd_body, bwd_body


if numba is not None:
    _gelu_fwd_body, _gelu_bwd_body = (numba.njit(inline="always")(f) for f in _gelu_loops())


@_jit(parallel=True, fastmath=_FM)
def _gelu_fwd(x, exact, y, block):  # type: ignore[no-untyped-def]
    n = x.size
    for b in prange((n + block - 1) // block):
        _gelu_fwd_body(x, exact, y, b * block, min(n, (b + 1) * block))


@_jit(parallel=True, fastmath=_FM)
def _gelu_bwd(g, x, exact, dx, block):  # type: ignore[no-untyped-def]
    n = x.size
    for b in prange((n + block - 1) // block):
        _gelu_bwd_body(g, x, exact, dx, b * block, min(n, (b + 1) * block))


_BLOCK = 1 << 14  # elements per parallel task of the elementwise kernels


def gelu_fwd(x: Array, approximate: str) -> Array:
    """GELU of x (any shape) in one vectorized pass; 'none' uses erf, 'tanh' the tanh form."""
    xf = _c(x).reshape(-1)
    y = np.empty_like(xf)
    _launch(_gelu_fwd, xf.size, xf, approximate != "tanh", y, _BLOCK)
    return y.reshape(x.shape)


def gelu_bwd(g: Array, x: Array, approximate: str) -> Array:
    """dx of gelu_fwd, recomputed from x in one pass."""
    check_same_shape("gelu_bwd", g=g, x=x)
    xf = _c(x).reshape(-1)
    dx = np.empty_like(xf)
    _launch(_gelu_bwd, xf.size, _c(g).reshape(-1).astype(xf.dtype, copy=False), xf,
            approximate != "tanh", dx, _BLOCK)
    return dx.reshape(x.shape)


# ---- embedding backward ------------------------------------------------------------------


@_jit(parallel=True)
def _embedding_bwd(g, ids, nblock, dw):  # type: ignore[no-untyped-def]
    m, d = g.shape
    per = (d + nblock - 1) // nblock
    for b in prange(nblock):  # column blocks: no two threads touch the same element
        j0, j1 = b * per, min(d, (b + 1) * per)
        for i in range(m):
            r = ids[i]
            for j in range(j0, j1):
                dw[r, j] += g[i, j]


def embedding_bwd(g: Array, ids: Array, num_embeddings: int, padding_idx: int | None,
                  scale_grad_by_freq: bool) -> Array:
    """dW (N, D): rows of g (M, D) added at ids (M,) in id order, columns split over threads."""
    g = _c(g)
    m, d = g.shape
    # the kernel adds into dw[ids[i]] unchecked; the ids saved by forward may have been
    # changed in place since (a from_numpy buffer), so they are checked here, every call
    check_length("embedding_bwd", "ids", ids, m)
    ids = checked_indices("embedding_bwd", ids, num_embeddings, "embeddings", backward=True)
    dw = np.zeros((num_embeddings, d), dtype=g.dtype)
    if m:
        nblock = max(1, min(numba.get_num_threads(), d // 16)) if numba is not None else 1
        _launch(_embedding_bwd, g.size, g, ids, nblock, dw)
    if scale_grad_by_freq:
        counts = np.bincount(ids, minlength=num_embeddings)
        dw /= np.maximum(counts, 1)[:, None].astype(g.dtype)
    if padding_idx is not None:
        dw[padding_idx] = 0
    return dw


# ---- erf ufunc (the backend's erf kernel, behind the Erf op) -------------------------------

_erf_impl: Callable[..., Any] | None = None


def _build_erf() -> Callable[..., Any]:
    if numba is None:
        vec = np.vectorize(math.erf, otypes=[np.float64])
        return lambda x: vec(x)

    # float32 first: a ufunc takes the first loop its input casts to safely, so float32
    # listed second would compute (and return) float64
    @numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
    def erf(x):  # type: ignore[no-untyped-def]
        return math.erf(x)

    return erf


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf, exact to the libm (float32 in, float32 out)."""
    global _erf_impl
    if _erf_impl is None:
        _erf_impl = _build_erf()
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return _erf_impl(x)
