"""What a primitive is: one object that knows an op's shape rule, its NumPy reference,
its vector-Jacobian product and the kernel family that lowers it.

Calling a primitive on NumPy arrays computes the reference value; calling it on traced
`Tensor`s appends a node to the graph being traced. So the printed program of a graph,
which is a sequence of primitive calls, runs on arrays and re-traces on specs alike.
"""
from __future__ import annotations

import numpy as np

from compiler import ir
from compiler.errors import ChainruleError, ShapeError

from .dtypes import promote, scalar_kind
from .tensor import Tensor

REGISTRY: dict[str, "Primitive"] = {}

# Kernel families (how the Triton backend lowers a primitive).
POINTWISE = "pointwise"
REDUCTION = "reduction"
MATMUL = "matmul"
CONV = "conv"
WINDOW = "window"
LAYOUT = "layout"
SOURCE = "source"


class Primitive:
    """An op the compiler knows directly; everything else is written with these.

    impl(*arrays, **attrs)           -> the NumPy reference value
    shape(*inputs, **attrs)          -> (shape, dtype) of the output; inputs have .shape/.dtype
    vjp(g, out, *inputs, **attrs)    -> one cotangent (a Tensor, written with ops) or None per input
    differentiable                   -> False for comparisons, argmax, random numbers, ...
    """

    def __init__(self, name, family, impl, shape, vjp=None, formula="", differentiable=True):
        self.name = name
        self.family = family
        self.impl = impl
        self.shape_rule = shape
        self.vjp = vjp
        self.formula = formula
        self.differentiable = differentiable and vjp is not None
        REGISTRY[name] = self

    def __repr__(self):
        return f"<primitive {self.name} ({self.family})>"

    def __call__(self, *args, **attrs):
        if any(isinstance(a, Tensor) for a in args) or (not args and ir.current_trace() is not None):
            return self.bind(args, attrs)
        return np.asarray(self.impl(*args, **attrs))

    # -- tracing -------------------------------------------------------------------------
    def bind(self, args, attrs, name=None):
        trace = ir.current_trace()
        tensors = [a for a in args if isinstance(a, Tensor)]
        if trace is None or any(t.node is None for t in tensors):
            raise ChainruleError(f"{self.name}: a traced tensor was used outside of its trace "
                                 "(did it escape a C.trace / C.jit function?)", source=ir.capture_source())
        weak = [scalar_kind(a) for a in args if not isinstance(a, (Tensor, np.ndarray))]
        if len(tensors) < len(args):
            dtype = promote([t.dtype for t in tensors], weak)
            args = [a if isinstance(a, Tensor) else constant(a, a.dtype.name if isinstance(a, np.ndarray) else dtype)
                    for a in args]
        nodes = [a.node for a in args]
        try:
            shape, dtype = self.shape_rule(*nodes, **attrs)
        except ShapeError as e:
            raise self._located(e) from None
        return Tensor(trace.add(self.name, nodes, attrs, shape, dtype, name=name))

    def _located(self, error):
        """Re-raise a shape-rule error naming the op the user called and the user's line."""
        user_op = ir.current_scope()[0] if ir.current_scope() else self.name
        message = error.bare_message if user_op == self.name else f"({self.name}) {error.bare_message}"
        return type(error)(message, op=user_op, source=ir.capture_source())


def constant(value, dtype):
    """A constant node: a Python scalar stays a literal in the printed program."""
    trace = ir.current_trace()
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value, dtype=dtype)
        return Tensor(trace.add("const", (), {"value": value, "dtype": dtype}, value.shape, dtype))
    py = bool(value) if dtype == "bool" else int(value) if dtype in ("int32", "int64") else float(value)
    return Tensor(trace.add("const", (), {"value": py, "dtype": dtype}, (), dtype))


def const_impl(value, dtype):
    return np.asarray(value, dtype=dtype)


const = Primitive("const", SOURCE, const_impl, shape=None, formula="a literal value", differentiable=False)
