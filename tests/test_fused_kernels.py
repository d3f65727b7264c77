"""The fused light kernels (backend/numba_kernels.py) against their numpy references
(backend/reference.py) at awkward sizes, on strided inputs, in float32 and float64; float64
gradchecks through the ops that call them; and the kernel switch (MINITL_KERNELS).

The first run compiles every kernel (cached on disk afterwards, `cache=True`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import gradcheck

import minitl as mt
import minitl.nn.functional as F
from minitl import backend
from minitl.backend import reference

nk = pytest.importorskip("minitl.backend.numba_kernels")
nk_common = pytest.importorskip("minitl.backend.numba_common")
if not nk.provided_kernels():
    pytest.skip("numba is not installed", allow_module_level=True)

DTYPES = [np.float32, np.float64]
SIZES = [1, 7, 129, 1025]
# (rows, cols) pairs that cover every awkward size on both axes without a full product
ROWS_COLS = [(1, 1025), (7, 129), (129, 7), (1025, 1), (7, 1)]


def _tol(dtype: Any) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-11,
                                                                      "atol": 1e-12}


def _strided(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any,
             scale: float = 1.0) -> np.ndarray:
    """A non-contiguous array of `shape`: every other column of a wider one."""
    wide = rng.standard_normal(shape[:-1] + (2 * shape[-1],)) * scale
    out = wide.astype(dtype)[..., ::2]
    assert not out.flags.c_contiguous or out.size <= 1
    return out


def _close(got: Any, want: Any, dtype: Any) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, **_tol(dtype))


# ---- kernels vs references -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,d", ROWS_COLS)
def test_layernorm(m: int, d: int, dtype: Any) -> None:
    rng = np.random.default_rng(m * d)
    x = _strided(rng, (m, d), dtype, 3.0) + dtype(10)  # an offset: centring must be exact
    w, b = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    for wb in ((w, b), (None, None), (w, None)):
        _close(nk.layernorm_fwd(x, *wb, 1e-5), reference.layernorm_fwd(x, *wb, 1e-5), dtype)
        _, mean, rstd = reference.layernorm_fwd(x, *wb, 1e-5)
        g = _strided(rng, (m, d), dtype)
        for needs in ((True, True, True), (True, False, False), (False, True, True)):
            _close(nk.layernorm_bwd(g, x, mean, rstd, wb[0], needs),
                   reference.layernorm_bwd(g, x, mean, rstd, wb[0], needs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,c", ROWS_COLS)
def test_softmax_xent(m: int, c: int, dtype: Any) -> None:
    rng = np.random.default_rng(m + c)
    x = _strided(rng, (m, c), dtype, 4.0)
    x[0, 0] = -np.inf if c > 1 else x[0, 0]  # a logit of -inf is a valid (impossible) class
    target = rng.integers(0, c, m)
    target[::3] = -100
    weight = rng.random(c).astype(dtype) + dtype(0.1)
    grad = rng.standard_normal(m).astype(dtype)
    for w, eps in ((None, 0.0), (weight, 0.0), (weight, 0.2), (None, 0.1)):
        if eps and c > 1:
            x[0, 0] = 0.0  # smoothing puts weight on every class: keep them finite
        want = reference.softmax_xent_fwd(x, target, w, -100, eps)
        _close(nk.softmax_xent_fwd(x, target, w, -100, eps), want, dtype)
        lse = want[1]
        _close(nk.softmax_xent_bwd(x, lse, target, w, -100, eps, grad),
               reference.softmax_xent_bwd(x, lse, target, w, -100, eps, grad), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n", ROWS_COLS)
def test_softmax_rows(m: int, n: int, dtype: Any) -> None:
    rng = np.random.default_rng(m * 3 + n)
    x = _strided(rng, (m, n), dtype, 5.0)
    x[::2, : n // 2] = -np.inf  # masked keys
    x[-1] = -np.inf  # a fully masked row: zeros with safe=True
    _close(nk.softmax_fwd(x, True), reference.softmax_fwd(x, True), dtype)
    y = reference.softmax_fwd(x, True)
    g = _strided(rng, (m, n), dtype)
    _close(nk.softmax_bwd(g, y), reference.softmax_bwd(g, y), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(size: int, approximate: str, dtype: Any) -> None:
    rng = np.random.default_rng(size)
    x = _strided(rng, (3, size), dtype, 4.0)
    x[0, 0] = -40.0  # deep tails: no overflow, no NaN
    x[-1, -1] = 40.0
    g = _strided(rng, (3, size), dtype)
    # float32 is held to the reference evaluated in float64: the kernel avoids the
    # cancellation in 1 + tanh(u) that the float32 reference itself suffers
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    want_y = reference.gelu_fwd(x64, approximate).astype(dtype)
    want_dx = reference.gelu_bwd(g64, x64, approximate).astype(dtype)
    _close(nk.gelu_fwd(x, approximate), want_y, dtype)
    _close(nk.gelu_bwd(g, x, approximate), want_dx, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_math_is_accurate(dtype: Any) -> None:
    """The vectorized float32 exp / Phi stay within a few float32 ulps of float64 truth."""
    x = np.linspace(-30, 30, 20001).astype(dtype)
    truth = reference.gelu_fwd(x.astype(np.float64), "none")
    assert np.abs(nk.gelu_fwd(x, "none") - truth).max() < 1e-6
    s = np.linspace(-100, 0, 4097).astype(dtype)[None, :]
    p = nk.softmax_fwd(s, False)
    ref = reference.softmax_fwd(s.astype(np.float64), False)
    np.testing.assert_allclose(p, ref, rtol=5e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-37)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,d", ROWS_COLS)
def test_embedding_bwd(m: int, d: int, dtype: Any) -> None:
    rng = np.random.default_rng(m * d)
    n = 11
    ids = rng.integers(0, n, m)  # repeats accumulate
    g = _strided(rng, (m, d), dtype)
    for pad, freq in ((None, False), (3, True), (0, False)):
        _close(nk.embedding_bwd(g, ids, n, pad, freq),
               reference.embedding_bwd(g, ids, n, pad, freq), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES + [4 * nk_common._PAR_MIN + 3])  # the last: parallel
@pytest.mark.parametrize("decoupled,amsgrad,maximize",
                         [(True, False, False), (False, True, False), (True, True, True)])
def test_adamw_step_is_the_reference_bit_for_bit(size: int, decoupled: bool, amsgrad: bool,
                                                 maximize: bool, dtype: Any) -> None:
    rng = np.random.default_rng(size)
    state = [rng.standard_normal(size).astype(dtype) for _ in range(2)]
    state += [np.abs(rng.standard_normal(size)).astype(dtype) for _ in range(2)]
    ours, theirs = [a.copy() for a in state], [a.copy() for a in state]
    for step in (1, 2, 3):
        grad = _strided(rng, (size,), dtype)
        hyper = (step, 1e-2, 0.9, 0.999, 1e-8, 0.1, decoupled, maximize)
        nk.adamw_step(ours[0], grad, ours[1], ours[2], ours[3] if amsgrad else None, *hyper)
        reference.adamw_step(theirs[0], grad, theirs[1], theirs[2],
                             theirs[3] if amsgrad else None, *hyper)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


CONV_GEOMETRY = [  # (n, c, h, w, kh, kw, stride, padding, dilation)
    (1, 1, 1, 1, 1, 1, (1, 1), (0, 0), (1, 1)),
    (2, 3, 7, 9, 3, 2, (2, 1), (1, 2), (1, 2)),
    (1, 2, 12, 7, 3, 3, (1, 3), (2, 0), (2, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", CONV_GEOMETRY)
@pytest.mark.parametrize("channel_major", [False, True])
def test_im2col_col2im(geom: tuple[Any, ...], channel_major: bool, dtype: Any) -> None:
    n, c, h, w, kh, kw, stride, pad, dil = geom
    rng = np.random.default_rng(h * w)
    x = _strided(rng, (n, c, h, w), dtype)
    suffix = "_cm" if channel_major else ""
    ours_i, ref_i = getattr(nk, "im2col" + suffix), getattr(reference, "im2col" + suffix)
    cols = ref_i(x, kh, kw, stride, pad, dil)
    _close(ours_i(x, kh, kw, stride, pad, dil), cols, dtype)
    g = rng.standard_normal(cols.shape).astype(dtype)
    ours_c, ref_c = getattr(nk, "col2im" + suffix), getattr(reference, "col2im" + suffix)
    _close(ours_c(g, x.shape, stride, pad, dil), ref_c(g, x.shape, stride, pad, dil), dtype)


# ---- the ops on the default kernels: float64 gradchecks ---------------------------------


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def test_default_path_is_numba_for_the_fused_ops() -> None:
    paths = backend.get_backend("cpu").paths
    for name in nk.provided_kernels():
        assert paths[name] in ("numba", "native"), (name, paths[name])


def test_gradcheck_layer_norm_gelu_softmax() -> None:
    gradcheck(lambda x, w, b: F.layer_norm(x, (7,), w, b), [_rand(3, 7, scale=2),
                                                           _rand(7, seed=1), _rand(7, seed=2)])
    gradcheck(lambda x: F.gelu(x), [_rand(4, 7, scale=3)])
    gradcheck(lambda x: F.gelu(x, approximate="tanh"), [_rand(4, 7, scale=3)])
    gradcheck(lambda x: F.softmax(x, dim=1), [_rand(2, 5, 3)])


@pytest.mark.parametrize("weighted,eps,reduction", [(False, 0.0, "mean"), (True, 0.1, "sum"),
                                                    (True, 0.0, "none")])
def test_gradcheck_cross_entropy(weighted: bool, eps: float, reduction: str) -> None:
    target = np.array([0, 4, -100, 2, 2, 1])
    weight = np.random.default_rng(3).random(5) + 0.1 if weighted else None

    def fn(x: mt.Tensor, *w: mt.Tensor) -> mt.Tensor:
        return F.cross_entropy(x, mt.tensor(target), weight=w[0] if w else None,
                               label_smoothing=eps, reduction=reduction)

    inputs = [_rand(6, 5, scale=3)] + ([weight] if weighted else [])
    gradcheck(fn, inputs, wrt=[0])


def test_gradcheck_embedding_attention_conv() -> None:
    ids = mt.tensor(np.array([[1, 3, 3], [0, 1, 4]]))
    # padding_idx blocks the gradient by definition, so the gradcheck uses an absent id
    gradcheck(lambda w: F.embedding(ids, w, padding_idx=2), [_rand(5, 3)])
    mask = mt.tensor(np.array([[True, True, False], [True, False, False]]))
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
              [_rand(2, 2, 3, seed=1), _rand(2, 3, 3, seed=2), _rand(2, 3, 2, seed=3)])
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)),
              [_rand(2, 2, 5, 6, seed=4), _rand(3, 2, 3, 2, seed=5), _rand(3, seed=6)])
    gradcheck(lambda x, w: F.conv2d(x, w, groups=2, padding="same"),
              [_rand(1, 4, 4, 5, seed=7), _rand(4, 2, 2, 3, seed=8)])


def test_adamw_on_the_kernel_matches_the_reference_trajectory() -> None:
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((5, 4)), rng.standard_normal(3)]
    runs = []
    for mode in ("auto", "reference"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MINITL_KERNELS", mode)
            backend.reset_backends()
            params = [mt.tensor(a.copy(), requires_grad=True) for a in start]
            opt = mt.optim.AdamW(params, lr=0.05, weight_decay=0.1, amsgrad=True)
            for _ in range(4):
                opt.zero_grad()
                sum(((p * p * p).sum() for p in params), mt.tensor(0.0)).backward()
                opt.step()
            runs.append([p.numpy().copy() for p in params])
    backend.reset_backends()
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_reference_mode_forces_every_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITL_KERNELS", "reference")
    backend.reset_backends()
    try:
        b = backend.get_backend("cpu")
        for name in backend.KERNELS:
            assert b.paths[name] == "reference"
            assert getattr(b, name) is getattr(reference, name)
        x = mt.tensor(_rand(4, 6, scale=2).astype(np.float32), requires_grad=True)
        loss = F.cross_entropy(F.layer_norm(F.gelu(x), (6,)), mt.tensor(np.array([0, 5, 2, 1])))
        loss.backward()
        assert np.isfinite(x.grad.numpy()).all()
    finally:
        monkeypatch.delenv("MINITL_KERNELS")
        backend.reset_backends()
