"""Device plumbing without a GPU: `device="cuda"` tensors and modules on a fake CuPy.

`FakeCuPy` is a numpy-backed stand-in for the `cupy` module: its arrays report the `cupy`
module (so minitl sees them as CUDA arrays), refuse implicit conversion to numpy exactly as
CuPy does (so any hidden host round trip in an op fails here), and its RawModule records what
minitl compiles and returns kernels that raise (there is no GPU). With it these tests check the
device model (moves, errors, module.to), whole-model parity CPU vs "GPU" through the reference
kernels, the RawModule loading logic, and the fall-back-with-a-warning path.
"""

from __future__ import annotations

import math
import operator
import re
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl import backend, nn
from minitl.backend import cuda_src
from minitl.backend import cuda_tune as tune

# ---- the fake CuPy ------------------------------------------------------------------------------


def _wrap(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return FakeArray(x)
    if isinstance(x, np.generic):  # CuPy reductions return 0-d arrays, not scalars
        return FakeArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _unwrap(x: Any) -> Any:
    if isinstance(x, FakeArray):
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


class FakeArray:
    """A numpy array pretending to live in GPU memory."""

    __array_priority__ = 100

    def __init__(self, a: np.ndarray) -> None:
        object.__setattr__(self, "_a", a)

    def get(self) -> np.ndarray:
        return self._a.copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kw: Any) -> Any:
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kw)))

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return _wrap(attr)

    def __getitem__(self, idx: Any) -> Any:
        return _wrap(self._a[_unwrap(idx)])

    def __setitem__(self, idx: Any, value: Any) -> None:
        self._a[_unwrap(idx)] = _unwrap(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(v) for v in self._a)

    def __repr__(self) -> str:
        return f"FakeArray({self._a!r})"

    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return operator.index(self._a)

    __hash__ = None  # type: ignore[assignment]


def _binop(name: str) -> Any:
    def op(self: FakeArray, other: Any) -> Any:
        return _wrap(getattr(self._a, name)(_unwrap(other)))
    return op


def _unop(name: str) -> Any:
    def op(self: FakeArray) -> Any:
        return _wrap(getattr(self._a, name)())
    return op


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
           "xor", "lshift", "rshift"):
    for _form in (f"__{_n}__", f"__r{_n}__", f"__i{_n}__"):
        setattr(FakeArray, _form, _binop(_form))
for _form in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(FakeArray, _form, _binop(_form))
for _form in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(FakeArray, _form, _unop(_form))
FakeArray.__module__ = "cupy"  # what minitl.backend.array_module looks at


class FakeKernel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.max_dynamic_shared_size_bytes = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"fake cupy: no GPU to run {self.name}")


class FakeRawModule:
    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, code: str | None = None, options: tuple[str, ...] = (),
                 name_expressions: Any = None, path: str | None = None, **kw: Any) -> None:
        FakeRawModule.built.append({"code": code, "options": tuple(options),
                                    "name_expressions": name_expressions, "path": path})

    def get_function(self, name: str) -> FakeKernel:
        return FakeKernel(name)


def make_fake_cupy() -> tuple[types.ModuleType, types.ModuleType]:
    cp = types.ModuleType("cupy")
    cp.__dict__["__getattr__"] = lambda name: _numpy_attr(name)
    cp.ndarray = FakeArray
    cp.asarray = lambda x, dtype=None: FakeArray(np.array(_unwrap(x), dtype=dtype))
    cp.array = cp.asarray
    cp.asnumpy = lambda x: x.get() if isinstance(x, FakeArray) else np.asarray(x)
    cp.RawModule = FakeRawModule
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"Fake GPU", "multiProcessorCount": 4})
    device = types.SimpleNamespace(id=0, compute_capability="80")
    cp.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda *a: device)
    cpx = types.ModuleType("cupyx")
    special = types.SimpleNamespace(erf=lambda x: _wrap(np.vectorize(math.erf)(_unwrap(x))))
    cpx.scipy = types.SimpleNamespace(special=special)
    cpx.scatter_add = lambda a, idx, v: np.add.at(a._a, _unwrap(idx), _unwrap(v))
    return cp, cpx


