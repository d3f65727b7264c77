"""CUDA backend on a real GPU: every kernel against its reference at awkward sizes, gradchecks
on the GPU, and whole-model parity CPU vs GPU.

All tests are marked `cuda` (the default run deselects them) and skip cleanly when CuPy or a
GPU is missing. Run them with

    python -m pytest -m cuda tests/test_cuda.py -q

A kernel that fails its self-check is dropped with a warning and the reference runs instead,
so every test here also asserts that nothing was dropped (`_no_kernel_dropped`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl.backend import cuda_tune as tune
from minitl.backend import reference


def _gpu_reason() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU visible"
    except Exception as err:  # noqa: BLE001
        return f"no usable CUDA GPU ({type(err).__name__})"
    return None


_REASON = _gpu_reason()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

if _REASON is None:
    import cupy as cp



@pytest.fixture(autouse=True)
def _no_kernel_dropped(monkeypatch: pytest.MonkeyPatch, tmp_path: Any):
    """Untuned defaults, a private autotune cache, and no kernel silently replaced."""
    monkeypatch.setenv("MINITL_CUDA_AUTOTUNE", "0")
    monkeypatch.setenv("MINITL_CACHE_DIR", str(tmp_path))
    from minitl.backend import cuda

    cuda.set_matmul_precision("highest")
    yield
    cuda.set_matmul_precision("highest")
    failed = [k for k, ok in cuda._verified.items() if not ok]
    assert not failed, failed


def rnd(*shape: int, seed: int = 0, scale: float = 1.0) -> Any:
    rng = np.random.default_rng(seed)
    return cp.asarray((scale * rng.standard_normal(shape)).astype(np.float32))


def assert_close(got: Any, want: Any, tol: float) -> None:
    got, want = cp.asnumpy(got).astype(np.float64), cp.asnumpy(want).astype(np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def ref64(a: Any, b: Any, ta: bool, tb: bool) -> Any:
    a64, b64 = cp.asnumpy(a).astype(np.float64), cp.asnumpy(b).astype(np.float64)
    return (a64.T if ta else a64) @ (b64.T if tb else b64)


SHAPES = [(1, 1, 1), (7, 13, 5), (37, 29, 53), (129, 65, 130), (255, 513, 70), (64, 4096, 33),
          (3000, 17, 1025)]

# ---- SGEMM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", list(tune.SIMT_TILES))
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_sgemm_tiles_against_float64(tile: str, ta: bool, tb: bool) -> None:
    from minitl.backend import cuda

    for m, n, k in SHAPES[:6]:
        a = rnd(*((k, m) if ta else (m, k)), seed=1)
        b = rnd(*((n, k) if tb else (k, n)), seed=2)
        c = cp.zeros((m, n), cp.float32)
        cuda.sgemm_launch(tile, a, ta, b, tb, c, m, n, k)
        assert_close(c, ref64(a, b, ta, tb), 1e-4)


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_dispatch_views_and_split_k(m: int, n: int, k: int) -> None:
    from minitl.backend import cuda

    a, b = rnd(m, k, seed=3), rnd(k, n, seed=4)
    assert_close(cuda.gemm(a, b), ref64(a, b, False, False), 1e-4)
    assert_close(cuda.gemm(cp.asfortranarray(a), b.T.copy(), False, True),
                 ref64(a, b, False, False), 1e-4)  # transposed views, no copy
    assert_close(cuda.gemm(a[:, ::1], b), ref64(a, b, False, False), 1e-4)
    # split-K: a skinny output with long K
    a2, b2 = rnd(8, 8192, seed=5), rnd(8192, 24, seed=6)
    assert_close(cuda.gemm(a2, b2), ref64(a2, b2, False, False), 1e-4)


def test_gemm_passes_float64_and_strided_to_reference() -> None:
    from minitl.backend import cuda

    a = cp.asarray(np.random.default_rng(0).standard_normal((9, 11)))
    assert_close(cuda.gemm(a, a.T), cp.asnumpy(a) @ cp.asnumpy(a).T, 1e-12)
    x = rnd(20, 30)[::2, ::3]  # neither C nor F contiguous
    assert_close(cuda.gemm(x, x.T), ref64(x, x, False, True), 1e-4)


def test_autotuner_times_and_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    from minitl.backend import cuda

    monkeypatch.setenv("MINITL_CUDA_AUTOTUNE", "1")
    monkeypatch.setattr(cuda, "_tuner", None)
    a, b = rnd(1500, 1100, seed=1), rnd(1100, 1300, seed=2)
    assert_close(cuda.gemm(a, b), ref64(a, b, False, False), 1e-4)
    t = cuda.tuner()
    key = f"sgemm|00|{tune.shape_class(1500, 1300, 1100)}"
    assert key in t.choices and t.path.is_file()
    assert all(np.isfinite(v) for v in t.timings[key].values())


# ---- tensor cores ----------------------------------------------------------------------------


@pytest.mark.parametrize("tile", list(tune.MMA_TILES))
@pytest.mark.parametrize("bf16", [False, True])
def test_mma_tiles(tile: str, bf16: bool) -> None:
    from minitl.backend import cuda_tc

    for m, n, k in [(37, 29, 53), (129, 65, 130), (255, 513, 70), (1000, 300, 4097)]:
        for ta, tb in [(False, True), (True, False)]:
            a = rnd(*((k, m) if ta else (m, k)), seed=1)
            b = rnd(*((n, k) if tb else (k, n)), seed=2)
            A, lda, B, ldb = cuda_tc._operands(a, ta, b, tb, m, n, k, bf16)
            c = cp.empty((m, n), cp.float32)
            cuda_tc.mma_launch(tile, A, lda, B, ldb, c, m, n, k, bf16)
            want = cuda_tc._reference_rounded(a, ta, b, tb, bf16)
            assert_close(c, want, 2e-3 if bf16 else 2e-2)


@pytest.mark.parametrize("precision", ["high", "medium"])
def test_tensor_core_dispatch(precision: str) -> None:
    from minitl.backend import cuda

    cuda.set_matmul_precision(precision)
    a, b = rnd(300, 200, seed=1), rnd(200, 260, seed=2)
    assert_close(cuda.gemm(a, b), ref64(a, b, False, False), 3e-2)


def test_wgmma_on_hopper() -> None:
    from minitl.backend import cuda, cuda_tc

    if cuda.info()["cc"] != 90:
        pytest.skip("wgmma needs compute capability 9.0")
    for bf16 in (True, False):
        assert cuda_tc.wgmma_usable(bf16), cuda.status()
        for m, n, k in [(37, 29, 53), (300, 260, 1000), (2048, 2048, 2048)]:
            a, b = rnd(m, k, seed=1), rnd(n, k, seed=2)
            A, lda, B, ldb = cuda_tc._operands(a, False, b, True, m, n, k, bf16)
            c = cp.empty((m, n), cp.float32)
            cuda_tc.wgmma_launch(A, lda, B, ldb, c, m, n, k, bf16)
            assert_close(c, cuda_tc._reference_rounded(a, False, b, True, bf16),
                         2e-3 if bf16 else 2e-2)


# ---- LoRA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 8, 17, 64, 65])
@pytest.mark.parametrize("choice", ["128x128x8", "64x64x16", "two-pass"])
def test_lora_forward(r: int, choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from minitl.backend import cuda

    n, din, dout = 333, 130, 257
    x, w, b = rnd(n, din, seed=1), rnd(dout, din, seed=2), rnd(dout, seed=3)
    a, bm = rnd(r, din, seed=4), rnd(dout, r, seed=5)
    monkeypatch.setattr(cuda.tuner(), "choices", {})
    monkeypatch.setattr(tune.Autotuner, "choose", lambda self, key, cands, bench: (
        choice if choice in cands else cands[-1]))
    y, xa = cuda.lora_linear_fwd(x, w, b, a, bm, 0.7)
    want_y, want_xa = reference.lora_linear_fwd(x, w, b, a, bm, 0.7)
    assert_close(y, want_y, 1e-4)
    assert_close(xa, want_xa, 1e-4)


@pytest.mark.parametrize("r", [1, 8, 16, 33, 64])
@pytest.mark.parametrize("needs", [(True, False, False, True, True), (True, True, True, True, True),
                                   (False, False, True, False, True)])
def test_lora_backward(r: int, needs: tuple[bool, ...]) -> None:
    from minitl.backend import cuda

    n, din, dout = 301, 129, 190
    g, x, w = rnd(n, dout, seed=1), rnd(n, din, seed=2), rnd(dout, din, seed=3)
    a, bm = rnd(r, din, seed=4), rnd(dout, r, seed=5)
    xa = x @ a.T
    got = cuda.lora_linear_bwd(g, x, w, a, bm, xa, 0.5, needs)
    want = reference.lora_linear_bwd(g, x, w, a, bm, xa, 0.5, needs)
    for gv, wv in zip(got, want):
        assert (gv is None) == (wv is None)
        if gv is not None:
            assert_close(gv, wv, 1e-4)


# ---- fused kernels --------------------------------------------------------------------------


def _backend() -> Any:
    from minitl import backend

    backend.reset_backends()
    return backend.get_backend("cuda")


@pytest.mark.parametrize("d", [1, 7, 128, 1025, 4097])
def test_layernorm(d: int) -> None:
    b = _backend()
    x, w, bias, g = rnd(33, d, seed=1, scale=3), rnd(d, seed=2), rnd(d, seed=3), rnd(33, d, seed=4)
    for wt, bt in ((w, bias), (None, None)):
        got, want = b.layernorm_fwd(x, wt, bt, 1e-5), reference.layernorm_fwd(x, wt, bt, 1e-5)
        for p, q in zip(got, want):
            assert_close(p, q, 1e-4)
        for needs in ((True, True, True), (False, True, False), (True, False, False)):
            gb = b.layernorm_bwd(g, x, want[1], want[2], wt, needs)
            wb = reference.layernorm_bwd(g, x, want[1], want[2], wt, needs)
            for p, q in zip(gb, wb):
                assert (p is None) == (q is None)
                if p is not None:
                    assert_close(p, q, 1e-3)


@pytest.mark.parametrize("c", [1, 10, 1000, 50257])
@pytest.mark.parametrize("smoothing,weighted", [(0.0, False), (0.1, False), (0.2, True)])
def test_softmax_cross_entropy(c: int, smoothing: float, weighted: bool) -> None:
    b = _backend()
    m = 37
    x = rnd(m, c, seed=1, scale=4)
    t = cp.asarray(np.random.default_rng(2).integers(0, c, m))
    t[::5] = -100
    weight = cp.abs(rnd(c, seed=3)) if weighted else None
    got = b.softmax_xent_fwd(x, t, weight, -100, smoothing)
    want = reference.softmax_xent_fwd(x, t, weight, -100, smoothing)
    for p, q in zip(got, want):
        assert_close(p, q, 1e-4)
    grad = rnd(m, seed=4)
    assert_close(b.softmax_xent_bwd(x, want[1], t, weight, -100, smoothing, grad),
                 reference.softmax_xent_bwd(x, want[1], t, weight, -100, smoothing, grad), 1e-4)


@pytest.mark.parametrize("shape", [(1, 1), (3, 31), (2, 4, 33, 33), (5, 2049)])
def test_softmax(shape: tuple[int, ...]) -> None:
    b = _backend()
    x = rnd(*shape, seed=1, scale=5)
    if len(shape) == 4:
        x[0, 1, 3, :] = -cp.inf  # a fully masked attention row gives zeros
    y = b.softmax_fwd(x, True)
    assert_close(y, reference.softmax_fwd(x, True), 1e-5)
    g = rnd(*shape, seed=2)
    assert_close(b.softmax_bwd(g, y), reference.softmax_bwd(g, y), 1e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    b = _backend()
    x, g = rnd(3, 1001, seed=1, scale=4), rnd(3, 1001, seed=2)
    assert_close(b.gelu_fwd(x, approximate), reference.gelu_fwd(x, approximate), 1e-5)
    assert_close(b.gelu_bwd(g, x, approximate), reference.gelu_bwd(g, x, approximate), 1e-5)


@pytest.mark.parametrize("decoupled,amsgrad,maximize", [(True, False, False), (False, True, True),
                                                        (True, True, False)])
def test_adamw_step(decoupled: bool, amsgrad: bool, maximize: bool) -> None:
    b = _backend()
    state = [rnd(1037, seed=s) for s in range(5)]
    state[3] = state[3] ** 2
    state[4] = state[3] * 2
    mine = [s.copy() for s in state]
    for step in (1, 2, 10):
        kw: dict[str, Any] = {"step": step, "lr": 3e-3, "beta1": 0.9, "beta2": 0.999,
                              "eps": 1e-8, "weight_decay": 0.05, "decoupled": decoupled,
                              "maximize": maximize}
        reference.adamw_step(*state[:4], state[4] if amsgrad else None, **kw)
        b.adamw_step(*mine[:4], mine[4] if amsgrad else None, **kw)
    for p, q in zip(mine, state):
        assert_close(p, q, 1e-5)


@pytest.mark.parametrize("padding_idx,freq", [(None, False), (0, True), (5, False)])
def test_embedding_backward(padding_idx: int | None, freq: bool) -> None:
    b = _backend()
    g = rnd(1000, 37, seed=1)
    ids = cp.asarray(np.random.default_rng(0).integers(0, 50, 1000))  # many repeats
    assert_close(b.embedding_bwd(g, ids, 50, padding_idx, freq),
                 reference.embedding_bwd(g, ids, 50, padding_idx, freq), 1e-4)


@pytest.mark.parametrize("stride,padding,dilation", [((1, 1), (0, 0), (1, 1)),
                                                     ((2, 1), (1, 2), (1, 2)),
                                                     ((3, 3), (2, 2), (2, 2))])
def test_im2col_col2im(stride: Any, padding: Any, dilation: Any) -> None:
    b = _backend()
    x = rnd(2, 3, 11, 9, seed=1)
    cols = b.im2col(x, 3, 2, stride, padding, dilation)
    assert_close(cols, reference.im2col(x, 3, 2, stride, padding, dilation), 1e-6)
    assert_close(b.col2im(cols, x.shape, stride, padding, dilation),
                 reference.col2im(cols, x.shape, stride, padding, dilation), 1e-5)
    assert_close(b.im2col_cm(x, 3, 2, stride, padding, dilation),
                 reference.im2col_cm(x, 3, 2, stride, padding, dilation), 1e-6)


# ---- ops and gradients on the GPU ---------------------------------------------------------------


def gpu_gradcheck(fn: Any, arrays: list[np.ndarray], eps: float = 1e-6, tol: float = 1e-5) -> None:
    """float64 central differences of fn on cuda tensors (the reference kernels on CuPy)."""
    tensors = [mt.tensor(a, device="cuda", requires_grad=a.dtype.kind == "f") for a in arrays]
    out = fn(*tensors)
    w = np.random.default_rng(0).standard_normal(out.shape)
    (out * mt.tensor(w, device="cuda")).sum().backward()
    for i, a in enumerate(arrays):
        if a.dtype.kind != "f":
            continue
        num = np.zeros_like(a)
        for j in range(a.size):
            vals = []
            for d in (eps, -eps):
                b = a.copy()
                b.reshape(-1)[j] += d
                args = [mt.tensor(b if k == i else x, device="cuda") for k, x in enumerate(arrays)]
                with mt.no_grad():
                    vals.append(float((fn(*args).cpu().numpy() * w).sum()))
            num.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * eps)
        np.testing.assert_allclose(tensors[i].grad.cpu().numpy(), num, rtol=tol, atol=tol)


def test_gradchecks_on_gpu() -> None:
    rng = np.random.default_rng(0)
    def r(*s: int) -> np.ndarray:
        return rng.standard_normal(s)
    gpu_gradcheck(lambda x, w, b: F.linear(x, w, b), [r(4, 3), r(5, 3), r(5)])
    gpu_gradcheck(lambda x, w, b: F.layer_norm(x, (6,), w, b), [r(3, 6), r(6), r(6)])
    gpu_gradcheck(lambda x: F.gelu(x), [r(3, 5)])
    gpu_gradcheck(lambda x: x.softmax(dim=-1), [r(3, 5)])
    gpu_gradcheck(lambda x, w, b, a, bm: F.lora_linear(x, w, b, a, bm, 0.5),
                  [r(4, 6), r(5, 6), r(5), r(2, 6), r(5, 2)])
    gpu_gradcheck(lambda x, w: F.conv2d(x, w, stride=2, padding=1), [r(1, 2, 5, 5), r(3, 2, 3, 3)])
    gpu_gradcheck(lambda x: F.cross_entropy(x, mt.tensor([1, 0, 3], device="cuda"),
                                            label_smoothing=0.1), [r(3, 4)])


def _ops_parity(fn: Any, arrays: list[np.ndarray], tol: float = 1e-4) -> None:
    """float32 forward and gradients of fn on the GPU kernels equal the CPU's."""
    outs = []
    for device in ("cpu", "cuda"):
        ts = [mt.tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
        y = fn(*ts)
        y.sum().backward() if y.ndim else y.backward()
        outs.append([y.cpu().numpy()] + [t.grad.cpu().numpy() for t in ts if t.grad is not None])
    for p, q in zip(*outs):
        np.testing.assert_allclose(p, q, rtol=tol, atol=tol)


def test_float32_ops_match_cpu() -> None:
    rng = np.random.default_rng(1)
    def r(*s: int) -> np.ndarray:
        return rng.standard_normal(s).astype(np.float32)
    _ops_parity(lambda x, w, b: F.gelu(F.linear(x, w, b)), [r(70, 33), r(65, 33), r(65)])
    _ops_parity(lambda x, w, b, a, bm: F.lora_linear(x, w, b, a, bm, 2.0),
                [r(2, 35, 40), r(50, 40), r(50), r(8, 40), r(50, 8)])
    _ops_parity(lambda x: F.cross_entropy(x, mt.tensor(rng.integers(0, 9, 20), device=x.device)),
                [r(20, 9)])
    _ops_parity(lambda x, w: F.conv2d(x, w, padding=1), [r(2, 3, 8, 8), r(4, 3, 3, 3)])


# ---- whole models --------------------------------------------------------------------------------


def _train_steps(model_fn: Any, batch_fn: Any, device: str, steps: int = 3) -> list[float]:
    mt.manual_seed(0)
    model = model_fn().to(device)
    opt = mt.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for i in range(steps):
        loss = batch_fn(model, device, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.cpu().item()))
    return losses


