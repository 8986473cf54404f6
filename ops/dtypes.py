"""Dtypes and type promotion, following PyTorch: Python scalars are 'weak' and take the
tensor's dtype unless they change its kind (an int tensor times 0.5 gives float32)."""
from __future__ import annotations

import numpy as np

from ops.errors import DTypeError

ORDER = ("bool", "int32", "int64", "float32", "float64")
FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
DEFAULT_FLOAT = "float32"

_ALIASES = {"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "b8": "bool",
            "float": "float32", "double": "float64", "int": "int64", "long": "int64"}


def normalize(dtype) -> str:
    """'float32', np.float32, np.dtype('float32'), torch.float32 -> 'float32'."""
    if isinstance(dtype, str):
        name = _ALIASES.get(dtype, dtype)
    elif hasattr(dtype, "is_floating_point") and str(dtype).startswith("torch."):
        name = str(dtype)[len("torch."):]
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name not in ORDER:
        raise DTypeError(f"unsupported dtype {dtype!r}; chainrule supports {', '.join(ORDER)}")
    return name


def is_float(dtype) -> bool:
    return dtype in FLOATS


def is_int(dtype) -> bool:
    return dtype in INTS


def scalar_kind(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    return "float"


def promote(dtypes, weak_kinds=()) -> str:
    """Result dtype of an elementwise op over tensors of `dtypes` and Python scalars."""
    strong = max(dtypes, key=ORDER.index) if dtypes else None
    if strong is None:
        if "float" in weak_kinds:
            return DEFAULT_FLOAT
        if "int" in weak_kinds:
            return "int64"
        return "bool"
    if "float" in weak_kinds and not is_float(strong):
        return DEFAULT_FLOAT
    if "int" in weak_kinds and strong == "bool":
        return "int64"
    return strong