def _numpy_attr(name: str) -> Any:
    obj = getattr(np, name)
    if isinstance(obj, type) or not callable(obj):
        return obj  # dtypes, constants
    return lambda *a, **k: _wrap(obj(*_unwrap(a), **_unwrap(k)))


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch):
    cp, cpx = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupyx", cpx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cpx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cpx.scipy.special)
    monkeypatch.setenv("MINITL_KERNELS", "reference")
    monkeypatch.setenv("MINITL_CUDA_AUTOTUNE", "0")
    FakeRawModule.built.clear()
    backend.reset_backends()
    cuda_src.clear_cache()
    yield cp
    backend.reset_backends()
    cuda_src.clear_cache()


@pytest.fixture
def no_cupy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    backend.reset_backends()
    yield
    backend.reset_backends()


# ---- errors without CuPy -------------------------------------------------------------------------


def test_to_cuda_without_cupy_says_what_is_missing(no_cupy: None) -> None:
    with pytest.raises(RuntimeError, match=r"needs CuPy and an NVIDIA GPU.*pip install"):
        mt.tensor([1.0, 2.0]).to("cuda")
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        mt.zeros(3, device="cuda")
    with pytest.raises(RuntimeError, match="CuPy"):
        nn.Linear(2, 2).to("cuda")


def test_cupy_without_gpu_says_so(fake_cupy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
        mt.ones(2, device="cuda")

    def broken() -> int:
        raise OSError("CUDA driver version is insufficient")

    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", broken)
    backend.reset_backends()
    with pytest.raises(RuntimeError, match="cannot reach a GPU.*insufficient"):
        mt.ones(2, device="cuda")


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        mt.zeros(2, device="tpu")


# ---- the device model on the fake GPU ------------------------------------------------------------


def test_to_cuda_and_back(fake_cupy: Any) -> None:
    x = mt.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = x.to("cuda")
    assert y.device == "cuda" and y.device.type == "cuda" and isinstance(y.data, FakeArray)
    assert x.device == "cpu"
    back = y.cpu()
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    assert y.to("cuda") is y  # no copy when nothing changes
    with pytest.raises(TypeError, match="cpu"):
        y.numpy()  # an explicit .cpu() is the only way to the host
    assert mt.zeros(2, 3, device="cuda").device == "cuda"
    assert mt.randn(4, device="cuda", requires_grad=True).device == "cuda"
    assert mt.tensor([1, 2], device="cuda").dtype == np.int64


def test_mixing_devices_names_both(fake_cupy: Any) -> None:
    a = mt.ones(3)
    b = mt.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match=r"same device.*(cpu.*cuda|cuda.*cpu)"):
        a + b
    with pytest.raises(RuntimeError, match=r"(cpu.*cuda|cuda.*cpu)"):
        F.linear(mt.ones(2, 3, device="cuda"), mt.ones(4, 3))


def test_gradient_crosses_the_device_boundary(fake_cupy: Any) -> None:
    x = mt.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = (x.to("cuda") * 2).sum()
    y.backward()
    assert x.grad is not None and x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_module_to_moves_parameters_and_buffers(fake_cupy: Any) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    bn = nn.BatchNorm2d(2)
    params = list(model.parameters()) + list(bn.parameters())
    before = [p.numpy().copy() for p in params]
    model.to("cuda")
    bn.to("cuda")
    assert all(p.device == "cuda" for p in params)
    assert all(isinstance(b.data, FakeArray) for b in bn.buffers())
    assert list(model.parameters()) + list(bn.parameters()) == params  # same Tensor objects
    model.cpu()
    bn.to("cpu")
    assert all(p.device == "cpu" for p in params)
    assert all(isinstance(b.data, np.ndarray) for b in bn.buffers())
    for p, want in zip(params, before):
        np.testing.assert_array_equal(p.numpy(), want)


