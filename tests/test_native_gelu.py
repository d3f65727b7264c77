"""The vectorised C++ GELU (csrc/cpu/gelu.cpp) against the numpy reference (libm's erf, the
tanh form), forward and backward, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitl.backend import cpu, reference

pytestmark = pytest.mark.skipif(cpu.native_module() is None, reason="minitl._C not built")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), scale=st.sampled_from([0.5, 3.0, 12.0]),
       form=st.sampled_from(["none", "tanh"]), seed=st.integers(0, 2**16))
def test_gelu_matches_the_reference(n: int, scale: float, form: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    _C = cpu.native_module()
    y = _C.gelu_fwd(x, form == "none")
    dx = _C.gelu_bwd(g, x, form == "none")
    # against the reference in float64 (the float32 reference itself cancels in 1 + tanh u);
    # the kernel's erf is A&S 7.1.26 (|error| < 1.5e-7)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(y, reference.gelu_fwd(x64, form), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(dx, reference.gelu_bwd(g64, x64, form), rtol=2e-5, atol=2e-6)


def test_extreme_inputs_stay_finite_and_exact_in_the_tails() -> None:
    x = np.array([-1e30, -100.0, -20.0, -0.0, 0.0, 20.0, 100.0, 1e30], np.float32)
    _C = cpu.native_module()
    for exact in (True, False):
        y = _C.gelu_fwd(x, exact)
        assert np.all(np.isfinite(y))
        np.testing.assert_array_equal(y[[0, 1, 3, 4]], 0.0)
        np.testing.assert_array_equal(y[[5, 6, 7]], x[[5, 6, 7]])


def test_shapes_are_kept_and_bad_input_is_refused() -> None:
    _C = cpu.native_module()
    x = np.ones((3, 4, 5), np.float32)
    assert _C.gelu_fwd(x, True).shape == (3, 4, 5)
    assert _C.gelu_bwd(x, x, False).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="float32"):
        _C.gelu_fwd(x.astype(np.float64), True)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.gelu_fwd(x.transpose(2, 0, 1), True)
    with pytest.raises(ValueError, match="does not match"):
        _C.gelu_bwd(np.ones((3, 4), np.float32), np.ones((4, 3), np.float32), True)
    # the backend wrapper sends what the kernel does not take to the reference
    np.testing.assert_allclose(cpu.gelu_fwd(x.astype(np.float64), "none"),
                               reference.gelu_fwd(x.astype(np.float64), "none"))