def test_gpt_training_parity_cpu_vs_gpu() -> None:
    cfg = mt.models.GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=64)
    ids = np.random.default_rng(0).integers(0, 97, (4, 33))

    def batch(model: Any, device: str, i: int) -> Any:
        x = mt.tensor(ids[:, :-1], device=device)
        y = mt.tensor(ids[:, 1:], device=device)
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, 97), y.reshape(-1))

    cpu = _train_steps(lambda: mt.models.GPT(cfg), batch, "cpu")
    gpu = _train_steps(lambda: mt.models.GPT(cfg), batch, "cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=2e-4)


def test_bert_lora_training_parity_cpu_vs_gpu() -> None:
    from minitl import transfer as tl

    cfg = mt.models.BertConfig(vocab_size=101, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=128,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids = np.random.default_rng(1).integers(1, 101, (3, 17))
    labels = np.array([0, 1, 1])

    def model_fn() -> nn.Module:
        m = mt.models.BertForSequenceClassification(cfg, num_labels=2)
        tl.apply_lora(m, tl.LoRAConfig(r=4, alpha=8, target=("*.query", "*.value")))
        for mod in m.modules():  # B = 0 would make the LoRA path invisible to the check
            if hasattr(mod, "lora_B"):
                mod.lora_B.data[...] = 0.01
        return m

    def batch(model: Any, device: str, i: int) -> Any:
        out = model(mt.tensor(ids, device=device))
        logits = out if isinstance(out, mt.Tensor) else out[0]
        return F.cross_entropy(logits, mt.tensor(labels, device=device))

    np.testing.assert_allclose(_train_steps(model_fn, batch, "cuda"),
                               _train_steps(model_fn, batch, "cpu"), rtol=2e-4)
