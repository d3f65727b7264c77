"""Files crafted to exhaust memory or time: PyTorch pickles whose views expand far beyond
their bytes, PEFT adapters whose config lies about their weights or whose target patterns
backtrack, and the temporary files an interrupted save leaves behind."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_torch_pickle import build

from minitl.io import save_file, torch_pickle
from minitl.io.safetensors import remove_stale_temp_files
from minitl.io.torch_pickle import MAX_EXPANDED_ELEMENTS, MAX_EXTRA_BYTES, load_torch

# ---- torch pickles: one budget for the whole file --------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_many_expanded_views_cannot_demand_gigabytes(fmt: str) -> None:
    # 40 views of a 12-element float64 storage, each within the per-tensor cap but
    # 512 MiB once copied out: ~20 GiB from a file of a few KB
    side = 1 << 13
    assert side * side <= MAX_EXPANDED_ELEMENTS
    views = {f"w{i}": {"key": "0", "size": (side, side), "stride": (0, 0), "offset": i % 12}
             for i in range(40)}
    data = build(views, {"0": np.arange(12, dtype=np.float64)}, fmt)
    assert len(data) < 8192
    with pytest.raises(ValueError, match="beyond .* bytes"):
        load_torch(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_the_budget_is_total_not_per_tensor(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_pickle, "MAX_EXTRA_BYTES", 1000)
    base = np.arange(12, dtype=np.float32)  # 48 bytes
    one = {"key": "0", "size": (5, 12), "stride": (0, 1)}  # 240 bytes, 192 beyond the storage
    ok = load_torch(io.BytesIO(build({f"w{i}": {**one, "offset": 0} for i in range(4)},
                                     {"0": base}, fmt)))
    np.testing.assert_array_equal(ok["w3"], np.broadcast_to(base, (5, 12)))
    # identical views (tied weights) are one array and are charged once
    assert all(ok[k] is ok["w0"] for k in ok)
    distinct = {f"w{i}": {"key": "0", "size": (10, 6), "stride": (0, 1), "offset": i}
                for i in range(6)}  # 6 x 240 bytes > 48 + 1000
    with pytest.raises(ValueError, match="plus 1000 for expanded"):
        load_torch(io.BytesIO(build(distinct, {"0": base}, fmt)))
    fewer = dict(list(distinct.items())[:4])  # 4 x 240 = 960 <= 1048
    assert len(load_torch(io.BytesIO(build(fewer, {"0": base}, fmt)))) == 4


def test_plain_checkpoints_are_within_budget_whatever_their_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_pickle, "MAX_EXTRA_BYTES", 0)
    storages = {str(i): np.arange(1000 * (i + 1), dtype=np.float32) for i in range(3)}
    tensors = {f"t{i}": {"key": str(i), "size": (10, 100 * (i + 1))} for i in range(2)}
    # a storage split into disjoint views (q, k, v of one qkv weight) is within budget too
    tensors.update({f"part{j}": {"key": "2", "offset": 1000 * j, "size": (1000,)}
                    for j in range(3)})
    out = load_torch(io.BytesIO(build(tensors, storages, "zip")))
    np.testing.assert_array_equal(out["part2"], storages["2"][2000:])


def test_module_constants_keep_their_meaning() -> None:
    assert MAX_EXTRA_BYTES >= 4 * MAX_EXPANDED_ELEMENTS // 4  # one float32 expanded view fits
    assert "whole file" in (torch_pickle.__doc__ or "")


# ---- atomic saves: leftovers of killed writers -------------------------------------------------


def mt_save(path: Path) -> None:
    save_file({"w": np.ones(3, np.float32)}, path)

_KILLED_WRITER = """
import sys, time
from minitl.io.safetensors import atomic_write
def write(f):
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def _age(path: Path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_save_leaves_a_recognisable_temp_that_the_next_save_removes(
        tmp_path: Path) -> None:
    target = tmp_path / "checkpoint-0000010.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    (tmp,) = [p for p in tmp_path.iterdir()]
    assert tmp.name.startswith(".checkpoint-0000010.safetensors.minitl-")
    assert tmp.name.endswith(".tmp") and f"-{proc.pid}-" in tmp.name
    # while its writer lives, even an old temp file is left alone
    _age(tmp)
    mt_save(tmp_path / "other.safetensors")
    assert tmp.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tmp.exists() and not target.exists()  # what a kill leaves behind
    mt_save(tmp_path / "checkpoint-0000020.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000020.safetensors",
                                                          "other.safetensors"]


def test_cleanup_touches_nothing_but_stale_leftovers_of_its_own_pattern(tmp_path: Path) -> None:
    dead = _dead_pid()
    keep = [
        f".a.safetensors.minitl-{dead}-abc.tmp",  # random part of the wrong length
        f".a.safetensors.minitl-{dead}-abcdefgh.tmp.bak",
        f"a.safetensors.minitl-{dead}-abcdefgh.tmp",  # not hidden
        f".a.safetensors.{dead}-abcdefgh.tmp",  # no tag
        ".a.safetensors.abcdefgh.tmp",  # mkstemp's default shape: someone else's maybe
        "notes.tmp", ".checkpoint-1.tmp", "model.safetensors",
        f".b.safetensors.minitl-{os.getpid()}-abcdefgh.tmp",  # a live writer (us)
    ]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
        _age(tmp_path / name)
    recent = tmp_path / f".c.safetensors.minitl-{dead}-abcdefgh.tmp"
    recent.write_bytes(b"x")  # its writer is gone but it was touched just now
    a_dir = tmp_path / f".d.minitl-{dead}-abcdefgh.tmp"
    a_dir.mkdir()
    _age(a_dir)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    link = tmp_path / f".e.minitl-{dead}-abcdefgh.tmp"
    link.symlink_to(victim)
    _age(link)
    stale = tmp_path / f".f.safetensors.minitl-{dead}-a_c0e9gh.tmp"
    stale.write_bytes(b"x")
    _age(stale)
    assert remove_stale_temp_files(tmp_path) == [stale.name]
    assert victim.read_bytes() == b"keep me" and link.is_symlink() and a_dir.is_dir()
    assert all((tmp_path / n).exists() for n in keep) and recent.exists()


def test_long_target_names_still_save(tmp_path: Path) -> None:
    target = tmp_path / ("x" * 240 + ".st")
    mt_save(target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_tokenizer_and_config_files_get_the_umask_mode(tmp_path: Path) -> None:
    from minitl.data.tokenizers import CharTokenizer
    from minitl.data.tokenizers._files import atomic_write_text

    want = 0o666 & ~_umask()
    atomic_write_text(tmp_path / "plain.txt", "hello\n")
    tok = CharTokenizer.train(["abc"])
    tok.save(tmp_path / "char.json")
    for name in ("plain.txt", "char.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "u022.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "u022.txt").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["char.json", "plain.txt", "u022.txt"]
