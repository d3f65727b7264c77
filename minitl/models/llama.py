"""LLaMA-style decoder (Touvron et al., arXiv:2302.13971) with Hugging Face's module names,
read from a GGUF file: SmolLM2-135M runs, generates and fine-tunes on a CPU.

    lm = LlamaForCausalLM.from_pretrained("smollm2-135m", quantized=True)  # 4/8-bit base
    logits = lm(mt.tensor(ids))                                  # (B, T, vocab_size)
    out = lm.generate(ids, max_new_tokens=32, temperature=0.0)   # greedy

Each block is `x = x + attn(rms_norm(x)); x = x + mlp(rms_norm(x))`: RMSNorm, rotary position
embeddings (RoPE, arXiv:2104.09864, with the file's theta) on queries and keys, grouped-query
attention (arXiv:2305.13245: each key/value head serves several query heads) and a SwiGLU MLP
`down(silu(gate(x)) * up(x))`. The LM head is tied to the token embedding. Parameter names are
Hugging Face LlamaForCausalLM's (`model.layers.0.self_attn.q_proj.weight`, ...), so LoRA
targets and adapters read the same as with peft.

`quantized=True` keeps every projection and the embedding in the file's blocks (QuantLinear,
QuantEmbedding: Q4_1 and Q8_0 for SmolLM2, a sixth of float32) and runs them on the
dequantize-GEMM kernel; only the norms are float. Generation keeps a KVCache whose buffers
grow by doubling, so each new token costs one position of work and no copy of the past.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl.autograd_state import is_grad_enabled, no_grad
from minitl.creation import as_tensor, default_generator, tensor
from minitl.functional import cat
from minitl.io.gguf import GGUFFile, read_gguf, resolve_gguf
from minitl.io.gguf_llama import llama_config, llama_tensors, unpermute_rows
from minitl.models.configs import LlamaConfig
from minitl.nn.quantized import QuantEmbedding, QuantLinear
from minitl.nn.utils.checkpoint import checkpoint
from minitl.tensor import Tensor

__all__ = ["KVCache", "LlamaConfig", "LlamaForCausalLM", "LlamaModel"]

LinearFactory = Callable[[str, int, int], nn.Module]  # (HF name, in, out) -> module


class KVCache:
    """Keys and values (B, n_kv, S, head_dim) of every layer for the S positions seen so far.

    Without autograd the keys go into preallocated buffers that double when full, so a step
    writes one position; with autograd on, the tensors are concatenated (differentiable)."""

    def __init__(self) -> None:
        self.layers: list[Any] = []
        self.length = 0  # positions cached (advanced by LlamaModel.forward after its last layer)

    def __len__(self) -> int:
        return self.length

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        start, end = self.length, self.length + k.shape[2]
        if is_grad_enabled() or not isinstance(k.data, np.ndarray):
            if layer == len(self.layers):
                self.layers.append((k, v))
            else:
                pk, pv = self.layers[layer]
                self.layers[layer] = (cat([pk, k], dim=2), cat([pv, v], dim=2))
            return self.layers[layer]
        if layer == len(self.layers):
            shape = (*k.shape[:2], max(2 * end, 16), k.shape[3])
            self.layers.append([np.empty(shape, k.dtype), np.empty(shape, v.dtype)])
        bufs = self.layers[layer]
        if end > bufs[0].shape[2]:  # full: double, copying the past once
            grown = (*k.shape[:2], 2 * end, k.shape[3])
            for i in (0, 1):
                new = np.empty(grown, bufs[i].dtype)
                new[:, :, :start] = bufs[i][:, :, :start]
                bufs[i] = new
        bufs[0][:, :, start:end] = k.data
        bufs[1][:, :, start:end] = v.data
        return Tensor._wrap(bufs[0][:, :, :end]), Tensor._wrap(bufs[1][:, :, :end])


class LlamaRotaryEmbedding:
    """cos/sin tables (T, head_dim) of the rotary angles pos / theta^(2i / head_dim), in
    Hugging Face's half-split layout ([f_0 .. f_{d/2-1}, f_0 .. f_{d/2-1}]); grown on demand."""

    def __init__(self, head_dim: int, theta: float) -> None:
        self.inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        self.cos = self.sin = np.zeros((0, head_dim), np.float32)

    def __call__(self, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        end = start + length
        if end > self.cos.shape[0]:
            n = max(end, 2 * self.cos.shape[0], 256)
            ang = np.arange(n, dtype=np.float64)[:, None] * self.inv_freq  # (n, d/2)
            ang = np.concatenate([ang, ang], axis=1)
            self.cos, self.sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        return self.cos[start:end], self.sin[start:end]


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, make: LinearFactory, prefix: str) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        assert hd is not None  # LlamaConfig.__post_init__ derives it
        self.n_head, self.n_kv, self.head_dim = (config.num_attention_heads,
                                                 config.num_key_value_heads, hd)
        self.q_proj = make(f"{prefix}.q_proj", d, self.n_head * hd)
        self.k_proj = make(f"{prefix}.k_proj", d, self.n_kv * hd)
        self.v_proj = make(f"{prefix}.v_proj", d, self.n_kv * hd)
        self.o_proj = make(f"{prefix}.o_proj", self.n_head * hd, d)

    def forward(self, x: Tensor, cos: Any, sin: Any, cache: KVCache | None, layer: int,
                mask: Any) -> Tensor:
        b, t, _ = x.shape
        hd = self.head_dim
        q = self.q_proj(x).reshape(b, t, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).reshape(b, t, self.n_kv, hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).reshape(b, t, self.n_kv, hd).transpose(1, 2)  # (B, nkv, T, hd)
        q, k = F.apply_rotary_emb(q, cos, sin), F.apply_rotary_emb(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hd)
        s, rep = k.shape[2], self.n_head // self.n_kv
        # Grouped-query attention without copying K and V: the `rep` query heads that share a
        # key/value head become rep * T rows of one query matrix (B, nkv, rep T, hd), so each
        # product is one larger GEMM against the shared keys; the causal mask repeats per head.
        q = q.reshape(b, self.n_kv, rep * t, hd)
        if mask is None and t > 1:  # query i sits at position s - t + i
            mask = np.tril(np.ones((t, s), dtype=bool), k=s - t)
        if mask is not None:
            mask = np.tile(mask, (1,) * (np.ndim(mask) - 2) + (rep, 1))  # (.., rep T, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nkv, rep T, hd)
        y = y.reshape(b, self.n_head, t, hd).transpose(1, 2)  # (B, T, nh, hd)
        return self.o_proj(y.reshape(b, t, self.n_head * hd))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig, make: LinearFactory, prefix: str) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = make(f"{prefix}.gate_proj", d, f)
        self.up_proj = make(f"{prefix}.up_proj", d, f)
        self.down_proj = make(f"{prefix}.down_proj", f, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.swiglu(self.gate_proj(x), self.up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, make: LinearFactory, prefix: str) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.self_attn = LlamaAttention(config, make, f"{prefix}.self_attn")
        self.mlp = LlamaMLP(config, make, f"{prefix}.mlp")
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=eps)

    def forward(self, x: Tensor, cos: Any, sin: Any, cache: KVCache | None, layer: int,
                mask: Any) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


