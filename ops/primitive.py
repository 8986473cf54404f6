"""What a primitive is: one object that knows an op's shape rule, its NumPy reference,
its vector-Jacobian product and the kernel family that lowers it.

Calling a primitive on NumPy arrays computes the reference value; calling it on traced
`Tensor`s appends a node to the graph being traced. So the printed program of a graph,
which is a sequence of primitive calls, runs on arrays and re-traces on specs alike.
"""
from __future__ import annotations

import numpy as np

from ops import ir
from ops.errors import ArgumentError, ChainruleError, ShapeError

from .dtypes import normalize, promote, scalar_kind
from .tensor import Spec, Tensor

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
        tracing = ir.current_trace() is not None
        if tracing and self.name == "const":        # a printed program's `const([...], dtype=...)`
            value = args[0] if args else attrs["value"]
            dtype = args[1] if len(args) > 1 else attrs["dtype"]
            return constant(np.asarray(value, dtype=dtype), dtype)
        # Inside a trace, a call on Python numbers only (a printed `div(1.0, 8.0)`) is a node too,
        # so that a printed graph re-traces to the same graph; NumPy arrays still compute now.
        if any(isinstance(a, Tensor) for a in args) or \
                (tracing and not any(isinstance(a, np.ndarray) for a in args)):
            return self.bind(args, attrs)
        return self.evaluate(args, attrs)

    def evaluate(self, args, attrs):
        """The reference value on NumPy arrays and Python numbers, typed as the traced call
        would be (as the reference executor types it): numbers are weak, taking the arrays'
        dtype, and the result has the shape rule's dtype. So a printed program run on arrays
        computes in the graph's dtypes (`div(1.0, 8.0)` is float32, as in the graph)."""
        if self.shape_rule is None:
            return np.asarray(self.impl(*args, **attrs))
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if len(arrays) < len(args):
            dtype = promote([normalize(a.dtype) for a in arrays],
                            [scalar_kind(a) for a in args if not isinstance(a, np.ndarray)])
            args = [a if isinstance(a, np.ndarray) else np.asarray(a, dtype=dtype) for a in args]
        _, dtype = self.shape_rule(*(_Typed(a.shape, normalize(a.dtype)) for a in args), **attrs)
        return np.asarray(self.impl(*args, **attrs)).astype(dtype, copy=False)

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
        except (ShapeError, ArgumentError) as e:     # a bad attribute (stride=0) is refused here too
            raise self._located(e) from None
        return Tensor(trace.add(self.name, nodes, attrs, shape, dtype, name=name))

    def _located(self, error):
        """Re-raise a shape-rule error naming the op the user called and the user's line."""
        user_op = ir.current_scope()[0] if ir.current_scope() else self.name
        message = error.bare_message if user_op == self.name else f"({self.name}) {error.bare_message}"
        return type(error)(message, op=user_op, source=ir.capture_source())


class _Typed:
    """What a shape rule reads of an input (its shape and dtype name), for an array."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


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


class DTypeMaker:
    """`f32[3, 2]` is `spec((3, 2), "float32")`: the annotations of a printed graph."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __getitem__(self, shape):
        if shape == ():
            return Spec((), self.dtype)
        return Spec(shape if isinstance(shape, tuple) else (shape,), self.dtype)

    def __call__(self, value):
        """`f64(0.5)`: a number of this dtype (the printed form of a constant whose dtype a bare
        literal would not get): a constant node inside a trace, a NumPy scalar outside."""
        if ir.current_trace() is not None:
            return constant(value, self.dtype)
        return np.asarray(value, dtype=self.dtype)

    def __repr__(self):
        return SHORT_DTYPE[self.dtype]
