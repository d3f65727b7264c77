"""numpy reference kernels: the definition every native kernel is tested against.

They are written for clarity and work unchanged on CuPy arrays (they only use
array methods and `array_module`). Shapes follow the kernels in csrc/ and the numba
kernels in `numba_kernels.py`, which carry the same names and signatures.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitl.backend.guards import check_indices, check_length, require_float
from minitl.types import Array


def _xp(a: Array) -> Any:
    from minitl.backend import array_module

    return array_module(a)


def gemm(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False) -> Array:
    """C = op(A) @ op(B) for 2-D arrays; op is the identity or a transpose."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def gemm_batched(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False) -> Array:
    """C[i] = op(A[i]) @ op(B[i]) for 3-D arrays with one batch size."""
    xp = _xp(a)
    return xp.matmul(xp.swapaxes(a, 1, 2) if trans_a else a, xp.swapaxes(b, 1, 2) if trans_b else b)


# ---- LoRA linear -------------------------------------------------------------------
# y = x W^T + b + s (x A^T) B^T with x (N, Din), W (Dout, Din), A (r, Din), B (Dout, r).


def lora_linear_fwd(x: Array, w: Array, b: Array | None, a: Array, bm: Array,
                    scale: float) -> tuple[Array, Array]:
    """Returns (y, xa) where xa = x A^T (N, r) is kept for the backward pass."""
    xa = x @ a.T  # (N, r)
    y = x @ w.T + (scale * xa) @ bm.T  # (N, Dout)
    if b is not None:
        y += b
    return y, xa


def lora_linear_bwd(g: Array, x: Array, w: Array, a: Array, bm: Array, xa: Array,
                    scale: float, needs: tuple[bool, bool, bool, bool, bool]
                    ) -> tuple[Array | None, ...]:
    """Gradients (dx, dW, db, dA, dB); `needs` says which of them to compute.

    dB = s g^T (x A^T),  dA = s (g B)^T x,  dx = g W + s (g B) A,  dW = g^T x,  db = sum g.
    """
    need_x, need_w, need_b, need_a, need_bm = needs
    gb = g @ bm  # (N, r); cheap next to the (N, D) products
    dx = g @ w + scale * (gb @ a) if need_x else None
    dw = g.T @ x if need_w else None
    db = g.sum(axis=0) if need_b else None
    da = scale * (gb.T @ x) if need_a else None
    dbm = scale * (g.T @ xa) if need_bm else None
    return dx, dw, db, da, dbm


