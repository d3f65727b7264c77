"""Training checkpoints that are not what they claim: rotation deletes only the files a
`Checkpoint` callback may own (its own directory, its own file names), whatever the restored
state lists; a state lacking entries says which and that the file is no minitl training
checkpoint; a nan loss or weights stop training before a checkpoint or result is written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl.data import DataLoader, TensorDataset
from minitl.optim import SGD, AdamW
from minitl.train import Checkpoint, NonFiniteLossError, Trainer, load_state, save_state


def data(n: int = 48) -> TensorDataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return TensorDataset(mt.tensor(x), mt.tensor((x[:, 0] > 0).astype(np.int64)))


def trainer(ckpt: Checkpoint | None, steps: int, lr: float = 1e-2, **kw: Any) -> Trainer:
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return Trainer(model, AdamW(model.parameters(), lr=lr), F.cross_entropy,
                   DataLoader(data(), 8, shuffle=True, seed=0), max_steps=steps,
                   callbacks=[] if ckpt is None else [ckpt], progress=False, **kw)


def files(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# ---- rotation -----------------------------------------------------------------------------------

def test_fork_from_another_runs_checkpoint_leaves_its_files_alone(tmp_path: Path) -> None:
    """Run B resumes from run A's checkpoint into its own directory: rotation in B deletes
    B's older files only; every file of A survives."""
    a_dir, b_dir = tmp_path / "runA" / "ckpt", tmp_path / "fork" / "ckpt"
    trainer(Checkpoint(a_dir, every_n_steps=2, keep_last=2), steps=6).fit()
    assert files(a_dir) == ["checkpoint-0000004.safetensors", "checkpoint-0000006.safetensors"]
    b = trainer(Checkpoint(b_dir, every_n_steps=2, keep_last=1), steps=12)
    b.resume(a_dir / "checkpoint-0000004.safetensors")
    assert files(a_dir) == ["checkpoint-0000004.safetensors", "checkpoint-0000006.safetensors"]
    assert files(b_dir) == ["checkpoint-0000012.safetensors"]


def test_resume_in_the_same_directory_keeps_rotating(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    trainer(Checkpoint(d, every_n_steps=2, keep_last=2), steps=6).fit()
    again = trainer(Checkpoint(d, every_n_steps=2, keep_last=2), steps=10)
    again.resume(d / "checkpoint-0000006.safetensors")
    assert files(d) == ["checkpoint-0000008.safetensors", "checkpoint-0000010.safetensors"]


def _bait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str],
                                                                      list[Path]]:
    """A checkpoint directory and a list of paths a crafted state could name, each an
    existing file that must outlive any rotation."""
    run = tmp_path / "a" / "b"
    d = run / "ckpt"
    d.mkdir(parents=True)
    monkeypatch.chdir(run)
    name = "checkpoint-0000001.safetensors"
    victims = {
        "../../etc/x": tmp_path / "etc" / "x",  # relative to the working directory
        str(tmp_path / "abs" / name): tmp_path / "abs" / name,  # absolute, a checkpoint name
        f"ckpt/../../{name}": tmp_path / "a" / name,  # climbs out of dirpath
        f"ckpt/{name}/../../../{name}": tmp_path / "a" / name,
        "ckpt/notes.txt": d / "notes.txt",  # inside, but not a checkpoint name
        f"ckpt/linked/{name}": tmp_path / "outside" / name,  # through a symbolic link out
        f"ckpt/sub/{name}": d / "sub" / name,  # a subdirectory the pattern does not have
    }
    for path in victims.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("precious")
    (d / "linked").symlink_to(tmp_path / "outside")
    crafted = [*victims, str(d / "linked"), "", "\0", 7, None, ["x"]]
    return d, crafted, list(victims.values())  # type: ignore[list-item]


