"""minitl.nn: Module, layers, containers, losses, init and utils (PyTorch names).

`minitl.nn.functional` holds the stateless ops the layers wrap; import it
explicitly (`import minitl.nn.functional as F`), as with PyTorch.
"""

from minitl.nn import init, utils
from minitl.nn.activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from minitl.nn.attention import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer
from minitl.nn.container import ModuleDict, ModuleList, Sequential
from minitl.nn.conv import Conv1d, Conv2d
from minitl.nn.dropout import Dropout
from minitl.nn.embedding import Embedding
from minitl.nn.linear import Identity, Linear
from minitl.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from minitl.nn.module import Module
from minitl.nn.norm import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm
from minitl.nn.parameter import Parameter
from minitl.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, Flatten, MaxPool2d
from minitl.nn.quantized import QuantEmbedding, QuantLinear

__all__ = [
    "GELU", "AdaptiveAvgPool2d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d",
    "BatchNorm2d", "Conv1d", "Conv2d", "CrossEntropyLoss", "Dropout", "Embedding", "Flatten",
    "Identity", "L1Loss", "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MSELoss",
    "MaxPool2d", "Module", "ModuleDict", "ModuleList", "MultiheadAttention", "NLLLoss",
    "Parameter", "QuantEmbedding", "QuantLinear", "RMSNorm", "ReLU", "Sequential", "SiLU",
    "Sigmoid", "SmoothL1Loss", "Softmax", "Tanh", "TransformerEncoder", "TransformerEncoderLayer",
    "init", "utils",
]
