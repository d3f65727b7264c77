"""Few-label transfer: zero-shot and prototypes on a toy encoder with known answers, pairs,
step plans, auto's choice, self-training and SetFit on a tiny BERT, and the eval split
never read while a strategy fits."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import pytest
from test_recipes import tiny_assets

import minitl as mt
from minitl import nn
from minitl.cli import main
from minitl.recipes import fewshot, plans
from minitl.recipes import text_classification as tc
from minitl.recipes.text_data import EncodedText, length_from_data

# ---- a toy encoder whose sentence embeddings are known ---------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "plot"]


class TableEncoder(nn.Module):
    """Token states = a fixed table row per token, so the mean-pooled, normalised sentence
    embedding is the normalised sum of its words' rows ([CLS], [SEP] rows are zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(len(VOCAB), 3)
        rows = np.zeros((len(VOCAB), 3), np.float32)
        rows[VOCAB.index("good")] = rows[VOCAB.index("great")] = [1, 0, 0]
        rows[VOCAB.index("bad")] = rows[VOCAB.index("awful")] = [0, 1, 0]
        rows[VOCAB.index("plot")] = [0, 0, 1]
        self.table.weight.data = rows

    def forward(self, input_ids: Any, attention_mask: Any = None) -> mt.Tensor:
        return self.table(input_ids)


@pytest.fixture(scope="module")
def toy() -> tuple[TableEncoder, mt.data.WordPieceTokenizer]:
    return TableEncoder(), mt.data.WordPieceTokenizer({w: i for i, w in enumerate(VOCAB)})


def encode(tok: Any, texts: list[str], labels: list[int] | None = None) -> EncodedText:
    return tc.encode_texts(tok, texts, labels or [0] * len(texts), 16)


def test_class_vectors_are_the_normalised_mean_of_the_descriptions(toy: Any) -> None:
    enc, tok = toy
    vecs = fewshot.class_vectors(enc, tok, [["bad", "awful plot"], ["good", "great"]])
    # "awful plot" embeds as (0, 1, 1)/sqrt2; the mean with (0, 1, 0), normalised:
    want_neg = np.array([0, 1 + 1 / np.sqrt(2), 1 / np.sqrt(2)])
    np.testing.assert_allclose(vecs[0], want_neg / np.linalg.norm(want_neg), atol=1e-6)
    np.testing.assert_allclose(vecs[1], [1, 0, 0], atol=1e-6)


def test_zero_shot_and_prototypes_give_the_known_answers(toy: Any) -> None:
    enc, tok = toy
    vecs = fewshot.class_vectors(enc, tok, [["bad"], ["good"]])
    emb = tc.embed_texts(enc, encode(tok, ["great plot", "awful", "good good bad", "plot"]))
    logits = fewshot.cosine_logits(emb, vecs)
    assert logits[:3].argmax(1).tolist() == [1, 0, 1]
    np.testing.assert_allclose(logits[0], fewshot.SCALE * np.array([0, 1]) / np.sqrt(2),
                               atol=1e-5)
    assert logits[3, 0] == logits[3, 1]  # "plot" says nothing about either class
    protos = fewshot.prototypes(emb[:3], np.array([1, 0, 1]), 2)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(protos[0], [0, 1, 0], atol=1e-6)  # the one negative
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        fewshot.prototypes(emb[:3], np.array([1, 0, 2]), 2)


def test_init_head_computes_the_zero_shot_logits(toy: Any) -> None:
    enc, tok = toy
    vecs = fewshot.class_vectors(enc, tok, [["bad"], ["good"]])
    head = nn.Linear(3, 2)
    fewshot.init_head(head, vecs)
    emb = tc.embed_texts(enc, encode(tok, ["great plot", "awful"]))
    np.testing.assert_allclose(head(mt.tensor(emb)).numpy(), fewshot.cosine_logits(emb, vecs),
                               atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        fewshot.init_head(nn.Linear(3, 3), vecs)


def test_describe_uses_the_dataset_templates_and_falls_back_to_label_names() -> None:
    neg, pos = fewshot.describe("movie-reviews", ("negative", "positive"))
    assert "this movie is terrible." in neg and "this movie is great." in pos
    assert len(neg) == len(fewshot.TEMPLATES["movie-reviews"]) * 10
    (spam,) = fewshot.describe("sms-spam", ("spam",))
    assert spam == [t.format("spam") for t in fewshot.GENERIC_TEMPLATES]


# ---- pairs ------------------------------------------------------------------------------------

def test_pairs_are_balanced_labelled_and_seeded() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    pairs = fewshot.make_pairs(y, per_example=3, seed=1)
    i, j, t = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2]
    assert np.all(i != j)
    np.testing.assert_array_equal(t, (y[i] == y[j]).astype(float))
    # every sentence is the anchor of 3 negatives, and of 3 positives unless alone (class 2)
    assert int((t == 0).sum()) == 3 * len(y) and int((t == 1).sum()) == 3 * (len(y) - 1)
    np.testing.assert_array_equal(pairs, fewshot.make_pairs(y, 3, seed=1))
    assert not np.array_equal(pairs, fewshot.make_pairs(y, 3, seed=2))
    with pytest.raises(ValueError, match="two classes"):
        fewshot.make_pairs(np.zeros(4, int), 2)
    assert fewshot.pairs_per_example(100) == 10 and fewshot.pairs_per_example(4000) == 1
    assert fewshot.pairs_per_example(8) == 20