def _float_linear(name: str, d_in: int, d_out: int) -> nn.Module:
    return nn.Linear(d_in, d_out, bias=False)


class LlamaModel(nn.Module):
    """Embedding, `num_hidden_layers` decoder layers and the final RMSNorm: hidden states."""

    def __init__(self, config: LlamaConfig, make: LinearFactory = _float_linear,
                 embed: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = embed or nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, make, f"model.layers.{i}")
                                    for i in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        assert config.head_dim is not None  # LlamaConfig.__post_init__ derives it
        self.rotary = LlamaRotaryEmbedding(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False

    def forward(self, input_ids: Any = None, attention_mask: Any = None,
                kv_cache: KVCache | None = None, inputs_embeds: Tensor | None = None) -> Tensor:
        """Hidden states (B, T, D). `attention_mask` (B, S) marks the keys to attend to (1) and
        padding (0); with `kv_cache`, `input_ids` holds only the new positions."""
        x = self.embed_tokens(as_tensor(input_ids)) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        start = 0 if kv_cache is None else kv_cache.length
        cos, sin = self.rotary(start, t)
        mask = None
        if attention_mask is not None:
            keep = np.asarray(attention_mask.data if isinstance(attention_mask, Tensor)
                              else attention_mask).astype(bool)  # (B, S)
            s = start + t
            if keep.shape != (x.shape[0], s):
                raise ValueError(f"attention_mask must be (batch, {s}), got {keep.shape}")
            mask = np.tril(np.ones((t, s), dtype=bool), k=s - t)[None, None] \
                & keep[:, None, None, :]  # (B, 1, T, S)
        recompute = self.gradient_checkpointing and self.training and kv_cache is None
        for i, layer in enumerate(self.layers):
            x = (checkpoint(layer, x, cos, sin, None, i, mask) if recompute
                 else layer(x, cos, sin, kv_cache, i, mask))
        if kv_cache is not None:
            kv_cache.length += t
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """LlamaModel plus the LM head (tied to the embedding unless the config says otherwise).

    Shape:
        - input_ids: (B, T) int64; output: (B, T, vocab_size) logits
    """

    def __init__(self, config: LlamaConfig, make: LinearFactory = _float_linear,
                 embed: nn.Module | None = None, head: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, make, embed)
        if head is not None:
            self.lm_head = head
        else:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if head is None and config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if embed is None and make is _float_linear:
            self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def forward(self, input_ids: Any = None, attention_mask: Any = None,
                kv_cache: KVCache | None = None, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.lm_head(self.model(input_ids, attention_mask, kv_cache, inputs_embeds))

    # ---- memory-lean training --------------------------------------------------------------

    def gradient_checkpointing_enable(self) -> None:
        """In training mode, keep only each decoder layer's input from the forward pass and
        recompute the layer in backward (minitl.nn.utils.checkpoint): one more forward pass of
        compute for one (B, T, D) array per layer instead of all its intermediates."""
        self.model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.model.gradient_checkpointing

    def causal_lm_loss(self, input_ids: Any, labels: Any = None, attention_mask: Any = None,
                       chunk_tokens: int = 256, ignore_index: int = -100) -> Tensor:
        """Mean next-token cross-entropy: position t is scored on labels[:, t + 1] (labels
        default to input_ids; `ignore_index` marks positions left out, as in transformers'
        `labels=`). The LM head and the loss run `chunk_tokens` positions at a time, each
        chunk checkpointed, so the (B*T, vocab) logits and their gradient never exist whole:
        for 8 x 128 tokens and SmolLM2's 49,152-word vocabulary that is 2 x 201 MB less."""
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        ids = np.asarray(input_ids.data if isinstance(input_ids, Tensor) else input_ids)
        lab = ids if labels is None else np.asarray(
            labels.data if isinstance(labels, Tensor) else labels)
        if ids.ndim != 2 or lab.shape != ids.shape:
            raise ValueError(f"causal_lm_loss: input_ids must be (B, T) and labels the same "
                             f"shape, got {ids.shape} and {lab.shape}")
        target = lab[:, 1:].reshape(-1).astype(np.int64)
        count = int((target != ignore_index).sum())
        if count == 0:
            raise ValueError("causal_lm_loss: every target position is ignore_index")
        h = self.model(ids, attention_mask)
        hs = h[:, :-1].reshape(-1, h.shape[-1])
        total: Tensor | None = None
        for i in range(0, len(target), chunk_tokens):
            part = checkpoint(self._head_loss, hs[i:i + chunk_tokens],
                              tensor(target[i:i + chunk_tokens]), ignore_index)
            total = part if total is None else total + part
        assert total is not None
        return total / count

    def _head_loss(self, h: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        return F.cross_entropy(self.lm_head(h), target, ignore_index=ignore_index,
                               reduction="sum")

    # ---- generation ------------------------------------------------------------------------

    def stream(self, input_ids: Any, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               eos_token_id: int | None = None) -> Iterator[np.ndarray]:
        """Yield the next token of each row (B,) as it is chosen (see `generate`)."""
        ids = np.asarray(input_ids.data if isinstance(input_ids, Tensor) else input_ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
            raise ValueError(f"generate: input_ids must be a non-empty (B, T) integer array, "
                             f"got {ids.dtype} {ids.shape}")
        if not (temperature >= 0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        rng = default_generator()
        was_training = self.training
        self.eval()
        cache = KVCache()
        step = ids.astype(np.int64)
        done = np.zeros(ids.shape[0], dtype=bool)
        try:
            with no_grad():
                for _ in range(max_new_tokens):
                    h = self.model(tensor(step), kv_cache=cache)
                    logits = self.lm_head(h[:, -1])  # (B, V): only the last position
                    nxt = _sample(logits.numpy(), temperature, top_k, top_p, rng)
                    if eos_token_id is not None:
                        nxt = np.where(done, eos_token_id, nxt)
                        done |= nxt == eos_token_id
                    yield nxt
                    if done.all():
                        return
                    step = nxt[:, None]
        finally:
            self.train(was_training)

    def generate(self, input_ids: Any, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 eos_token_id: int | None = None) -> Tensor:
        """`input_ids` (B, T) followed by up to `max_new_tokens` new tokens per row.

        temperature 0.0 is greedy; otherwise the logits are divided by it and sampled from
        `minitl.creation.default_generator()` (`mt.manual_seed` makes runs repeat), keeping the
        `top_k` most likely tokens and the smallest set whose probability reaches `top_p`.
        Rows that produced `eos_token_id` are padded with it; generation stops when all have.
        The prompt runs once; each new token then costs one position (KVCache).
        """
        ids = np.asarray(input_ids.data if isinstance(input_ids, Tensor) else input_ids)
        new = list(self.stream(ids, max_new_tokens, temperature, top_k, top_p, eos_token_id))
        out = np.concatenate([ids.astype(np.int64)] + [n[:, None] for n in new], axis=1)
        return tensor(out)

    # ---- GGUF files ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], quantized: bool = False,
                        **overrides: Any) -> LlamaForCausalLM:
        """From an asset name ("smollm2-135m"), a .gguf file or a folder holding one.

        quantized=False dequantizes every weight to float32 (what transformers does with a
        GGUF); quantized=True keeps the projections and the embedding in the file's blocks
        (frozen; train them through LoRA). Returned in eval mode; keyword arguments override
        LlamaConfig fields.
        """
        f = read_gguf(resolve_gguf(name_or_path))
        model = cls.from_gguf(f, quantized, **overrides)
        return model

    @classmethod
    def from_gguf(cls, f: GGUFFile, quantized: bool = False, **overrides: Any
                  ) -> LlamaForCausalLM:
        config = LlamaConfig.from_hf_dict(llama_config(f), **overrides)
        tensors = dict(llama_tensors(f))
        heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}

        def rows(name: str, quant: bool) -> tuple[np.ndarray, int]:
            """Stored rows (blocks when quant, else float32) in Hugging Face's row order."""
            t = tensors[name]
            data = np.array(f.raw(t.name)) if quant else f.tensor(t.name)
            kind = name.rsplit(".", 2)[-2]
            if kind in heads:
                data = unpermute_rows(data, heads[kind])
            return data, t.type.id

        def expect(name: str, shape: tuple[int, ...]) -> None:
            if name not in tensors:
                raise ValueError(f"{f.path}: the file has no tensor for {name}")
            got = tensors[name].shape
            if got != shape:
                raise ValueError(f"{f.path}: {name} has shape {got}, the config needs {shape}")

        def make(prefix: str, d_in: int, d_out: int) -> nn.Module:
            name = prefix + ".weight"
            expect(name, (d_out, d_in))
            if quantized:
                return QuantLinear(*rows(name, True))
            layer = nn.Linear.__new__(nn.Linear)  # no random init: the file has the weights
            nn.Module.__init__(layer)
            layer.in_features, layer.out_features = d_in, d_out
            layer.weight = nn.Parameter(tensor(rows(name, False)[0]))
            layer.register_parameter("bias", None)
            return layer

        emb_name = "model.embed_tokens.weight"
        expect(emb_name, (config.vocab_size, config.hidden_size))
        if quantized:
            embed: nn.Module = QuantEmbedding(*rows(emb_name, True))
            head = (QuantLinear(embed.qweight, embed.qtype) if config.tie_word_embeddings
                    else make("lm_head", config.hidden_size, config.vocab_size))
        else:
            embed = nn.Embedding(config.vocab_size, config.hidden_size,
                                 _weight=tensor(rows(emb_name, False)[0]))
            head = nn.Linear.__new__(nn.Linear)
            nn.Module.__init__(head)
            head.in_features, head.out_features = config.hidden_size, config.vocab_size
            head.register_parameter("bias", None)
            if config.tie_word_embeddings:
                head.weight = embed.weight
            else:
                expect("lm_head.weight", (config.vocab_size, config.hidden_size))
                head.weight = nn.Parameter(tensor(rows("lm_head.weight", False)[0]))
        model = cls(config, make, embed, head)
        for name, p in model.named_parameters():
            if name in tensors and name.endswith("norm.weight"):
                expect(name, tuple(p.shape))
                p.data[...] = f.tensor(tensors[name].name)
        missing = [n for n, _ in model.named_parameters() if n.endswith("norm.weight")
                   and n not in tensors]
        if missing:
            raise ValueError(f"{f.path}: no tensor for {missing[0]} ({len(missing)} missing)")
        model.eval()
        return model


def _sample(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
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
    probs /= probs.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # keep the tokens before the running sum passes top_p, and the one that passes it
        drop = np.cumsum(sorted_p, axis=-1) - sorted_p >= top_p
        mask = np.zeros_like(drop)
        np.put_along_axis(mask, order, drop, axis=-1)
        probs = np.where(mask, 0.0, probs)
    cdf = np.cumsum(probs, axis=-1)  # (B, V), unnormalised
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(-1), logits.shape[-1] - 1).astype(np.int64)