# ---- im2col / col2im ---------------------------------------------------------------


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a sliding window; ValueError for a geometry no kernel can walk (a
    zero stride divides by zero, a negative one would walk backwards past the clamps)."""
    if min(k, stride, dilation) < 1 or pad < 0:
        raise ValueError(f"im2col: kernel size {k}, stride {stride} and dilation {dilation} "
                         f"must be >= 1 and padding {pad} >= 0")
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def im2col(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int]) -> Array:
    """(N, C, H, W) -> (N, C, kh, kw, OH, OW), a contiguous copy of every receptive field."""
    xp = _xp(x)
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = conv_out_size(h, kh, sh, ph, dh)
    ow = conv_out_size(w, kw, sw, pw, dw)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols[:, :, i, j] = x[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw]
    return cols


def col2im(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int]) -> Array:
    """Adjoint of im2col: scatter-add (N, C, kh, kw, OH, OW) back onto (N, C, H, W)."""
    xp = _xp(cols)
    n, c, h, w = x_shape
    _, _, kh, kw, oh, ow = cols.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            rows, cs = slice(r0, r0 + sh * (oh - 1) + 1, sh), slice(c0, c0 + sw * (ow - 1) + 1, sw)
            out[:, :, rows, cs] += cols[:, :, i, j]
    return out[:, :, ph:ph + h, pw:pw + w] if (ph or pw) else out


def im2col_cm(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
              dilation: tuple[int, int]) -> Array:
    """im2col in channel-major order, (N, C, H, W) -> (C, kh, kw, N, OH, OW): reshaped to
    (C kh kw, N OH OW) it is the right operand of ONE 2-D GEMM for the whole batch."""
    xp = _xp(x)
    return xp.ascontiguousarray(im2col(x, kh, kw, stride, padding, dilation)
                                .transpose(1, 2, 3, 0, 4, 5))


def col2im_cm(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> Array:
    """Adjoint of im2col_cm: scatter-add (C, kh, kw, N, OH, OW) back onto (N, C, H, W)."""
    return col2im(cols.transpose(3, 0, 1, 2, 4, 5), x_shape, stride, padding, dilation)


# ---- LayerNorm over rows ------------------------------------------------------------
# x (M, D); mean and rstd (M, 1); xhat = (x - mean) rstd; dxhat = g w.


def layernorm_fwd(x: Array, weight: Array | None, bias: Array | None, eps: float
                  ) -> tuple[Array, Array, Array]:
    """x (M, D) -> (y (M, D), mean (M, 1), rstd (M, 1)); weight/bias (D,) or None.
    The variance is the biased one, from the centred values (no E[x^2] - E[x]^2)."""
    require_float("layernorm_fwd", x, weight, bias)
    mean = x.mean(axis=-1, keepdims=True)
    c = x - mean
    rstd = ((c * c).mean(axis=-1, keepdims=True) + eps) ** -0.5
    y = c * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype, copy=False), mean, rstd


def layernorm_bwd(g: Array, x: Array, mean: Array, rstd: Array, weight: Array | None,
                  needs: tuple[bool, ...]) -> tuple[Array | None, ...]:
    """Gradients (dx (M, D), dweight (D,), dbias (D,)); `needs` says which to compute.

    dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dw = sum g xhat,  db = sum g.
    """
    require_float("layernorm_bwd", g, x, weight)
    xhat = (x - mean) * rstd
    dx = dw = db = None
    if needs[0]:
        dxhat = g if weight is None else g * weight
        dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                     - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
        dx = dx.astype(x.dtype, copy=False)
    if needs[1]:
        dw = (g * xhat).sum(axis=0).astype(x.dtype, copy=False)
    if needs[2]:
        db = g.sum(axis=0)
    return dx, dw, db


# ---- softmax + cross-entropy over rows ----------------------------------------------
# x (M, C) logits, target (M,) class ids (ignore_index marks rows without a loss),
# weight (C,) or None, eps = label smoothing. With lse_i = log sum_c e^x_ic and
# q_ic = (1 - eps) w_y [c = y] + (eps / C) w_c (zero on ignored rows):
#     loss_i = sum_c q_ic (lse_i - x_ic),   d loss_i / d x_ic = p_ic sum_c q_ic - q_ic.


def softmax_xent_fwd(x: Array, target: Array, weight: Array | None, ignore_index: int,
                     label_smoothing: float) -> tuple[Array, Array]:
    """(loss (M,), lse (M,)); loss is 0 on ignored rows. A target outside [0, C) that is not
    ignore_index is an IndexError (a negative one would silently pick a class from the end)."""
    xp = _xp(x)
    require_float("softmax_xent_fwd", x, weight)
    m, n_classes = x.shape
    check_length("softmax_xent_fwd", "target", target, m)
    check_indices("softmax_xent_fwd", target, n_classes, "classes", ignore_index)
    eps = label_smoothing
    mx = x.max(axis=1, keepdims=True)
    lse = xp.log(xp.exp(x - mx).sum(axis=1, keepdims=True)) + mx  # (M, 1)
    valid = target != ignore_index
    t = xp.where(valid, target, 0)
    w_t = valid.astype(x.dtype) if weight is None else weight[t] * valid
    # an ignored row is 0 even where its logits are -inf (so no inf * 0 below)
    loss = (1 - eps) * w_t * xp.where(valid, lse[:, 0] - x[xp.arange(m), t], 0)
    if eps:
        wx = x.sum(axis=1) if weight is None else x @ weight
        wsum = n_classes if weight is None else weight.sum()
        loss = loss + (eps / n_classes) * xp.where(valid, lse[:, 0] * wsum - wx, 0)
    return loss.astype(x.dtype, copy=False), lse[:, 0].astype(x.dtype, copy=False)


def softmax_xent_bwd(x: Array, lse: Array, target: Array, weight: Array | None,
                     ignore_index: int, label_smoothing: float, grad: Array) -> Array:
    """dx (M, C) = grad_i (p_ic sum_c q_ic - q_ic) with p = e^(x - lse); grad (M,) is the
    upstream gradient of each row's loss."""
    xp = _xp(x)
    require_float("softmax_xent_bwd", x, lse, weight)
    m, n_classes = x.shape
    check_length("softmax_xent_bwd", "target", target, m)
    check_indices("softmax_xent_bwd", target, n_classes, "classes", ignore_index, backward=True)
    eps = label_smoothing
    valid = target != ignore_index
    t = xp.where(valid, target, 0)
    w_t = valid.astype(x.dtype) if weight is None else weight[t] * valid
    wsum = n_classes if weight is None else weight.sum()
    gv = xp.where(valid, grad, 0)  # an ignored row gets 0 even when grad is inf or NaN
    q_sum = (1 - eps) * w_t + (eps / n_classes) * wsum  # sum_c q_ic on valid rows
    dx = xp.exp(x - lse[:, None]) * (gv * q_sum)[:, None]
    dx[xp.arange(m), t] -= gv * (1 - eps) * w_t
    if eps:
        wc = 1.0 if weight is None else weight[None, :]
        dx -= (gv * (eps / n_classes))[:, None] * wc
    return dx.astype(x.dtype, copy=False)


