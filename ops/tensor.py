"""The DSL's symbolic tensor and the `spec` that describes a traced argument.

A `Tensor` is a handle on a graph node: it has a shape and a dtype but no values.
Operators (`+ - * / @ ** < ...`) are attached by `ops.functional`, so that every
operator and its torch-named function are one and the same code.
"""
from __future__ import annotations

import numpy as np

from ops.errors import ArgumentError, TracedValueError
from ops.ir import SHORT_DTYPE, capture_source

from .dtypes import normalize


class Spec:
    """The shape and dtype of a traced argument: `ops.spec((64, 3), "float32")`."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype="float32"):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        try:
            self.shape = tuple(int(d) for d in shape)
        except TypeError:
            raise ArgumentError(f"spec: shape must be a tuple of ints, got {shape!r}",
                                source=capture_source()) from None
        if any(d < 0 for d in self.shape):
            raise ArgumentError(f"spec: negative dimension in shape {self.shape}", source=capture_source())
        self.dtype = normalize(dtype)

    def __eq__(self, other):
        return isinstance(other, Spec) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash((self.shape, self.dtype))

    def __repr__(self):
        return f"{SHORT_DTYPE[self.dtype]}[{', '.join(map(str, self.shape))}]"


def spec(shape, dtype="float32") -> Spec:
    return Spec(shape, dtype)


class Tensor:
    """A symbolic value inside a trace: a node of the graph being built."""

    __slots__ = ("node",)

    def __init__(self, node):
        self.node = node

    @property
    def shape(self):
        return self.node.shape

    @property
    def dtype(self):
        return self.node.dtype

    @property
    def ndim(self):
        return len(self.node.shape)

    def numel(self):
        return self.node.numel

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def spec(self):
        return Spec(self.shape, self.dtype)

    def __len__(self):
        if not self.shape:
            raise TracedValueError("len() of a 0-d tensor: it has no first dimension (its shape is ())",
                                   source=capture_source())
        return self.shape[0]

    # -- Python asking for a value the trace does not have ------------------------------------

    def __bool__(self):
        raise _no_value("Python `if`/`and`/`or` cannot look at it; use O.where(cond, a, b) to choose "
                        "between values")

    def __float__(self):
        raise _no_value("float() cannot read it; keep it a tensor (ops take tensors and numbers alike) and "
                        "return it from the function to get its value")

    def __int__(self):
        raise _no_value("int() cannot read it; a size or count must be a Python int known at trace time "
                        "(x.shape[0]), and a choice between values is O.where(cond, a, b)")

    def __index__(self):
        raise _no_value("it cannot be used as a Python index, size or range(); use x.shape[...] for sizes, "
                        "and index a tensor with Python ints or slices")

    def __iter__(self):
        raise _no_value("a Python loop (for, list(), unpacking, sum()) cannot walk over it; index it with "
                        "Python ints (x[i]) or use a whole-tensor op such as O.sum(x, dim=0)")

    # -- NumPy asking for a value ------------------------------------------------------------------
    # NumPy computes on values, so a NumPy function given a traced tensor cannot work. Its three
    # protocols all land here; the arithmetic a Python operator sends through a ufunc
    # (`np.ones(3) * x`, `np.float64(2) < x`) is the Tensor's own operator instead.

    def __array__(self, dtype=None, copy=None):
        raise _numpy_error("np.array (or np.asarray)", "keep it a tensor, and return it from the function to get "
                                                       "its values as an array")

    def __array_function__(self, func, types, args, kwargs):
        module = func.__module__.replace("numpy", "np", 1) if func.__module__ else "np"
        raise _numpy_error(f"{module}.{func.__name__}", _dsl_advice(func.__name__))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:         # `a += x` on a NumPy array `a`
            raise _numpy_error(f"np.{ufunc.__name__}(..., out=array) (an in-place update such as a += x)",
                               "a NumPy array cannot hold a traced value: write a = a + x")
        operators = _UFUNC_OPERATORS.get(ufunc.__name__)
        if method != "__call__" or kwargs or operators is None or len(inputs) != 2:
            called = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            raise _numpy_error(called, _dsl_advice(ufunc.__name__ if method == "__call__" else None))
        left, right = inputs
        forward, reflected = operators
        if isinstance(left, Tensor):
            return getattr(left, forward)(right)
        return getattr(right, reflected)(left)

    __hash__ = object.__hash__

    def __repr__(self):
        n = self.node
        where = f" at {n.source}" if n.source else ""
        return f"Tensor({n.name or 't' + str(n.id)}: {n.type_str}{where})"


def _no_value(why):
    """The one error for Python asking a traced tensor for its value."""
    return TracedValueError(f"a traced tensor has no value yet, so {why}", source=capture_source())


# The ufuncs behind Python's operators: (the Tensor's operator, the one with operands swapped).
_UFUNC_OPERATORS = {
    "add": ("__add__", "__radd__"), "subtract": ("__sub__", "__rsub__"), "multiply": ("__mul__", "__rmul__"),
    "divide": ("__truediv__", "__rtruediv__"), "power": ("__pow__", "__rpow__"),
    "matmul": ("__matmul__", "__rmatmul__"), "less": ("__lt__", "__gt__"), "less_equal": ("__le__", "__ge__"),
    "greater": ("__gt__", "__lt__"), "greater_equal": ("__ge__", "__le__"), "equal": ("__eq__", "__eq__"),
    "not_equal": ("__ne__", "__ne__"),
}

# NumPy functions a model reaches for, and the DSL's torch-named way to say the same.
NUMPY_TO_DSL = {
    "mean": "O.mean", "sum": "O.sum", "exp": "O.exp", "log": "O.log", "sqrt": "O.sqrt", "abs": "O.abs",
    "absolute": "O.abs", "negative": "-x", "tanh": "O.tanh", "maximum": "O.maximum", "minimum": "O.minimum",
    "max": "O.amax", "amax": "O.amax", "min": "O.amin", "amin": "O.amin", "argmax": "O.argmax", "var": "O.var",
    "std": "O.std", "dot": "O.matmul or @", "matmul": "O.matmul or @", "concatenate": "O.cat", "concat": "O.cat",
    "stack": "O.stack", "reshape": "x.reshape", "ravel": "O.flatten", "transpose": "O.permute or x.T",
    "swapaxes": "O.transpose", "where": "O.where", "clip": "O.clamp", "expand_dims": "O.unsqueeze",
    "squeeze": "O.squeeze", "broadcast_to": "O.broadcast_to", "power": "O.pow or **", "square": "x * x",
    "add": "O.add or +", "subtract": "O.sub or -", "multiply": "O.mul or *", "divide": "O.div or /",
    "true_divide": "O.div or /", "logaddexp": "O.logsumexp", "less": "<", "less_equal": "<=", "greater": ">",
    "greater_equal": ">=", "equal": "==", "not_equal": "!=",
}


def _dsl_advice(numpy_name):
    instead = NUMPY_TO_DSL.get(numpy_name)
    return f"use {instead}" if instead else "it has no DSL equivalent: see the list of ops in docs/ops.md"


def _numpy_error(called, advice):
    """`np.tanh was called on a traced tensor ...; use O.tanh`, at the user's line."""
    return TracedValueError(f"{called} was called on a traced tensor, which has no values for NumPy to compute "
                            f"on (the model is traced, then compiled); {advice}", source=capture_source())
