"""GPT-style decoder (GPT-2, Radford et al. 2019), laid out as nanoGPT's `model.py`.

    logits = gpt(ids)                                   # (B, T, vocab_size)
    out = gpt.generate(ids, max_new_tokens=20, temperature=0.8, top_k=40)

Pre-LN blocks (`x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`), causal self-attention,
learned absolute positions and an LM head tied to the token embedding. Names are Hugging
Face GPT-2's (`transformer.wte`, `transformer.h.0.attn.c_attn`, ...), so `from_pretrained`
reads a GPT-2 directory; GPT-2 stores its projections as (in, out) `Conv1D` weights, which
the name table transposes.

Generation keeps a `KVCache`: the keys and values of every position already seen, per layer,
so each new token runs the network on one position and attends over the cache, O(T) work per
token instead of re-running the whole O(T^2) prefix.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl.autograd_state import no_grad
from minitl.creation import arange, as_tensor, default_generator, tensor
from minitl.functional import cat
from minitl.io import hf
from minitl.models.configs import GPTConfig
from minitl.tensor import Tensor

__all__ = ["GPT", "GPTConfig", "KVCache"]

# GPT-2 checkpoints: (in, out) Conv1D weights, and causal-mask buffers we rebuild ourselves.
_CONV1D = ("*attn.c_attn.weight", "*attn.c_proj.weight", "*mlp.c_fc.weight",
           "*mlp.c_proj.weight")
_GPT2_IGNORE = ("*.attn.bias", "*.attn.masked_bias")


class KVCache:
    """Keys and values (B, nh, S, hs) of every layer for the S positions seen so far.

    Pass the same cache to successive `GPT.forward` calls; each call appends its positions.
    """

    def __init__(self) -> None:
        self.layers: list[tuple[Tensor, Tensor]] = []
        self.length = 0  # positions cached (advanced by GPT.forward after its last layer)

    def __len__(self) -> int:
        return self.length

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this call's `k`, `v` (B, nh, T, hs) to layer `layer`; return all of them."""
        if layer == len(self.layers):
            self.layers.append((k, v))
        else:
            pk, pv = self.layers[layer]
            self.layers[layer] = (cat([pk, k], dim=2), cat([pv, v], dim=2))  # (B, nh, S, hs)
        return self.layers[layer]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head = config.n_head
        self.c_attn = nn.Linear(d, 3 * d, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(d, d, bias=config.bias)
        self.attn_dropout_p = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        b, t, d = x.shape
        hs = d // self.n_head
        q, k, v = self.c_attn(x).split(d, dim=2)  # 3 x (B, T, D)
        q = q.reshape(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.reshape(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.reshape(b, t, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, S, hs), S = cached + T
        s = k.shape[2]
        p = self.attn_dropout_p if self.training else 0.0
        if s == t:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            # Query i sits at position s - t + i and sees keys 0 .. s - t + i.
            keep = np.tril(np.ones((t, s), dtype=bool), k=s - t)  # (T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=tensor(keep, device=x.device),
                                               dropout_p=p)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        if config.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"activation must be 'gelu' or 'gelu_tanh', got "
                             f"{config.activation!r}")
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.c_fc(x), approximate=self.approximate)  # (B, T, 4D)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, `n_layer` pre-LN blocks, a final LayerNorm and the tied
    LM head (`lm_head.weight` IS `transformer.wte.weight`).

    Shape:
        - idx: (B, T) int64 token ids, T <= block_size (counting the cache)
        - output: (B, T, vocab_size) logits
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "wpe": nn.Embedding(config.block_size, config.n_embd),
            "drop": nn.Dropout(config.dropout),
            "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            "ln_f": nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # Residual projections add into the stream once per sub-layer: scale them down so
        # the stream's variance does not grow with depth (GPT-2 paper, section 2.3).
        std = config.initializer_range / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, std)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def forward(self, idx: Any = None, kv_cache: KVCache | None = None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        """Logits (B, T, V). With `kv_cache`, `idx` holds only the new positions; the cache
        supplies the earlier keys and values and is extended in place."""
        wte = self.transformer.wte
        x = wte(as_tensor(idx).to(wte.weight.device)) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]  # x: (B, T, D)
        start = 0 if kv_cache is None else kv_cache.length
        if start + t > self.config.block_size:
            raise ValueError(f"cannot run {start + t} positions; block_size is "
                             f"{self.config.block_size}")
        pos = arange(start, start + t, device=x.device)  # (T,)
        x = self.transformer.drop(x + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += t
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)

    def generate(self, idx: Any, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, use_cache: bool = True) -> Tensor:
        """Append `max_new_tokens` sampled tokens to each row of `idx` (B, T) -> (B, T + n).

        Sampling draws from `minitl.creation.default_generator()`, so `mt.manual_seed`
        makes it reproducible. `temperature` divides the logits (0 means greedy);
        `top_k` keeps only the k most likely tokens (`top_k=1` is greedy). Runs in eval
        mode without gradients. With the cache, the prompt is run once and each new token
        costs one position; past `block_size` the context is cropped and re-run each step.
        """
        ids = as_tensor(idx)
        if ids.ndim != 2:
            raise ValueError(f"generate: idx must be (B, T), got shape {ids.shape}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        rng = default_generator()
        was_training = self.training
        self.eval()
        cache = KVCache() if use_cache else None
        step_input = ids
        try:
            with no_grad():
                for _ in range(max_new_tokens):
                    if cache is not None and cache.length + step_input.shape[1] \
                            > self.config.block_size:
                        cache = None  # positions ran out: crop and re-run from here on
                    if cache is None:
                        logits = self(ids[:, -self.config.block_size:])
                    else:
                        logits = self(step_input, kv_cache=cache)
                    nxt = _sample(logits[:, -1, :].cpu().numpy(), temperature, top_k, rng)
                    step_input = tensor(nxt[:, None], device=ids.device)  # (B, 1)
                    ids = cat([ids, step_input], dim=1)
        finally:
            self.train(was_training)
        return ids

    # ---- Hugging Face GPT-2 layout ---------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str], *, strict: bool = True,
                        output_loading_info: bool = False, **overrides: Any) -> Any:
        """Build from a GPT-2 directory in Hugging Face layout (config.json +
        model.safetensors); keys with or without the `transformer.` prefix. Returned in
        eval mode; keyword arguments override GPTConfig fields (e.g. `dropout=0.1`)."""
        directory = hf.resolve(name_or_dir)
        config = GPTConfig.from_hf_dict(hf.read_config(directory), **overrides)
        model = cls(config)
        report = hf.load_weights(model, hf.load_hf_state_dict(directory),
                                 strip=("transformer.",), ignore=_GPT2_IGNORE,
                                 transpose=_CONV1D, strict=strict, source=str(directory))
        model.eval()
        return (model, report) if output_loading_info else model

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write config.json and model.safetensors as Hugging Face's GPT2LMHeadModel does."""
        hf.save_hf(self, directory, self.config.to_hf_dict(), transpose=_CONV1D)


def _sample(logits: np.ndarray, temperature: float, top_k: int | None,
            rng: np.random.Generator) -> np.ndarray:
    """One token id per row of `logits` (B, V), as int64 (B,)."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return logits.argmax(-1).astype(np.int64)
    logits = logits / temperature
    if top_k is not None:
        k = min(top_k, logits.shape[-1])
        kth = np.sort(logits, axis=-1)[:, -k][:, None]  # (B, 1)
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    cdf = np.cumsum(probs, axis=-1)  # (B, V), unnormalised
    # Inverse-CDF draw; scaling u by the total keeps the index on a token of non-zero mass.
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    return (cdf < u).sum(-1).astype(np.int64)
