"""Multi-task transfer: the task sampler's proportions, per-task heads, where gradients go,
and a few training steps through the Trainer on a tiny BERT."""

import math

import numpy as np
import pytest

import minitl as mt
from minitl import transfer as tl
from minitl.models import Bert, BertConfig
from minitl.optim import AdamW
from minitl.recipes.text_data import EncodedText, make_loader
from minitl.train import Trainer

SIZES = {"big": 400, "mid": 100, "small": 25}
LABELS = {"big": 2, "mid": 6, "small": 3}


def tiny_bert(seed: int = 0) -> Bert:
    mt.manual_seed(seed)
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return Bert(cfg, add_pooling_layer=False)


def batch(seed: int = 0, b: int = 4, t: int = 7) -> tuple[mt.Tensor, mt.Tensor]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 40, size=(b, t))
    mask = np.ones((b, t), np.int64)
    mask[0, 5:] = 0  # one padded row
    ids[0, 5:] = 0
    return mt.tensor(ids), mt.tensor(mask)


# ---- proportions -------------------------------------------------------------------------

@pytest.mark.parametrize("temperature, expected", [
    (1.0, [400 / 525, 100 / 525, 25 / 525]),
    (2.0, [20 / 35, 10 / 35, 5 / 35]),  # sqrt sizes 20, 10, 5
    (math.inf, [1 / 3, 1 / 3, 1 / 3]),
])
def test_probabilities_follow_size_to_the_one_over_t(temperature, expected):
    p = tl.task_probabilities(SIZES, temperature)
    assert list(p) == list(SIZES)
    np.testing.assert_allclose(list(p.values()), expected, rtol=1e-12)


def test_large_temperature_tends_to_uniform_and_small_to_the_largest_task():
    assert max(tl.task_probabilities(SIZES, 1e6).values()) < 1 / 3 + 1e-5
    assert tl.task_probabilities(SIZES, 0.05)["big"] > 1 - 1e-9  # no overflow either
    assert tl.task_probabilities({"a": 10**9, "b": 1}, 1e-3)["b"] == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_temperature_and_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="temperature"):
        tl.task_probabilities(SIZES, bad)
    with pytest.raises(ValueError, match="sizes"):
        tl.task_probabilities({"a": 0, "b": 3})
    with pytest.raises(ValueError):
        tl.task_probabilities({})


