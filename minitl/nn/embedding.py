"""Embedding: a lookup table of learned vectors indexed by integer ids."""

from __future__ import annotations

from typing import Any

import minitl.nn.functional as F
from minitl.creation import empty
from minitl.nn import init
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor

__all__ = ["Embedding"]


class Embedding(Module):
    """`output[..., :] = weight[input[...]]`.

    Args:
        num_embeddings: size of the vocabulary.
        embedding_dim: size of each vector.
        padding_idx: this row is initialised to zeros and receives no gradient, so a
            padding token stays a zero vector during training. Negative values count
            from the end.
        device, dtype: where and in what dtype the weight lives.

    Shape:
        - Input: (*) integer ids in [0, num_embeddings)
        - Output: (*, embedding_dim)

    Attributes:
        weight: (num_embeddings, embedding_dim), initialised N(0, 1).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device: Any = None, dtype: Any = None, _weight: Tensor | None = None,
                 _freeze: bool = False) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx={padding_idx} must be within num_embeddings "
                                 f"({num_embeddings})")
            padding_idx = padding_idx % num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype,
                                          device=device), requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if _weight.shape != (num_embeddings, embedding_dim):
                raise ValueError(f"Shape of weight {_weight.shape} does not match "
                                 f"num_embeddings and embedding_dim")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings: Tensor, freeze: bool = True,
                        padding_idx: int | None = None) -> Embedding:
        """An Embedding holding a copy of the 2-D `embeddings` (frozen by default)."""
        if embeddings.ndim != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx,
                   _weight=Tensor(embeddings.data.copy()), _freeze=freeze)

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