def test_crafted_state_cannot_name_a_file_to_delete(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    d, crafted, victims = _bait(tmp_path, monkeypatch)
    ckpt = Checkpoint("ckpt", every_n_steps=1, keep_last=1)
    ckpt.load_state_dict({"saved": crafted})
    assert ckpt.saved == []  # nothing it could name is one of this callback's files
    t = trainer(ckpt, steps=3)
    t.fit()
    assert all(v.read_text() == "precious" for v in victims)
    assert (d / "linked").is_symlink()
    assert sorted(p for p in files(d) if p.startswith("checkpoint")) == \
        ["checkpoint-0000003.safetensors"]


def test_crafted_checkpoint_file_on_resume(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bait inside a real checkpoint file that a Trainer resumes from."""
    d, crafted, victims = _bait(tmp_path, monkeypatch)
    source = trainer(Checkpoint("ckpt", every_n_steps=2), steps=2)
    source.fit()
    state = load_state(d / "checkpoint-0000002.safetensors")
    state["callbacks"][0]["state"]["saved"] += crafted  # its own entry, then the bait
    save_state(state, tmp_path / "crafted.safetensors")
    ckpt = Checkpoint("ckpt", every_n_steps=1, keep_last=1)
    trainer(ckpt, steps=5).resume(tmp_path / "crafted.safetensors")
    assert all(v.read_text() == "precious" for v in victims)
    # its own file from before the resume was rotated out (same directory, its own name)
    assert sorted(p for p in files(d) if p.startswith("checkpoint")) == \
        ["checkpoint-0000005.safetensors"]


def test_a_symbolic_link_in_the_directory_is_removed_not_followed(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    target = tmp_path / "elsewhere.safetensors"
    target.write_text("precious")
    (d / "checkpoint-0000001.safetensors").symlink_to(target)
    ckpt = Checkpoint(d, every_n_steps=1, keep_last=1)
    ckpt.load_state_dict({"saved": [str(d / "checkpoint-0000001.safetensors")]})
    trainer(ckpt, steps=2).fit()
    assert target.read_text() == "precious"
    assert files(d) == ["checkpoint-0000002.safetensors"]


def test_filename_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown field"):
        Checkpoint(tmp_path, every_n_steps=1, filename="ckpt-{name}.safetensors")


# ---- damaged states -----------------------------------------------------------------------------

@pytest.mark.parametrize(("drop", "named"), [
    (("model",), "'model'"), (("trainer", "step"), "'step'"), (("rng",), "'rng'"),
    (("callbacks",), "'callbacks'"), (("optimizer", "param_groups"), "'param_groups'")])
def test_state_lacking_an_entry_names_it(tmp_path: Path, drop: tuple[str, ...],
                                         named: str) -> None:
    t = trainer(None, steps=2)
    t.fit()
    state = t.state_dict()
    del (state if len(drop) == 1 else state[drop[0]])[drop[-1]]
    save_state(state, tmp_path / "bad.safetensors")
    fresh = trainer(None, steps=4)
    before = {k: v.numpy().copy() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(ValueError, match=f"bad.safetensors: .*{named}.*not a minitl "
                                         "training checkpoint"):
        fresh.load_checkpoint(tmp_path / "bad.safetensors")
    for k, v in fresh.model.state_dict().items():  # nothing changed before the check
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_damaged_checkpoint_files(tmp_path: Path) -> None:
    from minitl.io import save_file

    fresh = trainer(None, steps=2)
    arrays = {"w": np.zeros(2, np.float32)}
    cases = {
        "json": {"format": "minitl.trainer/1", "state": "{not json"},
        "array": {"format": "minitl.trainer/1", "state": '{"model": {"__array__": "gone"}}'},
        "list": {"format": "minitl.trainer/1", "state": "[1, 2]"},
        "format": {"format": "minitl.pretrained/1"},
    }
    for name, meta in cases.items():
        save_file(arrays, tmp_path / f"{name}.safetensors", metadata=meta)
        with pytest.raises(ValueError, match=f"{name}.safetensors: .*(not a minitl training "
                                             "checkpoint|damaged)"):
            fresh.load_checkpoint(tmp_path / f"{name}.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, I am not a checkpoint")
    with pytest.raises(ValueError, match="invalid safetensors file"):
        fresh.load_checkpoint(tmp_path / "text.safetensors")


# ---- non-finite values --------------------------------------------------------------------------

def test_nan_loss_stops_before_the_step(tmp_path: Path) -> None:
    t = trainer(Checkpoint(tmp_path, every_n_steps=1), steps=5)
    real = t.compute_loss
    calls = []

    def poisoned(batch: Any) -> Any:
        loss, logits, labels = real(batch)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), logits, labels

    t.compute_loss = poisoned  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError) as info:
        t.fit()
    assert (info.value.step, info.value.what) == (3, "loss") and math.isnan(info.value.loss)
    assert isinstance(info.value, FloatingPointError)
    assert t.step == 2 and files(tmp_path) == ["checkpoint-0000001.safetensors",
                                               "checkpoint-0000002.safetensors"]
    assert all(np.isfinite(p.numpy()).all() for p in t.model.parameters())


def test_infinite_lr_never_leaves_nan_weights_in_a_checkpoint(tmp_path: Path) -> None:
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    t = Trainer(model, SGD(model.parameters(), lr=math.inf), F.cross_entropy,
                DataLoader(data(), 8), max_steps=1,
                callbacks=[Checkpoint(tmp_path, every_n_steps=1)], progress=False)
    with pytest.raises(NonFiniteLossError, match="weights became"):
        t.fit()
    assert files(tmp_path) == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_gradient_norm_is_caught_when_clipping() -> None:
    t = trainer(None, steps=3, clip_grad_norm=1.0)
    real = t.compute_loss

    def finite_loss_nan_gradient(batch: Any) -> Any:
        loss, logits, labels = real(batch)
        w = next(iter(t.model.parameters()))
        return loss + (w.sum() * 0).sqrt(), logits, labels  # d sqrt(0) = inf, times 0: nan

    t.compute_loss = finite_loss_nan_gradient  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError, match="gradient norm became nan at step 1"):
        t.fit()
    assert all(np.isfinite(p.numpy()).all() for p in t.model.parameters())
