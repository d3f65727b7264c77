"""Bottleneck adapters and prompt tuning (minitl.transfer.adapters / .prompt): identity at
init, placement, what trains, adapter-only checkpoints, the soft prompt's insertion and
attention-mask extension on BERT and on a small stand-in model."""

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl

models = pytest.importorskip("minitl.models")  # being written alongside


def tiny_bert(cls=None, seed: int = 0, **kw):
    mt.manual_seed(seed)
    cfg = models.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=32,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return (cls or models.BertForSequenceClassification)(cfg, **kw)


def batch(seed: int = 0, b: int = 3, t: int = 6):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 40, (b, t))
    mask = np.ones((b, t), dtype=np.int64)
    mask[0, -2:] = 0
    ids[0, -2:] = 0
    return mt.tensor(ids), mt.tensor(mask), mt.tensor(rng.integers(0, 2, b))


def outputs(model, ids, mask):
    with mt.no_grad():
        return model(ids, attention_mask=mask).numpy()


def train_steps(model, ids, mask, y, n=3):
    opt = mt.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(ids, attention_mask=mask), y).backward()
        opt.step()


# ---- bottleneck adapters --------------------------------------------------------------------

def test_adapter_module_starts_as_identity():
    a = tl.Adapter(8, bottleneck=3, activation="gelu")
    z = mt.randn(2, 5, 8)
    with mt.no_grad():
        np.testing.assert_array_equal(a(z).numpy(), z.numpy())
    with pytest.raises(ValueError):
        tl.Adapter(8, activation="swish")


@pytest.mark.parametrize("placement,per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_adapter_placement_and_identity_at_init(placement, per_layer):
    model = tiny_bert()
    ids, mask, _ = batch()
    base = outputs(model, ids, mask)
    names = tl.apply_adapters(model, bottleneck=4, placement=placement)
    assert len(names) == 2 * per_layer
    assert "bert.encoder.layer.0.output.dense" in names
    assert ("bert.encoder.layer.0.attention.output.dense" in names) == (placement == "houlsby")
    np.testing.assert_array_equal(outputs(model, ids, mask), base)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    ln = {n for n, _ in model.named_parameters() if "LayerNorm" in n}
    expect = {n for n, _ in model.named_parameters()
              if ".adapter." in n or n.startswith("classifier.")}
    assert trainable == (expect | ln if placement == "houlsby" else expect)


def test_adapters_train_only_adapters_and_checkpoint_roundtrip():
    model = tiny_bert()
    base_sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    tl.apply_adapters(model, bottleneck=4, placement="pfeiffer")
    ids, mask, y = batch()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    train_steps(model, ids, mask, y)
    for n, p in model.named_parameters():
        changed = not np.array_equal(before[n], p.data)
        assert changed == (".adapter." in n or n.startswith("classifier.")), n
    out = outputs(model, ids, mask)
    sd = tl.adapter_state_dict(model)
    assert set(sd) == {n for n, _ in model.named_parameters()
                       if ".adapter." in n or n.startswith("classifier.")}
    fresh = tiny_bert(seed=9)
    fresh.load_state_dict(base_sd)
    tl.apply_adapters(fresh, bottleneck=4, placement="pfeiffer")
    tl.load_adapter_state_dict(fresh, sd)
    np.testing.assert_allclose(outputs(fresh, ids, mask), out, atol=1e-6)
    tl.remove_adapters(fresh)
    assert not any(".adapter." in n for n, _ in fresh.named_parameters())
    fresh.load_state_dict({k: v for k, v in base_sd.items()})
    np.testing.assert_allclose(outputs(fresh, ids, mask), outputs(tiny_bert(), ids, mask),
                               atol=1e-6)


def test_houlsby_layernorms_are_saved_and_custom_target():
    model = tiny_bert()
    tl.apply_adapters(model, bottleneck=2)
    sd = tl.adapter_state_dict(model)
    assert "bert.encoder.layer.1.output.LayerNorm.weight" in sd
    assert "bert.embeddings.word_embeddings.weight" not in sd
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    assert tl.apply_adapters(net, bottleneck=2, target=("0",)) == ["0"]
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "0.adapter.down.weight", "0.adapter.down.bias", "0.adapter.up.weight",
        "0.adapter.up.bias"]
    with pytest.raises(ValueError, match="no module matched"):
        tl.apply_adapters(nn.Sequential(nn.Linear(2, 2)), placement="pfeiffer")


# ---- prompt tuning --------------------------------------------------------------------------

