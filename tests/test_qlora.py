"""QLoRA: LoRA on QuantLinear layers of a quantized LLaMA read from GGUF. The adapted layer
equals LoRA on the float layer holding the dequantized weight (outputs and LoRA gradients);
only the factors train and the blocks stay bit-identical; a training step's loss and LoRA
gradients equal torch + peft on the same dequantized model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_llama import TINY, random_model, write_llama_gguf

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.io.gguf_quants import quantize
from minitl.models.llama import LlamaForCausalLM

RNG = np.random.default_rng(0)


def test_layer_equals_lora_on_the_dequantized_weight() -> None:
    w = RNG.standard_normal((40, 64)).astype(np.float32)
    q = nn.QuantLinear(quantize(w, "Q4_1"), "Q4_1", RNG.standard_normal(40))
    plain = nn.Linear(64, 40)
    plain.weight.data[...] = q.dequantize()
    plain.bias.data[...] = q.bias.data
    cfg = tl.LoRAConfig(r=4, alpha=8, target=("layer",))
    a, b = nn.Sequential(), nn.Sequential()
    a.layer, b.layer = q, plain
    tl.apply_lora(a, cfg)
    tl.apply_lora(b, cfg)
    assert isinstance(a.layer, tl.LoRAQuantLinear) and isinstance(b.layer, tl.LoRALinear)
    for name in ("lora_A", "lora_B"):
        src = RNG.standard_normal(getattr(b.layer, name)["default"].weight.shape) * 0.1
        getattr(a.layer, name)["default"].weight.data[...] = src
        getattr(b.layer, name)["default"].weight.data[...] = src
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    outs = []
    for m in (a, b):
        y = m.layer(mt.tensor(x))
        (y * y).sum().backward()
        outs.append((y.numpy(), m.layer.lora_A["default"].weight.grad.numpy(),
                     m.layer.lora_B["default"].weight.grad.numpy()))
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert [n for n, p in a.named_parameters() if p.requires_grad] == [
        "layer.lora_A.default.weight", "layer.lora_B.default.weight"]
    with pytest.raises(RuntimeError, match="cannot merge"):
        tl.merge_lora(a)


def _quantized(tmp_path: Path) -> LlamaForCausalLM:
    path = write_llama_gguf(tmp_path / "q.gguf", random_model(), "Q4_1", "Q8_0")
    return LlamaForCausalLM.from_pretrained(path, quantized=True)


def test_training_moves_only_the_factors(tmp_path: Path) -> None:
    lm = _quantized(tmp_path)
    ids = RNG.integers(0, TINY.vocab_size, (2, 12))
    with mt.no_grad():
        before = lm(mt.tensor(ids)).numpy()
    tl.apply_lora(lm, tl.LoRAConfig(r=4, alpha=8, target=("q_proj", "v_proj", "down_proj")))
    with mt.no_grad():
        np.testing.assert_array_equal(lm(mt.tensor(ids)).numpy(), before)  # B = 0
    blocks = {n: b.numpy().copy() for n, b in lm.named_buffers()}
    trainable = [p for p in lm.parameters() if p.requires_grad]
    assert len(trainable) == 2 * 3 * TINY.num_hidden_layers
    opt = mt.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(8):
        logits = lm(mt.tensor(ids))
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, TINY.vocab_size),
                               mt.tensor(ids[:, 1:].reshape(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    for n, b in lm.named_buffers():
        np.testing.assert_array_equal(b.numpy(), blocks[n], err_msg=n)
    sd = tl.adapter_state_dict(lm)
    assert sd and all(".lora_A." in k or ".lora_B." in k for k in sd)
    assert "model.layers.0.self_attn.q_proj.lora_A.default.weight" in sd


def test_a_step_equals_torch_and_peft(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from test_llama import hf_model

    lm = _quantized(tmp_path)
    flt = LlamaForCausalLM.from_pretrained(tmp_path / "q.gguf")  # the same weights, float32
    ref = peft.get_peft_model(hf_model(flt), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    tl.apply_lora(lm, tl.LoRAConfig(r=4, alpha=8, target=("q_proj", "v_proj")))
    theirs = dict(ref.named_parameters())
    for name, p in lm.named_parameters():
        if p.requires_grad:  # the same factors on both sides, B != 0 so every path counts
            value = RNG.standard_normal(p.shape).astype(np.float32) * 0.1
            p.data[...] = value
            theirs["base_model.model." + name].data[...] = torch.tensor(value)
    ids = RNG.integers(0, TINY.vocab_size, (2, 10))
    logits = lm(mt.tensor(ids))
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, TINY.vocab_size),
                           mt.tensor(ids[:, 1:].reshape(-1)))
    loss.backward()
    out = ref(input_ids=torch.tensor(ids), labels=torch.tensor(ids))
    out.loss.backward()
    assert abs(loss.item() - out.loss.item()) < 1e-4
    for name, p in lm.named_parameters():
        if p.requires_grad:
            np.testing.assert_allclose(p.grad.numpy(),
                                       theirs["base_model.model." + name].grad.numpy(),
                                       rtol=2e-3, atol=1e-5, err_msg=name)
