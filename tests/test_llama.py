"""LlamaForCausalLM: the new ops (RMSNorm, rotary, SwiGLU) against torch and finite differences;
a tiny random model written into a GGUF here (q/k rows permuted as llama.cpp writes them)
against transformers' LlamaForCausalLM; the KV cache, generation and padding; bad files.
The real SmolLM2 checks (logits within 1e-3, 32 greedy tokens) are marked slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import check_op, gradcheck

import minitl as mt
import minitl.nn.functional as F
from minitl import assets
from minitl.io.gguf_write import write_gguf
from minitl.models.llama import KVCache, LlamaConfig, LlamaForCausalLM, _sample

RNG = np.random.default_rng(0)


# ---- ops -------------------------------------------------------------------------------------

def test_rms_norm_against_torch_and_gradcheck() -> None:
    torch = pytest.importorskip("torch")
    x, w = RNG.standard_normal((3, 4, 8)), RNG.standard_normal(8) + 1
    check_op(lambda a, b: F.rms_norm(a, 8, b, 1e-5),
             lambda a, b: torch.nn.functional.rms_norm(a, (8,), b, 1e-5), [x, w])
    gradcheck(lambda a, b: F.rms_norm(a, (4, 8), b, 1e-3), [x, RNG.standard_normal((4, 8))])
    with pytest.raises(ValueError, match="normalized_shape"):
        F.rms_norm(mt.tensor(x), 7)


def _rotate_half_torch(x, cos, sin):  # type: ignore[no-untyped-def]
    import torch

    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


def test_rotary_against_torch_and_gradcheck() -> None:
    pytest.importorskip("torch")
    ang = RNG.standard_normal((5, 3))
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    x = RNG.standard_normal((2, 3, 5, 6))
    check_op(lambda a, c, s: F.apply_rotary_emb(a, c, s), _rotate_half_torch, [x, cos, sin],
             grad=False)
    check_op(lambda a: F.apply_rotary_emb(a, cos, sin),
             lambda a: _rotate_half_torch(a, *(__import__("torch").tensor(v) for v in (cos, sin))),
             [x])
    gradcheck(lambda a: F.apply_rotary_emb(a, cos, sin), [x])
    with pytest.raises(ValueError, match="even last dim"):
        F.apply_rotary_emb(mt.tensor(x[..., :5]), cos, sin)


def test_swiglu_against_torch_and_gradcheck() -> None:
    torch = pytest.importorskip("torch")
    a, b = RNG.standard_normal((4, 7)) * 3, RNG.standard_normal((4, 7))
    check_op(F.swiglu, lambda x, y: torch.nn.functional.silu(x) * y, [a, b])
    gradcheck(F.swiglu, [a, b])


# ---- a tiny model in a GGUF ------------------------------------------------------------------

TINY = LlamaConfig.named("llama-tiny", rope_theta=5000.0, rms_norm_eps=1e-6)


def random_model(config: LlamaConfig = TINY, seed: int = 0) -> LlamaForCausalLM:
    mt.manual_seed(seed)
    model = LlamaForCausalLM(config)
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.data[...] = rng.normal(0, 0.15, p.shape).astype(np.float32)
        if name.endswith("norm.weight"):
            p.data[...] += 1.0
    return model.eval()


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute (Hugging Face -> GGUF row order)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def write_llama_gguf(path: Path, model: LlamaForCausalLM, qtype: str = "F32",
                     embed_qtype: str = "F32", extra: dict | None = None) -> Path:
    """`model` as llama.cpp would write it: names, permuted q/k rows, metadata (plus
    `extra` metadata, e.g. a tokenizer)."""
    c = model.config
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    tensors: dict = {"token_embd.weight": (embed_qtype, sd["model.embed_tokens.weight"]),
                     "output_norm.weight": sd["model.norm.weight"]}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(c.num_hidden_layers):
        for hf, gg in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if hf.endswith("q_proj"):
                w = _permute(w, c.num_attention_heads)
            elif hf.endswith("k_proj"):
                w = _permute(w, c.num_key_value_heads)
            tensors[f"blk.{i}.{gg}.weight"] = w if w.ndim == 1 else (qtype, w)
    meta = {"general.architecture": "llama", "llama.block_count": c.num_hidden_layers,
            "llama.context_length": c.max_position_embeddings,
            "llama.embedding_length": c.hidden_size,
            "llama.feed_forward_length": c.intermediate_size,
            "llama.attention.head_count": c.num_attention_heads,
            "llama.attention.head_count_kv": c.num_key_value_heads,
            "llama.rope.freq_base": c.rope_theta,
            "llama.attention.layer_norm_rms_epsilon": c.rms_norm_eps,
            "llama.vocab_size": c.vocab_size, "llama.rope.dimension_count": c.head_dim,
            **(extra or {})}
    write_gguf(path, meta, tensors)
    return path


def hf_model(model: LlamaForCausalLM):  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(**{k: v for k, v in model.config.to_hf_dict().items()
                                      if k not in ("model_type", "architectures")})
    ref = transformers.LlamaForCausalLM(cfg).eval()
    state = {k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()}
    ref.load_state_dict(state, strict=False)
    return ref


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_gguf_round_trip_equals_transformers(tmp_path: Path, qtype: str) -> None:
    torch = pytest.importorskip("torch")
    src = random_model()
    path = write_llama_gguf(tmp_path / "tiny.gguf", src, qtype, "Q8_0" if qtype != "F32" else "F32")
    flt = LlamaForCausalLM.from_pretrained(path)
    qnt = LlamaForCausalLM.from_pretrained(path, quantized=True)
    assert isinstance(qnt.model.layers[0].self_attn.q_proj, mt.nn.QuantLinear)
    assert qnt.lm_head.qweight is qnt.model.embed_tokens.qweight  # tied, one copy
    assert flt.lm_head.weight is flt.model.embed_tokens.weight
    ids = RNG.integers(0, TINY.vocab_size, (2, 11))
    with mt.no_grad():
        a, b = flt(mt.tensor(ids)).numpy(), qnt(mt.tensor(ids)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # same dequantized weights
    ref = hf_model(flt)
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-4)
    if qtype == "F32":  # nothing lost on the way: the file holds the source model exactly
        with mt.no_grad():
            np.testing.assert_allclose(a, src(mt.tensor(ids)).numpy(), rtol=1e-5, atol=1e-5)


def test_training_gradients_equal_transformers() -> None:
    torch = pytest.importorskip("torch")
    model = random_model()
    ref = hf_model(model)
    ids = RNG.integers(0, TINY.vocab_size, (2, 9))
    logits = model(mt.tensor(ids))
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, TINY.vocab_size),
                           mt.tensor(ids[:, 1:].reshape(-1)))
    loss.backward()
    out = ref(torch.tensor(ids), labels=torch.tensor(ids))
    out.loss.backward()
    assert abs(loss.item() - out.loss.item()) < 1e-5
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name].grad.numpy(), rtol=1e-3,
                                   atol=1e-5, err_msg=name)


def test_kv_cache_equals_full_forward() -> None:
    model = random_model()
    ids = RNG.integers(0, TINY.vocab_size, (2, 10))
    with mt.no_grad():
        full = model(mt.tensor(ids)).numpy()
        cache = KVCache()
        parts = [model(mt.tensor(ids[:, :4]), kv_cache=cache).numpy()]
        parts += [model(mt.tensor(ids[:, i:i + 1]), kv_cache=cache).numpy() for i in range(4, 7)]
        parts += [model(mt.tensor(ids[:, 7:]), kv_cache=cache).numpy()]
    assert len(cache) == 10
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-4, atol=1e-5)


def test_right_padding_leaves_real_positions_alone() -> None:
    model = random_model()
    ids = RNG.integers(0, TINY.vocab_size, (1, 6))
    padded = np.concatenate([ids, np.zeros((1, 3), np.int64)], axis=1)
    mask = np.array([[1] * 6 + [0] * 3])
    with mt.no_grad():
        a = model(mt.tensor(ids)).numpy()
        b = model(mt.tensor(padded), attention_mask=mask).numpy()
        c = model(mt.tensor(padded)).numpy()  # causal: later pads cannot reach earlier tokens
    np.testing.assert_allclose(b[:, :6], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c[:, :6], a, rtol=1e-5, atol=1e-5)


def test_greedy_generation_and_sampling() -> None:
    model = random_model()
    ids = RNG.integers(0, TINY.vocab_size, (2, 5))
    out = model.generate(ids, 6, temperature=0.0).numpy()
    seq = ids.copy()
    with mt.no_grad():
        for _ in range(6):  # no cache: the whole sequence each step
            nxt = model(mt.tensor(seq)).numpy()[:, -1].argmax(-1)
            seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    mt.manual_seed(3)
    s1 = model.generate(ids, 5, temperature=0.8, top_k=20, top_p=0.9).numpy()
    mt.manual_seed(3)
    s2 = model.generate(ids, 5, temperature=0.8, top_k=20, top_p=0.9).numpy()
    np.testing.assert_array_equal(s1, s2)
    eos = int(out[0, 5])
    stopped = model.generate(ids[:1], 6, temperature=0.0, eos_token_id=eos).numpy()
    assert stopped.shape == (1, 6) and stopped[0, -1] == eos
    for bad in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            model.generate(ids, 1, **bad)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    seen = {int(_sample(logits, 1.0, None, 0.7, rng)[0]) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    assert {int(_sample(logits, 1.0, 1, None, rng)[0]) for _ in range(50)} == {0}


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    model = random_model()
    path = write_llama_gguf(tmp_path / "m.gguf", model)
    from minitl.io.gguf import read_gguf
    f = read_gguf(path)
    meta = {k: (("ARRAY", ("STRING", v)) if isinstance(v, list) else v)
            for k, v in f.metadata.items()}
    tensors = {n: ("F32", f.tensor(n)) for n in f.tensors}
    cases = {
        "architecture 'gpt2' is not supported": ({**meta, "general.architecture": "gpt2"},
                                                 tensors),
        "attn_q.weight has shape|q_proj.weight has shape": (
            meta, {**tensors, "blk.1.attn_q.weight": ("F32", np.zeros((8, 64), np.float32))}),
        "no tensor for model.layers.1.mlp.up_proj": (
            meta, {k: v for k, v in tensors.items() if k != "blk.1.ffn_up.weight"}),
        "has no place in a llama model": (meta, {**tensors, "blk.0.extra.weight": ("F32",
                                                                                np.ones(4))}),
        "no llama.block_count": ({k: v for k, v in meta.items() if k != "llama.block_count"},
                                 tensors),
    }
    for i, (match, (m, t)) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.gguf"
        write_gguf(bad, m, t)
        for quantized in (False, True):
            with pytest.raises(ValueError, match=match):
                LlamaForCausalLM.from_pretrained(bad, quantized=quantized)


# ---- the real model (slow) -------------------------------------------------------------------

PROMPTS = ["The movie was a delightful surprise, with a clever script and",
           "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "In 1969, the first humans landed on the Moon. The mission was called"]


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True])
def test_smollm2_logits_and_greedy_tokens_equal_transformers(quantized: bool) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minitl.data.tokenizers import BPETokenizer

    path = assets.path("smollm2-135m")
    tok = BPETokenizer.from_pretrained(path)
    lm = LlamaForCausalLM.from_pretrained(path, quantized=quantized)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        with mt.no_grad():
            ours = lm(mt.tensor([ids])).numpy()
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits.numpy()
        assert np.abs(ours - want).max() <= 1e-3 * np.abs(want).max(), prompt
    ids = tok.encode(PROMPTS[0])
    got = lm.generate([ids], 32, temperature=0.0).numpy()
    with torch.no_grad():
        want = ref.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32,
                            do_sample=False).numpy()
    np.testing.assert_array_equal(got, want)
