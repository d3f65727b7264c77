"""Frozen layers whose weights stay in ggml's quantized blocks: QuantLinear and QuantEmbedding.

    layer = QuantLinear.from_linear(nn.Linear(576, 1536), "Q4_1")   # ~5 bits a weight
    y = layer(x)                      # dequantize-GEMM: the float weight is never formed
    tl.apply_lora(model, cfg)         # LoRA on top of QuantLinear layers = QLoRA

The blocks live in the buffer `qweight`, uint8 (out_features, bytes per row), in the layout of
a GGUF file (minitl/io/gguf_quants.py), so a model read from GGUF keeps its file's 4 and 8 bit
weights in memory. The weight is frozen: QuantLinear passes gradients to its input (and to a
bias, which stays float) but has no weight gradient; train it through LoRA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.creation import tensor
from minitl.io.gguf_quants import dequantize, quantize, type_info
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.ops.quant import quant_embedding, quant_linear, quant_rows_in_features
from minitl.tensor import Tensor

__all__ = ["QuantEmbedding", "QuantLinear"]


def _blocks(q: Any, qtype: int | str) -> tuple[Tensor, int, int]:
    """(qweight Tensor, type id, in_features) after checking the block array."""
    tid = type_info(qtype).id
    arr = np.ascontiguousarray(q.data if isinstance(q, Tensor) else q)
    din = quant_rows_in_features(arr, tid)
    shared = isinstance(q, Tensor) and arr is q.data  # a tied table stays one Tensor
    return (q if shared else Tensor._wrap(arr)), tid, din


class QuantLinear(Module):
    """`y = x W^T + b` with W frozen in ggml blocks (Q4_0, Q4_1, Q8_0; F16/F32 rows too).

    Args:
        qweight: uint8 (out_features, bytes per row) blocks, e.g. `GGUFFile.raw(name)`.
        qtype: the ggml type, by name ("Q4_1") or id (3).
        bias: optional float32 (out_features,) bias, trainable.

    Shape:
        - Input: (*, in_features) float32; Output: (*, out_features)
    """

    def __init__(self, qweight: Any, qtype: int | str, bias: Any = None) -> None:
        super().__init__()
        q, self.qtype, self.in_features = _blocks(qweight, qtype)
        self.out_features = q.shape[0]
        self.register_buffer("qweight", q)
        if bias is not None:
            b = np.asarray(bias.data if isinstance(bias, Tensor) else bias, np.float32)
            if b.shape != (self.out_features,):
                raise ValueError(f"QuantLinear: bias {b.shape} does not fit "
                                 f"{self.out_features} outputs")
            self.bias = Parameter(tensor(b))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: Module, qtype: int | str = "Q4_1") -> QuantLinear:
        """Quantize an nn.Linear's weight (ggml's rounding); its bias is kept in float."""
        w = np.asarray(linear.weight.data, np.float32)
        bias = None if linear.bias is None else linear.bias.data
        return cls(quantize(w, qtype), qtype, bias)

    @property
    def qtype_name(self) -> str:
        return type_info(self.qtype).name

    def dequantize(self) -> np.ndarray:
        """The float32 weight (out_features, in_features), formed on demand."""
        return dequantize(self.qweight.data, self.qtype, (self.out_features, self.in_features))

    def forward(self, input: Tensor) -> Tensor:
        return quant_linear(input, self.qweight, self.qtype, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"qtype={self.qtype_name}, bias={self.bias is not None}")


class QuantEmbedding(Module):
    """A frozen lookup table kept in ggml blocks; only the rows looked up are dequantized.

    Shape:
        - Input: (*) integer ids; Output: (*, embedding_dim) float32
    """

    def __init__(self, qweight: Any, qtype: int | str) -> None:
        super().__init__()
        q, self.qtype, self.embedding_dim = _blocks(qweight, qtype)
        self.num_embeddings = q.shape[0]
        self.register_buffer("qweight", q)

    def forward(self, input: Any) -> Tensor:
        return quant_embedding(input, self.qweight, self.qtype)

    def dequantize(self) -> np.ndarray:
        return dequantize(self.qweight.data, self.qtype,
                          (self.num_embeddings, self.embedding_dim))

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, "
                f"qtype={type_info(self.qtype).name}")