def test_whole_model_parity_cpu_vs_cuda(fake_cupy: Any) -> None:
    """One training step of a small MLP classifier on cpu and on the (fake) GPU agree."""
    def make() -> nn.Module:
        mt.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((5, 6)).astype(np.float32)
    t_np = np.array([0, 2, 1, 2, 0])
    results = []
    for device in ("cpu", "cuda"):
        model = make().to(device)
        opt = mt.optim.AdamW(model.parameters(), lr=1e-2)
        x, t = mt.tensor(x_np, device=device), mt.tensor(t_np, device=device)
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        results.append((float(loss.cpu().item()),
                        [p.cpu().numpy().copy() for p in model.parameters()]))
    (loss_cpu, p_cpu), (loss_gpu, p_gpu) = results
    assert loss_cpu == pytest.approx(loss_gpu, rel=1e-5)
    for a, b in zip(p_cpu, p_gpu):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_backend_reports_cupy_paths(fake_cupy: Any) -> None:
    b = backend.get_backend("cuda")
    assert b.xp is fake_cupy and b.device == "cuda"
    assert set(b.paths) == set(backend.KERNELS)
    assert set(b.paths.values()) == {"cupy"}  # MINITL_KERNELS=reference


# ---- the CUDA kernels' plumbing (no GPU: compiled kernels raise) ---------------------------------


def test_raw_module_gets_inlined_source_and_options(fake_cupy: Any) -> None:
    expr = tune.sgemm_expr("128x128x16", False, True)
    cuda_src.load_module("sgemm.cu", (expr,))
    (built,) = FakeRawModule.built
    assert built["name_expressions"] == (expr,)
    assert "-std=c++17" in built["options"] and "-DMINITL_NO_INSTANTIATIONS" in built["options"]
    code = built["code"]
    assert not re.search(r'#\s*include\s*"', code)  # headers pasted in: cache keys see them
    assert "MINITL_DEVICE float warp_sum" in code and "struct SimtTile" in code
    assert code.count("MINITL_DEVICE float warp_sum") == 1  # common.cuh pasted once
    cuda_src.load_module("sgemm.cu", (expr,))
    assert len(FakeRawModule.built) == 1  # memoized


