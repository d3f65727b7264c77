"""Test configuration: hypothesis profile, a fresh seed per test, and the op suites run on
every CPU kernel path.

The op and gradient-check modules (tests/test_ops_*.py, test_tensor.py) run twice: with
MINITL_KERNELS=auto (the native C++ and numba kernels where built) and with
MINITL_KERNELS=reference (numpy alone), as minitorch runs each test on each backend. Their
ids say which (`[kernels=reference]`). The CUDA kernels have their own suite against the
same references (tests/test_cuda.py), which runs where a GPU is present.
"""

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

import minitl as mt
from minitl import backend

settings.register_profile("default", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

KERNEL_PATHS = ("auto", "reference")
OP_SUITES = ("test_ops_", "test_tensor")


@pytest.fixture(autouse=True)
def _seed() -> None:
    mt.manual_seed(0)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.startswith(OP_SUITES):
        metafunc.fixturenames.append("kernel_path")
        metafunc.parametrize("kernel_path", KERNEL_PATHS, indirect=True, scope="module",
                             ids=[f"kernels={k}" for k in KERNEL_PATHS])


@pytest.fixture(scope="module")
def kernel_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """MINITL_KERNELS for a whole module (module scope: hypothesis refuses function-scoped
    fixtures around @given tests), restored after."""
    before = os.environ.get("MINITL_KERNELS")
    os.environ["MINITL_KERNELS"] = request.param
    backend.reset_backends()
    yield request.param
    if before is None:
        os.environ.pop("MINITL_KERNELS", None)
    else:
        os.environ["MINITL_KERNELS"] = before
    backend.reset_backends()
