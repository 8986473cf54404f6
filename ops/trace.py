"""Tracing: a Python function called on symbolic tensors becomes a Graph.

`trace(f, O.spec((3, 2)), O.spec((4, 3)))` calls f on one `Tensor` per spec; every primitive
applied to them appends a node (ops/ir.py), and what f returns becomes the graph's outputs.
"""
from __future__ import annotations

import inspect
import numbers

import numpy as np

from . import ir
from .errors import ArgumentError
from .primitive import constant
from .tensor import Spec, Tensor


# -- argument names and specs ----------------------------------------------------------------------------------

def _param_names(fn, count):
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [f"arg{i}" for i in range(count)]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if count < len(required) or (count > len(positional) and not varargs):
        expected = f"{len(required)}" if len(required) == len(positional) else f"{len(required)} to {len(positional)}"
        names = ", ".join(p.name for p in positional)
        raise ArgumentError(f"{function_name(fn)}() takes {expected} argument{'s' if len(positional) != 1 else ''} "
                            f"({names}) but {count} {'was' if count == 1 else 'were'} given",
                            source=ir.capture_source())
    names = [p.name for p in positional[:count]]
    return names + [f"arg{i}" for i in range(len(names), count)]


def function_name(fn):
    name = getattr(fn, "__name__", "f")
    return name if name.isidentifier() else "f"


def _def_source(fn):
    code = getattr(fn, "__code__", None)
    return ir.Source(code.co_filename, code.co_firstlineno) if code else None


def _to_spec(arg):
    if isinstance(arg, Spec):
        return arg
    if isinstance(arg, Tensor):
        return arg.spec
    array = to_numpy(arg)
    return Spec(array.shape, default_dtype(array.dtype))


def default_dtype(dtype):
    if dtype.kind == "f":
        return "float64" if dtype.itemsize == 8 else "float32"
    if dtype.kind in "iu":
        return "int32" if dtype.itemsize == 4 and dtype.kind == "i" else "int64"
    if dtype.kind == "b":
        return "bool"
    raise ArgumentError(f"arrays of dtype {dtype} are not supported", source=ir.capture_source())


def to_numpy(arg):
    if hasattr(arg, "detach") and hasattr(arg, "numpy"):      # a torch tensor
        return arg.detach().cpu().numpy()
    return np.asarray(arg)


def trace(fn, *specs, static=None):
    """Trace fn on symbolic inputs described by `specs` (Spec, or arrays for their shape and
    dtype); returns the forward Graph. `static` maps argument positions to Python values
    baked into the graph."""
    static = static or {}
    total = len(specs) + len(static)
    names = _param_names(fn, total)
    t = ir.Trace()
    args, inputs = [], []
    spec_iter = iter(specs)
    with ir.tracing(t):
        for i in range(total):
            if i in static:
                args.append(static[i])
                continue
            s = _to_spec(next(spec_iter))
            node = t.add("input", (), {"index": len(inputs), "kind": "data"}, s.shape, s.dtype, name=names[i],
                         source=_def_source(fn), scope=(), role="forward")
            inputs.append(node)
            args.append(Tensor(node))
        result = fn(*args)
        outputs, returns_tuple = _flatten_outputs(fn, result, t)
    graph = ir.Graph(inputs, t.nodes, outputs, name=function_name(fn), output_names=getattr(fn, "output_names", None))
    graph.returns_tuple = returns_tuple
    return graph


def _flatten_outputs(fn, result, t):
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    outputs = []
    for item in items:
        if isinstance(item, Tensor):
            outputs.append(item.node)
        elif isinstance(item, (numbers.Number, np.ndarray)):
            value = np.asarray(item)
            outputs.append(constant(item if value.ndim else value.item(), default_dtype(value.dtype)).node)
        else:
            raise ArgumentError(f"{function_name(fn)} must return a tensor or a tuple of tensors, got "
                                f"{type(item).__name__}", source=_def_source(fn))
    return outputs, isinstance(result, (tuple, list))
