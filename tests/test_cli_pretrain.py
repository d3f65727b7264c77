"""`minitl pretrain`: the command, the recipe behind it, and resume after a real kill.

Fast tests run tiny models on small synthetic corpora and images written into tmp_path (no
network). The acceptance runs on the real data are `@pytest.mark.slow` (`pytest -m slow`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl.cli import pretrain as cli
from minitl.recipes.pretraining import (
    BERT_SPECIALS,
    PretrainConfig,
    RoundLoader,
    load_pretrained,
    pretrain,
    train_wordpiece,
    unigram_perplexity,
)
from minitl.train import read_jsonl

ROOT = Path(mt.__file__).resolve().parents[1]
WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "small",
         "red", "house", "tree", "where", "is", "my", "hat", "you", "me", "we", "saw", "it",
         "over", "there", "again", "never"]
TINY_GPT = ["--model", "gpt-tiny", "--set", "n_layer=1", "--set", "n_embd=16", "--set",
            "n_head=2", "--seq-len", "16", "--batch-size", "4", "--tokenizer", "char",
            "--eval-batches", "2", "--quiet"]
TINY_BERT = ["--model", "bert-tiny", "--set", "num_hidden_layers=1", "--set", "hidden_size=16",
             "--set", "num_attention_heads=2", "--set", "intermediate_size=32", "--seq-len",
             "16", "--batch-size", "4", "--vocab-size", "120", "--eval-batches", "2", "--quiet"]
TINY_RESNET = ["--model", "resnet-tiny", "--data", "digits", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(3, 10))) + rng.choice([".", "?", "!"])
             for _ in range(400)]
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the UCI digits file: 8x8 images, class c lights up column c % 8."""
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 10
    images = rng.integers(0, 4, (300, 8, 8))
    images[np.arange(300), :, labels % 8] += 12
    images[labels >= 8, :4] = 16 - images[labels >= 8, :4]
    rows = np.concatenate([images.reshape(300, 64), labels[:, None]], axis=1)
    path = tmp_path_factory.mktemp("data") / "digits.csv.gz"
    path.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> str:
    assert cli.run(parse(argv)) == 0
    return capsys.readouterr().out if capsys is not None else ""


# ---- the command line ---------------------------------------------------------------------------

def test_help_explains_every_flag() -> None:
    parser = argparse.ArgumentParser(prog="minitl pretrain", description=cli.__doc__)
    cli.add_arguments(parser)
    for action in parser._actions:
        assert action.help and len(action.help) > 15, action.option_strings
    text = parser.format_help()
    for flag in ("--model", "--data", "--steps", "--out", "--batch-size", "--lr", "--seq-len",
                 "--seed", "--eval-every", "--log-dir", "--resume", "--tokenizer",
                 "--objective", "--checkpoint-every", "gpt-mini", "bert-mini", "resnet-mini",
                 "contrastive", "wordpiece"):
        assert flag in text, flag


def test_wrong_combinations_fail_with_a_message(corpus: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--model", "bert-tiny", "--tokenizer", "char", "--data",
                     str(corpus)]) == 2
    assert "[MASK]" in capsys.readouterr().err
    assert cli.main(["--model", "gpt-tiny", "--objective", "mlm"]) == 2
    assert "clm" in capsys.readouterr().err
    assert cli.main(["--model", "gpt-tiny", "--data", "no-such-corpus"]) == 2
    assert "neither a dataset name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--model", "gpt-huge"])


# ---- gpt: causal LM ---------------------------------------------------------------------------

