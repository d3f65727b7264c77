"""minitl: transfer learning from first principles (autograd, models, kernels)."""

from typing import TYPE_CHECKING

from minitl import (  # noqa: E402
    assets,
    autograd,
    cuda,
    data,
    dtypes,
    memory,
    models,
    nn,
    optim,
    pretrain,
    train,
    transfer,
)
from minitl.autograd_state import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_grad_enabled,
)
from minitl.creation import (
    arange,
    as_tensor,
    empty,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    manual_seed,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    tril,
    triu,
    zeros,
    zeros_like,
)
from minitl.device import Device, device
from minitl.dtypes import (
    bool_,
    double,
    float16,
    float32,
    float64,
    half,
    int8,
    int16,
    int32,
    int64,
    long,
    uint8,
)
from minitl.functional import (  # noqa: E402
    cat,
    chunk,
    clamp,
    exp,
    gather,
    log,
    logsumexp,
    matmul,
    maximum,
    mean,
    minimum,
    relu,
    sigmoid,
    softmax,
    split,
    sqrt,
    stack,
    sum,
    tanh,
    where,
)
from minitl.io import load, save  # noqa: E402
from minitl.tensor import Tensor, get_default_dtype, set_default_dtype
from minitl.threads import get_num_threads, set_num_threads

memory.retain_at_import()  # freed activations stay in the heap (minitl/memory.py)

if TYPE_CHECKING:
    from minitl import recipes

__version__ = "0.1.0"


def load_finetuned(directory: str, *, backbone: str | None = None
                   ) -> "recipes.finetuned.FinetunedClassifier":
    """The classifier `minitl finetune --out DIR` wrote, ready to `predict` texts: see
    `minitl.recipes.finetuned.load_finetuned` (imported on first use: the recipes stay
    out of `import minitl`)."""
    from minitl.recipes.finetuned import load_finetuned as load

    return load(directory, backbone=backbone)


__all__ = [
    "arange", "as_tensor", "assets", "autograd", "bool_", "cat", "chunk", "clamp", "cuda", "data",
    "Device", "device", "double", "dtypes", "empty", "enable_grad", "exp", "eye", "float16",
    "float32", "float64", "from_numpy", "full", "full_like", "gather", "get_default_dtype",
    "get_num_threads", "half", "inference_mode", "int16", "int32", "int64", "int8",
    "is_grad_enabled", "is_inference_mode_enabled", "linspace", "load", "load_finetuned", "log",
    "logsumexp", "long",
    "manual_seed", "matmul", "maximum", "mean", "minimum", "models", "nn", "no_grad", "ones",
    "ones_like", "optim", "pretrain", "rand", "randint", "randn", "randn_like", "randperm", "relu",
    "save", "set_default_dtype", "set_grad_enabled", "set_num_threads", "sigmoid", "softmax",
    "split", "sqrt", "stack", "sum", "tanh", "Tensor", "tensor", "train", "transfer", "tril",
    "triu", "uint8", "where", "zeros", "zeros_like",
]
