"""Bad input to the command line: every value a user can get wrong stops the command with
one line naming the problem (argparse's usage line first for flags) and a non-zero exit
status, never a traceback, a silent wrong answer or a lost result; genuine bugs keep their
traceback. In-process where possible; the few subprocesses run tiny models for a few steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minitl as mt
from minitl.cli import main, run_command
from minitl.cli.args import (
    UsageError,
    UserError,
    check_output_dir,
    check_output_file,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
    user_errors,
)
from minitl.train import NonFiniteLossError

ROOT = Path(mt.__file__).resolve().parents[1]


# ---- validators -------------------------------------------------------------------------------

def _parse(kind: object, text: str) -> object:
    p = argparse.ArgumentParser(prog="minitl x")
    p.add_argument("--v", type=kind)
    return p.parse_args(["--v", text]).v


@pytest.mark.parametrize(("kind", "good", "bad"), [
    (positive_int, {"1": 1, "600": 600}, ["0", "-1", "1.5", "x", ""]),
    (nonnegative_int, {"0": 0, "7": 7}, ["-1", "nan"]),
    (positive_float, {"1e-3": 1e-3, "2": 2.0}, ["0", "-0.001", "inf", "nan", "x"]),
    (probability, {"0": 0.0, "0.1": 0.1, "0.999": 0.999}, ["1", "1.5", "-0.1", "nan"]),
])
def test_validators_accept_their_range_and_refuse_the_rest(
        kind: object, good: dict[str, object], bad: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    for text, value in good.items():
        assert _parse(kind, text) == value
    for text in bad:
        with pytest.raises(SystemExit) as info:
            _parse(kind, text)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("minitl x: error: argument --v: "), err
        assert repr(text) in err[-1] and "Traceback" not in "\n".join(err)


def test_output_path_checks(tmp_path: Path) -> None:
    check_output_file(tmp_path / "new" / "deeper" / "w.safetensors")  # creatable: fine
    check_output_dir(tmp_path / "new" / "dir")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is a directory"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        check_output_file(a_file / "w.safetensors", "--out")
    with pytest.raises(UsageError, match="expected a directory"):
        check_output_dir(a_file, "--out")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        check_output_dir(a_file / "sub", "--out")
    assert not (tmp_path / "new").exists()  # checking creates nothing


# ---- the error mechanism ----------------------------------------------------------------------

def _raiser(error: BaseException):  # type: ignore[no-untyped-def]
    def run(_: argparse.Namespace) -> int:
        raise error
    return run


@pytest.mark.parametrize(("error", "code", "text"), [
    (UsageError("--labels must be at least 2"), 2, "--labels must be at least 2"),
    (UserError("the disk is full"), 1, "the disk is full"),
    (NonFiniteLossError(7, float("nan")), 1, "loss became nan at step 7"),
    (FileNotFoundError(2, "No such file or directory", "x.txt"), 1,
     "No such file or directory: 'x.txt'"),
    (IsADirectoryError(21, "Is a directory", "out"), 1, "Is a directory: 'out'"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_user_errors_are_one_line(error: BaseException, code: int, text: str,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINITL_DEBUG", raising=False)
    assert run_command("minitl demo", _raiser(error), argparse.Namespace()) == code
    err = capsys.readouterr().err
    assert err.startswith(f"minitl demo: error: {text}") and err.count("\n") == 1, err


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("k"), ZeroDivisionError(),
                                   TypeError("x"), OSError("no path")])
def test_bugs_keep_their_traceback(error: BaseException,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINITL_DEBUG", raising=False)
    with pytest.raises(type(error)):
        run_command("minitl demo", _raiser(error), argparse.Namespace())


def test_minitl_debug_shows_every_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITL_DEBUG", "1")
    with pytest.raises(UsageError):
        run_command("minitl demo", _raiser(UsageError("x")), argparse.Namespace())


def test_user_errors_marks_a_block_as_reading_user_input() -> None:
    with pytest.raises(UsageError, match=r"^--data: no such corpus$") as info:
        with user_errors(ValueError, prefix="--data"):
            raise ValueError("no such corpus")
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(UserError, match="^'k'$") as other:
        with user_errors(KeyError, usage=False):
            raise KeyError("'k'")
    assert not isinstance(other.value, UsageError)
    with pytest.raises(TypeError):  # not listed: a bug, left alone
        with user_errors(ValueError):
            raise TypeError("bug")


def test_subprocess_one_line_and_exit_status(tmp_path: Path) -> None:
    """The installed entry point, end to end: an unusable --out is reported before any
    work, in one line, exit status 2."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "minitl.cli", "export", "--backbone", "none", "--adapter",
         "none", "--out", str(blocker)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MINITL_DEBUG": ""}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"minitl export: error: --out {str(blocker)!r} is a file; expected a directory"]


# ---- model configs ------------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "field", "value", "says"), [
    ("GPTConfig", "n_layer", -1, "n_layer must be an integer >= 1, got -1"),
    ("GPTConfig", "n_layer", "abc", "n_layer must be an integer >= 1, got 'abc'"),
    ("GPTConfig", "n_head", 0, "n_head must be an integer >= 1"),
    ("GPTConfig", "n_head", 3, "not a multiple of n_head"),
    ("GPTConfig", "dropout", 1.0, "dropout must be a finite number in [0, 1)"),
    ("GPTConfig", "layer_norm_eps", 0, "layer_norm_eps must be a finite number > 0"),
    ("GPTConfig", "activation", "swish", "activation must be one of"),
    ("GPTConfig", "bias", 1, "bias must be one of True, False"),
    ("BertConfig", "num_hidden_layers", True, "num_hidden_layers must be an integer >= 1"),
    ("BertConfig", "hidden_dropout_prob", float("nan"), "hidden_dropout_prob must be"),
    ("BertConfig", "attention_probs_dropout_prob", -0.1, "attention_probs_dropout_prob must"),
    ("BertConfig", "classifier_dropout", 2, "classifier_dropout must be"),
    ("BertConfig", "pad_token_id", 10**6, "pad_token_id 1000000 is not a token id"),
    ("BertConfig", "intermediate_size", 2.5, "intermediate_size must be an integer"),
    ("BertConfig", "initializer_range", float("inf"), "initializer_range must be"),
    ("ResNetConfig", "widths", [8, -1], "widths must be a list of integers >= 1"),
    ("ResNetConfig", "depths", "ab", "depths must be a list of integers >= 1"),
    ("ResNetConfig", "bn_momentum", 2, "bn_momentum must be a finite number in [0, 1]"),
    ("ResNetConfig", "num_classes", 0, "num_classes must be an integer >= 1"),
])
def test_every_config_field_is_checked(cls: str, field: str, value: object, says: str) -> None:
    config_cls = getattr(mt.models, cls)
    size = config_cls.sizes()[0]
    with pytest.raises(ValueError, match=f"^{cls}: .*") as info:
        config_cls.named(size, **{field: value})
    assert says in str(info.value)


def test_configs_keep_plain_python_types() -> None:
    import numpy as np

    c = mt.models.GPTConfig(vocab_size=np.int64(50), dropout=np.float32(0.25))
    assert type(c.vocab_size) is int and type(c.dropout) is float  # JSON-able in config.json
    with pytest.raises(TypeError, match="GPTConfig has no field 'nlayer'"):
        mt.models.GPTConfig.named("gpt-tiny", nlayer=2)