def test_failing_kernels_fall_back_with_a_warning(fake_cupy: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITL_KERNELS", "auto")
    backend.reset_backends()
    from minitl.backend import cuda

    monkeypatch.setattr(cuda, "_verified", {})
    monkeypatch.setattr(cuda, "_info", {"name": "Fake GPU", "cc": 80, "sms": 4})
    b = backend.get_backend("cuda")
    assert b.paths["gemm"] == "cuda" and b.paths["layernorm_fwd"] == "cuda"
    rng = np.random.default_rng(1)
    a_np, w_np = rng.standard_normal((7, 5)).astype(np.float32), rng.standard_normal(
        (3, 5)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="not using it"):
        got = b.gemm(fake_cupy.asarray(a_np), fake_cupy.asarray(w_np), trans_b=True)
    np.testing.assert_allclose(got.get(), a_np @ w_np.T, rtol=1e-5)
    x = fake_cupy.asarray(a_np)
    with pytest.warns(RuntimeWarning):
        y, _, _ = b.layernorm_fwd(x, None, None, 1e-5)
    np.testing.assert_allclose(y.get().mean(axis=1), 0, atol=1e-5)
    assert any(m["code"] and "layernorm_fwd_f32" in m["code"] for m in FakeRawModule.built)


def test_precision_setting_is_validated() -> None:
    from minitl.backend import cuda

    with pytest.raises(ValueError, match="highest"):
        cuda.set_matmul_precision("fp8")
    cuda.set_matmul_precision("high")
    assert cuda.matmul_precision() == "high"
    cuda.set_matmul_precision("highest")


# ---- sources, tables, packaging ------------------------------------------------------------------


def test_sources_are_found_and_overridable(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    d = cuda_src.source_dir()
    assert (d / "sgemm.cu").is_file() and (d / "common.cuh").is_file()
    (tmp_path / "sgemm.cu").write_text("// stand-in\n")
    monkeypatch.setenv(cuda_src.ENV_VAR, str(tmp_path))
    assert cuda_src.source_dir() == tmp_path
    monkeypatch.setattr(cuda_src, "candidate_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="MINITL_CUDA_SRC"):
        cuda_src.source_dir()


def _macro_args(text: str, macro: str) -> list[tuple[str, ...]]:
    return [tuple(a.strip() for a in m.group(1).split(","))
            for m in re.finditer(rf"^\s*{macro}\(([^)]*)\)", text, re.MULTILINE)
            if not m.group(1).strip().startswith("BM")]


def test_python_tile_tables_match_the_cu_instantiations() -> None:
    d = cuda_src.source_dir()
    sg = (d / "sgemm.cu").read_text()
    tiles = {tuple(int(v) for v in args[:8]) for args in _macro_args(sg, "MINITL_SGEMM")}
    assert tiles == set(tune.SIMT_TILES.values())
    assert {args for args in _macro_args(sg, "MINITL_SGEMM_TILES")} == {
        (a, b) for a in ("false", "true") for b in ("false", "true")}
    lo = (d / "lora.cu").read_text()
    fused = {(tuple(int(v) for v in a[:8]), int(a[8])) for a in _macro_args(lo, "MINITL_LORA_FWD")}
    assert fused == {(tune.SIMT_TILES[t], r) for t in tune.LORA_TILES for r in tune.LORA_RANKS}
    assert {int(a[0]) for a in _macro_args(lo, "MINITL_LORA_BWD")} == set(tune.LORA_BWD_RANKS)
    mm = (d / "gemm_mma.cu").read_text()
    assert {tuple(int(v) for v in a[:5]) for a in _macro_args(mm, "MINITL_MMA")} == set(
        tune.MMA_TILES.values())
    wg = (d / "gemm_wgmma.cu").read_text()
    assert {int(a[0]) for a in _macro_args(wg, "MINITL_WGMMA")} == {tune.WGMMA_STAGES}


def test_every_kernel_file_names_its_reference_and_bound() -> None:
    for f in sorted(cuda_src.source_dir().glob("*.cu")):
        head = f.read_text()[:3000]
        assert "Reference" in head or "reference" in head, f.name
        assert "Bound" in head or "bound" in head, f.name


def test_split_k_and_shape_classes() -> None:
    assert tune.split_k(1000, 4096, 16, 132) == (1, 4096)  # enough CTAs already
    slices, per = tune.split_k(2, 8192, 16, 132)
    assert slices > 1 and per % 16 == 0 and slices * per >= 8192
    assert tune.shape_class(4096, 4096, 4096) == "lll"
    assert tune.simt_candidates(16, 4096, 4096)[0] == "32x128x16"
    assert tune.rank_tile(8) == 16 and tune.rank_tile(64) == 64 and tune.rank_tile(65) is None


def test_autotuner_remembers_and_persists(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITL_CUDA_AUTOTUNE", "1")
    calls: list[str] = []

    def bench(c: str) -> float:
        calls.append(c)
        return {"a": 2.0, "b": 1.0, "c": float("inf")}[c]

    t = tune.Autotuner("Fake GPU", path=tmp_path / "tune.json")
    assert t.choose("k", ["a", "b", "c"], bench) == "b"
    assert t.choose("k", ["a", "b", "c"], bench) == "b" and len(calls) == 3
    assert tune.Autotuner("Fake GPU", path=tmp_path / "tune.json").choices == {"k": "b"}
    monkeypatch.setenv("MINITL_CUDA_AUTOTUNE", "0")
    assert tune.Autotuner("x", path=tmp_path / "other.json").choose("k", ["a", "b"], bench) == "a"
