"""dtype names in PyTorch spelling; they are numpy dtypes (CuPy uses the same ones)."""

import numpy as np

float16 = half = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = double = np.dtype(np.float64)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = long = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)

__all__ = ["float16", "half", "float32", "float64", "double", "int8", "int16", "int32", "int64",
           "long", "uint8", "bool_"]
