"""BERT encoder and heads: parity with a plain-torch BERT written here (no `transformers`),
a golden AdamW run, Hugging Face-layout loading and saving, tied weights, sentence
embeddings, and (slow) the real all-MiniLM-L6-v2 checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import minitl as mt
from minitl.io import hf
from minitl.models import (
    Bert,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    encode_sentences,
    mean_pool,
)

torch = pytest.importorskip("torch")
TF = torch.nn.functional

CFG = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
       "intermediate_size": 64, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
       "attention_probs_dropout_prob": 0.0}


def tiny(**kw: object) -> BertConfig:
    return BertConfig(**{**CFG, **kw})  # type: ignore[arg-type]


def randomize(model: mt.nn.Module, scale: float = 0.2, seed: int = 0) -> None:
    """Random values everywhere (zero biases and unit LayerNorms would hide bugs)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(0, scale, p.shape).astype(p.dtype)
        if p.ndim == 1 and p.shape[0] == model.config.hidden_size:
            p.data[...] += 1.0 if rng.random() < 0.5 else 0.0


def batch(b: int = 3, t: int = 9, vocab: int = 50, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (b, t))
    mask = np.ones((b, t), dtype=np.int64)
    mask[0, 6:] = 0
    mask[1, 3:] = 0
    ids[mask == 0] = 0
    tt = (np.arange(t)[None] >= 4).astype(np.int64).repeat(b, 0)
    return ids, mask, tt


def torch_params(model: mt.nn.Module, strip: str = "") -> dict:
    """The model's state dict as torch leaf tensors; tied names share one tensor."""
    out: dict = {}
    by_id: dict = {}
    for name, p in model.state_dict(keep_vars=True).items():
        if id(p) not in by_id:
            by_id[id(p)] = torch.tensor(p.numpy().copy(), requires_grad=p.dtype.kind == "f")
        out[name.removeprefix(strip)] = by_id[id(p)]
    return out


# ---- a reference BERT in plain torch, from the paper and Hugging Face's modeling code ----

def torch_bert(P: dict, ids, mask, tt, c: BertConfig):
    ids, tt = torch.as_tensor(ids), torch.as_tensor(tt)
    b, t = ids.shape
    nh, hs, eps = c.num_attention_heads, c.hidden_size // c.num_attention_heads, c.layer_norm_eps

    def lin(x, name):
        return TF.linear(x, P[name + ".weight"], P[name + ".bias"])

    def ln(x, name):
        return TF.layer_norm(x, (c.hidden_size,), P[name + ".weight"], P[name + ".bias"], eps)

    x = (TF.embedding(ids, P["embeddings.word_embeddings.weight"], padding_idx=c.pad_token_id)
         + P["embeddings.position_embeddings.weight"][torch.arange(t)][None]
         + P["embeddings.token_type_embeddings.weight"][tt])
    x = ln(x, "embeddings.LayerNorm")
    # Hugging Face's additive mask: 0 where attended, the dtype's minimum where padded.
    add = (1.0 - torch.as_tensor(mask, dtype=x.dtype))[:, None, None, :] \
        * torch.finfo(x.dtype).min
    for i in range(c.num_hidden_layers):
        pre = f"encoder.layer.{i}."

        def heads(z):
            return z.view(b, t, nh, hs).transpose(1, 2)
        q, k, v = (heads(lin(x, pre + "attention.self." + n)) for n in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hs) + add, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c.hidden_size)
        x = ln(lin(y, pre + "attention.output.dense") + x, pre + "attention.output.LayerNorm")
        h = TF.gelu(lin(x, pre + "intermediate.dense"))
        x = ln(lin(h, pre + "output.dense") + x, pre + "output.LayerNorm")
    return x


def torch_mlm(P: dict, h, c: BertConfig):
    z = TF.gelu(TF.linear(h, P["cls.predictions.transform.dense.weight"],
                          P["cls.predictions.transform.dense.bias"]))
    z = TF.layer_norm(z, (c.hidden_size,), P["cls.predictions.transform.LayerNorm.weight"],
                      P["cls.predictions.transform.LayerNorm.bias"], c.layer_norm_eps)
    return TF.linear(z, P["embeddings.word_embeddings.weight"], P["cls.predictions.bias"])


# ---- parity -----------------------------------------------------------------------------------