# ---- plans and auto ---------------------------------------------------------------------------

def test_steps_grow_with_the_labels_within_bounds() -> None:
    steps = [plans.train_steps(n) for n in (8, 32, 100, 256, 1000, 8454, 10**6)]
    assert steps == sorted(steps) and steps[0] == plans.MIN_STEPS
    assert steps[-1] == plans.MAX_STEPS and plans.train_steps(100) == 125  # 20 passes
    assert plans.plan("full", 100).holdout == 0  # too few to spare a slice
    assert plans.plan("full", 1000).holdout == 100 and plans.plan("full", 10**5).holdout == 500
    with pytest.raises(ValueError, match="no plan for strategy 'nope'"):
        plans.plan("nope", 10)


@pytest.mark.parametrize("n, unlabeled, want", [
    (0, 0, "zero-shot"), (0, 5000, "zero-shot"), (8, 0, "head"), (31, 10**4, "head"),
    (32, 0, "full"), (100, 10**4, "full"), (5000, 0, "full"),
])
def test_auto_choice_per_label_count(n: int, unlabeled: int, want: str) -> None:
    c = plans.choose(n, unlabeled)
    assert c.strategy == want and c.reason


def test_length_from_the_data_is_a_rounded_percentile(toy: Any) -> None:
    _, tok = toy
    texts = ["good " * k for k in range(1, 41)]  # 3..42 tokens with [CLS] and [SEP]
    assert length_from_data(tok, texts) == 48  # 95th percentile 40.05 -> 48
    assert length_from_data(tok, ["good"]) == 16  # at least 16
    assert length_from_data(tok, ["good " * 300]) == 128  # at most 128
    with pytest.raises(ValueError, match="at least one sentence"):
        length_from_data(tok, [])


# ---- strategies on a tiny BERT ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    paths = tiny_assets(tmp_path_factory.mktemp("fewshot"))
    bb = tc.load_backbone(paths["backbone"])
    task = tc.load_task("movie-reviews", bb.tokenizer, 32, 24, root=paths["data"],
                        unlabeled=None)
    return {**paths, "bb": bb, "task": task}


def quick(**kw: Any) -> tc.RecipeConfig:
    return tc.RecipeConfig(**{"progress": False, "steps": 6, **kw})


def test_auto_records_its_choice(tiny: dict[str, Any]) -> None:
    task = dataclasses.replace(tiny["task"], unlabeled=[])
    task = dataclasses.replace(task, train=task.train.subset(range(16)))
    fitted, r = tc.run_strategy("auto", tiny["bb"], task, quick())
    assert r.strategy == "auto" and r.chosen == fitted.strategy == "head"  # 16 < 32 labels
    assert fitted.details["choice"]["strategy"] == "head"
    fitted, r = tc.run_strategy("auto", tiny["bb"], dataclasses.replace(task, train=task.train
                                .subset([])), quick())
    assert r.chosen == "zero-shot" and r.trainable == 0


def test_self_training_adds_balanced_confident_pseudo_labels(tiny: dict[str, Any]) -> None:
    cfg = quick(unlabeled_per_label=4, pseudo_share=0.5)
    fitted, r = tc.run_strategy("self-train", tiny["bb"], tiny["task"], cfg)
    d = fitted.details
    assert r.chosen == "self-train" and d["pool"] == min(4 * 32, len(tiny["task"].unlabeled))
    assert d["pseudo"] <= d["pool"] // 2 and 0 <= r.accuracy <= 1
    with pytest.raises(ValueError, match="unlabeled"):
        tc.run_strategy("self-train", tiny["bb"], dataclasses.replace(tiny["task"],
                                                                      unlabeled=[]), cfg)