# ---- softmax along the last axis ----------------------------------------------------


def masked_scores(scores: Array, mask: Array | None) -> Array:
    """Attention scores with a mask applied: a bool mask keeps the True places (the rest
    become -inf), a float mask is added; `scores` itself may be changed."""
    if mask is None:
        return scores
    if mask.dtype == bool:
        return _xp(scores).where(mask, scores, -math.inf).astype(scores.dtype, copy=False)
    return scores + mask


def softmax_fwd(x: Array, safe: bool) -> Array:
    """y = e^(x - max) / sum e^(x - max) over the last axis of x (M, S). With `safe`, a row
    that is entirely -inf gives zeros instead of NaN (fully masked attention rows)."""
    require_float("softmax_fwd", x)
    xp = _xp(x)
    mx = x.max(axis=-1, keepdims=True) if x.size else x.sum(axis=-1, keepdims=True)
    if safe:
        mx = xp.where(xp.isfinite(mx), mx, 0)
    e = xp.exp(x - mx)
    s = e.sum(axis=-1, keepdims=True)
    if safe:
        s = xp.where(s == 0, 1, s)
    return (e / s).astype(x.dtype, copy=False)


def softmax_bwd(g: Array, y: Array) -> Array:
    """dx = y (g - sum(g y)) over the last axis."""
    require_float("softmax_bwd", g, y)
    gy = g * y
    return gy - y * gy.sum(axis=-1, keepdims=True)


# ---- GELU ---------------------------------------------------------------------------
# exact: y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;  dx = g (Phi(x) + x phi(x)).
# tanh:  Phi(x) ~ (1 + tanh u) / 2, u = sqrt(2 / pi) (x + 0.044715 x^3).

_SQRT_2_OVER_PI = 0.7978845608028654
_INV_SQRT_2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_GELU_C = 0.044715


_libm_erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: Array) -> Array:
    """libm's erf elementwise, in the input's float dtype (integers give float64). numpy has
    no erf: a Python-level loop keeps the reference free of numba (numba_kernels.erf is the
    fast one)."""
    xp = _xp(x)
    if x.dtype.kind != "f":
        x = x.astype(xp.float64)
    if xp is np:
        return _libm_erf(x).astype(x.dtype, copy=False)
    import cupyx.scipy.special as sp  # pragma: no cover - GPU only

    return sp.erf(x)


def gelu_fwd(x: Array, approximate: str) -> Array:
    """GELU of x (any shape); approximate is 'none' (erf) or 'tanh'."""
    require_float("gelu_fwd", x)
    xp = _xp(x)
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        return (0.5 * x * (1.0 + t)).astype(x.dtype, copy=False)
    return (x * (0.5 * (1.0 + erf(x * _INV_SQRT_2)))).astype(x.dtype, copy=False)


