"""Tracing: a Python function called on symbolic tensors becomes a Graph.

`trace(f, O.spec((3, 2)), O.spec((4, 3)))` calls f on one `Tensor` per spec; every primitive
applied to them appends a node (ops/ir.py), and what f returns becomes the graph's outputs.
"""
from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, replace

import numpy as np

from . import ir
from .dtypes import ORDER
from .errors import ArgumentError, DTypeError
from .primitive import constant
from .source import Source
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


def _to_spec(arg, what):
    if isinstance(arg, Spec):
        return arg
    if isinstance(arg, Tensor):
        return arg.spec
    return spec_of(to_numpy(arg), what)


# -- where arrays enter: every dtype checked, none converted behind the user's back ----------------------------

def dtype_of(array, what):
    """The chainrule dtype of an array the user passes as `what` ("argument x of f"). An array
    of a dtype chainrule has no kernels for (float16, uint8, ...) is an error naming it,
    never quietly run in another dtype: the user converts it, knowing what that costs."""
    name = array.dtype.name
    if name not in ORDER:
        raise DTypeError(f"{what} has dtype {name}, which chainrule does not support (it supports "
                         f"{', '.join(ORDER)}): convert it first, e.g. x.astype(np.float32)",
                         source=ir.capture_source())
    return name


def spec_of(array, what):
    """The Spec a compile-per-signature entry point (C.jit, C.grad, ...) traces `array` with."""
    return Spec(array.shape, dtype_of(array, what))


def argument_names(fn, count):
    """fn's names for its first `count` positional arguments (arg3 past the named ones)."""
    return _param_names(fn, count)


def as_input(array, dtype, what):
    """`array` as an input compiled for `dtype`. Another float width is converted (float64 data
    into a float32 program is rounded to float32, as a float32 model rounds what it reads;
    int64 labels into an int32 input are narrowed when every value fits); any other difference
    of dtype (a float for integer labels, an int or a bool for floats) is a DTypeError, because
    converting it would change the values: [0.5, 1.9] as int64 labels would be [0, 1]."""
    got = dtype_of(array, what)
    if got == dtype:
        return array
    if array.dtype.kind != np.dtype(dtype).kind:
        raise DTypeError(f"{what} has dtype {got}, but the program was compiled for {dtype}: "
                         f"{_KIND_HINTS[np.dtype(dtype).kind]}",
                         source=ir.capture_source())
    converted = array.astype(dtype)
    if converted.dtype.kind == "i" and not np.array_equal(converted, array):
        raise DTypeError(f"{what} has {got} values that do not fit the program's {dtype}",
                         source=ir.capture_source())
    return converted


_KIND_HINTS = {"i": "integer values (class indices) must be given as integers; converting floats would "
                    "truncate them, so convert them yourself if that is what you mean",
               "f": "give floating-point data (x.astype(np.float32))",
               "b": "give a bool array"}


def to_numpy(arg):
    if hasattr(arg, "detach") and hasattr(arg, "numpy"):      # a torch tensor
        try:
            return arg.detach().cpu().numpy()
        except TypeError:                                     # bfloat16 and the like: NumPy has no such dtype
            raise DTypeError(f"a torch tensor of dtype {arg.dtype}, which chainrule does not support (it supports "
                             f"{', '.join(ORDER)}): convert it first, e.g. t.float()",
                             source=ir.capture_source()) from None
    return np.asarray(arg)


# -- class labels: checked on the host where they enter ---------------------------------------------------------

_SAME_VALUES = ("reshape", "permute", "expand")      # ops that move values without changing them


@dataclass(frozen=True)
class LabelCheck:
    """Class labels a loss reads (cross_entropy, nll_loss): each must lie in [0, classes) or
    equal `ignore_index`. A kernel cannot raise, and a label out of range would match no
    class and quietly add 0 to the loss; so the loss records this check on the graph at
    trace time, and it runs on the host, in NumPy, where the labels enter: `Program.run` (every
    compiled program, any backend) checks labels that are a program input (or a reshape of
    one), and the reference evaluator (ops/evaluate.py) checks every check of the graph it
    runs, computed labels included. Labels computed inside a compiled program are checked
    only when the traced graph is evaluated by the reference evaluator."""

    node: ir.Node          # the labels (an input of the graph, when they come from one)
    classes: int
    ignore_index: int | None   # a value allowed besides [0, classes), or None (one_hot)
    op: str
    source: Source | None  # the user's line that called the loss

    def verify(self, labels, what):
        """Raise an ArgumentError naming the first label out of range, its position and the
        number of classes."""
        labels = np.asarray(labels)
        bad = (labels < 0) | (labels >= self.classes)
        if self.ignore_index is not None:
            bad &= labels != self.ignore_index
        if not bad.any():
            return
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"{what}[{', '.join(map(str, position))}]" if position else what
        count = int(bad.sum())
        others = f" ({count} labels are out of range)" if count > 1 else ""
        allowed = f" or equal ignore_index={self.ignore_index}" if self.ignore_index is not None else ""
        raise ArgumentError(f"{where} = {labels[position]} is out of bounds for {self.classes} classes: class "
                            f"indices must be in [0, {self.classes - 1}]{allowed}{others}", op=self.op,
                            source=self.source)


def require_labels(target, classes, ignore_index, op):
    """Record, on the graph being traced, that the Tensor `target` holds class labels (see
    LabelCheck); constant labels are checked at once."""
    _record(LabelCheck(target.node, classes, ignore_index, op, ir.capture_source()))


def record_checks(graph, env):
    """`graph`, traced on its own, was spliced into the current trace with its nodes mapped by
    `env` (node -> Tensor), as a nested C.grad is: its checks hold there too, on the nodes
    they now are, still naming the user's line that called the loss. A check on a node `env`
    does not map (labels computed inside a differentiated function: autodiff rebuilt it) is
    left to the reference evaluator of that function's own graph."""
    for check in graph.checks:
        if check.node in env:
            _record(replace(check, node=env[check.node].node))


def _record(check):
    node = check.node
    while node.op in _SAME_VALUES:
        node = node.inputs[0]
    check = replace(check, node=node)
    if node.op == "const":
        check.verify(node.attrs["value"], "the constant target")
    ir.current_trace().checks.append(check)


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
            s = _to_spec(next(spec_iter), f"argument {names[i]} of {function_name(fn)}")
            node = t.add("input", (), {"index": len(inputs), "kind": "data"}, s.shape, s.dtype, name=names[i],
                         source=_def_source(fn), scope=(), role="forward")
            inputs.append(node)
            args.append(Tensor(node))
        result = fn(*args)
        outputs, returns_tuple = _flatten_outputs(fn, result, t)
    graph = ir.Graph(inputs, t.nodes, outputs, name=function_name(fn), output_names=getattr(fn, "output_names", None))
    graph.returns_tuple = returns_tuple
    graph.checks = tuple(t.checks)
    return graph


def _flatten_outputs(fn, result, t):
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    outputs = []
    for item in items:
        if isinstance(item, Tensor):
            outputs.append(item.node)
        elif isinstance(item, (numbers.Number, np.ndarray)):
            value = np.asarray(item)
            dtype = dtype_of(value, f"the value {function_name(fn)} returns")
            outputs.append(constant(item if value.ndim else value.item(), dtype).node)
        else:
            raise ArgumentError(f"{function_name(fn)} must return a tensor or a tuple of tensors, got "
                                f"{type(item).__name__}", source=_def_source(fn))
    return outputs, isinstance(result, (tuple, list))