def test_setfit_tunes_the_encoder_and_setfit_lora_only_its_factors(tiny: dict[str, Any]) -> None:
    bb = tiny["bb"]
    q = bb.encoder.encoder.layer[0].attention.self.query.weight.numpy().copy()
    fitted, r = tc.run_strategy("setfit", bb, tiny["task"], quick(pairs_per_example=1))
    assert fitted.details["pairs"] == 2 * 32 and r.trainable == r.total
    moved = fitted.model.bert.encoder.layer[0].attention.self.query.weight.numpy()
    assert not np.allclose(moved, q)
    fitted, r = tc.run_strategy("setfit-lora", bb, tiny["task"], quick(pairs_per_example=1))
    assert r.trainable < r.total
    lora_q = fitted.model.bert.encoder.layer[0].attention.self.query
    np.testing.assert_array_equal(lora_q.weight.numpy(), q)  # the base stays frozen
    np.testing.assert_array_equal(bb.encoder.encoder.layer[0].attention.self.query.weight
                                  .numpy(), q)  # and the pristine backbone untouched


def test_bow_learns_the_keyword_task(tiny: dict[str, Any]) -> None:
    task = tc.load_task("movie-reviews", tiny["bb"].tokenizer, 120, 60, root=tiny["data"])
    fitted, r = tc.run_strategy("bow", tiny["bb"], task, quick())
    assert r.accuracy >= 0.9 and fitted.bow is not None and r.source == {}


class SpyText(EncodedText):
    """Records every read of its sentences or labels."""

    reads: list[str]

    def __init__(self, data: EncodedText) -> None:
        object.__setattr__(self, "reads", [])
        super().__init__(data.ids, data.labels, data.texts)
        self.reads.clear()

    def __getattribute__(self, name: str) -> Any:
        if name in ("ids", "labels", "texts", "lengths"):
            object.__getattribute__(self, "reads").append(name)
        return object.__getattribute__(self, name)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.reads.append("item")
        return super().__getitem__(i)

    def __len__(self) -> int:
        self.reads.append("len")
        return super().__len__()


