"""minitl.transfer: freezing, parameter counts, heads, cached features, gradual unfreezing
and layer-wise learning rates."""

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from minitl import transfer as tl
from minitl.transfer.schedules import block_index

models = pytest.importorskip("minitl.models")  # being written alongside


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.LayerNorm = nn.LayerNorm(d)

    def forward(self, x):
        return self.LayerNorm(x + self.dense(x).relu())


class Encoder(nn.Module):
    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Block(d) for _ in range(n))

    def forward(self, x):
        for b in self.layer:
            x = b(x)
        return x


class TinyClassifier(nn.Module):
    """embeddings -> encoder.layer.{i} -> pooler -> classifier, HF-like names."""

    def __init__(self, vocab: int = 20, d: int = 8, n: int = 3, labels: int = 2) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab, d)
        self.encoder = Encoder(d, n)
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, labels)

    def forward(self, ids):
        h = self.encoder(self.embeddings(ids))
        return self.classifier(self.pooler(h[:, 0]).tanh())


def _snapshot(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def test_freeze_patterns_and_except():
    m = TinyClassifier()
    frozen = tl.freeze(m, except_=("classifier.*",))
    assert "classifier.weight" not in frozen and "embeddings.weight" in frozen
    assert [n for n, p in m.named_parameters() if p.requires_grad] == [
        "classifier.weight", "classifier.bias"]
    tl.unfreeze(m, "encoder.layer.2.*")
    trainable = {n for n, _ in tl.trainable_parameters(m)}
    assert trainable == {"classifier.weight", "classifier.bias", "encoder.layer.2.dense.weight",
                         "encoder.layer.2.dense.bias", "encoder.layer.2.LayerNorm.weight",
                         "encoder.layer.2.LayerNorm.bias"}
    tl.freeze(m, "*.LayerNorm.*")
    assert not m.encoder.layer[2].LayerNorm.weight.requires_grad
    # unfreeze takes patterns as freeze does: one glob or a sequence of them
    assert set(tl.unfreeze(m, ["*.2.LayerNorm.weight", "*.1.LayerNorm.bias"])) == {
        "encoder.layer.2.LayerNorm.weight", "encoder.layer.1.LayerNorm.bias"}
    tl.unfreeze(m)
    assert all(p.requires_grad for p in m.parameters())


def test_frozen_parameters_bit_identical_under_adamw_with_weight_decay():
    m = TinyClassifier()
    ids = mt.tensor(np.random.default_rng(0).integers(0, 20, (4, 5)))
    y = mt.tensor(np.array([0, 1, 1, 0]))
    opt = mt.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)  # frozen ones included
    m(ids).sum().backward()  # stale gradients everywhere: freeze must drop them
    tl.freeze(m, except_=("classifier.*",))
    before = _snapshot(m)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(m(ids), y).backward()
        opt.step()
    after = _snapshot(m)
    for n in before:
        if n.startswith("classifier."):
            assert not np.array_equal(before[n], after[n]), n
        else:
            assert np.array_equal(before[n], after[n]), n


def test_count_parameters_counts_tied_weights_once():
    m = nn.Module()
    m.emb = nn.Embedding(10, 4)
    m.out = nn.Linear(4, 10, bias=False)
    m.out.weight = m.emb.weight  # tied
    m.head = nn.Linear(4, 2)
    assert tl.count_parameters(m) == (40 + 10, 40 + 10)
    tl.freeze(m, "out.*")  # the tied weight matches through its second name
    assert not m.emb.weight.requires_grad
    assert tl.count_parameters(m) == (10, 50)
    tl.freeze(m, "emb.*", except_=("out.*",))  # ... and is kept through it
    tl.unfreeze(m, "out.weight")
    assert tl.count_parameters(m) == (50, 50)


