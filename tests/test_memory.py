"""minitl.memory: glibc's malloc thresholds raised at import so a training step's freed
activations are reused instead of faulted in anew (MINITL_RETAIN_MEMORY=0 opts out)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import minitl as mt

glibc_only = pytest.mark.skipif(mt.memory._glibc_mallopt() is None, reason="glibc's mallopt only")

# A step's pattern: 40 arrays of 3 MiB made, written and freed, ten times; prints the minor
# page faults of the last five.
STEPS = textwrap.dedent("""
    import resource
    import numpy as np
    import minitl as mt
    def step():
        arrays = [np.full(3 << 18, 1.0, dtype=np.float32) for _ in range(40)]
        del arrays
    for _ in range(5):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(mt.memory.memory_retained(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def run_steps(setting: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MINITL_RETAIN_MEMORY": setting})
    assert out.returncode == 0, out.stderr
    retained, faults = out.stdout.split()
    return retained == "True", int(faults)


@glibc_only
def test_freed_arrays_are_reused_not_faulted_in_again() -> None:
    retained, faults = run_steps("1")
    kept_default, faults_default = run_steps("0")
    assert retained and not kept_default
    # 5 steps x 120 MiB: glibc's defaults give the heap back and fault it in again each step
    # (153,440 faults measured, 4 KiB pages); with the thresholds raised it stays (0).
    if faults_default < 20_000:  # e.g. transparent huge pages for every mapping: 2 MiB faults
        pytest.skip(f"glibc's defaults faulted only {faults_default} times here: nothing to cut")
    assert faults < faults_default / 20, (faults, faults_default)


def test_a_bad_setting_warns_and_leaves_malloc_alone() -> None:
    script = "import minitl; print(minitl.memory.memory_retained())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MINITL_RETAIN_MEMORY": "on"})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    assert "RuntimeWarning: MINITL_RETAIN_MEMORY must be 0" in out.stderr
    assert "got 'on'" in out.stderr


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": -1}, {"mmap_threshold": 64 << 20},
                                    {"trim_threshold": 1.5}, {"trim_threshold": True}])
def test_thresholds_out_of_range_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="retain_freed_memory: .* must be an integer"):
        mt.memory.retain_freed_memory(**kwargs)
