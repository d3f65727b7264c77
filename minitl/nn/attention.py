"""Multi-head attention and the transformer encoder (arXiv:1706.03762), PyTorch layout.

Parameter and submodule names equal `torch.nn.MultiheadAttention` and
`torch.nn.TransformerEncoderLayer` (`in_proj_weight` stacks W_q, W_k, W_v as a
(3E, E) matrix; `out_proj` is a Linear), so a torch state dict loads key by key.

One deliberate difference: `batch_first` defaults to True here (PyTorch's default
is False), because every model in minitl is batch-first. Pass batch_first=False
for (L, N, E) inputs.

Mask conventions follow PyTorch's MultiheadAttention: in `attn_mask` and
`key_padding_mask` a boolean True means "may NOT attend" (the opposite of
`F.scaled_dot_product_attention`, where True means "may attend"); float masks
are added to the attention scores.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl.backend import array_module
from minitl.creation import empty
from minitl.nn import init
from minitl.nn.container import ModuleList
from minitl.nn.dropout import Dropout
from minitl.nn.linear import Linear
from minitl.nn.module import Module
from minitl.nn.norm import LayerNorm
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor

__all__ = ["MultiheadAttention", "TransformerEncoder", "TransformerEncoderLayer"]


def _additive(mask: Tensor, dtype: Any) -> Tensor:
    """A boolean "True = blocked" mask as 0 / -inf scores; float masks pass through."""
    if mask.dtype == np.bool_:
        xp = array_module(mask.data)
        return Tensor._wrap(xp.where(mask.data, -np.inf, 0.0).astype(dtype))
    return mask if mask.dtype == dtype else mask.to(dtype)


class MultiheadAttention(Module):
    """Attention over `num_heads` heads of size embed_dim / num_heads:
    `out_proj(concat_h softmax(Q_h K_h^T / sqrt(d) + mask) V_h)`.

    Args:
        embed_dim: model width E (query size).
        num_heads: number of heads; must divide embed_dim.
        dropout: dropout on the attention weights while training (default 0.0).
        bias: learn `in_proj_bias` and `out_proj.bias` (default True).
        kdim, vdim: key / value feature sizes (default embed_dim); when they differ from
            embed_dim, separate `q_proj_weight`, `k_proj_weight`, `v_proj_weight` are used.
        batch_first: inputs are (N, L, E) when True (default, unlike PyTorch), (L, N, E)
            otherwise.

    Shape:
        - query: (N, L, E) (batch_first), (L, N, E), or unbatched (L, E)
        - key: (N, S, kdim); value: (N, S, vdim)
        - key_padding_mask: (N, S) (or (S,) unbatched); True (or -inf) marks padding
        - attn_mask: (L, S) or (N * num_heads, L, S); True (or -inf) blocks a pair
        - output: (N, L, E) like query; weights: (N, L, S) averaged over heads, or
          (N, num_heads, L, S) with average_attn_weights=False.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim must be divisible by num_heads (embed_dim={embed_dim}, "
                             f"num_heads={num_heads})")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        kw = {"dtype": dtype, "device": device}
        # Registration order fixes the state_dict order; it mirrors PyTorch's.
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **kw)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _in_projection(self, query: Tensor, key: Tensor,
                       value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if query is key and key is value:
                # Self-attention: one (3E, E) product instead of three (E, E) ones.
                return F.linear(query, w, b).chunk(3, dim=-1)  # type: ignore[return-value]
            wq, wk, wv = w[:E], w[E:2 * E], w[2 * E:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def _merged_mask(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                     is_causal: bool, N: int, L: int, S: int, like: Tensor) -> Tensor | None:
        """attn_mask, key_padding_mask and the causal mask summed into one additive
        (N or 1, H or 1, L, S) mask, or None when there is nothing to mask."""
        mask = None
        dtype = like.dtype
        if attn_mask is not None:
            m = _additive(attn_mask, dtype)
            if m.shape == (L, S):
                mask = m.reshape(1, 1, L, S)
            elif m.shape == (N * self.num_heads, L, S):
                mask = m.reshape(N, self.num_heads, L, S)
            else:
                raise RuntimeError(f"attn_mask of shape {m.shape} should be {(L, S)} or "
                                   f"{(N * self.num_heads, L, S)}")
        elif is_causal:
            # PyTorch requires attn_mask with the is_causal hint; minitl builds it instead.
            xp = array_module(like.data)
            blocked = xp.triu(xp.ones((L, S), dtype=bool), k=1)
            mask = _additive(Tensor._wrap(blocked), dtype).reshape(1, 1, L, S)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (N, S):
                raise RuntimeError(f"key_padding_mask of shape {key_padding_mask.shape} "
                                   f"should be {(N, S)}")
            kpm = _additive(key_padding_mask, dtype).reshape(N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        return mask

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """Returns (output, attention weights or None); see the class docstring for shapes.

        Args:
            need_weights: also return the attention weights (computes the scores
                explicitly; False lets `F.scaled_dot_product_attention` do the work).
            average_attn_weights: average the returned weights over heads.
            is_causal: mask out future keys (position j > i); used when attn_mask is None.
        """
        batched = query.ndim == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            # (L, N, E) -> (N, L, E); keep `is` identity so self-attention stays fused.
            q_t = query.transpose(0, 1)
            k_t = q_t if key is query else key.transpose(0, 1)
            v_t = k_t if value is key else value.transpose(0, 1)
            query, key, value = q_t, k_t, v_t
        if query.shape[-1] != self.embed_dim:
            raise RuntimeError(f"was expecting embedding dimension of {self.embed_dim}, but "
                               f"got query of shape {query.shape}")
        N, L, E = query.shape
        S = key.shape[1]
        H, D = self.num_heads, self.head_dim
        q, k, v = self._in_projection(query, key, value)
        q = q.reshape(N, L, H, D).transpose(1, 2)  # (N, H, L, D)
        k = k.reshape(N, S, H, D).transpose(1, 2)  # (N, H, S, D)
        v = v.reshape(N, S, H, D).transpose(1, 2)  # (N, H, S, D)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            mask = self._merged_mask(attn_mask, key_padding_mask, is_causal, N, L, S, q)
            scores = (q * (1.0 / math.sqrt(D))) @ k.transpose(-2, -1)  # (N, H, L, S)
            if mask is not None:
                scores = scores + mask
            weights = F.softmax(scores, -1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, dropout_p, True)
            out = weights @ v  # (N, H, L, D)
            if average_attn_weights:
                weights = weights.mean(1)  # (N, L, S)
        elif is_causal and attn_mask is None and key_padding_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            mask = self._merged_mask(attn_mask, key_padding_mask, is_causal, N, L, S, q)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = self.out_proj(out.transpose(1, 2).reshape(N, L, E))  # (N, L, E)
        if not batched:
            out = out.squeeze(0)
            weights = weights.squeeze(0) if weights is not None else None
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _activation(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


class TransformerEncoderLayer(Module):
    """Self-attention block + feed-forward block, each with a residual and a LayerNorm.

    Post-norm (default): `x = norm1(x + sa(x)); x = norm2(x + ff(x))`.
    Pre-norm (norm_first=True): `x = x + sa(norm1(x)); x = x + ff(norm2(x))`.

    Args:
        d_model: model width E.
        nhead: attention heads.
        dim_feedforward: hidden width of the feed-forward block (default 2048).
        dropout: dropout rate after attention, inside and after the feed-forward block
            (default 0.1).
        activation: "relu", "gelu" or a callable / Module (default "relu").
        layer_norm_eps: LayerNorm eps (default 1e-5).
        batch_first: (N, L, E) inputs when True (default True, unlike PyTorch).
        norm_first: pre-norm when True (default False).
        bias: biases in the Linear and LayerNorm layers (default True).

    Shape:
        - src: (N, L, E) (batch_first), (L, N, E) or unbatched (L, E)
        - src_mask: (L, L) or (N * nhead, L, L); src_key_padding_mask: (N, L)
        - output: same as src.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation: str | Callable[[Tensor], Tensor] = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = True,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                  is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout2(x)


class TransformerEncoder(Module):
    """A stack of `num_layers` deep copies of `encoder_layer`, optionally followed by `norm`.

    Args:
        encoder_layer: the layer to clone (e.g. a TransformerEncoderLayer).
        num_layers: how many copies.
        norm: an optional final LayerNorm (needed after pre-norm layers).

    Shape:
        - src: as the layer's src; output: same as src.
    """

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None) -> None:
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src: Tensor, mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool | None = None
                ) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x
