"""numba skip-gram negative-sampling update: the reference's `sgns_update` (backend/reference.py)
as one compiled loop over pairs, in place, word2vec's hogwild inner loop.

Per pair with K negatives and width D: K + 1 dot products, K + 1 row updates of W_out and one
of W_in, ~6 (K + 1) D flops over 2 (K + 2) D floats read and written. At D = 100, K = 5 that
is ~3.6 kflop per pair; the rows are scattered over the matrices, so the loop is bound by
cache misses on large vocabularies and by the scalar exp/log (2 per target) on small ones:
expect a few million pairs per second per core.

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


def _softplus(x: float) -> float:
    """ln(1 + e^x) without overflow."""
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


if numba is not None:
    _softplus = numba.njit(inline="always")(_softplus)
    _sigmoid = numba.njit(inline="always")(_sigmoid)


def _pairs_body(w_in, w_out, centers, contexts, negatives, lr, lo, hi, coef, g_v
                ):  # type: ignore[no-untyped-def]
    """Pairs lo..hi-1, in order; coef (K + 1,) float64 and g_v (D,) are scratch."""
    k = negatives.shape[1]
    d = w_in.shape[1]
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
            s = 0.0
            for j in range(d):
                s += w_in[c, j] * w_out[r, j]
            if t == 0:
                total += _softplus(-s)
                coef[t] = _sigmoid(s) - 1.0
            else:
                total += _softplus(s)
                coef[t] = _sigmoid(s)
        for j in range(d):
            g_v[j] = 0.0
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
    g_v = np.empty(w_in.shape[1])
    return _pairs(w_in, w_out, centers, contexts, negatives, lr, 0, centers.shape[0], coef, g_v)


@_jit(parallel=True, fastmath=_FM)
def _sgns_hogwild(w_in, w_out, centers, contexts, negatives, lr
                  ):  # type: ignore[no-untyped-def]
    n = centers.shape[0]
    nblock = (n + _BLOCK - 1) // _BLOCK
    total = 0.0
    for b in prange(nblock):
        coef = np.empty(negatives.shape[1] + 1)
        g_v = np.empty(w_in.shape[1])
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
