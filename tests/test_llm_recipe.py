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

WORDS = "the film was a good bad great dull fun slow cast plot script".split()


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
