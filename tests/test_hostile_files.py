"""Files crafted to exhaust memory or time: PyTorch pickles whose views expand far beyond
their bytes, PEFT adapters whose config lies about their weights or whose target patterns
backtrack, and the temporary files an interrupted save leaves behind."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


# ---- PEFT adapters: checked against the header and the model before any allocation ----------

CFG = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
       "intermediate_size": 64, "max_position_embeddings": 40}


@pytest.fixture(scope="module")
def peft_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from minitl import transfer as tl
    from minitl.io.peft import save_peft_adapter
    from minitl.models import BertConfig
    from minitl.models.bert import BertForSequenceClassification

    root = tmp_path_factory.mktemp("peft")
    BertForSequenceClassification(BertConfig(**CFG), num_labels=3).save_pretrained(root / "b")
    model = BertForSequenceClassification.from_pretrained(root / "b", num_labels=3)
    tl.apply_lora(model, tl.LoRAConfig(r=4, alpha=8, target=("query", "value"),
                                       modules_to_save=("classifier",)))
    save_peft_adapter(model, root / "good")
    return root / "b", root / "good"


def _variant(peft_dirs: tuple[Path, Path], tmp_path: Path, config: dict[str, Any] | None = None,
             tensors: dict[str, np.ndarray] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the good adapter with config fields replaced and tensors added/dropped."""
    from minitl.io import load_file
    from minitl.io.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    good = peft_dirs[1]
    out = tmp_path / "adapter"
    out.mkdir()
    cfg = json.loads((good / ADAPTER_CONFIG).read_text())
    cfg.update(config or {})
    (out / ADAPTER_CONFIG).write_text(json.dumps(cfg))
    arrays = {k: v for k, v in load_file(good / ADAPTER_WEIGHTS).items() if k not in drop}
    arrays.update(tensors or {})
    save_file(arrays, out / ADAPTER_WEIGHTS)
    return out


def _load_into_fresh(peft_dirs: tuple[Path, Path], adapter: Path) -> Any:
    from minitl.io.peft import load_peft_adapter
    from minitl.models.bert import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(peft_dirs[0], num_labels=3)
    return load_peft_adapter(model, adapter)


Q = "base_model.model.bert.encoder.layer.0.attention.self.query"


def test_a_huge_r_fails_before_allocating(peft_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    import tracemalloc

    adapter = _variant(peft_dirs, tmp_path, {"r": 65536})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"not a LoRA factor of rank r=65536"):
            _load_into_fresh(peft_dirs, adapter)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the backbone itself is ~0.5 MB; r=65536 factors for 4 layers would be ~70 MB
    assert peak < 8 << 20


@pytest.mark.parametrize("config, match", [
    ({"r": 0}, "r must be a positive integer"),
    ({"r": "8"}, "r must be a positive integer"),
    ({"r": True}, "r must be a positive integer"),
    ({"r": 4.5}, "r must be a positive integer"),
    ({"lora_alpha": "8"}, "lora_alpha must be a positive number"),
    ({"lora_alpha": float("nan")}, "lora_alpha must be a positive number"),
    ({"lora_dropout": 1.5}, "lora_dropout must be a number in"),
    ({"target_modules": 5}, "target_modules must be a list"),
    ({"target_modules": ["query"] * 20_000}, "at most 10000"),
    ({"target_modules": ["q" * 5000]}, "at most 1000"),
    ({"target_modules": "(?=query)"}, "lookarounds"),
    ({"target_modules": r"(a)\1"}, "backreferences"),
    ({"target_modules": "(.{0,100}){0,300}"}, "too large"),
    ({"modules_to_save": "classifier"}, "modules_to_save must be a list"),
])
def test_config_fields_are_checked(peft_dirs: tuple[Path, Path], tmp_path: Path,
                                   config: dict[str, Any], match: str) -> None:
    from minitl.io.peft import read_peft_config

    adapter = _variant(peft_dirs, tmp_path, config)
    with pytest.raises(ValueError, match=match):
        read_peft_config(adapter)


