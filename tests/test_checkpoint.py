"""minitl.nn.utils.checkpoint and the memory-lean LLaMA training path: gradients with
recomputation equal those without (inputs and parameters, dropout replayed), a gradient check
in float64, frozen inputs feeding trainable parameters, and causal_lm_loss equal to the
cross-entropy of the full logits, with and without gradient checkpointing and LoRA."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import gradcheck
from test_llama import random_model

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.creation import default_generator
from minitl.nn.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(6, 12), nn.Linear(12, 6), nn.Dropout(p)

    def forward(self, x: mt.Tensor, scale: float = 1.0) -> mt.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x)))) * scale + x


def _grads(model: nn.Module, x: np.ndarray, ckpt: bool, seed: int = 3
           ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    model.zero_grad()
    mt.manual_seed(seed)
    xt = mt.tensor(x, requires_grad=True)
    h = xt
    for _ in range(2):  # the same block twice: its parameters gather two contributions
        h = checkpoint(model, h, 0.5) if ckpt else model(h, 0.5)
    (h * h).sum().backward()
    after = default_generator().random()  # where the generator was left
    return xt.grad.numpy(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}, \
        np.array(after)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_gradients_equal_without_checkpointing(p: float) -> None:
    mt.manual_seed(0)
    model = Block(p).train()
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    gx, gp, rng_a = _grads(model, x, ckpt=False)
    cx, cp, rng_b = _grads(model, x, ckpt=True)
    np.testing.assert_allclose(cx, gx, rtol=1e-6, atol=1e-7)
    for name in gp:
        np.testing.assert_allclose(cp[name], gp[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert rng_a == rng_b  # the replay does not move the generator


def test_gradcheck_float64() -> None:
    mt.manual_seed(0)
    model = Block().to(mt.float64)

    def fn(x: mt.Tensor, w: mt.Tensor) -> mt.Tensor:
        return checkpoint(lambda a, b: F.gelu(model(a) * b), x, w)

    rng = np.random.default_rng(2)
    gradcheck(fn, [rng.normal(size=(3, 6)), rng.normal(size=(3, 6))])


def test_frozen_input_still_trains_the_parameters_inside() -> None:
    mt.manual_seed(0)
    model = Block().train()
    x = mt.tensor(np.random.default_rng(4).normal(size=(2, 6)).astype(np.float32))
    out = checkpoint(model, x)
    assert out.requires_grad
    out.sum().backward()
    assert model.fc1.weight.grad is not None and np.abs(model.fc1.weight.grad.numpy()).sum() > 0
    assert x.grad is None


def test_plain_call_under_no_grad_and_errors() -> None:
    model = Block()
    x = mt.randn(2, 6)
    with mt.no_grad():
        out = checkpoint(model, x)
    assert not out.requires_grad
    np.testing.assert_allclose(out.numpy(), model(x).numpy())
    with pytest.raises(TypeError, match="one Tensor"):
        checkpoint(lambda a: (a, a), mt.randn(2, requires_grad=True))
    with pytest.raises(TypeError, match="callable"):
        checkpoint(3, x)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="preserve_rng_state"):
        checkpoint(model, x, preserve_rng_state=False)


# ---- the LLaMA decoder --------------------------------------------------------------------------

def _lm_grads(lora: bool, ckpt: bool, chunked: bool, labels: np.ndarray | None
              ) -> tuple[float, dict[str, np.ndarray]]:
    model = random_model()
    if lora:
        model.requires_grad_(False)
        tl.apply_lora(model, tl.LoRAConfig(r=4, alpha=8, target=("q_proj", "v_proj",
                                                                  "down_proj")))
        for name, p in model.named_parameters():  # B starts at zero: give it a value
            if "lora_B" in name:
                p.data[...] = np.random.default_rng(len(name)).normal(0, 0.1, p.shape)
    model.train()
    if ckpt:
        model.gradient_checkpointing_enable()
    ids = np.random.default_rng(5).integers(0, model.config.vocab_size, (3, 12))
    if chunked:
        loss = model.causal_lm_loss(ids, labels, chunk_tokens=7)
    else:
        logits = model(mt.tensor(ids[:, :-1]))
        target = (ids if labels is None else labels)[:, 1:].reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), mt.tensor(target))
    loss.backward()
    return loss.item(), {n: p.grad.numpy() for n, p in model.named_parameters()
                         if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True])
def test_llama_checkpointing_and_chunked_loss_match(lora: bool) -> None:
    labels = np.random.default_rng(6).integers(0, 320, (3, 12))
    labels[0, 3:9] = -100
    ref_loss, ref = _lm_grads(lora, ckpt=False, chunked=False, labels=labels)
    for ckpt, chunked in ((True, False), (False, True), (True, True)):
        loss, got = _lm_grads(lora, ckpt=ckpt, chunked=chunked, labels=labels)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert got.keys() == ref.keys() and len(got) > 0
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=2e-4, atol=2e-6,
                                       err_msg=f"{name} ckpt={ckpt} chunked={chunked}")


def test_causal_lm_loss_refuses_bad_input() -> None:
    model = random_model()
    ids = np.zeros((2, 5), np.int64)
    with pytest.raises(ValueError, match="same shape"):
        model.causal_lm_loss(ids, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="every target"):
        model.causal_lm_loss(ids, np.full((2, 5), -100))
    with pytest.raises(ValueError, match="chunk_tokens"):
        model.causal_lm_loss(ids, chunk_tokens=0)


def test_checkpointing_is_off_in_eval_and_with_a_cache() -> None:
    model = random_model()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    ids = np.arange(8)[None] % 320
    with mt.no_grad():
        full = model(ids).numpy()
    np.testing.assert_allclose(model.generate(ids, 3, temperature=0.0).numpy()[:, :8], ids)
    model.gradient_checkpointing_disable()
    np.testing.assert_allclose(model(ids).numpy(), full, rtol=1e-6)