def test_replace_and_reinit_head():
    m = TinyClassifier()
    old = tl.replace_head(m, "classifier", 5)
    assert isinstance(old, nn.Linear) and old.out_features == 2
    assert m.classifier.out_features == 5 and m.classifier.in_features == 8
    assert list(m._modules)[-1] == "classifier"  # position kept
    assert m(mt.tensor(np.zeros((2, 3), dtype=np.int64))).shape == (2, 5)
    tl.replace_head(m, "encoder.layer.1", nn.Identity())
    assert isinstance(m.encoder.layer[1], nn.Identity)
    w = m.classifier.weight.data.copy()
    tl.freeze(m)
    tl.reinit_head(m, "classifier")
    assert not np.array_equal(w, m.classifier.weight.data)
    assert m.classifier.weight.requires_grad and not m.pooler.weight.requires_grad
    with pytest.raises(AttributeError):
        tl.replace_head(m, "nothing", nn.Identity())


def test_extract_features_runs_backbone_once_and_caches():
    rng = np.random.default_rng(0)
    data = [(mt.tensor(rng.standard_normal((4, 6)).astype(np.float32)),
             mt.tensor(rng.integers(0, 3, 4))) for _ in range(3)]
    backbone = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5))
    calls = []
    backbone.register_forward_hook(lambda mod, args, out: calls.append(1))
    cache = tl.FeatureCache()
    fs = None
    for _epoch in range(4):
        fs = tl.extract_features(backbone, data, cache=cache)
    assert len(calls) == 3  # one pass over the 3 batches, then cache hits
    assert cache.hits == 3 and cache.misses == 1
    assert fs.features.shape == (12, 5) and fs.targets[0].shape == (12,)
    assert backbone.training  # eval only during extraction
    with mt.no_grad():
        backbone.eval()
        ref = np.concatenate([backbone(x).numpy() for x, _ in data])
    np.testing.assert_array_equal(fs.features.numpy(), ref)  # eval mode: no dropout
    # changed weights or data change the key and run the backbone again
    backbone[0].weight.data[0, 0] += 1
    tl.extract_features(backbone, data, cache=cache)
    assert len(calls) == 6 + 3
    batches = list(fs.batches(5, shuffle=True, seed=0))
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]


def test_feature_cache_on_disk(tmp_path):
    data = [np.ones((2, 3), dtype=np.float32)]
    lin = nn.Linear(3, 2)
    fs = tl.extract_features(lin, data, cache=tl.FeatureCache(tmp_path), key="k")
    again = tl.FeatureCache(tmp_path).get("k")  # a fresh process would see the file
    np.testing.assert_array_equal(again.features.numpy(), fs.features.numpy())


def test_block_index_names():
    assert block_index("bert.encoder.layer.11.output.dense.weight") == (
        "bert.encoder.layer.11", 11)
    assert block_index("transformer.h.3.attn.c_proj.weight") == ("transformer.h.3", 3)
    assert block_index("layer2.0.conv1.weight") == ("layer2", 2)
    assert block_index("embeddings.word_embeddings.weight") is None


def test_layerwise_lr_groups_cover_each_param_once_with_right_lrs():
    m = TinyClassifier(n=3)
    groups = tl.layerwise_lr_groups(m, lr=1.0, decay=0.5)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in m.named_parameters())
    assert len({id(p) for g in groups for p in g["params"]}) == len(list(m.parameters()))
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr["classifier.weight"] == lr["pooler.bias"] == 1.0
    assert lr["encoder.layer.2.dense.weight"] == 1.0
    assert lr["encoder.layer.1.dense.weight"] == 0.5
    assert lr["encoder.layer.0.LayerNorm.bias"] == 0.25
    assert lr["embeddings.weight"] == 0.125
    opt = mt.optim.AdamW(groups, lr=1.0)  # the groups are accepted as they are
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5, 0.25, 0.125]
    # only trainable parameters by default; no_decay splits the groups
    tl.freeze(m, "embeddings.*")
    groups = tl.layerwise_lr_groups(m, lr=1.0, decay=0.5, weight_decay=0.01,
                                    no_decay=("*.bias", "*LayerNorm.weight"))
    names = [n for g in groups for n in g["param_names"]]
    assert "embeddings.weight" not in names and len(names) == len(set(names))
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert wd["classifier.bias"] == 0.0 and wd["classifier.weight"] == 0.01
    # slanted triangular / warmup-cosine run per group
    opt = mt.optim.SGD(tl.layerwise_lr_groups(m, lr=1.0, decay=0.5), lr=1.0)
    sched = tl.slanted_triangular(opt, num_training_steps=100, cut_frac=0.1, ratio=32)
    for _ in range(10):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.5, 0.25])
    opt = mt.optim.SGD(tl.layerwise_lr_groups(m, lr=1.0, decay=0.5), lr=1.0)
    sched = tl.warmup_cosine(opt, num_warmup_steps=2, num_training_steps=10)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.0]


