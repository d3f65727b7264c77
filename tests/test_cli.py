"""The command line: `minitl finetune` and `minitl demo` end to end on a tiny random BERT and
a tiny synthetic sentiment file (offline, seconds), and (slow) the real `minitl demo`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_recipes import tiny_assets

import minitl as mt
from minitl.cli import build_parser, demo, main
from minitl.recipes import text_classification as tc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return tiny_assets(tmp_path_factory.mktemp("cli"))


def finetune(tiny: dict[str, str], out: Path, strategy: str, *extra: str) -> int:
    return main(["finetune", "--backbone", tiny["backbone"], "--data", "movie-reviews",
                 "--data-root", tiny["data"], "--source-text", tiny["source"],
                 "--source-lines", "30", "--strategy", strategy, "--labels", "48",
                 "--eval-size", "24", "--max-steps", "6", "--quiet", "--out", str(out), *extra])


def test_unknown_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit):
        main(["nonsense"])


@pytest.mark.parametrize("command", ["demo", "finetune", "pretrain", "bench"])
def test_every_command_is_registered_with_help(command: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: minitl {command}" in capsys.readouterr().out


def test_finetune_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    for flag in ("--backbone", "--data", "--strategy", "--ewc", "--replay", "--labels", "--out"):
        assert flag in out
    assert "gradual" in out and "prompt" in out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    fin = sub.choices["finetune"]  # type: ignore[union-attr]
    assert all(a.help for a in fin._actions), "every flag has a help text"


def test_finetune_lora_writes_adapter_ledger_and_metrics(tiny: dict[str, str],
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert finetune(tiny, tmp_path, "lora") == 0
    assert "accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert metrics["strategy"] == "lora" and metrics["weights"] == "adapter_model.safetensors"
    assert 0 < metrics["trainable_pct"] < 100 and 0 <= metrics["accuracy"] <= 1
    assert [r["stage"] for r in ledger["records"]] == ["before", "after"]
    assert set(ledger["drift"]) == {"cosine", "knn"}
    sd = mt.load(tmp_path / "adapter_model.safetensors")
    assert sd and all("lora_" in k or k.endswith(("classifier.weight", "classifier.bias"))
                      for k in sd)
    # the PEFT adapter restores the fine-tuned model on a fresh base
    bb = tc.load_backbone(tiny["backbone"])
    model = mt.io.peft.load_peft_adapter(mt.models.SentenceClassifier(bb.encoder, 2),
                                         tmp_path)
    task = tc.load_task("movie-reviews", bb.tokenizer, 48, 24, root=tiny["data"])
    assert tc.evaluate(model, task.eval)["accuracy"] == pytest.approx(metrics["accuracy"])


def test_finetune_full_with_ewc_and_replay(tiny: dict[str, str],
                                           tmp_path: Path) -> None:
    assert finetune(tiny, tmp_path, "full", "--ewc", "5", "--replay", "0.2") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["weights"] == "model.safetensors"
    assert metrics["config"]["ewc"] == 5.0 and metrics["config"]["replay"] == 0.2
    sd = mt.load(tmp_path / "model.safetensors")
    assert "bert.encoder.layer.0.attention.self.query.weight" in sd and "classifier.weight" in sd


def test_finetune_head_saves_only_the_head(tiny: dict[str, str],
                                           tmp_path: Path) -> None:
    assert finetune(tiny, tmp_path, "head") == 0
    assert set(mt.load(tmp_path / "head.safetensors")) == {"classifier.weight",
                                                            "classifier.bias"}
    source = json.loads((tmp_path / "metrics.json").read_text())["source"]
    assert source["cosine"] == pytest.approx(1.0, abs=1e-5)  # a frozen encoder does not drift


def test_demo_machinery_runs_every_strategy(tiny: dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--backbone", tiny["backbone"], "--data-root", tiny["data"],
                 "--source-text", tiny["source"], "--labels", "32", "--eval-size", "16",
                 "--source-lines", "20", "--max-steps", "4", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for i, s in enumerate(demo.STRATEGIES, 1):
        assert f"[{i}/{len(demo.STRATEGIES)}] {s}" in text
        assert re.search(rf"^{s}\s+[01]\.\d{{3}}\s", text, re.MULTILINE), s
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["strategy"] for r in results] == list(demo.STRATEGIES)
    by = {r["strategy"]: r for r in results}
    assert by["full"]["trainable_pct"] == 100 and by["lora"]["trainable_pct"] < 100
    assert by["scratch"]["source"] == {} and "cosine" in by["lora"]["source"]
    plots = list(out.glob("accuracy.*"))
    assert len(plots) == 1 and plots[0].suffix in (".png", ".svg")
    assert (out / "table.md").read_text().startswith("| strategy")
    assert len(list(out.glob("ledger-*.json"))) == len(demo.STRATEGIES)
    assert "What this shows:" in text


@pytest.mark.slow
def test_real_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job: real all-MiniLM-L6-v2 weights, real movie-review sentences."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    acc = {m.group(1): float(m.group(2))
           for m in re.finditer(r"^([\w-]+)\s+([01]\.\d{3})\s", text, re.MULTILINE)}
    assert set(acc) == set(demo.STRATEGIES)
    assert acc["full"] > acc["scratch"] + 0.08, acc  # pretrained beats random init
    assert np.isfinite(list(acc.values())).all()


@pytest.mark.parametrize("device, expected", [("cpu", ["ops", "train_step", "gemm", "lora"]),
                                              ("cuda", ["cuda"])])
def test_bench_runs_the_subjects_of_its_device(device: str, expected: list[str],
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    ran: list[str] = []
    monkeypatch.setattr(subprocess, "call",
                        lambda cmd, **kw: ran.append(cmd[2].removeprefix("benchmarks.bench_")) or 0)
    assert main(["bench", "--device", device, "--no-save"]) == 0
    assert ran == expected


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minitl {mt.__version__}"


def test_version_matches_the_installed_metadata() -> None:
    from importlib import metadata
    try:
        installed = metadata.version("minitl")
    except metadata.PackageNotFoundError:
        pytest.skip("minitl is not installed, only on the path")
    assert mt.__version__ == installed


def test_bench_runs_from_an_installed_package(tmp_path: Path) -> None:
    """setup.py's build_py ships the bench subjects as minitl._benchmarks; `minitl bench`
    finds them there when no checkout is around, and they run as that package."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    lib, work = tmp_path / "lib", tmp_path / "elsewhere"
    work.mkdir()
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib",
                            str(lib)], cwd=root, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    assert (lib / "minitl" / "_benchmarks" / "bench_ops.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(lib)}
    listed = subprocess.run([sys.executable, "-c", "from minitl.cli import main; "
                             "raise SystemExit(main(['bench', '--list']))"], cwd=work,
                            env=env, capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert {"ops", "gemm", "lora", "train_step"} <= set(listed.stdout.split())
    helped = subprocess.run([sys.executable, "-m", "minitl._benchmarks.bench_gemm", "--help"],
                            cwd=work, env=env, capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "--quick" in helped.stdout, helped.stderr
