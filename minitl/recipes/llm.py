"""Fine-tuning a real LLM (SmolLM2-135M-Instruct, from its GGUF file) on a CPU, with QLoRA.

    result = run_llm_finetune("smollm2-135m", "movie-reviews", "lora", labels=256, seed=0)
    result.accuracy, result.metrics, result.ledger

Two tasks:

- movie-reviews as an instruction-tuned classifier. Each sentence goes into the model's own
  chat template with a question (`PROMPT`); the answer is one word, "positive" or "negative".
  Training (strategy "lora") minimises the cross-entropy of the answer token only; accuracy
  compares the logits of the two answer tokens at the answer position, so no head is added.
  Strategy "zero-shot" runs the same prompt on the base model: the baseline, the model's own
  reading of the question.
- movie-dialog as causal-LM adaptation: LoRA on 128-token windows of film dialogue, with the
  validation perplexity before and after.

The base stays in its 4/8-bit blocks (`quantized=True`, QuantLinear) and only LoRA factors
train (QLoRA, arXiv:2305.14314). A forgetting ledger (minitl.transfer.ForgettingLedger)
records, before and after, the perplexity on general text the fine-tune never saw (New York
Times editorial sentences, `general_text`) next to the target metric, the trainable
parameters, step time and peak memory.

The prompt wording and the learning rate were chosen on the validation split (docs/
llm_finetuning.md); the rank, the targets, the epochs and the batch size were set beforehand and
not tuned. The test split is only read when `eval_split="test"` asks for it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import transfer as tl
from minitl.autograd_state import no_grad
from minitl.creation import manual_seed, tensor
from minitl.data import load_dataset
from minitl.data.corpora import stratified_split
from minitl.data.tokenizers import BPETokenizer
from minitl.models.llama import LlamaForCausalLM
from minitl.nn.utils import clip_grad_norm_
from minitl.optim import AdamW
from minitl.optim.lr_scheduler import get_linear_schedule_with_warmup
from minitl.tensor import Tensor

__all__ = ["PROMPT", "STRATEGIES", "TASKS", "LLMConfig", "LLMResult", "classification_examples",
           "count_weights", "general_text", "lm_windows", "perplexity", "run_llm_finetune",
           "score_answers"]

STRATEGIES = {"zero-shot": "the base model answers the prompt, nothing trains",
              "lora": "QLoRA: LoRA factors on every projection of the 4-bit base"}
TASKS = ("movie-reviews", "movie-dialog")
# Chosen among six wordings by the base model's zero-shot accuracy on 300 validation
# sentences (`examples/llm_finetuning.py --prompt-sweep`, docs/llm_finetuning.md): 0.657
# here, 0.517-0.653 for the others.
SYSTEM = "You are a helpful assistant."
PROMPT = "What is the sentiment of this movie review, positive or negative?\n\n\"{text}\""
# The base model's zero-shot metrics per (backbone, quantized, split, size, prompt, system,
# root): the same for every seed, so a grid of runs in one process scores them once.
_BASELINES: dict[tuple[Any, ...], dict[str, float]] = {}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LLMConfig:
    """Settings of one run; prompt and lr chosen on validation (docs/llm_finetuning.md)."""

    lr: float = 1e-3  # peak LoRA learning rate (linear warmup over 10%, linear decay)
    epochs: int = 3  # passes over the labelled sentences
    batch_size: int = 8
    r: int = 8  # LoRA rank; alpha = 2 r
    target: tuple[str, ...] = LORA_TARGETS
    weight_decay: float = 0.0
    eval_size: int | None = None  # sentences of the eval split (None: all of it)
    eval_batch_size: int = 32
    lm_steps: int = 60  # optimizer steps of causal-LM adaptation (movie-dialog)
    max_steps: int | None = None  # stop after this many optimizer steps (quick checks)
    lm_window: int = 128  # tokens per causal-LM training / evaluation window
    lm_eval_windows: int = 32  # validation windows for perplexity
    general_windows: int = 16  # windows of general text for the forgetting ledger
    general_text: str | None = None  # a UTF-8 file of such text (None: NYT editorials)
    quantized: bool = True  # keep the base in its file's 4/8-bit blocks
    prompt: str = PROMPT  # the user turn; {text} is the sentence
    system: str | None = SYSTEM  # the system turn (None: the template's default one)


@dataclass
class LLMResult:
    task: str
    strategy: str
    seed: int
    labels: int | None
    eval_split: str
    metrics: dict[str, float]  # accuracy, macro_f1 (classification); perplexity (LM)
    baseline: dict[str, float]  # the same metrics before fine-tuning (zero-shot / base LM)
    trainable: int
    total: int
    seconds: float
    steps: int
    ledger: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.metrics.get("accuracy", math.nan))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- data ----------------------------------------------------------------------------------

def classification_examples(tok: BPETokenizer, texts: Sequence[str], label_names: Sequence[str],
                            prompt: str = PROMPT, system: str | None = SYSTEM
                            ) -> tuple[list[np.ndarray], np.ndarray]:
    """(prompt ids per sentence, answer token id per label): each prompt ends where the
    assistant's answer starts; the answers are single tokens ("positive", "negative")."""
    answers = [tok.encode(name) for name in label_names]
    if any(len(a) != 1 for a in answers) or len({a[0] for a in answers}) != len(answers):
        raise ValueError(f"the label names {list(label_names)} are not distinct single tokens")
    head = [] if system is None else [{"role": "system", "content": system}]
    prompts = [np.asarray(tok.apply_chat_template(
        [*head, {"role": "user", "content": prompt.format(text=t)}], add_generation_prompt=True),
        np.int64) for t in texts]
    return prompts, np.array([a[0] for a in answers], np.int64)


