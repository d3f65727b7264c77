"""backend/shape_checks.py: the operand checks csrc/bindings.cpp makes before a C++ kernel
runs, applied before every CUDA launch (the CUDA wrappers would read past a buffer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from minitl.backend import KERNELS, cuda, shape_checks
from minitl.backend.cpu import native_module


def r(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


T = np.array([0, 1, 2, 1, 0, 3])
GOOD: dict[str, tuple[Any, ...]] = {
    "gemm": (r(4, 5), r(5, 3)),
    "gemm_batched": (r(2, 4, 5), r(2, 5, 3)),
    "lora_linear_fwd": (r(6, 5), r(4, 5), r(4), r(2, 5), r(4, 2), 0.5),
    "lora_linear_bwd": (r(6, 4), r(6, 5), r(4, 5), r(2, 5), r(4, 2), r(6, 2), 0.5, (True,) * 5),
    "layernorm_fwd": (r(6, 8), r(8), r(8), 1e-5),
    "layernorm_bwd": (r(6, 8), r(6, 8), r(6, 1), r(6, 1), r(8), (True,) * 3),
    "softmax_xent_fwd": (r(6, 4), T, None, -100, 0.0),
    "softmax_xent_bwd": (r(6, 4), r(6), T, None, -100, 0.0, np.float32(1.0)),
    "col2im": (r(2, 3, 3, 3, 5, 5), (2, 3, 5, 5), (1, 1), (1, 1), (1, 1)),
    "col2im_cm": (r(3, 3, 3, 2, 5, 5), (2, 3, 5, 5), (1, 1), (1, 1), (1, 1)),
}
BAD: dict[str, list[tuple[Any, ...]]] = {
    "gemm": [(r(4, 5), r(4, 3)), (r(4, 5), r(5, 3), True), (r(2, 4, 5), r(5, 3))],
    "gemm_batched": [(r(2, 4, 5), r(3, 5, 3)), (r(2, 4, 5), r(2, 4, 3))],
    "lora_linear_fwd": [(r(6, 5), r(4, 5), r(3), r(2, 5), r(4, 2), 0.5),
                        (r(6, 5), r(4, 5), None, r(2, 6), r(4, 2), 0.5),
                        (r(6, 5), r(4, 5), None, r(2, 5), r(4, 3), 0.5)],
    "lora_linear_bwd": [(r(6, 3), r(6, 5), r(4, 5), r(2, 5), r(4, 2), r(6, 2), 0.5, (True,) * 5),
                        (r(6, 4), r(6, 5), r(4, 5), r(2, 5), r(4, 2), r(5, 2), 0.5, (True,) * 5),
                        (r(6, 4), r(6, 5), r(4, 5), r(2, 5), r(4, 2), r(6, 2), 0.5, (True,) * 4)],
    "layernorm_fwd": [(r(6, 8), r(7), None, 1e-5), (r(6, 8), None, r(9), 1e-5)],
    "layernorm_bwd": [(r(6, 7), r(6, 8), r(6, 1), r(6, 1), None, (True,) * 3),
                      (r(6, 8), r(6, 8), r(5, 1), r(6, 1), None, (True,) * 3)],
    "softmax_xent_fwd": [(r(6, 4), T[:5], None, -100, 0.0), (r(6, 4), T, r(3), -100, 0.0)],
    "softmax_xent_bwd": [(r(6, 4), r(5), T, None, -100, 0.0, np.float32(1.0)),
                         (r(6, 4), r(6), T, None, -100, 0.0, r(4))],
    "col2im": [(r(2, 3, 3, 3, 5, 5), (2, 4, 5, 5), (1, 1), (1, 1), (1, 1))],
    "col2im_cm": [(r(3, 3, 3, 2, 5, 5), (3, 3, 5, 5), (1, 1), (1, 1), (1, 1))],
}


def test_every_check_has_cases_and_names_a_kernel() -> None:
    assert set(shape_checks.CHECKS) == set(GOOD) == set(BAD)
    assert set(shape_checks.CHECKS) <= set(KERNELS)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_right_shapes_pass_wrong_ones_raise_naming_the_kernel(name: str) -> None:
    check = shape_checks.CHECKS[name]
    check(*GOOD[name])
    for args in BAD[name]:
        with pytest.raises(ValueError, match=name):
            check(*args)


@pytest.mark.skipif(native_module() is None, reason="minitl._C not built")
@pytest.mark.parametrize("name", ["gemm", "gemm_batched", "lora_linear_fwd", "lora_linear_bwd"])
def test_the_checks_agree_with_the_cpp_bindings(name: str) -> None:
    fn = getattr(native_module(), name)
    fn(*GOOD[name])
    for args in BAD[name]:
        with pytest.raises(ValueError, match=name):
            fn(*args)


def test_cuda_kernels_run_behind_the_checks() -> None:
    """make_kernels wraps minitl's CUDA kernels; a bad shape never reaches a launch (a
    stand-in kernel records whether it ran)."""
    kernels, paths = cuda.make_kernels(KERNELS, "auto")
    for name in shape_checks.CHECKS:
        if paths[name] != "cuda":
            continue
        assert kernels[name].__wrapped__ is not None
    ran = []
    wrapped = shape_checks.checked("gemm", lambda *a: ran.append(a))
    with pytest.raises(ValueError, match="do not align"):
        wrapped(r(4, 5), r(4, 3))
    assert not ran
    wrapped(r(4, 5), r(5, 3))
    assert len(ran) == 1