class StandInEmbeddings(nn.Module):
    def __init__(self, vocab: int, d: int, t_max: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(t_max, d)

    def forward(self, ids):
        t = ids.shape[1]
        return self.word_embeddings(ids) + self.position_embeddings(mt.arange(t).unsqueeze(0))


class StandInEncoder(nn.Module):
    """One attention layer; `mask` (B, T) 1 = attend, as a raw integer mask."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x, mask=None):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        m = None if mask is None else (mt.as_tensor(mask) != 0).unsqueeze(1)  # (B, 1, T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m) + x


class StandInModel(nn.Module):
    def __init__(self, vocab: int = 30, d: int = 8, t_max: int = 16) -> None:
        super().__init__()
        self.embeddings = StandInEmbeddings(vocab, d, t_max)
        self.encoder = StandInEncoder(d)
        self.classifier = nn.Linear(d, 2)

    def forward(self, ids, attention_mask=None):
        h = self.encoder(self.embeddings(mt.as_tensor(ids)), attention_mask)
        return self.classifier(h[:, 0])


@pytest.mark.parametrize("position", ["after_cls", "front"])
def test_prompt_on_stand_in_matches_manual_insertion(position):
    mt.manual_seed(0)
    model = StandInModel()
    ids, mask, _ = batch(t=5)
    ids = mt.tensor(np.minimum(ids.numpy(), 29))
    prompt = tl.apply_prompt_tuning(model, n_tokens=3, init="random", position=position)
    assert model.soft_prompt is prompt and prompt.weight.shape == (3, 8)
    got = outputs(model, ids, mask)
    # the same computation by hand
    with mt.no_grad():
        e = model.embeddings.word_embeddings(ids) + model.embeddings.position_embeddings(
            mt.arange(5).unsqueeze(0))
        p = np.broadcast_to(prompt.weight.numpy(), (3, 3, 8))
        m = mask.numpy()
        ones = np.ones((3, 3), dtype=m.dtype)
        if position == "after_cls":
            x = np.concatenate([e.numpy()[:, :1], p, e.numpy()[:, 1:]], axis=1)
            mm = np.concatenate([m[:, :1], ones, m[:, 1:]], axis=1)
        else:
            x, mm = np.concatenate([p, e.numpy()], axis=1), np.concatenate([ones, m], axis=1)
        h = model.encoder.forward(mt.tensor(x), mt.tensor(mm))
        keep = [0, 4, 5, 6, 7] if position == "after_cls" else [3, 4, 5, 6, 7]
        ref = model.classifier(h[:, keep][:, 0]).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_prompt_tuning_on_bert_trains_only_prompt_and_head():
    model = tiny_bert()
    ids, mask, y = batch()
    base = outputs(model, ids, mask)
    prompt = tl.apply_prompt_tuning(model, n_tokens=4)  # vocab init
    # vocab init: the prompt rows are embedding outputs (LayerNorm'd: mean 0 per row)
    np.testing.assert_allclose(prompt.weight.numpy().mean(-1), 0, atol=1e-5)
    out = outputs(model, ids, mask)
    assert out.shape == base.shape and not np.allclose(out, base)
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    train_steps(model, ids, mask, y)
    for n, p in model.named_parameters():
        changed = not np.array_equal(before[n], p.data)
        assert changed == (n == "soft_prompt.weight" or n.startswith("classifier.")), n
    sd = tl.adapter_state_dict(model)
    assert set(sd) == {"soft_prompt.weight", "classifier.weight", "classifier.bias"}
    tl.remove_prompt_tuning(model)
    model.load_state_dict({k: v for k, v in model.state_dict().items()})
    assert "soft_prompt" not in model._modules


def test_prompt_keeps_padding_masked_and_token_outputs_aligned():
    encoder = tiny_bert(models.Bert)
    tl.apply_prompt_tuning(encoder, n_tokens=3, modules_to_save=())
    ids, mask, _ = batch()
    h = outputs(encoder, ids, mask)
    assert h.shape == (3, 6, 16)  # prompt positions are dropped from the output
    changed = ids.numpy().copy()
    changed[0, -2:] = 7  # padded positions: must not influence the real tokens
    h2 = outputs(encoder, mt.tensor(changed), mask)
    np.testing.assert_allclose(h2[0, :4], h[0, :4], atol=1e-6)
    encoder2 = tiny_bert(models.Bert)
    tl.apply_prompt_tuning(encoder2, n_tokens=3, keep_prompt_outputs=True)
    assert outputs(encoder2, ids, mask).shape == (3, 9, 16)
    with pytest.raises(ValueError, match="already"):
        tl.apply_prompt_tuning(encoder2)


def test_prompt_needs_embeddings():
    with pytest.raises(ValueError, match="embeddings"):
        tl.apply_prompt_tuning(nn.Sequential(nn.Linear(2, 2)))
