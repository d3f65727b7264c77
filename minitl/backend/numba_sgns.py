"""numba skip-gram negative-sampling update: the reference's `sgns_update` (backend/reference.py)
as one compiled loop over pairs, in place, word2vec's hogwild inner loop.

Per pair with K negatives and width D: K + 1 dot products, K + 1 row updates of W_out and one
of W_in, ~6 (K + 1) D flops over 2 (K + 2) D floats read and written. At D = 100, K = 5 that
is ~3.6 kflop per pair, which a core could do in ~0.2 us; the rows are scattered over the
matrices and each target needs a scalar exp and log1p, so the loop is bound by cache misses
and those calls instead. Measured 0.37-0.53 M pairs/s (float32, D = 100, K = 5, 2,000-20,000
rows) on one core of a 2.6 GHz Xeon shared with other jobs; float32 dot products (not float64)
and one exp per target (not two) bought ~15% of that.

Threads: `sgns_update` runs serially (pair after pair, the reference's order) unless numba has
more than one thread and the batch is large; then blocks of pairs run in parallel without
locks (Hogwild!, Recht et al. arXiv:1106.5730, as word2vec.c does): rows shared by two threads
may lose an update, which SGD tolerates, and the result then depends on the schedule.
"""

from __future__ import annotations

import math

import numpy as np

from minitl.backend.guards import checked_indices
from minitl.backend.numba_common import _FM, Array, _c, _jit, numba, prange
from minitl.backend.reference import _check_sgns_shapes

_PAR_MIN_PAIRS = 4096  # below this a parallel region costs more than it saves
_BLOCK = 256  # pairs per parallel task: few enough tasks to schedule, enough for balance


def _sigmoid_softplus(x: float) -> tuple[float, float]:
    """sigmoid(x) and softplus(x) = ln(1 + e^x) from one exp, without overflow: the two
    transcendental calls per target are a large share of a pair's time at D = 100."""
    e = math.exp(-abs(x))
    tail = math.log1p(e)
    if x >= 0:
        return 1.0 / (1.0 + e), x + tail
    return e / (1.0 + e), tail


if numba is not None:
    _sigmoid_softplus = numba.njit(inline="always")(_sigmoid_softplus)


def _pairs_body(w_in, w_out, centers, contexts, negatives, lr, lo, hi, coef, g_v
                ):  # type: ignore[no-untyped-def]
    """Pairs lo..hi-1, in order; coef (K + 1,) float64 and g_v (D,) are scratch."""
    k = negatives.shape[1]
    d = w_in.shape[1]
    zero = np.zeros(1, w_in.dtype)[0]  # a 0 of the matrices' dtype
    total = 0.0
    for p in range(lo, hi):
        c = centers[p]
        o = contexts[p]
        # every coefficient from the rows as they were before this pair's step
        for t in range(k + 1):
            r = o if t == 0 else negatives[p, t - 1]
            if t > 0 and r == o:
                coef[t] = 0.0  # word2vec skips a negative equal to the context
                continue
            s = zero  # in the matrices' dtype: float32 dots run twice as wide
            for j in range(d):
                s += w_in[c, j] * w_out[r, j]
            if t == 0:
                sig_neg, loss = _sigmoid_softplus(-s)  # -log s(x) = softplus(-x)
                total += loss
                coef[t] = -sig_neg  # s(x) - 1 = -s(-x)
            else:
                sig, loss = _sigmoid_softplus(s)
                total += loss
                coef[t] = sig
        for j in range(d):
            g_v[j] = zero
        for t in range(k + 1):
            r = o if t == 0 else negatives[p, t - 1]
            a = coef[t]
            for j in range(d):
                g_v[j] += a * w_out[r, j]
        # W_out first: its gradient is coef * v with v still the pre-step W_in row
        for t in range(k + 1):
            r = o if t == 0 else negatives[p, t - 1]
            step = lr * coef[t]
            for j in range(d):
                w_out[r, j] -= step * w_in[c, j]
        for j in range(d):
            w_in[c, j] -= lr * g_v[j]
    return total


if numba is not None:
    _pairs = numba.njit(inline="always")(_pairs_body)
else:
    _pairs = _pairs_body


@_jit(fastmath=_FM)
def _sgns_serial(w_in, w_out, centers, contexts, negatives, lr):  # type: ignore[no-untyped-def]
    coef = np.empty(negatives.shape[1] + 1)
    g_v = np.empty(w_in.shape[1], dtype=w_in.dtype)
    return _pairs(w_in, w_out, centers, contexts, negatives, lr, 0, centers.shape[0], coef, g_v)


@_jit(parallel=True, fastmath=_FM)
def _sgns_hogwild(w_in, w_out, centers, contexts, negatives, lr
                  ):  # type: ignore[no-untyped-def]
    n = centers.shape[0]
    nblock = (n + _BLOCK - 1) // _BLOCK
    total = 0.0
    for b in prange(nblock):
        coef = np.empty(negatives.shape[1] + 1)
        g_v = np.empty(w_in.shape[1], dtype=w_in.dtype)
        total += _pairs(w_in, w_out, centers, contexts, negatives, lr, b * _BLOCK,
                        min(n, b * _BLOCK + _BLOCK), coef, g_v)
    return total


def sgns_update(w_in: Array, w_out: Array, centers: Array, contexts: Array, negatives: Array,
                lr: float) -> float:
    """See `reference.sgns_update`; w_in and w_out must be C-contiguous (updated in place)."""
    _check_sgns_shapes(w_in, w_out, centers, contexts, negatives)
    if not (w_in.flags.c_contiguous and w_out.flags.c_contiguous):
        raise ValueError("sgns_update: w_in and w_out must be C-contiguous (they are updated "
                         "in place)")
    # private checked copies: the kernel reads exactly the ids that were checked
    c = checked_indices("sgns_update", centers, w_in.shape[0], "input rows")
    o = checked_indices("sgns_update", contexts, w_out.shape[0], "output rows")
    neg = checked_indices("sgns_update", negatives, w_out.shape[0], "output rows")
    neg = _c(neg.reshape(negatives.shape))
    if numba is not None and numba.get_num_threads() > 1 and len(c) >= _PAR_MIN_PAIRS:
        return float(_sgns_hogwild(w_in, w_out, c, o, neg, float(lr)))
    return float(_sgns_serial(w_in, w_out, c, o, neg, float(lr)))
