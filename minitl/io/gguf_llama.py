"""What a llama.cpp GGUF file of a LLaMA-architecture model means in Hugging Face's terms: its
config (from the metadata), its tensor names, and the row order of its query/key weights.

    f = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    cfg = llama_config(f)                          # a Hugging Face config.json dict
    for hf_name, t in llama_tensors(f): ...        # ("model.layers.0.self_attn.q_proj.weight",
                                                   #  GGUFTensor(...))
    rows = unpermute_rows(f.raw(t.name), n_head)   # q/k rows back in Hugging Face's order

llama.cpp's converter (convert_hf_to_gguf.py: LlamaModel.permute) reorders the rows of the
query and key projections from Hugging Face's rotary layout (each head: its first half-dims,
then its second) to GPT-J's interleaved one; `unpermute_rows` undoes that, on float rows or on
rows of quantized blocks alike (blocks run along a row, so whole rows just move). This module
reads files only; minitl.models.llama builds the model from what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minitl.io.gguf import GGUFFile, GGUFTensor

__all__ = ["llama_config", "llama_tensors", "unpermute_rows"]

# GGUF name (per layer, `{i}` = layer) -> Hugging Face LlamaForCausalLM name.
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
_LAYER = {"attn_norm.weight": "input_layernorm.weight",
          "ffn_norm.weight": "post_attention_layernorm.weight",
          "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
          "attn_v.weight": "self_attn.v_proj.weight",
          "attn_output.weight": "self_attn.o_proj.weight",
          "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
          "ffn_down.weight": "mlp.down_proj.weight"}
_IGNORED = ("rope_freqs.weight",)  # precomputed rotary tables; minitl builds its own


def _meta(f: GGUFFile, key: str, kind: type, default: Any = ...) -> Any:
    if key not in f.metadata:
        if default is ...:
            raise ValueError(f"{f.path}: no {key} in the metadata of this llama file")
        return default
    value = f.metadata[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(f"{f.path}: {key} is {value!r} ({type(value).__name__}); expected a "
                         f"single {kind.__name__} (per-layer values are not supported)")
    return value


def llama_config(f: GGUFFile) -> dict[str, Any]:
    """The model's Hugging Face `config.json` dict, from the `llama.*` metadata.

    Raises:
        ValueError: not a llama file, a missing or mistyped key, or rope scaling (which minitl
            does not implement).
    """
    arch = _meta(f, "general.architecture", str)
    if arch != "llama":
        raise ValueError(f"{f.path}: architecture {arch!r} is not supported (minitl reads "
                         "'llama' files)")
    scaling = f.metadata.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ValueError(f"{f.path}: rope scaling {scaling!r} is not supported")
    heads = _meta(f, "llama.attention.head_count", int)
    width = _meta(f, "llama.embedding_length", int)
    tokens = f.metadata.get("tokenizer.ggml.tokens")
    vocab = _meta(f, "llama.vocab_size", int, len(tokens) if isinstance(tokens, list) else None)
    if vocab is None and "token_embd.weight" in f.tensors:
        vocab = f.tensors["token_embd.weight"].shape[0]
    cfg: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": _meta(f, "llama.feed_forward_length", int),
        "num_hidden_layers": _meta(f, "llama.block_count", int),
        "num_attention_heads": heads,
        "num_key_value_heads": _meta(f, "llama.attention.head_count_kv", int, heads),
        "max_position_embeddings": _meta(f, "llama.context_length", int, 2048),
        "rms_norm_eps": _meta(f, "llama.attention.layer_norm_rms_epsilon", float),
        "rope_theta": _meta(f, "llama.rope.freq_base", float, 10000.0),
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "bos_token_id": _meta(f, "tokenizer.ggml.bos_token_id", int, None),
        "eos_token_id": _meta(f, "tokenizer.ggml.eos_token_id", int, None),
    }
    rot = _meta(f, "llama.rope.dimension_count", int, None)
    if rot is not None and heads and rot != width // heads:
        cfg["head_dim"] = _meta(f, "llama.attention.key_length", int, rot)
        if rot != cfg["head_dim"]:
            raise ValueError(f"{f.path}: partial rotary embeddings (llama.rope.dimension_count "
                             f"{rot} < head size {cfg['head_dim']}) are not supported")
    return cfg


def llama_tensors(f: GGUFFile) -> Iterator[tuple[str, GGUFTensor]]:
    """(Hugging Face name, tensor info) for every tensor of the file.

    Raises:
        ValueError: a tensor name that has no place in a LLaMA model.
    """
    for name, t in f.tensors.items():
        if name in _GLOBAL:
            yield _GLOBAL[name], t
            continue
        if name in _IGNORED:
            continue
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER:
            yield f"model.layers.{int(parts[1])}.{_LAYER[parts[2]]}", t
            continue
        raise ValueError(f"{f.path}: tensor {name!r} has no place in a llama model")


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a q (n_head = query heads) or k (n_head =
    key/value heads) projection: rows (out, ...) -> a new array in Hugging Face's order."""
    out = rows.shape[0]
    if n_head < 1 or out % (2 * n_head):
        raise ValueError(f"cannot un-permute {out} rows into {n_head} heads of rotary pairs")
    half = out // n_head // 2
    return np.ascontiguousarray(rows.reshape(n_head, half, 2, *rows.shape[1:])
                                .swapaxes(1, 2).reshape(rows.shape))
