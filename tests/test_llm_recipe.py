"""minitl.recipes.llm on a tiny model and tokenizer written into a GGUF here, with tiny
movie-review, dialogue and general-text files: both tasks and both strategies run end to end,
write their files, keep the zero-shot baseline, and refuse what they cannot do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_llama import random_model, write_llama_gguf
from test_llama_tokenizer import tiny_gguf

from minitl.io.gguf import read_gguf
from minitl.models.llama import LlamaConfig
from minitl.recipes.llm import LLMConfig, count_weights, run_llm_finetune

WORDS = ["the", "film", "was", "a", "good", "bad", "great", "dull", "fun", "slow", "cast",
         "plot", "script"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("llm")
    tok_meta = read_gguf(tiny_gguf(tmp / "tok.gguf")).metadata
    tokens = tok_meta["tokenizer.ggml.tokens"] + ["positive", "negative"]  # whole answers
    types = tok_meta["tokenizer.ggml.token_type"].tolist() + [3, 3]
    extra = {k: v for k, v in tok_meta.items() if k.startswith("tokenizer.")}
    extra.update({"tokenizer.ggml.tokens": ("ARRAY", ("STRING", tokens)),
                  "tokenizer.ggml.token_type": ("ARRAY", ("INT32", types)),
                  "tokenizer.ggml.merges": ("ARRAY", ("STRING", extra["tokenizer.ggml.merges"]))})
    cfg = LlamaConfig.named("llama-tiny", vocab_size=len(tokens))
    model = write_llama_gguf(tmp / "tiny.gguf", random_model(cfg), "Q4_1", "Q8_0", extra)
    rng = np.random.default_rng(0)
    reviews = ["id\tsentiment\ttext"] + [
        f"{i}\t{rng.choice([-2.0, 1.5])}\t{' '.join(rng.choice(WORDS, 6))}" for i in range(80)]
    (tmp / "reviews.txt").write_text("\r\n".join(reviews) + "\r\n")
    (tmp / "dialog.txt").write_text("".join(f"{' '.join(rng.choice(WORDS, 5))}\t"
                                            f"{' '.join(rng.choice(WORDS, 5))}\n"
                                            for _ in range(120)))
    (tmp / "general.txt").write_text(" ".join(rng.choice(WORDS, 400)))
    return {"model": model, "reviews": tmp / "reviews.txt", "dialog": tmp / "dialog.txt",
            "general": tmp / "general.txt"}


def _cfg(files: dict[str, Path], **kw: object) -> LLMConfig:
    return LLMConfig(**{"epochs": 2, "batch_size": 4, "eval_size": 16, "general_windows": 2,
                        "lm_window": 16, "lm_steps": 4, "lm_eval_windows": 2,
                        "general_text": str(files["general"]), **kw})


def test_classification_lora_and_zero_shot(files: dict[str, Path], tmp_path: Path) -> None:
    zero = run_llm_finetune(str(files["model"]), "movie-reviews", "zero-shot", labels=16,
                            root=str(files["reviews"]), config=_cfg(files), log=lambda s: None)
    assert zero.steps == 0 and zero.metrics == zero.baseline and zero.trainable == 0
    out = tmp_path / "run"
    res = run_llm_finetune(str(files["model"]), "movie-reviews", "lora", labels=16, seed=1,
                           root=str(files["reviews"]), config=_cfg(files), out=str(out),
                           log=lambda s: None)
    assert res.steps == 2 * 4 and 0.0 <= res.accuracy <= 1.0
    assert res.baseline == zero.baseline  # the same base, the same prompt
    assert 0 < res.trainable < res.total and res.total > 64 * 64  # quantized weights counted
    stages = [r["stage"] for r in res.ledger["records"]]
    assert stages == ["before", "after"]
    assert all("general_ppl" in r["source"] for r in res.ledger["records"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == res.metrics and saved["strategy"] == "lora"
    assert (out / "adapter.safetensors").is_file() and (out / "ledger.json").is_file()


def test_language_modelling_perplexity(files: dict[str, Path]) -> None:
    res = run_llm_finetune(str(files["model"]), "movie-dialog", "lora", root=str(files["dialog"]),
                           config=_cfg(files, lr=3e-3), log=lambda s: None)
    assert res.steps == 4 and set(res.metrics) == {"perplexity"}
    assert res.metrics["perplexity"] > 1 and res.baseline["perplexity"] > 1
    assert res.labels is None


@pytest.mark.parametrize("kw,match", [
    ({"data": "tweets"}, "unknown task"),
    ({"strategy": "full"}, "unknown strategy"),
    ({"eval_split": "train"}, "eval_split"),
    ({"data": "movie-dialog", "strategy": "zero-shot"}, "language modelling"),
])
def test_refuses_what_it_cannot_do(files: dict[str, Path], kw: dict, match: str) -> None:
    args = {"backbone": str(files["model"]), "data": "movie-reviews", "strategy": "lora", **kw}
    with pytest.raises(ValueError, match=match):
        run_llm_finetune(**args, config=_cfg(files), log=lambda s: None)


def test_count_weights_counts_blocks_once(files: dict[str, Path]) -> None:
    from minitl.models.llama import LlamaForCausalLM

    q = LlamaForCausalLM.from_pretrained(files["model"], quantized=True)
    f = LlamaForCausalLM.from_pretrained(files["model"])
    assert count_weights(q)[1] == count_weights(f)[1]


# ---- minitl finetune with an LLM backbone ------------------------------------------------------

def _cli(files: dict[str, Path], out: Path, *extra: str) -> int:
    from minitl.cli import main

    return main(["finetune", "--backbone", str(files["model"]), "--data-root",
                 str(files["reviews"]), "--out", str(out), "--eval-size", "16",
                 "--source-text", str(files["general"]), "--quiet", *extra])


def test_cli_lora_and_zero_shot(files: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(files, tmp_path / "lora", "--strategy", "lora", "--labels", "16",
                "--batch-size", "4", "--max-steps", "3") == 0
    saved = json.loads((tmp_path / "lora" / "metrics.json").read_text())
    assert saved["steps"] == 3 and saved["strategy"] == "lora"
    assert saved["accuracy"] == saved["metrics"]["accuracy"]
    assert saved["config"]["batch_size"] == 4 and saved["config"]["max_steps"] == 3
    assert (tmp_path / "lora" / "adapter.safetensors").is_file()
    assert _cli(files, tmp_path / "zs", "--strategy", "zero-shot", "--labels", "0") == 0
    zs = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert zs["steps"] == 0 and zs["metrics"] == saved["baseline"]
    assert not (tmp_path / "zs" / "adapter.safetensors").exists()
    assert "wrote ledger.json, metrics.json" in capsys.readouterr().out


@pytest.mark.parametrize("extra,match", [
    (["--strategy", "full"], "takes --strategy zero-shot or lora"),
    (["--strategy", "lora", "--ewc", "1"], "--ewc apply to encoder backbones only"),
    (["--strategy", "lora", "--replay", "0.2", "--no-select"], "--replay, --no-select"),
    (["--strategy", "lora", "--data", "tweets"], "movie-reviews or movie-dialog, not tweets"),
    (["--strategy", "zero-shot", "--labels", "16"], "zero-shot trains nothing"),
    (["--strategy", "lora", "--labels", "1"], "at least 2"),
    (["--strategy", "lora", "--steps", "5"], "--max-steps"),
    (["--strategy", "lora", "--data", "movie-dialog", "--labels", "8"], "no --labels"),
])
def test_cli_usage_errors(files: dict[str, Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str], extra: list[str],
                          match: str) -> None:
    assert _cli(files, tmp_path / "x", *extra) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_cli_language_modelling(files: dict[str, Path], tmp_path: Path) -> None:
    from minitl.cli import main

    assert main(["finetune", "--backbone", str(files["model"]), "--data", "movie-dialog",
                 "--data-root", str(files["dialog"]), "--strategy", "lora", "--steps", "2",
                 "--batch-size", "4", "--source-text", str(files["general"]), "--quiet",
                 "--out", str(tmp_path / "lm")]) == 0
    saved = json.loads((tmp_path / "lm" / "metrics.json").read_text())
    assert saved["steps"] == 2 and set(saved["metrics"]) == {"perplexity"}
    assert saved["accuracy"] is None


def test_llm_backbone_detection(files: dict[str, Path], tmp_path: Path) -> None:
    from minitl.cli.finetune_llm import is_llm_backbone

    assert is_llm_backbone("smollm2-135m") and is_llm_backbone(str(files["model"]))
    assert is_llm_backbone(str(files["model"].parent))
    assert not is_llm_backbone("minilm-l6") and not is_llm_backbone(str(tmp_path))


def test_cli_damaged_gguf_is_one_line(files: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from minitl.cli import main

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(60))
    assert main(["finetune", "--backbone", str(bad), "--strategy", "lora", "--labels", "8",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not a GGUF file" in err and "Traceback" not in err