@pytest.mark.parametrize("strategy", ["full", "head", "self-train", "auto"])
def test_the_eval_split_is_never_read_while_fitting(tiny: dict[str, Any], strategy: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Model selection (a held-out slice, forced here), pseudo-labels and auto's choice read
    the labelled set only: the eval data is first touched by `score`, after `fit`."""
    spy = SpyText(tiny["task"].eval)
    task = dataclasses.replace(tiny["task"], eval=spy)
    seen: list[list[str]] = []
    real_score = tc.score

    def score(fitted: Any, backbone: Any, data: Any, *a: Any, **k: Any) -> dict[str, float]:
        seen.append(list(spy.reads))
        return real_score(fitted, backbone, data, *a, **k)

    monkeypatch.setattr(tc, "score", score)
    cfg = quick(holdout=6, unlabeled_per_label=2)
    _, r = tc.run_strategy(strategy, tiny["bb"], task, cfg)
    assert seen == [[]], f"the eval split was read before scoring: {seen}"
    assert spy.reads and r.eval_split == "validation"
    assert "eval" not in inspect.signature(tc.fit).parameters


def test_cli_eval_split_test_reports_test_accuracy(tmp_path: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    tiny = tiny_assets(tmp_path, n=1000)  # 800 train sentences: 64 labels, 736 unlabeled
    out = tmp_path / "auto"
    assert main(["finetune", "--backbone", tiny["backbone"], "--data-root", tiny["data"],
                 "--source-text", tiny["source"], "--source-lines", "20", "--labels", "64",
                 "--unlabeled", "all", "--strategy", "auto", "--eval-split", "test",
                 "--max-steps", "4", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert "auto chose full" in text and m["chosen"] == "full"  # unlabeled text or not
    assert m["eval_split"] == "test" and m["choice"]["strategy"] == "full"
    assert f"test accuracy {m['accuracy']:.3f}" in text
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize("argv, message", [
    (["--labels", "0", "--strategy", "full"], "--labels 0 leaves nothing to train full"),
    (["--labels", "1", "--strategy", "head"], "--labels 1 cannot cover two classes"),
    (["--labels", "8", "--strategy", "self-train"], "self-train needs unlabeled"),
    (["--data", "sms-spam", "--strategy", "intermediate"], "not sms-spam"),
    (["--data", "nonsense", "--strategy", "head"], "unknown dataset 'nonsense'"),
    (["--backbone", "/nonexistent", "--strategy", "head"], "neither a directory nor"),
])
def test_cli_refuses_settings_that_cannot_work(tiny: dict[str, Any], tmp_path: Any,
                                               capsys: pytest.CaptureFixture[str],
                                               argv: list[str], message: str) -> None:
    code = main(["finetune", "--backbone", tiny["backbone"], "--data-root", tiny["data"],
                 "--out", str(tmp_path / "x"), *argv])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_saves_bow_with_its_vocabulary(tiny: dict[str, Any], tmp_path: Any) -> None:
    import json

    from minitl.io.safetensors import load_metadata

    out = tmp_path / "bow"
    assert main(["finetune", "--backbone", tiny["backbone"], "--data-root", tiny["data"],
                 "--source-text", tiny["source"], "--source-lines", "20", "--labels", "40",
                 "--strategy", "bow", "--quiet", "--out", str(out)]) == 0
    sd = mt.load(out / "bow.safetensors")
    vocab = json.loads(load_metadata(out / "bow.safetensors")["vocabulary"])
    assert sd["weight"].shape == (2, len(vocab)) and sd["idf"].shape == (len(vocab),)


@pytest.mark.parametrize("n", [16, 64])
def test_auto_is_exactly_the_strategy_it_chose(tmp_path: Any, n: int) -> None:
    """benchmarks/transfer/data_efficiency.py reuses the chosen strategy's run as auto's row;
    that holds because both are the same computation."""
    paths = tiny_assets(tmp_path, n=400)
    bb = tc.load_backbone(paths["backbone"])
    task = tc.load_task("movie-reviews", bb.tokenizer, n, 40, root=paths["data"])
    auto, r = tc.run_strategy("auto", bb, task, quick())
    chosen, r2 = tc.run_strategy(r.chosen, bb, task, quick())
    assert r.chosen == ("head" if n < plans.FULL_FROM else "full")
    np.testing.assert_array_equal(tc.predict_logits(auto.model, task.eval),
                                  tc.predict_logits(chosen.model, task.eval))
    assert r.accuracy == r2.accuracy


def test_intermediate_sets_are_the_other_sentiment_sets() -> None:
    from minitl.recipes.intermediate import related_sentiment_sets

    assert related_sentiment_sets("movie-reviews") == ["tweets", "amazon-reviews",
                                                       "nyt-snippets"]
    assert "movie-reviews" in related_sentiment_sets("tweets")
    with pytest.raises(ValueError, match="no related sentiment sets known for 'sms-spam'"):
        related_sentiment_sets("sms-spam")


def test_intermediate_model_trains_on_the_related_sets(tmp_path: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On two tiny sentiment files standing in for the related sets: the intermediate model
    classifies their labels and becomes the backbone the target's fine-tuning copies."""
    from minitl.recipes import intermediate

    a, b = tiny_assets(tmp_path / "a", n=80, seed=1), tiny_assets(tmp_path / "b", n=80, seed=2)
    real = intermediate.load_dataset
    monkeypatch.setattr(intermediate, "load_dataset", lambda d, split: real(
        "movie-reviews", split=split, root={"x": a["data"], "y": b["data"]}[d]))
    bb = tc.load_backbone(a["backbone"])
    inter = intermediate.intermediate_model(bb, ["x", "y"], 16, quick(steps=4), cache=False)
    assert inter.n_labels == 2 * 64 and inter.steps == 4 and inter.datasets == ("x", "y")
    assert inter.backbone.encoder is inter.model.bert
    moved = inter.backbone.encoder.encoder.layer[0].attention.self.query.weight.numpy()
    assert not np.allclose(moved, bb.encoder.encoder.layer[0].attention.self.query.weight
                           .numpy())


def test_the_intermediate_strategy_starts_from_the_intermediate_model(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from minitl.recipes import intermediate

    a, b = tiny_assets(tmp_path / "a", n=80, seed=1), tiny_assets(tmp_path / "b", n=80, seed=2)
    real = intermediate.load_dataset
    monkeypatch.setattr(intermediate, "load_dataset", lambda d, split: real(
        "movie-reviews", split=split, root={"x": a["data"], "y": b["data"]}[d]))
    monkeypatch.setattr(intermediate, "related_sentiment_sets", lambda target: ["x", "y"])
    monkeypatch.setattr(intermediate, "STEPS", 3)
    monkeypatch.setattr(intermediate, "_CACHE", {})
    bb = tc.load_backbone(a["backbone"])
    task = tc.load_task("movie-reviews", bb.tokenizer, 16, 20, root=a["data"])
    fitted, r = tc.run_strategy("intermediate", bb, task, quick(steps=2))
    d = fitted.details["intermediate"]
    assert r.chosen == "intermediate" and d == {"datasets": ["x", "y"], "labels": 128,
                                                 "steps": 3}
    again, _ = tc.run_strategy("intermediate", bb, task, quick(steps=2))  # cached model
    np.testing.assert_array_equal(tc.predict_logits(again.model, task.eval),
                                  tc.predict_logits(fitted.model, task.eval))


def test_selection_keeps_the_best_held_out_state(tiny: dict[str, Any]) -> None:
    fitted, _ = tc.run_strategy("full", tiny["bb"], tiny["task"], quick(steps=10, holdout=8,
                                                                        lr=3e-3))
    sel = fitted.details["selection"]
    assert fitted.details["plan"]["holdout"] == 8 and len(sel["scores"]) >= 5
    best = max(sel["scores"], key=lambda r: (r["accuracy"], -r["loss"]))
    assert sel["best_step"] == best["step"]
