"""Hostile GGUF files: lying counts, lengths, dimensions, types and offsets, truncations and
random damage. Each gives a ValueError naming the problem, quickly and without allocating what
the header claims; random damage runs in a child process that must not die by a signal."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitl.io.gguf import read_gguf
from minitl.io.gguf_write import write_gguf


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, v: int) -> bytes:
    return s(key) + struct.pack("<II", 4, v)


def info(name: str, ne: list[int], ttype: int = 0, offset: int = 0) -> bytes:
    return s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + \
        struct.pack("<IQ", ttype, offset)


def gguf(kvs: list[bytes], infos: list[bytes], data: bytes = b"", n_tensors: int | None = None,
         n_kv: int | None = None, version: int = 3) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % 32) + data


def refuses(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=match) as err:
        read_gguf(p)
    assert str(p) in str(err.value)
    assert time.perf_counter() - t < 2.0


CASES = {
    "empty": (b"", "not a GGUF file"),
    "magic": (b"GGML" + b"\0" * 40, "not a GGUF file"),
    "version 1": (gguf([], [], version=1), "version 1 is not supported"),
    "big-endian": (gguf([], [], version=3 << 24), "big-endian"),
    "tensor count": (gguf([], [], n_tensors=1 << 62), "tensor count"),
    "kv count": (gguf([], [], n_kv=1 << 60), "count of 1152921504606846976"),
    "kv count past the end": (b"GGUF" + struct.pack("<IQQ", 3, 0, 3) + kv_u32("a", 1)
                              + kv_u32("b", 1) + s("c")[:-1], "truncated"),
    "key length": (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 63) + b"x" * 20,
                   "needs 9223372036854775808 bytes"),
    "value type": (gguf([s("k") + struct.pack("<I", 13) + b"\0" * 8], []), "unknown value type 13"),
    "array count": (gguf([s("k") + struct.pack("<IIQ", 9, 4, 1 << 61)], []), "cannot fit"),
    "string array count": (gguf([s("k") + struct.pack("<IIQ", 9, 8, 1 << 40)], []),
                           "cannot fit"),
    "array element type": (gguf([s("k") + struct.pack("<IIQ", 9, 77, 1)], []),
                           "unknown value type 77"),
    "deep arrays": (gguf([s("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 9
                          + struct.pack("<IQ", 4, 0)], []), "nested deeper"),
    "utf-8": (gguf([s("k") + struct.pack("<I", 8) + s(b"\xff\xfe")], []), "not valid UTF-8"),
    "duplicate key": (gguf([kv_u32("a", 1), kv_u32("a", 2)], []), "'a' appears twice"),
    "alignment": (gguf([kv_u32("general.alignment", 48)], []), "power of two"),
    "alignment zero": (gguf([kv_u32("general.alignment", 0)], []), "power of two"),
    "n_dims": (gguf([], [info("w", [4, 4, 4, 4, 4])]), "5 dimensions"),
    "no dims": (gguf([], [s("w") + struct.pack("<IIQ", 0, 0, 0)]), "0 dimensions"),
    "ggml type": (gguf([], [info("w", [4], 99)]), "unknown ggml type 99"),
    "block": (gguf([], [info("w", [40], 2)], b"\0" * 64), "whole number"),
    "offset alignment": (gguf([], [info("w", [4], 0, 3)], b"\0" * 64), "not a multiple"),
    "past the end": (gguf([], [info("w", [64, 64])], b"\0" * 1024), "runs past the end"),
    "huge dims": (gguf([], [info("w", [1 << 40, 1 << 40])], b"\0" * 64), "runs past the end"),
    "int64 dims": (gguf([], [info("w", [(1 << 64) - 1])], b"\0" * 64), "exceed int64"),
    "offset past the end": (gguf([], [info("w", [4], 0, 1 << 62)], b"\0" * 64),
                            "runs past the end"),
    "overlap": (gguf([], [info("a", [16]), info("b", [16], 0, 32)], b"\0" * 128), "overlap"),
    "duplicate tensor": (gguf([], [info("a", [8]), info("a", [8], 0, 32)], b"\0" * 64),
                         "'a' appears twice"),
    "truncated info": (gguf([kv_u32(f"pad{i}", 0) for i in range(3)], [info("w", [4])])[:-40],
                       "truncated"),
    "header past the end": (gguf([], [info("w", [4])]).rstrip(b"\0")[:-1] + b"\1",
                            "truncated|past the end"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_a_clear_error(tmp_path: Path, case: str) -> None:
    data, match = CASES[case]
    refuses(tmp_path, data, match)


def test_lying_counts_allocate_nothing_big(tmp_path: Path) -> None:
    cases = [gguf([s("k") + struct.pack("<IIQ", 9, 4, (1 << 26))], []),  # 256 MiB of u32
             gguf([], [info("w", [1 << 28])]),  # 1 GiB of float32
             gguf([s("k") + struct.pack("<IIQ", 9, 8, 1 << 24)], [])]
    tracemalloc.start()
    try:
        for data in cases:
            p = tmp_path / "lie.gguf"
            p.write_bytes(data)
            with pytest.raises(ValueError):
                read_gguf(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def _valid(tmp_path: Path) -> bytes:
    p = tmp_path / "ok.gguf"
    rng = np.random.default_rng(1)
    write_gguf(p, {"general.architecture": "llama", "n": 3, "t": ["a", "bb"], "f": 1.0},
               {"q": ("Q4_1", rng.standard_normal((2, 32))), "e": ("Q8_0", np.ones((1, 32))),
                "z": ("Q4_0", rng.standard_normal((1, 64))), "h": ("F16", np.ones(8))})
    return p.read_bytes()


def _read_all(path: Path) -> None:
    """Parse, then read every tensor: either works or raises ValueError."""
    f = read_gguf(path)
    for name in f.tensors:
        f.tensor(name)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_is_a_value_error(tmp_path: Path, data: st.DataObject) -> None:
    raw = bytearray(_valid(tmp_path))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)),
                               max_size=6))
    for at, b in flips:
        raw[at] = b
    p = tmp_path / "fuzz.gguf"
    p.write_bytes(bytes(raw[:cut] if data.draw(st.booleans()) else raw))
    try:
        _read_all(p)
    except ValueError:
        pass


_CHILD = r"""
import random, sys
from pathlib import Path
from minitl.io.gguf import read_gguf
base = Path(sys.argv[1]).read_bytes()
out = Path(sys.argv[2])
rng = random.Random(0)
for i in range(600):
    raw = bytearray(base)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(raw))
        # mostly hit the header, where counts and offsets live
        at = at if rng.random() < 0.3 else rng.randrange(min(len(raw), 400))
        raw[at] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    if rng.random() < 0.3:
        raw = raw[:rng.randrange(len(raw))]
    out.write_bytes(bytes(raw))
    try:
        f = read_gguf(out)
        for name in f.tensors:
            f.tensor(name)
    except ValueError:
        pass
print("ok")
"""


def test_damaged_files_never_kill_the_process(tmp_path: Path) -> None:
    base = tmp_path / "base.gguf"
    base.write_bytes(_valid(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(base), str(tmp_path / "m.gguf")],
                          check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    # a negative return code is death by a signal (SIGSEGV, SIGBUS): the bug itself
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "ok"
