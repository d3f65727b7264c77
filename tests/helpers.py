"""Shared test machinery: float64 finite-difference gradcheck and parity with PyTorch.

`gradcheck(fn, inputs)` compares every input's analytic gradient of
`sum(fn(*inputs) * w)` (w a fixed random weight, so every output element
matters) with central differences. `check_op(mt_fn, torch_fn, arrays)` runs the
same computation in minitl and PyTorch and compares outputs and gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import minitl as mt

try:
    import torch
except ImportError:  # torch is only in the test extra
    torch = None

requires_torch = __import__("pytest").mark.skipif(torch is None, reason="torch not installed")


def _as_list(out: Any) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def gradcheck(fn: Callable[..., Any], inputs: Sequence[np.ndarray], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0,
              wrt: Sequence[int] | None = None) -> None:
    """Assert analytic == numerical gradients for float64 inputs (central differences)."""
    rng = np.random.default_rng(seed)
    arrays = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
              for a in inputs]
    wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"] if wrt is None else list(wrt)
    tensors = [mt.tensor(a, requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    outs = _as_list(fn(*tensors))
    weights = [rng.standard_normal(o.shape) for o in outs]

    def scalar(values: list[np.ndarray]) -> float:
        with mt.no_grad():
            res = _as_list(fn(*[mt.tensor(v) for v in values]))
        return float(sum((r.numpy().astype(np.float64) * w).sum() for r, w in zip(res, weights)))

    loss = sum((o * mt.tensor(w)).sum() for o, w in zip(outs, weights))
    loss.backward()
    for i in wrt:
        analytic = tensors[i].grad
        analytic = np.zeros_like(arrays[i]) if analytic is None else analytic.numpy()
        numeric = np.zeros_like(arrays[i])
        flat = arrays[i].reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            up = scalar(arrays)
            flat[j] = old - eps
            down = scalar(arrays)
            flat[j] = old
            numeric.reshape(-1)[j] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, atol=atol, rtol=rtol,
                                   err_msg=f"gradient of input {i} (shape {arrays[i].shape})")


def check_op(mt_fn: Callable[..., Any], torch_fn: Callable[..., Any],
             inputs: Sequence[np.ndarray], atol: float = 1e-6, rtol: float = 1e-5,
             grad: bool = True, seed: int = 0) -> None:
    """Forward and backward of `mt_fn` equal `torch_fn` on the same inputs."""
    if torch is None:
        import pytest

        pytest.skip("torch not installed")
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a) for a in inputs]
    diff = [grad and a.dtype.kind == "f" for a in arrays]
    mts = [mt.tensor(a, requires_grad=d) for a, d in zip(arrays, diff)]
    tts = [torch.tensor(a, requires_grad=d) for a, d in zip(arrays, diff)]
    mo, to = _as_list(mt_fn(*mts)), _as_list(torch_fn(*tts))
    assert len(mo) == len(to), f"{len(mo)} outputs vs torch's {len(to)}"
    for m, t in zip(mo, to):
        assert m.shape == tuple(t.shape), f"shape {m.shape} vs torch {tuple(t.shape)}"
        np.testing.assert_allclose(m.numpy(), t.detach().numpy(), atol=atol, rtol=rtol,
                                   err_msg="forward differs from torch")
    if not grad or not any(diff):
        return
    weights = [rng.standard_normal(t.shape) for t in to]
    sum((m * mt.tensor(w.astype(m.dtype))).sum() for m, w in zip(mo, weights)).backward()
    sum((t * torch.tensor(w, dtype=t.dtype)).sum() for t, w in zip(to, weights)).backward()
    for i, (m, t) in enumerate(zip(mts, tts)):
        if not diff[i]:
            continue
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        mg = np.zeros(m.shape) if m.grad is None else m.grad.numpy()
        np.testing.assert_allclose(mg, tg, atol=atol, rtol=rtol,
                                   err_msg=f"gradient of input {i} differs from torch")


# ---- native GEMM micro-kernel paths -------------------------------------------------------

def gemm_paths() -> list[str]:
    """The minitl._C GEMM paths this CPU can run; ["generic"] without the extension.
    generic_12x32 runs the AVX-512 path's blocking with portable code, so the driver for that
    tile shape is tested on CPUs without AVX-512 too."""
    try:
        from minitl import _C
    except ImportError:
        return ["generic"]
    f = _C.cpu_features()
    return (["avx512"] if f["avx512f"] else []) + (["avx2"] if f["avx2"] and f["fma"] else []) \
        + ["generic", "generic_12x32"]


@pytest.fixture(name="path", params=gemm_paths())
def gemm_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once per GEMM micro-kernel path this CPU supports (import it as the
    `path` fixture)."""
    from minitl import _C

    _C.set_gemm_path(request.param)
    try:
        yield request.param
    finally:
        _C.set_gemm_path("auto")