def test_gpt_writes_weights_config_and_tokenizer_that_load_back(
        tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run" / "gpt.safetensors"
    text = run_cli([*TINY_GPT, "--data", str(corpus), "--steps", "30", "--lr", "1e-2",
                    "--eval-every", "10", "--out", str(out)], capsys)
    assert "final metrics: eval_loss" in text and "unigram_perplexity" in text
    for name in ("gpt.safetensors", "gpt.config.json", "gpt.tokenizer.json"):
        assert (tmp_path / "run" / name).is_file(), name
    meta = json.loads((tmp_path / "run" / "gpt.config.json").read_text())
    assert meta["model_config"]["n_embd"] == 16 and meta["tokenizer"]["kind"] == "char"
    m = meta["metrics"]
    assert m["eval_perplexity"] == pytest.approx(np.exp(m["eval_loss"]))
    # 30 steps on a 30-word language already beat a model that ignores the context.
    assert m["eval_perplexity"] < meta["baselines"]["unigram_perplexity"]

    model, tok, _ = load_pretrained(out)
    ids = np.array([tok.encode("the cat sat on a mat.", add_special_tokens=False)])
    fresh, _, _ = load_pretrained(out)
    np.testing.assert_array_equal(model(ids).numpy(), fresh(ids).numpy())
    assert tok.decode(ids[0]) == "the cat sat on a mat."


def test_unigram_perplexity_by_hand() -> None:
    counts = np.array([3.0, 1.0, 0.0])  # add-one: p = (4, 2, 1) / 7
    got = unigram_perplexity(counts, np.array([0, 1, 2, 0]))
    assert got == pytest.approx(np.exp(-np.mean(np.log([4 / 7, 2 / 7, 1 / 7, 4 / 7]))))


# ---- bert: masked LM ----------------------------------------------------------------------------

def test_wordpiece_vocabulary_learnt_on_a_corpus_covers_it(corpus: Path) -> None:
    text = corpus.read_text(encoding="utf-8")
    tok = train_wordpiece(text + "Über naïve café!\n", vocab_size=150)
    assert [tok.vocab[t] for t in BERT_SPECIALS] == [0, 1, 2, 3, 4]
    assert tok.vocab_size <= 150 and any(t.startswith("##") for t in tok.vocab)
    pieces = tok.tokenize(text + " uber naive cafe!")
    assert "[UNK]" not in pieces
    assert "cat" in pieces and "the" in pieces  # frequent words became whole tokens


def test_bert_scores_only_masked_positions(tmp_path: Path, corpus: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bert.safetensors"
    run_cli([*TINY_BERT, "--data", str(corpus), "--steps", "20", "--lr", "1e-2",
             "--out", str(out)], capsys)
    meta = json.loads((tmp_path / "bert.config.json").read_text())
    assert set(meta["metrics"]) == {"eval_loss", "eval_accuracy"}
    assert set(meta["baselines"]) == {"chance_accuracy", "most_frequent_token_accuracy"}
    assert (tmp_path / "bert.vocab.txt").read_text().splitlines()[:5] == list(BERT_SPECIALS)
    model, tok, _ = load_pretrained(out)
    assert type(model).__name__ == "BertForMaskedLM" and tok.mask_token_id == 4


def test_masked_lm_objective_decodes_masked_positions_only() -> None:
    from minitl.models import BertConfig, BertForMaskedLM
    from minitl.recipes.pretraining import masked_lm_objective

    model = BertForMaskedLM(BertConfig.named("bert-tiny", vocab_size=50, hidden_size=16,
                                             num_attention_heads=2, intermediate_size=32,
                                             num_hidden_layers=1, hidden_dropout_prob=0.0,
                                             attention_probs_dropout_prob=0.0))
    ids = np.random.default_rng(0).integers(5, 50, (2, 8))
    labels = np.full((2, 8), -100)
    labels[0, 3], labels[1, 5] = ids[0, 3], ids[1, 5]
    loss, logits, y = masked_lm_objective(model, {"input_ids": ids, "labels": labels})
    assert logits.shape == (2, 50) and y.numpy().tolist() == [ids[0, 3], ids[1, 5]]
    full = mt.nn.functional.cross_entropy(model(ids).reshape(-1, 50), mt.tensor(labels.ravel()))
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)


# ---- resnet -------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["supervised", "contrastive"])
def test_resnet_objectives(tmp_path: Path, digits: Path, objective: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.safetensors"
    text = run_cli([*TINY_RESNET, "--data-root", str(digits), "--objective", objective,
                    "--epochs", "3", "--out", str(out)], capsys)
    meta = json.loads((tmp_path / "r.config.json").read_text())
    key = "test_accuracy" if objective == "supervised" else "test_knn_accuracy"
    assert key in text and meta["metrics"][key] > 0.3  # chance is 0.1
    assert meta["normalize"]["std"] > 0
    model, tok, _ = load_pretrained(out)
    assert tok is None and model(mt.zeros(2, 1, 8, 8)).shape == (2, 10)


# ---- the data stream ----------------------------------------------------------------------------

def test_round_loader_order_is_a_function_of_seed_and_step() -> None:
    loader = RoundLoader(10, 3, lambda idx: idx.tolist(), steps_per_round=4, seed=5)
    stream = [b for r in range(3) for b in loader]  # 12 batches = 4 epochs of 3 batches
    for e in range(4):
        epoch = [i for batch in stream[3 * e:3 * e + 3] for i in batch]
        assert len(set(epoch)) == 9  # no index twice within an epoch (one left over)
    again = RoundLoader(10, 3, lambda idx: idx.tolist(), steps_per_round=4, seed=5)
    again.set_epoch(2)
    assert list(again) == stream[8:12]
    other = RoundLoader(10, 3, lambda idx: idx.tolist(), steps_per_round=2, seed=5)
    with pytest.raises(ValueError, match="eval-every"):
        other.load_state_dict(loader.state_dict())


# ---- resume after a real kill -------------------------------------------------------------------

def _child(argv: list[str], slow: bool = False) -> subprocess.Popen[bytes]:
    """`minitl pretrain argv` in a fresh interpreter; with `slow`, each optimizer step
    sleeps a little so a kill lands mid-run, not after it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MINITL_SLOW_STEPS": "1" if slow else ""}
    return subprocess.Popen([sys.executable, "-c", _CHILD, *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_resume_after_kill_reproduces_the_uninterrupted_loss_curve(tmp_path: Path,
                                                                   corpus: Path) -> None:
    """`minitl pretrain ... --steps 40 --checkpoint-every 10` is killed (SIGKILL) once the
    step-20 checkpoint exists, resumed with --resume, and its JSONL log then holds the
    same loss at every step, bit for bit, as a run that was never interrupted. Every run is
    a fresh process, so no state of this test session can tell them apart."""
    flags = [*TINY_GPT, "--data", str(corpus), "--steps", "40", "--eval-every", "20",
             "--lr", "3e-3"]
    full_run = _child([*flags, "--out", str(tmp_path / "full.safetensors"), "--log-dir",
                       str(tmp_path / "full")])
    assert full_run.wait(timeout=120) == 0, full_run.communicate()[1].decode()
    ckpt_dir = tmp_path / "ckpt"
    cut = [*flags, "--out", str(tmp_path / "cut.safetensors"), "--log-dir",
           str(tmp_path / "cut"), "--checkpoint-every", "10", "--checkpoint-dir", str(ckpt_dir),
           "--keep-checkpoints", "0"]
    child = _child(cut, slow=True)
    target = ckpt_dir / "checkpoint-0000020.safetensors"
    deadline = time.monotonic() + 60
    while not target.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    killed_at = [r["step"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")
                 if r["type"] == "train"][-1]
    assert 20 <= killed_at < 40

    resumed_run = _child([*cut, "--resume", str(target)])
    assert resumed_run.wait(timeout=120) == 0, resumed_run.communicate()[1].decode()
    full = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    curve = [(r["step"], r["loss"]) for r in full if r["type"] == "train"]
    assert [(r["step"], r["loss"]) for r in resumed if r["type"] == "train"] == curve
    assert len(curve) == 40 and curve[-1][1] < curve[0][1]
    assert [(r["step"], r["eval_loss"]) for r in resumed if r["type"] == "eval"] == \
        [(r["step"], r["eval_loss"]) for r in full if r["type"] == "eval"]
    for k, v in mt.load(tmp_path / "full.safetensors").items():
        np.testing.assert_array_equal(mt.load(tmp_path / "cut.safetensors")[k].numpy(),
                                      v.numpy(), err_msg=k)


# The killed run: the real command, with a short sleep after each optimizer step.
_CHILD = """
import os, sys, time
from minitl.train import Trainer
if os.environ.get("MINITL_SLOW_STEPS"):
    step = Trainer._optimizer_step
    def slow_step(self, *args):
        step(self, *args)
        time.sleep(0.05)
    Trainer._optimizer_step = slow_step
from minitl.cli.pretrain import main
sys.exit(main(sys.argv[1:]))
"""


# ---- acceptance runs on the real data (minutes each) ---------------------------------------------

@pytest.mark.slow
def test_gpt_mini_beats_the_unigram_baseline(tmp_path: Path) -> None:
    r = pretrain(PretrainConfig(model="gpt-mini", data="movie-dialog", steps=300,
                                out=str(tmp_path / "gpt.safetensors"), progress=False))
    assert r.metrics["eval_perplexity"] < 0.5 * r.baselines["unigram_perplexity"]


@pytest.mark.slow
def test_bert_mini_mlm_accuracy_beats_the_baselines(tmp_path: Path) -> None:
    r = pretrain(PretrainConfig(model="bert-mini", data="movie-dialog", steps=300,
                                out=str(tmp_path / "bert.safetensors"), progress=False))
    assert r.metrics["eval_accuracy"] > 1.5 * r.baselines["most_frequent_token_accuracy"]
    assert r.metrics["eval_accuracy"] > 20 * r.baselines["chance_accuracy"]


@pytest.mark.slow
def test_resnet_mini_fashion_mnist(tmp_path: Path) -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    r = pretrain(PretrainConfig(model="resnet-mini", data="fashion-mnist", epochs=1,
                                out=str(tmp_path / "resnet.safetensors"), progress=False))
    assert r.metrics["test_accuracy"] >= 0.88


# ---- vit: supervised, mae, simclr on the same backbone -------------------------------------------

TINY_VIT = ["--model", "vit-tiny", "--data", "digits", "--set", "patch_size=2", "--set",
            "embed_dim=16", "--batch-size", "32", "--lr", "3e-3", "--eval-every", "10",
            "--quiet"]


@pytest.mark.parametrize("objective", ["supervised", "mae", "simclr"])
def test_vit_objectives_train_save_and_load_back(tmp_path: Path, digits: Path, objective: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from minitl.cli.pretrain_vit import load_pretrained_vit

    out = tmp_path / "v.safetensors"
    text = run_cli([*TINY_VIT, "--data-root", str(digits), "--objective", objective,
                    "--steps", "40", "--log-dir", str(tmp_path / "log"), "--out", str(out)],
                   capsys)
    meta = json.loads((tmp_path / "v.config.json").read_text())
    assert meta["family"] == "vit" and meta["objective"] == objective
    assert meta["model_config"]["patch_size"] == 2 and meta["model_config"]["image_size"] == 8
    assert "test_knn_accuracy" in text and meta["steps"] == 40
    evals = [r["eval_loss"] for r in read_jsonl(tmp_path / "log" / "metrics.jsonl")
             if r.get("type") == "eval"]
    assert len(evals) == 4 and evals[-1] < evals[0]  # the objective is being optimised
    if objective == "supervised":
        assert meta["metrics"]["test_accuracy"] > 0.3  # chance is 0.1
    net, saved = load_pretrained_vit(out)
    assert saved["normalize"]["std"] > 0
    x = mt.tensor(np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32))
    again, _ = load_pretrained_vit(out)
    np.testing.assert_array_equal(net.features(x).numpy(), again.features(x).numpy())
    assert net(x).shape == (2, 10)


def test_vit_wrong_settings_fail_with_a_message(digits: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--model", "vit-tiny", "--data", "digits", "--data-root", str(digits), "--quiet"]
    assert cli.main([*base, "--objective", "mlm"]) == 2
    assert "supervised, mae, simclr" in capsys.readouterr().err
    assert cli.main([*base, "--tokenizer", "char"]) == 2
    assert "text models" in capsys.readouterr().err
    assert cli.main([*base, "--set", "num_classes=3"]) == 2
    assert "decided by the images" in capsys.readouterr().err
    assert cli.main([*base]) == 2  # 8x8 digits do not split into 7x7 patches
    assert "image_size 8 is not a multiple of patch_size 7" in capsys.readouterr().err
    assert cli.main(["--model", "resnet-tiny", "--quick"]) == 2
    assert "--quick" in capsys.readouterr().err


def test_vit_quick_settings_are_the_ones_the_help_names() -> None:
    from minitl.cli.pretrain_vit import QUICK, resolve

    cfg = resolve(PretrainConfig(model="vit-mini", objective="contrastive"), quick=True)
    assert cfg.objective == "simclr"
    for key, value in QUICK.items():
        assert getattr(cfg, key) == value
        assert cli._QUICK["--" + key.replace("_", "-")] == value
    asked = resolve(PretrainConfig(model="vit-mini", steps=7), quick=True)
    assert asked.steps == 7 and asked.epochs is None
    assert parse(["--model", "resnet-tiny", "--objective", "simclr"]).objective == "simclr"
    assert cli.config_from_args(parse(["--model", "resnet-tiny", "--objective",
                                       "simclr"])).objective == "contrastive"


# ---- --model word2vec ---------------------------------------------------------------------------

def test_word2vec_trains_saves_and_reports(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from minitl.models.word2vec import Word2Vec

    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "money", "night", "car", "love", "cast", "script"]
    (tmp_path / "text.txt").write_text("\n".join(" ".join(rng.choice(words, 8))
                                                 for _ in range(300)))
    out = tmp_path / "w2v.safetensors"
    assert cli.main(["--model", "word2vec", "--data", str(tmp_path / "text.txt"), "--epochs",
                     "2", "--set", "dim=8", "--set", "min_count=1", "--quiet", "--out",
                     str(out)]) == 0
    model = Word2Vec.load(out)
    assert model.dim == 8 and len(model.vocab) == len(words)
    config = json.loads((tmp_path / "w2v.config.json").read_text())
    assert config["family"] == "word2vec" and len(config["epoch_loss"]) == 2
    assert config["settings"]["dim"] == 8 and config["words_per_second"] > 0
    printed = capsys.readouterr().out
    assert "trained 2 epochs" in printed and "  good: " in printed


@pytest.mark.parametrize("flags,match", [
    (["--steps", "5"], "--steps do not apply"),
    (["--set", "depth=2"], "no setting depth"),
    (["--epochs", "1.5"], "whole number"),
    (["--data", "no-such-corpus"], "no-such-corpus"),
])
def test_word2vec_refuses_what_does_not_apply(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              flags: list[str], match: str) -> None:
    assert cli.main(["--model", "word2vec", "--out", str(tmp_path / "w.safetensors"),
                     *flags]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "w.safetensors").exists()
