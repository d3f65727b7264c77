"""minitl.transfer.ensemble: output ensembles, LoRA adapter ensembles on one base, soups."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.transfer.ensemble import ensemble_parameters


class Tiny(nn.Module):
    """Embedding -> two adapted Linear layers with a nonlinearity -> mean pool -> head."""

    def __init__(self, vocab: int = 11, d: int = 8, c: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.query = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.drop = nn.Dropout(0.5)
        self.classifier = nn.Linear(d, c)

    def forward(self, ids: mt.Tensor, mask: mt.Tensor) -> mt.Tensor:
        h = self.emb(ids)  # (B, T, D)
        h = self.value(F.gelu(self.query(h)))
        h = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        return self.classifier(self.drop(h))  # (B, C)


def _inputs(b: int = 5, t: int = 4, seed: int = 0) -> tuple[mt.Tensor, mt.Tensor]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 11, (b, t))
    mask = np.ones((b, t), np.float32)
    mask[0, 2:] = 0
    return mt.tensor(ids), mt.tensor(mask)


def _members(k: int = 3) -> list[Tiny]:
    out = []
    for i in range(k):
        mt.manual_seed(i)
        out.append(Tiny())
    return out


def _np(t: mt.Tensor) -> np.ndarray:
    return t.numpy()


# ---- LogitEnsemble ----------------------------------------------------------------------

def test_logit_ensemble_is_the_exact_mean_of_its_members() -> None:
    members, x = _members(), _inputs()
    ens = tl.LogitEnsemble(members)
    with mt.no_grad():
        outs = np.stack([_np(m(*x)) for m in members])
        got = _np(ens(*x))
    assert all(not m.training for m in members)  # dropout off, or members would be noise
    np.testing.assert_array_equal(got, outs.mean(0))


def test_logit_ensemble_weighted_and_log_prob_averages() -> None:
    members, x = _members(), _inputs()
    weighted = tl.LogitEnsemble(members, weights=[3.0, 1.0, 0.0])
    by_log_probs = tl.LogitEnsemble(members, average="log_probs")
    with mt.no_grad():
        outs = np.stack([_np(m(*x)) for m in members]).astype(np.float64)
        got, lp = _np(weighted(*x)), _np(by_log_probs(*x))
    np.testing.assert_allclose(got, 0.75 * outs[0] + 0.25 * outs[1], rtol=1e-5, atol=1e-6)
    z = outs - outs.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(lp, logp.mean(0), rtol=1e-5, atol=1e-6)


def test_logit_ensemble_stays_in_eval_mode() -> None:
    members, x = _members(), _inputs()
    ens = tl.LogitEnsemble(members)
    ens.train()
    with mt.no_grad():
        a, b = _np(ens(*x)), _np(ens(*x))
    np.testing.assert_array_equal(a, b)


def test_logit_ensemble_refuses_empty_mismatched_and_bad_weights() -> None:
    with pytest.raises(ValueError, match="empty"):
        tl.LogitEnsemble([])
    mt.manual_seed(0)
    odd = Tiny(c=4)
    with pytest.raises(ValueError, match="output shape"), mt.no_grad():
        tl.LogitEnsemble([*_members(2), odd])(*_inputs())
    with pytest.raises(ValueError, match="3 weights"):
        tl.LogitEnsemble(_members(), weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        tl.LogitEnsemble(_members(), weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="average"):
        tl.LogitEnsemble(_members(), average="probs")


# ---- AdapterEnsemble --------------------------------------------------------------------

CFG = {"r": 2, "alpha": 4.0, "target": ("query", "value"), "modules_to_save": ("classifier",)}


def _trained_adapters(k: int = 3) -> tuple[Tiny, list[dict]]:
    """A base and k adapter states with random (nonzero) B and a different head each, as
    k LoRA fine-tunes of one base would leave them."""
    mt.manual_seed(100)
    base = Tiny()
    states = []
    for i in range(k):
        m = copy.deepcopy(base)
        mt.manual_seed(i)
        tl.apply_lora(m, tl.LoRAConfig(**CFG))
        rng = np.random.default_rng(i)
        with mt.no_grad():
            for p in tl.lora_parameters(m) + list(m.classifier.parameters()):
                p.data[...] = rng.normal(0, 0.5, p.shape).astype(np.float32)
        states.append({k2: mt.tensor(v.numpy().copy())
                       for k2, v in tl.adapter_state_dict(m).items()})
    tl.apply_lora(base, tl.LoRAConfig(**CFG))
    return base, states


def _alone(base: Tiny, state: dict) -> Tiny:
    m = copy.deepcopy(base)
    tl.load_adapter_state_dict(m, state)
    m.eval()
    return m


def test_adapter_ensemble_member_i_is_the_model_with_adapter_i_alone() -> None:
    base, states = _trained_adapters()
    alone = [_alone(base, s) for s in states]
    ens = tl.AdapterEnsemble(copy.deepcopy(base), states)
    x = _inputs(b=6)
    with mt.no_grad():
        solo = np.stack([_np(m(*x)) for m in alone])
        per = _np(ens.member_outputs(*x))
        mean = _np(ens(*x))
    assert per.shape == solo.shape
    assert np.abs(solo[0] - solo[1]).max() > 1e-2  # the members really differ
    np.testing.assert_allclose(per, solo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, solo.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mean, per.mean(0))


def test_adapter_ensemble_shares_the_frozen_base_and_cleans_up() -> None:
    base, states = _trained_adapters()
    ens = tl.AdapterEnsemble(base, states)
    with mt.no_grad():
        ens(*_inputs())
    layers = [m for m in base.modules() if isinstance(m, tl.LoRALayer)]
    assert layers and all(m.adapter_batch is None for m in layers)
    assert isinstance(base.classifier, nn.Linear)  # the per-member heads were swapped out
    full = tl.LogitEnsemble([_alone(base, s) for s in states])
    frozen = sum(p.numel() for n, p in base.named_parameters()
                 if "lora_" not in n and not n.startswith("classifier"))
    # k full copies hold the frozen weights k times; the adapter ensemble once
    assert ensemble_parameters(full) - ensemble_parameters(ens) >= 2 * frozen - 1


def test_adapter_ensemble_weights_log_probs_and_errors() -> None:
    base, states = _trained_adapters()
    x = _inputs()
    with mt.no_grad():
        per = _np(tl.AdapterEnsemble(copy.deepcopy(base), states).member_outputs(*x))
        w = _np(tl.AdapterEnsemble(copy.deepcopy(base), states, weights=[0, 0, 2])(*x))
    np.testing.assert_allclose(w, per[2], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        tl.AdapterEnsemble(copy.deepcopy(base), [])
    broken = dict(states[0])
    broken.pop(next(k for k in broken if "lora_B" in k))
    with pytest.raises(ValueError, match="lacks"):
        tl.AdapterEnsemble(copy.deepcopy(base), [states[1], broken])


def test_lora_layer_adapter_batch_rows_get_their_adapter() -> None:
    mt.manual_seed(0)
    lin = nn.Linear(6, 4)
    layer = tl.LoRALinear(lin)
    for name in ("a", "b"):
        layer.add_adapter(name, 2, 4.0, 0.0)
        with mt.no_grad():
            layer.lora_B[name].weight.data[...] = np.random.default_rng(len(name) + ord(name)
                                                                        ).normal(size=(4, 2))
    x = mt.randn(3, 6)
    with mt.no_grad():
        solo = []
        for name in ("a", "b"):
            layer.active_adapter = name
            solo.append(_np(layer(x)))
        layer.active_adapter, layer.adapter_batch = None, ("a", "b")
        both = _np(layer(mt.cat([x, x], 0)))
        with pytest.raises(ValueError, match="divisible"):
            layer(x)
    np.testing.assert_allclose(both, np.concatenate(solo), rtol=1e-5, atol=1e-6)


# ---- model_soup -------------------------------------------------------------------------

def test_soup_of_identical_dicts_is_the_dict_and_of_two_the_mean() -> None:
    a, b = (m.state_dict() for m in _members(2))
    same = tl.model_soup([a, a, a])
    assert set(same) == set(a)
    for k in a:
        np.testing.assert_array_equal(_np(same[k]), _np(a[k]))
    mean = tl.model_soup([a, b])
    for k in a:
        np.testing.assert_allclose(_np(mean[k]), (_np(a[k]) + _np(b[k])) / 2, rtol=1e-6)
    w = tl.model_soup([a, b], weights=[1.0, 3.0])
    for k in a:
        np.testing.assert_allclose(_np(w[k]), 0.25 * _np(a[k]) + 0.75 * _np(b[k]),
                                   rtol=1e-5, atol=1e-7)
    m = Tiny()
    m.load_state_dict(mean)  # a soup loads back into the architecture


def test_soup_refuses_mismatches() -> None:
    a, b = (m.state_dict() for m in _members(2))
    with pytest.raises(ValueError, match="at least one"):
        tl.model_soup([])
    short = {k: v for k, v in b.items() if k != "query.bias"}
    with pytest.raises(ValueError, match="query.bias"):
        tl.model_soup([a, short])
    mt.manual_seed(0)
    with pytest.raises(ValueError, match="shapes"):
        tl.model_soup([a, Tiny(c=4).state_dict()])
    ia, ib = {"pos": np.arange(4)}, {"pos": np.arange(4) + 1}
    assert np.array_equal(tl.model_soup([ia, ia])["pos"], np.arange(4))
    with pytest.raises(ValueError, match="not a floating"):
        tl.model_soup([ia, ib])