def _batch(seqs: Sequence[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, T) ids and each row's length. With causal attention the padding
    after a row's last token cannot reach it, so no attention mask is needed."""
    lens = np.array([len(s) for s in seqs])
    out = np.full((len(seqs), lens.max()), pad, np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lens


def _answer_logits(lm: LlamaForCausalLM, ids: np.ndarray, at: np.ndarray) -> Tensor:
    """Logits (B, V) at position at[i] of each row: the head runs on those rows only."""
    h = lm.model(tensor(ids))  # (B, T, D)
    rows = h[np.arange(len(at)), at]  # (B, D)
    return lm.lm_head(rows)


def score_answers(lm: LlamaForCausalLM, prompts: Sequence[np.ndarray], answer_ids: np.ndarray,
                  pad: int, batch_size: int = 32) -> np.ndarray:
    """(N, n_labels) logits of the answer tokens at the answer position of each prompt."""
    order = np.argsort([len(p) for p in prompts], kind="stable")  # similar lengths together
    out = np.zeros((len(prompts), len(answer_ids)), np.float32)
    was = lm.training
    lm.eval()
    with no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            ids, lens = _batch([prompts[j] for j in idx], pad)
            out[idx] = _answer_logits(lm, ids, lens - 1).numpy()[:, answer_ids]
    lm.train(was)
    return out


def _class_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pred = scores.argmax(1)
    f1s = []
    for c in range(scores.shape[1]):
        tp = float(((pred == c) & (labels == c)).sum())
        denom = float((pred == c).sum() + (labels == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float((pred == labels).mean()), "macro_f1": float(np.mean(f1s))}


def lm_windows(tok: BPETokenizer, text: str, window: int, n: int | None, seed: int = 0
               ) -> list[np.ndarray]:
    """Up to n windows of `window` + 1 tokens (inputs and next-token targets) cut from the
    token stream of `text` at random non-overlapping offsets (all of them for n=None)."""
    ids = np.asarray(tok.encode(text, add_special_tokens=False), np.int64)
    starts = np.arange(0, len(ids) - window - 1, window + 1)
    if n is not None and n < len(starts):
        starts = np.sort(np.random.default_rng(seed).choice(starts, n, replace=False))
    return [ids[s:s + window + 1] for s in starts]


def general_text(n_sentences: int = 600) -> str:
    """Text no fine-tune here sees: New York Times editorial sentences (the nyt-snippets
    asset), the first n after a fixed shuffle."""
    texts = load_dataset("nyt-snippets", split="all").texts
    order = np.random.default_rng(0).permutation(len(texts))[:n_sentences]
    return " ".join(texts[i] for i in order)


def perplexity(lm: LlamaForCausalLM, windows: Sequence[np.ndarray], batch_size: int = 8
               ) -> float:
    """exp(mean next-token cross-entropy) over every target token of the windows."""
    total, count = 0.0, 0
    was = lm.training
    lm.eval()
    with no_grad():
        for i in range(0, len(windows), batch_size):
            ids = np.stack(windows[i:i + batch_size])
            logits = lm(tensor(ids[:, :-1]))
            v = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, v), tensor(ids[:, 1:].reshape(-1)),
                                   reduction="sum")
            total += loss.item()
            count += ids[:, 1:].size
    lm.train(was)
    return float(math.exp(total / max(count, 1)))


# ---- training ------------------------------------------------------------------------------

def _lora(lm: LlamaForCausalLM, cfg: LLMConfig) -> list[Any]:
    tl.apply_lora(lm, tl.LoRAConfig(r=cfg.r, alpha=2 * cfg.r, target=cfg.target))
    return [p for p in lm.parameters() if p.requires_grad]


def _optimizer(params: list[Any], cfg: LLMConfig, steps: int) -> tuple[AdamW, Any]:
    opt = AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, get_linear_schedule_with_warmup(opt, max(1, steps // 10), steps)


def _step(opt: AdamW, sched: Any, params: list[Any], loss: Tensor) -> float:
    opt.zero_grad()
    loss.backward()
    clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return float(loss.item())


def _train_classifier(lm: LlamaForCausalLM, prompts: list[np.ndarray], labels: np.ndarray,
                      answer_ids: np.ndarray, pad: int, cfg: LLMConfig, seed: int,
                      ledger: tl.ForgettingLedger, log: Callable[[str], None]) -> int:
    params = _lora(lm, cfg)
    per_epoch = math.ceil(len(prompts) / cfg.batch_size)
    steps = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    opt, sched = _optimizer(params, cfg, steps)
    rng = np.random.default_rng(seed)
    lm.train()
    step = 0
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(prompts))
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            if step == steps:
                break
            idx = order[i:i + cfg.batch_size]
            with ledger.time_step():
                # the answer token follows the prompt: the loss is its cross-entropy only
                seqs = [np.append(prompts[j], answer_ids[labels[j]]) for j in idx]
                ids, lens = _batch(seqs, pad)
                logits = _answer_logits(lm, ids[:, :-1], lens - 2)
                loss = F.cross_entropy(logits, tensor(answer_ids[labels[idx]]))
                losses.append(_step(opt, sched, params, loss))
            step += 1
        log(f"  epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses):.4f}")
        if step == steps:
            break
    lm.eval()
    return step


def _train_lm(lm: LlamaForCausalLM, windows: list[np.ndarray], cfg: LLMConfig, seed: int,
              ledger: tl.ForgettingLedger, log: Callable[[str], None]) -> int:
    params = _lora(lm, cfg)
    steps = cfg.lm_steps if cfg.max_steps is None else min(cfg.lm_steps, cfg.max_steps)
    opt, sched = _optimizer(params, cfg, steps)
    rng = np.random.default_rng(seed)
    lm.train()
    losses = []
    for step in range(steps):
        idx = rng.choice(len(windows), min(cfg.batch_size, len(windows)), replace=False)
        with ledger.time_step():
            ids = np.stack([windows[j] for j in idx])
            logits = lm(tensor(ids[:, :-1]))
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   tensor(ids[:, 1:].reshape(-1)))
            losses.append(_step(opt, sched, params, loss))
        if (step + 1) % 10 == 0:
            log(f"  step {step + 1}/{steps}: loss {np.mean(losses[-10:]):.4f}")
    lm.eval()
    return steps


# ---- the entry point -----------------------------------------------------------------------

def run_llm_finetune(backbone: str = "smollm2-135m", data: str = "movie-reviews",
                     strategy: str = "lora", labels: int | None = 256, seed: int = 0,
                     eval_split: str = "validation", *, config: LLMConfig | None = None,
                     out: str | os.PathLike[str] | None = None, root: str | None = None,
                     log: Callable[[str], None] = print) -> LLMResult:
    """One fine-tuning run of a GGUF LLaMA-architecture model (an asset name or a path).

    Args:
        backbone: "smollm2-135m" or a .gguf file / folder.
        data: "movie-reviews" (classification) or "movie-dialog" (causal LM).
        strategy: "zero-shot" (classification only) or "lora".
        labels: labelled training sentences, stratified by `seed` (None: the whole split).
        seed: draws the labelled subset, the LoRA init and the batch order.
        eval_split: "validation" (for choosing settings) or "test" (for reporting).
        config: LLMConfig; out: a folder for metrics.json, ledger.json and (lora)
            adapter.safetensors; root: read the dataset from here instead of the assets.

    Returns:
        LLMResult: `.accuracy` / `.metrics` after, `.baseline` before, the ledger.

    Raises:
        ValueError: an unknown task, strategy or split, or zero-shot on a language-model task.
    """
    cfg = config or LLMConfig()
    if data not in TASKS:
        raise ValueError(f"unknown task {data!r}; LLM fine-tuning knows {', '.join(TASKS)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} for an LLM; known: "
                         f"{', '.join(STRATEGIES)}")
    if eval_split not in ("validation", "test"):
        raise ValueError(f"eval_split must be 'validation' or 'test', got {eval_split!r}")
    if data == "movie-dialog" and strategy == "zero-shot":
        raise ValueError("movie-dialog is language modelling: use strategy 'lora' (its "
                         "baseline is the base model's perplexity, reported as well)")
    manual_seed(seed)
    t_load = time.perf_counter()
    tok = BPETokenizer.from_pretrained(backbone)
    lm = LlamaForCausalLM.from_pretrained(backbone, quantized=cfg.quantized)
    lm.requires_grad_(False)  # the base never trains here; LoRA adds what does
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    log(f"loaded {backbone} ({'4/8-bit' if cfg.quantized else 'float32'}) in "
        f"{time.perf_counter() - t_load:.1f} s")
    if cfg.general_text is None:
        text_general = general_text()
    else:
        with open(cfg.general_text, encoding="utf-8") as fh:
            text_general = fh.read()
    general = lm_windows(tok, text_general, cfg.lm_window, cfg.general_windows)
    if not general:
        raise ValueError(f"the general text holds fewer than {cfg.lm_window + 1} tokens")

    def source_eval(model: Any) -> dict[str, float]:
        return {"general_ppl": perplexity(model, general)}

    if data == "movie-reviews":
        splits = load_dataset(data, root=root)
        train = splits["train"]
        if labels is not None and labels < len(train):
            train = train.subset(stratified_split(train.labels, (1 - labels / len(train),
                                                                 labels / len(train)), seed)[1])
        ev = splits[eval_split]
        if cfg.eval_size is not None and cfg.eval_size < len(ev):
            ev = ev.subset(stratified_split(ev.labels, (1 - cfg.eval_size / len(ev),
                                                        cfg.eval_size / len(ev)), 0)[1])
        tr_prompts, answer_ids = classification_examples(tok, train.texts, train.label_names,
                                                         cfg.prompt, cfg.system)
        ev_prompts, _ = classification_examples(tok, ev.texts, ev.label_names, cfg.prompt,
                                                cfg.system)

        base_key = (str(backbone), cfg.quantized, eval_split, cfg.eval_size, cfg.prompt,
                    cfg.system, root)

        def target_eval(model: Any) -> dict[str, float]:
            untouched = not any(isinstance(m, tl.LoRALayer) for m in model.modules())
            if untouched and base_key in _BASELINES:  # the base model answers as before
                return dict(_BASELINES[base_key])
            metrics = _class_metrics(score_answers(model, ev_prompts, answer_ids, pad,
                                                   cfg.eval_batch_size), ev.labels)
            if untouched:
                _BASELINES[base_key] = dict(metrics)
            return metrics
    else:
        text = load_dataset(data, root=root)
        tr_windows = lm_windows(tok, text["train"], cfg.lm_window, None, seed)
        ev_windows = lm_windows(tok, text[eval_split], cfg.lm_window, cfg.lm_eval_windows)

        def target_eval(model: Any) -> dict[str, float]:
            return {"perplexity": perplexity(model, ev_windows)}

    ledger = tl.ForgettingLedger(source_eval, target_eval, model=lm, memory="rss")
    before = ledger.record("before", 0)
    log(f"before: {before['target']} general ppl {before['source']['general_ppl']:.2f}")
    t0 = time.perf_counter()
    steps = 0
    if strategy == "lora":
        steps = (_train_classifier(lm, tr_prompts, train.labels, answer_ids, pad, cfg, seed,
                                   ledger, log) if data == "movie-reviews"
                 else _train_lm(lm, tr_windows, cfg, seed, ledger, log))
    seconds = time.perf_counter() - t0
    after = ledger.record("after", steps) if strategy == "lora" else before
    log(f"after: {after['target']} general ppl {after['source']['general_ppl']:.2f}")
    trainable, total = count_weights(lm)
    blocks = total - tl.count_parameters(lm)[1]
    for rec in ledger.records:  # the ledger counts Parameters; the 4-bit weights are buffers
        rec["total_params"] += blocks
    result = LLMResult(data, strategy, seed, labels if data == "movie-reviews" else None,
                       eval_split, after["target"], before["target"], trainable, total,
                       seconds, steps, ledger.to_dict(), asdict(cfg))
    ledger.close()
    if out is not None:
        _save(result, lm, out, backbone)
    return result


def count_weights(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, the weights kept in quantized blocks counted too (they
    are buffers, which count_parameters leaves out); a tied table counts once."""
    from minitl.nn.quantized import QuantEmbedding, QuantLinear
    from minitl.transfer.lora import LoRAQuantLinear

    trainable, total = tl.count_parameters(model)
    seen: set[int] = set()
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantEmbedding, LoRAQuantLinear)) \
                and id(m.qweight) not in seen:
            seen.add(id(m.qweight))
            rows = m.qweight.shape[0]
            total += rows * (m.embedding_dim if isinstance(m, QuantEmbedding) else m.in_features)
    return trainable, total


def _save(result: LLMResult, lm: LlamaForCausalLM, out: str | os.PathLike[str],
          backbone: str) -> None:
    from minitl import io

    os.makedirs(out, exist_ok=True)
    if result.strategy == "lora":
        io.save(tl.adapter_state_dict(lm), os.path.join(out, "adapter.safetensors"),
                metadata={"backbone": str(backbone), "task": result.task})
    metrics = {**result.to_dict(), "accuracy": result.metrics.get("accuracy"),
               "backbone": str(backbone)}
    for name, obj in (("metrics.json", metrics), ("ledger.json", result.ledger)):
        tmp = os.path.join(out, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=float)
            f.write("\n")
        os.replace(tmp, os.path.join(out, name))