def test_hidden_states_and_pooler_match_torch_with_padding() -> None:
    cfg = tiny()
    model = BertForSequenceClassification(cfg, num_labels=3).eval()
    randomize(model)
    ids, mask, tt = batch()
    h = model.bert(ids, attention_mask=mask, token_type_ids=tt)
    logits = model(ids, mask, tt)
    P = torch_params(model, "bert.")
    with torch.no_grad():
        h_ref = torch_bert(P, ids, mask, tt, cfg)
        pooled = torch.tanh(TF.linear(h_ref[:, 0], P["pooler.dense.weight"],
                                      P["pooler.dense.bias"]))
        logits_ref = TF.linear(pooled, P["classifier.weight"], P["classifier.bias"])
    assert h.shape == (3, 9, cfg.hidden_size)
    np.testing.assert_allclose(h.numpy(), h_ref.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(logits.numpy(), logits_ref.numpy(), atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_tokens() -> None:
    model = Bert(tiny()).eval()
    randomize(model)
    ids, mask, tt = batch()
    full = model(ids, attention_mask=mask, token_type_ids=tt).numpy()
    alone = model(ids[1:2, :3], token_type_ids=tt[1:2, :3]).numpy()
    np.testing.assert_allclose(full[1, :3], alone[0], atol=1e-5)


def test_token_classification_shape_and_no_pooler() -> None:
    model = BertForTokenClassification(tiny(), num_labels=5)
    ids, mask, tt = batch()
    assert model(ids, mask, tt).shape == (3, 9, 5)
    assert model.bert.pooler is None
    assert not any(k.startswith("bert.pooler") for k in model.state_dict())


def test_golden_mlm_adamw_five_steps_match_torch() -> None:
    cfg = tiny()
    model = BertForMaskedLM(cfg)
    randomize(model, scale=0.1)
    ids, mask, tt = batch()
    labels = np.full_like(ids, -100)
    rng = np.random.default_rng(3)
    pick = (rng.random(ids.shape) < 0.4) & (mask == 1)
    labels[pick] = ids[pick]
    ids = np.where(pick, 3, ids)  # the "[MASK]" id of this toy vocabulary
    P = torch_params(model, "bert.")
    opt_mt = mt.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    unique = list({id(p): p for p in P.values() if p.requires_grad}.values())
    opt_t = torch.optim.AdamW(unique, lr=1e-2, weight_decay=0.01)
    losses_mt, losses_t = [], []
    for _ in range(5):
        logits = model(ids, mask, tt)
        loss = mt.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                              mt.tensor(labels.reshape(-1)))
        opt_mt.zero_grad()
        loss.backward()
        opt_mt.step()
        losses_mt.append(loss.item())
        ref = TF.cross_entropy(torch_mlm(P, torch_bert(P, ids, mask, tt, cfg), cfg)
                               .reshape(-1, cfg.vocab_size), torch.as_tensor(labels).reshape(-1))
        opt_t.zero_grad()
        ref.backward()
        opt_t.step()
        losses_t.append(ref.item())
    np.testing.assert_allclose(losses_mt, losses_t, atol=1e-5, rtol=1e-5)
    assert losses_mt[-1] < losses_mt[0]


def test_tied_decoder_is_the_word_embedding_and_gets_both_gradients() -> None:
    cfg = tiny()
    model = BertForMaskedLM(cfg)
    randomize(model)
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    names = [n for n, _ in model.named_parameters()]
    assert "cls.predictions.decoder.weight" not in names and len(names) == len(set(names))
    ids, mask, tt = batch()
    g = np.random.default_rng(5).normal(size=(3, 9, cfg.vocab_size)).astype(np.float32)
    (model(ids, mask, tt) * mt.tensor(g)).sum().backward()
    P = torch_params(model, "bert.")
    (torch_mlm(P, torch_bert(P, ids, mask, tt, cfg), cfg) * torch.as_tensor(g)).sum().backward()
    both = P["embeddings.word_embeddings.weight"].grad.numpy()
    np.testing.assert_allclose(emb.grad.numpy(), both, atol=1e-4, rtol=1e-4)
    # The decoder path alone (lookup through a detached copy) differs exactly on the rows
    # that are also looked up: both uses add into the one gradient.
    P = torch_params(model, "bert.")
    Q = dict(P, **{"embeddings.word_embeddings.weight":
                   P["embeddings.word_embeddings.weight"].detach()})
    h = torch_bert(Q, ids, mask, tt, cfg)
    (torch_mlm(P, h, cfg) * torch.as_tensor(g)).sum().backward()
    decoder_only = P["embeddings.word_embeddings.weight"].grad.numpy()
    looked_up = sorted(set(ids.ravel().tolist()) - {cfg.pad_token_id})
    others = sorted(set(range(cfg.vocab_size)) - set(looked_up))
    np.testing.assert_allclose(emb.grad.numpy()[others], decoder_only[others], atol=1e-4)
    assert np.abs(emb.grad.numpy()[looked_up] - decoder_only[looked_up]).min() > 1e-4


# ---- Hugging Face layout ----------------------------------------------------------------------

def write_hf_dir(path, model: mt.nn.Module, prefix: str = "", drop=(), extra=None) -> None:
    """A directory as Hugging Face writes it: config.json + model.safetensors (+ ids)."""
    path.mkdir(parents=True, exist_ok=True)
    sd = {prefix + k: v for k, v in model.state_dict().items()
          if k not in drop and "decoder." not in k}
    sd[prefix + "embeddings.position_ids"] = mt.arange(model.config.max_position_embeddings
                                                       ).unsqueeze(0)
    sd.update(extra or {})
    mt.save(sd, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(model.config.to_hf_dict()))


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_from_pretrained_round_trip(tmp_path, prefix: str) -> None:
    src = Bert(tiny())
    randomize(src)
    write_hf_dir(tmp_path, src, prefix)
    loaded, report = Bert.from_pretrained(tmp_path, output_loading_info=True)
    assert not loaded.training
    assert report.ignored == ["embeddings.position_ids"] and not report.missing
    ids, mask, tt = batch()
    np.testing.assert_array_equal(loaded(ids, mask, tt).numpy(), src.eval()(ids, mask, tt).numpy())
    assert loaded.config == tiny()


def test_heads_from_pretrained_load_encoder_and_init_new_head(tmp_path) -> None:
    src = Bert(tiny())
    randomize(src)
    write_hf_dir(tmp_path, src)
    clf, report = BertForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, hidden_dropout_prob=0.2, output_loading_info=True)
    assert clf.classifier.weight.shape == (3, 32) and clf.dropout.p == 0.2
    assert sorted(report.initialized) == ["classifier.bias", "classifier.weight"]
    np.testing.assert_array_equal(clf.bert.encoder.layer[1].output.dense.weight.numpy(),
                                  src.encoder.layer[1].output.dense.weight.numpy())
    mlm, report = BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    assert "cls.predictions.decoder.weight" in report.tied
    assert "pooler.dense.weight" in report.unused  # the MLM model has no pooler
    tok = BertForTokenClassification.from_pretrained(tmp_path, num_labels=4)
    assert tok.classifier.weight.shape == (4, 32)


