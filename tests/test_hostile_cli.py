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

import numpy as np
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
    c = mt.models.GPTConfig(vocab_size=np.int64(50), dropout=np.float32(0.25))
    assert type(c.vocab_size) is int and type(c.dropout) is float  # JSON-able in config.json
    with pytest.raises(TypeError, match="GPTConfig has no field 'nlayer'"):
        mt.models.GPTConfig.named("gpt-tiny", nlayer=2)


# ---- minitl pretrain ----------------------------------------------------------------------------

TINY = ["pretrain", "--model", "gpt-tiny", "--set", "n_layer=1", "--set", "n_embd=16", "--set",
        "n_head=2", "--seq-len", "8", "--batch-size", "4", "--tokenizer", "char",
        "--eval-batches", "1", "--eval-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = "the cat sat on a mat and ran to the big red house where my hat is".split()
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, 6)) + "." for _ in range(200)) + "\n")
    return path


def pretrain(corpus: Path, out: Path, *extra: str) -> int:
    return main([*TINY, "--data", str(corpus), "--out", str(out), *extra])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("usage:")
           and not ln.startswith(" ")]
    assert len(err) == 1 and err[0].startswith("minitl pretrain: error: "), err
    return err[0].removeprefix("minitl pretrain: error: ")


@pytest.mark.parametrize(("flags", "says"), [
    (["--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got 'inf'"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["--epochs", "-1"], "argument --epochs: must be a finite number > 0"),
    (["--warmup-steps", "-3"], "argument --warmup-steps: must be an integer >= 0"),
    (["--grad-clip", "-1"], "argument --grad-clip: must be a finite number >= 0"),
    (["--keep-checkpoints", "-1"], "argument --keep-checkpoints: must be an integer >= 0"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--train-limit", "0"], "argument --train-limit: must be an integer >= 1"),
    (["--set", "n_layer=-1"], "--set: GPTConfig: n_layer must be an integer >= 1, got -1"),
    (["--set", "n_head=3"], "n_embd 16 is not a multiple of n_head 3"),
    (["--set", "dropout=1"], "dropout must be a finite number in [0, 1)"),
    (["--set", "nlayer=1"], "GPTConfig has no field 'nlayer'"),
    (["--set", "vocab_size=3"], "vocab_size is decided by the tokenizer"),
    (["--set", "n_layer"], "--set expects FIELD=VALUE"),
    (["--train-limit", "10"], "(--train-limit 10) gives 1 windows of 9 tokens, fewer than one "
                              "batch of 4"),
    (["--resume", "no-such.safetensors"], "--resume 'no-such.safetensors' does not exist"),
    (["--data-root", "/no/such/dir"], "--data-root '/no/such/dir' does not exist"),
])
def test_pretrain_refuses_bad_values_in_one_line(
        flags: list[str], says: str, corpus: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = pretrain(corpus, tmp_path / "w.safetensors", *flags)
    except SystemExit as e:  # argparse's own exit
        code = int(e.code or 0)
    assert code == 2
    assert says in one_error_line(capsys)
    assert not (tmp_path / "w.safetensors").exists()


def test_pretrain_checks_its_outputs_before_any_work(corpus: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, flags, says in [
            (tmp_path, [], "is a directory; expected a file name"),
            (blocker / "w.safetensors", [], f"{str(blocker)!r} is a file, not a directory"),
            (tmp_path / "w.safetensors", ["--log-dir", str(blocker)], "--log-dir"),
            (tmp_path / "w.safetensors", ["--checkpoint-every", "1", "--checkpoint-dir",
                                          str(blocker)], "--checkpoint-dir"),
            (corpus, [], "would overwrite --data")]:
        assert pretrain(corpus, out, *flags) == 2
        cap = capsys.readouterr()
        assert cap.out == ""  # not even the tokenizer was learnt
        assert says in cap.err, (says, cap.err)
    (tmp_path / "w.config.json").mkdir()  # a companion file's place taken by a directory
    assert pretrain(corpus, tmp_path / "w.safetensors") == 2
    assert "w.config.json' is a directory" in one_error_line(capsys)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_loss_stops_with_exit_1_and_writes_nothing(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.safetensors"
    assert pretrain(corpus, out, "--steps", "6", "--lr", "1e30", "--grad-clip", "0",
                    "--checkpoint-every", "1") == 1
    line = one_error_line(capsys)
    assert " became " in line and "at step" in line and "training stopped" in line
    assert not out.exists() and not (tmp_path / "w.config.json").exists()
    for f in (tmp_path / "w.checkpoints").glob("*.safetensors"):  # any checkpoint is finite
        assert all(np.isfinite(v.numpy()).all() for k, v in mt.load(f).items()
                   if k.startswith("model."))


def _run_a(corpus: Path, tmp_path: Path) -> Path:
    ckpt = tmp_path / "runA" / "ckpt"
    assert pretrain(corpus, tmp_path / "runA" / "w.safetensors", "--steps", "4",
                    "--checkpoint-every", "2", "--keep-checkpoints", "1", "--checkpoint-dir",
                    str(ckpt)) == 0
    assert sorted(os.listdir(ckpt)) == ["checkpoint-0000004.safetensors"]
    return ckpt / "checkpoint-0000004.safetensors"


def test_fork_resume_keeps_the_other_runs_checkpoint(corpus: Path, tmp_path: Path) -> None:
    """The reported case: `--out fork/x --resume runA/.../checkpoint` rotated run A's file
    away. Now the fork rotates its own files only."""
    a = _run_a(corpus, tmp_path)
    assert pretrain(corpus, tmp_path / "fork" / "x.safetensors", "--steps", "8",
                    "--checkpoint-every", "2", "--keep-checkpoints", "1", "--resume",
                    str(a)) == 0
    assert a.is_file()
    assert sorted(os.listdir(tmp_path / "fork" / "x.checkpoints")) == \
        ["checkpoint-0000008.safetensors"]


def test_resume_refuses_a_changed_lr(corpus: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    a = _run_a(corpus, tmp_path)
    capsys.readouterr()
    assert pretrain(corpus, tmp_path / "b.safetensors", "--steps", "6", "--resume", str(a),
                    "--lr", "0.01") == 2
    line = one_error_line(capsys)
    assert "--lr 0.01 differs from the 0.001 that checkpoint" in line
    assert "resume with --lr 0.001" in line
    assert pretrain(corpus, tmp_path / "b.safetensors", "--steps", "6", "--resume", str(a),
                    "--weight-decay", "0") == 2
    assert "--weight-decay 0 differs from the 0.1" in one_error_line(capsys)


def test_resume_from_damaged_or_foreign_files(corpus: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from minitl.train import load_state, save_state

    a = _run_a(corpus, tmp_path)
    capsys.readouterr()
    state = load_state(a)
    del state["model"]
    save_state(state, tmp_path / "no-model.safetensors")
    other = tmp_path / "not-ckpt.safetensors"
    mt.save({"w": mt.zeros(2)}, other)
    for path, says in [(tmp_path / "no-model.safetensors", "has no 'model' entry (not a "
                        "minitl training checkpoint"),
                       (other, "is not a minitl training checkpoint"),
                       (corpus, "invalid safetensors file")]:
        assert pretrain(corpus, tmp_path / "b.safetensors", "--steps", "6", "--resume",
                        str(path)) == 1
        line = one_error_line(capsys)
        assert str(path) in line and says in line, line
    # the checkpoint of a different model: its weights do not fit, and says so
    assert pretrain(corpus, tmp_path / "b.safetensors", "--steps", "6", "--resume", str(a),
                    "--set", "n_embd=32") == 1
    assert "weights do not fit this model" in one_error_line(capsys)


def test_bad_tokenizer_file_names_it(corpus: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert pretrain(corpus, tmp_path / "w.safetensors", "--tokenizer-file", str(corpus)) == 1
    assert f"{corpus}: not a saved char tokenizer" in one_error_line(capsys)


def test_bench_unknown_subject(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "no-such-subject"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("minitl bench: error: unknown subject(s) "
                                               "no-such-subject; available: ")


def test_pretrain_subprocess_nan_is_one_line_exit_1(corpus: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "minitl.cli", *TINY, "--data", str(corpus),
         "--out", str(tmp_path / "w.safetensors"), "--steps", "6", "--lr", "1e30",
         "--grad-clip", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MINITL_DEBUG": ""})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("minitl pretrain: error: ")
    assert "Traceback" not in proc.stderr and not (tmp_path / "w.safetensors").exists()


def test_export_never_overwrites_its_inputs(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for d in ("backbone", "adapter"):
        (tmp_path / d).mkdir()
    (tmp_path / "backbone" / "model.safetensors").write_text("precious")
    for flag in ("backbone", "adapter"):
        assert main(["export", "--backbone", str(tmp_path / "backbone"), "--adapter",
                     str(tmp_path / "adapter"), "--merge", "--out",
                     str(tmp_path / flag / ".")]) == 2
        assert f"is the --{flag} directory" in capsys.readouterr().err
    assert (tmp_path / "backbone" / "model.safetensors").read_text() == "precious"


def test_data_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe not utf-8\n" * 50)
    assert pretrain(bad, tmp_path / "w.safetensors") == 1
    assert f"{bad}: not UTF-8 text (invalid start byte at byte 5)" in one_error_line(capsys)


@pytest.mark.parametrize("var, value, says", [
    ("MINITL_CPU_ISA", "avx1024", "MINITL_CPU_ISA must be one of auto, avx512, avx2, generic"),
    ("MINITL_KERNELS", "fast", "MINITL_KERNELS must be auto or reference, got 'fast'"),
    ("MINITL_SHARE_BLAS_POOL", "yes", "MINITL_SHARE_BLAS_POOL must be 0 (numpy's OpenBLAS"),
    ("MINITL_RETAIN_MEMORY", "on", "MINITL_RETAIN_MEMORY must be 0 (malloc keeps glibc's"),
])
def test_a_misspelt_kernel_setting_is_one_usage_line(var: str, value: str, says: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(var, value)
    assert main(["bench", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minitl bench: error: ") and says in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
