"""Prompt tuning: a learned soft prompt for a frozen encoder (Lester et al., arXiv:2104.08691).

n learnable vectors (n_tokens, D) are inserted into the sequence the encoder sees; only
they (and the new head) train. This implementation works on the output of the model's
embeddings module (word + position + segment embeddings, LayerNorm), through hooks, so
the model keeps its class, its forward signature and its parameter names:

1. a forward hook on `embeddings` turns its (B, T, D) output into (B, T + n, D) by
   inserting the prompt right after position 0 (`position="after_cls"`, the default:
   [CLS] stays first, so poolers that read h[:, 0] keep working) or in front of it
   (`position="front"`, for models without a [CLS] token);
2. a forward pre-hook on `encoder` extends the attention mask it receives as its second
   positional argument (as `Bert` passes it) with n "attend" entries at the same place;
3. a forward hook on `encoder` drops the n prompt positions from its output, so the model
   returns (B, T, D) as before and every head (pooler, token classifier, MLM) lines up
   with its labels. `keep_prompt_outputs=True` keeps them.

Because the prompt is inserted after the embeddings, the real tokens keep their
pretrained positions and the prompt vectors carry no position embedding: they are free
vectors in the space the first encoder block reads. `init="vocab"` starts them at the
embedding output of n random vocabulary tokens (the paper's sampled-vocabulary init),
`init="random"` at U(-0.5, 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minitl.autograd_state import no_grad
from minitl.backend import array_module
from minitl.functional import cat
from minitl.nn.embedding import Embedding
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor
from minitl.transfer.freeze import freeze
from minitl.transfer.lora import mark_modules_to_save

__all__ = ["SoftPrompt", "apply_prompt_tuning", "remove_prompt_tuning"]


class SoftPrompt(Module):
    """The prompt vectors `weight` (n_tokens, D) and where they go in the sequence."""

    def __init__(self, weight: Any, position: str = "after_cls") -> None:
        super().__init__()
        if position not in ("after_cls", "front"):
            raise ValueError(f"position must be 'after_cls' or 'front', got {position!r}")
        self.weight = Parameter(weight)
        self.position = position
        self.n_tokens = int(self.weight.shape[0])
        self._hooks: list[Any] = []

    @property
    def offset(self) -> int:
        """Index of the first prompt vector in the extended sequence."""
        return 1 if self.position == "after_cls" else 0

    def insert(self, h: Tensor) -> Tensor:
        """(B, T, D) -> (B, T + n, D) with the prompt at `offset`."""
        b, _, d = h.shape
        p = self.weight.unsqueeze(0).expand(b, self.n_tokens, d)  # (B, n, D)
        if self.offset == 0:
            return cat([p, h], dim=1)
        return cat([h[:, :1], p, h[:, 1:]], dim=1)

    def extend_mask(self, mask: Any, t: int) -> Any:
        """Insert n "attend" entries into a key mask whose last axis has length t: bool
        (True), integer 0/1 (1) or additive float (0.0) masks; (.., T, T) masks get rows
        too. Masks of another length are returned unchanged."""
        if mask is None or not hasattr(mask, "shape") or mask.shape[-1] != t:
            return mask
        is_tensor = isinstance(mask, Tensor)
        m = mask.data if is_tensor else mask
        xp = array_module(m)
        keep = True if m.dtype == np.bool_ else (0.0 if m.dtype.kind == "f" else 1)
        i, n = self.offset, self.n_tokens
        axes = [-1] + ([-2] if m.ndim >= 3 and m.shape[-2] == t else [])
        for ax in axes:
            shape = list(m.shape)
            shape[ax] = n
            fill = xp.full(shape, keep, dtype=m.dtype)
            lo = [slice(None)] * m.ndim
            hi = [slice(None)] * m.ndim
            lo[ax], hi[ax] = slice(0, i), slice(i, None)
            m = xp.concatenate([m[tuple(lo)], fill, m[tuple(hi)]], axis=ax)
        return Tensor(m) if is_tensor else m

    def strip(self, h: Tensor) -> Tensor:
        """(B, T + n, D) -> (B, T, D): drop the prompt positions again."""
        i, n = self.offset, self.n_tokens
        if i == 0:
            return h[:, n:]
        return cat([h[:, :i], h[:, i + n:]], dim=1)

    def extra_repr(self) -> str:
        return f"n_tokens={self.n_tokens}, dim={self.weight.shape[1]}, position={self.position!r}"


def _find(model: Module, name: str | None, last: str) -> tuple[str, Module] | None:
    if name is not None:
        return name, model.get_submodule(name)
    found = [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == last]
    return min(found, key=lambda nm: nm[0].count(".")) if found else None


def _vocab_size(embeddings: Module) -> int | None:
    word = getattr(embeddings, "word_embeddings", None)
    if isinstance(embeddings, Embedding):
        word = embeddings
    if word is None:
        word = next((m for m in embeddings.modules() if isinstance(m, Embedding)), None)
    return None if word is None else word.num_embeddings


def apply_prompt_tuning(model: Module, n_tokens: int = 20, init: str = "vocab",
                        position: str = "after_cls", embeddings: str | None = None,
                        encoder: str | None = None, keep_prompt_outputs: bool = False,
                        modules_to_save: Sequence[str] = ("classifier",),
                        seed: int | None = 0) -> SoftPrompt:
    """Add a trainable soft prompt to `model` in place and freeze everything else except
    `modules_to_save` (the new head). The prompt lives at `model.soft_prompt`.

    Args:
        model: a BERT-like model: a submodule `embeddings` mapping input_ids to (B, T, D)
            and (optional) an `encoder` called as `encoder(x, mask, ...)`.
        n_tokens: number of prompt vectors.
        init: "vocab" (embedding outputs of random vocabulary tokens) or "random".
        position: "after_cls" (after position 0) or "front".
        embeddings, encoder: dotted module paths; found by name when None (the shallowest
            modules called "embeddings" and "encoder").
        keep_prompt_outputs: keep the prompt positions in the encoder output.
        modules_to_save: module-name patterns that stay trainable and are saved.
        seed: draws the "vocab" tokens / "random" values.

    Returns:
        The SoftPrompt module.
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    if init not in ("vocab", "random"):
        raise ValueError(f"init must be 'vocab' or 'random', got {init!r}")
    if "soft_prompt" in model._modules:
        raise ValueError("the model already has a soft prompt; remove_prompt_tuning first")
    emb = _find(model, embeddings, "embeddings")
    if emb is None:
        raise ValueError("apply_prompt_tuning: no module named 'embeddings'; pass embeddings=")
    emb_mod = emb[1]
    enc = _find(model, encoder, "encoder")
    rng = np.random.default_rng(seed)
    vocab = _vocab_size(emb_mod) or 1
    ids = Tensor(rng.integers(0, vocab, size=(1, n_tokens)).astype(np.int64))
    was_training = emb_mod.training
    with no_grad():
        emb_mod.eval()
        try:
            sample = emb_mod(ids)  # (1, n, D)
        finally:
            emb_mod.train(was_training)
    weight = sample.numpy()[0].copy()
    if init == "random":
        weight = rng.uniform(-0.5, 0.5, size=weight.shape).astype(weight.dtype)
    prompt = SoftPrompt(weight, position)
    if sample.device.type != "cpu":
        prompt.to(str(sample.device))

    def on_embeddings(module: Module, args: Any, out: Tensor) -> Tensor:
        return prompt.insert(out)

    prompt._hooks.append(emb_mod.register_forward_hook(on_embeddings))
    if enc is not None:
        def before_encoder(module: Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if len(args) < 2 or args[1] is None:
                return None
            t = args[0].shape[1] - prompt.n_tokens
            return (args[0], prompt.extend_mask(args[1], t), *args[2:])

        prompt._hooks.append(enc[1].register_forward_pre_hook(before_encoder))
        if not keep_prompt_outputs:
            def after_encoder(module: Module, args: Any, out: Any) -> Any:
                return prompt.strip(out) if isinstance(out, Tensor) else out

            prompt._hooks.append(enc[1].register_forward_hook(after_encoder))
    model.soft_prompt = prompt
    freeze(model, except_=("soft_prompt.*",))
    if modules_to_save:
        mark_modules_to_save(model, modules_to_save)
    return prompt


def remove_prompt_tuning(model: Module) -> None:
    """Remove the soft prompt and its hooks; the model is the base model again."""
    prompt = model._modules.get("soft_prompt")
    if not isinstance(prompt, SoftPrompt):
        return
    for h in prompt._hooks:
        h.remove()
    del model._modules["soft_prompt"]
