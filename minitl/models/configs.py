"""Model configurations: one `@dataclass` per architecture, a comment per field, named sizes.

`XConfig.named("bert-mini")` returns a fresh config of a size that trains in minutes on two
CPU cores; keyword overrides replace single fields (`BertConfig.named("bert-mini",
vocab_size=8000)`). `BertConfig` and `GPTConfig` also read and write Hugging Face
`config.json` dictionaries (`from_hf_dict` / `to_hf_dict`), so a directory saved by minitl
looks like one saved by `transformers` and the other way round.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Self

__all__ = ["BertConfig", "GPTConfig", "ResNetConfig"]


class _Named:
    """`named(size, **overrides)` and `replace(**changes)` for the dataclasses below."""

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Self:
        if name not in cls.SIZES:
            raise KeyError(f"{cls.__name__}: unknown size {name!r}; known sizes: "
                           f"{', '.join(sorted(cls.SIZES))}")
        return cls(**{**cls.SIZES[name], **overrides})  # type: ignore[call-arg]

    @classmethod
    def sizes(cls) -> list[str]:
        return sorted(cls.SIZES)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


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
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
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
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")

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
        self.widths = tuple(int(w) for w in self.widths)
        self.depths = tuple(int(d) for d in self.depths)
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError(f"widths {self.widths} and depths {self.depths} must be non-empty "
                             "and of the same length")
        if self.stem not in ("small", "imagenet"):
            raise ValueError(f"stem must be 'small' or 'imagenet', got {self.stem!r}")