def test_mlm_save_pretrained_writes_tied_weight_once_and_reloads(tmp_path) -> None:
    src = BertForMaskedLM(tiny())
    randomize(src)
    src.save_pretrained(tmp_path)
    keys = set(mt.load(tmp_path / "model.safetensors"))
    assert "bert.embeddings.word_embeddings.weight" in keys
    assert "cls.predictions.decoder.weight" not in keys and "cls.predictions.bias" in keys
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == \
        ["BertForMaskedLM"]
    loaded = BertForMaskedLM.from_pretrained(tmp_path)
    ids, mask, tt = batch()
    np.testing.assert_array_equal(loaded(ids, mask, tt).numpy(), src.eval()(ids, mask, tt).numpy())


def test_missing_keys_error_names_them(tmp_path) -> None:
    src = Bert(tiny())
    write_hf_dir(tmp_path, src, "bert.", drop=("encoder.layer.1.output.dense.weight",
                                               "embeddings.LayerNorm.bias"))
    with pytest.raises(RuntimeError) as e:
        Bert.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing" in msg and "encoder.layer.1.output.dense.weight" in msg
    assert "embeddings.LayerNorm.bias" in msg
    _model, report = Bert.from_pretrained(tmp_path, strict=False, output_loading_info=True)
    assert sorted(report.missing) == ["embeddings.LayerNorm.bias",
                                      "encoder.layer.1.output.dense.weight"]


