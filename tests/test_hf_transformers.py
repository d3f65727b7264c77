"""Parity with Hugging Face `transformers` itself (in the test extra; skipped without it): a
randomly initialised BERT saved by `save_pretrained` loads in minitl with the same hidden
states, pooler output and classifier logits, a minitl checkpoint loads in transformers, and
(slow: the real weights) all-MiniLM-L6-v2 sentence embeddings equal transformers' output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl.models import Bert, BertConfig
from minitl.models.bert import BertForSequenceClassification, mean_pool

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

HF_CONFIG = {"vocab_size": 211, "hidden_size": 48, "num_hidden_layers": 3,
             "num_attention_heads": 4, "intermediate_size": 96, "max_position_embeddings": 64,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
IDS = np.random.default_rng(3).integers(1, 211, size=(4, 17))
MASK = np.ones_like(IDS)
MASK[1, 9:] = 0
MASK[3, 2:] = 0
TYPES = np.zeros_like(IDS)
TYPES[:, 10:] = 1


def _hf_out(model, **extra):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                     token_type_ids=torch.tensor(TYPES), **extra)


def _ours(model, **extra):  # type: ignore[no-untyped-def]
    with mt.no_grad():
        return model(mt.tensor(IDS), mt.tensor(MASK), mt.tensor(TYPES), **extra)


def test_transformers_bert_loads_with_the_same_hidden_states(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**HF_CONFIG)).eval()
    hf.save_pretrained(tmp_path)
    ours = Bert.from_pretrained(tmp_path)
    want = _hf_out(hf)
    h = _ours(ours)
    valid = MASK.astype(bool)  # padded positions carry no meaning in either
    np.testing.assert_allclose(h.numpy()[valid], want.last_hidden_state.numpy()[valid],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.pool(h).numpy(), want.pooler_output.numpy(),
                               rtol=1e-4, atol=1e-4)


def test_classifier_round_trips_both_ways(tmp_path: Path) -> None:
    torch.manual_seed(1)
    hf = transformers.BertForSequenceClassification(
        transformers.BertConfig(**HF_CONFIG, num_labels=3)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = BertForSequenceClassification.from_pretrained(tmp_path / "hf", num_labels=3)
    want = _hf_out(hf).logits.numpy()
    np.testing.assert_allclose(_ours(ours).numpy(), want, rtol=1e-4, atol=1e-4)

    mt.manual_seed(2)
    mine = BertForSequenceClassification(BertConfig(**HF_CONFIG), num_labels=3).eval()
    mine.save_pretrained(tmp_path / "mine")
    back = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "mine").eval()
    np.testing.assert_allclose(_hf_out(back).logits.numpy(), _ours(mine).numpy(), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.slow
def test_real_minilm_sentence_embeddings_equal_transformers() -> None:
    from minitl.io import hf as hf_io

    directory = hf_io.resolve("minilm-l6")
    tok = mt.data.WordPieceTokenizer.from_pretrained("minilm-l6")
    sentences = ["A man is eating food.", "A man is eating a piece of bread.",
                 "The new movie is awesome.", "A monkey is playing drums."]
    enc = tok(sentences, padding=True, return_tensors="np")
    ours = Bert.from_pretrained("minilm-l6")
    with mt.no_grad():
        mine = mean_pool(ours(mt.tensor(enc["input_ids"]), mt.tensor(enc["attention_mask"])),
                         mt.tensor(enc["attention_mask"])).numpy()
    hf = transformers.BertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        h = hf(input_ids=torch.tensor(enc["input_ids"]),
               attention_mask=torch.tensor(enc["attention_mask"])).last_hidden_state
    m = torch.tensor(enc["attention_mask"])[..., None].float()
    want = ((h * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(mine, want, rtol=1e-4, atol=1e-4)
