"""chainrule's dtypes as torch's, for the executors' device tensors."""
from __future__ import annotations

import numpy as np

TORCH_DTYPE = {}


def torch_dtype(dtype):
    import torch  # optional heavy dependency: only executors that hold device tensors need it

    if not TORCH_DTYPE:
        TORCH_DTYPE.update({"float32": torch.float32, "float64": torch.float64, "int32": torch.int32,
                            "int64": torch.int64, "bool": torch.bool})
    return TORCH_DTYPE[dtype]


def itemsize(dtype):
    return np.dtype(dtype).itemsize