@pytest.mark.parametrize("tensors, drop, match", [
    ({"lora_A.weight": np.zeros((4, 32), np.float32)}, (), "not named base_model.model"),
    ({Q + ".lora_A.weight": np.zeros((4, 32), np.int32)}, (), "floating-point"),
    ({"base_model.model.classifier.weight": np.zeros((10**9, 0), np.float32)}, (),
     "non-empty"),
    ({}, (Q + ".lora_B.weight",), "lora_B.weight is missing"),
    ({Q + ".lora_A.weight": np.zeros((4, 31), np.float32)}, (), "model's layer need"),
    ({Q.replace("query", "key") + ".lora_A.weight": np.zeros((4, 32), np.float32),
      Q.replace("query", "key") + ".lora_B.weight": np.zeros((32, 4), np.float32)}, (),
     "names neither a LoRA factor of a targeted layer"),
    ({}, (Q + ".lora_A.weight", Q + ".lora_B.weight"), "lacks 2 LoRA factors"),
])
def test_weights_are_checked_against_config_and_model(
        peft_dirs: tuple[Path, Path], tmp_path: Path, tensors: dict[str, np.ndarray],
        drop: tuple[str, ...], match: str) -> None:
    adapter = _variant(peft_dirs, tmp_path, tensors=tensors, drop=drop)
    with pytest.raises(ValueError, match=match):
        _load_into_fresh(peft_dirs, adapter)


def test_export_of_a_head_claiming_a_billion_labels_is_one_line(
        peft_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from minitl.cli import main

    adapter = _variant(peft_dirs, tmp_path, tensors={
        "base_model.model.classifier.weight": np.zeros((10**9, 0), np.float32)})
    assert main(["export", "--backbone", str(peft_dirs[0]), "--adapter", str(adapter),
                 "--merge", "--out", str(tmp_path / "out")]) == 1
    assert "non-empty" in capsys.readouterr().err


HOSTILE_REGEXES = ["(.*.*)*x", "(a|a)*b", "(x+x+)+y", ".*" * 12 + "!", "(.*a){12}",
                   "((b|e|r|t|.)+)+Z", r"(\w+\.?)+$!"]


@pytest.mark.parametrize("regex", HOSTILE_REGEXES)
def test_backtracking_regexes_finish_fast(peft_dirs: tuple[Path, Path], tmp_path: Path,
                                          regex: str) -> None:
    adapter = _variant(peft_dirs, tmp_path, {"target_modules": regex})
    start = time.perf_counter()
    with pytest.raises(ValueError, match="matches no Linear or Conv2d"):
        _load_into_fresh(peft_dirs, adapter)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("targets", [r".*\.(query|value)", r"bert\..*self\.(query|value)$",
                                     ["query", "value"], ["self.query", "attention.self.value"]])
def test_regex_and_list_targets_select_as_peft_does(peft_dirs: tuple[Path, Path],
                                                    tmp_path: Path, targets: Any) -> None:
    from minitl.transfer.lora import LoRALayer

    model = _load_into_fresh(peft_dirs, _variant(peft_dirs, tmp_path,
                                                 {"target_modules": targets}))
    adapted = sorted(n for n, m in model.named_modules() if isinstance(m, LoRALayer))
    assert adapted == [f"bert.encoder.layer.{i}.attention.self.{w}" for i in range(2)
                       for w in ("query", "value")]


def test_list_entries_are_names_not_globs(peft_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    adapter = _variant(peft_dirs, tmp_path, {"target_modules": ["que*", "[qv]*"]})
    with pytest.raises(ValueError, match="matches no Linear"):
        _load_into_fresh(peft_dirs, adapter)


def test_glob_patterns_are_bounded() -> None:
    from minitl.io.patterns import glob_match
    from minitl.transfer.lora import module_matches

    start = time.perf_counter()
    assert not module_matches("a" * 200, ["*a" * 200 + "b", "*?*?" * 100 + "!"])
    assert time.perf_counter() - start < 1
    with pytest.raises(ValueError, match="at most 1000"):
        glob_match("x", "*" * 1001)


# ---- SafeRegex answers exactly as re.fullmatch -------------------------------------------------

_ATOMS = st.sampled_from(["a", "b", ".", r"\.", "[ab]", "[^a]", r"\d", r"\w", "[a-c.]", "(?i:A)",
                          "^", "$", r"\b", r"\B", r"\A", r"\Z"])


def _regex() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map(lambda t: f"(?:{t[0]}|{t[1]})"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "*?", "{2}", "{0,2}", "{1,}"]))
            .map(lambda t: f"({t[0]}){t[1]}"),
        )
    return st.recursive(_ATOMS, extend, max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(_regex(), st.lists(st.text("ab.1 _A\n", max_size=7), min_size=1, max_size=6))
def test_safe_regex_agrees_with_re(pattern: str, names: list[str]) -> None:
    from minitl.io.patterns import SafeRegex

    rx = SafeRegex(pattern)
    for name in names:
        assert rx.fullmatch(name) == bool(re.fullmatch(pattern, name)), (pattern, name)
