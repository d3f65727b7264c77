"""numba AdamW: the reference's update (backend/reference.py `adamw_step`) in one pass over
the parameter, its gradient and its state."""

from __future__ import annotations

import math

import numpy as np

from minitl.backend.numba_common import _PAR_MIN, Array, _jit, numba, prange

# ---- Adam / AdamW ------------------------------------------------------------------------
# No fastmath here: each element goes through the reference's operations in the reference's
# order (scalars pre-rounded to the parameter dtype, as numpy does), so float64 trajectories
# match PyTorch's to rounding and float32 ones match the reference bit for bit.


def _adam_body(p, g, m, v, vmax, i, sign, decoupled, decay, wd, w, w_hi, lerp_low, beta2,
               one_m_beta2, neg_step, bc2_sqrt, eps, amsgrad):  # type: ignore[no-untyped-def]
    gi = g[i] * sign
    pi = p[i]
    if decoupled:
        pi = pi * decay
    elif wd != 0:
        gi = gi + wd * pi
    mi = m[i]
    diff = gi - mi
    if lerp_low:
        mi = mi + diff * w
    else:
        mi = gi - diff * w_hi
    m[i] = mi
    vi = v[i] * beta2
    vi = vi + one_m_beta2 * gi * gi
    v[i] = vi
    if amsgrad:
        vi = max(vmax[i], vi)
        vmax[i] = vi
    denom = math.sqrt(vi) / bc2_sqrt + eps
    p[i] = pi + (mi * neg_step) / denom


if numba is not None:
    _adam_elem = numba.njit(inline="always")(_adam_body)


@_jit()
def _adam_serial(p, g, m, v, vmax, sign, decoupled, decay, wd, w, w_hi, lerp_low, beta2,
                 one_m_beta2, neg_step, bc2_sqrt, eps, amsgrad):  # type: ignore[no-untyped-def]
    for i in range(p.size):
        _adam_elem(p, g, m, v, vmax, i, sign, decoupled, decay, wd, w, w_hi, lerp_low, beta2,
                   one_m_beta2, neg_step, bc2_sqrt, eps, amsgrad)


@_jit(parallel=True)
def _adam_parallel(p, g, m, v, vmax, sign, decoupled, decay, wd, w, w_hi, lerp_low, beta2,
                   one_m_beta2, neg_step, bc2_sqrt, eps, amsgrad
                   ):  # type: ignore[no-untyped-def]
    for i in prange(p.size):
        _adam_elem(p, g, m, v, vmax, i, sign, decoupled, decay, wd, w, w_hi, lerp_low, beta2,
                   one_m_beta2, neg_step, bc2_sqrt, eps, amsgrad)


def adamw_step(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
               max_exp_avg_sq: Array | None, step: int, lr: float, beta1: float, beta2: float,
               eps: float, weight_decay: float, decoupled: bool, maximize: bool) -> None:
    """The reference's Adam/AdamW step in one pass over the five (or six) arrays instead of
    a dozen numpy passes. Non-contiguous state or other dtypes go to the reference."""
    from minitl.backend import reference

    state = (param, exp_avg, exp_avg_sq) + (() if max_exp_avg_sq is None else (max_exp_avg_sq,))
    if (not isinstance(grad, np.ndarray) or grad.shape != param.shape
            or param.dtype not in (np.float32, np.float64)
            or not all(isinstance(a, np.ndarray) and a.flags.c_contiguous
                       and a.dtype == param.dtype and a.shape == param.shape for a in state)):
        reference.adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
                             beta2, eps, weight_decay, decoupled, maximize)
        return
    s = param.dtype.type  # scalars rounded to the parameter dtype, as numpy rounds them
    g = np.ascontiguousarray(grad, dtype=param.dtype)
    w = 1 - beta1
    amsgrad = max_exp_avg_sq is not None
    vmax = param if max_exp_avg_sq is None else max_exp_avg_sq  # unread without amsgrad
    kernel = _adam_parallel if param.size >= 4 * _PAR_MIN else _adam_serial
    kernel(param.reshape(-1), g.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
           vmax.reshape(-1), s(-1.0 if maximize else 1.0),
           bool(decoupled and weight_decay != 0), s(1 - lr * weight_decay), s(weight_decay),
           s(w), s(1 - w), abs(w) < 0.5, s(beta2), s(1 - beta2), s(-(lr / (1 - beta1**step))),
           s((1 - beta2**step) ** 0.5), s(eps), amsgrad)