def test_layerwise_lr_groups_on_real_models():
    bert = models.BertForSequenceClassification(
        models.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=32), num_labels=3)
    lr = {n: g["lr"] for g in tl.layerwise_lr_groups(bert, lr=1.0, decay=0.5)
          for n in g["param_names"]}
    assert lr["classifier.weight"] == lr["bert.pooler.dense.weight"] == 1.0
    assert lr["bert.encoder.layer.1.output.dense.weight"] == 1.0
    assert lr["bert.encoder.layer.0.attention.self.query.weight"] == 0.5
    assert lr["bert.embeddings.LayerNorm.weight"] == 0.25
    resnet = models.ResNet(models.ResNetConfig(widths=(4, 8), depths=(1, 1),
                                                     num_classes=3, stem="small"))
    lr = {n: g["lr"] for g in tl.layerwise_lr_groups(resnet, lr=1.0, decay=0.5)
          for n in g["param_names"]}
    assert lr["fc.weight"] == 1.0 and lr["layer2.0.conv1.weight"] == 1.0
    assert lr["layer1.0.conv1.weight"] == 0.5 and lr["conv1.weight"] == 0.25


def test_gradual_unfreezing_in_order():
    m = TinyClassifier(n=3)
    stages = tl.bert_unfreezing_stages(m)
    assert stages == [["pooler.weight", "pooler.bias", "classifier.weight", "classifier.bias"],
                      ["encoder.layer.2.*"], ["encoder.layer.1.*"], ["encoder.layer.0.*"],
                      ["embeddings.weight"]]
    g = tl.GradualUnfreezing(m, stages, every=2)

    def trainable():
        return {n for n, p in m.named_parameters() if p.requires_grad}

    assert trainable() == set(stages[0])
    assert g.step() == []  # epoch 1 of 2: nothing new
    new = g.step()
    assert set(new) == {"encoder.layer.2.dense.weight", "encoder.layer.2.dense.bias",
                        "encoder.layer.2.LayerNorm.weight", "encoder.layer.2.LayerNorm.bias"}
    seen = [len(trainable())]
    for _ in range(8):
        g.step()
        seen.append(len(trainable()))
    assert seen == sorted(seen) and g.done and trainable() == {n for n, _ in
                                                               m.named_parameters()}
    state = g.state_dict()
    g2 = tl.GradualUnfreezing(m, stages, every=2)
    assert len(trainable()) == 4
    g2.load_state_dict(state)
    assert g2.done and all(p.requires_grad for p in m.parameters())


def test_bert_unfreezing_stages_on_bert():
    bert = models.BertForSequenceClassification(
        models.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=32))
    stages = tl.bert_unfreezing_stages(bert)
    assert stages[0] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias",
                         "classifier.weight", "classifier.bias"]
    assert stages[1:3] == [["bert.encoder.layer.1.*"], ["bert.encoder.layer.0.*"]]
    assert all(n.startswith("bert.embeddings.") for n in stages[3])