def gelu_bwd(g: Array, x: Array, approximate: str) -> Array:
    """dx of gelu_fwd, recomputed from x (nothing but x is kept between the passes)."""
    require_float("gelu_bwd", g, x)
    xp = _xp(x)
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
        dx = g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
    else:
        cdf = 0.5 * (1.0 + erf(x * _INV_SQRT_2))
        dx = g * (cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x)))
    return dx.astype(x.dtype, copy=False)


# ---- quantized linear: ggml blocks (minitl/io/gguf_quants.py describes the layouts) ---------
# A weight W (out, in) is kept as its stored bytes q (out, in / 32 * bytes per block) uint8;
# qtype is the ggml type id. The float types are one value per "block".

QUANT_BLOCKS = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34)}


def _f16_at(blocks: Array, at: int) -> Array:
    """The float16 at byte `at` of each block row, as float32 (n, 1)."""
    return blocks[:, at:at + 2].copy().view("<f2").astype(np.float32)


def _nibbles(xp: Any, qs: Array) -> Array:
    """(n, 16) bytes -> (n, 32) codes: the low nibbles are values 0-15, the high ones 16-31."""
    return xp.concatenate([qs & 0x0F, qs >> 4], axis=1)


def dequantize_blocks(q: Array, qtype: int) -> Array:
    """(rows, row_bytes) uint8 -> (rows, in) float32, as ggml's reference dequantizers compute
    it: Q8_0 d q;  Q4_0 d (q - 8);  Q4_1 d q + m (two roundings, no fused multiply-add)."""
    xp = _xp(q)
    size, nbytes = QUANT_BLOCKS[int(qtype)]
    rows, n = q.shape[0], q.shape[1] // nbytes * size
    if qtype == 0:
        return q.copy().view("<f4").astype(np.float32).reshape(rows, n)
    if qtype == 1:
        return q.copy().view("<f2").astype(np.float32).reshape(rows, n)
    if qtype == 30:  # bfloat16: the high half of a float32
        return (q.copy().view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(rows, n)
    blocks = q.reshape(-1, nbytes)
    if qtype == 8:
        out = blocks[:, 2:].copy().view(np.int8).astype(np.float32) * _f16_at(blocks, 0)
    elif qtype == 2:
        codes = _nibbles(xp, blocks[:, 2:]).astype(np.int8) - np.int8(8)
        out = _f16_at(blocks, 0) * codes.astype(np.float32)
    else:
        out = _f16_at(blocks, 0) * _nibbles(xp, blocks[:, 4:]).astype(np.float32) \
            + _f16_at(blocks, 2)
    return out.reshape(rows, n)


def quant_linear_fwd(x: Array, q: Array, qtype: int, bias: Array | None) -> Array:
    """y (N, out) = x (N, in) W^T + bias with W the dequantized q."""
    require_float("quant_linear_fwd", x, bias)
    y = x @ dequantize_blocks(q, qtype).T
    if bias is not None:
        y += bias
    return y


def quant_linear_bwd(g: Array, q: Array, qtype: int) -> Array:
    """dx (N, in) = g (N, out) W: the input gradient (the quantized weight is frozen)."""
    require_float("quant_linear_bwd", g)
    return g @ dequantize_blocks(q, qtype)


def quant_lora_linear_fwd(x: Array, q: Array, qtype: int, b: Array | None, a: Array, bm: Array,
                          scale: float) -> tuple[Array, Array]:
    """(y, xa): y = x W^T + b + s (x A^T) B^T over the dequantized q (QLoRA), xa = x A^T."""
    require_float("quant_lora_linear_fwd", x, b, a, bm)
    xa = x @ a.T  # (N, r)
    y = x @ dequantize_blocks(q, qtype).T + (scale * xa) @ bm.T
    if b is not None:
        y += b
    return y, xa


def quant_lora_linear_bwd(g: Array, x: Array, q: Array, qtype: int, a: Array, bm: Array,
                          xa: Array, scale: float, needs: tuple[bool, bool, bool, bool]
                          ) -> tuple[Array | None, ...]:
    """(dx, db, dA, dB) of quant_lora_linear_fwd: dx = g W + s (g B) A, db = sum g,
    dA = s (g B)^T x, dB = s g^T xa; W is frozen (no dW)."""
    require_float("quant_lora_linear_bwd", g, x, a, bm, xa)
    nx, nb, na, nbm = needs
    gb = g @ bm if (nx or na) else None  # (N, r)
    dx = g @ dequantize_blocks(q, qtype) + scale * (gb @ a) if nx else None
    db = g.sum(axis=0) if nb else None
    da = scale * (gb.T @ x) if na and gb is not None else None
    dbm = scale * (g.T @ xa) if nbm else None
    return dx, db, da, dbm


def dequantize_rows(q: Array, qtype: int, ids: Array) -> Array:
    """(len(ids), in) float32: rows `ids` of the block array q, dequantized (a lookup)."""
    check_indices("dequantize_rows", ids, q.shape[0], "rows")
    return dequantize_blocks(q[ids], qtype)


# ---- embedding backward -------------------------------------------------------------


def embedding_bwd(g: Array, ids: Array, num_embeddings: int, padding_idx: int | None,
                  scale_grad_by_freq: bool) -> Array:
    """dW (N, D) of a lookup W[ids]: g (M, D) rows scatter-added at ids (M,), repeats
    accumulating; divided by each id's count with scale_grad_by_freq; the padding row is 0.
    Ids outside [0, N) are an IndexError (negative ones would wrap to another row)."""
    xp = _xp(g)
    require_float("embedding_bwd", g)
    check_indices("embedding_bwd", ids, num_embeddings, "embeddings", backward=True)
    dw = xp.zeros((num_embeddings, g.shape[1]), dtype=g.dtype)
    if xp is np:
        np.add.at(dw, ids, g)
    else:  # pragma: no cover - GPU only
        import cupyx

        cupyx.scatter_add(dw, ids, g)
    if scale_grad_by_freq:
        counts = xp.bincount(ids, minlength=num_embeddings)
        dw /= xp.maximum(counts, 1)[:, None].astype(g.dtype)
    if padding_idx is not None:
        dw[padding_idx] = 0
    return dw


# ---- Adam / AdamW update ------------------------------------------------------------


def adamw_step(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
               max_exp_avg_sq: Array | None, step: int, lr: float, beta1: float, beta2: float,
               eps: float, weight_decay: float, decoupled: bool, maximize: bool) -> None:
    """One Adam (decoupled=False: L2 folded into g) or AdamW step, updating param, exp_avg,
    exp_avg_sq (and max_exp_avg_sq for AMSGrad) in place. `step` counts this step (>= 1).
    The operations and their order are PyTorch's single-tensor path, so float64 agrees:

        p *= 1 - lr wd (AdamW)  |  g = g + wd p (Adam)
        m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g g;  vmax = max(vmax, v)
        p += (m * -(lr / (1 - beta1^t))) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """
    require_float("adamw_step", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    xp = _xp(param)
    if maximize:
        grad = -grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param  # out of place: the caller's grad is untouched
    # lerp as PyTorch rounds it: the formula switches at weight 0.5, exact at both ends
    w = 1 - beta1
    diff = grad - exp_avg
    if abs(w) < 0.5:
        diff *= w
        exp_avg += diff
    else:
        diff *= 1 - w
        xp.subtract(grad, diff, out=exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    if max_exp_avg_sq is not None:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = xp.sqrt(max_exp_avg_sq)
    else:
        denom = xp.sqrt(exp_avg_sq)
    denom /= bias_correction2_sqrt
    denom += eps
    update = exp_avg * -step_size
    update /= denom
    param += update


# ---- skip-gram with negative sampling (word2vec, Mikolov et al. arXiv:1310.4546) -----------
# One (center, context) pair with K negatives: v = W_in[center], u_pos = W_out[context],
# u_neg = W_out[negatives]. The loss is the pair's negative log-likelihood under SGNS.


def _log1p_exp(x: float) -> float:
    """ln(1 + e^x) without overflow: softplus, so -log sigmoid(s) = softplus(-s)."""
    return x + float(np.log1p(np.exp(-x))) if x > 0 else float(np.log1p(np.exp(x)))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + float(np.exp(-x)))
    e = float(np.exp(x))
    return e / (1.0 + e)


def sgns_loss_grad(v: Array, u_pos: Array, u_neg: Array) -> tuple[float, Array, Array, Array]:
    """Loss of one SGNS pair and its gradient w.r.t. each row it touches.

        L        = -log s(u_pos.v) - sum_j log s(-u_neg[j].v)          s = sigmoid
        dL/dv    = (s(u_pos.v) - 1) u_pos + sum_j s(u_neg[j].v) u_neg[j]
        dL/du_pos = (s(u_pos.v) - 1) v,   dL/du_neg[j] = s(u_neg[j].v) v

    v, u_pos: (D,); u_neg: (K, D), K >= 0. Returns (L, g_v (D,), g_pos (D,), g_neg (K, D)).
    """
    xp = _xp(v)
    s_pos = float(u_pos @ v)
    s_neg = [float(x) for x in (u_neg @ v)]  # (K,)
    loss = _log1p_exp(-s_pos) + sum(_log1p_exp(s) for s in s_neg)
    c_pos = _sigmoid(s_pos) - 1.0
    c_neg = xp.asarray([_sigmoid(s) for s in s_neg], dtype=v.dtype).reshape(-1, 1)  # (K, 1)
    g_v = c_pos * u_pos + (c_neg * u_neg).sum(axis=0)
    return loss, g_v.astype(v.dtype), (c_pos * v).astype(v.dtype), (c_neg * v).astype(v.dtype)


def sgns_update(w_in: Array, w_out: Array, centers: Array, contexts: Array, negatives: Array,
                lr: float) -> float:
    """One SGD step per pair, pair after pair (word2vec's order), in place; returns the summed
    loss. Each step takes the whole gradient of its pair at the rows as they were before the
    step (a negative drawn twice gets both gradients), then subtracts lr times it. A negative
    equal to its pair's context is skipped, as word2vec does: it would push one row both ways.

    w_in, w_out: (V_in, D), (V_out, D); centers, contexts: (P,) ids; negatives: (P, K) ids.
    """
    require_float("sgns_update", w_in, w_out)
    _check_sgns_shapes(w_in, w_out, centers, contexts, negatives)
    check_indices("sgns_update", centers, w_in.shape[0], "input rows")
    check_indices("sgns_update", contexts, w_out.shape[0], "output rows")
    check_indices("sgns_update", negatives, w_out.shape[0], "output rows")
    total = 0.0
    for p in range(len(centers)):
        c, o = int(centers[p]), int(contexts[p])
        negs = negatives[p][negatives[p] != o]
        loss, g_v, g_pos, g_neg = sgns_loss_grad(w_in[c], w_out[o], w_out[negs])
        total += loss
        w_out[o] -= lr * g_pos
        for j in range(len(negs)):  # a negative drawn twice takes both steps
            w_out[int(negs[j])] -= lr * g_neg[j]
        w_in[c] -= lr * g_v
    return total


def _check_sgns_shapes(w_in: Array, w_out: Array, centers: Array, contexts: Array,
                       negatives: Array) -> None:
    """The shape checks every implementation makes before it indexes rows."""
    if w_in.ndim != 2 or w_out.ndim != 2 or w_in.shape[1] != w_out.shape[1]:
        raise ValueError(f"sgns_update: w_in {tuple(w_in.shape)} and w_out "
                         f"{tuple(w_out.shape)} must be 2-D with one width")
    if centers.ndim != 1 or contexts.shape != centers.shape or negatives.ndim != 2 \
            or negatives.shape[0] != centers.shape[0]:
        raise ValueError(f"sgns_update: centers {tuple(centers.shape)}, contexts "
                         f"{tuple(contexts.shape)} and negatives {tuple(negatives.shape)} "
                         "must be (P,), (P,), (P, K)")


__all__ = ["adamw_step", "col2im", "col2im_cm", "conv_out_size", "dequantize_blocks",
           "dequantize_rows", "embedding_bwd", "erf", "gelu_bwd", "gelu_fwd", "gemm",
           "gemm_batched", "im2col", "im2col_cm", "layernorm_bwd", "layernorm_fwd",
           "lora_linear_bwd", "lora_linear_fwd", "np", "quant_linear_bwd", "quant_linear_fwd",
           "quant_lora_linear_bwd", "quant_lora_linear_fwd", "sgns_loss_grad", "sgns_update",
           "softmax_bwd", "softmax_fwd", "softmax_xent_bwd", "softmax_xent_fwd"]