@pytest.mark.parametrize("temperature", [1.0, 2.0, math.inf])
def test_sampler_counts_lie_within_binomial_tolerance(temperature):
    n = 30_000
    sampler = tl.TaskSampler(SIZES, temperature, seed=3)
    draws = sampler.draw(n // 2) + [sampler.sample() for _ in range(n // 2)]
    counts = {t: draws.count(t) for t in SIZES}
    for t, p in sampler.probabilities.items():
        sd = math.sqrt(n * p * (1 - p))
        # 4.5 sd: a false alarm about once in 150,000 runs
        assert abs(counts[t] - n * p) < 4.5 * sd, (t, counts[t], n * p, sd)
    # the check has teeth: the same counts are far outside another temperature's band
    other = tl.task_probabilities(SIZES, math.inf if temperature == 1.0 else 1.0)
    assert any(abs(counts[t] - n * q) > 10 * math.sqrt(n * q * (1 - q))
               for t, q in other.items())


def test_sampler_is_reproducible_by_seed_and_epoch():
    a, b = tl.TaskSampler(SIZES, 2.0, seed=7), tl.TaskSampler(SIZES, 2.0, seed=7)
    first = a.draw(200)
    assert first == b.draw(200)
    assert first != tl.TaskSampler(SIZES, 2.0, seed=8).draw(200)
    second = a.draw(200)
    assert second != first
    a.set_epoch(0)
    assert a.draw(200) == first
    a.set_epoch(1)
    b.set_epoch(1)
    assert a.draw(50) == b.draw(50) != first[:50]


# ---- the model -----------------------------------------------------------------------------

def test_each_task_goes_through_its_own_head():
    model = tl.MultiTaskModel(tiny_bert(), LABELS)
    model.eval()
    ids, mask = batch()
    emb = model.embed(ids, mask).numpy()  # (B, D), unit rows
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    everything = model.forward_all(ids, mask)
    for task, c in LABELS.items():
        out = model(ids, mask, task=task)
        assert out.shape == (4, c)
        h = model.head(task)
        np.testing.assert_allclose(out.numpy(), emb @ h.weight.numpy().T + h.bias.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(everything[task].numpy(), out.numpy(), rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(KeyError, match="no head for task 'nope'"):
        model(ids, mask, task="nope")
    names = {n for n, _ in model.named_parameters()}
    assert {"heads.big.weight", "heads.mid.bias"} <= names
    assert any(n.startswith("bert.encoder.layer.0.") for n in names)


def test_gradients_reach_the_encoder_and_only_the_sampled_head():
    model = tl.MultiTaskModel(tiny_bert(), LABELS)
    ids, mask = batch()
    out = model(ids, mask, task="mid", labels=mt.tensor(np.array([0, 5, 2, 1])))
    assert set(out) == {"loss", "logits"}
    out["loss"].backward()
    for task in LABELS:
        g = model.head(task).weight.grad
        if task == "mid":
            assert g is not None and np.abs(g.numpy()).max() > 0
        else:
            assert g is None or not np.any(g.numpy())
    enc = [p.grad for n, p in model.named_parameters() if n.startswith("bert.encoder.")]
    assert all(g is not None for g in enc)
    assert sum(float(np.abs(g.numpy()).sum()) for g in enc) > 0


# ---- the loader and a few training steps ---------------------------------------------------

def toy_sets() -> dict[str, EncodedText]:
    rng = np.random.default_rng(0)
    out = {}
    for task, n in {"big": 24, "mid": 10, "small": 5}.items():
        ids = [rng.integers(1, 40, size=int(rng.integers(3, 9))) for _ in range(n)]
        out[task] = EncodedText(ids, rng.integers(0, LABELS[task], size=n))
    return out


def test_loader_interleaves_by_the_sampler_and_replays_an_epoch():
    sets = toy_sets()

    def make() -> tl.MultiTaskLoader:
        loaders = {t: make_loader(d, 4, shuffle=True, seed=1) for t, d in sets.items()}
        sampler = tl.TaskSampler({t: len(d) for t, d in sets.items()}, 1.0, seed=5)
        return tl.MultiTaskLoader(loaders, sampler, length=40)

    loader = make()
    got = list(loader)
    assert len(got) == len(loader) == 40
    expected = tl.TaskSampler({t: len(d) for t, d in sets.items()}, 1.0, seed=5).draw(40)
    assert [b["task"] for b in got] == expected
    assert sum(loader.counts.values()) == 40
    # "small" has 2 batches a pass, so it was restarted; every batch has its task's labels
    assert loader.counts["small"] > 2
    for b in got:
        assert int(b["labels"].numpy().max()) < LABELS[b["task"]]
    again = make()
    assert [(b["task"], b["input_ids"].numpy().tolist()) for b in again] == \
        [(b["task"], b["input_ids"].numpy().tolist()) for b in got]
    loader.set_epoch(1)
    assert [b["task"] for b in loader] != expected
    with pytest.raises(ValueError, match="differ"):
        tl.MultiTaskLoader({"big": got}, tl.TaskSampler(SIZES), length=3)


def test_trainer_takes_multitask_steps_and_untouched_heads_stay_put():
    sets = toy_sets()
    model = tl.MultiTaskModel(tiny_bert(1), LABELS, dropout=0.0)
    loaders = {t: make_loader(d, 4, shuffle=True, seed=0) for t, d in sets.items()}
    sampler = tl.TaskSampler({"big": 1, "mid": 1, "small": 10**6}, 1.0, seed=0)
    loader = tl.MultiTaskLoader(loaders, sampler, length=6)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    trainer = Trainer(model, opt, None, loader, max_steps=6, progress=False, seed=0)
    trainer.fit()
    assert trainer.step == 6 and all(math.isfinite(r["loss"]) for r in trainer.history)
    assert loader.counts == {"small": 6}  # p(big) = p(mid) = 1e-6 a draw
    for task in ("big", "mid"):
        assert np.array_equal(before[f"heads.{task}.weight"],
                              model.head(task).weight.numpy())
    assert not np.array_equal(before["heads.small.weight"],
                              model.head("small").weight.numpy())
    assert not np.array_equal(before["bert.encoder.layer.0.output.dense.weight"],
                              dict(model.named_parameters())[
                                  "bert.encoder.layer.0.output.dense.weight"].numpy())


def test_a_few_steps_fit_a_fixed_batch_of_each_task():
    model = tl.MultiTaskModel(tiny_bert(2), LABELS, dropout=0.0)
    opt = AdamW(model.parameters(), lr=3e-2, weight_decay=0.0)
    ids, mask = batch(1)
    y = {t: mt.tensor(np.arange(4) % c) for t, c in LABELS.items()}
    first = {t: float(model(ids, mask, task=t, labels=y[t])["loss"].item()) for t in LABELS}
    for task in tl.TaskSampler(SIZES, math.inf, seed=0).draw(60):
        opt.zero_grad()
        model(ids, mask, task=task, labels=y[task])["loss"].backward()
        opt.step()
    last = {t: float(model(ids, mask, task=t, labels=y[t])["loss"].item()) for t in LABELS}
    assert all(last[t] < 0.6 * first[t] for t in LABELS), (first, last)
