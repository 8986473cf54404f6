"""The DSL's symbolic tensor and the `spec` that describes a traced argument.

A `Tensor` is a handle on a graph node: it has a shape and a dtype but no values.
Operators (`+ - * / @ ** < ...`) are attached by `ops.functional`, so that every
operator and its torch-named function are one and the same code.
"""
from __future__ import annotations

import numpy as np

from ops.errors import ArgumentError, ChainruleError
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
    __array_priority__ = 1000   # numpy scalars on the left defer to our operators

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
            raise ArgumentError("len() of a 0-d tensor", source=capture_source())
        return self.shape[0]

    def __bool__(self):
        raise ChainruleError(
            "a traced tensor has no value yet, so Python `if`/`and`/`or` cannot look at it; "
            "use O.where(cond, a, b) to choose between values", source=capture_source())

    def __iter__(self):
        raise ChainruleError("iterating over a traced tensor is not supported; index it: x[i]",
                             source=capture_source())

    __hash__ = object.__hash__

    def __repr__(self):
        n = self.node
        where = f" at {n.source}" if n.source else ""
        return f"Tensor({n.name or 't' + str(n.id)}: {n.type_str}{where})"
