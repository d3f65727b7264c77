"""GPT decoder: parity with a plain-torch GPT-2 written here, a golden AdamW run, the KV
cache, generation, and GPT-2-layout checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import minitl as mt
from minitl.models import GPT, GPTConfig, KVCache

torch = pytest.importorskip("torch")
TF = torch.nn.functional

CFG = {"vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32, "dropout": 0.0}


def tiny(**kw: object) -> GPTConfig:
    return GPTConfig(**{**CFG, **kw})  # type: ignore[arg-type]


def randomize(model: GPT, scale: float = 0.2, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.data[...] = rng.normal(0, scale, p.shape).astype(p.dtype)
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p.data[...] += 1.0


def torch_params(model: GPT) -> dict:
    out: dict = {}
    by_id: dict = {}
    for name, p in model.state_dict(keep_vars=True).items():
        if id(p) not in by_id:
            by_id[id(p)] = torch.tensor(p.numpy().copy(), requires_grad=True)
        out[name] = by_id[id(p)]
    return out


def torch_gpt(P: dict, idx, c: GPTConfig):
    """GPT-2 forward in plain torch (pre-LN, causal, tied head), from nanoGPT's model.py."""
    idx = torch.as_tensor(idx)
    b, t = idx.shape
    d, nh = c.n_embd, c.n_head
    approx = "tanh" if c.activation == "gelu_tanh" else "none"

    def lin(x, name):
        return TF.linear(x, P[name + ".weight"], P.get(name + ".bias"))

    def ln(x, name):
        return TF.layer_norm(x, (d,), P[name + ".weight"], P.get(name + ".bias"),
                             c.layer_norm_eps)

    x = P["transformer.wte.weight"][idx] + P["transformer.wpe.weight"][torch.arange(t)]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(c.n_layer):
        pre = f"transformer.h.{i}."
        q, k, v = lin(ln(x, pre + "ln_1"), pre + "attn.c_attn").split(d, dim=2)
        q, k, v = (z.view(b, t, nh, d // nh).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // nh)
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + lin(y, pre + "attn.c_proj")
        h = TF.gelu(lin(ln(x, pre + "ln_2"), pre + "mlp.c_fc"), approximate=approx)
        x = x + lin(h, pre + "mlp.c_proj")
    return TF.linear(ln(x, "transformer.ln_f"), P["transformer.wte.weight"])


def ids(b: int = 3, t: int = 11, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, CFG["vocab_size"], (b, t))


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_logits_match_torch(activation: str) -> None:
    cfg = tiny(activation=activation)
    model = GPT(cfg)
    randomize(model)
    x = ids()
    with torch.no_grad():
        ref = torch_gpt(torch_params(model), x, cfg).numpy()
    np.testing.assert_allclose(model(x).numpy(), ref, atol=1e-5, rtol=1e-5)


def test_golden_adamw_five_steps_match_torch() -> None:
    cfg = tiny()
    model = GPT(cfg)  # GPT-2 init, not randomized: the real starting point
    P = torch_params(model)
    x = ids(4, 12, seed=2)
    inp, tgt = x[:, :-1], x[:, 1:]
    opt_mt = mt.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    opt_t = torch.optim.AdamW(list({id(p): p for p in P.values()}.values()), lr=3e-3,
                              weight_decay=0.1)
    losses_mt, losses_t = [], []
    for _ in range(5):
        loss = mt.nn.functional.cross_entropy(model(inp).reshape(-1, cfg.vocab_size),
                                              mt.tensor(tgt.reshape(-1)))
        opt_mt.zero_grad()
        loss.backward()
        opt_mt.step()
        losses_mt.append(loss.item())
        ref = TF.cross_entropy(torch_gpt(P, inp, cfg).reshape(-1, cfg.vocab_size),
                               torch.as_tensor(tgt).reshape(-1))
        opt_t.zero_grad()
        ref.backward()
        opt_t.step()
        losses_t.append(ref.item())
    np.testing.assert_allclose(losses_mt, losses_t, atol=1e-5, rtol=1e-5)
    assert losses_mt[-1] < losses_mt[0]


def test_lm_head_is_tied_to_token_embedding() -> None:
    model = GPT(tiny())
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names


def test_kv_cache_gives_the_same_logits_as_a_full_pass() -> None:
    model = GPT(tiny()).eval()
    randomize(model)
    x = ids(2, 10)
    full = model(x).numpy()
    cache = KVCache()
    parts = [model(x[:, :4], kv_cache=cache).numpy()]  # the prompt in one go
    for t in range(4, 10):  # then one position at a time
        parts.append(model(x[:, t:t + 1], kv_cache=cache).numpy())
    assert len(cache) == 10 and cache.layers[0][0].shape == (2, 4, 10, 8)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-5, rtol=1e-5)
    # two positions at once on top of a cache exercise the offset causal mask
    cache = KVCache()
    model(x[:, :7], kv_cache=cache)
    np.testing.assert_allclose(model(x[:, 7:9], kv_cache=cache).numpy(), full[:, 7:9],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        model(ids(2, 8), kv_cache=cache)


def test_generate_cached_equals_uncached_and_respects_max_new_tokens() -> None:
    model = GPT(tiny())
    randomize(model, scale=0.5)
    prompt = ids(2, 5)
    mt.manual_seed(7)
    a = model.generate(prompt, max_new_tokens=8, temperature=0.9, top_k=10)
    mt.manual_seed(7)
    b = model.generate(prompt, max_new_tokens=8, temperature=0.9, top_k=10, use_cache=False)
    assert a.shape == (2, 13) and a.dtype == np.int64 and model.training
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.numpy()[:, :5], prompt)
    assert model.generate(prompt, max_new_tokens=0).shape == (2, 5)


def test_top_k_one_is_greedy_and_deterministic() -> None:
    model = GPT(tiny()).eval()
    randomize(model, scale=0.5)
    prompt = ids(2, 3)
    mt.manual_seed(1)
    out1 = model.generate(prompt, 6, temperature=1.5, top_k=1).numpy()
    mt.manual_seed(2)
    out2 = model.generate(prompt, 6, temperature=1.5, top_k=1).numpy()
    np.testing.assert_array_equal(out1, out2)
    seq = prompt.copy()  # greedy by hand, without the cache
    for _ in range(6):
        nxt = model(seq).numpy()[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out1, seq)
    np.testing.assert_array_equal(model.generate(prompt, 6, temperature=0).numpy(), seq)


def test_generate_past_block_size_crops_the_context() -> None:
    model = GPT(tiny(block_size=8))
    randomize(model, scale=0.5)
    out = model.generate(ids(1, 5), max_new_tokens=10, top_k=1)
    assert out.shape == (1, 15)
    mt.manual_seed(3)
    a = model.generate(ids(1, 5), max_new_tokens=10, top_k=5)
    mt.manual_seed(3)
    b = model.generate(ids(1, 5), max_new_tokens=10, top_k=5, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_sampling_follows_the_distribution() -> None:
    from minitl.models.gpt import _sample

    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.1, 0.6, 0.3, 1e-9]] * 20000))
    counts = np.bincount(_sample(logits, 1.0, None, rng), minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.6, 0.3, 0.0], atol=0.015)
    top2 = np.bincount(_sample(logits, 1.0, 2, rng), minlength=4) / 20000
    np.testing.assert_allclose(top2, [0.0, 2 / 3, 1 / 3, 0.0], atol=0.015)


