"""Model configurations: one `@dataclass` per architecture, a comment per field, named sizes.

`XConfig.named("bert-mini")` returns a fresh config of a size that trains in minutes on two
CPU cores; keyword overrides replace single fields (`BertConfig.named("bert-mini",
vocab_size=8000)`). `BertConfig` and `GPTConfig` also read and write Hugging Face
`config.json` dictionaries (`from_hf_dict` / `to_hf_dict`), so a directory saved by minitl
looks like one saved by `transformers` and the other way round.

Every config checks every field when it is made (`__post_init__`): sizes are positive
integers, dropout rates lie in [0, 1), epsilons are positive, names are known, heads divide
the width. A bad value raises ValueError naming the class, the field and the value, here
rather than as a math domain error or a shape mismatch deep inside the model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar, Self

__all__ = ["BertConfig", "GPTConfig", "LlamaConfig", "ResNetConfig", "ViTConfig"]


class _Named:
    """`named(size, **overrides)` and `replace(**changes)` for the dataclasses below."""

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Self:
        if name not in cls.SIZES:
            raise KeyError(f"{cls.__name__}: unknown size {name!r}; known sizes: "
                           f"{', '.join(sorted(cls.SIZES))}")
        fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}; its fields: "
                            f"{', '.join(fields)}")
        return cls(**{**cls.SIZES[name], **overrides})  # type: ignore[call-arg]

    @classmethod
    def sizes(cls) -> list[str]:
        return sorted(cls.SIZES)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# ---- field checks (each returns the value in its plain Python type) ------------------------------

def _int(cfg: object, name: str, lo: int = 1) -> int:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise ValueError(f"{type(cfg).__name__}: {name} must be an integer >= {lo}, "
                         f"got {value!r}")
    return int(value)


def _real(cfg: object, name: str, lo: float, hi: float = math.inf, *, lo_open: bool = False,
          hi_open: bool = False, none: bool = False) -> float | None:
    value = getattr(cfg, name)
    if value is None and none:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        want = (f"> {lo:g}" if lo_open else f">= {lo:g}") if hi == math.inf else \
            f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{type(cfg).__name__}: {name} must be a finite number {want}"
                         f"{' or None' if none else ''}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _choice(cfg: object, name: str, options: Iterable[Any]) -> None:
    value, options = getattr(cfg, name), tuple(options)
    if isinstance(value, bool) != isinstance(options[0], bool) or value not in options:
        raise ValueError(f"{type(cfg).__name__}: {name} must be one of "
                         f"{', '.join(map(repr, options))}, got {value!r}")


def _set(cfg: object, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(cfg, name, value)


# Dropout rates: p = 1 would zero every activation, so [0, 1) as the CLI's `probability`.
_RATE: dict[str, Any] = {"lo": 0.0, "hi": 1.0, "hi_open": True}


# ---- BERT ------------------------------------------------------------------------------

@dataclass
class BertConfig(_Named):
    """A BERT-style encoder (arXiv:1810.04805). Field names are Hugging Face's."""

    vocab_size: int = 30522  # rows of the word embedding and of the MLM decoder
    hidden_size: int = 256  # D, the width of every token vector
    num_hidden_layers: int = 4  # number of post-LN transformer blocks
    num_attention_heads: int = 4  # heads per block; head size = D / heads
    intermediate_size: int = 1024  # width of the feed-forward layer (usually 4 D)
    hidden_act: str = "gelu"  # "gelu" (exact, erf), "gelu_new"/"gelu_pytorch_tanh", "relu"
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and on each sub-layer output
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    max_position_embeddings: int = 512  # longest sequence (learned absolute positions)
    type_vocab_size: int = 2  # segment ids (sentence A / sentence B)
    initializer_range: float = 0.02  # std of the normal init of weights and embeddings
    layer_norm_eps: float = 1e-12  # real BERT checkpoints use 1e-12
    pad_token_id: int = 0  # its embedding row starts at zero and gets no lookup gradient
    classifier_dropout: float | None = None  # head dropout; None means hidden_dropout_prob

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {
        "bert-tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 512},
        "bert-mini": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                      "intermediate_size": 1024},
        "bert-small": {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
                       "intermediate_size": 2048},
        # the encoder of all-MiniLM-L6-v2 (the "minilm-l6" asset)
        "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                      "intermediate_size": 1536},
        "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "intermediate_size": 3072},
    }

    def __post_init__(self) -> None:
        _set(self, **{n: _int(self, n) for n in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size")})
        _set(self, pad_token_id=_int(self, "pad_token_id", 0),
             hidden_dropout_prob=_real(self, "hidden_dropout_prob", **_RATE),
             attention_probs_dropout_prob=_real(self, "attention_probs_dropout_prob", **_RATE),
             classifier_dropout=_real(self, "classifier_dropout", **_RATE, none=True),
             initializer_range=_real(self, "initializer_range", 0.0),
             layer_norm_eps=_real(self, "layer_norm_eps", 0.0, lo_open=True))
        _choice(self, "hidden_act", ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"))
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"BertConfig: pad_token_id {self.pad_token_id} is not a token id "
                             f"(vocab_size {self.vocab_size})")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> BertConfig:
        """Build from a Hugging Face BERT `config.json` dict; unknown keys are ignored.

        Raises:
            ValueError: the config asks for something this encoder does not implement
                (relative position embeddings, a decoder with cross-attention).
        """
        pos = d.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"position_embedding_type={pos!r} is not supported "
                             "(only 'absolute')")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError("BERT decoders (is_decoder / add_cross_attention) are not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        return cls(**{**kwargs, **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` Hugging Face's BertModel would write for this config."""
        d = dataclasses.asdict(self)
        d.update(model_type="bert", architectures=["BertModel"],
                 position_embedding_type="absolute")
        return d


# ---- GPT -------------------------------------------------------------------------------

@dataclass
class GPTConfig(_Named):
    """A GPT-2-style decoder (Radford et al. 2019), field names as in nanoGPT."""

    vocab_size: int = 50257  # rows of the token embedding and of the tied LM head
    block_size: int = 256  # longest context (learned absolute positions)
    n_layer: int = 4  # number of pre-LN transformer blocks
    n_head: int = 4  # attention heads per block; head size = n_embd / n_head
    n_embd: int = 256  # D, the width of every token vector
    dropout: float = 0.0  # on embeddings, attention weights and sub-layer outputs
    bias: bool = True  # biases in Linear and LayerNorm (GPT-2 has them)
    activation: str = "gelu_tanh"  # "gelu_tanh" (GPT-2's gelu_new) or "gelu" (exact)
    layer_norm_eps: float = 1e-5  # GPT-2 uses 1e-5
    # std of the normal init; residual projections get 1/sqrt(2 n_layer) of it (GPT-2, 2.3)
    initializer_range: float = 0.02

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {
        "gpt-tiny": {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 128},
        "gpt-mini": {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256},
        "gpt-small": {"n_layer": 6, "n_head": 8, "n_embd": 512, "block_size": 512},
        "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
    }

    def __post_init__(self) -> None:
        _set(self, **{n: _int(self, n) for n in ("vocab_size", "block_size", "n_layer",
                                                  "n_head", "n_embd")})
        _set(self, dropout=_real(self, "dropout", **_RATE),
             initializer_range=_real(self, "initializer_range", 0.0),
             layer_norm_eps=_real(self, "layer_norm_eps", 0.0, lo_open=True))
        _choice(self, "activation", ("gelu_tanh", "gelu"))
        _choice(self, "bias", (True, False))
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd {self.n_embd} is not a multiple of n_head "
                             f"{self.n_head}")

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> GPTConfig:
        """Build from a Hugging Face GPT-2 `config.json` dict."""
        act = d.get("activation_function", "gelu_new")
        kwargs: dict[str, Any] = {
            "vocab_size": d["vocab_size"], "block_size": d.get("n_positions", 1024),
            "n_layer": d["n_layer"], "n_head": d["n_head"], "n_embd": d["n_embd"],
            "dropout": float(d.get("resid_pdrop", 0.0)),
            "activation": "gelu" if act == "gelu" else "gelu_tanh",
            "layer_norm_eps": d.get("layer_norm_epsilon", 1e-5),
            "initializer_range": d.get("initializer_range", 0.02)}
        return cls(**{**kwargs, **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "vocab_size": self.vocab_size, "n_positions": self.block_size,
                "n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd,
                "resid_pdrop": self.dropout, "embd_pdrop": self.dropout,
                "attn_pdrop": self.dropout,
                "activation_function": "gelu" if self.activation == "gelu" else "gelu_new",
                "layer_norm_epsilon": self.layer_norm_eps,
                "initializer_range": self.initializer_range}


# ---- LLaMA -----------------------------------------------------------------------------

@dataclass
class LlamaConfig(_Named):
    """A LLaMA-style decoder (Touvron et al., arXiv:2302.13971), Hugging Face's field names.

    Pre-RMSNorm blocks, rotary positions, a SwiGLU MLP and grouped-query attention (Ainslie et
    al., arXiv:2305.13245): `num_key_value_heads` key/value heads each serve
    num_attention_heads / num_key_value_heads query heads. SmolLM2-135M: 30 layers of width
    576, 9 query and 3 key/value heads, MLP 1536, 49,152 tokens, rope_theta 100,000.
    """

    vocab_size: int = 49152  # rows of the token embedding (and of the tied LM head)
    hidden_size: int = 576  # D, the width of every token vector
    intermediate_size: int = 1536  # width of the SwiGLU MLP
    num_hidden_layers: int = 30
    num_attention_heads: int = 9  # query heads
    num_key_value_heads: int = 3  # key/value heads; divides num_attention_heads
    head_dim: int | None = None  # None: hidden_size / num_attention_heads
    max_position_embeddings: int = 8192  # longest context the rotary tables are built for
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0  # base of the rotary frequencies
    tie_word_embeddings: bool = True  # lm_head.weight IS model.embed_tokens.weight
    initializer_range: float = 0.02  # std of the normal init of a model built from scratch
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {
        "llama-tiny": {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 160,
                       "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "max_position_embeddings": 256},
        "smollm2-135m": {"rope_theta": 100000.0, "bos_token_id": 1, "eos_token_id": 2},
    }

    def __post_init__(self) -> None:
        _set(self, **{n: _int(self, n) for n in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings")})
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"LlamaConfig: hidden_size {self.hidden_size} is not a multiple "
                                 f"of num_attention_heads {self.num_attention_heads}")
            _set(self, head_dim=self.hidden_size // self.num_attention_heads)
        head_dim = _int(self, "head_dim")
        _set(self, head_dim=head_dim)
        if head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim {self.head_dim} must be even (rotary pairs)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"LlamaConfig: num_attention_heads {self.num_attention_heads} is not "
                             f"a multiple of num_key_value_heads {self.num_key_value_heads}")
        _set(self, rms_norm_eps=_real(self, "rms_norm_eps", 0.0, lo_open=True),
             rope_theta=_real(self, "rope_theta", 1.0, lo_open=True),
             initializer_range=_real(self, "initializer_range", 0.0))
        _choice(self, "tie_word_embeddings", (True, False))
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(self, name) is not None:
                _set(self, **{name: _int(self, name, 0)})

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> LlamaConfig:
        """Build from a Hugging Face Llama `config.json` dict."""
        rope = d.get("rope_parameters") or {}
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings", "rms_norm_eps",
                "tie_word_embeddings", "initializer_range", "bos_token_id", "eos_token_id",
                "head_dim")
        kwargs = {k: d[k] for k in keys if k in d}
        kwargs["num_key_value_heads"] = d.get("num_key_value_heads", d["num_attention_heads"])
        kwargs["rope_theta"] = d.get("rope_theta", rope.get("rope_theta", 10000.0))
        return cls(**{**kwargs, **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
            "rms_norm_eps", "rope_theta", "tie_word_embeddings", "initializer_range",
            "bos_token_id", "eos_token_id")}
        return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, **d}


# ---- ResNet ----------------------------------------------------------------------------

@dataclass
class ResNetConfig(_Named):
    """A ResNet with basic blocks (arXiv:1512.03385), module names as in torchvision."""

    in_channels: int = 1  # 1 for grey images, 3 for RGB
    num_classes: int = 10  # outputs of the `fc` head
    widths: tuple[int, ...] = (16, 32, 64)  # channels of each stage; stage i > 0 halves H, W
    depths: tuple[int, ...] = (2, 2, 2)  # basic blocks per stage
    # "small": one 3x3 conv, stride 1 (28x28, 32x32 images); "imagenet": 7x7 conv stride 2
    # then a 3x3 max-pool, as in torchvision's resnet18/34
    stem: str = "small"
    # start each block's last BatchNorm at gamma = 0 so every block begins as the identity
    # (arXiv:1706.02677)
    zero_init_residual: bool = False
    bn_eps: float = 1e-5  # BatchNorm epsilon
    bn_momentum: float = 0.1  # BatchNorm running-statistics factor

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {
        "resnet-tiny": {"widths": (8, 16), "depths": (1, 1)},
        "resnet-mini": {"widths": (16, 32, 64), "depths": (2, 2, 2)},
        "resnet-small": {"widths": (32, 64, 128), "depths": (2, 2, 2)},
        # torchvision's resnet18 layout (load its state dict into this)
        "resnet18": {"in_channels": 3, "num_classes": 1000, "widths": (64, 128, 256, 512),
                     "depths": (2, 2, 2, 2), "stem": "imagenet"},
    }

    def __post_init__(self) -> None:
        for name in ("widths", "depths"):
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or
                    not all(isinstance(v, Integral) and not isinstance(v, bool) and int(v) >= 1
                            for v in value)):
                raise ValueError(f"ResNetConfig: {name} must be a list of integers >= 1, "
                                 f"got {value!r}")
            setattr(self, name, tuple(int(v) for v in value))
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError(f"ResNetConfig: widths {self.widths} and depths {self.depths} must "
                             "be non-empty and of the same length")
        _set(self, in_channels=_int(self, "in_channels"), num_classes=_int(self, "num_classes"),
             bn_eps=_real(self, "bn_eps", 0.0, lo_open=True),
             bn_momentum=_real(self, "bn_momentum", 0.0, 1.0))
        _choice(self, "zero_init_residual", (True, False))
        if self.stem not in ("small", "imagenet"):
            raise ValueError(f"ResNetConfig: stem must be 'small' or 'imagenet', got "
                             f"{self.stem!r}")


# ---- ViT -------------------------------------------------------------------------------

@dataclass
class ViTConfig(_Named):
    """A Vision Transformer (Dosovitskiy et al., arXiv:2010.11929), field names close to timm's
    VisionTransformer arguments."""

    image_size: int = 28  # square inputs; pos_embed holds (image_size / patch_size)^2 + 1 rows
    patch_size: int = 7  # side of a square patch; must divide image_size
    in_channels: int = 1  # 1 for grey images, 3 for RGB
    num_classes: int = 10  # outputs of the `head`
    embed_dim: int = 64  # D, the width of every token
    depth: int = 4  # number of pre-LN transformer blocks
    num_heads: int = 4  # heads per block; head size = D / heads
    mlp_ratio: float = 4.0  # hidden width of each block's MLP = mlp_ratio * D
    qkv_bias: bool = True  # bias on the fused query/key/value projection (timm's default)
    # "cls": the head reads the class token; "mean": the mean of the patch tokens
    pool: str = "cls"
    dropout: float = 0.0  # after the position embedding and on each sub-layer output
    layer_norm_eps: float = 1e-6  # timm's ViTs use 1e-6
    initializer_range: float = 0.02  # std of the truncated-normal init of weights and embeddings

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {
        # 28x28 grey images in 16 patches of 7x7: the size the tests and --quick runs use
        "vit-tiny": {"embed_dim": 32, "depth": 2, "num_heads": 2},
        "vit-mini": {"embed_dim": 64, "depth": 4, "num_heads": 4},
        # 49 patches of 4x4: ~3x the attention and MLP work of vit-mini per image
        "vit-mini-p4": {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4},
        "vit-small": {"embed_dim": 128, "depth": 6, "num_heads": 4},
    }

    def __post_init__(self) -> None:
        _set(self, **{n: _int(self, n) for n in (
            "image_size", "patch_size", "in_channels", "num_classes", "embed_dim", "depth",
            "num_heads")})
        _set(self, mlp_ratio=_real(self, "mlp_ratio", 0.0, lo_open=True),
             dropout=_real(self, "dropout", **_RATE),
             initializer_range=_real(self, "initializer_range", 0.0),
             layer_norm_eps=_real(self, "layer_norm_eps", 0.0, lo_open=True))
        _choice(self, "qkv_bias", (True, False))
        _choice(self, "pool", ("cls", "mean"))
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig: image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ViTConfig: embed_dim {self.embed_dim} is not a multiple of "
                             f"num_heads {self.num_heads}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)
