"""Discriminative learning rates on models whose parameter names carry no block index:
depth falls back to module registration order (minitl.transfer.schedules)."""

import pytest

import minitl as mt
from minitl import nn
from minitl import transfer as tl


class MLP(nn.Module):
    """body = Sequential(Linear, ReLU, Linear, ReLU, Linear), then a head: no block index
    in any name ("body.0.weight", "head.weight")."""

    def __init__(self, head_first: bool = False) -> None:
        super().__init__()
        if head_first:  # registered before the body: only head_patterns can put it on top
            self.head = nn.Linear(4, 2)
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
                                  nn.Linear(4, 4))
        if not head_first:
            self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(x))


def _lrs(model, **kw):
    """name -> lr, checking that every trainable parameter is in exactly one group."""
    groups = tl.layerwise_lr_groups(model, **kw)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    return {n: g["lr"] for g in groups for n in g["param_names"]}


def _layer(lrs, prefix):
    """The one lr shared by a module's weight and bias."""
    got = {lrs[f"{prefix}.weight"], lrs[f"{prefix}.bias"]}
    assert len(got) == 1
    return got.pop()


def test_sequential_body_ranked_by_module_order():
    lrs = _lrs(MLP(), lr=1.0, decay=0.5)
    # bottom-up: body.0, body.2, body.4, head -> lr * d^3, d^2, d, 1
    assert [_layer(lrs, p) for p in ("body.0", "body.2", "body.4", "head")] == [
        0.125, 0.25, 0.5, 1.0]
    groups = tl.layerwise_lr_groups(MLP(), lr=1.0, decay=0.5)
    assert [g["depth"] for g in groups] == [0, 1, 2, 3]


def test_head_patterns_forced_to_top_and_left_out_of_the_ranking():
    # head on top already: it keeps lr and the layer under it gets lr too (as BERT's
    # top block does beside its classifier)
    lrs = _lrs(MLP(), lr=1.0, decay=0.5, head_patterns=("head.*",))
    assert [_layer(lrs, p) for p in ("body.0", "body.2", "body.4", "head")] == [
        0.25, 0.5, 1.0, 1.0]
    # head registered first: module order alone would put it at the bottom
    lrs = _lrs(MLP(head_first=True), lr=1.0, decay=0.5)
    assert _layer(lrs, "head") == 0.125 and _layer(lrs, "body.4") == 1.0
    lrs = _lrs(MLP(head_first=True), lr=1.0, decay=0.5, head_patterns=("head.*",))
    assert [_layer(lrs, p) for p in ("body.0", "body.2", "body.4", "head")] == [
        0.25, 0.5, 1.0, 1.0]


def test_fallback_ranks_frozen_layers_too():
    m = MLP()
    tl.freeze(m, "body.2.*")  # a frozen middle layer does not move the others
    lrs = _lrs(m, lr=1.0, decay=0.5)
    assert "body.2.weight" not in lrs
    assert [_layer(lrs, p) for p in ("body.0", "body.4", "head")] == [0.125, 0.5, 1.0]


def test_unfreezing_stages_by_module_order():
    m = MLP()
    assert tl.bert_unfreezing_stages(m) == [
        ["head.weight", "head.bias"], ["body.4.weight", "body.4.bias"],
        ["body.2.weight", "body.2.bias"], ["body.0.weight", "body.0.bias"]]
    stages = tl.bert_unfreezing_stages(m, head_patterns=("head.*",))
    assert stages[0] == ["head.weight", "head.bias"]
    assert stages[1:] == [["body.4.weight", "body.4.bias"], ["body.2.weight", "body.2.bias"],
                          ["body.0.weight", "body.0.bias"]]
    g = tl.GradualUnfreezing(m, stages)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == set(stages[0])
    g.step()
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {
        "head.weight", "head.bias", "body.4.weight", "body.4.bias"}


def test_depth_fn_still_overrides_the_fallback():
    lrs = _lrs(MLP(), lr=1.0, decay=0.5, depth_fn=lambda n: 5 if n.startswith("head.") else None)
    assert _layer(lrs, "head") == 0.5**5 and _layer(lrs, "body.4") == 0.5


def test_named_blocks_keep_the_name_rule():
    """A BERT-like model (`encoder.layer.{i}`) is ranked by block index exactly as before:
    pooler and classifier on top with the top block, the embeddings at the bottom."""
    models = pytest.importorskip("minitl.models")
    bert = models.BertForSequenceClassification(
        models.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                          num_attention_heads=2, intermediate_size=32), num_labels=3)
    groups = tl.layerwise_lr_groups(bert, lr=1.0, decay=0.5)
    assert [g["depth"] for g in groups] == [0, 1, 2, 3]
    for n, p in bert.named_parameters():
        lr = next(g["lr"] for g in groups if any(q is p for q in g["params"]))
        if n.startswith(("classifier.", "bert.pooler.", "bert.encoder.layer.2.")):
            assert lr == 1.0, n
        elif n.startswith("bert.encoder.layer.1."):
            assert lr == 0.5, n
        elif n.startswith("bert.encoder.layer.0."):
            assert lr == 0.25, n
        else:
            assert n.startswith("bert.embeddings.") and lr == 0.125, n
    stages = tl.bert_unfreezing_stages(bert)
    assert stages[1:4] == [["bert.encoder.layer.2.*"], ["bert.encoder.layer.1.*"],
                           ["bert.encoder.layer.0.*"]]
    opt = mt.optim.AdamW(groups, lr=1.0)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5, 0.25, 0.125]