def test_gpt2_layout_round_trip(tmp_path) -> None:
    model = GPT(tiny())
    randomize(model)
    model.save_pretrained(tmp_path)
    stored = mt.load(tmp_path / "model.safetensors")
    # GPT-2 keeps Conv1D weights as (in, out) and drops the tied head
    assert stored["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    assert "lm_head.weight" not in stored
    assert json.loads((tmp_path / "config.json").read_text())["n_positions"] == 16
    loaded = GPT.from_pretrained(tmp_path)
    x = ids()
    np.testing.assert_array_equal(loaded(x).numpy(), model.eval()(x).numpy())
    # a bare GPT2Model file: no "transformer." prefix, plus the causal-mask buffers
    bare = {k.removeprefix("transformer."): v for k, v in stored.items()}
    bare["h.0.attn.bias"] = mt.ones(1, 1, 16, 16)
    mt.save(bare, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(GPT.from_pretrained(tmp_path)(x).numpy(), loaded(x).numpy())


def test_configs() -> None:
    c = GPTConfig.named("gpt-mini")
    assert (c.n_layer, c.n_embd) == (4, 256)
    assert GPTConfig.from_hf_dict(tiny().to_hf_dict()) == tiny()
    with pytest.raises(ValueError, match="multiple"):
        GPTConfig(n_embd=30, n_head=4)