def test_unexpected_and_mismatched_keys_error(tmp_path) -> None:
    src = Bert(tiny())
    write_hf_dir(tmp_path / "a", src, extra={"encoder.layer.0.attention.self.rotary":
                                             mt.zeros(4)})
    with pytest.raises(RuntimeError, match="unexpected.*encoder.layer.0.attention.self.rotary"):
        Bert.from_pretrained(tmp_path / "a")
    write_hf_dir(tmp_path / "b", src)
    with pytest.raises(RuntimeError, match="size mismatch"):
        Bert.from_pretrained(tmp_path / "b", intermediate_size=48)


def test_absent_pooler_unused_heads_and_legacy_names_are_fine(tmp_path) -> None:
    src = Bert(tiny())
    randomize(src)
    legacy = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma")
              .replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in src.state_dict().items() if not k.startswith("pooler")}
    legacy["cls.seq_relationship.weight"] = mt.zeros(2, 32)  # a pretraining head
    tmp_path.mkdir(exist_ok=True)
    mt.save(legacy, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(src.config.to_hf_dict()))
    loaded, report = Bert.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(report.initialized) == ["pooler.dense.bias", "pooler.dense.weight"]
    assert report.unused == ["cls.seq_relationship.weight"]
    np.testing.assert_array_equal(loaded.embeddings.LayerNorm.weight.numpy(),
                                  src.embeddings.LayerNorm.weight.numpy())


def test_pickle_checkpoints_are_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(tiny().to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle"):
        Bert.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a directory nor a minitl asset"):
        Bert.from_pretrained(tmp_path / "nope")


def test_configs() -> None:
    c = BertConfig.named("bert-mini")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (4, 256, 4)
    assert BertConfig.named("bert-mini", vocab_size=1000).vocab_size == 1000
    with pytest.raises(KeyError, match="bert-mini"):
        BertConfig.named("bert-huge")
    with pytest.raises(ValueError, match="multiple"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="relative_key"):
        BertConfig.from_hf_dict({"position_embedding_type": "relative_key"})
    assert BertConfig.from_hf_dict(tiny().to_hf_dict()) == tiny()


# ---- sentence embeddings ----------------------------------------------------------------------

def test_mean_pool_ignores_padding() -> None:
    h = mt.tensor(np.arange(12, dtype=np.float32).reshape(2, 3, 2))
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(mean_pool(h, mask).numpy(), [[1, 2], [6, 7]])


def test_encode_sentences_is_normalised_mean_pool(tmp_path) -> None:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "eats", "food", "bread"]
    (tmp_path / "vocab.txt").write_text("\n".join(words + [f"w{i}" for i in range(40)]) + "\n")
    tok = mt.data.WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt")
    model = Bert(tiny())
    randomize(model)
    model.train()
    sents = ["a man eats food", "bread", "a man eats bread bread"]
    emb = encode_sentences(model, tok, sents, batch_size=2)
    assert model.training and emb.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(emb.numpy(), axis=1), 1.0, rtol=1e-5)
    enc = tok(sents[1], return_tensors="np")
    with mt.no_grad():
        one = mean_pool(model.eval()(enc["input_ids"]), enc["attention_mask"]).numpy()[0]
    np.testing.assert_allclose(emb.numpy()[1], one / np.linalg.norm(one), atol=1e-6)


# ---- the real checkpoint ----------------------------------------------------------------------

@pytest.mark.slow
def test_real_minilm_ranks_paraphrase_first_and_matches_torch() -> None:
    bert = Bert.from_pretrained("minilm-l6")
    tok = mt.data.WordPieceTokenizer.from_pretrained("minilm-l6")
    sents = ["A man is eating food.", "A man is eating a piece of bread.",
             "The new movie is awesome.", "A man is playing a guitar.", "The cat sits outside.",
             "Stock markets fell sharply today.", "A woman is riding a horse."]
    emb = bert.encode_sentences(tok, sents).numpy()
    sims = emb[1:] @ emb[0]
    assert sims.argmax() == 0 and sims[0] > 0.7 and np.all(sims[1:] < 0.4), sims
    # the same weights through the plain-torch reference
    enc = tok(sents, padding=True, return_tensors="np")
    P = {k: torch.from_numpy(v) for k, v in hf.load_hf_state_dict(hf.resolve("minilm-l6")).items()}
    with torch.no_grad():
        h = torch_bert(P, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                       bert.config)
        m = torch.as_tensor(enc["attention_mask"], dtype=h.dtype)[..., None]
        ref = TF.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-4)
