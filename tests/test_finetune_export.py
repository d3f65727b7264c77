"""A user's path: `minitl finetune` -> `minitl.load_finetuned` / `minitl predict` ->
`minitl export` -> `transformers`, on a tiny random BERT and a synthetic sentiment file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import requires_torch, torch
from test_recipes import tiny_assets

import minitl as mt
from minitl import transfer as tl
from minitl.cli import main
from minitl.models import SentenceClassifier
from minitl.recipes import text_classification as tc
from minitl.recipes.finetuned import load_finetuned, save_finetuned

STRATEGIES = ("lora", "full", "head", "adapter", "prompt", "bow", "zero-shot", "setfit-lora")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    paths = tiny_assets(tmp_path_factory.mktemp("export"))
    bb = tc.load_backbone(paths["backbone"])
    task = tc.load_task("movie-reviews", bb.tokenizer, 48, 24, root=paths["data"])
    return {**paths, "bb": bb, "task": task}


@pytest.fixture(scope="module")
def runs(tiny: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`minitl finetune` once per strategy the export tests read."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for strategy in ("lora", "full", "head", "bow"):
        out[strategy] = root / strategy
        lr = ["--lr", "0.02"] if strategy == "lora" else []  # a LoRA delta well above 1e-4
        assert main(["finetune", "--backbone", str(tiny["backbone"]), "--data",
                     "movie-reviews", "--data-root", str(tiny["data"]), "--source-text",
                     str(tiny["source"]), "--source-lines", "20", "--strategy", strategy,
                     "--labels", "48", "--eval-size", "24", "--max-steps", "6", "--quiet",
                     "--out", str(out[strategy]), *lr]) == 0
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_saved_directory_reloads_the_same_classifier(strategy: str, tiny: dict[str, object],
                                                     tmp_path: Path) -> None:
    bb, task = tiny["bb"], tiny["task"]
    cfg = tc.RecipeConfig(progress=False, steps=3, lora_r=4, adapter_bottleneck=8,
                          prompt_tokens=3, pairs_per_example=2)
    fitted = tc.fit(strategy, bb, task.train, cfg, dataset=task.name,
                    label_names=task.label_names, max_length=task.max_length)
    if fitted.model is not None:  # a trained head, not the zero-shot start, must travel
        fitted.model.classifier.bias.data[...] += np.array([0.3, -0.2], np.float32)
    save_finetuned(fitted, tmp_path, bb, label_names=task.label_names,
                   max_length=task.max_length, task=task.name,
                   settings={"adapter_bottleneck": 8, "prompt_tokens": 3})
    clf = mt.load_finetuned(str(tmp_path))
    assert clf.strategy == strategy and clf.label_names == task.label_names
    got = clf.logits(task.eval.texts)
    if fitted.bow is not None:
        want = np.log(fitted.bow.predict_proba(task.eval.texts))
    else:
        want = tc.predict_logits(fitted.model, task.eval)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    prob = clf.predict_proba(task.eval.texts[:3])
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-6)
    assert clf.predict(task.eval.texts[:3]) == [task.label_names[i] for i in prob.argmax(1)]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["minitl"]["strategy"] == strategy
    if strategy in ("lora", "setfit-lora"):  # PEFT layout, with pooling and head on record
        adapter = json.loads((tmp_path / "adapter_config.json").read_text())
        assert adapter["peft_type"] == "LORA" and adapter["r"] == 4
        assert adapter["minitl_classifier"]["pooling"] == "mean"
        assert adapter["modules_to_save"] == ["classifier"]


def test_whole_model_directory_needs_no_backbone(tiny: dict[str, object],
                                                 runs: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "full"
    shutil.copytree(runs["full"], moved)
    clf = load_finetuned(moved, backbone=str(tmp_path / "nowhere"))  # never read
    assert isinstance(clf.model, SentenceClassifier)
    lora = tmp_path / "lora"
    shutil.copytree(runs["lora"], lora)
    config = json.loads((lora / "config.json").read_text())
    config["minitl"]["backbone"] = str(tmp_path / "moved-away")
    (lora / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="moved-away.*backbone="):
        load_finetuned(lora)
    assert load_finetuned(lora, backbone=str(tiny["backbone"])).strategy == "lora"


def test_load_finetuned_names_what_is_wrong(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_finetuned(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match="no \"minitl\" section"):
        load_finetuned(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_finetuned(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(runs["full"], broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_finetuned(broken)
    config = json.loads((broken / "config.json").read_text())
    config["minitl"]["strategy"] = "magic"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown strategy 'magic'"):
        load_finetuned(broken)
    with pytest.raises(TypeError, match="list of texts"):
        load_finetuned(runs["bow"]).predict("one string")  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["lora", "full", "head", "bow"])
def test_predict_reproduces_the_accuracy_in_metrics_json(strategy: str,
                                                         tiny: dict[str, object],
                                                         runs: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    capsys.readouterr()
    assert main(["predict", "--model", str(runs[strategy]), "--data", "movie-reviews"]) == 0
    out = capsys.readouterr().out
    acc = json.loads((runs[strategy] / "metrics.json").read_text())["accuracy"]
    assert f"accuracy {acc:.4f}" in out and "(reproduced)" in out, out


def test_predict_labels_texts_and_files(runs: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["a wonderful , moving film .", "dull and tedious ."]
    f = tmp_path / "s.txt"
    f.write_text("\n".join(texts) + "\n\n")
    capsys.readouterr()
    assert main(["predict", "--model", str(runs["lora"]), "--text", texts[0],
                 "--text", texts[1]]) == 0
    by_text = capsys.readouterr().out
    assert main(["predict", "--model", str(runs["lora"]), "--file", str(f)]) == 0
    by_file = capsys.readouterr().out
    assert by_text == by_file
    lines = by_text.strip().splitlines()
    clf = load_finetuned(runs["lora"])
    prob = clf.predict_proba(texts)
    for line, text, p in zip(lines, texts, prob):
        label, pr, said = line.split("\t")
        assert said == text and label == clf.label_names[int(p.argmax())]
        assert float(pr) == pytest.approx(p.max(), abs=1e-4)


def test_predict_and_export_refuse_bad_input(runs: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", str(runs["lora"])]) == 2
    assert "exactly one of --text, --file or --data" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), "--text", "x"]) == 1
    assert "config.json is missing" in capsys.readouterr().err
    assert main(["export", "--model", str(runs["bow"]), "--out", str(tmp_path / "o")]) == 1
    assert "no Hugging Face counterpart" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "o")]) == 2
    assert "--backbone and --adapter" in capsys.readouterr().err


def _hf_logits(export: Path, ids: np.ndarray, mask: np.ndarray,
               base: str | None = None) -> np.ndarray:
    """The few lines docs/quickstart.md shows: transformers encoder, mean pooling, L2 norm,
    the exported head."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    if base is None:
        enc = transformers.AutoModel.from_pretrained(export)
    else:
        peft = pytest.importorskip("peft")
        enc = peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained(base),
                                             export)
    enc.eval()
    head = load_file(export / "classifier.safetensors")
    with torch.no_grad():
        b = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        h = enc(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        return (e @ head["weight"].T + head["bias"]).numpy()


@requires_torch
@pytest.mark.parametrize("strategy,merge", [("lora", True), ("lora", False), ("full", True),
                                            ("head", True)])
def test_export_reproduces_predictions_in_transformers(strategy: str, merge: bool,
                                                       tiny: dict[str, object],
                                                       runs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "hf"
    flag = [] if merge else ["--no-merge"]
    assert main(["export", "--model", str(runs[strategy]), "--out", str(out), *flag]) == 0
    clf = load_finetuned(runs[strategy])
    texts = tiny["task"].eval.texts
    batch = mt.data.pad_collate(0)([{"input_ids": np.asarray(
        clf.tokenizer.encode(t, max_length=clf.max_length), np.int64)} for t in texts])
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    got = _hf_logits(out, ids, mask, None if merge else str(tiny["backbone"]))
    np.testing.assert_allclose(got, clf.logits(texts), rtol=1e-4, atol=1e-4)
    if strategy == "lora":  # the comparison sees the adapter: without it the logits move
        bare = load_finetuned(runs[strategy])
        tl.set_adapter(bare.model, None)
        assert np.abs(bare.logits(texts) - got).max() > 1e-2
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_ids = tok(texts[:4], truncation=True, max_length=clf.max_length)["input_ids"]
    assert hf_ids == [clf.tokenizer.encode(t, max_length=clf.max_length) for t in texts[:4]]


def test_finetune_log_dir_gets_the_trainers_records(tiny: dict[str, object],
                                                    tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    assert main(["finetune", "--backbone", str(tiny["backbone"]), "--data", "movie-reviews",
                 "--data-root", str(tiny["data"]), "--source-text", str(tiny["source"]),
                 "--source-lines", "20", "--strategy", "full", "--labels", "48",
                 "--eval-size", "24", "--max-steps", "5", "--quiet", "--out",
                 str(tmp_path / "run"), "--log-dir", str(logs)]) == 0
    records = [json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("type") == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
    assert list(logs.glob("loss.*"))


def test_predict_without_sentences_is_one_line(runs: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \n"))
    assert main(["predict", "--model", str(runs["lora"]), "--file", "-"]) == 2
    assert "(standard input): no sentences" in capsys.readouterr().err
    assert main(["predict", "--model", str(runs["lora"]), "--file",
                 str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err
